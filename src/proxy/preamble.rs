//! The PROXY protocol (HAProxy's, versions 1 and 2) on API listeners with
//! `proxy_protocol: true`: a load balancer in front says who the client is
//! before the connection's first byte of HTTP (or TLS). A peer in
//! `server.trusted_proxies` must send one (the spec: a receiver does not
//! guess), and the client it names becomes the connection's peer address
//! for everything after (the loopback rule, address lists, logs); a
//! loopback client is believed only from a loopback proxy. Any other peer
//! is a direct client and must not send one. A connection that breaks these
//! rules, or whose preamble is malformed or not complete within
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
use ppp::HeaderResult;
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
    Found {
        len: usize,
        source: Option<std::net::SocketAddr>,
    },
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
    if starts(V1_SIGNATURE) {
        // a v1 line is at most 107 bytes and ends at its first CRLF: parsed whole
        return match buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) if end + 2 <= 107 => parse(&buf[..end + 2]),
            Some(_) => Preamble::Invalid("a PROXY line over 107 bytes".into()),
            None if buf.len() >= 107 => Preamble::Invalid("a PROXY line over 107 bytes".into()),
            None => Preamble::Partial,
        };
    }
    if !starts(V2_SIGNATURE) {
        return Preamble::None;
    }
    // v2: 16 bytes, then as many as its length field says
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return Preamble::Partial;
    };
    let total = 16 + usize::from(u16::from_be_bytes([hi, lo]));
    if total > MAX_PREAMBLE {
        return Preamble::Invalid(format!("{total} bytes, longer than {MAX_PREAMBLE}"));
    }
    match buf.get(..total) {
        Some(whole) => parse(whole),
        None => Preamble::Partial,
    }
}

/// Parses one whole preamble (`ppp`).
fn parse(whole: &[u8]) -> Preamble {
    let sa = std::net::SocketAddr::new;
    match HeaderResult::parse(whole) {
        HeaderResult::V1(Ok(h)) => Preamble::Found {
            len: whole.len(),
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(sa(a.source_address.into(), a.source_port)),
                ppp::v1::Addresses::Tcp6(a) => Some(sa(a.source_address.into(), a.source_port)),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Preamble::Found {
            len: whole.len(),
            source: match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(sa(a.source_address.into(), a.source_port))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(sa(a.source_address.into(), a.source_port))
                }
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => Preamble::Invalid(format!("{e:?}")),
        HeaderResult::V2(Err(e)) => Preamble::Invalid(format!("{e:?}")),
    }
}

/// Reads a preamble off `stream` (see the module doc); the bytes after it,
/// or every byte of a direct client's connection, are read again by HTTP.
/// `Err`: the connection is to be closed (logged here).
pub async fn read(stream: &mut L4Stream, state: &State) -> std::result::Result<(), ()> {
    let cfg = state.load();
    let within = cfg.config.timeouts.request_head;
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().cloned())
        .and_then(|a| a.as_inet().map(|i| i.ip()));
    let trusted = peer.is_some_and(|p| cfg.config.server.trusted_proxies.contains(&p));
    let who = peer.map_or_else(|| "a Unix socket peer".to_string(), |p| p.to_string());
    let mut buf = Vec::with_capacity(128);
    let mut piece = [0u8; 512];
    let read = pingora::time::timeout(within, async {
        loop {
            let n = stream
                .read(&mut piece)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("the connection closed".to_string());
            }
            buf.extend_from_slice(&piece[..n]);
            match judge(&buf) {
                Preamble::Partial => continue,
                other => return Ok(other),
            }
        }
    })
    .await;
    let found = match read {
        Ok(Ok(found)) => found,
        // a health check that connects and closes is no news
        Ok(Err(why)) if buf.is_empty() => return quiet(&who, &why),
        Ok(Err(why)) => return loud(&who, &why),
        Err(_) => return loud(&who, &format!("no preamble within {within:?}")),
    };
    match (found, trusted) {
        (Preamble::None, false) => {
            stream.rewind(&buf);
            Ok(())
        }
        (Preamble::None, true) => loud(&who, "a trusted proxy sent no preamble"),
        (Preamble::Found { .. }, false) => {
            loud(&who, "a preamble from a peer not in server.trusted_proxies")
        }
        (Preamble::Found { len, source }, true) => {
            stream.rewind(&buf[len..]);
            match source {
                // only a proxy on this machine may say the client is on it too
                Some(s) if s.ip().is_loopback() && !peer.is_some_and(|p| p.is_loopback()) => loud(
                    &who,
                    "a loopback client named by a proxy that is not on loopback",
                ),
                Some(s) => {
                    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                    let _ = digest.peer_addr.set(Some(SocketAddr::Inet(s)));
                    stream.set_socket_digest(digest);
                    Ok(())
                }
                None => Ok(()),
            }
        }
        (Preamble::Invalid(why), _) => loud(&who, &why),
        (Preamble::Partial, _) => loud(&who, "an incomplete preamble"),
    }
}

fn loud(who: &str, why: &str) -> std::result::Result<(), ()> {
    log::info!("closing a connection from {who} (PROXY protocol): {why}");
    Err(())
}

fn quiet(who: &str, why: &str) -> std::result::Result<(), ()> {
    log::debug!("closing a connection from {who} (PROXY protocol): {why}");
    Err(())
}

/// The API app behind a preamble reader, for plain listeners.
pub struct PreambleApp {
    pub inner: Arc<ApiApp>,
    pub state: Arc<State>,
}

#[async_trait]
impl ServerApp for PreambleApp {
    /// Wakes kept-alive connections on shutdown, as the API app's own service does.
    async fn cleanup(&self) {
        pingora::apps::HttpServerApp::http_cleanup(&*self.inner).await
    }

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
        // (Pingora's HTTP app keeps an h1 connection's later requests in its
        // own loop and returns `None`; a stream it did return would have had
        // its preamble read already, so it is not given back to be read again)
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
        read(&mut l4, &self.state).await.ok()?;
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
            .map_err(|()| Error::explain(ErrorType::ConnectionClosed, "PROXY protocol: refused"))
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
                source: Some(([203, 0, 113, 7], 5555).into())
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
                source: Some(([198, 51, 100, 9], 5555).into())
            }
        );
        // every prefix of a valid preamble waits for more
        for whole in [&v1[..44], &v2[..]] {
            for cut in 1..whole.len() {
                assert_eq!(judge(&whole[..cut]), Preamble::Partial, "{cut}");
            }
        }
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(
            matches!(judge(&huge), Preamble::Invalid(_)),
            "refused on its length field"
        );
        assert_eq!(judge(&v2[..14]), Preamble::Partial);
        let too_long = [V1_SIGNATURE, &[b'x'; MAX_PREAMBLE][..]].concat();
        assert!(matches!(judge(&too_long), Preamble::Invalid(_)));
    }
}
