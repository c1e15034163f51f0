//! A fleet: gateway instances sharing key state through Redis
//! (`state.redis`). A cooldown, a park or an operator's enable/disable/reset
//! on one instance reaches the others within a second: the change is
//! written by one Lua script (`script.lua`: cooldowns only extend, a reset
//! is counted), announced on a channel, and every instance also reads every
//! key's state once a second as a backstop.
//!
//! Redis is never on a request's path: changes queue to a writer task, and
//! every call has `state.redis.timeout`. While Redis fails, each instance
//! goes on with its own key state (`switchyard_store_up` 0, `/health` says
//! `degraded`); when it answers again, the state each instance holds is
//! written back (a cooldown set during the outage is published).

mod cache;
mod limits;
mod link;
mod tenants;
mod usage;

use crate::config::raw::{LimitMode, OnStoreFailure};
use crate::config::redis::RedisSettings;
use crate::keys::shared::{self, Change};
use crate::keys::{Key, KeyState, Park};
use crate::metrics::{STORE_FAILURES, STORE_UP};
use crate::state::State;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Changes waiting for the writer; more are dropped (counted in
/// `switchyard_store_failures_total`).
const QUEUE: usize = 4096;

/// How often every key's shared state is read.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A key's state larger than this is not one the script wrote: ignored.
const MAX_STATE: usize = 64 << 10;

/// The fleet as last read (`GET /admin/status`'s `fleet`).
static VIEW: Lazy<Mutex<Vec<serde_json::Value>>> = Lazy::new(Default::default);

/// Every instance seen in the last hour: id, version, pid, host, API
/// addresses, uptime, requests/s, in flight, last seen, and `missing` when
/// its heartbeat is older than 5 s.
pub fn view() -> Vec<serde_json::Value> {
    VIEW.lock().clone()
}

/// The fleet this process is part of (with `state.redis`).
static FLEET: std::sync::OnceLock<Arc<Fleet>> = std::sync::OnceLock::new();

/// Whether the shared store is down (`None`: no `state.redis`).
pub fn degraded() -> Option<bool> {
    FLEET.get().map(|f| !f.up.load(Ordering::Acquire))
}

/// `"up"` or `"down"` for `/health` and `/admin/status` (`None`: no fleet).
pub fn store_state() -> Option<&'static str> {
    degraded().map(|down| if down { "down" } else { "up" })
}

/// Checks `state.redis` now (bounded): `Err` for a wrong URL, a refused
/// password or a Redis that runs no scripts; `Ok(Some(why))` when it is
/// not reachable (the gateway starts all the same, on its own state).
pub fn check(settings: &RedisSettings) -> Result<Option<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("state.redis: {e}"))?;
    rt.block_on(link::probe(settings))
}

/// Starts sharing: installs the hook that queues this instance's changes
/// and the background thread that writes them and reads the others'.
pub fn start(settings: RedisSettings, state: Arc<State>) {
    Lazy::force(&STORE_UP);
    Lazy::force(&STORE_FAILURES);
    let (tx, rx) = tokio::sync::mpsc::channel::<(String, String, Change)>(QUEUE);
    shared::set_hook(Box::new(move |upstream, fingerprint, change| {
        if tx
            .try_send((upstream.to_string(), fingerprint.to_string(), change))
            .is_err()
        {
            STORE_FAILURES.inc();
        }
    }));
    let keyspace = settings.keyspace();
    let instance = format!("{}-{}", std::process::id(), crate::clock::now_ms());
    let shared_limits = settings.limits;
    let keys_refuse = settings.keys_on_failure == OnStoreFailure::Refuse;
    let fleet = Arc::new(Fleet {
        settings,
        keyspace: keyspace.clone(),
        instance: instance.clone(),
        up: AtomicBool::new(false),
        seen: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        epoch: Default::default(),
        link: Default::default(),
    });
    crate::store::totals::keep_rollups();
    let _ = FLEET.set(fleet.clone());
    let failed: limits::OnFailure = {
        let fleet = fleet.clone();
        Arc::new(move |why: &str| fleet.went_down(why))
    };
    let (store, ops) = limits::SharedLimits::new(&keyspace, instance, shared_limits.sync, failed);
    crate::limits::shared::install(
        store.clone(),
        shared_limits.mode == LimitMode::Strict,
        shared_limits.on_failure == OnStoreFailure::Refuse,
        keys_refuse,
    );
    let opened = move |link: Arc<link::Link>| store.connected(link, ops);
    crate::state::spawn_background(
        "switchyard-fleet",
        "the fleet",
        run(fleet, state, rx, opened),
    );
}

