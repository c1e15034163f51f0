//! The admin listener: `/health`, `/metrics` (Prometheus text), the key API
//! (`/admin/keys`, key actions, rotate, stats reset), `/admin/upstreams`,
//! `/admin/reload`, and the old proxy's `/v1/tokens/*` aliases. When
//! `admin.token` is set, everything but `/health` needs `Authorization: Bearer <token>`.
//! Keys are shown only by id (`github#2 (…Xq9f)`).

pub mod client;
pub mod clients;
pub mod reply;
pub mod status;
pub mod view;

use reply::{json_error, json_reply, param, reply};
pub use status::{health_body, metrics_text};

use crate::clock::{fmt_iso, now_ms};
use crate::keys::{Key, KeyPool, KeyStatus, Park};
use crate::state::{Snapshot, State};
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

/// Paths the admin listener answers (another method on them is a 405; any
/// other path a 404).
const KNOWN_PATHS: &[&str] = &[
    "/metrics",
    "/admin/keys",
    "/admin/keys/rotate",
    "/admin/stats/reset",
    "/admin/upstreams",
    "/admin/reload",
    "/admin/status",
    "/admin/series",
    "/admin/usage",
    "/admin/usage/series",
    "/admin/cache",
    "/admin/cache/purge",
    "/admin/requests",
    "/admin/probe",
    "/admin/probe/targets",
    "/v1/tokens/stats",
    "/v1/tokens/rotate",
    "/v1/tokens/reset-stats",
];

pub struct AdminApp {
    pub state: Arc<State>,
    /// Its own upstream connector, for `POST /admin/probe`.
    pub prober: crate::forward::Forwarder,
}

/// Does the request carry the admin token (when one is configured)?
pub fn authorized(token: Option<&str>, header: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let Some(presented) = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    crate::limits::secrets_equal(presented, token)
}

/// One key as the admin API shows it.
pub fn key_json(k: &Key, pool: &KeyPool, index: usize) -> Value {
    let now = now_ms();
    let s = k.state();
    let cooling_models: Vec<Value> = s
        .model_cool
        .iter()
        .filter(|(_, u)| **u > now)
        .map(|(m, u)| json!({"model": m, "until": fmt_iso(*u), "until_ms": u}))
        .collect();
    let (state, until, reason, scope) = s.status(now);
    json!({
        "id": k.id,
        "short_id": k.short_id,
        "upstream": k.upstream,
        "state": state.as_str(),
        "until": until.map(fmt_iso),
        "until_ms": until,
        "reason": reason,
        "scope_model": scope,
        "cooling_models": cooling_models,
        "requests": s.requests,
        "failures": s.failures,
        "rate_limited": s.rate_limited,
        "in_flight": k.in_flight(),
        "last_used": (s.last_used_ms > 0).then(|| fmt_iso(s.last_used_ms)),
        "weight": k.weight,
        "strategy": pool.strategy().as_str(),
        "current": pool.strategy() == crate::config::raw::KeyStrategy::Sticky && pool.current() == index,
    })
}

fn keys_json(snap: &Snapshot) -> Value {
    let keys: Vec<Value> = snap
        .upstreams
        .iter()
        .flat_map(|u| {
            u.keys
                .keys()
                .iter()
                .enumerate()
                .map(move |(i, k)| key_json(k, &u.keys, i))
        })
        .collect();
    let mut out = json!({"keys": [], "total": keys.len()});
    for st in KeyStatus::ALL {
        out[st.as_str()] = keys
            .iter()
            .filter(|k| k["state"] == st.as_str())
            .count()
            .into();
    }
    out["keys"] = Value::Array(keys);
    out
}

/// Finds a key by `github#2`, `github%232` or `github:2`.
fn find_key(snap: &Snapshot, id: &str) -> Option<Arc<Key>> {
    let id = id
        .replace("%23", "#")
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace(':', "#");
    snap.upstreams
        .iter()
        .find_map(|u| u.keys.find(&id))
        .cloned()
}

