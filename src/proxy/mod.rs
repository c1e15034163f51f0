//! The `ProxyHttp` implementation: thin glue between Pingora's phases and the
//! plain modules. `request_filter` answers everything the gateway reads itself
//! ([`handle`]; returns `Ok(true)`); only opaque `/v1/*` requests continue to
//! Pingora's proxy phases. Pingora's session (HTTP/1.1 and HTTP/2, plain
//! and TLS) is the only client-side HTTP engine.

pub mod app;
pub mod body;
pub mod cached;
pub mod ctx;
pub mod door;
pub mod handle;
pub mod head;
pub mod preamble;
pub mod respond;
pub mod settle;

use crate::error::GatewayError;
use crate::forward::headers::add_gateway_headers;
use crate::forward::Forwarder;
use crate::metrics;
use crate::metrics::CallOutcome;
use crate::routes::RouteClass;
use crate::state::State;
use async_trait::async_trait;
use ctx::Ctx;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use respond::respond_error;
use std::sync::Arc;

/// The gateway service.
pub struct Gateway {
    pub state: Arc<State>,
    pub forwarder: Arc<Forwarder>,
}

enum Next {
    /// The response was written.
    Done,
    /// Continue with Pingora's proxy phases (opaque lane).
    Proxy,
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

    /// Called once the request head is read, with the context [`app::ApiApp`]
    /// set on the connection: ends its head deadline.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        context: Box<dyn std::any::Any + Send + Sync>,
    ) {
        head::head_read(context);
    }

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
                if session.response_written().is_none() {
                    body::discard_sent(session).await;
                    if !session.as_downstream_mut().is_body_done() {
                        // the rest of a body never read: the connection is not reused
                        session.set_keepalive(None);
                    }
                }
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
        let mut peer = up.peer(addr, t.connect);
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
        let base = &up.target.base_path;
        let path = match &up.conf.azure {
            Some(a) => a
                .path(base, (rest, uri.query()), ("", ""))
                .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e))?,
            None => match uri.query() {
                Some(q) => format!("{base}{rest}?{q}"),
                None => format!("{base}{rest}"),
            },
        };
        let new_uri: http::Uri = path.parse().map_err(|_| {
            Error::explain(ErrorType::InvalidHTTPHeader, "cannot build upstream path")
        })?;
        upstream_request.set_uri(new_uri);
        upstream_request.insert_header("host", up.target.host_header.as_str())?;
        for h in crate::forward::headers::OPAQUE_DROP_REQUEST_HEADERS {
            upstream_request.remove_header(*h);
        }
        for (name, value) in &up.conf.account_headers {
            upstream_request.insert_header(name.clone(), value.clone())?;
        }
        if up.conf.anthropic && upstream_request.headers.get("anthropic-version").is_none() {
            upstream_request
                .insert_header("anthropic-version", crate::upstream::ANTHROPIC_VERSION)?;
        }
        let credential = target
            .key
            .as_ref()
            .and_then(|k| crate::upstream::credential(&up.conf, k.secret()));
        if let Some((name, value)) = credential {
            upstream_request.insert_header(name, value)?;
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
        ctx.outcome.status = status;
        if let Some(t) = &ctx.opaque {
            t.upstream
                .count_call(t.key.as_deref(), CallOutcome::from_status(status));
            upstream_response.insert_header("x-switchyard-upstream", t.upstream.name())?;
        }
        crate::forward::headers::drop_account_headers(upstream_response);
        add_gateway_headers(upstream_response);
        ctx.answer.apply_to(upstream_response)?;
        if let Some(origin) = &ctx.cors {
            let mut h = http::HeaderMap::new();
            crate::forward::headers::cors_headers(&mut h, origin);
            for (name, value) in h.iter() {
                upstream_response.append_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // Once a response header went out, nothing more may be written, and a
        // call the gateway ended itself has its answer: just close.
        if session.response_written().is_some() || ctx.error.is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let upstream = ctx
            .outcome
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

    /// A call the gateway ended itself (client gone, upstream broken) was
    /// logged on its access line; Pingora's own error line would repeat it.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _e: &Error) -> bool {
        ctx.error.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|h| h.status.as_u16())
            .unwrap_or(ctx.outcome.status);
        let err = ctx.error.or(e.map(|e| e.etype().as_str())).unwrap_or("-");
        // the id the answer carried: the upstream's, or the gateway's
        let request_id = session
            .response_written()
            .and_then(|h| h.headers.get(crate::forward::headers::X_REQUEST_ID))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| ctx.request_id());
        let req = session.req_header();
        let line = AccessLine {
            method: &req.method,
            path: req.uri.path(),
            status,
            err,
            request_id,
        };
        finish_request(ctx, &line);
    }
}

