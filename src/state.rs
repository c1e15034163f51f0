//! Read-mostly shared state: one [`Snapshot`] (config + upstreams + key pools +
//! router) behind an `ArcSwap`. Each request loads it once and keeps that view.

use crate::config::{glob_match, Config, UpstreamConf, UpstreamKind};
use crate::keys::KeyPool;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a DNS answer for an upstream host is reused.
const DNS_TTL: Duration = Duration::from_secs(60);

/// Where an upstream's HTTP server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    /// Host name (SNI, DNS) or IP literal.
    pub host: String,
    pub port: u16,
    /// Host header value.
    pub host_header: String,
    /// Path prefix of the OpenAI-style API (`/v1`, `/inference`).
    pub base_path: String,
}

/// An upstream with its live key pool.
pub struct Upstream {
    pub conf: UpstreamConf,
    pub target: Target,
    pub keys: KeyPool,
    /// Idle connections of the understood lane.
    pub pool: crate::forward::pool::ConnPool,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
    /// Upstream-call counters for calls made without a key.
    pub keyless_calls: crate::metrics::CallCounters,
    pub tokens: crate::metrics::TokenCounters,
}

impl Upstream {
    pub fn name(&self) -> &str {
        &self.conf.name
    }

    /// Counts one call to this upstream in `switchyard_upstream_requests_total`.
    pub fn count_call(&self, key: Option<&crate::keys::Key>, outcome: &str) {
        match key {
            Some(k) => k.calls.inc(self.name(), &k.short_id, outcome),
            None => self.keyless_calls.inc(self.name(), "-", outcome),
        }
    }

    /// The socket address to connect to, resolving (and caching) host names.
    pub async fn addr(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.target.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.target.port));
        }
        if let Ok(guard) = self.resolved.lock() {
            if let Some((at, addr)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let mut addrs =
            tokio::net::lookup_host((self.target.host.as_str(), self.target.port)).await?;
        let addr = addrs.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "host name has no address")
        })?;
        if let Ok(mut guard) = self.resolved.lock() {
            *guard = Some((Instant::now(), addr));
        }
        Ok(addr)
    }
}

/// One candidate for serving a model: which upstream, under which model name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route<'a> {
    pub upstream: usize,
    pub upstream_model: &'a str,
}

/// Everything a request needs, immutable once built.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Prebuilt `GET /v1/models` body.
    pub models_body: Bytes,
    pub listed_models: Vec<String>,
}