struct Fleet {
    settings: RedisSettings,
    /// `{prefix}`: what every key of limits and usage starts with (key
    /// state, the channel and the heartbeat keep `prefix:` as before).
    keyspace: String,
    /// This process among the fleet's (its own announcements are skipped).
    instance: String,
    up: AtomicBool,
    /// Per state key: the last (seq, resets) applied here.
    seen: Mutex<HashMap<String, (u64, u64)>>,
    /// Keys changed here while the store was down (and whether one was
    /// reset): written back when it answers again.
    pending: Mutex<HashMap<String, bool>>,
    /// The connection, once open.
    link: std::sync::OnceLock<Arc<link::Link>>,
    /// Counts the store's returns (the subscription is made again).
    epoch: std::sync::atomic::AtomicU64,
}

impl Fleet {
    fn state_key(&self, upstream: &str, fingerprint: &str) -> String {
        format!("{}:key:{upstream}:{fingerprint}", self.settings.prefix)
    }

    /// The (upstream, fingerprint) a state key names (the fingerprint has no `:`).
    fn key_of<'k>(&self, state_key: &'k str) -> Option<(&'k str, &'k str)> {
        state_key
            .strip_prefix(self.settings.prefix.as_str())?
            .strip_prefix(":key:")?
            .rsplit_once(':')
    }

    fn channel(&self) -> String {
        format!("{}:keys", self.settings.prefix)
    }

    fn went_down(&self, why: &str) {
        STORE_FAILURES.inc();
        crate::limits::shared::set_down(true);
        if self.up.swap(false, Ordering::AcqRel) {
            STORE_UP.set(0);
            log::warn!(
                "state.redis {} is not answering ({why}): going on with this instance's key state",
                self.settings.shown()
            );
        }
    }

    fn came_up(&self) {
        crate::limits::shared::set_down(false);
        if !self.up.swap(true, Ordering::AcqRel) {
            STORE_UP.set(1);
            log::info!(
                "state.redis {} answers: key state is shared",
                self.settings.shown()
            );
        }
    }

    /// Applies one key's shared state (JSON from Redis) to `key`, once per change.
    fn apply(&self, state_key: &str, raw: &str, key: &Key) {
        let Ok(s) = serde_json::from_str::<link::Shared>(raw) else {
            return; // not ours, or damaged: ignored
        };
        let (seq, resets) = (s.seq(), s.resets());
        let reset = {
            let mut seen = self.seen.lock();
            let before = seen.get(state_key).copied();
            if before.is_some_and(|(n, _)| seq <= n) {
                return;
            }
            seen.insert(state_key.to_string(), (seq, resets));
            // first sight of a key an operator reset somewhere: the store's
            // state wins over what this instance held (or restored)
            before.map_or(resets > 0, |(_, r)| resets > r)
        };
        key.apply_shared(reset, &s.key_state());
    }
}

/// Changes queued by this instance: (upstream, key fingerprint, change).
type Changes = tokio::sync::mpsc::Receiver<(String, String, Change)>;