/// A value for a text log field, `-` for none (formatted in place).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// How a request ended, as the access line tells it.
struct AccessLine<'a> {
    method: &'a http::Method,
    path: &'a str,
    status: u16,
    /// Its error label, `-` for none.
    err: &'static str,
    request_id: &'a str,
}

/// What a finished request leaves: metrics, the traffic series, the access
/// line and the usage record.
fn finish_request(ctx: &Ctx, line: &AccessLine<'_>) {
    let AccessLine {
        method,
        status,
        err,
        ..
    } = *line;
    let elapsed = ctx.start.elapsed();
    crate::memory::collect_soon();
    let (metrics_on, usage_on) = ctx.snap.as_ref().map_or((true, false), |s| {
        (s.config.metrics_enabled, s.config.usage_enabled)
    });
    let ttft = ctx.ttft();
    if metrics_on {
        observe(ctx, status, elapsed, ttft);
    }
    // health checks and CORS preflights are not traffic worth a record
    if ctx.route == RouteClass::Health || method == http::Method::OPTIONS {
        return;
    }
    let now_us = crate::clock::now_us();
    let now_ms = now_us / 1000;
    crate::series::TRAFFIC.record(
        now_ms / 1000,
        elapsed.as_secs_f64() * 1000.0,
        status >= 400 || err != "-",
    );
    if log::log_enabled!(log::Level::Info) {
        access_line(line, ctx, elapsed, ttft);
    }
    if usage_on {
        record_usage(ctx, line, now_us, elapsed, ttft);
    }
}

/// Counts the request in the metrics, its series labelled by the snapshot's
/// own names (see `metrics::observe_request`).
fn observe(
    ctx: &Ctx,
    status: u16,
    elapsed: std::time::Duration,
    ttft: Option<std::time::Duration>,
) {
    let model = match (
        &ctx.snap,
        ctx.outcome.served_model.as_deref().or(ctx.model.as_deref()),
    ) {
        (Some(snap), Some(m)) => snap.metric_model(m),
        _ => "-",
    };
    let client = match &ctx.caller {
        Some(crate::limits::Caller::Client(i)) => i + 1,
        _ => 0,
    };
    let labels = metrics::RequestLabels {
        generation: ctx.snap.as_ref().map_or(0, |s| s.generation),
        key: [
            client,
            ctx.outcome
                .upstream
                .as_ref()
                .map_or(0, |u| Arc::as_ptr(u) as usize),
            // the model label is the snapshot's own string (or a literal)
            model.as_ptr() as usize ^ (model.len() << 48),
        ],
        route: ctx.route,
        client: ctx.client_name(),
        upstream: ctx.outcome.upstream.as_ref().map_or("-", |u| u.name()),
        model,
    };
    let reported = (!ctx.estimated && ctx.outcome.tokens_in + ctx.outcome.tokens_out > 0)
        .then_some((ctx.outcome.tokens_in, ctx.outcome.tokens_out));
    metrics::observe_request(
        &labels,
        status,
        elapsed.as_secs_f64(),
        ttft.map(|t| t.as_secs_f64()),
        reported,
    );
}