impl Snapshot {
    /// Builds the runtime view of `config`. `demo_addr` is where the built-in demo
    /// server listens (required when a `kind: demo` upstream exists).
    pub fn build(config: Config, demo_addr: Option<SocketAddr>) -> Result<Snapshot, String> {
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            let target = match &u.kind {
                UpstreamKind::Http(b) => Target {
                    tls: b.tls,
                    host: b.host.clone(),
                    port: b.port,
                    host_header: b.host_header(),
                    base_path: b.path.clone(),
                },
                UpstreamKind::Demo => {
                    let addr = demo_addr.ok_or("demo upstream server is not running")?;
                    Target {
                        tls: false,
                        host: addr.ip().to_string(),
                        port: addr.port(),
                        host_header: addr.to_string(),
                        base_path: "/v1".into(),
                    }
                }
            };
            let keys = KeyPool::new(
                u.key_strategy,
                u.keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        Arc::new(crate::keys::Key::new(
                            &u.name,
                            i + 1,
                            k.secret.clone(),
                            k.weight,
                        ))
                    })
                    .collect(),
            );
            upstreams.push(Arc::new(Upstream {
                conf: u.clone(),
                target,
                keys,
                pool: crate::forward::pool::ConnPool::new(
                    config.server.keepalive_pool_size,
                    crate::forward::POOL_IDLE,
                ),
                resolved: Mutex::new(None),
                keyless_calls: Default::default(),
                tokens: Default::default(),
            }));
        }
        let listed = config.listed_models();
        let data: Vec<serde_json::Value> = listed
            .iter()
            .map(|(id, up)| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": up}))
            .collect();
        let models_body =
            Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string());
        Ok(Snapshot {
            listed_models: listed.into_iter().map(|(m, _)| m).collect(),
            config: Arc::new(config),
            upstreams,
            models_body,
        })
    }

    /// Upstreams that serve `model`, in config order: a `model_map` entry wins over
    /// a glob match and renames the model.
    pub fn routes<'a>(&'a self, model: &'a str) -> impl Iterator<Item = Route<'a>> + 'a {
        self.upstreams.iter().enumerate().filter_map(move |(i, u)| {
            u.conf.upstream_model(model).map(|m| Route {
                upstream: i,
                upstream_model: m,
            })
        })
    }

    /// The first upstream that serves `model` (no allocation: for checks).
    pub fn first_upstream_for(&self, model: &str) -> Option<&Arc<Upstream>> {
        self.upstreams
            .iter()
            .find(|u| u.conf.upstream_model(model).is_some())
    }

    /// The model, then its fallbacks (transitively, each once, at most 8).
    pub fn model_chain<'a>(&'a self, model: &'a str) -> smallvec::SmallVec<[&'a str; 4]> {
        let mut chain = smallvec::SmallVec::<[&str; 4]>::new();
        chain.push(model);
        let mut i = 0;
        while i < chain.len() && chain.len() < 8 {
            if let Some(next) = self.config.fallbacks.get(chain[i]) {
                for m in next {
                    if !chain.contains(&m.as_str()) && chain.len() < 8 {
                        chain.push(m.as_str());
                    }
                }
            }
            i += 1;
        }
        chain
    }

    /// Which keys block `models` and until when, for a 429's message.
    pub fn exhaustion_message(&self, models: &[&str], now: u64) -> String {
        let mut parts = Vec::new();
        for model in models {
            let mut keys = Vec::new();
            for route in self.routes(model) {
                let up = &self.upstreams[route.upstream];
                for k in up.keys.keys() {
                    match k.availability(route.upstream_model, now) {
                        crate::keys::Availability::CoolingUntil(u) => {
                            let reason = k.state().reason.unwrap_or_default();
                            keys.push(format!(
                                "{} until {} UTC ({reason})",
                                k.short_id,
                                crate::keys::signals::fmt_clock(u)
                            ))
                        }
                        crate::keys::Availability::Parked(Some(u)) => keys.push(format!(
                            "{} parked until {} UTC",
                            k.short_id,
                            crate::keys::signals::fmt_clock(u)
                        )),
                        crate::keys::Availability::Parked(None) => {
                            keys.push(format!("{} disabled", k.short_id))
                        }
                        crate::keys::Availability::Ready => {}
                    }
                }
            }
            if !keys.is_empty() {
                parts.push(format!("model {model}: {}", keys.join(", ")));
            }
        }
        format!(
            "Every key that serves this request is rate limited. {}.",
            parts.join("; ")
        )
    }

    /// The error when no key could even be tried (all parked, none recovering).
    pub fn unavailable_error(&self, models: &[&str], now: u64) -> crate::error::GatewayError {
        let msg = self
            .exhaustion_message(models, now)
            .replace("is rate limited", "is disabled or exhausted");
        crate::error::GatewayError::NoKeys { message: msg }
    }

    /// The upstream for an opaque-lane path: the first whose `paths` match, else the first.
    pub fn opaque_upstream(&self, path: &str) -> Option<usize> {
        self.upstreams
            .iter()
            .position(|u| u.conf.paths.iter().any(|p| glob_match(p, path)))
            .or(if self.upstreams.is_empty() {
                None
            } else {
                Some(0)
            })
    }
}

/// Process-wide state: the current snapshot, where it came from, the demo
/// server's address and the state store.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    pub demo_addr: std::sync::OnceLock<SocketAddr>,
    pub config_path: Option<std::path::PathBuf>,
    pub store: Option<Arc<crate::store::Store>>,
    /// Serializes reloads (never held across an `.await`).
    reload_lock: Mutex<()>,
}