/// Answers one admin request (already authorized) that needs no upstream call.
pub fn route(state: &State, method: &str, path: &str, query: &str) -> Response<Vec<u8>> {
    let snap = state.load();
    match (method, path) {
            ("GET", "/metrics") => reply(200, "text/plain; version=0.0.4", metrics_text(&snap).into_bytes()),
            ("GET", "/admin/keys") | ("GET", "/v1/tokens/stats") => json_reply(200, &keys_json(&snap)),
            ("GET", "/admin/upstreams") => {
                let ups: Vec<Value> = snap
                    .upstreams
                    .iter()
                    .map(|u| {
                        let now = now_ms();
                        let ready = u.keys.keys().iter().filter(|k| k.availability("", now) == crate::keys::Availability::Ready).count();
                        let health = u.health.view(now);
                        json!({"name": u.name(), "target": format!("{}://{}{}", if u.target.tls {"https"} else {"http"}, u.target.host_header, u.target.base_path),
                            "models": u.conf.models, "model_map": u.conf.model_map, "key_strategy": u.keys.strategy().as_str(),
                            "keys": u.keys.keys().len(), "keys_ready": ready,
                            "stream_only": u.conf.stream_only, "no_stream": u.conf.no_stream,
                            "continuation": u.conf.continuation.as_str(),
                            "weight": u.conf.weight, "health": {
                                "state": health.state, "until": health.until_ms.map(fmt_iso),
                                "reason": health.reason, "consecutive_failures": health.consecutive_failures,
                                "last_check": health.last_check_ms.map(fmt_iso),
                                "check_path": u.conf.health.path}})
                    })
                    .collect();
                json_reply(200, &json!({"upstreams": ups}))
            }
            ("GET", "/admin/status") => json_reply(200, &status::status(&snap)),
            ("GET", "/admin/series") => match status::series(param(query, "seconds").as_deref()) {
                Ok(v) => json_reply(200, &v),
                Err(e) => bad_param(e),
            },
            ("GET", "/admin/usage") => usage_here(query),
            ("GET", "/admin/cache") => json_reply(200, &cache_stats(&snap)),
            ("GET", "/admin/usage/series") => usage_series_answer(query),
            ("GET", "/admin/requests") => requests_answer(query),
            ("POST", "/admin/reload") => match state.reload() {
                Ok(msg) => json_reply(200, &json!({"status": "reloaded", "message": msg})),
                Err(e) => {
                    log::error!("admin: reload rejected, the previous config keeps serving:\n{e}");
                    json_reply(
                    400,
                    &json!({"error": {"message": format!("config rejected; the previous config keeps serving:\n{e}"), "type": "invalid_request_error", "param": null, "code": "invalid_config", "errors": e.0}}),
                    )
                }
            },
            ("POST", "/admin/keys/rotate") | ("POST", "/v1/tokens/rotate") => {
                let only = param(query, "upstream");
                if let Some(o) = only.as_deref() {
                    match snap.upstreams.iter().find(|u| u.name() == o) {
                        None => return no_upstream(o),
                        Some(u) if u.conf.key_strategy != crate::config::raw::KeyStrategy::Sticky => {
                            return bad_param(format!("upstream {o} picks its keys {}: only sticky pools have a key to move on from", u.conf.key_strategy.as_str()));
                        }
                        Some(_) => {}
                    }
                }
                // only sticky pools stay on one key; the others choose per call
                let rotated: Vec<Value> = snap
                    .upstreams
                    .iter()
                    .filter(|u| only.as_deref().is_none_or(|o| o == u.name()) && !u.keys.is_empty())
                    .filter(|u| u.conf.key_strategy == crate::config::raw::KeyStrategy::Sticky)
                    .filter_map(|u| u.keys.rotate().map(|k| json!({"upstream": u.name(), "now_using": k.id})))
                    .collect();
                log::info!("admin: rotated sticky keys: {rotated:?}");
                json_reply(200, &json!({"rotated": rotated}))
            }
            ("POST", "/admin/stats/reset") | ("POST", "/v1/tokens/reset-stats") => {
                for u in &snap.upstreams {
                    for k in u.keys.keys() {
                        k.reset_counters();
                    }
                }
                log::info!("admin: key counters reset");
                state.flush_store();
                json_reply(200, &json!({"status": "reset"}))
            }
            ("POST", p) if p.starts_with("/admin/keys/") => {
                let rest = &p["/admin/keys/".len()..];
                let Some((id, action)) = rest.rsplit_once('/') else {
                    return json_error(404, "use POST /admin/keys/{id}/enable|disable|reset", "not_found");
                };
                let Some(k) = find_key(&snap, id) else {
                    let shown = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
                    return json_error(404, &format!("no key {shown:?}; `switchyard keys` (GET /admin/keys) lists them"), "key_not_found");
                };
                match action {
                    "enable" => k.reset(),
                    "disable" => k.park(Park { reason: "disabled by operator".into(), until_ms: None }),
                    "reset" => {
                        k.reset();
                        k.reset_counters();
                    }
                    _ => return json_error(404, "actions are enable, disable and reset", "not_found"),
                }
                log::info!("admin: key {} {action}d", k.id);
                // written now: a reload or a restart right after must not bring the old state back
                state.flush_store();
                let pool = snap.upstreams.iter().find(|u| u.name() == k.upstream).map(|u| &u.keys);
                let idx = pool.and_then(|p| p.keys().iter().position(|x| Arc::ptr_eq(x, &k))).unwrap_or(0);
                match pool {
                    Some(p) => json_reply(200, &key_json(&k, p, idx)),
                    None => json_reply(200, &json!({"id": k.id})),
                }
            }
            (_, p) if KNOWN_PATHS.contains(&p) || p.starts_with("/admin/keys/") => {
                json_error(405, &format!("{method} is not supported on {p}"), "method_not_allowed")
            }
            _ => json_error(404, &format!("Unknown admin path {path}. Try / (the dashboard), /health, /metrics, /admin/status, /admin/keys, /admin/upstreams, /admin/usage, /admin/requests."), "not_found"),
        }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let method = req.method.as_str().to_string();
        if path == "/health" {
            return reply(200, "application/json", health_body());
        }
        let host = req.headers.get("host").and_then(|v| v.to_str().ok());
        if !crate::config::edge::host_allowed(host, &self.state.load().config.admin.hosts) {
            return json_error(
                421,
                "This admin listener does not answer to that host name. Use its address or localhost, or add the name to admin.hosts.",
                "misdirected_request",
            );
        }
        if method == "GET" {
            if let Some((ct, body)) = status::asset(&path) {
                // the page asks for the token first when one is set (no 401 noise)
                let auth = if self.state.load().config.admin.token.is_some() {
                    "token"
                } else {
                    "none"
                };
                let mut page = reply(200, ct, body.replace("__AUTH__", auth).into_bytes());
                status::harden(&mut page);
                return page;
            }
        }
        let snap = self.state.load();
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !authorized(snap.config.admin.token.as_deref(), auth) {
            return json_error(
                401,
                "This admin endpoint needs `Authorization: Bearer <admin.token>`.",
                "invalid_admin_token",
            );
        }
        // the request body, if any (at most 1 MiB kept; the rest drained)
        let mut body = Vec::new();
        let mut read = 0usize;
        while let Ok(Some(b)) = session.read_request_body().await {
            read += b.len();
            if read > 1 << 20 {
                break;
            }
            body.extend_from_slice(&b);
        }
        if path.starts_with("/admin/clients") {
            if read > 1 << 20 {
                return json_error(413, "the body is larger than 1 MiB", "request_too_large");
            }
            let req = session.req_header();
            if let Some(refusal) = clients::cross_site(&method, &req.headers) {
                return refusal;
            }
            let actor = clients::Actor::of(
                req.headers
                    .get("x-switchyard-actor")
                    .and_then(|v| v.to_str().ok()),
                session.client_addr().map_or("-".into(), |a| a.to_string()),
            );
            if let Some(r) =
                clients::answer(&self.state, &method, &path, &query, &body, &actor).await
            {
                return r;
            }
        }
        match (method.as_str(), path.as_str()) {
            ("POST", "/admin/clock") => clock_advance(&query),
            ("GET", "/admin/probe/targets") => {
                crate::listing::want_and_wait(std::time::Duration::from_secs(5)).await;
                probe_targets(&self.state.load(), &query)
            }
            ("POST", "/admin/probe") => self.probe(&snap, &query).await,
            ("GET", "/admin/usage") => usage_answer(&query).await,
            ("POST", "/admin/cache/purge") => cache_purge(&snap, &query).await,
            _ => route(&self.state, &method, &path, &query),
        }
    }
}

