//! The gateway's own answers on the API listener: small JSON bodies, OpenAI-
//! shaped errors (with `Retry-After` and `Allow` where they apply), CORS
//! preflights, and admin answers for the old proxy's `/v1/tokens/*`.

use super::ctx::Ctx;
use crate::config::Cors;
use crate::error::GatewayError;
use crate::forward::client::Client;
use crate::forward::headers::{cors_headers, gateway_headers, head};
use crate::metrics;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// Methods the API listener answers.
pub const API_METHODS: &str = "GET, POST, OPTIONS";

/// Request headers a page may send by default (when its preflight names none).
const CORS_REQUEST_HEADERS: &str =
    "authorization, content-type, api-key, x-api-key, openai-organization, openai-project";

/// Writes a complete small response with `extra` headers (and CORS headers
/// when the request's origin is allowed).
pub async fn respond(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    content_type: &'static str,
    body: Bytes,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let status = http::StatusCode::from_u16(status)
        .map_err(|_| Error::explain(ErrorType::InternalError, "invalid status"))?;
    let mut h = head(status, 6 + extra.len());
    h.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    gateway_headers(&mut h.headers);
    for (k, v) in extra {
        h.headers.insert(k.clone(), v.clone());
    }
    if let Some(origin) = &ctx.cors {
        cors_headers(&mut h.headers, origin);
    }
    let client = &mut Client(session, &ctx.answer);
    let sent = match client.write_head(h, false).await {
        Ok(()) => client.write_body(Some(body), true).await,
        e => e,
    };
    sent.map_err(|()| Error::explain(ErrorType::WriteError, "the client is gone"))
}

/// A JSON answer.
pub async fn respond_json(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    body: Bytes,
) -> Result<()> {
    ctx.outcome.status = status;
    respond(session, ctx, status, "application/json", body, &[]).await
}

/// The OpenAI-shaped error answer for `e`; counted and logged at its level.
pub async fn respond_error(session: &mut Session, ctx: &mut Ctx, e: &GatewayError) {
    ctx.error = Some(e.label());
    ctx.outcome.status = e.status();
    log::log!(
        e.log_level(),
        "answering {} (request {}): {}",
        e.status(),
        ctx.request_id(),
        e.message()
    );
    metrics::ERRORS.with_label_values(&[e.label()]).inc();
    if let Some(limit) = e.limit() {
        metrics::RATE_LIMITED.with_label_values(&[limit]).inc();
    }
    let mut extra = Vec::new();
    if let Some(s) = e.retry_after() {
        extra.push((http::header::RETRY_AFTER, HeaderValue::from(s)));
    }
    for (name, value) in e.rate_limit_headers().into_iter().flatten() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            extra.push((http::HeaderName::from_static(name), v));
        }
    }
    if let Some(allow) = e.allow() {
        extra.push((http::header::ALLOW, HeaderValue::from_static(allow)));
    }
    if matches!(e, GatewayError::QuotaExceeded { .. }) {
        // the OpenAI SDKs honour this: retrying before the reset is useless
        extra.push((
            http::HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        ));
    }
    if let Err(err) = respond(
        session,
        ctx,
        e.status(),
        "application/json",
        e.body(),
        &extra,
    )
    .await
    {
        log::debug!("could not send error response: {err}");
    }
}

/// The request's `Origin` when `cors` allows it, or when it is the
/// gateway's own dashboard (the admin listener's port on the host the
/// request was sent to: its chat playground calls the API from there).
pub fn allowed_origin(
    session: &Session,
    cors: Option<&Cors>,
    admin_listen: Option<&str>,
    admin_hosts: &[String],
) -> Option<HeaderValue> {
    let req = session.req_header();
    let origin = req.headers.get(http::header::ORIGIN)?;
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    origin_allowed(origin.to_str().ok()?, host, cors, admin_listen, admin_hosts)
        .then(|| origin.clone())
}

/// Whether an answer to `origin` (a request sent to `host`) carries CORS
/// headers: `cors` allows it, or it is the dashboard.
pub fn origin_allowed(
    origin: &str,
    host: Option<&str>,
    cors: Option<&Cors>,
    admin_listen: Option<&str>,
    admin_hosts: &[String],
) -> bool {
    cors.is_some_and(|c| c.allows(origin))
        || (host.is_some_and(|_| crate::config::edge::host_allowed(host, admin_hosts))
            && is_dashboard(origin, host, admin_listen))
}

