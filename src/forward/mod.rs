//! The understood lane's upstream leg: pick upstream + key, send the whole
//! request with Pingora's connector, and deliver the answer (pass-through,
//! aggregated, or synthesized; see [`shape`]). Every failure that happens before
//! a byte reaches the client is retried on the next candidate.
//!
//! Invariants: the client's credentials are never forwarded; the upstream key is
//! set only in `Authorization`; an answer that breaks after bytes reached the
//! client never ends like a complete one (SSE gets an error event and no
//! `[DONE]`, other bodies a closed connection).

pub mod h1;
pub mod pool;
pub mod shape;

use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::keys::signals::{self, fmt_clock, Verdict};
use crate::keys::{InFlight, Key, Park, Pick};
use crate::metrics;
use crate::sse::aggregate::{
    AggregateError, ChatAggregator, CompletionAggregator, ResponsesAggregator,
};
use crate::sse::{Frame, Framer};
use crate::state::{Route, Snapshot, Upstream};
use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use shape::{Api, Delivery, UsageEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How long an idle upstream connection stays pooled.
pub const POOL_IDLE: Duration = Duration::from_secs(60);

/// Most bytes of an upstream answer the gateway holds to convert it.
const MAX_CONVERTED_BODY: usize = 64 << 20;

/// Request bodies up to this size are copied behind the head and sent in one write.
const COALESCE_BODY: usize = 256 << 10;

/// JSON answers up to this size are parsed after relaying, to meter `usage`.
const METER_JSON_LIMIT: usize = 1 << 20;

/// Client request headers never forwarded upstream.
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "expect",
    "accept-encoding",
];

/// Upstream response headers never relayed to the client.
const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Headers dropped as well when the gateway rewrites the body.
const BODY_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
];

/// What one request asks of the upstream leg.
pub struct Call {
    /// Path after `/v1`, e.g. `/chat/completions`.
    pub suffix: &'static str,
    pub api: Api,
    pub query: Option<String>,
    /// The client's body and its parsed form.
    pub body: Bytes,
    /// The fields routing decides on.
    pub peek: shape::Peek,
    /// The whole body as JSON, parsed on first need (only edits need it).
    pub json: std::sync::OnceLock<serde_json::Value>,
    pub model: String,
    /// Client headers to pass along, in wire form (`name: value\r\n` each).
    pub headers: Vec<u8>,
}

impl Call {
    /// The parsed body (parsed once, on first use).
    pub fn json_ref(&self) -> &serde_json::Value {
        self.json
            .get_or_init(|| serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null))
    }
}

/// What happened, for logs and metrics.
#[derive(Default)]
pub struct Outcome {
    pub upstream: Option<Arc<Upstream>>,
    pub key: Option<Arc<Key>>,
    pub attempts: u32,
    /// Status sent to the client (0 if none).
    pub status: u16,
}

/// How a delivered response ended.
pub enum RelayEnd {
    /// Response fully delivered.
    Complete,
    /// The client went away; nothing more to do.
    ClientGone,
    /// The upstream broke mid-body of a non-SSE response: close the connection.
    Broken(String),
}

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

/// An upstream answer whose header has arrived.
struct Answer {
    conn: h1::Conn<Stream>,
    head: h1::Head,
    upstream: Arc<Upstream>,
    delivery: Delivery,
    _key_guard: Option<InFlight>,
    _active: ActiveCall,
}

/// A complete upstream error answer, ready to be passed on.
struct Buffered {
    header: Head,
    body: Bytes,
}

/// Why a candidate did not produce the answer.
enum Failure {
    /// Rate limited / parked / context too long: the upstream's own answer.
    Answer(Box<Buffered>),
    /// A transient failure (counts toward `retry.attempts`).
    Transient(Transient),
}

/// A transient failure: an upstream 5xx answer, or the gateway's own error.
enum Transient {
    Answer(Box<Buffered>),
    Error(GatewayError),
}

impl Transient {
    fn describe(&self) -> String {
        match self {
            Transient::Answer(b) => format!("upstream answered {}", b.header.status.as_u16()),
            Transient::Error(e) => e.message(),
        }
    }
}

/// What one candidate's try led to.
enum Step {
    Done(RelayEnd),
    Fatal(GatewayError),
    /// Try the next key/upstream (not counted as a failed attempt).
    Rotate {
        failure: Failure,
        log_line: Option<String>,
    },
    /// Try the next candidate after backoff (counted).
    Transient(Transient),
    /// Skip to the next fallback model.
    NextModel(Failure),
}

