//! What the API listener does with one request, in order: health; path
//! safety (no `..`, encoded slashes: 400, before anything else); CORS
//! preflight; the old proxy's `/v1/tokens/*` (answered here, never forwarded);
//! client authentication; `/v1/models`; the understood endpoints; any other
//! body that names a model (JSON, or a multipart `model` part: checked
//! against the client's models and routed by it); everything else to the
//! opaque lane.

use super::body::{self, BodyKind};
use super::cached;
use super::ctx::{Ctx, OpaqueTarget};
use super::door::{fit_to_model, json_model, translate, understood_call};
use super::respond::{self, API_METHODS};
use super::{Gateway, Next};
use crate::error::GatewayError;
use crate::forward::client::Client;
use crate::forward::headers::forwardable_headers;
use crate::forward::shape::Peek;
use crate::forward::{Call, RelayEnd};
use crate::limits::{self, Caller};
use crate::routes::{self, Api, RouteClass};
use crate::state::Snapshot;
use bytes::Bytes;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::sync::Arc;

type Handled = Result<Next, GatewayError>;

/// Methods the opaque lane passes on.
const OPAQUE_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Paths whose multipart bodies never name a model (file uploads): streamed.
const UNMODELLED_UPLOADS: &[&str] = &["/v1/files", "/v1/uploads"];

fn internal(e: pingora::BError) -> GatewayError {
    GatewayError::Internal(e.to_string())
}

fn not_allowed(session: &Session, allow: &'static str) -> GatewayError {
    let req = session.req_header();
    GatewayError::MethodNotAllowed {
        method: req.method.as_str().to_string(),
        path: req.uri.path().to_string(),
        allow,
    }
}

/// The real caller (see [`limits::addr::client_addr`]).
fn client_addr(
    session: &Session,
    cfg: &crate::config::Config,
    need_local: bool,
) -> limits::addr::ClientAddr {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let headers = &session.req_header().headers;
    // a value that is not text is there all the same: an unreadable hop
    let values = |name: &str| {
        headers
            .get_all(name)
            .into_iter()
            .map(|v| v.to_str().unwrap_or("unreadable"))
    };
    let trust = limits::addr::Trust {
        proxies: &cfg.server.trusted_proxies,
        source: cfg.server.client_ip_header,
        need_local,
    };
    limits::addr::client_addr(peer, values, &trust)
}