/// Is `origin` the dashboard: `http://HOST:ADMIN_PORT`, where HOST is the
/// host the API request went to (`Host` header) and ADMIN_PORT the admin
/// listener's port?
pub fn is_dashboard(origin: &str, host: Option<&str>, admin_listen: Option<&str>) -> bool {
    let (Some(host), Some(admin)) = (host, admin_listen) else {
        return false;
    };
    let Some((_, admin_port)) = admin.rsplit_once(':') else {
        return false;
    };
    // `[::1]:4000` → `[::1]`; `localhost:4000` → `localhost`
    let hostname = match host.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') =>
        {
            h
        }
        _ => host,
    };
    !hostname.is_empty()
        && !admin_port.is_empty()
        && origin
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_prefix(hostname))
            .and_then(|rest| rest.strip_prefix(':'))
            == Some(admin_port)
}

/// Answers an `OPTIONS` request: a CORS preflight from an allowed origin gets
/// 204 with what it may do; anything else 405 with `Allow`.
pub async fn preflight(session: &mut Session, ctx: &mut Ctx, cors: Option<&Cors>) -> Result<()> {
    let req = session.req_header();
    let wants = req
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let default = Cors::default();
    let cors = cors.unwrap_or(&default);
    let (Some(origin), Some(method)) = (ctx.cors.clone(), wants) else {
        let e = GatewayError::MethodNotAllowed {
            method: "OPTIONS".into(),
            path: req.uri.path().to_string(),
            allow: API_METHODS,
        };
        respond_error(session, ctx, &e).await;
        return Ok(());
    };
    if !matches!(method, "GET" | "POST") {
        let e = GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: req.uri.path().to_string(),
            allow: API_METHODS,
        };
        respond_error(session, ctx, &e).await;
        return Ok(());
    }
    // echo the headers the page asks for when they are plain header names
    let asked = req
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.as_bytes()
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_, ".contains(c))
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(CORS_REQUEST_HEADERS));
    let mut h = head(http::StatusCode::NO_CONTENT, 8);
    h.headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
    h.headers
        .insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(API_METHODS),
    );
    h.headers
        .insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.headers.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    h.headers.insert(
        http::header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    ctx.outcome.status = 204;
    ctx.answer.apply(&mut h.headers);
    session
        .write_response_header(Box::new(h.into()), false)
        .await?;
    session.write_response_body(None, true).await
}

/// Writes an admin API answer (the old proxy's `/v1/tokens/*` on the API
/// listener; every one of them, errors included, is JSON).
pub async fn respond_admin(
    session: &mut Session,
    ctx: &mut Ctx,
    answer: http::Response<Vec<u8>>,
) -> Result<()> {
    let (parts, body) = answer.into_parts();
    ctx.outcome.status = parts.status.as_u16();
    let status = ctx.outcome.status;
    respond(
        session,
        ctx,
        status,
        "application/json",
        Bytes::from(body),
        &[],
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_dashboards_own_origin_is_allowed() {
        use super::is_dashboard;
        let admin = Some("127.0.0.1:4001");
        assert!(is_dashboard(
            "http://127.0.0.1:4001",
            Some("127.0.0.1:4000"),
            admin
        ));
        assert!(is_dashboard(
            "http://localhost:4001",
            Some("localhost:4000"),
            admin
        ));
        assert!(is_dashboard("http://[::1]:4001", Some("[::1]:4000"), admin));
        assert!(is_dashboard(
            "http://gw.lan:4001",
            Some("gw.lan"),
            Some("0.0.0.0:4001")
        ));
        for (origin, host) in [
            ("http://evil.example:4001", "127.0.0.1:4000"),
            ("http://127.0.0.1:40011", "127.0.0.1:4000"),
            ("http://127.0.0.1:4001/x", "127.0.0.1:4000"),
            ("https://127.0.0.1:4001", "127.0.0.1:4000"),
            ("http://127.0.0.1:4000", "127.0.0.1:4000"),
            ("null", "127.0.0.1:4000"),
            ("http://:4001", ":4000"),
        ] {
            assert!(
                !is_dashboard(origin, Some(host), admin),
                "{origin} via {host}"
            );
        }
        assert!(!is_dashboard("http://127.0.0.1:4001", None, admin));
        assert!(!is_dashboard(
            "http://127.0.0.1:4001",
            Some("127.0.0.1:4000"),
            None
        ));
    }
}
