//! `switchyard probe`: one minimal chat call to one model on one upstream with
//! one key, outside the attempt plan (no retry, no other key), judged as a
//! real call is: a 429 cools the key until the time the provider named, a
//! rejected key is parked. A key already cooling or parked is reported, not
//! called.

use super::attempt::Connector;
use super::call::Call;
use super::plan::Candidate;
use crate::clock::{fmt_iso, now_ms};
use crate::keys::signals::{self, AnswerKind};
use crate::keys::{Availability, Key};
use crate::metrics::CallOutcome;
use crate::state::{Route, Snapshot};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a probe waits for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What to probe: (client-facing model, upstream index, key id or none).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub model: String,
    pub upstream: usize,
    pub key: Option<String>,
}

impl Target {
    pub fn to_json(&self, snap: &Snapshot) -> Value {
        json!({"model": self.model, "upstream": snap.upstreams[self.upstream].name(), "key": self.key})
    }
}

/// The probes `switchyard probe` runs: every key of every upstream with a
/// model that upstream serves (default; globs made concrete by
/// [`crate::listing`]); `model` on each upstream serving it, every key; or
/// (`all`) every model each upstream lists, with its first key. `upstream`
/// narrows to one upstream. A glob is refused: it names no model.
pub fn targets(
    snap: &Snapshot,
    model: Option<&str>,
    upstream: Option<&str>,
    all: bool,
) -> Result<Vec<Target>, String> {
    if let Some(m) = model.filter(|m| crate::listing::is_pattern(m)) {
        return Err(format!(
            "{m:?} is a pattern, not a model: name one model (see GET /v1/models)"
        ));
    }
    let keys_of = |u: usize, every: bool| -> Vec<Option<String>> {
        let pool = &snap.upstreams[u].keys;
        if pool.is_empty() {
            return vec![None];
        }
        let ids = pool.keys().iter().map(|k| Some(k.short_id.clone()));
        if every {
            ids.collect()
        } else {
            ids.take(1).collect()
        }
    };
    let listing = snap.listing.load();
    let mut out = Vec::new();
    for u in 0..snap.upstreams.len() {
        if upstream.is_some_and(|n| snap.upstreams[u].name() != n) {
            continue;
        }
        let models: Vec<&str> = match model {
            Some(m) => snap
                .routes(m)
                .any(|r| r.upstream == u)
                .then_some(m)
                .into_iter()
                .collect(),
            None if all => listing.per_upstream[u].iter().map(String::as_str).collect(),
            None => listing.probe_model(&snap.config, u).into_iter().collect(),
        };
        for m in models {
            for key in keys_of(u, model.is_some() || !all) {
                out.push(Target {
                    model: m.to_string(),
                    upstream: u,
                    key,
                });
            }
        }
    }
    Ok(out)
}

/// Runs one probe and says how it went: `result` is `ok`, `rate_limited`
/// (with `until`), `parked`, `rejected` (the key was refused and is now
/// parked), `error` or `unreachable`.
pub async fn probe(connector: &Connector, snap: &Snapshot, t: &Target) -> Value {
    let up = &snap.upstreams[t.upstream];
    let mut out = json!({"model": t.model, "upstream": up.name(), "key": Value::Null});
    let key: Option<Arc<Key>> = match &t.key {
        None => None,
        Some(id) => match up.keys.find(id) {
            Some(k) => Some(k.clone()),
            None => {
                out["result"] = "error".into();
                out["message"] = format!("no key {id} on {}", up.name()).into();
                return out;
            }
        },
    };
    if let Some(k) = &key {
        out["key"] = k.id.clone().into();
        match k.availability("", now_ms()) {
            Availability::Ready => {}
            Availability::CoolingUntil(u) => {
                out["result"] = "rate_limited".into();
                out["until"] = fmt_iso(u).into();
                out["message"] = "cooling (not called)".into();
                return out;
            }
            Availability::Parked(until) => {
                out["result"] = "parked".into();
                out["until"] = until.map(fmt_iso).into();
                out["message"] = k.state().reason.unwrap_or_else(|| "parked".into()).into();
                return out;
            }
        }
    }
    let Some(route) = snap.routes(&t.model).find(|r| r.upstream == t.upstream) else {
        out["result"] = "error".into();
        out["message"] = format!("{} does not serve {}", up.name(), t.model).into();
        return out;
    };
    let started = Instant::now();
    let mut answer = call(connector, snap, route, &t.model, key.clone(), "max_tokens").await;
    if let Ok((400, body, _)) = &answer {
        if body.contains("max_completion_tokens") {
            // a reasoning model: it takes only the newer name
            answer = call(
                connector,
                snap,
                route,
                &t.model,
                key.clone(),
                "max_completion_tokens",
            )
            .await;
        }
    }
    out["latency_ms"] = ((started.elapsed().as_secs_f64() * 1e4).round() / 10.0).into();
    let (status, body, limits) = match answer {
        Ok(a) => a,
        Err((outcome, e)) => {
            up.count_call(key.as_deref(), outcome);
            out["result"] = "unreachable".into();
            out["message"] = e.into();
            return out;
        }
    };
    up.count_call(key.as_deref(), CallOutcome::from_status(status));
    out["status"] = status.into();
    if (200..300).contains(&status) {
        out["result"] = "ok".into();
        return out;
    }
    out["message"] = error_message(&body).into();
    match (signals::classify(status, &body), &key) {
        (AnswerKind::CoolDown, Some(k)) => {
            let cooled = k.record_rate_limit(&limits, &body, route.upstream_model);
            let mut note = cooled.note;
            note.text.insert_str(0, "probe: ");
            note.log();
            out["result"] = "rate_limited".into();
            out["until"] = fmt_iso(cooled.until_ms).into();
        }
        (AnswerKind::Park { reason } | AnswerKind::AuthRejected { reason, .. }, Some(k)) => {
            let mut note = k.record_park(&reason);
            note.text.insert_str(0, "probe: ");
            note.log();
            out["result"] = "rejected".into();
        }
        (AnswerKind::CoolDown, None) => out["result"] = "rate_limited".into(),
        _ => out["result"] = "error".into(),
    }
    out
}

