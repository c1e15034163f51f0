//! What the dashboard and `switchyard status` read: `GET /admin/status` (the
//! gateway now), `GET /admin/series` (the last minutes, second by second),
//! and the dashboard's embedded files (`/`, `/assets/*`; no secret in them,
//! so they load without the admin token and the page asks for it).

use crate::clock::now_ms;
use crate::keys::{Availability, KeyStatus};
use crate::state::Snapshot;
use serde_json::{json, Value};

/// `/health` on both listeners: liveness, with the version, pid and uptime.
pub fn health_body() -> Vec<u8> {
    health().to_string().into_bytes()
}

fn health() -> Value {
    let mut v = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": crate::clock::uptime().as_secs(),
    });
    // still serving (on its own key state) while the shared store is down
    if let Some(store) = crate::fleet::store_state() {
        v["store"] = store.into();
        if store == "down" {
            v["degraded"] = json!(["state.redis"]);
        }
    }
    v
}

/// The Prometheus text: every metric, with each key's state as of now.
pub fn metrics_text(snap: &Snapshot) -> String {
    let now = now_ms();
    crate::metrics::clear_keys();
    for u in &snap.upstreams {
        for k in u.keys.keys() {
            let (state, until, _, _) = k.state().status(now);
            let recovery = match (state, until) {
                (KeyStatus::Active, _) => Some(0.0),
                (_, Some(t)) => Some(t.saturating_sub(now) as f64 / 1000.0),
                (_, None) => None,
            };
            crate::metrics::observe_key(u.name(), &k.short_id, state.as_str(), recovery);
        }
    }
    crate::metrics::render()
}

/// The dashboard page and its scripts, compiled into the binary.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "/assets/uplot.min.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/uplot.min.js"),
    ),
    (
        "/assets/uplot.min.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/uplot.min.css"),
    ),
];

/// The embedded file at `path` (`/dashboard` is the page too): (content type, body).
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path == "/dashboard" { "/" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, ct, body)| (ct, body))
}

/// Headers that keep an embedded page to itself: no framing, no sniffing,
/// scripts only from this listener (the playground may connect to the API
/// listener).
pub fn harden(r: &mut http::Response<Vec<u8>>) {
    let h = r.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' http: https:; frame-ancestors 'none'",
        ),
    ] {
        h.insert(name, http::HeaderValue::from_static(value));
    }
}

/// `GET /admin/status`: version, uptime, listeners, load now, upstream
/// health and key counts.
pub fn status(snap: &Snapshot) -> Value {
    let now = now_ms();
    let health = health();
    // by KeyStatus::ALL's order: active, cooling, parked
    let mut totals = [0usize; 3];
    let counts_json = |c: [usize; 3]| {
        let mut v = json!({"total": c.iter().sum::<usize>()});
        for (st, n) in KeyStatus::ALL.iter().zip(c) {
            v[st.as_str()] = n.into();
        }
        v
    };
    let upstreams: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let mut counts = [0usize; 3];
            for k in u.keys.keys() {
                let (st, _, _, _) = k.state().status(now);
                let i = KeyStatus::ALL.iter().position(|s| *s == st).unwrap_or(0);
                counts[i] += 1;
                totals[i] += 1;
            }
            let ready = u.keys.is_empty()
                || u.keys
                    .keys()
                    .iter()
                    .any(|k| k.availability("", now) == Availability::Ready);
            let view = u.health.view(now);
            json!({
                "name": u.name(),
                "health": view.state,
                "reason": view.reason,
                "keys": counts_json(counts),
                "serving": ready && view.state != "down",
            })
        })
        .collect();
    let cfg = &snap.config;
    crate::listing::want();
    let fleet = crate::fleet::degraded().map(|_| crate::fleet::view());
    let listing = snap.listing.load();
    let models: Vec<&str> = listing.pairs.iter().map(|(m, _)| m.as_str()).collect();
    json!({
        "version": health["version"],
        "pid": health["pid"],
        "uptime_seconds": health["uptime_seconds"],
        "listen": cfg.listen.iter().map(|l| json!({"addr": l.addr, "tls": l.tls.is_some()})).collect::<Vec<_>>(),
        "admin_listen": cfg.admin.listen,
        "in_flight": crate::metrics::IN_FLIGHT.get(),
        "upstream_active": crate::metrics::UPSTREAM_ACTIVE.get(),
        "queue_waiting": crate::metrics::QUEUE_WAITING.get(),
        "queue_limit": cfg.limits.queue,
        "requests_per_second": crate::series::TRAFFIC.rate(now / 1000, 10),
        "upstreams": upstreams,
        "keys": counts_json(totals),
        "models": models,
        // with state.redis: every instance of the fleet (null without one)
        "fleet": fleet,
        "store": crate::fleet::store_state(),
    })
}

/// `GET /admin/series?seconds=N` (default 300): one entry per second, oldest first.
pub fn series(seconds: Option<&str>) -> Result<Value, String> {
    let n = match seconds.map(str::parse::<usize>) {
        None => crate::series::SECONDS,
        Some(Ok(n)) if (1..=crate::series::SECONDS).contains(&n) => n,
        Some(_) => {
            return Err(format!(
                "seconds: a whole number from 1 to {}",
                crate::series::SECONDS
            ))
        }
    };
    let s = crate::series::TRAFFIC.last(now_ms() / 1000, n);
    Ok(json!({"seconds": s}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn assets_are_embedded() {
        let (ct, page) = super::asset("/").unwrap();
        assert!(ct.starts_with("text/html"));
        assert!(page.contains("/assets/uplot.min.js"));
        assert_eq!(super::asset("/dashboard").unwrap().1, page);
        assert!(super::asset("/assets/../x").is_none());
        assert!(super::series(Some("0")).is_err());
        assert!(super::series(Some("-1")).is_err());
        assert!(super::series(Some("9999")).is_err());
        assert_eq!(
            super::series(Some("5")).unwrap()["seconds"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }
}