/// `POST /admin/clock?advance=25h`: moves the quota clock forward, for a
/// test crossing a period; only with `SWITCHYARD_TEST_CLOCK=1` in the
/// environment (a 404 otherwise, as for any unknown path).
fn clock_advance(query: &str) -> Response<Vec<u8>> {
    if std::env::var("SWITCHYARD_TEST_CLOCK").as_deref() != Ok("1") {
        return json_error(404, "Unknown admin path /admin/clock.", "not_found");
    }
    let by = param(query, "advance").and_then(|a| humantime::parse_duration(&a).ok());
    match by {
        Some(d) => {
            let skew = crate::tenants::quota::advance_clock(d.as_millis() as u64);
            log::warn!("admin: the quota clock moved forward by {d:?} (test clock)");
            json_reply(
                200,
                &json!({"skew_ms": skew, "now": fmt_iso(crate::tenants::quota::now_ms())}),
            )
        }
        None => bad_param("advance=<duration> such as 25h".into()),
    }
}

/// `GET /admin/probe/targets?model=M&upstream=U&all=1`: what `switchyard
/// probe` will call (see `forward::probe::targets`).
fn probe_targets(snap: &Snapshot, query: &str) -> Response<Vec<u8>> {
    let model = param(query, "model");
    let upstream = param(query, "upstream");
    if let Some(u) = upstream.as_deref() {
        if upstream_index(snap, u).is_none() {
            return no_upstream(u);
        }
    }
    let all = param(query, "all").is_some_and(|v| v == "1" || v == "true");
    let t = match crate::forward::probe::targets(snap, model.as_deref(), upstream.as_deref(), all) {
        Ok(t) => t,
        Err(e) => return bad_param(e),
    };
    let list: Vec<Value> = t.iter().map(|t| t.to_json(snap)).collect();
    json_reply(200, &json!({"targets": list}))
}

