//! A deliberately small HTTP/1.1 server for loopback use: the built-in demo
//! upstream and the scriptable mock upstream of the tests and benchmarks run on
//! it. Keep-alive, Content-Length and chunked request bodies, full or chunked
//! (optionally paced) replies, and scripted faults (reset, cut, stall).
//!
//! Fault injection (reset, cut, stall) is compiled in only with the
//! `test-support` feature.
//!
//! It is not a general web server: it trusts its peer (the gateway or a test)
//! and handles one request at a time per connection.

use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = connection(stream, h).await;
        });
    }
}

async fn connection(mut stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let Some((req, keep_alive)) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let reply = handler(&req);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        #[cfg(feature = "test-support")]
        if reply.fault == Fault::ResetBeforeHeaders {
            // linger 0 makes the close an RST; it cannot block with a zero timeout
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO))?;
            return Ok(());
        }
        #[cfg(feature = "test-support")]
        if reply.fault == Fault::CloseBeforeHeaders {
            return Ok(());
        }
        write_reply(&mut stream, &reply, keep_alive).await?;
        #[cfg(feature = "test-support")]
        match reply.fault {
            Fault::CutAfterBody => return Ok(()),
            Fault::StallAfterBody(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            _ => {}
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<bool> {
    if buf.capacity() - buf.len() < 8192 {
        buf.reserve(64 * 1024);
    }
    Ok(stream.read_buf(buf).await? > 0)
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<(Request, bool)>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    // headers
    let (method, path, headers, head_len) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        match req.parse(buf).map_err(|_| bad("bad request"))? {
            httparse::Status::Complete(n) => {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (
                    req.method.unwrap_or("GET").to_string(),
                    req.path.unwrap_or("/").to_string(),
                    headers,
                    n,
                );
            }
            httparse::Status::Partial => {
                if buf.len() > 64 * 1024 {
                    return Err(bad("headers too large"));
                }
                if !fill(stream, buf).await? {
                    return Ok(None);
                }
            }
        }
    };
    buf.advance(head_len);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let keep_alive = get("connection").as_deref() != Some("close");
    let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(stream, buf).await? {
                    return Err(bad("eof in chunk size"));
                }
            };
            let size_str = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("chunk"))?;
            let size_str = size_str.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16).map_err(|_| bad("chunk size"))?;
            buf.advance(line_end + 2);
            while buf.len() < size + 2 {
                if !fill(stream, buf).await? {
                    return Err(bad("eof in chunk"));
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.advance(size + 2);
            if size == 0 {
                break;
            }
        }
        body.freeze()
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            if !fill(stream, buf).await? {
                return Err(bad("eof in body"));
            }
        }
        buf.split_to(len).freeze()
    };
    Ok(Some((
        Request {
            method,
            path,
            headers,
            body,
        },
        keep_alive,
    )))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if !keep_alive {
        head.push_str("connection: close\r\n");
    }
    match &reply.body {
        ReplyBody::Full(b) => {
            head.push_str(&format!("content-length: {}\r\n\r\n", b.len()));
            let mut out = Vec::with_capacity(head.len() + b.len());
            out.extend_from_slice(head.as_bytes());
            if reply.fault == Fault::None {
                out.extend_from_slice(b);
            } else {
                // a faulty full reply sends half of its body
                out.extend_from_slice(&b[..b.len() / 2]);
            }
            stream.write_all(&out).await?;
        }
        ReplyBody::Chunks(chunks) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            for (delay, data) in chunks {
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                if data.is_empty() {
                    continue;
                }
                let mut piece = format!("{:x}\r\n", data.len()).into_bytes();
                piece.extend_from_slice(data);
                piece.extend_from_slice(b"\r\n");
                stream.write_all(&piece).await?;
            }
            if reply.fault == Fault::None {
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
    stream.flush().await
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
