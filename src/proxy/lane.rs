//! The gateway's own HTTP/1.1 lane: the understood JSON endpoints
//! (`POST /v1/chat/completions` and the like), read and answered without
//! Pingora's per-request machinery. Every other request, and every
//! connection the lane cannot read (TLS, HTTP/2), goes to Pingora as before.
//!
//! A plain TCP connection starts here. Each request head is parsed in place;
//! one the lane serves is an HTTP/1.1 `POST` to an understood path with one
//! `Content-Length` within `limits.max_request_body` and no `Transfer-Encoding`,
//! `Expect` or `Upgrade`. Its answer is written straight to the connection
//! ([`OwnConn`]), which then carries the client's next request. The first
//! request that is not of that kind ends the lane: the bytes read of it are
//! put back into the connection ([`rewind`]) and Pingora serves the
//! connection from there on, as if it had read everything itself.
//!
//! What a request goes through is the same as in [`super::handle`]: CORS
//! origin, client authentication, the client's `max_concurrent` and `rpm`,
//! the body, its model, [`admit_call`], the call, the error answer, the
//! access line, metrics and usage record.
//!
//! Invariants: a connection is reused only after a whole answer to a request
//! whose body was read whole with nothing after it (no pipelining); a head
//! larger than [`MAX_HEAD`] or silent for [`HEAD_WAIT`] is never waited on
//! further by the lane.

use super::ctx::Ctx;
use super::detach::Lane;
use super::handle::{admit_call, settle_call, understood_call};
use super::respond::{self, origin_allowed};
use crate::error::GatewayError;
use crate::forward::client::Client;
use crate::forward::headers::forwardable;
use crate::forward::own::OwnConn;
use crate::forward::{Call, Forwarder, Outcome};
use crate::limits::{self, Caller};
use crate::routes::{self, Endpoint};
use crate::state::{Snapshot, State};
use crate::upstream::h1::value_text;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest request head the lane reads; a larger one is Pingora's to answer.
const MAX_HEAD: usize = 16 << 10;
/// The first read's room (a typical head and body fit).
const HEAD_BUF: usize = 4 << 10;
/// Most headers in a head the lane serves.
const MAX_HEADERS: usize = 64;
/// How long a connection may stay silent before (and while) sending a
/// request head: a new connection's first request, or the next one on a
/// kept-alive connection. Then it is closed.
const HEAD_WAIT: Duration = Duration::from_secs(60);

/// The lane of the API listener (see the module doc); a clone serves a
/// stream's connection in the stream's own task.
#[derive(Clone)]
pub struct ApiLane {
    pub state: Arc<State>,
    pub forwarder: Arc<Forwarder>,
    /// Where a stream's connection goes when its next request is Pingora's.
    pub reentry: Arc<super::Reentry>,
}

/// A request head the lane serves, with what its headers said.
struct Request {
    endpoint: &'static Endpoint,
    query: Option<String>,
    /// Bytes of the head (request line to blank line).
    head_len: usize,
    /// `Content-Length`.
    length: usize,
    /// The client asked to keep the connection.
    keepalive: bool,
    /// The `Origin` to echo, when CORS allows it.
    origin: Option<http::HeaderValue>,
    /// Who the caller is, or why it may not call.
    caller: Result<Caller, GatewayError>,
    /// Client headers to pass upstream, in wire form.
    headers: Vec<u8>,
}

/// What a look at the buffered bytes found.
enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// Not a request the lane serves (or not valid HTTP/1.1): Pingora's.
    Other,
    Mine(Request),
}