/// The access log line: one per request, text or JSON (`log.format`).
/// Text fields that come from outside (the model, the path) are escaped.
fn access_line(
    line: &AccessLine<'_>,
    ctx: &Ctx,
    elapsed: std::time::Duration,
    ttft: Option<std::time::Duration>,
) {
    let ip = ctx.addr.and_then(|a| a.ip);
    let err = line.err;
    if crate::logging::json() {
        let line = serde_json::json!({
            "method": line.method.as_str(),
            "path": line.path,
            "model": ctx.model.as_deref(),
            "upstream": ctx.outcome.upstream.as_ref().map(|u| u.name()),
            "key": ctx.outcome.key.as_ref().map(|k| k.id.as_str()),
            "client": ctx.client_name(),
            "ip": ip.map(|ip| ip.to_string()),
            "request_id": line.request_id,
            "status": line.status,
            "attempts": ctx.outcome.attempts,
            "served_model": ctx.outcome.served_model.as_deref(),
            "latency_ms": (elapsed.as_secs_f64() * 1e4).round() / 10.0,
            "ttft_ms": ttft.map(|t| (t.as_secs_f64() * 1e4).round() / 10.0),
            "tokens_in": ctx.outcome.tokens_in,
            "tokens_out": ctx.outcome.tokens_out,
            "estimated": ctx.estimated,
            "error": (err != "-").then_some(err),
        });
        log::info!(target: crate::logging::ACCESS, "{line}");
        return;
    }
    let text = crate::logging::escaped;
    log::info!(
        target: crate::logging::ACCESS,
        "{} {} model={} upstream={} key={} client={} ip={} status={} attempts={} latency={:.1}ms request_id={} error={}",
        line.method,
        text(line.path),
        text(ctx.model.as_deref().unwrap_or("-")),
        ctx.outcome.upstream.as_ref().map_or("-", |u| u.name()),
        ctx.outcome.key.as_ref().map_or("-", |k| k.id.as_str()),
        ctx.client_name(),
        OrDash(ip),
        line.status,
        ctx.outcome.attempts,
        elapsed.as_secs_f64() * 1000.0,
        text(line.request_id),
        err,
    );
}

/// Queues the request's usage record (off the request path: see
/// `store::usage`): numbers and the model names, no allocation.
fn record_usage(
    ctx: &Ctx,
    line: &AccessLine<'_>,
    ts_us: u64,
    elapsed: std::time::Duration,
    ttft: Option<std::time::Duration>,
) {
    use crate::store::{names, usage::Record};
    let (status, err, request_id) = (line.status, line.err, line.request_id);
    if crate::store::usage::log().is_none() {
        return;
    }
    let client = match (&ctx.snap, &ctx.caller) {
        (Some(s), Some(crate::limits::Caller::Client(i))) => s.clients.ids.get(*i).copied(),
        _ => None,
    };
    let model = ctx.model.as_deref().unwrap_or_default();
    let served = ctx.outcome.served_model.as_deref().filter(|m| *m != model);
    let record = Record {
        ts_us,
        client: client.unwrap_or_else(crate::state::no_client),
        upstream: match &ctx.outcome.upstream {
            _ if ctx.cached => names::static_id("cache"),
            Some(u) => u.name_id,
            None => 0,
        },
        key: ctx.outcome.key.as_ref().map_or(0, |k| k.name_id),
        route: names::static_id(ctx.route.as_str()),
        status,
        attempts: u16::try_from(ctx.outcome.attempts).unwrap_or(u16::MAX),
        latency_us: Record::micros(elapsed),
        ttft_us: ttft.map(Record::micros),
        tokens_in: u32::try_from(ctx.outcome.tokens_in).unwrap_or(u32::MAX),
        tokens_out: u32::try_from(ctx.outcome.tokens_out).unwrap_or(u32::MAX),
        estimated: ctx.estimated,
        error: if err == "-" { 0 } else { names::static_id(err) },
        cost: ctx.cost,
    };
    let names = crate::store::usage::RecordNames {
        model,
        served,
        request_id,
    };
    crate::store::usage::record(record, &names);
}
