//! The PROXY protocol (HAProxy's, versions 1 and 2) on API listeners with
//! `proxy_protocol: true`: a load balancer in front says who the client is
//! before the connection's first byte of HTTP (or TLS). The preamble is
//! believed only from a peer in `server.trusted_proxies`: then the client it
//! names becomes the connection's peer address for everything after (the
//! loopback rule, address lists, logs). A connection without a preamble is
//! served as a direct client; one whose preamble comes from a peer that is
//! not trusted, is malformed, or does not arrive within
//! `timeouts.request_head`, is closed. Parsing is the `ppp` crate's.
//!
//! Plain listeners get it through [`PreambleApp`] (the API app behind a
//! reader of the raw stream), TLS ones through Pingora's pre-TLS callback
//! ([`PreambleReader`]).

use super::app::ApiApp;
use crate::state::State;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType, Result};
use ppp::{HeaderResult, PartialResult};
use std::net::IpAddr;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The longest preamble read (v1 is at most 107 bytes; v2's TLVs past this
/// are refused).
pub const MAX_PREAMBLE: usize = 4096;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Not a preamble: the client's own bytes.
    None,
    /// A complete preamble of `len` bytes naming `source` (`None`: the
    /// proxy's own connection, `UNKNOWN`, or a Unix socket).
    Found { len: usize, source: Option<IpAddr> },
    /// The start of a preamble: read more.
    Partial,
    /// A preamble that cannot be read.
    Invalid(String),
}

/// Judges the bytes read so far.
pub fn judge(buf: &[u8]) -> Preamble {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if !starts(V1_SIGNATURE) && !starts(V2_SIGNATURE) {
        return Preamble::None;
    }
    let parsed = HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        // a v1 line is at most 107 bytes and ends at its first CRLF
        let v1_line = buf.starts_with(V1_SIGNATURE)
            && (buf.len() > 107 || buf.windows(2).any(|w| w == b"\r\n"));
        return if v1_line {
            Preamble::Invalid("a PROXY line that does not parse".into())
        } else if buf.len() >= MAX_PREAMBLE {
            Preamble::Invalid(format!("longer than {MAX_PREAMBLE} bytes"))
        } else {
            Preamble::Partial
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => Preamble::Found {
            len: h.header.len(),
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(a.source_address.into()),
                ppp::v1::Addresses::Tcp6(a) => Some(a.source_address.into()),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Preamble::Found {
            len: h.header.len(),
            source: match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => Some(a.source_address.into()),
                (_, ppp::v2::Addresses::IPv6(a)) => Some(a.source_address.into()),
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => Preamble::Invalid(format!("{e:?}")),
        HeaderResult::V2(Err(e)) => Preamble::Invalid(format!("{e:?}")),
    }
}

fn refuse(why: String) -> Box<Error> {
    Error::explain(
        ErrorType::ConnectionClosed,
        format!("PROXY protocol: {why}"),
    )
}

/// Reads a preamble off `stream` (see the module doc); the bytes after it,
/// or every byte of a connection without one, are read again by HTTP.
pub async fn read(stream: &mut L4Stream, state: &State) -> Result<()> {
    let cfg = state.load();
    let within = cfg.config.timeouts.request_head;
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().cloned())
        .and_then(|a| a.as_inet().map(|i| i.ip()));
    let mut buf = Vec::with_capacity(128);
    let mut piece = [0u8; 512];
    let found = pingora::time::timeout(within, async {
        loop {
            let n = stream
                .read(&mut piece)
                .await
                .map_err(|e| refuse(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(refuse("the connection closed".into()));
            }
            buf.extend_from_slice(&piece[..n]);
            match judge(&buf) {
                Preamble::Partial => continue,
                other => return Ok(other),
            }
        }
    })
    .await
    .map_err(|_| refuse(format!("no complete preamble within {within:?}")))??;
    let (len, source) = match found {
        Preamble::None => {
            stream.rewind(&buf);
            return Ok(());
        }
        Preamble::Invalid(why) => return Err(refuse(why)),
        Preamble::Partial => return Err(refuse("incomplete".into())),
        Preamble::Found { len, source } => (len, source),
    };
    let trusted = &cfg.config.server.trusted_proxies;
    if !peer.is_some_and(|p| trusted.contains(&p)) {
        return Err(refuse(format!(
            "{} is not one of server.trusted_proxies",
            peer.map_or_else(|| "a Unix socket peer".to_string(), |p| p.to_string())
        )));
    }
    stream.rewind(&buf[len..]);
    if let Some(ip) = source {
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        let _ = digest
            .peer_addr
            .set(Some(SocketAddr::Inet(std::net::SocketAddr::new(ip, 0))));
        stream.set_socket_digest(digest);
    }
    Ok(())
}

/// The API app behind a preamble reader, for plain listeners.
pub struct PreambleApp {
    pub inner: Arc<ApiApp>,
    pub state: Arc<State>,
}

#[async_trait]
impl ServerApp for PreambleApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut stream = if stream.get_ssl_digest().is_some() {
            // TLS: the preamble was read before the handshake (`PreambleReader`)
            stream
        } else {
            self.read_plain(stream).await?
        };
        // the connection's later requests stay here: its preamble is read once
        loop {
            stream = ServerApp::process_new(&self.inner, stream, shutdown).await?;
        }
    }
}

impl PreambleApp {
    /// Reads a plain connection's preamble; `None`: the connection is closed.
    async fn read_plain(&self, stream: Stream) -> Option<Stream> {
        let mut l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => l4,
            Err(_) => {
                log::error!("PROXY protocol: a connection that is not a TCP stream; closed");
                return None;
            }
        };
        if let Err(e) = read(&mut l4, &self.state).await {
            log::info!("closing a connection: {e}");
            return None;
        }
        Some(l4)
    }
}

/// The preamble reader for TLS listeners (before the handshake).
pub struct PreambleReader {
    pub state: Arc<State>,
}

#[async_trait]
impl PreTlsProcess for PreambleReader {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        read(stream, &self.state)
            .await
            .inspect_err(|e| log::info!("closing a connection: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_of_both_versions_and_what_is_not_one() {
        let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 4000\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            judge(v1),
            Preamble::Found {
                len: 44,
                source: Some([203, 0, 113, 7].into())
            }
        );
        assert_eq!(judge(&v1[..20]), Preamble::Partial);
        assert_eq!(judge(b"PRO"), Preamble::Partial);
        assert_eq!(judge(b"POST /v1/chat HTTP/1.1"), Preamble::None);
        assert_eq!(judge(b"\x16\x03\x01"), Preamble::None, "a TLS hello");
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            judge(unknown),
            Preamble::Found {
                len: 15,
                source: None
            }
        );
        assert!(matches!(
            judge(b"PROXY TCP4 nonsense here\r\n"),
            Preamble::Invalid(_)
        ));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]); // PROXY, TCP over IPv4, 12 bytes
        v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1, 0x15, 0xb3, 0x0f, 0xa0]);
        let mut with_http = v2.clone();
        with_http.extend_from_slice(b"GET /");
        assert_eq!(
            judge(&with_http),
            Preamble::Found {
                len: 28,
                source: Some([198, 51, 100, 9].into())
            }
        );
        assert_eq!(judge(&v2[..14]), Preamble::Partial);
        let too_long = [V1_SIGNATURE, &[b'x'; MAX_PREAMBLE][..]].concat();
        assert!(matches!(judge(&too_long), Preamble::Invalid(_)));
    }
}