/// Cooldown after a 429 that named no time.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

fn fmt_wait(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Answer {
    fn header_value(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    fn status(&self) -> u16 {
        self.head.status.as_u16()
    }

    fn content_type(&self) -> &str {
        self.head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn name(&self) -> &str {
        self.upstream.name()
    }
}

/// Connects the understood lane to upstreams (idle connections live in each
/// upstream's [`pool::ConnPool`]).
pub struct Forwarder {
    transport: TransportConnector,
}

fn protocol_err(up: &str, detail: impl Into<String>) -> GatewayError {
    GatewayError::UpstreamProtocol {
        upstream: up.to_string(),
        detail: detail.into(),
    }
}

impl Forwarder {
    pub fn new(transport: TransportConnector) -> Forwarder {
        Forwarder { transport }
    }

    /// Runs the attempt loop over the model, then its fallbacks, and delivers the
    /// answer to the client. On `Err` nothing was written to the client yet.
    /// `timeouts.total` counts from `start`, when the request arrived.
    pub async fn run(
        &self,
        session: &mut Session,
        snap: &Snapshot,
        call: &Call,
        start: Instant,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        let cfg = &snap.config;
        let deadline = start + cfg.timeouts.total;
        let max_attempts = cfg.retry.attempts.max(1);
        let models = snap.model_chain(&call.model);
        let mut failed_attempts = 0u32;
        let mut last: Option<Failure> = None;
        let mut waits = 0;
        loop {
            let mut earliest: Option<u64> = None;
            let mut pending_log: Option<String> = None;
            'models: for model in &models {
                for route in snap.routes(model) {
                    let up = snap.upstreams[route.upstream].clone();
                    let mut tried = smallvec::SmallVec::<[usize; 8]>::new();
                    let mut keyless_done = false;
                    loop {
                        // (the first attempt starts right away: no clock read)
                        if failed_attempts >= max_attempts
                            || (outcome.attempts > 0 && Instant::now() >= deadline)
                        {
                            break 'models;
                        }
                        let key =
                            match up
                                .keys
                                .pick(route.upstream_model, &tried, signals::now_ms())
                            {
                                Pick::Key(i, k) => {
                                    tried.push(i);
                                    Some(k)
                                }
                                Pick::None { .. } if up.keys.is_empty() && !keyless_done => {
                                    keyless_done = true;
                                    None
                                }
                                Pick::None { earliest_ms, .. } => {
                                    if let Some(e) = earliest_ms {
                                        earliest = Some(earliest.map_or(e, |x: u64| x.min(e)));
                                    }
                                    break;
                                }
                            };
                        if let Some(line) = pending_log.take() {
                            log::warn!(
                                "{line}; next: {}",
                                key.as_ref().map_or(up.name(), |k| k.id.as_str())
                            );
                        }
                        if matches!(last, Some(Failure::Transient(_))) && failed_attempts > 0 {
                            let backoff = cfg
                                .retry
                                .backoff
                                .saturating_mul(1 << (failed_attempts - 1).min(6));
                            let jitter = rand::random::<f64>() * 0.5 + 0.75;
                            tokio::time::sleep(
                                backoff
                                    .mul_f64(jitter)
                                    .min(deadline.saturating_duration_since(Instant::now())),
                            )
                            .await;
                        }
                        outcome.attempts += 1;
                        outcome.upstream = Some(up.clone());
                        outcome.key = key.clone();
                        match self
                            .try_candidate(
                                session,
                                snap,
                                &up,
                                key.clone(),
                                &route,
                                call,
                                deadline,
                                outcome,
                            )
                            .await
                        {
                            Step::Done(end) => return Ok(end),
                            Step::Fatal(e) => return Err(e),
                            Step::Rotate { failure, log_line } => {
                                pending_log = log_line;
                                last = Some(failure);
                            }
                            Step::Transient(e) => {
                                failed_attempts += 1;
                                log::warn!(
                                    "attempt {} for model {model} on {} with key {} failed: {}",
                                    outcome.attempts,
                                    up.name(),
                                    key.as_ref().map_or("-", |k| k.id.as_str()),
                                    e.describe()
                                );
                                last = Some(Failure::Transient(e));
                            }
                            Step::NextModel(f) => {
                                last = Some(f);
                                continue 'models;
                            }
                        }
                        if key.is_none() {
                            break;
                        }
                    }
                }
            }
            if let Some(line) = pending_log.take() {
                log::warn!("{line}; next: none");
            }
            let now = signals::now_ms();
            let exhausted_attempts = failed_attempts >= max_attempts || Instant::now() >= deadline;
            if let (Some(at), false) = (earliest, exhausted_attempts) {
                let wait = Duration::from_millis(at.saturating_sub(now));
                let patience = cfg.limits.queue_timeout.saturating_sub(start.elapsed());
                if wait <= patience && Instant::now() + wait < deadline && waits < 8 {
                    waits += 1;
                    log::info!(
                        "model {}: every key is cooling; waiting {} for the earliest recovery",
                        call.model,
                        fmt_wait(wait)
                    );
                    tokio::time::sleep(wait + Duration::from_millis(5)).await;
                    continue;
                }
                if !matches!(last, Some(Failure::Transient(_))) {
                    return Err(GatewayError::RateLimited {
                        message: snap.exhaustion_message(&models, now),
                        retry_after: wait,
                    });
                }
            }
            return match last {
                Some(Failure::Answer(buffered))
                | Some(Failure::Transient(Transient::Answer(buffered))) => {
                    Ok(Self::send_buffered(session, buffered, outcome).await)
                }
                Some(Failure::Transient(Transient::Error(e))) => Err(e),
                None => Err(snap.unavailable_error(&models, now)),
            };
        }
    }

    /// Sends one request to one upstream with one key and decides what its answer
    /// means for the key and for the request.
    #[allow(clippy::too_many_arguments)]
    async fn try_candidate(
        &self,
        session: &mut Session,
        snap: &Snapshot,
        up: &Arc<Upstream>,
        key: Option<Arc<Key>>,
        route: &Route<'_>,
        call: &Call,
        deadline: Instant,
        outcome: &mut Outcome,
    ) -> Step {
        let count = |outcome_label: &str| up.count_call(key.as_deref(), outcome_label);
        let key_for_count = key.clone();
        let fail_key = move || {
            if let Some(k) = &key_for_count {
                k.failures.fetch_add(1, Ordering::Relaxed);
            }
        };
        let mut answer = match self
            .attempt(snap, up, key.clone(), route, call, deadline)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                count(if matches!(e, GatewayError::UpstreamTimeout { .. }) {
                    "timeout"
                } else {
                    "connect_error"
                });
                fail_key();
                return if e.retryable() {
                    Step::Transient(Transient::Error(e))
                } else {
                    Step::Fatal(e)
                };
            }
        };
        let status = answer.status();
        count(if status == 429 {
            "429"
        } else {
            metrics::status_class(status)
        });
        let now = std::time::SystemTime::now();
        let exhausted = || {
            signals::reports_exhausted(
                answer
                    .head
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes())),
            )
        };
        if (200..300).contains(&status) {
            let limits = if key.is_some() && exhausted() {
                signals::read_limits(|n| answer.header_value(n), "", now)
            } else {
                signals::Limits::default()
            };
            if let (Some(k), Some(until)) = (&key, limits.exhausted_until_ms) {
                let scope = limits.per_model.then_some(route.upstream_model);
                k.cool_down(scope, until, "remaining 0");
                log::info!(
                    "key {} has no requests left; skipping it until {}",
                    k.id,
                    fmt_clock(until)
                );
            }
            return match self
                .deliver(session, answer, deadline, &snap.config.timeouts, outcome)
                .await
            {
                Ok(end) => Step::Done(end),
                Err(e) => {
                    fail_key();
                    Step::Transient(Transient::Error(e))
                }
            };
        }
        // an error answer: read it (small), then decide
        let body = match self
            .read_all(&mut answer, deadline, &snap.config.timeouts)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                fail_key();
                return Step::Transient(Transient::Error(e));
            }
        };
        let text = String::from_utf8_lossy(&body);
        let verdict = signals::classify(status, &text);
        let limits = signals::read_limits(|n| answer.header_value(n), &text, now);
        let buffered = Self::buffer(&answer, body.clone());
        Self::release(answer);
        match verdict {
            Verdict::Deliver | Verdict::Return => {
                Step::Done(Self::send_buffered(session, buffered, outcome).await)
            }
            Verdict::ContextTooLong => Step::NextModel(Failure::Answer(buffered)),
            Verdict::RetryElsewhere => {
                fail_key();
                Step::Transient(Transient::Answer(buffered))
            }
            Verdict::CoolDown => {
                let Some(k) = key else {
                    return Step::Rotate {
                        failure: Failure::Answer(buffered),
                        log_line: None,
                    };
                };
                fail_key();
                k.rate_limited.fetch_add(1, Ordering::Relaxed);
                let now_ms = signals::now_ms();
                let (until, why) = match (limits.until_ms, &limits.source) {
                    (Some(u), Some(src)) => (u, src.clone()),
                    _ => {
                        let jitter = 0.8 + rand::random::<f64>() * 0.4;
                        (
                            now_ms + (DEFAULT_COOLDOWN.as_millis() as f64 * jitter) as u64,
                            "no retry signal; default".into(),
                        )
                    }
                };
                let scope = limits.per_model.then_some(route.upstream_model);
                let kind = limits
                    .limit_type
                    .clone()
                    .or_else(|| signals::error_code(&text))
                    .unwrap_or_default();
                let reason = format!("429 {kind}").trim().to_string();
                let effective = k.cool_down(scope, until, &format!("{reason}, {why}"));
                let line = format!(
                    "key {} cooling until {}{} ({reason}, {why})",
                    k.id,
                    fmt_clock(effective),
                    scope.map(|m| format!(" for {m}")).unwrap_or_default(),
                );
                Step::Rotate {
                    failure: Failure::Answer(buffered),
                    log_line: Some(line),
                }
            }
            Verdict::Park { reason } => {
                let Some(k) = key else {
                    return Step::Done(Self::send_buffered(session, buffered, outcome).await);
                };
                fail_key();
                k.park(Park {
                    reason: reason.clone(),
                    until_ms: None,
                });
                let line = format!(
                    "key {} parked ({reason}): out of rotation until an operator enables it",
                    k.id
                );
                Step::Rotate {
                    failure: Failure::Answer(buffered),
                    log_line: Some(line),
                }
            }
        }
    }

    /// An error answer held in memory: status, headers and body.
    fn buffer(answer: &Answer, body: Bytes) -> Box<Buffered> {
        let ct = answer.content_type();
        let ct = if ct.is_empty() {
            "application/json"
        } else {
            ct
        };
        let header = Self::client_header(answer, Some(ct));
        Box::new(Buffered { header, body })
    }

    async fn send_buffered(
        session: &mut Session,
        b: Box<Buffered>,
        outcome: &mut Outcome,
    ) -> RelayEnd {
        Self::send_whole(session, b.header, b.body, false, outcome).await
    }

    /// The request head in wire form (`POST path HTTP/1.1` + headers + blank line).
    fn request_head(up: &Upstream, key: Option<&Key>, call: &Call, body_len: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(256 + call.headers.len());
        h.extend_from_slice(b"POST ");
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
        h.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
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

    /// One try: take a pooled connection (or connect), send, wait for the response header.
    async fn attempt(
        &self,
        snap: &Snapshot,
        up: &Arc<Upstream>,
        key: Option<Arc<Key>>,
        route: &Route<'_>,
        call: &Call,
        deadline: Instant,
    ) -> Result<Answer, GatewayError> {
        let t = &snap.config.timeouts;
        let name = up.name().to_string();
        let unreachable = |detail: String| GatewayError::UpstreamUnreachable {
            upstream: name.clone(),
            detail,
        };
        let (edited, delivery) = shape::plan(
            || call.json_ref(),
            &call.peek,
            call.api,
            &up.conf,
            &call.model,
            route.upstream_model,
        );
        let body = match edited {
            Some(v) => Bytes::from(
                serde_json::to_vec(&v).map_err(|e| GatewayError::Internal(e.to_string()))?,
            ),
            None => call.body.clone(),
        };
        let mut head = Self::request_head(up, key.as_deref(), call, body.len());
        // Pingora's streams do not buffer writes: send head and a small body as one segment.
        let body = if body.len() <= COALESCE_BODY {
            head.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        let key_guard = key.map(InFlight::new);
        let active = ActiveCall::new();
        // A pooled connection may have been closed by the upstream meanwhile: then
        // try the next one (at most twice) before counting the attempt as failed.
        for round in 0..3 {
            let (mut stream, reused) = match up.pool.take() {
                Some(s) => (s, true),
                None => (self.connect(up, t).await?, false),
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
            let mut conn = h1::Conn::new(stream);
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
        let mut peer = HttpPeer::new(addr, up.target.tls, up.target.host.clone());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
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

    /// Chooses how to deliver a 2xx answer; errors and non-2xx pass through.
    /// `Err` means nothing was written to the client (the caller may retry).
    async fn deliver(
        &self,
        session: &mut Session,
        answer: Answer,
        deadline: Instant,
        t: &Timeouts,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        let status = answer.status();
        let ct = answer.content_type().as_bytes();
        let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
        let is_sse = starts(b"text/event-stream");
        let is_json = starts(b"application/json") || ct.is_empty();
        if !(200..300).contains(&status) {
            return Ok(self
                .relay_raw(session, answer, deadline, t.idle, outcome)
                .await);
        }
        match answer.delivery {
            // boxed: their state is large and would otherwise size every request's future
            Delivery::Aggregate(api) if is_sse => {
                Box::pin(self.aggregate(session, answer, api, deadline, t, outcome)).await
            }
            Delivery::Synthesize { api, include_usage } if is_json => {
                Box::pin(self.synthesize(session, answer, api, include_usage, deadline, t, outcome))
                    .await
            }
            Delivery::Pass { strip_usage } if is_sse => {
                Box::pin(self.relay_sse(session, answer, strip_usage, deadline, t, outcome)).await
            }
            _ => Ok(self
                .relay_raw(session, answer, deadline, t.idle, outcome)
                .await),
        }
    }

    /// Response header for the client, copied from the upstream's. With
    /// `new_body`, the body headers are replaced by the given content type.
    fn client_header(answer: &Answer, new_body: Option<&str>) -> Head {
        let up = &answer.head;
        let mut out = head(up.status, up.headers.len() + 4);
        for (name, value) in up.headers.iter() {
            let n = name.as_str();
            if DROP_RESPONSE_HEADERS.contains(&n)
                || (new_body.is_some() && BODY_HEADERS.contains(&n))
            {
                continue;
            }
            out.headers.append(name.clone(), value.clone());
        }
        if let Some(ct) = new_body {
            if let Ok(v) = http::HeaderValue::from_str(ct) {
                out.headers.insert(http::header::CONTENT_TYPE, v);
            }
        }
        gateway_headers(&mut out.headers);
        if let Ok(v) = http::HeaderValue::from_str(answer.name()) {
            out.headers.insert(X_SWITCHYARD_UPSTREAM, v);
        }
        out
    }

    /// Reads the next body chunk within `wait`. `Ok(None)` is the end of the body.
    async fn read_chunk(
        answer: &mut Answer,
        wait: Duration,
    ) -> Result<Option<Bytes>, GatewayError> {
        match pingora::time::timeout(wait, answer.conn.read_body()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(protocol_err(
                answer.name(),
                format!("the upstream connection broke mid-response: {e}"),
            )),
            Err(_) => Err(GatewayError::UpstreamTimeout {
                upstream: answer.name().to_string(),
                what: "data",
                after: wait,
            }),
        }
    }

    /// Reads the whole body (bounded), then returns the connection to the pool.
    async fn read_all(
        &self,
        answer: &mut Answer,
        deadline: Instant,
        t: &Timeouts,
    ) -> Result<Bytes, GatewayError> {
        let mut buf = BytesMut::new();
        loop {
            let wait = t
                .idle
                .min(deadline.saturating_duration_since(Instant::now()));
            match Self::read_chunk(answer, wait).await? {
                Some(c) => {
                    if buf.len() + c.len() > MAX_CONVERTED_BODY {
                        return Err(protocol_err(
                            answer.name(),
                            "the answer is larger than the gateway converts (64MiB)",
                        ));
                    }
                    buf.extend_from_slice(&c);
                    if answer.conn.body_done() {
                        return Ok(buf.freeze());
                    }
                }
                None => return Ok(buf.freeze()),
            }
        }
    }

    /// Returns the connection to the pool when it can carry another request.
    fn release(answer: Answer) {
        if answer.conn.reusable() {
            let upstream = answer.upstream.clone();
            upstream.pool.put(answer.conn.into_stream());
        }
    }

    /// Writes a whole body to the client.
    async fn send_whole(
        session: &mut Session,
        mut header: Head,
        body: Bytes,
        sse: bool,
        outcome: &mut Outcome,
    ) -> RelayEnd {
        use http::header::{CACHE_CONTROL, CONTENT_LENGTH, TRANSFER_ENCODING};
        if !sse {
            header
                .headers
                .insert(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        } else {
            // chunked keeps the connection reusable (no framing header = close-delimited)
            header
                .headers
                .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
            header
                .headers
                .insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
        }
        outcome.status = header.status.as_u16();
        if session
            .write_response_header(Box::new(header.into()), false)
            .await
            .is_err()
            || session.write_response_body(Some(body), true).await.is_err()
        {
            return RelayEnd::ClientGone;
        }
        RelayEnd::Complete
    }

    /// Stream → one JSON answer. A broken, truncated or erroring stream is an
    /// `Err` (nothing was sent), so the caller retries it elsewhere.
    async fn aggregate(
        &self,
        session: &mut Session,
        mut answer: Answer,
        api: Api,
        deadline: Instant,
        t: &Timeouts,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        enum Agg {
            Chat(ChatAggregator),
            Completion(CompletionAggregator),
            Responses(ResponsesAggregator),
        }
        let mut agg = match api {
            Api::Completions => Agg::Completion(CompletionAggregator::new()),
            Api::Responses => Agg::Responses(ResponsesAggregator::new()),
            _ => Agg::Chat(ChatAggregator::new()),
        };
        let name = answer.name().to_string();
        let fail = |e: AggregateError| protocol_err(&name, e.to_string());
        let mut framer = Framer::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut size = 0usize;
        let mut done = false;
        let mut seen_event = false;
        let first_deadline = Instant::now() + t.first_byte;
        while !done {
            let limit = if seen_event {
                Instant::now() + t.idle
            } else {
                first_deadline
            };
            let wait = limit
                .min(deadline)
                .saturating_duration_since(Instant::now());
            match Self::read_chunk(&mut answer, wait).await? {
                Some(c) => {
                    size += c.len();
                    if size > MAX_CONVERTED_BODY {
                        return Err(protocol_err(
                            &name,
                            "the stream is larger than the gateway aggregates (64MiB)",
                        ));
                    }
                    framer.push(&c, &mut frames);
                }
                None => {
                    framer.finish(&mut frames);
                    done = true;
                }
            }
            for frame in frames.drain(..) {
                let Some(ev) = frame.event else { continue };
                seen_event = true;
                if ev.is_done() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&ev.data).map_err(|e| {
                    fail(AggregateError::Malformed(format!(
                        "{e} in {:.120}",
                        ev.data
                    )))
                })?;
                if let Some(err) = crate::sse::stream_error(&ev, Some(&v)) {
                    if !matches!(api, Api::Responses)
                        || v.get("type").and_then(|t| t.as_str()) == Some("error")
                    {
                        return Err(fail(AggregateError::Upstream(err)));
                    }
                }
                match &mut agg {
                    Agg::Chat(a) => a.push(&v),
                    Agg::Completion(a) => a.push(&v),
                    Agg::Responses(a) => a.push(ev.event.as_deref(), &v),
                }
                .map_err(fail)?;
            }
        }
        let merged = match agg {
            Agg::Chat(a) => a.finish(),
            Agg::Completion(a) => a.finish(),
            Agg::Responses(a) => a.finish(),
        }
        .map_err(fail)?;
        if let Some(u) = merged.get("usage").filter(|u| !u.is_null()) {
            answer.upstream.tokens.record(&name, u);
        }
        metrics::TRANSFORMS.with_label_values(&["aggregated"]).inc();
        let header = Self::client_header(&answer, Some("application/json"));
        Self::release(answer);
        let body = Bytes::from(
            serde_json::to_vec(&merged).map_err(|e| GatewayError::Internal(e.to_string()))?,
        );
        Ok(Self::send_whole(session, header, body, false, outcome).await)
    }

    /// One JSON answer → a stream.
    #[allow(clippy::too_many_arguments)]
    async fn synthesize(
        &self,
        session: &mut Session,
        mut answer: Answer,
        api: Api,
        include_usage: bool,
        deadline: Instant,
        t: &Timeouts,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        let body = self.read_all(&mut answer, deadline, t).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            protocol_err(answer.name(), format!("the answer is not valid JSON: {e}"))
        })?;
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            answer.upstream.tokens.record(answer.name(), u);
        }
        let sse = match api {
            Api::Completions => crate::sse::synth::completion(&v, include_usage),
            Api::Responses => crate::sse::synth::responses(&v),
            _ => crate::sse::synth::chat(&v, include_usage),
        };
        metrics::TRANSFORMS
            .with_label_values(&["synthesized"])
            .inc();
        let header = Self::client_header(&answer, Some("text/event-stream"));
        Self::release(answer);
        Ok(Self::send_whole(session, header, Bytes::from(sse), true, outcome).await)
    }

    /// SSE pass-through, event by event. The client header waits for the first
    /// event, so an upstream that fails before it is retried invisibly. After
    /// that, a failure ends the stream with an error event and no `[DONE]`.
    async fn relay_sse(
        &self,
        session: &mut Session,
        mut answer: Answer,
        strip_usage: bool,
        deadline: Instant,
        t: &Timeouts,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        let name = answer.name().to_string();
        let mut framer = Framer::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut pending = BytesMut::new();
        let mut header = Some(Self::client_header(&answer, None));
        let first_deadline = Instant::now() + t.first_byte;
        loop {
            let limit = if header.is_some() {
                first_deadline
            } else {
                Instant::now() + t.idle
            };
            let wait = limit
                .min(deadline)
                .saturating_duration_since(Instant::now());
            let read = Self::read_chunk(&mut answer, wait).await;
            let ended = match &read {
                Ok(Some(c)) => {
                    framer.push(c, &mut frames);
                    false
                }
                Ok(None) => {
                    framer.finish(&mut frames);
                    true
                }
                Err(_) => true,
            };
            let mut saw_event = false;
            for frame in frames.drain(..) {
                let Some(ev) = &frame.event else {
                    pending.extend_from_slice(&frame.raw);
                    continue;
                };
                if header.is_some() && crate::sse::stream_error(ev, None).is_some() {
                    // the very first event is an error: nothing was sent, try elsewhere
                    return Err(protocol_err(
                        &name,
                        format!("error inside the stream: {:.300}", ev.data),
                    ));
                }
                saw_event = true;
                if shape::find_usage_key(&frame.raw).is_some() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) {
                        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                            answer.upstream.tokens.record(&name, u);
                        }
                        match shape::usage_event(&v, strip_usage) {
                            UsageEvent::Keep => pending.extend_from_slice(&frame.raw),
                            UsageEvent::Drop => {}
                            UsageEvent::Rewrite(s) => pending.extend_from_slice(s.as_bytes()),
                        }
                        continue;
                    }
                }
                pending.extend_from_slice(&frame.raw);
            }
            if header.is_some() && (saw_event || (ended && read.is_ok())) {
                if !saw_event && pending.is_empty() && matches!(read, Ok(None)) {
                    return Err(protocol_err(
                        &name,
                        "the stream ended before its first event",
                    ));
                }
                let h = header.take().expect("checked above");
                outcome.status = h.status.as_u16();
                if session
                    .write_response_header(Box::new(h.into()), false)
                    .await
                    .is_err()
                {
                    return Ok(RelayEnd::ClientGone);
                }
            }
            if header.is_none()
                && !pending.is_empty()
                && session
                    .write_response_body(Some(pending.split().freeze()), false)
                    .await
                    .is_err()
            {
                return Ok(RelayEnd::ClientGone);
            }
            match read {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    if header.is_some() {
                        return Err(e); // nothing sent: retry elsewhere
                    }
                    log::warn!("upstream {name} failed mid-stream: {}", e.message());
                    return Ok(end_with_error_event(session, &e).await);
                }
            }
        }
        if session.write_response_body(None, true).await.is_err() {
            return Ok(RelayEnd::ClientGone);
        }
        Self::release(answer);
        Ok(RelayEnd::Complete)
    }

    /// Streams the upstream answer to the client as it arrives, unchanged.
    async fn relay_raw(
        &self,
        session: &mut Session,
        mut answer: Answer,
        deadline: Instant,
        idle: Duration,
        outcome: &mut Outcome,
    ) -> RelayEnd {
        let header = Self::client_header(&answer, None);
        let status = header.status.as_u16();
        let is_sse = answer.content_type().starts_with("text/event-stream");
        let meter = (200..300).contains(&status) && !is_sse;
        let mut kept = BytesMut::new();
        let mut first: Option<Bytes> = None;
        outcome.status = status;
        if session
            .write_response_header(Box::new(header.into()), false)
            .await
            .is_err()
        {
            return RelayEnd::ClientGone;
        }
        loop {
            let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
            match Self::read_chunk(&mut answer, wait).await {
                Ok(Some(chunk)) => {
                    if meter {
                        // one-chunk bodies (the usual case) are kept without copying
                        match first.take() {
                            None if kept.is_empty() => first = Some(chunk.clone()),
                            prev => {
                                if let Some(p) = prev {
                                    kept.extend_from_slice(&p);
                                }
                                if kept.len() + chunk.len() <= METER_JSON_LIMIT {
                                    kept.extend_from_slice(&chunk);
                                }
                            }
                        }
                    }
                    if session
                        .write_response_body(Some(chunk), false)
                        .await
                        .is_err()
                    {
                        return RelayEnd::ClientGone;
                    }
                    if answer.conn.body_done() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!(
                        "upstream {} failed mid-response: {}",
                        answer.name(),
                        e.message()
                    );
                    if is_sse {
                        return end_with_error_event(session, &e).await;
                    }
                    return RelayEnd::Broken(e.message());
                }
            }
        }
        if session.write_response_body(None, true).await.is_err() {
            return RelayEnd::ClientGone;
        }
        let kept: &[u8] = match &first {
            Some(b) => b,
            None => &kept,
        };
        if meter {
            if let Some(u) = shape::usage_in_json(kept) {
                answer.upstream.tokens.add(answer.name(), u);
            }
        }
        Self::release(answer);
        RelayEnd::Complete
    }
}

