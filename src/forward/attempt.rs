//! One upstream call: build the request head, take a pooled connection (or
//! connect), send, and wait for the response head; then the [`Answer`]'s
//! reads. A pooled connection the upstream closed while idle is replaced by a
//! fresh one (at most twice) without counting as a failed attempt.

use super::call::{Call, Resume};
use super::headers::{self, Head};
use super::plan::Candidate;
use super::shape::{self, Delivery};
use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::keys::{InFlight, Key};
use crate::metrics;
use crate::sse::seam::Mode;
use crate::upstream::{h1, Upstream};
use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::ErrorType;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Most bytes of an upstream answer the gateway holds to convert it.
pub const MAX_CONVERTED_BODY: usize = 64 << 20;

/// Request bodies up to this size are copied behind the head and sent in one write.
const COALESCE_BODY: usize = 256 << 10;

/// Counts an open upstream call in `switchyard_upstream_active`.
struct ActiveCall;

impl ActiveCall {
    fn new() -> ActiveCall {
        metrics::UPSTREAM_ACTIVE.inc();
        ActiveCall
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        metrics::UPSTREAM_ACTIVE.dec();
    }
}

/// An upstream answer whose head has arrived. Holds the key's in-flight count
/// and the active-call gauge until it is dropped.
pub struct Answer {
    pub conn: h1::Conn<Stream>,
    pub head: h1::Head,
    pub upstream: Arc<Upstream>,
    pub delivery: Delivery,
    _key_guard: Option<InFlight>,
    _active: ActiveCall,
}

/// A complete upstream error answer, ready to be passed on.
pub struct Buffered {
    pub header: Head,
    pub body: Bytes,
}

/// A 502 about `up`'s answer.
pub fn protocol_err(up: &str, detail: impl Into<String>) -> GatewayError {
    GatewayError::UpstreamProtocol {
        upstream: up.to_string(),
        detail: detail.into(),
    }
}

impl Answer {
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    pub fn status(&self) -> u16 {
        self.head.status.as_u16()
    }

    pub fn content_type(&self) -> &str {
        self.head.get("content-type").unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.upstream.name()
    }

    /// Whether the head reports an exhausted bucket (`x-ratelimit-remaining-*: 0`).
    pub fn reports_exhausted(&self) -> bool {
        crate::keys::signals::reports_exhausted(self.head.iter())
    }

    /// This answer held in memory with `body` (an error answer, to pass on).
    pub fn buffer(&self, body: Bytes) -> Box<Buffered> {
        let ct = self.content_type();
        let ct = if ct.is_empty() {
            "application/json"
        } else {
            ct
        };
        let header = headers::client_header(&self.head, self.name(), Some(ct));
        Box::new(Buffered { header, body })
    }

    /// Reads the next body chunk within `wait`. `Ok(None)` is the end of the body.
    pub async fn read_chunk(&mut self, wait: Duration) -> Result<Option<Bytes>, GatewayError> {
        match pingora::time::timeout(wait, self.conn.read_body()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(protocol_err(
                self.name(),
                format!("the upstream connection broke mid-response: {e}"),
            )),
            Err(_) => Err(GatewayError::UpstreamTimeout {
                upstream: self.name().to_string(),
                what: "data",
                after: wait,
            }),
        }
    }

    /// Reads the next chunk of a stream: within `timeouts.first_byte` of
    /// `first_deadline`'s start until the first event (`got_event`), then
    /// within `timeouts.idle` of the last chunk; never past `deadline`.
    pub async fn read_stream_chunk(
        &mut self,
        got_event: bool,
        first_deadline: Instant,
        t: &Timeouts,
        deadline: Instant,
    ) -> Result<Option<Bytes>, GatewayError> {
        let limit = if got_event {
            Instant::now() + t.idle
        } else {
            first_deadline
        };
        let wait = limit
            .min(deadline)
            .saturating_duration_since(Instant::now());
        self.read_chunk(wait).await
    }

