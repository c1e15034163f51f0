//! How a client looks to the admin API, the dashboard and itself
//! (`GET /v1/me`): its limits with what is used of them now, its quotas
//! with what is left, its spend and when it was last seen.

use super::quota;
use super::record::Tenant;
use crate::config::quota::{dollars, Unit};
use crate::config::Client;
use crate::state::Snapshot;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};

/// A client's spend: today's and this month's, in USD.
#[derive(Debug, Default, Clone, Copy)]
pub struct Spend {
    pub today: f64,
    pub month: f64,
}

impl Spend {
    /// `{"today_usd", "month_usd"}`.
    fn json(&self) -> Value {
        json!({"today_usd": self.today, "month_usd": self.month})
    }
}

/// The quotas' figures as JSON.
fn quotas_json(counters: &[Arc<quota::Counter>]) -> Vec<Value> {
    counters
        .iter()
        .map(|c| {
            let r = c.read();
            let shown = |n: u64| match r.unit {
                Unit::Tokens => json!(n),
                Unit::Usd => json!(dollars(n)),
            };
            json!({
                "per": r.per.as_str(),
                "unit": r.unit.as_str(),
                "limit": shown(r.limit),
                "used": shown(r.used),
                "reserved": shown(r.reserved),
                "left": shown(r.limit.saturating_sub(r.used.saturating_add(r.reserved))),
                "resets": crate::clock::fmt_iso(r.resets_ms),
            })
        })
        .collect()
}

/// Index of the client named `name` in the snapshot.
pub fn index_of(snap: &Snapshot, name: &str) -> Option<usize> {
    snap.config
        .clients
        .as_deref()?
        .iter()
        .position(|c| c.name == name)
}

/// What is used now of client `i`'s per-minute limits and concurrency.
fn usage_now(snap: &Snapshot, i: Option<usize>) -> Value {
    let now = crate::clock::coarse_ms();
    let Some(i) = i else {
        return json!({"rpm_used": 0, "tpm_used": 0, "in_flight": 0});
    };
    let p = &snap.clients;
    let rpm = p
        .windows
        .get(i)
        .and_then(Option::as_ref)
        .map_or(0, |w| w.count(now));
    let tpm = p
        .tokens
        .get(i)
        .and_then(Option::as_ref)
        .map_or(0, |w| w.used(now));
    let flight = p
        .slots
        .get(i)
        .and_then(Option::as_ref)
        .map_or(0, |s| s.in_use());
    json!({"rpm_used": rpm, "tpm_used": tpm, "in_flight": flight})
}

/// The admin view of a client: a config file's (`tenant` none) or a
/// run-time one (served now, or revoked).
pub fn client_view(snap: &Snapshot, name: &str, tenant: Option<&Tenant>, spend: Spend) -> Value {
    view_at(snap, index_of(snap, name), name, tenant, spend)
}

/// [`client_view`] of the snapshot's client `i` (`None`: not served, a
/// revoked tenant) named `name`.
pub fn view_at(
    snap: &Snapshot,
    i: Option<usize>,
    name: &str,
    tenant: Option<&Tenant>,
    spend: Spend,
) -> Value {
    let client: Option<Client> = i
        .and_then(|i| snap.config.clients.as_deref()?.get(i).cloned())
        .or_else(|| tenant.and_then(revoked_client));
    let Some(c) = client else {
        return json!({"name": name, "status": "unknown"});
    };
    let counters: Vec<Arc<quota::Counter>> = match i {
        Some(i) => snap.clients.quotas.get(i).cloned().unwrap_or_default(),
        None => c
            .quotas
            .iter()
            .map(|q| quota::counter(&format!("client {}", c.name), q))
            .collect(),
    };
    let now = std::time::SystemTime::now();
    let status = if tenant.is_some_and(|t| !t.active()) {
        "revoked"
    } else if c.expires.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "active"
    };
    let iso = |ms: u64| crate::clock::fmt_iso(ms);
    let last = super::seen::seen(&c.name).load(Relaxed);
    json!({
        "name": c.name,
        "source": if tenant.is_some() { "runtime" } else { "config" },
        "read_only": tenant.is_none(),
        "status": status,
        "key_hint": tenant.map(|t| t.key_hint.clone()),
        "models": c.models,
        "rpm": c.rpm,
        "tpm": c.tpm,
        "max_concurrent": c.max_concurrent,
        "expires": c.expires.map(|e| humantime::format_rfc3339_seconds(e).to_string()),
        "notes": tenant.map_or("", |t| t.notes.as_str()),
        "created": tenant.map(|t| iso(t.created_ms)),
        "revoked": tenant.and_then(|t| t.revoked_ms).map(iso),
        "last_seen": (last > 0).then(|| iso(last)),
        "usage": usage_now(snap, i),
        "quotas": quotas_json(&counters),
        "spend": spend.json(),
    })
}