/// The most of a `GET /models` answer read: 4 MiB (thousands of models).
const MAX_LIST_BODY: usize = 4 << 20;

/// The longest a key's check (see [`key_refused`]) waits for its answer.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `cand`'s upstream refuses `cand`'s key on its own: one
/// `GET {base}/models` with it (free, and needs no model, file or
/// organization the refused request named). `Some(true)`: 401/403;
/// `Some(false)`: answered; `None`: no answer or an upstream without
/// `/models` (no evidence either way).
pub async fn key_refused(
    connector: &Connector,
    cand: &Candidate<'_>,
    t: &crate::config::Timeouts,
) -> Option<bool> {
    match get_models(connector, cand, t).await?.0 {
        401 | 403 => Some(true),
        200..=299 => Some(false),
        _ => None,
    }
}

/// One `GET {base}/models` with `cand`'s key: the status and body, or
/// `None` without an answer in [`KEY_CHECK_TIMEOUT`].
pub async fn get_models(
    connector: &Connector,
    cand: &Candidate<'_>,
    t: &crate::config::Timeouts,
) -> Option<(u16, bytes::Bytes)> {
    let call = Call {
        method: http::Method::GET,
        suffix: "/models".into(),
        api: crate::routes::Api::Generic,
        content_type: "application/json".into(),
        pinned: None,
        query: None,
        body: bytes::Bytes::new(),
        peek: Default::default(),
        // as the route names it: no edit of the (empty) body
        model: cand.route.upstream_model.to_string(),
        headers: Vec::new(),
        estimate: Default::default(),
        anthropic: false,
        affinity: None,
    };
    let mut timeouts = *t;
    timeouts.first_byte = timeouts.first_byte.min(KEY_CHECK_TIMEOUT);
    timeouts.idle = timeouts.idle.min(KEY_CHECK_TIMEOUT);
    let deadline = Instant::now() + KEY_CHECK_TIMEOUT;
    let attempt = connector.attempt(cand, &call, &timeouts, deadline, None);
    let mut answer = tokio::time::timeout(KEY_CHECK_TIMEOUT, attempt)
        .await
        .ok()?
        .ok()?;
    let status = answer.status();
    // a model list, or the few bytes of an error: a larger answer is not read
    let body = answer
        .read_at_most(MAX_LIST_BODY, deadline, &timeouts)
        .await;
    answer.release().await;
    Some((status, body.unwrap_or_default()))
}

/// An error answer's `error.message`, else its first 200 characters.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// One call: (status, body, the answer's rate-limit signals), or the outcome
/// label and why there was no answer.
async fn call(
    connector: &Connector,
    snap: &Snapshot,
    route: Route<'_>,
    model: &str,
    key: Option<Arc<Key>>,
    limit_field: &str,
) -> Result<(u16, String, signals::Limits), (CallOutcome, String)> {
    let up = &snap.upstreams[route.upstream];
    // an embedding model takes no chat: probe it with its own endpoint
    let embed = [model, route.upstream_model]
        .iter()
        .any(|m| m.to_ascii_lowercase().contains("embed"));
    let (suffix, api, body) = if embed {
        (
            "/embeddings",
            crate::routes::Api::Other,
            json!({"model": model, "input": "ping"}),
        )
    } else {
        (
            "/chat/completions",
            crate::routes::Api::Chat,
            json!({"model": model, "messages": [{"role": "user", "content": "ping"}], limit_field: 1}),
        )
    };
    let bytes = bytes::Bytes::from(body.to_string());
    let peek = serde_json::from_slice(&bytes).unwrap_or_default();
    let call = Call {
        method: http::Method::POST,
        suffix: suffix.into(),
        api,
        content_type: "application/json".into(),
        pinned: None,
        query: None,
        body: bytes,
        peek,
        model: model.to_string(),
        headers: Vec::new(),
        estimate: Default::default(),
        anthropic: false,
        affinity: None,
    };
    let cand = Candidate {
        model,
        route,
        upstream: up,
        key,
        charge: None,
    };
    let mut timeouts = snap.config.timeouts;
    timeouts.first_byte = timeouts.first_byte.min(PROBE_TIMEOUT);
    timeouts.idle = timeouts.idle.min(PROBE_TIMEOUT);
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let attempt = connector.attempt(&cand, &call, &timeouts, deadline, None);
    let mut answer = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Err(_) => return Err((CallOutcome::Timeout, "no answer in time".into())),
        Ok(Err(e @ crate::error::GatewayError::UpstreamTimeout { .. })) => {
            return Err((CallOutcome::Timeout, e.message()))
        }
        Ok(Err(e)) => return Err((CallOutcome::ConnectError, e.message())),
        Ok(Ok(a)) => a,
    };
    let status = answer.status();
    let body = answer
        .read_all(deadline, &timeouts)
        .await
        .map_err(|e| (CallOutcome::ConnectError, e.message()))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let limits = signals::read_limits(
        |n| answer.header_value(n),
        &text,
        std::time::SystemTime::now(),
    );
    answer.release().await;
    Ok((status, text, limits))
}