/// Parses the head at the start of `buf` and decides whether the lane serves it.
fn parse(buf: &[u8], snap: &Snapshot, peer: Option<IpAddr>) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) || req.method != Some("POST") {
        return Parsed::Other;
    }
    let target = req.path.unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let cfg = &snap.config;
    let Some(endpoint) = routes::understood(path) else {
        return Parsed::Other;
    };
    if cfg.metrics_path.as_deref() == Some(path)
        || query.is_some_and(|q| q.bytes().any(|b| !(b'!'..=b'~').contains(&b) || b == b'#'))
    {
        return Parsed::Other;
    }
    let headers = &*req.headers;
    let mut length = None;
    let mut keepalive = true;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = value_text(h.value).map(str::trim).unwrap_or("");
            let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten();
            match (length, n) {
                (None, Some(n)) => length = Some(n),
                _ => return Parsed::Other, // repeated or not a number
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value_text(h.value).unwrap_or("").split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keepalive = false;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return Parsed::Other;
                }
            }
        }
    }
    let Some(length) = length.filter(|&n| n <= cfg.limits.max_request_body) else {
        return Parsed::Other; // no length (or too long): Pingora reads or refuses it
    };
    let Ok(length) = usize::try_from(length) else {
        return Parsed::Other;
    };
    let get = |n: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(n))
            .and_then(|h| value_text(h.value))
    };
    let origin = get("origin")
        .filter(|o| {
            origin_allowed(
                o,
                get("host"),
                cfg.cors.as_ref(),
                cfg.admin.listen.as_deref(),
            )
        })
        .and_then(|o| http::HeaderValue::from_str(o).ok());
    let caller = limits::authenticate(cfg, limits::presented_key(get), peer);
    let forward = forwardable(headers.iter().map(|h| (h.name, h.value)), headers.len());
    Parsed::Mine(Request {
        endpoint,
        query: query.map(str::to_string),
        head_len,
        length,
        keepalive,
        origin,
        caller,
        headers: forward,
    })
}

/// `stream` with `read` put back in front of what it has not read yet (for
/// Pingora). `None` (the connection is dropped) when it is not a plain TCP
/// or Unix connection, which the lane never takes.
fn rewind(stream: Stream, read: &[u8]) -> Option<Stream> {
    let mut tcp = stream.into_any().downcast::<TcpStream>().ok()?;
    if !read.is_empty() {
        tcp.rewind(read);
    }
    Some(tcp)
}

async fn close(mut stream: Stream) -> Option<Stream> {
    pingora::protocols::Shutdown::shutdown(&mut *stream).await;
    None
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

#[async_trait]
impl Lane for ApiLane {
    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if !stream.as_any().is::<TcpStream>() {
            return Some(stream); // TLS: Pingora's
        }
        let peer = peer_ip(&stream);
        // The wait between requests is watched by one timer and one shutdown
        // subscription for the whole connection, not one of each per request:
        // the timer is re-armed only when it fires before the connection has
        // been quiet for HEAD_WAIT.
        let mut stopping = shutdown.clone();
        let stop = stopping.changed();
        tokio::pin!(stop);
        let idle = tokio::time::sleep(HEAD_WAIT);
        tokio::pin!(idle);
        let mut buf = BytesMut::with_capacity(HEAD_BUF);
        loop {
            if *shutdown.borrow() {
                return close(stream).await;
            }
            // one head buffer for the connection's requests (a large head's is not kept)
            if buf.capacity() > HEAD_BUF {
                buf = BytesMut::with_capacity(HEAD_BUF);
            }
            buf.clear();
            let quiet_since = crate::clock::coarse_mono_ms();
            let (req, snap) = loop {
                let read = if buf.is_empty() {
                    let read = stream.read_buf(&mut buf);
                    tokio::pin!(read);
                    loop {
                        tokio::select! {
                            biased;
                            r = &mut read => break r,
                            _ = &mut stop => return close(stream).await,
                            () = &mut idle => {
                                let quiet = crate::clock::coarse_mono_ms().saturating_sub(quiet_since);
                                let left = HEAD_WAIT.saturating_sub(Duration::from_millis(quiet));
                                if left.is_zero() {
                                    return close(stream).await;
                                }
                                idle.as_mut().reset(tokio::time::Instant::now() + left);
                            }
                        }
                    }
                } else {
                    // a head in pieces: each piece within HEAD_WAIT
                    match pingora::time::timeout(HEAD_WAIT, stream.read_buf(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => return close(stream).await,
                    }
                };
                if !matches!(read, Ok(n) if n > 0) {
                    // closed or broken (a head cut short is nobody's to answer)
                    return close(stream).await;
                }
                let snap = self.state.load();
                match parse(&buf, &snap, peer) {
                    Parsed::Mine(req) => break (req, snap),
                    Parsed::Partial if buf.len() < MAX_HEAD => {
                        if buf.capacity() == buf.len() {
                            buf.reserve(HEAD_BUF);
                        }
                    }
                    Parsed::Partial | Parsed::Other => return rewind(stream, &buf),
                }
            };
            let Job {
                conn,
                ctx,
                path,
                work,
                streams,
            } = self.prepare(stream, &buf, req, &snap).await;
            let forwarder = self.forwarder.clone();
            if !streams {
                // made and awaited in one expression, here rather than in a
                // helper: each binding or level of a large future is one more
                // copy of it per request
                stream = complete(forwarder, snap, conn, ctx, path, work).await?;
                continue;
            }
            // boxed before it starts, holding only its arguments: the stream's task stays small
            let run = Box::pin(complete(forwarder, snap, conn, ctx, path, work));
            // A stream may wait for minutes: it gets a task of its own, and the
            // connection's task (Pingora's) ends, freeing what it holds.
            let lane = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Some(stream) = run.await {
                    if let Some(stream) = lane.serve(stream, &shutdown).await {
                        lane.reentry.resume(stream).await;
                    }
                }
            });
            return None;
        }
    }
}