/// A revoked tenant's settings as a client (for its view only).
fn revoked_client(t: &Tenant) -> Option<Client> {
    let mut live = t.clone();
    live.revoked_ms = None;
    live.client()
}

/// `GET /v1/me`: what client `i` may know of itself (nothing of others).
pub fn me(snap: &Snapshot, caller: crate::limits::Caller, spend: Spend) -> Value {
    let crate::limits::Caller::Client(i) = caller else {
        let budget = quotas_json(&snap.gateway_budget);
        return json!({"object": "client", "name": null, "models": [], "limits": {},
                      "quotas": budget, "usage": usage_now(snap, None),
                      "spend": spend.json()});
    };
    let Some(c) = snap.config.clients.as_deref().and_then(|l| l.get(i)) else {
        return json!({"object": "client", "name": null});
    };
    json!({
        "object": "client",
        "name": c.name,
        "models": c.models,
        "limits": {"rpm": c.rpm, "tpm": c.tpm, "max_concurrent": c.max_concurrent},
        "expires": c.expires.map(|e| humantime::format_rfc3339_seconds(e).to_string()),
        "usage": usage_now(snap, Some(i)),
        "quotas": quotas_json(snap.clients.quotas.get(i).map_or(&[][..], |q| q.as_slice())),
        "spend": spend.json(),
    })
}

/// Each client's spend today and this month (the fleet's when it answers).
pub async fn spends() -> HashMap<String, Spend> {
    use crate::config::quota::Period;
    let now = crate::clock::now_ms();
    let mut out: HashMap<String, Spend> = HashMap::new();
    for (since, today) in [
        (Period::Day.start(now), true),
        (Period::Month.start(now), false),
    ] {
        let rows = match crate::fleet::usage("client", since).await {
            Some(Ok(v)) => Some(v),
            // a scan of the usage log: off the async threads
            _ => tokio::task::spawn_blocking(move || {
                crate::store::usage::log().and_then(|l| l.usage("client", since).ok())
            })
            .await
            .ok()
            .flatten(),
        };
        let rows = rows.and_then(|v| v.get("rows").and_then(Value::as_array).cloned());
        for r in rows.unwrap_or_default() {
            let (Some(name), Some(cost)) = (r["client"].as_str(), r["cost_usd"].as_f64()) else {
                continue;
            };
            let s = out.entry(name.to_string()).or_default();
            if today {
                s.today = cost;
            } else {
                s.month = cost;
            }
        }
    }
    out
}

/// [`spends`] at most 5 s old: however often clients and dashboards
/// ask, the usage store is read at most once per 5 s, by one caller at a
/// time (the others take the last figures), off the async threads.
pub async fn spends_cached() -> Arc<HashMap<String, Spend>> {
    type Spends = Arc<HashMap<String, Spend>>;
    static LAST: LazyLock<Mutex<Option<(std::time::Instant, Spends)>>> =
        LazyLock::new(Default::default);
    static READING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let last = LAST.lock().clone();
    if let Some((at, s)) = &last {
        if at.elapsed() < std::time::Duration::from_secs(5) {
            return s.clone();
        }
    }
    if READING.swap(true, Relaxed) {
        return last.map(|(_, s)| s).unwrap_or_default();
    }
    let fresh = Arc::new(spends().await);
    *LAST.lock() = Some((std::time::Instant::now(), fresh.clone()));
    READING.store(false, Relaxed);
    fresh
}
