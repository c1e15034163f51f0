//! The HTTP server of the built-in demo upstream and of the scriptable mock
//! upstream (tests and benchmarks), on hyper: HTTP/1.1 (keep-alive, any
//! request framing) and h2c by prior knowledge. Each request is read whole
//! and answered by the handler's [`Reply`]: full or chunked (optionally
//! paced), with scripted faults (reset, close, cut, stall).
//!
//! Fault injection is compiled in only with the `test-support` feature.
//! It trusts its peer (the gateway or a test): loopback use only.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path including any query string.
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// First value of a header (name is matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body parsed as JSON, or `Null`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the reply body is sent.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    /// One write with `Content-Length`.
    Full(Bytes),
    /// `Transfer-Encoding: chunked`, each piece written after its delay.
    Chunks(Vec<(Duration, Bytes)>),
}

/// A scripted misbehaviour (fault injection exists only with the
/// `test-support` feature: the demo upstream never misbehaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Reset the connection (RST) instead of answering.
    #[cfg(feature = "test-support")]
    ResetBeforeHeaders,
    /// Close the connection cleanly (FIN) instead of answering.
    #[cfg(feature = "test-support")]
    CloseBeforeHeaders,
    /// Send headers and body pieces, then close without finishing the body.
    #[cfg(feature = "test-support")]
    CutAfterBody,
    /// Send headers and body pieces, then hold the connection open for this long.
    #[cfg(feature = "test-support")]
    StallAfterBody(Duration),
}

/// What the handler wants sent back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
    /// Wait this long before sending anything.
    pub delay: Duration,
    pub fault: Fault,
}

impl Reply {
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: ReplyBody::Full(Bytes::from(v.to_string())),
            delay: Duration::ZERO,
            fault: Fault::None,
        }
    }

    /// An SSE reply: each event string is sent as its own chunk after `gap`.
    pub fn sse(events: Vec<String>, gap: Duration) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
            body: ReplyBody::Chunks(events.into_iter().map(|e| (gap, Bytes::from(e))).collect()),
            delay: Duration::ZERO,
            fault: Fault::None,
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_ascii_lowercase(), v.to_string()));
        self
    }
}

/// The function that answers each request.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Accepts connections forever, answering each request with `handler`.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let reset = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Socket {
            stream,
            reset: reset.clone(),
        });
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let (handler, reset) = (handler.clone(), reset.clone());
            async move { answer(req, handler, reset).await }
        });
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(io, service).await;
        });
    }
}

/// Why a connection ends without an answer (a scripted fault).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection is dropped")
    }
}

impl std::error::Error for Dropped {}

/// Reads the request whole, asks the handler, and answers as it says.
async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    handler: Handler,
    reset: Arc<AtomicBool>,
) -> Result<hyper::Response<ScriptedBody>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let request = Request {
        method: parts.method.as_str().to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect(),
        body,
    };
    let reply = handler(&request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    #[cfg(feature = "test-support")]
    match reply.fault {
        Fault::ResetBeforeHeaders => {
            reset.store(true, Ordering::Relaxed);
            return Err(Dropped);
        }
        Fault::CloseBeforeHeaders => return Err(Dropped),
        _ => {}
    }
    #[cfg(not(feature = "test-support"))]
    let _ = &reset;
    Ok(response(reply))
}

/// The response for a reply: its status, headers and scripted body.
fn response(reply: Reply) -> hyper::Response<ScriptedBody> {
    let mut builder = hyper::Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let faulty = reply.fault != Fault::None;
    let pieces: VecDeque<(Duration, Bytes)> = match reply.body {
        ReplyBody::Full(b) => {
            builder = builder.header("content-length", b.len());
            // a faulty full reply sends half of its body
            let sent = if faulty { b.slice(..b.len() / 2) } else { b };
            VecDeque::from([(Duration::ZERO, sent)])
        }
        ReplyBody::Chunks(c) => c.into(),
    };
    let body = ScriptedBody {
        pieces,
        wait: None,
        fault: reply.fault,
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = hyper::Response::new(ScriptedBody::empty());
        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// How long a faulty reply waits before its fault, for hyper to write what
/// it was given.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// A reply body sent piece by piece, each after its delay; a faulty one ends
/// in an error instead of its end (hyper then closes the connection).
struct ScriptedBody {
    pieces: VecDeque<(Duration, Bytes)>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    fault: Fault,
}

impl ScriptedBody {
    fn empty() -> ScriptedBody {
        ScriptedBody {
            pieces: VecDeque::new(),
            wait: None,
            fault: Fault::None,
        }
    }

    /// What comes after the last piece: the end, or the fault. A fault
    /// waits a moment (or its stall) first: what was sent reaches the wire.
    fn after_last(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Dropped>>> {
        if self.fault == Fault::None {
            return Poll::Ready(None);
        }
        let pause = match self.fault {
            #[cfg(feature = "test-support")]
            Fault::StallAfterBody(d) => d,
            _ => FLUSH_PAUSE,
        };
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
        if wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(Dropped)))
    }
}

impl hyper::body::Body for ScriptedBody {
    type Data = Bytes;
    type Error = Dropped;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Dropped>>> {
        loop {
            let Some((delay, _)) = self.pieces.front() else {
                return self.after_last(cx);
            };
            if !delay.is_zero() {
                let delay = *delay;
                let wait = self
                    .wait
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            let Some((_, data)) = self.pieces.pop_front() else {
                continue;
            };
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
            }
        }
    }
}

/// A connection's socket; closed with an RST when `reset` is set (a
/// scripted fault).
struct Socket {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // linger 0 makes the close an RST; it cannot block with a zero timeout
            #[allow(deprecated)]
            let _ = self.stream.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Binds `addr` (use port 0 for any) and serves `handler` on a dedicated thread
/// with its own runtime. Returns the bound address. The thread lives as long as
/// the process.
pub fn spawn_on_thread(
    addr: &str,
    threads: usize,
    handler: Handler,
) -> std::io::Result<std::net::SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("switchyard-minihttp")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("switchyard-minihttp".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => serve(l, handler).await,
                    Err(e) => log::error!("minihttp: cannot listen: {e}"),
                }
            })
        })?;
    Ok(local)
}