async fn run(
    fleet: Arc<Fleet>,
    state: Arc<State>,
    mut rx: Changes,
    opened: impl FnOnce(Arc<link::Link>),
) {
    let link = loop {
        match link::Link::open(&fleet.settings).await {
            Ok(l) => {
                let l = Arc::new(l);
                let _ = fleet.link.set(l.clone());
                break l;
            }
            Err(e) => {
                fleet.went_down(&e);
                // what changes meanwhile is written once the store answers
                while let Ok((upstream, fp, change)) = rx.try_recv() {
                    fleet.set_pending(fleet.state_key(&upstream, &fp), change == Change::Reset);
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    };
    opened(link.clone());
    tokio::spawn(publish_usage(fleet.clone(), link.clone()));
    tokio::spawn(write_changes(fleet.clone(), link.clone(), rx));
    tokio::spawn(listen(fleet.clone(), link.clone(), state.clone()));
    tokio::spawn(share_tenants(fleet.clone(), link.clone(), state.clone()));
    let mut failed = 0u32;
    loop {
        if read_all(&fleet, &link, &state).await {
            failed = 0;
        } else {
            failed += 1;
            if failed.is_multiple_of(3) {
                // a connection that only times out is not dropped by itself
                let _ = link.renew().await;
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

impl Fleet {
    fn set_pending(&self, key: String, reset: bool) {
        *self.pending.lock().entry(key).or_default() |= reset;
    }
}

/// The writer: this instance's changes, one script call each.
async fn write_changes(fleet: Arc<Fleet>, link: Arc<link::Link>, mut rx: Changes) {
    while let Some((upstream, fingerprint, change)) = rx.recv().await {
        let key = fleet.state_key(&upstream, &fingerprint);
        let is_reset = change == Change::Reset;
        if !fleet.up.load(Ordering::Acquire) {
            fleet.set_pending(key, is_reset); // written back when the store answers
            continue;
        }
        // (this instance's own reset comes back through the poll and is
        // applied once more: harmless, and it undoes any older state that
        // arrived in between)
        if let Err(e) = link
            .change(&key, &change, &fleet.channel(), &fleet.instance)
            .await
        {
            fleet.went_down(&e);
            fleet.set_pending(key, is_reset);
        }
    }
}

/// The others' announcements: each names a key whose state changed. The
/// subscription is made again after the store was down, or every minute.
async fn listen(fleet: Arc<Fleet>, link: Arc<link::Link>, state: Arc<State>) {
    loop {
        let Ok(mut messages) = link.subscribe(&fleet.channel()).await else {
            tokio::time::sleep(POLL_EVERY).await;
            continue; // the poll says whether the store is down
        };
        let epoch = fleet.epoch.load(Ordering::Acquire);
        let renew_at = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let next = tokio::time::timeout(POLL_EVERY, messages.recv()).await;
            if fleet.epoch.load(Ordering::Acquire) != epoch
                || tokio::time::Instant::now() > renew_at
            {
                break;
            }
            let payload = match next {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(p)) => p,
            };
            let Some((state_key, from)) = payload.split_once('\n') else {
                continue;
            };
            if from == fleet.instance {
                continue;
            }
            let Some((upstream, fingerprint)) = fleet.key_of(state_key) else {
                continue;
            };
            let snap = state.load();
            let found = snap
                .upstreams
                .iter()
                .filter(|u| u.name() == upstream)
                .flat_map(|u| u.keys.keys().iter())
                .find(|k| k.fingerprint == fingerprint);
            if let Some(k) = found {
                if let Ok(Some(raw)) = link.get(state_key).await {
                    fleet.apply(state_key, &raw, k);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backstop and the breaker: every key's shared state, read at once.
/// After an outage, what this instance changed meanwhile is written first
/// (the store counts as up once that worked), and applied at the next round.
/// Says whether the store answered.
async fn read_all(fleet: &Fleet, link: &link::Link, state: &State) -> bool {
    let snap = state.load();
    let keys: Vec<(String, &Arc<Key>)> = snap
        .upstreams
        .iter()
        .flat_map(|u| u.keys.keys().iter())
        .map(|k| (fleet.state_key(&k.upstream, &k.fingerprint), k))
        .collect();
    let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
    let values = match link.get_many(&names).await {
        Ok(v) => v,
        Err(e) => {
            fleet.went_down(&e);
            return false;
        }
    };
    heartbeat(fleet, link, &snap).await;
    if !fleet.up.load(Ordering::Acquire) {
        if let Err(e) = write_back(fleet, link, &keys).await {
            fleet.went_down(&e);
            return false;
        }
        fleet.came_up();
        fleet.epoch.fetch_add(1, Ordering::AcqRel);
        return true;
    }
    // a round that worked closes the breaker (whoever opened it)
    crate::limits::shared::set_down(false);
    for ((name, key), raw) in keys.iter().zip(values) {
        if let Some(raw) = raw.filter(|r| r.len() <= MAX_STATE) {
            fleet.apply(name, &raw, key);
        }
    }
    true
}

/// Writes what this instance holds of the keys it changed while the store
/// was down (a reset, then cooldowns and park). On a failure, what is not
/// written yet stays pending.
async fn write_back(
    fleet: &Fleet,
    link: &link::Link,
    keys: &[(String, &Arc<Key>)],
) -> Result<(), String> {
    let mut pending = std::mem::take(&mut *fleet.pending.lock());
    let now = crate::clock::now_ms();
    for (name, key) in keys {
        let Some(&reset) = pending.get(name) else {
            continue;
        };
        let s: KeyState = key.state();
        let mut changes = Vec::new();
        if reset {
            changes.push(Change::Reset);
        }
        if s.cool_until_ms > now {
            changes.push(Change::Cool {
                model: None,
                until_ms: s.cool_until_ms,
                reason: s.reason.clone().unwrap_or_default(),
            });
        }
        for (m, until) in s.model_cool.iter().filter(|(_, u)| **u > now) {
            changes.push(Change::Cool {
                model: Some(m.clone()),
                until_ms: *until,
                reason: s.reason.clone().unwrap_or_default(),
            });
        }
        if let Some(p) = &s.park {
            changes.push(Change::Park(Park::clone(p)));
        }
        for c in changes {
            if let Err(e) = link
                .change(name, &c, &fleet.channel(), &fleet.instance)
                .await
            {
                let mut left = fleet.pending.lock();
                for (k, r) in pending {
                    *left.entry(k).or_default() |= r;
                }
                return Err(e);
            }
        }
        pending.remove(name);
    }
    Ok(())
}

/// This instance's heartbeat, and the fleet it reads back.
async fn heartbeat(fleet: &Fleet, link: &link::Link, snap: &crate::state::Snapshot) {
    let now = crate::clock::now_ms();
    let api: Vec<&str> = snap.config.listen.iter().map(|l| l.addr.as_str()).collect();
    let fields = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("pid", std::process::id().to_string()),
        ("host", host_name()),
        ("api", api.join(",")),
        (
            "uptime_seconds",
            crate::clock::uptime().as_secs().to_string(),
        ),
        (
            "requests_per_second",
            format!("{:.1}", crate::series::TRAFFIC.rate(now / 1000, 10)),
        ),
        ("in_flight", crate::metrics::IN_FLIGHT.get().to_string()),
    ];
    let Ok(seen) = link
        .heartbeat(&fleet.settings.prefix, &fleet.instance, &fields, now)
        .await
    else {
        return;
    };
    let view = seen
        .into_iter()
        .map(|(id, f, at)| {
            let get = |k: &str| f.get(k).map(|v| v.chars().take(256).collect::<String>());
            serde_json::json!({
                "id": id.chars().take(128).collect::<String>(),
                "this": id == fleet.instance,
                "version": get("version"),
                "pid": get("pid"),
                "host": get("host"),
                "api": get("api"),
                "uptime_seconds": get("uptime_seconds").and_then(|v| v.parse::<u64>().ok()),
                "requests_per_second": get("requests_per_second").and_then(|v| v.parse::<f64>().ok()),
                "in_flight": get("in_flight").and_then(|v| v.parse::<i64>().ok()),
                "last_seen": crate::clock::fmt_iso(at),
                "state": if now.saturating_sub(at) > 5_000 { "missing" } else { "up" },
            })
        })
        .collect();
    *VIEW.lock() = view;
}

/// Publishes this instance's usage totals every 5 s while the store answers.
async fn publish_usage(fleet: Arc<Fleet>, link: Arc<link::Link>) {
    loop {
        tokio::time::sleep(usage::PUBLISH_EVERY).await;
        if !fleet.up.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = usage::publish(&link, &fleet.keyspace, &fleet.instance).await {
            fleet.went_down(&e);
        }
    }
}

/// The fleet's usage (`GET /admin/usage` on a fleet); `None` without a
/// fleet, or while its store is down (the instance's own usage answers).
pub async fn usage(by: &str, since_ms: u64) -> Option<Result<serde_json::Value, String>> {
    let (fleet, link) = answering()?;
    // an admin read never opens the breaker: requests do not depend on it
    Some(usage::read(link, &fleet.keyspace, by, since_ms).await)
}

/// The fleet and its connection while the store answers.
fn answering() -> Option<(&'static Arc<Fleet>, &'static Arc<link::Link>)> {
    let fleet = FLEET.get()?;
    if !fleet.up.load(Ordering::Acquire) {
        return None;
    }
    Some((fleet, fleet.link.get()?))
}

/// A cached answer's text (`cache.store: redis`); `None`: none, or the
/// store is down (a miss).
pub async fn cache_get(name: &str) -> Option<String> {
    let (fleet, link) = answering()?;
    cache::get(link, &fleet.keyspace, name).await
}

/// Keeps a cached answer's text for `ttl`, in the background; `false`
/// when the store is down or 64 writes are under way already (dropped).
pub fn cache_put(name: String, text: String, ttl: Duration) -> bool {
    static WRITING: Lazy<Arc<tokio::sync::Semaphore>> =
        Lazy::new(|| Arc::new(tokio::sync::Semaphore::new(64)));
    let Some((fleet, link)) = answering() else {
        return false;
    };
    let Ok(slot) = WRITING.clone().try_acquire_owned() else {
        return false;
    };
    let link = link.clone();
    let keyspace = fleet.keyspace.clone();
    tokio::spawn(async move {
        cache::put(&link, &keyspace, &name, text, ttl).await;
        drop(slot);
    });
    true
}

/// Drops the cached answers whose names match `pattern`.
pub async fn cache_purge(pattern: &str) -> Result<u64, String> {
    let (fleet, link) = answering().ok_or("the fleet's store is not answering")?;
    cache::purge(link, &fleet.keyspace, pattern).await
}

/// Whether this instance is part of a fleet (`state.redis`).
pub fn on() -> bool {
    FLEET.get().is_some()
}

/// Writes a run-time client's change for the whole fleet: a new one
/// (`expected` none) only if its name is free, a change only if the stored
/// record is still `expected` (JSON); `Ok(false)` when not.
pub async fn tenant_write(
    tenant: &crate::tenants::Tenant,
    audit: &crate::tenants::Audit,
    expected: Option<&str>,
) -> Result<bool, String> {
    let (fleet, link) = answering().ok_or(
        "the fleet's shared store is not answering, so no client can change now; retry when it is back",
    )?;
    tenants::write(link, &fleet.keyspace, tenant, audit, expected).await
}

/// Reads the fleet's run-time clients now and serves them (after a change
/// made here: no waiting for the next poll).
pub async fn tenants_refresh(state: &State) {
    let Some((fleet, link)) = answering() else {
        return;
    };
    if let Err(e) = read_tenants(fleet, link, state).await {
        log::warn!("fleet: cannot read the shared clients: {e}");
    }
}

/// Reads the version, then the clients, and serves them unless something
/// newer is served already.
async fn read_tenants(fleet: &Fleet, link: &link::Link, state: &State) -> Result<u64, String> {
    let v = tenants::version(link, &fleet.keyspace).await?;
    let list = tenants::read_all(link, &fleet.keyspace).await?;
    state.tenants_from_fleet(list, v);
    Ok(v)
}

/// A fleet store that never held clients (new, or a Redis that lost its
/// data) gets this instance's: a store turned on, or brought back, never
/// takes clients away.
async fn offer_tenants(fleet: &Fleet, link: &link::Link, state: &State) {
    for t in state.tenants.list().iter() {
        let audit = crate::tenants::Audit {
            ts_ms: crate::clock::now_ms(),
            actor: "switchyard".into(),
            address: fleet.instance.clone(),
            action: "import".into(),
            client: t.name.clone(),
            detail: "from this instance's tenant store into the fleet's".into(),
        };
        if let Err(e) = tenants::write(link, &fleet.keyspace, t, &audit, None).await {
            log::warn!(
                "fleet: cannot offer client {:?} to the shared store: {e}",
                t.name
            );
            return;
        }
    }
}

/// The fleet's newest `limit` audit records.
pub async fn tenant_audit(limit: u32) -> Result<Vec<crate::tenants::Audit>, String> {
    let (fleet, link) = answering().ok_or("the fleet's shared store is not answering")?;
    tenants::audit(link, &fleet.keyspace, limit).await
}

/// Reads the fleet's run-time clients whenever their version moves (and
/// trades quota use once a second), for the life of the process.
async fn share_tenants(fleet: Arc<Fleet>, link: Arc<link::Link>, state: Arc<State>) {
    let mut seen = None;
    let mut tick = 0u64;
    loop {
        if fleet.up.load(Ordering::Acquire) {
            match tenants::version(&link, &fleet.keyspace).await {
                Ok(0) if !state.tenants.list().is_empty() => {
                    offer_tenants(&fleet, &link, &state).await;
                }
                Ok(v) if Some(v) != seen => match read_tenants(&fleet, &link, &state).await {
                    Ok(read) => seen = Some(read),
                    Err(e) => log::warn!("fleet: cannot read the shared clients: {e}"),
                },
                Ok(_) => {}
                Err(e) => log::debug!("fleet: cannot read the clients' version: {e}"),
            }
            tick += 1;
            if tick.is_multiple_of(5) {
                if let Err(e) = tenants::exchange_quotas(&link, &fleet.keyspace).await {
                    log::warn!("fleet: quota exchange failed: {e}");
                }
            }
        }
        tokio::time::sleep(tenants::POLL_EVERY).await;
    }
}

/// This machine's name, for the fleet view.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().take(64).collect())
        .unwrap_or_default()
}