/// A request read and checked, ready for [`complete`].
struct Job {
    conn: OwnConn,
    ctx: Ctx,
    path: &'static str,
    /// The call, or why it is refused.
    work: Result<(Caller, Call), GatewayError>,
    /// The answer is a stream (it gets a task of its own).
    streams: bool,
}

impl ApiLane {
    /// Checks the caller of `req` (its head and maybe some body in `buf`) and
    /// reads its body: the call to run on the connection, or why not.
    async fn prepare(
        &self,
        mut stream: Stream,
        buf: &[u8],
        req: Request,
        snap: &Arc<Snapshot>,
    ) -> Job {
        let mut ctx = Ctx::new();
        ctx.snap = Some(snap.clone());
        ctx.route = req.endpoint.class;
        ctx.cors = req.origin;
        let buf = &buf[req.head_len..];
        // bytes after the body are a pipelined request: answered, then closed
        let whole = buf.len() >= req.length;
        let keepalive = req.keepalive && buf.len() <= req.length;
        let admitted = req.caller.and_then(|caller| {
            ctx.caller = Some(caller);
            ctx.slot = limits::take_slot(snap, caller)?;
            limits::within_rpm(snap, caller, crate::clock::coarse_ms())?;
            Ok(caller)
        });
        let (work, keep) = match admitted {
            // a refusal leaves the connection for the next request only when
            // the body it did not need is read already
            Err(e) => (Err(e), keepalive && whole),
            Ok(caller) => match read_body(&mut stream, buf, req.length, snap).await {
                Ok(body) => {
                    let call = understood_call(req.endpoint, req.query, req.headers, body);
                    (call.map(|c| (caller, c)), keepalive)
                }
                Err(e) => (Err(e), false),
            },
        };
        let streams = matches!(&work, Ok((_, call)) if call.peek.client_stream());
        Job {
            conn: OwnConn::new(stream, keep),
            ctx,
            path: req.endpoint.path,
            work,
            streams,
        }
    }
}

/// Runs the call `work` (or answers why it is refused) on `conn`, records
/// the request, and returns the connection when it may carry the next request.
///
/// An `async` block, not an `async fn`: an `async fn` keeps a second copy of
/// its moved arguments (`ctx`, `work`) in its future, which is copied whole
/// into place for every request.
#[allow(clippy::manual_async_fn)]
fn complete(
    forwarder: Arc<Forwarder>,
    snap: Arc<Snapshot>,
    mut conn: OwnConn,
    mut ctx: Ctx,
    path: &'static str,
    mut work: Result<(Caller, Call), GatewayError>,
) -> impl std::future::Future<Output = Option<Stream>> + Send {
    async move {
        // `work` is used in place: a stream's task holds one copy of the call
        let failed = match &mut work {
            Err(_) => None,
            Ok((caller, call)) => match admit_call(&snap, *caller, call, &mut ctx) {
                Err(e) => Some(e),
                Ok(charges) => {
                    let (client, mut outcome) = (Client::Own(&mut conn), Outcome::default());
                    let cors = ctx.cors.clone();
                    let result = forwarder
                        .run(client, &snap, call, ctx.start, &mut outcome, cors)
                        .await;
                    settle_call(call, &charges, &mut ctx, outcome, result).err()
                }
            },
        };
        let refused = match work {
            Err(e) => Some(e),
            Ok(_) => failed,
        };
        if let Some(e) = refused {
            Box::pin(respond::respond_error_to(
                &mut Client::Own(&mut conn),
                &mut ctx,
                &e,
            ))
            .await;
        }
        let err = ctx.error.unwrap_or("-");
        super::finish_request(&ctx, &http::Method::POST, path, ctx.status, err);
        drop(ctx);
        conn.finish().await
    }
}