impl Gateway {
    pub(super) async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
    ) -> Handled {
        let cfg = &snap.config;
        let path = session.req_header().uri.path();
        if path == "/health" || path == "/v1/health" {
            ctx.route = RouteClass::Health;
            respond::respond_json(session, ctx, 200, Bytes::from(crate::admin::health_body()))
                .await
                .map_err(internal)?;
            return Ok(Next::Done);
        }
        // whether a caller is local matters only without `clients` (the
        // admin paths ask again)
        let addr = client_addr(session, cfg, cfg.clients.is_none());
        ctx.addr = Some(addr);
        if crate::anthropic::endpoint(path).is_some() {
            // from here on, every answer is in the Messages API's shape
            let writer = crate::anthropic::writer::Writer::new("");
            ctx.answer.reshape_with(writer);
        }
        let server = &cfg.server;
        if !limits::addr::permitted(addr.ip, &server.allow_ips, &server.deny_ips) {
            return Err(GatewayError::AddressNotAllowed);
        }
        if cfg.metrics_path.as_deref() == Some(path) {
            return self.metrics(session, ctx, snap).await;
        }
        if !path.starts_with("/v1/") {
            return Err(GatewayError::NotFound {
                path: path.to_string(),
            });
        }
        canonicalize(session)?;
        let admin = &cfg.admin;
        ctx.cors = respond::allowed_origin(
            session,
            cfg.cors.as_ref(),
            admin.listen.as_deref(),
            &admin.hosts,
        );
        if session.req_header().method == http::Method::OPTIONS {
            respond::preflight(session, ctx, cfg.cors.as_ref())
                .await
                .map_err(internal)?;
            return Ok(Next::Done);
        }
        if session.req_header().uri.path().starts_with("/v1/tokens/") {
            return self.tokens_alias(session, ctx, snap).await;
        }
        let caller = {
            let headers = &session.req_header().headers;
            let key = limits::presented_key(|n| headers.get(n).and_then(|v| v.to_str().ok()));
            limits::authenticate(cfg, key, &addr)?
        };
        ctx.caller = Some(caller);
        if let Caller::Client(i) = caller {
            crate::tenants::seen::saw(snap.clients.seen.get(i));
        }
        self.api_call(session, ctx, snap, caller).await
    }

    /// An authenticated caller's `/v1/*` request.
    async fn api_call(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
        caller: Caller,
    ) -> Handled {
        let path = session.req_header().uri.path();
        if routes::models_path(path).is_some() {
            return self.models(session, ctx, snap, caller).await;
        }
        // strict: a call with a body is admitted once its tokens are estimated
        let strict = limits::shared::mode() == limits::shared::Mode::Strict;
        if !strict {
            ctx.hold(limits::admit::admit(snap, caller, None).await?);
        }
        if path == routes::ME {
            return Box::pin(self.me(session, ctx, snap, caller)).await;
        }
        if let Some(kind) = crate::anthropic::endpoint(path) {
            // boxed: its translation state would size every call's future
            return Box::pin(self.messages(session, ctx, snap, caller, kind)).await;
        }
        if let Some(endpoint) = routes::understood(path) {
            ctx.route = endpoint.class;
            if session.req_header().method != http::Method::POST {
                return Err(not_allowed(session, "POST"));
            }
            let body = Box::pin(self.read_body(session, snap)).await?;
            let req = session.req_header();
            let query = req.uri.query().map(str::to_string);
            let call = understood_call(endpoint, query, forwardable_headers(req), body)?;
            let call = translate(snap, ctx, caller, call)?;
            return self.forward(session, ctx, snap, caller, call).await;
        }
        ctx.route = RouteClass::Opaque;
        if !matches!(
            session.req_header().method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::POST
                | http::Method::PUT
                | http::Method::PATCH
                | http::Method::DELETE
        ) {
            // TRACE, CONNECT, made-up methods: nothing an OpenAI-style API takes
            return Err(not_allowed(session, OPAQUE_METHODS));
        }
        let modelled = modelled_body(session);
        let path = session.req_header().uri.path();
        if !(modelled.is_some() && routes::runs_named_model(path)) {
            // whatever model a body names here (a batch's file names its own)
            limits::check_endpoint(&snap.config, &caller, path)?;
        }
        if let Some(api) = modelled {
            return self.routed_body(session, ctx, snap, caller, api).await;
        }
        if strict {
            ctx.hold(limits::admit::admit(snap, caller, None).await?);
        }
        self.opaque(session, ctx, snap)
    }

    /// Anthropic's Messages API: a message call runs as a chat call (its
    /// answer reshaped on the way out); `count_tokens` is answered here.
    async fn messages(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
        caller: Caller,
        kind: crate::anthropic::Endpoint,
    ) -> Handled {
        ctx.route = RouteClass::Messages;
        if session.req_header().method != http::Method::POST {
            return Err(not_allowed(session, "POST"));
        }
        let body = Box::pin(self.read_body(session, snap)).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
        let invalid = GatewayError::BadRequest;
        if kind == crate::anthropic::Endpoint::CountTokens {
            let model = v["model"].as_str().unwrap_or("").to_string();
            limits::check_model(&snap.config, &caller, &model)?;
            if snap.first_upstream_for(&model).is_none() {
                return Err(snap.model_not_found(&model));
            }
            let count = crate::anthropic::count_tokens(&v).map_err(invalid)?;
            ctx.model = Some(model);
            respond::respond_json(session, ctx, 200, Bytes::from(count.to_string()))
                .await
                .map_err(internal)?;
            return Ok(Next::Done);
        }
        let req = session.req_header();
        let model = v["model"].as_str().unwrap_or("");
        let call = if snap
            .first_upstream_for(model)
            .is_some_and(|u| u.conf.anthropic)
        {
            // a kind: anthropic upstream takes the client's body as it is
            let mut call =
                understood_call(&routes::MESSAGES, None, forwardable_headers(req), body)?;
            call.anthropic = true;
            let writer = crate::anthropic::writer::Writer::native();
            ctx.answer.reshape_with(writer);
            call
        } else {
            let mut chat = crate::anthropic::request::to_chat(&v).map_err(invalid)?;
            fit_to_model(snap, model, &v, &mut chat);
            let chat = Bytes::from(chat.to_string());
            let endpoint = &routes::CHAT;
            understood_call(endpoint, None, forwardable_headers(req), chat)?
        };
        self.forward(session, ctx, snap, caller, call).await
    }

    /// Reads the whole body for the gateway to see (bounded; a stall is cut).
    async fn read_body(
        &self,
        session: &mut Session,
        snap: &Snapshot,
    ) -> Result<Bytes, GatewayError> {
        let cfg = &snap.config;
        let t = &cfg.timeouts;
        body::read(session, cfg.limits.max_request_body, t.idle, t.request_body)
            .await
            .inspect_err(|_| {
                // the rest of the body is unread: do not reuse this connection
                session.set_keepalive(None);
            })
    }

    /// `GET /v1/me`: the caller's own limits, quotas, usage and spend.
    async fn me(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Snapshot,
        caller: Caller,
    ) -> Handled {
        ctx.route = RouteClass::Other;
        if session.req_header().method != http::Method::GET {
            return Err(not_allowed(session, "GET"));
        }
        let name = limits::caller_name(&snap.config, &caller);
        let spends = crate::tenants::view::spends_cached().await;
        let spend = spends.get(name).copied().unwrap_or_default();
        let body = crate::tenants::view::me(snap, caller, spend).to_string();
        respond::respond_json(session, ctx, 200, Bytes::from(body))
            .await
            .map_err(internal)?;
        Ok(Next::Done)
    }

    /// `GET /v1/models` (what this caller may use) and `GET /v1/models/{id}`.
    async fn models(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Snapshot,
        caller: Caller,
    ) -> Handled {
        ctx.route = RouteClass::Models;
        if session.req_header().method != http::Method::GET {
            return Err(not_allowed(session, "GET"));
        }
        // the first listing waits briefly for the upstreams' own lists
        crate::listing::want_and_wait(std::time::Duration::from_secs(2)).await;
        let cfg = &snap.config;
        let path = session.req_header().uri.path();
        let body = if let Some(Some(id)) = routes::models_path(path) {
            let Some(owner) = snap.first_upstream_for(id).map(|u| u.name()) else {
                return Err(snap.model_not_found(id));
            };
            limits::check_model(cfg, &caller, id)?;
            Bytes::from(crate::listing::model_entry(cfg, id, owner).to_string())
        } else if limits::restricted(cfg, &caller) {
            snap.models_body_for(|m| limits::check_model(cfg, &caller, m).is_ok())
        } else {
            snap.listing.load().body.clone()
        };
        respond::respond_json(session, ctx, 200, body)
            .await
            .map_err(internal)?;
        Ok(Next::Done)
    }

    /// A body outside the understood endpoints that may name a model.
    async fn routed_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
        caller: Caller,
        api: Api,
    ) -> Handled {
        let body = Box::pin(self.read_body(session, snap)).await?;
        let req = session.req_header();
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (peek, model) = match api {
            Api::Form => {
                let model = body::boundary(&content_type)
                    .and_then(|b| body::multipart_field(&body, b, "model"))
                    .filter(|m| !m.is_empty());
                (Peek::default(), model)
            }
            _ => json_model(&body)?,
        };
        let path = req.uri.path();
        if model.is_none() {
            limits::check_endpoint(&snap.config, &caller, path)?;
        }
        let pinned = match &model {
            Some(_) => None,
            None => Some(
                snap.opaque_upstream(path)
                    .ok_or_else(|| GatewayError::NotFound {
                        path: path.to_string(),
                    })?,
            ),
        };
        let call = Call {
            method: req.method.clone(),
            suffix: Cow::Owned(path["/v1".len()..].to_string()),
            api,
            content_type: Cow::Owned(content_type),
            pinned,
            query: req.uri.query().map(str::to_string),
            headers: forwardable_headers(req),
            body,
            peek,
            model: model.unwrap_or_default(),
            estimate: Default::default(),
            anthropic: false,
            affinity: None,
        };
        self.forward(session, ctx, snap, caller, call).await
    }

    /// Checks the call's model (allowed for the caller, served by an upstream)
    /// and runs it through the forwarder.
    async fn forward(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        snap: &Arc<Snapshot>,
        caller: Caller,
        mut call: Call,
    ) -> Handled {
        admit_call(snap, caller, &mut call, ctx)?;
        let quota = crate::tenants::admit::admit(snap, caller, &call.estimate, &call.model)
            .inspect_err(|_| ctx.model = Some(call.model.clone()))?;
        let tokens = call.estimate.charge();
        let mut charges = if ctx.admitted {
            let now = crate::clock::coarse_ms();
            limits::within_tpm(snap, caller, now, tokens)
        } else {
            limits::admit::admit(snap, caller, Some(tokens))
                .await
                .map(|mut a| {
                    let charges = std::mem::take(&mut a.charges);
                    ctx.hold(a);
                    charges
                })
        }
        .inspect_err(|_| ctx.model = Some(call.model.clone()))?;
        charges.hold_quota(quota);
        super::door::steer_follow_up(snap, caller, &mut call);
        let lookup = cached::lookup(session, snap, caller, &call);
        // boxed: a cache lookup's state would otherwise size every call's future
        if lookup.is_some()
            && Box::pin(cached::answer(
                session,
                ctx,
                snap,
                &call,
                lookup.as_ref(),
                &charges,
            ))
            .await
        {
            return Ok(Next::Done);
        }
        let client = Client(session, &ctx.answer);
        let cors = ctx.cors.clone();
        // boxed: the attempt loop's state would size every request's future
        let result =
            Box::pin(
                self.forwarder
                    .run(client, snap, &call, ctx.start, &mut ctx.outcome, cors),
            )
            .await;
        match super::settle::settle_call(&mut call, &charges, ctx, result)? {
            RelayEnd::Complete => {
                cached::keep(snap, lookup.as_ref(), ctx);
                super::door::remember_answer(snap, caller, &ctx.outcome);
            }
            // a client that left or stopped reading: closed without a flush
            RelayEnd::ClientGone => ctx.abort = Some("the client is gone".into()),
            RelayEnd::Broken(detail) => ctx.abort = Some(detail),
            RelayEnd::ErrorEvent(_) => {}
        }
        Ok(Next::Done)
    }

    /// Everything else: Pingora's proxy phases, bodies streamed untouched.
    fn opaque(&self, session: &mut Session, ctx: &mut Ctx, snap: &Snapshot) -> Handled {
        let cfg = &snap.config;
        if let Some(caller) = ctx.caller {
            crate::tenants::admit::check_left(snap, caller)?;
        }
        if body::declared_length(session).is_some_and(|n| n > cfg.limits.max_request_body) {
            return Err(GatewayError::PayloadTooLarge {
                limit: cfg.limits.max_request_body,
            });
        }
        let path = session.req_header().uri.path();
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
        ctx.outcome.upstream = Some(upstream.clone());
        ctx.outcome.key = key.clone();
        ctx.opaque = Some(OpaqueTarget::new(upstream, key));
        Ok(Next::Proxy)
    }

    /// Prometheus text at `metrics.path` on the API listener: for a
    /// loopback caller or one holding the admin token (as `/v1/tokens/*`).
    async fn metrics(&self, session: &mut Session, ctx: &mut Ctx, snap: &Snapshot) -> Handled {
        ctx.route = RouteClass::Other;
        admin_only(session, ctx, snap)?;
        if session.req_header().method != http::Method::GET {
            return Err(not_allowed(session, "GET"));
        }
        ctx.outcome.status = 200;
        let body = Bytes::from(crate::admin::metrics_text(snap));
        respond::respond(session, ctx, 200, "text/plain; version=0.0.4", body, &[])
            .await
            .map_err(internal)?;
        Ok(Next::Done)
    }

    /// The old proxy's `/v1/tokens/stats|rotate|reset-stats`: answered by the
    /// gateway (as on the admin listener) for a loopback caller or one holding
    /// the admin token; refused otherwise. Never forwarded.
    async fn tokens_alias(&self, session: &mut Session, ctx: &mut Ctx, snap: &Snapshot) -> Handled {
        ctx.route = RouteClass::Other;
        admin_only(session, ctx, snap)?;
        let req = session.req_header();
        let (method, path) = (req.method.as_str().to_string(), req.uri.path().to_string());
        let query = req.uri.query().unwrap_or("").to_string();
        if !matches!(method.as_str(), "GET" | "POST") {
            return Err(not_allowed(session, API_METHODS));
        }
        let answer = crate::admin::route(&self.state, &method, &path, &query);
        respond::respond_admin(session, ctx, answer)
            .await
            .map_err(internal)?;
        Ok(Next::Done)
    }
}

