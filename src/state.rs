//! Read-mostly shared state: one [`Snapshot`] (config + upstreams + key pools +
//! router) behind an `ArcSwap`. Each request loads it once and keeps that view.

use crate::config::{glob_match, Config, ConfigErrors, UpstreamKind};
use crate::keys::{Availability, Key};
use crate::store::Store;
use crate::upstream::{Target, Upstream};
use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("demo upstream server is not running")]
    DemoNotRunning,
    #[error("upstreams.{upstream}: {source}")]
    Ca {
        upstream: String,
        source: crate::upstream::CaFileError,
    },
}

/// One candidate for serving a model: which upstream, under which model name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route<'a> {
    pub upstream: usize,
    pub upstream_model: &'a str,
}

/// The client name's number (`store::names`) of a request without a client
/// key (`-`).
pub fn no_client() -> u32 {
    static DASH: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *DASH.get_or_init(|| crate::store::names::id("-"))
}

/// Set when a new process took over (graceful upgrade): it owns the key
/// state in the store from then on.
static KEY_STATE_HANDED_OVER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// This process no longer writes key state to the store (after its last
/// flush on SIGQUIT): what it learns while draining would overwrite the
/// new process's.
pub fn stop_writing_key_state() {
    KEY_STATE_HANDED_OVER.store(true, std::sync::atomic::Ordering::Release);
}

/// Runs `task` for the life of the process on a thread of its own (`name`)
/// with a single-threaded runtime; `what` names it in the log if it cannot start.
pub fn spawn_background(
    name: &str,
    what: &'static str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(task),
                Err(e) => log::error!("{what}: cannot start their runtime: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("{what}: cannot start their thread: {e}");
    }
}

/// Everything a request needs, immutable once built.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Concrete model names of the config (metric labels).
    pub listed_models: Vec<String>,
    /// What `GET /v1/models`, 404s and probes list (globs made concrete;
    /// rebuilt when an upstream announces its models).
    pub listing: ArcSwap<crate::listing::Listing>,
    /// Weighted selections (`pingora-load-balancing`) by the set of upstreams
    /// serving a model (a bit per upstream index), built on first use.
    balancers: parking_lot::RwLock<std::collections::HashMap<u64, Arc<Balancer>>>,
    /// Unique per snapshot built in this process (caches keyed by what a
    /// snapshot holds use it to tell snapshots apart).
    pub generation: u64,
    /// Each client's limits and counters, by client index.
    pub clients: crate::limits::parts::ClientParts,
    /// The gateway-wide `limits.rpm` window.
    pub gateway_window: Option<Arc<crate::limits::window::RequestWindow>>,
    /// The gateway-wide `limits.budget` quotas.
    pub gateway_budget: Vec<Arc<crate::tenants::quota::Counter>>,
    /// `limits.quota_warn_at`.
    pub warn_at: Arc<[f64]>,
    /// The gateway-wide `limits.tpm` window.
    pub gateway_tokens: Option<Arc<crate::limits::tokens::TokenWindow>>,
    /// Some `tpm` limit is set (requests' output limits are then read too).
    pub meters_tokens: bool,
    /// The gateway-wide `limits.max_concurrent` gate.
    pub gateway_gate: Option<Arc<crate::limits::gate::Gate>>,
}

/// A number no other snapshot of this process has.
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Weighted round robin over upstreams; each backend's port is its upstream index + 1.
type Balancer = pingora::lb::selection::RoundRobin;