/// The request body: `length` bytes, the first of them in `buf` (whatever
/// follows them is dropped), the rest read from `stream`, each read within
/// `timeouts.idle` (else 408). The body gets a buffer of exactly its size,
/// so no read takes bytes past it from the connection.
async fn read_body(
    stream: &mut Stream,
    buf: &[u8],
    length: usize,
    snap: &Snapshot,
) -> Result<Bytes, GatewayError> {
    let have = buf.len().min(length);
    let mut body = BytesMut::with_capacity(length);
    body.extend_from_slice(&buf[..have]);
    let idle = snap.config.timeouts.idle;
    while body.len() < length {
        let read = pingora::time::timeout(idle, stream.read_buf(&mut body)).await;
        match read {
            Err(_) => return Err(GatewayError::RequestTimeout { after: idle }),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Err(GatewayError::BadRequest(
                    "could not read the request body: the connection closed".into(),
                ))
            }
            Ok(Ok(_)) => {}
        }
    }
    body.truncate(length); // a guard: the buffer has no room past the body
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let yaml = "upstreams: [{name: u, base_url: 'http://127.0.0.1:1/v1', keys: [sk-a], models: ['*']}]";
        let cfg = crate::config::Config::from_yaml(yaml, &|_| None).unwrap();
        Snapshot::build(cfg, None).unwrap()
    }

    fn mine(head: &str) -> Option<Request> {
        match parse(head.as_bytes(), &snap(), Some([127, 0, 0, 1].into())) {
            Parsed::Mine(r) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn only_plain_posts_to_understood_paths_are_the_lanes() {
        let ok = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        let r = mine(ok).expect("a chat call");
        assert_eq!((r.length, r.keepalive, r.head_len), (2, true, ok.len() - 2));
        for other in [
            "GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/files HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST /v1/chat/completions HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(mine(other).is_none(), "{other:?}");
        }
        assert!(matches!(
            parse(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost:",
                &snap(),
                None
            ),
            Parsed::Partial
        ));
        let big = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            snap().config.limits.max_request_body + 1
        );
        assert!(
            mine(&big).is_none(),
            "over the body limit: Pingora refuses it"
        );
    }

    #[test]
    fn the_head_says_keepalive_caller_and_what_goes_upstream() {
        let r = mine(
            "POST /v1/embeddings?x=1 HTTP/1.1\r\nconnection: keep-alive, Close\r\nCONTENT-LENGTH: 0\r\n\
             Authorization: Bearer sk-client\r\nOpenAI-Organization: org-1\r\nCookie: c=1\r\n\r\n",
        )
        .unwrap();
        assert!(!r.keepalive);
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert!(
            matches!(r.caller, Ok(Caller::Local)),
            "no clients: loopback is local"
        );
        let fwd = String::from_utf8(r.headers).unwrap();
        assert_eq!(
            fwd, "OpenAI-Organization: org-1\r\n",
            "credentials, framing and cookies stay"
        );
        assert!(
            mine("POST /v1/chat/completions?a b HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_none()
        );
        let far = parse(
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            &snap(),
            Some([203, 0, 113, 9].into()),
        );
        assert!(matches!(
            far,
            Parsed::Mine(Request {
                caller: Err(GatewayError::LoopbackOnly),
                ..
            })
        ));
    }
}