/// Ends a stream that already reached the client with `data: {"error": ...}`
/// and no `[DONE]`, so clients see an error rather than a clean finish.
async fn end_with_error_event(session: &mut Session, e: &GatewayError) -> RelayEnd {
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(&e.body());
    ev.extend_from_slice(b"\n\n");
    let _ = session
        .write_response_body(Some(Bytes::from(ev)), false)
        .await;
    let _ = session.write_response_body(None, true).await;
    RelayEnd::Complete
}

/// A response head built straight on `http`'s header map: the gateway's own
/// answers skip Pingora's case-preserving map (and its header-name re-parsing);
/// `.into()` makes the `ResponseHeader` to write.
pub type Head = http::response::Parts;

const X_SWITCHYARD_UPSTREAM: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-upstream");
const X_UPSTREAM_ACTIVE: http::HeaderName = http::HeaderName::from_static("x-upstream-active");
const X_UPSTREAM_QUEUE: http::HeaderName = http::HeaderName::from_static("x-upstream-queue");

/// An empty response head with room for `headers` headers.
pub fn head(status: http::StatusCode, headers: usize) -> Head {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = http::HeaderMap::with_capacity(headers);
    parts
}

/// `X-Upstream-Active` / `X-Upstream-Queue`: set on every API response.
fn gateway_header_values() -> [(http::HeaderName, http::HeaderValue); 2] {
    [
        (
            X_UPSTREAM_ACTIVE,
            http::HeaderValue::from(metrics::UPSTREAM_ACTIVE.get().max(0)),
        ),
        (X_UPSTREAM_QUEUE, http::HeaderValue::from_static("0")),
    ]
}

/// The gateway's headers on a head it builds itself.
pub fn gateway_headers(h: &mut http::HeaderMap) {
    for (name, value) in gateway_header_values() {
        h.insert(name, value);
    }
}

/// The gateway's headers on a header Pingora built (keeps its case map in step).
pub fn add_gateway_headers(h: &mut ResponseHeader) {
    for (name, value) in gateway_header_values() {
        let _ = h.insert_header(name, value);
    }
}

/// The client headers worth passing to an upstream (see `DROP_REQUEST_HEADERS`;
/// `content-type` is set by the gateway), in wire form.
pub fn forwardable_headers(req: &RequestHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.headers.len() * 32);
    for (k, v) in req.headers.iter() {
        if DROP_REQUEST_HEADERS.contains(&k.as_str()) || k == http::header::CONTENT_TYPE {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}