impl State {
    pub fn new(snapshot: Snapshot, demo_addr: Option<SocketAddr>) -> State {
        let demo = std::sync::OnceLock::new();
        if let Some(a) = demo_addr {
            let _ = demo.set(a);
        }
        State {
            snapshot: ArcSwap::from_pointee(snapshot),
            demo_addr: demo,
            config_path: None,
            store: None,
            reload_lock: Mutex::new(()),
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot in one store.
    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Applies persisted key state to the current snapshot's keys.
    pub fn restore_from_store(&self) {
        let Some(store) = &self.store else { return };
        let saved = store.load();
        let snap = self.load();
        let mut restored = 0;
        for up in &snap.upstreams {
            for k in up.keys.keys() {
                if let Some(s) = saved.get(&(k.upstream.clone(), k.fingerprint.clone())) {
                    k.restore(s);
                    k.dirty.store(false, std::sync::atomic::Ordering::Release);
                    restored += 1;
                }
            }
        }
        if restored > 0 {
            log::info!("state store: restored the state of {restored} key(s)");
        }
    }

    /// Re-reads the config file, validates it and swaps it in. Keys that still
    /// exist (same upstream and secret) keep their state. On error the old config
    /// keeps serving and the errors are returned.
    pub fn reload(&self) -> Result<String, crate::config::ConfigErrors> {
        let _guard = self.reload_lock.lock();
        let path = self.config_path.clone().ok_or_else(|| {
            crate::config::ConfigErrors(vec!["no config file to reload from".into()])
        })?;
        let cfg = Config::load(&path)?;
        let old = self.load();
        let mut notes = Vec::new();
        if cfg.listen != old.config.listen || cfg.admin.listen != old.config.admin.listen {
            notes.push("listen addresses changed: they take effect after a restart".to_string());
        }
        if cfg.server.threads != old.config.server.threads {
            notes.push("server.threads changed: takes effect after a restart".to_string());
        }
        let needs_demo = cfg.upstreams.iter().any(|u| u.kind == UpstreamKind::Demo);
        if needs_demo && self.demo_addr.get().is_none() {
            let addr = crate::demo::start().map_err(|e| {
                crate::config::ConfigErrors(vec![format!("cannot start the demo upstream: {e}")])
            })?;
            let _ = self.demo_addr.set(addr);
        }
        let snap = Snapshot::build(cfg, self.demo_addr.get().copied())
            .map_err(|e| crate::config::ConfigErrors(vec![e]))?;
        let mut kept = 0;
        for up in &snap.upstreams {
            for k in up.keys.keys() {
                let prev = old
                    .upstreams
                    .iter()
                    .filter(|u| u.name() == up.name())
                    .flat_map(|u| u.keys.keys().iter())
                    .find(|o| o.fingerprint == k.fingerprint);
                if let Some(o) = prev {
                    k.restore(&o.state());
                    kept += 1;
                }
            }
        }
        let total: usize = snap.upstreams.iter().map(|u| u.keys.keys().len()).sum();
        self.store(snap);
        let mut msg = format!(
            "config reloaded from {}: {} upstream(s), {total} key(s), {kept} kept their state",
            path.display(),
            self.load().upstreams.len()
        );
        for n in notes {
            msg.push_str("; ");
            msg.push_str(&n);
        }
        log::info!("{msg}");
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_order_and_model_map() {
        let cfg = Config::from_yaml(
            "upstreams:\n - {name: a, base_url: 'http://127.0.0.1:1/v1', models: ['gpt-*'], model_map: {fast: gpt-4o-mini}}\n - {name: b, base_url: 'http://127.0.0.1:2', paths: ['/v1/files*']}\n",
            &|_| None,
        )
        .unwrap();
        let s = Snapshot::build(cfg, None).unwrap();
        assert_eq!(
            s.routes("gpt-4o").collect::<Vec<_>>(),
            vec![
                Route {
                    upstream: 0,
                    upstream_model: "gpt-4o"
                },
                Route {
                    upstream: 1,
                    upstream_model: "gpt-4o"
                }
            ]
        );
        assert_eq!(
            s.routes("fast").next(),
            Some(Route {
                upstream: 0,
                upstream_model: "gpt-4o-mini"
            })
        );
        assert_eq!(s.routes("llama").count(), 1);
        assert_eq!(s.opaque_upstream("/v1/files/abc"), Some(1));
        assert_eq!(s.opaque_upstream("/v1/batches"), Some(0));
        assert_eq!(s.listed_models, vec!["fast".to_string()]);
    }
}