/// The index of upstream `name`.
fn upstream_index(snap: &Snapshot, name: &str) -> Option<usize> {
    snap.upstreams.iter().position(|x| x.name() == name)
}

/// The 404 for an upstream that does not exist.
fn no_upstream(name: &str) -> Response<Vec<u8>> {
    json_error(404, &format!("no upstream {name:?}"), "upstream_not_found")
}

impl AdminApp {
    /// `POST /admin/probe?model=M&upstream=U&key=ID`: one minimal call.
    async fn probe(&self, snap: &Snapshot, query: &str) -> Response<Vec<u8>> {
        let (Some(model), Some(upstream)) = (param(query, "model"), param(query, "upstream"))
        else {
            return bad_param(
                "give model= and upstream= (GET /admin/probe/targets lists them)".into(),
            );
        };
        let Some(u) = upstream_index(snap, &upstream) else {
            return no_upstream(&upstream);
        };
        if crate::listing::is_pattern(&model) {
            return bad_param(format!(
                "{model:?} is a pattern, not a model: name one model"
            ));
        }
        let target = crate::forward::probe::Target {
            model: model.into_owned(),
            upstream: u,
            key: param(query, "key").map(|k| k.into_owned()),
        };
        let v = self.prober.probe(snap, &target).await;
        self.state.flush_store();
        json_reply(200, &v)
    }
}

fn bad_param(message: String) -> Response<Vec<u8>> {
    json_reply(
        400,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "bad_request"}}),
    )
}

/// `GET /admin/usage?by=client|model|key|upstream|day&since=24h|<RFC 3339>&scope=fleet|instance`:
/// in a fleet, every instance's usage (`scope=instance`: this one's).
async fn usage_answer(query: &str) -> Response<Vec<u8>> {
    if param(query, "scope").as_deref() != Some("instance") {
        let by = param(query, "by").unwrap_or("model".into());
        let since = match param(query, "since").map(|s| parse_time("since", &s)) {
            None => 0,
            Some(Ok(ms)) => ms,
            Some(Err(e)) => return bad_param(e),
        };
        match crate::fleet::usage(&by, since).await {
            Some(Ok(v)) => return json_reply(200, &v),
            Some(Err(e)) => return bad_param(e),
            None => {}
        }
    }
    usage_here(query)
}

/// `GET /admin/cache`: the response cache's settings and counters.
fn cache_stats(snap: &Snapshot) -> Value {
    let Some(c) = &snap.config.cache else {
        return json!({"enabled": false});
    };
    let count = |r: &str| crate::metrics::CACHE.with_label_values(&[r]).get();
    let (entries, bytes) = match c.store {
        crate::config::cache::CacheStore::Memory => {
            let (e, b) = crate::cache::memory::stats();
            (Some(e), Some(b))
        }
        crate::config::cache::CacheStore::Redis => (None, None),
    };
    json!({
        "enabled": true,
        "store": format!("{:?}", c.store).to_lowercase(),
        "scope": format!("{:?}", c.scope).to_lowercase(),
        "replay": format!("{:?}", c.replay).to_lowercase(),
        "ttl": crate::config::units::fmt_duration(c.ttl),
        "models": c.models,
        "hits": count("hit"),
        "misses": count("miss"),
        "stored": count("stored"),
        "tokens_saved": crate::metrics::CACHE_TOKENS_SAVED.get(),
        "entries": entries,
        "bytes": bytes,
        "max_bytes": c.max_bytes,
    })
}