    /// Reads the whole body (at most [`MAX_CONVERTED_BODY`]), each chunk within
    /// `timeouts.idle` and all before `deadline`.
    pub async fn read_all(
        &mut self,
        deadline: Instant,
        t: &Timeouts,
    ) -> Result<Bytes, GatewayError> {
        let mut buf = BytesMut::new();
        loop {
            let wait = t
                .idle
                .min(deadline.saturating_duration_since(Instant::now()));
            match self.read_chunk(wait).await? {
                Some(c) => {
                    if buf.len() + c.len() > MAX_CONVERTED_BODY {
                        return Err(protocol_err(
                            self.name(),
                            "the answer is larger than the gateway converts (64MiB)",
                        ));
                    }
                    buf.extend_from_slice(&c);
                    if self.conn.body_done() {
                        return Ok(buf.freeze());
                    }
                }
                None => return Ok(buf.freeze()),
            }
        }
    }

    /// Returns the connection to the pool when it can carry another request.
    pub fn release(self) {
        if self.conn.reusable() {
            let upstream = self.upstream.clone();
            let (stream, buf) = self.conn.into_parts();
            upstream.pool.put(stream, buf);
        }
    }
}

/// The request head in wire form (`POST path HTTP/1.1` + headers + blank line).
fn request_head(up: &Upstream, key: Option<&Key>, call: &Call, body_len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(256 + call.headers.len());
    h.extend_from_slice(call.method.as_str().as_bytes());
    h.push(b' ');
    h.extend_from_slice(up.target.base_path.as_bytes());
    h.extend_from_slice(call.suffix.as_bytes());
    if let Some(q) = &call.query {
        h.push(b'?');
        h.extend_from_slice(q.as_bytes());
    }
    h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    h.extend_from_slice(up.target.host_header.as_bytes());
    h.extend_from_slice(b"\r\n");
    h.extend_from_slice(&call.headers);
    h.extend_from_slice(b"Content-Type: ");
    h.extend_from_slice(call.content_type.as_bytes());
    h.extend_from_slice(b"\r\nContent-Length: ");
    h.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    h.extend_from_slice(b"\r\n");
    if let Some(k) = key {
        h.extend_from_slice(b"Authorization: Bearer ");
        h.extend_from_slice(k.secret().as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Makes upstream calls: connections come from each upstream's pool or from
/// Pingora's transport connector (TCP, TLS).
pub struct Connector {
    transport: TransportConnector,
}

impl Connector {
    pub fn new(transport: TransportConnector) -> Connector {
        Connector { transport }
    }

    /// One try: take a pooled connection (or connect), send, wait for the
    /// response head (within `timeouts.first_byte` and before `deadline`).
    /// With `cont`, the request asks to continue that broken stream in its
    /// seam's mode, and the answer is delivered into it.
    pub async fn attempt(
        &self,
        cand: &Candidate<'_>,
        call: &Call,
        t: &Timeouts,
        deadline: Instant,
        cont: Option<&Resume>,
    ) -> Result<Answer, GatewayError> {
        let up = cand.upstream;
        let name = up.name().to_string();
        let unreachable = |detail: String| GatewayError::UpstreamUnreachable {
            upstream: name.clone(),
            detail,
        };
        let (body, delivery) = shaped_body(call, cand, cont)?;
        let mut head = request_head(up, cand.key.as_deref(), call, body.len());
        // Pingora's streams do not buffer writes: send head and a small body as one segment.
        let body = if body.len() <= COALESCE_BODY {
            head.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        let key_guard = cand.key.clone().map(InFlight::new);
        let active = ActiveCall::new();
        // A pooled connection may have been closed by the upstream meanwhile: then
        // try the next one (at most twice) before counting the attempt as failed.
        for round in 0..3 {
            let (mut stream, buf, reused) = match up.pool.take() {
                Some((s, buf)) => (s, buf, true),
                // boxed: a TLS handshake's state would otherwise size the whole request's future
                None => (Box::pin(self.connect(up, t)).await?, BytesMut::new(), false),
            };
            let sent = async {
                stream.write_all(&head).await?;
                if !body.is_empty() {
                    stream.write_all(&body).await?;
                }
                stream.flush().await
            }
            .await;
            if let Err(e) = sent {
                if reused && round < 2 {
                    continue;
                }
                return Err(unreachable(format!("sending the request failed: {e}")));
            }
            let mut conn = h1::Conn::with_buf(stream, buf);
            let wait = t
                .first_byte
                .min(deadline.saturating_duration_since(Instant::now()));
            match pingora::time::timeout(wait, conn.read_head()).await {
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        upstream: name,
                        what: "response",
                        after: wait,
                    })
                }
                Ok(Err(e)) => {
                    // A pooled connection the upstream closed while idle reads as EOF:
                    // try a fresh one. A reset is the upstream's answer and is not repeated.
                    if reused && round < 2 && matches!(e, h1::ReadError::Closed { at_start: true })
                    {
                        continue;
                    }
                    return Err(unreachable(format!(
                        "connection failed before a response arrived: {e}"
                    )));
                }
                Ok(Ok(head)) => {
                    return Ok(Answer {
                        conn,
                        head,
                        upstream: up.clone(),
                        delivery,
                        _key_guard: key_guard,
                        _active: active,
                    })
                }
            }
        }
        Err(unreachable("connection failed repeatedly".into()))
    }

    /// A new connection (TCP, and TLS for https upstreams).
    async fn connect(&self, up: &Upstream, t: &Timeouts) -> Result<Stream, GatewayError> {
        let name = up.name();
        let addr = up
            .addr()
            .await
            .map_err(|e| GatewayError::UpstreamUnreachable {
                upstream: name.to_string(),
                detail: format!("cannot resolve {}: {e}", up.target.host),
            })?;
        let peer = up.peer(addr, t.connect);
        self.transport.new_stream(&peer).await.map_err(|e| {
            if matches!(e.etype(), ErrorType::ConnectTimedout) {
                GatewayError::UpstreamTimeout {
                    upstream: name.to_string(),
                    what: "connection",
                    after: t.connect,
                }
            } else {
                GatewayError::UpstreamUnreachable {
                    upstream: name.to_string(),
                    detail: format!(
                        "cannot connect to {}: {}",
                        up.target.host_header,
                        e.etype().as_str()
                    ),
                }
            }
        })
    }
}

/// The body to send `cand` (the client's, or an edited copy) and how its
/// answer is delivered. The client's body is parsed only when an edit needs
/// it, and that parse is dropped here, before the attempt waits on anything.
fn shaped_body(
    call: &Call,
    cand: &Candidate<'_>,
    cont: Option<&Resume>,
) -> Result<(Bytes, Delivery), GatewayError> {
    let parsed = std::cell::OnceCell::new();
    let json = || parsed.get_or_init(|| call.parse_json());
    let (mut edited, mut delivery) = shape::plan(
        json,
        &call.peek,
        call.api,
        &cand.upstream.conf,
        &call.model,
        cand.route.upstream_model,
    );
    if let Some(r) = cont {
        let mut v = edited.unwrap_or_else(|| json().clone());
        let mode = r.seam.mode().unwrap_or(Mode::Restart);
        if !r.seam.shape_request(&mut v, mode) {
            r.seam.shape_request(&mut v, Mode::Restart);
        }
        edited = Some(v);
        delivery = if r.open() {
            Delivery::Pass {
                strip_usage: !call.peek.client_usage(),
            }
        } else {
            Delivery::Aggregate(call.api)
        };
    }
    let body = match edited {
        Some(v) => {
            Bytes::from(serde_json::to_vec(&v).map_err(|e| GatewayError::Internal(e.to_string()))?)
        }
        None => call.body.clone(),
    };
    Ok((body, delivery))
}
