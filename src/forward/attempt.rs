//! One upstream call through Pingora's HTTP client sessions and pool
//! (`connectors::http`; HTTP/1.1, or HTTP/2 where the upstream has
//! `http2: true`): build the request head, take a pooled session (or
//! connect), send, and wait for the response head; then the [`Answer`]'s
//! reads.
//!
//! A request is sent again (once, on a fresh connection) only when the
//! upstream cannot have acted on it: a pooled connection failed while the
//! request was being written. A request written whole and then met with a
//! close or a reset is a failed attempt (the plan's to retry, counted in the
//! access line), never silently billed twice. A stale pooled connection
//! makes the upstream's other idle connections unused from then on.

use super::call::{Call, Resume};
use super::headers::{self, Head};
use super::plan::Candidate;
use super::shape::{self, Delivery};
use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::keys::InFlight;
use crate::metrics;
use crate::sse::seam::Mode;
use crate::upstream::Upstream;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector as HttpConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most bytes of an upstream answer the gateway holds to convert it.
pub const MAX_CONVERTED_BODY: usize = 64 << 20;

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
    session: HttpSession,
    /// Where the session goes back to, and the peer it came from.
    pool: Arc<HttpConnector>,
    addr: SocketAddr,
    connect: Duration,
    /// The pool group the session was taken from (it goes back there).
    group: u64,
    pub upstream: Arc<Upstream>,
    pub delivery: Delivery,
    /// A read failure met while gathering ready chunks: the next read's.
    held: Option<Box<GatewayError>>,
    _key_guard: Option<InFlight>,
    _active: ActiveCall,
}

/// Most bytes of ready stream chunks joined into one read (one client write
/// for a burst of events, as the upstream sent it).
const READY_JOIN: usize = 64 << 10;

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

/// The head of an answer whose session lost it (never: an [`Answer`] is
/// made only once its head was read).
static NO_HEAD: std::sync::LazyLock<ResponseHeader> =
    std::sync::LazyLock::new(|| headers::head(http::StatusCode::BAD_GATEWAY, 0).into());

impl Answer {
    /// The upstream's response head.
    pub fn head(&self) -> &ResponseHeader {
        self.session.response_header().unwrap_or(&NO_HEAD)
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        headers::header_text(self.head(), name)
    }

    pub fn status(&self) -> u16 {
        self.head().status.as_u16()
    }

    pub fn content_type(&self) -> &str {
        self.header_value("content-type").unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.upstream.name()
    }

    /// Whether the head reports an exhausted bucket (`x-ratelimit-remaining-*: 0`).
    pub fn reports_exhausted(&self) -> bool {
        let h = &self.head().headers;
        crate::keys::signals::reports_exhausted(
            h.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        )
    }

    /// This answer held in memory with `body` (an error answer, to pass on).
    pub fn buffer(&self, body: Bytes) -> Box<Buffered> {
        let ct = self.content_type();
        let ct = if ct.is_empty() {
            "application/json"
        } else {
            ct
        };
        let header = headers::client_header(self.head(), self.name(), Some(ct));
        Box::new(Buffered { header, body })
    }

