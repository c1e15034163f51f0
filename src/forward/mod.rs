//! The understood lane's upstream leg: pick upstream + key, send the whole
//! request with Pingora's connector, and relay the answer. Everything that can
//! fail before a byte reaches the client is retried on the next candidate.
//!
//! Invariants: the client's credentials are never forwarded; the upstream key is
//! set only in `Authorization`; a response that breaks mid-body never ends like
//! a complete one (SSE gets an error event, other bodies a closed connection).

use crate::error::GatewayError;
use crate::keys::{InFlight, Key};
use crate::metrics;
use crate::state::{Route, Snapshot, Upstream};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorType, Result as PResult};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an idle upstream connection stays pooled.
const POOL_IDLE: Duration = Duration::from_secs(60);

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

/// What one request asks of the upstream leg.
pub struct Call {
    /// Path after `/v1`, e.g. `/chat/completions`.
    pub suffix: String,
    pub query: Option<String>,
    /// The client's body and its parsed form.
    pub body: Bytes,
    pub json: serde_json::Value,
    pub model: String,
    /// Client headers to pass along.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// What happened, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub upstream: Option<String>,
    pub key_id: Option<String>,
    pub attempts: u32,
    /// Status sent to the client (0 if none).
    pub status: u16,
}

/// The relay stopped before the response completed.
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
    http: HttpSession,
    peer: HttpPeer,
    upstream: Arc<Upstream>,
    _key_guard: Option<InFlight>,
    _active: ActiveCall,
}

/// Owns the connection pools of the understood lane.
pub struct Forwarder {
    connector: Connector,
}

impl Forwarder {
    pub fn new(connector: Connector) -> Forwarder {
        Forwarder { connector }
    }