/// `POST /admin/cache/purge?model=M&client=C`: drops kept answers.
async fn cache_purge(snap: &Snapshot, query: &str) -> Response<Vec<u8>> {
    let Some(c) = &snap.config.cache else {
        return bad_param("the response cache is off (no cache: section)".into());
    };
    let (model, client) = (param(query, "model"), param(query, "client"));
    match crate::cache::purge(c, model.as_deref(), client.as_deref()).await {
        Ok(n) => {
            log::info!("admin: purged {n} cached answers");
            json_reply(200, &json!({"purged": n}))
        }
        Err(e) => json_error(503, &e, "store_unavailable"),
    }
}

/// This instance's usage (see [`usage_answer`]).
fn usage_here(query: &str) -> Response<Vec<u8>> {
    let Some(log) = crate::store::usage::log() else {
        return bad_param("usage is not recorded by this process".into());
    };
    let by = param(query, "by").unwrap_or("model".into());
    let since = match param(query, "since").map(|s| parse_time("since", &s)) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => return bad_param(e),
    };
    match log.usage(&by, since) {
        Ok(mut v) => {
            v["scope"] = "instance".into();
            if crate::fleet::degraded() == Some(true) {
                v["fleet_down"] = true.into();
            }
            json_reply(200, &v)
        }
        Err(e) => bad_param(e),
    }
}

/// Query parameter `name`'s time, or the error naming it.
fn parse_time(name: &str, value: &str) -> Result<u64, String> {
    since_ms(value).ok_or_else(|| {
        format!(
            "{name}={value:?}: give a duration such as 24h or a time such as 2026-12-01T00:00:00Z"
        )
    })
}

/// `since`: a duration back from now, or an RFC 3339 time; as ms since the epoch.
fn since_ms(s: &str) -> Option<u64> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Some(now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// `GET /admin/requests?limit=N&client=NAME&status=CODE` (newest first, no bodies).
fn requests_answer(query: &str) -> Response<Vec<u8>> {
    let Some(log) = crate::store::usage::log() else {
        return bad_param("usage is not recorded by this process".into());
    };
    let limit = match param(query, "limit").map(|l| l.parse::<u32>()) {
        None => 50,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad_param("limit: a whole number (1..=1000)".into()),
    };
    match request_filter(query) {
        Ok(f) => match log.recent(limit, &f) {
            Ok(v) => json_reply(200, &v),
            Err(e) => bad_param(e),
        },
        Err(e) => bad_param(e),
    }
}

/// `status=429|4xx|ok|errors&client=C&model=M&since=T&until=T` of `GET /admin/requests`.
fn request_filter(query: &str) -> Result<crate::store::filter::RequestFilter, String> {
    use crate::store::filter::{RequestFilter, StatusFilter};
    let time = |name: &str| {
        param(query, name)
            .filter(|s| !s.is_empty())
            .map(|s| parse_time(name, &s))
            .transpose()
    };
    let status = match param(query, "status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(StatusFilter::parse(&s).ok_or_else(|| {
            format!("status={s:?}: a code such as 429, a class such as 4xx, ok or errors")
        })?),
    };
    let text = |name: &str| {
        param(query, name)
            .filter(|s| !s.is_empty())
            .map(|s| s.into_owned())
    };
    Ok(RequestFilter {
        client: text("client"),
        model: text("model"),
        status,
        since_ms: time("since")?.unwrap_or(0),
        until_ms: time("until")?,
    })
}

/// `GET /admin/usage/series?by=model|client|key|upstream&since=7d&bucket=hour|day`.
fn usage_series_answer(query: &str) -> Response<Vec<u8>> {
    let Some(log) = crate::store::usage::log() else {
        return bad_param("usage is not recorded by this process".into());
    };
    let by = param(query, "by").unwrap_or("model".into());
    let bucket_ms = match param(query, "bucket").as_deref().unwrap_or("hour") {
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        b => return bad_param(format!("bucket={b:?}: use minute, hour or day")),
    };
    let since = match param(query, "since").map(|s| parse_time("since", &s)) {
        None => now_ms().saturating_sub(86_400_000),
        Some(Ok(ms)) => ms,
        Some(Err(e)) => return bad_param(e),
    };
    match log.usage_series(&by, since, bucket_ms) {
        Ok(v) => json_reply(200, &v),
        Err(e) => bad_param(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_check() {
        assert!(super::authorized(None, None));
        assert!(super::authorized(Some("t0k"), Some("Bearer t0k")));
        assert!(!super::authorized(Some("t0k"), Some("Bearer t0x")));
        assert!(!super::authorized(Some("t0k"), None));
    }
}