    /// Reads the next body chunk within `wait`. `Ok(None)` is the end of the body.
    pub async fn read_chunk(&mut self, wait: Duration) -> Result<Option<Bytes>, GatewayError> {
        match pingora::time::timeout(wait, self.session.read_response_body()).await {
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
        if let Some(e) = self.held.take() {
            return Err(*e);
        }
        match self.read_chunk(wait).await? {
            Some(first) => Ok(Some(self.join_ready(first))),
            None => Ok(None),
        }
    }

    /// `first` and the chunks already received behind it (taken without
    /// waiting), up to [`READY_JOIN`] bytes. A failure among them is held
    /// for the next read; the end of the body is seen again by it.
    fn join_ready(&mut self, first: Bytes) -> Bytes {
        let mut joined: Option<BytesMut> = None;
        while joined.as_ref().map_or(first.len(), BytesMut::len) < READY_JOIN {
            if self.session.response_done() {
                break;
            }
            // polled once: Pingora's body read gives data already buffered or
            // read now, and takes nothing from the socket when it must wait
            let mut read = std::pin::pin!(self.session.read_response_body());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::future::Future::poll(read.as_mut(), &mut cx) {
                std::task::Poll::Ready(Ok(Some(more))) => joined
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&more),
                std::task::Poll::Ready(Err(e)) => {
                    self.held = Some(Box::new(protocol_err(
                        self.upstream.name(),
                        format!("the upstream connection broke mid-response: {e}"),
                    )));
                    break;
                }
                std::task::Poll::Ready(Ok(None)) | std::task::Poll::Pending => break,
            }
        }
        joined.map_or(first, BytesMut::freeze)
    }

    /// Reads the whole body (at most [`MAX_CONVERTED_BODY`]), each chunk within
    /// `timeouts.idle` and all before `deadline`.
    pub async fn read_all(
        &mut self,
        deadline: Instant,
        t: &Timeouts,
    ) -> Result<Bytes, GatewayError> {
        self.read_at_most(MAX_CONVERTED_BODY, deadline, t).await
    }

    /// [`Self::read_all`] with a smaller bound (`max` bytes).
    pub async fn read_at_most(
        &mut self,
        max: usize,
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
                    if buf.len() + c.len() > max {
                        return Err(protocol_err(
                            self.name(),
                            format!(
                                "the answer is larger than the gateway reads here ({max} bytes)"
                            ),
                        ));
                    }
                    buf.extend_from_slice(&c);
                    if self.session.response_done() {
                        return Ok(buf.freeze());
                    }
                }
                None => return Ok(buf.freeze()),
            }
        }
    }

    /// Whether the whole body has been read.
    pub fn body_done(&mut self) -> bool {
        self.session.response_done()
    }

    /// Returns the session to the pool when it can carry another request
    /// (its answer read whole); otherwise its connection is closed.
    pub async fn release(mut self) {
        if self.session.response_done() {
            let mut peer = self.upstream.peer(self.addr, self.connect);
            // an h2 connection in use is found only under the group it came from
            peer.group_key = self.group;
            let idle = Some(crate::upstream::POOL_IDLE);
            // boxed: inline, its state would size every future that releases
            Box::pin(self.pool.release_http_session(self.session, &peer, idle)).await;
        }
    }
}

/// The request head for `call` to `cand`'s upstream with its key.
fn request_head(
    cand: &Candidate<'_>,
    call: &Call,
    body_len: usize,
) -> Result<RequestHeader, GatewayError> {
    let up = cand.upstream;
    let key = cand.key.as_deref();
    let path = upstream_path(up, cand, call)?;
    let bad = |e: pingora::BError| {
        GatewayError::BadRequest(format!("cannot forward: {}", e.etype().as_str()))
    };
    let mut h = RequestHeader::build_no_case(
        call.method.clone(),
        path.as_bytes(),
        Some(call.headers.len() + 4),
    )
    .map_err(bad)?;
    h.insert_header(http::header::HOST, up.target.host_header.as_str())
        .map_err(bad)?;
    for (name, value) in call.headers.iter().chain(&up.conf.account_headers) {
        h.append_header(name.clone(), value.clone()).map_err(bad)?;
    }
    h.insert_header(http::header::CONTENT_TYPE, call.content_type.as_ref())
        .map_err(bad)?;
    h.insert_header(http::header::CONTENT_LENGTH, body_len)
        .map_err(bad)?;
    if up.conf.anthropic && h.headers.get("anthropic-version").is_none() {
        h.insert_header("anthropic-version", crate::upstream::ANTHROPIC_VERSION)
            .map_err(bad)?;
    }
    if let Some(k) = key {
        let (name, value) = crate::upstream::credential(&up.conf, k.secret())
            .ok_or_else(|| GatewayError::Internal("a key is not a header value".into()))?;
        h.insert_header(name, value).map_err(bad)?;
    }
    Ok(h)
}