impl Snapshot {
    /// Builds the runtime view of `config`. `demo_addr` is where the built-in demo
    /// server listens (required when a `kind: demo` upstream exists).
    pub fn build(config: Config, demo_addr: Option<SocketAddr>) -> Result<Snapshot, SnapshotError> {
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            let target = Target::of(u, demo_addr).ok_or(SnapshotError::DemoNotRunning)?;
            let mut up = Upstream::new(u.clone(), target).map_err(|source| SnapshotError::Ca {
                upstream: u.name.clone(),
                source,
            })?;
            up.limits = crate::upstream::Limits::of(u, config.limits.model_min_interval);
            upstreams.push(Arc::new(up));
        }
        let mut secrets: Vec<(String, String)> = upstreams
            .iter()
            .flat_map(|u| u.keys.keys().iter())
            .map(|k| (k.secret().to_string(), k.id.clone()))
            .collect();
        if let Some(t) = &config.admin.token {
            secrets.push((t.clone(), "[admin token]".into()));
        }
        if let Some(p) = config.redis.as_ref().and_then(|r| r.password()) {
            secrets.push((p, "[redis password]".into()));
        }
        crate::logging::set_secrets(secrets);
        let listed = config.listed_models();
        let listing = ArcSwap::from_pointee(crate::listing::Listing::build(&config));
        let clients = crate::limits::parts::ClientParts::of(&config);
        let gateway_window = config.limits.rpm.map(crate::limits::window::for_gateway);
        let gateway_tokens = config
            .limits
            .tpm
            .map(|t| crate::limits::tokens::named("gateway", t));
        let gateway_gate = config.limits.max_concurrent.map(|m| {
            crate::limits::gate::named("limits.max_concurrent", "limits.max_concurrent", m)
        });
        let gateway_budget = config
            .limits
            .budget
            .iter()
            .map(|q| crate::tenants::quota::counter("gateway", q))
            .collect();
        Ok(Snapshot {
            meters_tokens: crate::limits::parts::meters_tokens(&config),
            clients,
            gateway_window,
            gateway_tokens,
            gateway_gate,
            gateway_budget,
            warn_at: config.limits.quota_warn_at.clone().into(),
            balancers: Default::default(),
            generation: next_generation(),
            listed_models: listed.into_iter().map(|(m, _)| m).collect(),
            listing,
            config: Arc::new(config),
            upstreams,
        })
    }

    /// This snapshot with `clients` in place of its clients (the config
    /// file's and the run-time ones): the same upstreams, keys and listing.
    pub fn with_clients(&self, clients: Option<Vec<crate::config::Client>>) -> Snapshot {
        let mut config = (*self.config).clone();
        config.set_clients(clients);
        Snapshot {
            meters_tokens: crate::limits::parts::meters_tokens(&config),
            clients: crate::limits::parts::ClientParts::of(&config),
            config: Arc::new(config),
            upstreams: self.upstreams.clone(),
            listed_models: self.listed_models.clone(),
            listing: ArcSwap::new(self.listing.load_full()),
            balancers: Default::default(),
            generation: next_generation(),
            gateway_window: self.gateway_window.clone(),
            gateway_budget: self.gateway_budget.clone(),
            warn_at: self.warn_at.clone(),
            gateway_tokens: self.gateway_tokens.clone(),
            gateway_gate: self.gateway_gate.clone(),
        }
    }

    /// `model` as a metric label: a listed (configured) model, a catalogued
    /// name, else `other`, so labels stay a bounded set whatever clients send.
    /// The string returned is always the snapshot's own (or a literal), so
    /// its address identifies the label within the snapshot.
    pub fn metric_model(&self, model: &str) -> &str {
        if let Some(m) = self.listed_models.iter().find(|m| *m == model) {
            return m;
        }
        self.config.catalog.known_name(model).unwrap_or("other")
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

    /// The routes of `model` in the order to try them: the first chosen by
    /// weight (`upstreams[].weight`, weighted round robin), the others in
    /// config order behind it (the failover order).
    pub fn balanced_routes<'a>(&'a self, model: &'a str) -> smallvec::SmallVec<[Route<'a>; 4]> {
        use pingora::lb::selection::{BackendIter, BackendSelection};
        let mut routes: smallvec::SmallVec<[Route<'a>; 4]> = self.routes(model).collect();
        if routes.len() < 2 || self.upstreams.len() > 64 {
            return routes;
        }
        let mask = routes.iter().fold(0u64, |m, r| m | 1 << r.upstream);
        let cached = self.balancers.read().get(&mask).cloned();
        let balancer = match cached {
            Some(b) => b,
            None => {
                let backends: std::collections::BTreeSet<pingora::lb::Backend> = routes
                    .iter()
                    .filter_map(|r| {
                        let weight = self.upstreams[r.upstream].conf.weight as usize;
                        pingora::lb::Backend::new_with_weight(
                            &format!("127.0.0.1:{}", r.upstream + 1),
                            weight,
                        )
                        .ok()
                    })
                    .collect();
                let b = Arc::new(Balancer::build(&backends));
                self.balancers.write().insert(mask, b.clone());
                b
            }
        };
        let first = balancer
            .iter(b"")
            .next()
            .and_then(|b| b.addr.as_inet().map(|a| usize::from(a.port()) - 1));
        if let Some(pos) = first.and_then(|i| routes.iter().position(|r| r.upstream == i)) {
            routes[..=pos].rotate_right(1);
        }
        routes
    }

    /// The 404 for a model no upstream serves, naming some that are (the
    /// upstreams' own lists are wanted from then on).
    pub fn model_not_found(&self, model: &str) -> crate::error::GatewayError {
        crate::listing::want();
        crate::error::GatewayError::ModelNotFound {
            model: model.to_string(),
            available: self.listing.load().available(),
        }
    }

    /// The `GET /v1/models` body with only the models `keep` accepts.
    pub fn models_body_for(&self, keep: impl Fn(&str) -> bool) -> Bytes {
        let listing = self.listing.load();
        crate::listing::models_list(&self.config, listing.pairs.iter().filter(|(m, _)| keep(m)))
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
                        Availability::CoolingUntil(u) => {
                            let reason = k.state().reason.unwrap_or_default();
                            keys.push(format!(
                                "{} until {} UTC ({reason})",
                                k.short_id,
                                crate::clock::fmt_clock(u)
                            ))
                        }
                        Availability::Parked(Some(u)) => keys.push(format!(
                            "{} parked until {} UTC",
                            k.short_id,
                            crate::clock::fmt_clock(u)
                        )),
                        Availability::Parked(None) => keys.push(format!("{} disabled", k.short_id)),
                        Availability::Ready => {}
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
    pub store: Option<Arc<Store>>,
    /// Serializes reloads (never held across an `.await`).
    reload_lock: Mutex<()>,
    /// The run-time clients (`tenants`).
    pub tenants: crate::tenants::Registry,
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
            tenants: Default::default(),
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

    /// Opens the tenant store (`state.path/tenants.db`, or in memory) and
    /// serves the run-time clients it holds.
    pub fn open_tenants(&self) {
        let dir = self.load().config.state_path.clone();
        match crate::tenants::db::Db::open(dir.as_deref()) {
            Ok(db) => {
                match db.load() {
                    Ok(list) => {
                        // none: the snapshot stays as built (no rebuild at start)
                        if !list.is_empty() {
                            log::info!(
                                "clients: {} run-time client(s) read from the tenant store",
                                list.len()
                            );
                            self.set_tenants(list);
                        }
                    }
                    Err(e) => log::error!("tenant store: cannot read it: {e}"),
                }
                let _ = self.tenants.db.set(db);
            }
            Err(e) => {
                log::error!("tenant store: cannot open it ({e}); run-time clients cannot be made")
            }
        }
        // the config file's quotas, when no tenant list was served
        self.seed_quotas();
    }

    /// Serves `list` as the run-time clients (next to the config file's).
    pub fn set_tenants(&self, list: Vec<crate::tenants::Tenant>) {
        let _guard = self.reload_lock.lock();
        let snap = self.load();
        let clients = crate::tenants::merged(snap.config.clients.as_deref(), &list);
        self.tenants.set(list);
        self.store(snap.with_clients(clients));
        self.seed_quotas();
    }

    /// Counts what new quota counters' periods used before they were made
    /// (one instance; a fleet's counts live in its store).
    fn seed_quotas(&self) {
        let snap = self.load();
        if snap.config.redis.is_some() {
            return;
        }
        let clients = snap.config.clients.as_deref().unwrap_or_default();
        let mut owned: Vec<(Option<&str>, &Arc<crate::tenants::quota::Counter>)> = clients
            .iter()
            .zip(&snap.clients.quotas)
            .flat_map(|(c, qs)| qs.iter().map(move |q| (Some(c.name.as_str()), q)))
            .collect();
        owned.extend(snap.gateway_budget.iter().map(|q| (None, q)));
        crate::tenants::quota::seed(&owned);
    }

    /// The fleet's run-time clients as of its `version`, read from its
    /// store: served (unless a newer version is already), and kept in the
    /// local store for a restart while the fleet's is down.
    pub fn tenants_from_fleet(&self, list: Vec<crate::tenants::Tenant>, version: u64) {
        let _one_at_a_time = self.tenants.changing.lock();
        if !self.tenants.newer(version) || *self.tenants.list() == list {
            return;
        }
        if let Some(db) = self.tenants.db.get() {
            if let Err(e) = db.replace(&list) {
                log::warn!("tenant store: cannot keep the fleet's clients: {e}");
            }
        }
        self.set_tenants(list);
    }

    /// Every key of the current snapshot.
    fn keys(&self) -> Vec<Arc<Key>> {
        let snap = self.load();
        snap.upstreams
            .iter()
            .flat_map(|u| u.keys.keys().iter().cloned())
            .collect()
    }

    /// Applies persisted key state to the current snapshot's keys.
    pub fn restore_from_store(&self) {
        let Some(store) = &self.store else { return };
        let saved = match store.load() {
            Ok(s) => s,
            Err(e) => {
                log::error!("state store: could not read key state: {e}");
                return;
            }
        };
        let mut restored = 0;
        for k in self.keys() {
            if let Some(s) = saved.get(&(k.upstream.clone(), k.fingerprint.clone())) {
                k.restore(s);
                k.mark_clean();
                restored += 1;
            }
        }
        if restored > 0 {
            log::info!("state store: restored the state of {restored} key(s)");
        }
    }

    /// Writes the state of every key that changed since the last flush (no-op
    /// without a store, or once [`stop_writing_key_state`] was called). On
    /// failure the keys stay marked and the next flush retries.
    pub fn flush_store(&self) {
        if KEY_STATE_HANDED_OVER.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(store) = &self.store {
            store.flush(&self.keys());
        }
    }

    /// Flushes key state every 500 ms on a background thread, for the life of the process.
    pub fn spawn_flusher(self: &Arc<State>) {
        if self.store.is_none() {
            return;
        }
        let state = self.clone();
        let spawned = std::thread::Builder::new()
            .name("switchyard-store".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                state.flush_store();
            });
        if let Err(e) = spawned {
            log::error!("state store: cannot start the writer thread: {e}");
        }
    }

    /// Runs the active health checks (`upstreams[].health.path`) on a
    /// background thread, each upstream every `health.interval`, for the life
    /// of the process (the current snapshot's upstreams, so reloads count).
    pub fn spawn_health_checks(self: &Arc<State>) {
        let state = self.clone();
        spawn_background("switchyard-health", "health checks", async move {
            let mut next: std::collections::HashMap<String, std::time::Instant> =
                Default::default();
            loop {
                let snap = state.load();
                let now = std::time::Instant::now();
                for up in snap
                    .upstreams
                    .iter()
                    .filter(|u| u.conf.health.path.is_some())
                {
                    if next.get(up.name()).is_some_and(|t| *t > now) {
                        continue;
                    }
                    let interval = up.conf.health.interval;
                    next.insert(up.name().to_string(), now + interval);
                    let timeout = interval.min(
                        snap.config
                            .timeouts
                            .connect
                            .max(std::time::Duration::from_secs(1)),
                    );
                    let up = up.clone();
                    tokio::spawn(async move { up.check_health(timeout).await });
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
    }

    /// Re-reads the config file, validates it and swaps it in. Keys that still
    /// exist (same upstream and secret) keep their state. On error the old config
    /// keeps serving and the errors are returned.
    pub fn reload(&self) -> Result<String, ConfigErrors> {
        let _guard = self.reload_lock.lock();
        // certificates are read again whatever the config file holds
        crate::tls::reload_all();
        let path = self
            .config_path
            .clone()
            .ok_or_else(|| ConfigErrors(vec!["no config file to reload from".into()]))?;
        let mut cfg = Config::load(&path)?;
        let file = cfg.clients.take();
        cfg.set_clients(crate::tenants::merged(
            file.as_deref(),
            &self.tenants.list(),
        ));
        // what the old keys changed since the last flush is written first: the
        // new snapshot's keys start clean, so nothing would write it later
        self.flush_store();
        let old = self.load();
        let mut notes = Vec::new();
        if cfg.listen != old.config.listen || cfg.admin.listen != old.config.admin.listen {
            notes.push("listen addresses changed: they take effect after a restart".to_string());
        }
        if cfg.redis != old.config.redis {
            notes.push("state.redis changed: takes effect after a restart".to_string());
        }
        if cfg.server.threads != old.config.server.threads {
            notes.push("server.threads changed: takes effect after a restart".to_string());
        }
        let needs_demo = cfg.upstreams.iter().any(|u| u.kind == UpstreamKind::Demo);
        if needs_demo && self.demo_addr.get().is_none() {
            let addr = crate::demo::start()
                .map_err(|e| ConfigErrors(vec![format!("cannot start the demo upstream: {e}")]))?;
            let _ = self.demo_addr.set(addr);
        }
        let snap = Snapshot::build(cfg, self.demo_addr.get().copied())
            .map_err(|e| ConfigErrors(vec![e.to_string()]))?;
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
        self.seed_quotas();
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
        // metric labels are the snapshot's own strings (their address keys a cache)
        let asked = String::from("fast");
        assert!(std::ptr::eq(
            s.metric_model(&asked),
            s.listed_models[0].as_str()
        ));
        assert_eq!(s.metric_model("GPT-4o-2024-08-06"), "gpt-4o");
        assert_eq!(s.metric_model("anything-else-at-all"), "other");
    }
}