/// Puts the request's path in canonical form (see [`routes::canonical_path`])
/// before anything routes on it; an unsafe path is a 400.
fn canonicalize(session: &mut Session) -> Result<(), GatewayError> {
    let uri = &session.req_header().uri;
    let path = uri.path();
    let invalid = || GatewayError::InvalidPath {
        path: path.to_string(),
    };
    let Cow::Owned(canon) = routes::canonical_path(path).ok_or_else(invalid)? else {
        return Ok(());
    };
    let full = match uri.query() {
        Some(q) => format!("{canon}?{q}"),
        None => canon,
    };
    let new: http::Uri = full.parse().map_err(|_| invalid())?;
    session.req_header_mut().set_uri(new);
    Ok(())
}

/// Refuses (403) a caller that may not use the admin paths on the API listener.
fn admin_only(session: &Session, ctx: &Ctx, snap: &Snapshot) -> Result<(), GatewayError> {
    let header = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let local = ctx.addr.is_some_and(|a| a.local)
        || (snap.config.admin.token.is_none() && client_addr(session, &snap.config, true).local);
    if tokens_allowed(local, snap.config.admin.token.as_deref(), header) {
        Ok(())
    } else {
        Err(GatewayError::AdminOnly)
    }
}

/// May this caller use the admin paths on the API listener (`/v1/tokens/*`,
/// `metrics.path`)? With an admin token set, only with that token; without
/// one, a local caller (loopback or Unix socket, not forwarded).
fn tokens_allowed(local: bool, admin_token: Option<&str>, authorization: Option<&str>) -> bool {
    match admin_token {
        Some(_) => crate::admin::authorized(admin_token, authorization),
        None => local,
    }
}