/// Where `call` goes on `up` as `cand` serves it: the base path and the
/// call's path and query, or Azure's URL for them.
fn upstream_path(up: &Upstream, cand: &Candidate<'_>, call: &Call) -> Result<String, GatewayError> {
    let base = &up.target.base_path;
    let Some(azure) = &up.conf.azure else {
        let query = call
            .query
            .as_deref()
            .map_or(String::new(), |q| format!("?{q}"));
        return Ok(format!("{base}{}{query}", call.suffix));
    };
    let upstream_model = match cand.route.upstream_model {
        "" => cand.model,
        m => m,
    };
    azure
        .path(
            base,
            (&call.suffix, call.query.as_deref()),
            (cand.model, upstream_model),
        )
        .map_err(GatewayError::BadRequest)
}

/// Why one send on one session failed.
enum SendError {
    /// The upstream cannot have acted on the request (not written whole): it
    /// may be sent again on a fresh connection.
    Unread(String),
    /// Anything else: the attempt failed.
    Failed(GatewayError),
}

/// Makes upstream calls on Pingora's HTTP client sessions (TCP, TLS; h1 or
/// h2 by the peer's ALPN), pooled per upstream.
pub struct Connector {
    pool: Arc<HttpConnector>,
}

impl Connector {
    pub fn new(options: Option<pingora::connectors::ConnectorOptions>) -> Connector {
        Connector {
            pool: Arc::new(HttpConnector::new(options)),
        }
    }

