//! The `ProxyHttp` implementation: thin glue between Pingora's phases and the
//! plain modules. `request_filter` answers everything in the understood lane
//! itself (returns `Ok(true)`); only opaque `/v1/*` paths continue to
//! Pingora's proxy phases.

pub mod ctx;

use crate::error::GatewayError;
use crate::forward::headers::{add_gateway_headers, forwardable_headers, gateway_headers, head};
use crate::forward::{self, Call, Forwarder, Outcome, RelayEnd};
use crate::limits::{self, Caller};
use crate::metrics;
use crate::metrics::CallOutcome;
use crate::routes::{self, Endpoint, RouteClass};
use crate::state::{Snapshot, State};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use ctx::{Ctx, OpaqueTarget};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::sync::Arc;

/// The gateway service.
pub struct Gateway {
    pub state: Arc<State>,
    pub forwarder: Forwarder,
}

enum Next {
    /// The response was written.
    Done,
    /// Continue with Pingora's proxy phases (opaque lane).
    Proxy,
}

/// Writes a complete small response.
async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| Error::explain(ErrorType::InternalError, "invalid status"))?;
    let mut h = head(status, 4 + extra.len());
    h.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    gateway_headers(&mut h.headers);
    for (k, v) in extra {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.headers.insert(*k, v);
        }
    }
    session
        .write_response_header(Box::new(h.into()), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

async fn respond_error(session: &mut Session, ctx: &mut Ctx, e: &GatewayError) {
    ctx.error = Some(e.label());
    ctx.status = e.status();
    log::log!(e.log_level(), "answering {}: {e}", e.status());
    metrics::ERRORS.with_label_values(&[e.label()]).inc();
    let mut extra = Vec::new();
    if let Some(s) = e.retry_after() {
        extra.push(("retry-after", s.to_string()));
    }
    if let Err(err) = respond(session, e.status(), e.body(), &extra).await {
        log::debug!("could not send error response: {err}");
    }
}

impl Gateway {
    async fn read_body(
        session: &mut Session,
        limit: u64,
    ) -> std::result::Result<Bytes, GatewayError> {
        let too_large = GatewayError::PayloadTooLarge { limit };
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            // read what the client is sending anyway (bounded), so it gets to
            // read the 413 instead of a broken pipe
            Self::drain_body(session).await;
            return Err(too_large);
        }
        let expects_continue = session
            .req_header()
            .headers
            .get("expect")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            let _ = session.as_downstream_mut().write_continue_response().await;
        }
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(8192).min(limit) as usize);
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if buf.len() as u64 + chunk.len() as u64 > limit {
                        Self::drain_body(session).await;
                        return Err(too_large);
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(GatewayError::BadRequest(format!(
                        "could not read the request body: {}",
                        e.etype().as_str()
                    )))
                }
            }
        }
        Ok(buf.freeze())
    }

    /// Reads and discards the rest of an oversized body (bounded in bytes and
    /// time) so the client gets to read the 413 instead of a reset connection.
    async fn drain_body(session: &mut Session) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut left: u64 = 256 << 20;
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout_at(deadline, session.read_request_body()).await
        {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    }

    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
    ) -> std::result::Result<Next, GatewayError> {
        let req = session.req_header();
        let path = req.uri.path();
        let is_post = req.method == http::Method::POST;

        if path == "/health" || path == "/v1/health" {
            ctx.route = RouteClass::Health;
            respond(
                session,
                200,
                Bytes::from_static(b"{\"status\":\"ok\"}"),
                &[],
            )
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
            ctx.status = 200;
            return Ok(Next::Done);
        }
        if !path.starts_with("/v1/") {
            return Err(GatewayError::NotFound {
                path: path.to_string(),
            });
        }
        let method_not_allowed = |req: &RequestHeader| GatewayError::MethodNotAllowed {
            method: req.method.as_str().to_string(),
            path: req.uri.path().to_string(),
        };

        let cfg = &snap.config;
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let caller = {
            let headers = &req.headers;
            let key = limits::presented_key(|n| headers.get(n).and_then(|v| v.to_str().ok()));
            limits::authenticate(cfg, key, peer_ip)?
        };
        ctx.caller = Some(caller);

        if path == "/v1/models" || path.starts_with("/v1/models/") {
            ctx.route = RouteClass::Models;
            if req.method != http::Method::GET {
                return Err(method_not_allowed(req));
            }
            let body = if let Some(id) = path.strip_prefix("/v1/models/") {
                let owner = snap.first_upstream_for(id).map(|u| u.name());
                if owner.is_some() && limits::check_model(cfg, &caller, id).is_ok() {
                    Bytes::from(serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}).to_string())
                } else {
                    return Err(GatewayError::ModelNotFound {
                        model: id.to_string(),
                        available: snap.listed_models.clone(),
                    });
                }
            } else {
                snap.models_body.clone()
            };
            respond(session, 200, body, &[])
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            ctx.status = 200;
            return Ok(Next::Done);
        }

        if let Some(endpoint) = routes::understood(path) {
            ctx.route = endpoint.class;
            if !is_post {
                return Err(method_not_allowed(req));
            }
            return self.understood(session, ctx, snap, &caller, endpoint).await;
        }

        // opaque lane
        ctx.route = RouteClass::Opaque;
        let declared = req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cfg.limits.max_request_body) {
            return Err(GatewayError::PayloadTooLarge {
                limit: cfg.limits.max_request_body,
            });
        }
        let idx = snap
            .opaque_upstream(path)
            .ok_or_else(|| GatewayError::NotFound {
                path: path.to_string(),
            })?;
        let upstream = snap.upstreams[idx].clone();
        let key = match upstream.keys.pick("", &[], crate::clock::now_ms()) {
            crate::keys::Pick::Key(_, k) => Some(k),
            crate::keys::Pick::None { .. } => None,
        };
        ctx.upstream = Some(upstream.clone());
        ctx.key = key.clone();
        ctx.opaque = Some(OpaqueTarget::new(upstream, key));
        Ok(Next::Proxy)
    }

    async fn understood(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
        caller: &Caller,
        endpoint: &'static Endpoint,
    ) -> std::result::Result<Next, GatewayError> {
        let cfg = &snap.config;
        let body = match Self::read_body(session, cfg.limits.max_request_body).await {
            Ok(b) => b,
            Err(e) => {
                // the rest of the body is unread: do not reuse this connection
                session.set_keepalive(None);
                return Err(e);
            }
        };
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(GatewayError::InvalidJson(if first.is_none() {
                "the body is empty; send a JSON object".into()
            } else {
                "the body must be a JSON object".into()
            }));
        }
        let mut peek: forward::shape::Peek =
            serde_json::from_slice(&body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
        let model = match peek.model.take() {
            Some(serde_json::Value::String(m)) if !m.is_empty() => m,
            _ => return Err(GatewayError::MissingModel),
        };
        let refused = limits::check_model(cfg, caller, &model).err().or_else(|| {
            snap.first_upstream_for(&model)
                .is_none()
                .then(|| GatewayError::ModelNotFound {
                    model: model.clone(),
                    available: snap.listed_models.clone(),
                })
        });
        if let Some(e) = refused {
            ctx.model = Some(model);
            return Err(e);
        }
        let req = session.req_header();
        let call = Call {
            api: endpoint.api,
            suffix: endpoint.suffix(),
            query: req.uri.query().map(str::to_string),
            headers: forwardable_headers(req),
            body,
            peek,
            json: std::sync::OnceLock::new(),
            model,
        };
        let mut outcome = Outcome::default();
        let result = self
            .forwarder
            .run(session, snap, &call, ctx.start, &mut outcome)
            .await;
        ctx.model = Some(call.model);
        ctx.upstream = outcome.upstream.take();
        ctx.key = outcome.key.take();
        ctx.attempts = outcome.attempts;
        ctx.status = outcome.status;
        match result? {
            RelayEnd::Complete => {}
            RelayEnd::ClientGone => {
                ctx.error = Some("client_gone");
                session.set_keepalive(None);
            }
            RelayEnd::Broken(detail) => {
                ctx.error = Some("upstream_broken");
                ctx.abort = Some(detail);
            }
        }
        Ok(Next::Done)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// No downstream modules: Pingora's default adds a (disabled) compression
    /// module that would still build per-request state and filter every header
    /// and body chunk; the gateway never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.state.load();
        ctx.snap = Some(snap.clone());
        match self.handle(session, ctx, &snap).await {
            Ok(Next::Proxy) => Ok(false),
            Ok(Next::Done) => match ctx.abort.take() {
                // a body that broke mid-way must not end like a complete one
                Some(detail) => Err(Error::explain(ErrorType::ConnectionClosed, detail)),
                None => Ok(true),
            },
            Err(e) => {
                respond_error(session, ctx, &e).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(target), Some(snap)) = (&ctx.opaque, &ctx.snap) else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no upstream chosen",
            ));
        };
        let t = &snap.config.timeouts;
        let up = &target.upstream;
        let addr = up.addr().await.map_err(|e| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("cannot resolve {}: {e}", up.target.host),
            )
        })?;
        let mut peer = HttpPeer::new(addr, up.target.tls, up.target.host.clone());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.first_byte.max(t.idle));
        peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(target) = &ctx.opaque else {
            return Ok(());
        };
        let up = &target.upstream;
        let uri = &session.req_header().uri;
        let rest = uri.path().strip_prefix("/v1").unwrap_or(uri.path());
        let mut path = format!("{}{}", up.target.base_path, rest);
        if let Some(q) = uri.query() {
            path.push('?');
            path.push_str(q);
        }
        let new_uri: http::Uri = path.parse().map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "cannot build upstream path")
        })?;
        upstream_request.set_uri(new_uri);
        upstream_request.insert_header("host", up.target.host_header.as_str())?;
        for h in ["authorization", "api-key", "x-api-key", "cookie"] {
            upstream_request.remove_header(h);
        }
        if let Some(k) = &target.key {
            upstream_request.insert_header("authorization", format!("Bearer {}", k.secret()))?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.status = status;
        if let Some(t) = &ctx.opaque {
            t.upstream
                .count_call(t.key.as_deref(), CallOutcome::from_status(status));
            upstream_response.insert_header("x-switchyard-upstream", t.upstream.name())?;
        }
        add_gateway_headers(upstream_response);
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // Once a response header went out, nothing more may be written: just close.
        if session.response_written().is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let upstream = ctx
            .upstream
            .as_ref()
            .map_or_else(|| "-".into(), |u| u.name().to_string());
        let gerr = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                let t = ctx
                    .snap
                    .as_ref()
                    .map(|s| s.config.timeouts.connect)
                    .unwrap_or_default();
                GatewayError::UpstreamTimeout {
                    upstream,
                    what: "response",
                    after: t,
                }
            }
            _ if matches!(e.esource(), pingora::ErrorSource::Downstream) => {
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            other => GatewayError::UpstreamUnreachable {
                upstream,
                detail: other.as_str().to_string(),
            },
        };
        if let Some(t) = &ctx.opaque {
            let outcome = if gerr.status() == 504 {
                CallOutcome::Timeout
            } else {
                CallOutcome::ConnectError
            };
            t.upstream.count_call(t.key.as_deref(), outcome);
        }
        respond_error(session, ctx, &gerr).await;
        FailToProxy {
            error_code: gerr.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .unwrap_or(ctx.status);
        let elapsed = ctx.start.elapsed();
        metrics::observe_request(ctx.route, status, elapsed.as_secs_f64());
        if ctx.route == RouteClass::Health {
            return;
        }
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let err = e.map(|e| e.etype().as_str()).or(ctx.error).unwrap_or("-");
        let req = session.req_header();
        log::info!(
            "{} {} model={} upstream={} key={} client={} status={} attempts={} latency={:.1}ms error={}",
            req.method,
            req.uri.path(),
            ctx.model.as_deref().unwrap_or("-"),
            ctx.upstream.as_ref().map_or("-", |u| u.name()),
            ctx.key.as_ref().map_or("-", |k| k.id.as_str()),
            ctx.client_name(),
            status,
            ctx.attempts,
            elapsed.as_secs_f64() * 1000.0,
            err,
        );
    }
}