/// Which routed body a request outside the understood endpoints carries, if
/// its body may name a model: JSON on POST/PUT/PATCH, or a multipart form
/// (except file uploads).
fn modelled_body(session: &Session) -> Option<Api> {
    let req = session.req_header();
    if !matches!(
        req.method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    ) {
        return None;
    }
    let ct = req.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    match BodyKind::of(ct) {
        BodyKind::Json => Some(Api::Generic),
        BodyKind::Multipart
            if !UNMODELLED_UPLOADS
                .iter()
                .any(|p| req.uri.path().starts_with(p)) =>
        {
            Some(Api::Form)
        }
        _ => None,
    }
}

/// What a call must pass before its limits: its token estimate is made,
/// and its model is one the caller may use and an upstream serves. `Err`:
/// refused; the call's model is then on `ctx` for the record.
fn admit_call(
    snap: &Snapshot,
    caller: Caller,
    call: &mut Call,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    if call.api != crate::routes::Api::Form {
        let mut parsed = None;
        let max_output = call.peek.max_output();
        call.estimate =
            limits::tokens::estimate(&call.body, snap.meters_tokens, max_output, || {
                parsed.insert(call.parse_json())
            });
    }
    if call.pinned.is_none() {
        let cfg = &snap.config;
        let first = snap.first_upstream_for(&call.model);
        // a model only kind: anthropic upstreams serve takes only their calls
        let only_anthropic = || {
            !snap
                .upstreams
                .iter()
                .any(|u| !u.conf.anthropic && u.conf.upstream_model(&call.model).is_some())
        };
        let refused = limits::check_model(cfg, &caller, &call.model)
            .err()
            .or_else(|| first.is_none().then(|| snap.model_not_found(&call.model)))
            .or_else(|| {
                let wrong = !call.anthropic && first.is_some_and(|u| u.conf.anthropic);
                (wrong && only_anthropic()).then(|| {
                    GatewayError::BadRequest(format!(
                        "{} is served by a kind: anthropic upstream, which takes only \
                         /v1/chat/completions and /v1/messages calls",
                        call.model
                    ))
                })
            });
        if let Some(e) = refused {
            ctx.model = Some(std::mem::take(&mut call.model));
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths_need_the_token_when_one_is_set() {
        assert!(tokens_allowed(true, None, None));
        assert!(!tokens_allowed(false, None, None));
        assert!(
            !tokens_allowed(false, None, Some("Bearer anything")),
            "no token configured: local callers only"
        );
        assert!(
            !tokens_allowed(true, Some("t0ken"), None),
            "a token set: loopback is not enough"
        );
        assert!(!tokens_allowed(false, Some("t0ken"), Some("Bearer wrong")));
        assert!(tokens_allowed(false, Some("t0ken"), Some("Bearer t0ken")));
    }

    #[test]
    fn json_bodies_name_their_model_or_none() {
        assert_eq!(
            json_model(br#"{"model":"m","n":2}"#).unwrap().1.as_deref(),
            Some("m")
        );
        assert_eq!(json_model(br#"{"input":"x"}"#).unwrap().1, None);
        assert!(matches!(
            json_model(br#"{"model":""}"#),
            Err(GatewayError::MissingModel)
        ));
        assert!(matches!(
            json_model(br#"{"model":7}"#),
            Err(GatewayError::MissingModel)
        ));
        assert!(matches!(
            json_model(b"[1]"),
            Err(GatewayError::InvalidJson(_))
        ));
        assert!(matches!(
            json_model(b"  "),
            Err(GatewayError::InvalidJson(_))
        ));
    }
}