    /// One try: take a pooled session (or connect), send, wait for the
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
        let (body, delivery) = shaped_body(call, cand, cont)?;
        let head = request_head(cand, call, body.len())?;
        let addr = up
            .addr()
            .await
            .map_err(|e| GatewayError::UpstreamUnreachable {
                upstream: up.name().to_string(),
                detail: format!("cannot resolve {}: {e}", up.target.host),
            })?;
        let key_guard = cand.key.clone().map(InFlight::new);
        let active = ActiveCall::new();
        let mut retried = false;
        loop {
            let peer = up.peer(addr, t.connect);
            // boxed: a TLS handshake's state would otherwise size the whole request's future
            let (mut session, reused) = Box::pin(self.session(up, &peer, t)).await?;
            let wait = t
                .first_byte
                .min(deadline.saturating_duration_since(Instant::now()));
            match Box::pin(send(&mut session, &head, &body, wait, up.name())).await {
                Ok(()) => {
                    return Ok(Answer {
                        session,
                        pool: self.pool.clone(),
                        addr,
                        connect: t.connect,
                        group: peer.group_key,
                        upstream: up.clone(),
                        delivery,
                        held: None,
                        _key_guard: key_guard,
                        _active: active,
                    })
                }
                Err(SendError::Unread(why)) if reused && !retried => {
                    log::debug!(
                        "upstream {}: a pooled connection failed ({why}); sending on a fresh one",
                        up.name()
                    );
                    // its idle siblings are likely as stale: the next session is a new one
                    up.retire_idle_connections();
                    retried = true;
                }
                Err(SendError::Unread(why)) => {
                    return Err(GatewayError::UpstreamUnreachable {
                        upstream: up.name().to_string(),
                        detail: why,
                    })
                }
                Err(SendError::Failed(e)) => return Err(e),
            }
        }
    }

    /// A session to `peer`: a pooled one, else a new connection (TCP, and
    /// TLS for https upstreams).
    async fn session(
        &self,
        up: &Upstream,
        peer: &pingora::upstreams::peer::HttpPeer,
        t: &Timeouts,
    ) -> Result<(HttpSession, bool), GatewayError> {
        // h2: one caller at a time, so that the next finds the connection the
        // last one opened or used; a caller kept waiting past `connect` goes alone
        let _turn = if up.conf.http2 {
            pingora::time::timeout(t.connect, up.h2_turn.lock())
                .await
                .ok()
        } else {
            None
        };
        self.pool.get_http_session(peer).await.map_err(|e| {
            if matches!(e.etype(), ErrorType::ConnectTimedout) {
                GatewayError::UpstreamTimeout {
                    upstream: up.name().to_string(),
                    what: "connection",
                    after: t.connect,
                }
            } else {
                GatewayError::UpstreamUnreachable {
                    upstream: up.name().to_string(),
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

/// Sends the request on `session` and reads the response head within `wait`
/// (1xx heads are skipped).
async fn send(
    session: &mut HttpSession,
    head: &RequestHeader,
    body: &Bytes,
    wait: Duration,
    name: &str,
) -> Result<(), SendError> {
    let unread = |what: &str, e: pingora::BError| {
        SendError::Unread(format!("{what}: {}", e.etype().as_str()))
    };
    // Pingora flushes the head and the body apart: two segments (TCP_CORK
    // around them measured within the noise, so they stay two). An upstream
    // that stops taking the body holds the attempt no longer than its answer.
    let write = async {
        session.write_request_header(Box::new(head.clone())).await?;
        if !body.is_empty() {
            session.write_request_body(body.clone(), true).await?;
        }
        session.finish_request_body().await
    };
    match pingora::time::timeout(wait, write).await {
        Ok(written) => written.map_err(|e| unread("sending the request failed", e))?,
        Err(_) => {
            return Err(SendError::Failed(GatewayError::UpstreamTimeout {
                upstream: name.to_string(),
                what: "progress sending the request",
                after: wait,
            }))
        }
    }
    let read_head = async {
        loop {
            session.read_response_header().await?;
            match session.response_header().map(|h| h.status.as_u16()) {
                Some(100..=199) => continue,
                _ => return Ok::<(), pingora::BError>(()),
            }
        }
    };
    match pingora::time::timeout(wait, read_head).await {
        Err(_) => Err(SendError::Failed(GatewayError::UpstreamTimeout {
            upstream: name.to_string(),
            what: "response",
            after: wait,
        })),
        Ok(Err(e)) if matches!(e.etype(), ErrorType::InvalidHTTPHeader) => {
            Err(SendError::Failed(protocol_err(
                name,
                "its answer's head is not valid HTTP/1.1 (framing or header syntax)",
            )))
        }
        Ok(Err(e)) => Err(SendError::Failed(GatewayError::UpstreamUnreachable {
            upstream: name.to_string(),
            detail: format!(
                "connection failed before a response arrived: {}",
                e.etype().as_str()
            ),
        })),
        Ok(Ok(())) => headers::check_framing(session, name).map_err(SendError::Failed),
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
    let (edits, mut delivery) = shape::plan(
        &call.peek,
        call.api,
        &cand.upstream.conf,
        &call.model,
        cand.route.upstream_model,
    );
    let internal = |e: serde_json::Error| GatewayError::Internal(e.to_string());
    let body = if let Some(r) = cont {
        let mut v = call.parse_json();
        if let Some(e) = &edits {
            e.apply_value(&mut v);
        }
        let mode = r.seam.mode().unwrap_or(Mode::Restart);
        if !r.seam.shape_request(&mut v, mode) {
            r.seam.shape_request(&mut v, Mode::Restart);
        }
        delivery = if r.open() {
            Delivery::Pass {
                strip_usage: !call.peek.client_usage(),
            }
        } else {
            Delivery::Aggregate(call.api)
        };
        Bytes::from(serde_json::to_vec(&v).map_err(internal)?)
    } else {
        match edits {
            Some(e) => Bytes::from(e.apply(&call.body).map_err(internal)?),
            None => call.body.clone(),
        }
    };
    Ok((body, delivery))
}