    /// Runs the attempt loop and relays the answer to the client. On `Err`
    /// nothing was written to the client yet.
    pub async fn run(
        &self,
        session: &mut Session,
        snap: &Snapshot,
        routes: &[Route],
        call: &Call,
        outcome: &mut Outcome,
    ) -> Result<RelayEnd, GatewayError> {
        let cfg = &snap.config;
        let deadline = Instant::now() + cfg.timeouts.total;
        let max_attempts = cfg.retry.attempts.max(1);
        let mut tried: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut last_err: Option<GatewayError> = None;
        let mut route_idx = 0;
        while outcome.attempts < max_attempts {
            // next candidate: an untried key on the current route, else the next route
            let Some(route) = routes.get(route_idx) else {
                break;
            };
            let up = snap.upstreams[route.upstream].clone();
            let tried_keys = match tried.iter_mut().find(|(u, _)| *u == route.upstream) {
                Some((_, k)) => k,
                None => {
                    tried.push((route.upstream, Vec::new()));
                    &mut tried.last_mut().expect("just pushed").1
                }
            };
            let key = if up.keys.is_empty() {
                None
            } else {
                match up.keys.pick(tried_keys) {
                    Some((i, k)) => {
                        tried_keys.push(i);
                        Some(k)
                    }
                    None => {
                        route_idx += 1;
                        continue;
                    }
                }
            };
            if outcome.attempts > 0 {
                let backoff = cfg
                    .retry
                    .backoff
                    .saturating_mul(1 << (outcome.attempts - 1).min(6));
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::time::sleep(
                    backoff
                        .mul_f64(jitter)
                        .min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
            outcome.attempts += 1;
            outcome.upstream = Some(up.name().to_string());
            outcome.key_id = key.as_ref().map(|k| k.id.clone());
            let key_label = key
                .as_ref()
                .map_or("-", |k| k.short_id.as_str())
                .to_string();
            match self
                .attempt(snap, &up, key.clone(), route, call, deadline)
                .await
            {
                Ok(answer) => {
                    let status = answer
                        .http
                        .response_header()
                        .map_or(0, |h| h.status.as_u16());
                    metrics::UPSTREAM_CALLS
                        .with_label_values(&[up.name(), &key_label, metrics::status_class(status)])
                        .inc();
                    if status >= 500 || status == 429 {
                        if let Some(k) = &key {
                            k.failures
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    return Ok(self
                        .relay(session, answer, deadline, cfg.timeouts.idle, outcome)
                        .await);
                }
                Err(e) => {
                    let label = match &e {
                        GatewayError::UpstreamTimeout { .. } => "timeout",
                        _ => "connect_error",
                    };
                    metrics::UPSTREAM_CALLS
                        .with_label_values(&[up.name(), &key_label, label])
                        .inc();
                    if let Some(k) = &key {
                        k.failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let retry = e.retryable()
                        && outcome.attempts < max_attempts
                        && Instant::now() < deadline;
                    log::warn!(
                        "attempt {} for model {} on {} with key {} failed: {}{}",
                        outcome.attempts,
                        call.model,
                        up.name(),
                        key.as_ref().map_or("-", |k| k.id.as_str()),
                        e.message(),
                        if retry {
                            "; trying the next candidate"
                        } else {
                            ""
                        }
                    );
                    if !e.retryable() {
                        return Err(e);
                    }
                    last_err = Some(e);
                    if key.is_none() {
                        route_idx += 1;
                    }
                }
            }
        }
        Err(
            last_err.unwrap_or_else(|| GatewayError::UpstreamUnreachable {
                upstream: outcome.upstream.clone().unwrap_or_else(|| "-".into()),
                detail: "no upstream candidate left to try".into(),
            }),
        )
    }

    fn request_header(
        up: &Upstream,
        key: Option<&Key>,
        call: &Call,
        body_len: usize,
    ) -> PResult<RequestHeader> {
        let mut path = format!("{}{}", up.target.base_path, call.suffix);
        if let Some(q) = &call.query {
            path.push('?');
            path.push_str(q);
        }
        let mut req = RequestHeader::build("POST", path.as_bytes(), Some(call.headers.len() + 4))?;
        req.insert_header("host", up.target.host_header.as_str())?;
        for (k, v) in &call.headers {
            req.append_header(k.clone(), v.clone())?;
        }
        req.insert_header("content-type", "application/json")?;
        req.insert_header("content-length", body_len.to_string())?;
        if let Some(k) = key {
            req.insert_header("authorization", format!("Bearer {}", k.secret()))?;
        }
        Ok(req)
    }

    /// One try: connect (or reuse), send, wait for the response header.
    async fn attempt(
        &self,
        snap: &Snapshot,
        up: &Arc<Upstream>,
        key: Option<Arc<Key>>,
        route: &Route,
        call: &Call,
        deadline: Instant,
    ) -> Result<Answer, GatewayError> {
        let t = &snap.config.timeouts;
        let name = up.name().to_string();
        let unreachable = |detail: String| GatewayError::UpstreamUnreachable {
            upstream: name.clone(),
            detail,
        };
        let body = if route.upstream_model != call.model {
            let mut v = call.json.clone();
            v["model"] = serde_json::Value::String(route.upstream_model.clone());
            Bytes::from(serde_json::to_vec(&v).map_err(|e| GatewayError::Internal(e.to_string()))?)
        } else {
            call.body.clone()
        };
        let header = Self::request_header(up, key.as_deref(), call, body.len()).map_err(|e| {
            GatewayError::BadRequest(format!("cannot build the upstream request: {e}"))
        })?;
        let addr = up
            .addr()
            .await
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", up.target.host)))?;
        let mut peer = HttpPeer::new(addr, up.target.tls, up.target.host.clone());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.idle_timeout = Some(POOL_IDLE);
        let key_guard = key.map(InFlight::new);
        let active = ActiveCall::new();
        // A pooled connection may have been closed by the upstream meanwhile: then
        // try again (at most twice) before counting the attempt as failed.
        for round in 0..3 {
            let (mut http, reused) = self.connector.get_http_session(&peer).await.map_err(|e| {
                if matches!(e.etype(), ErrorType::ConnectTimedout) {
                    GatewayError::UpstreamTimeout {
                        upstream: name.clone(),
                        what: "connection",
                        after: t.connect,
                    }
                } else {
                    unreachable(format!(
                        "cannot connect to {}: {}",
                        up.target.host_header,
                        e.etype().as_str()
                    ))
                }
            })?;
            let sent = async {
                http.write_request_header(Box::new(header.clone())).await?;
                http.write_request_body(body.clone(), true).await?;
                http.finish_request_body().await
            }
            .await;
            if let Err(e) = sent {
                if reused && round < 2 {
                    continue;
                }
                return Err(unreachable(format!(
                    "sending the request failed: {}",
                    e.etype().as_str()
                )));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = t.first_byte.min(remaining);
            match tokio::time::timeout(wait, http.read_response_header()).await {
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        upstream: name,
                        what: "response",
                        after: wait,
                    })
                }
                Ok(Err(e)) => {
                    if reused && round < 2 {
                        continue;
                    }
                    return Err(unreachable(format!(
                        "connection failed before a response arrived: {}",
                        e.etype().as_str()
                    )));
                }
                Ok(Ok(())) => {
                    return Ok(Answer {
                        http,
                        peer,
                        upstream: up.clone(),
                        _key_guard: key_guard,
                        _active: active,
                    })
                }
            }
        }
        Err(unreachable("connection failed repeatedly".into()))
    }

    /// Streams the upstream answer to the client as it arrives.
    async fn relay(
        &self,
        session: &mut Session,
        mut answer: Answer,
        deadline: Instant,
        idle: Duration,
        outcome: &mut Outcome,
    ) -> RelayEnd {
        let Some(up_header) = answer.http.response_header() else {
            return RelayEnd::Broken("no response header".into());
        };
        let status = up_header.status.as_u16();
        let is_sse = up_header
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut out = match ResponseHeader::build(status, Some(up_header.headers.len() + 3)) {
            Ok(h) => h,
            Err(e) => return RelayEnd::Broken(e.to_string()),
        };
        for (name, value) in up_header.headers.iter() {
            if !DROP_RESPONSE_HEADERS.contains(&name.as_str()) {
                let _ = out.append_header(name.clone(), value.clone());
            }
        }
        add_gateway_headers(&mut out);
        let _ = out.insert_header("x-switchyard-upstream", answer.upstream.name());
        outcome.status = status;
        if session
            .write_response_header(Box::new(out), false)
            .await
            .is_err()
        {
            return RelayEnd::ClientGone;
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = idle.min(remaining);
            let failure = match tokio::time::timeout(wait, answer.http.read_response_body()).await {
                Ok(Ok(Some(chunk))) => {
                    if session
                        .write_response_body(Some(chunk), false)
                        .await
                        .is_err()
                    {
                        return RelayEnd::ClientGone;
                    }
                    continue;
                }
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(format!(
                    "the upstream connection broke mid-response: {}",
                    e.etype().as_str()
                )),
                Err(_) => Some(format!(
                    "the upstream sent nothing for {} (timeouts.idle/total)",
                    crate::config::units::fmt_duration(wait)
                )),
            };
            match failure {
                None => break,
                Some(detail) => {
                    log::warn!(
                        "upstream {} failed mid-response: {detail}",
                        answer.upstream.name()
                    );
                    if is_sse {
                        let err = if detail.contains("sent nothing") {
                            GatewayError::UpstreamTimeout {
                                upstream: answer.upstream.name().to_string(),
                                what: "data",
                                after: wait,
                            }
                        } else {
                            GatewayError::UpstreamProtocol {
                                upstream: answer.upstream.name().to_string(),
                                detail: detail.clone(),
                            }
                        };
                        let mut ev = b"data: ".to_vec();
                        ev.extend_from_slice(&err.body());
                        ev.extend_from_slice(b"\n\n");
                        let _ = session
                            .write_response_body(Some(Bytes::from(ev)), false)
                            .await;
                        let _ = session.write_response_body(None, true).await;
                        return RelayEnd::Complete;
                    }
                    return RelayEnd::Broken(detail);
                }
            }
        }
        if session.write_response_body(None, true).await.is_err() {
            return RelayEnd::ClientGone;
        }
        self.connector
            .release_http_session(answer.http, &answer.peer, Some(POOL_IDLE))
            .await;
        RelayEnd::Complete
    }
}

/// `X-Upstream-Active` / `X-Upstream-Queue` on every API response.
pub fn add_gateway_headers(h: &mut ResponseHeader) {
    let _ = h.insert_header(
        "x-upstream-active",
        metrics::UPSTREAM_ACTIVE.get().max(0).to_string(),
    );
    let _ = h.insert_header("x-upstream-queue", "0");
}

/// The client headers worth passing to an upstream (see `DROP_REQUEST_HEADERS`).
pub fn forwardable_headers(req: &RequestHeader) -> Vec<(http::HeaderName, http::HeaderValue)> {
    req.headers
        .iter()
        .filter(|(k, _)| !DROP_REQUEST_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
