//! The fleet's shared limits (`state.redis.limits`), as the limits'
//! [`Store`]: strict admissions (`admit.lua`), the local mode's exchange of
//! counts (`sync.lua`), concurrency leases and pacing (`pace.lua`).
//!
//! Every call is bounded by `state.redis.timeout`; a failure opens the
//! breaker (the fleet's poller closes it again), and while it is open no
//! request waits on the store. Redis keys are `{prefix}:v1:…`: a new
//! layout gets a new version, so instances of two releases never read each
//! other's counts during a rolling upgrade.

use super::link::Link;
use crate::limits::shared::{self, Dim, Granted, Kind, Refused, Store};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A lease lives this long unless renewed (a dead instance's slots heal).
const LEASE_TTL_MS: u64 = 30_000;
/// Held leases are renewed this often.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Reconciliations and releases waiting to be written; more are dropped
/// (a lease then expires by itself; a reservation stays an estimate).
const QUEUE: usize = 16_384;

/// Renews held leases (re-adding one an outage let expire) and their
/// sets' own expiry.
const RENEW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl * 2)
end
return #KEYS";

/// A queued write: a reservation's correction or a lease given back.
pub enum Op {
    Reconcile {
        key: String,
        second: u64,
        delta: i64,
    },
    Release {
        key: String,
        lease: String,
    },
}

/// Called with the reason when a store call fails (opens the breaker).
pub type OnFailure = Arc<dyn Fn(&str) + Send + Sync>;

pub struct SharedLimits {
    link: OnceLock<Arc<Link>>,
    /// `{prefix}:v1:` — every key of this module starts so.
    keyspace: String,
    instance: String,
    sync: Duration,
    failed: OnFailure,
    ops: tokio::sync::mpsc::Sender<Op>,
    /// Leases held here, to renew: lease → its limit's key.
    held: Mutex<HashMap<String, String>>,
    admit: redis::Script,
    sync_script: redis::Script,
    pace: redis::Script,
    renew: redis::Script,
}

impl SharedLimits {
    /// The store (not connected yet: see [`Self::connected`]) and its queue.
    pub fn new(
        key_prefix: &str,
        instance: String,
        sync: Duration,
        failed: OnFailure,
    ) -> (Arc<SharedLimits>, tokio::sync::mpsc::Receiver<Op>) {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let s = SharedLimits {
            link: OnceLock::new(),
            keyspace: format!("{key_prefix}:v1:"),
            instance,
            sync,
            failed,
            ops: tx,
            held: Mutex::new(HashMap::new()),
            admit: redis::Script::new(include_str!("admit.lua")),
            sync_script: redis::Script::new(include_str!("sync.lua")),
            pace: redis::Script::new(include_str!("pace.lua")),
            renew: redis::Script::new(RENEW),
        };
        (Arc::new(s), rx)
    }

    /// The connection is open: the writer, the renewer and (local mode)
    /// the exchange of counts start.
    pub fn connected(self: &Arc<Self>, link: Arc<Link>, ops: tokio::sync::mpsc::Receiver<Op>) {
        let _ = self.link.set(link);
        tokio::spawn(self.clone().write(ops));
        tokio::spawn(self.clone().renew_leases());
        tokio::spawn(self.clone().exchange());
    }

    fn link(&self) -> Result<&Arc<Link>, Refused> {
        self.link
            .get()
            .ok_or_else(|| Refused::Store("not connected yet".into()))
    }

    fn key(&self, mode: &str, id: &str) -> String {
        format!("{}{mode}:{id}", self.keyspace)
    }

    fn fail<T>(&self, why: String) -> Result<T, Refused> {
        (self.failed)(&why);
        Err(Refused::Store(why))
    }

    /// Writes queued corrections and releases, as many at once as waited.
    async fn write(self: Arc<Self>, mut ops: tokio::sync::mpsc::Receiver<Op>) {
        let mut batch = Vec::new();
        while ops.recv_many(&mut batch, 256).await > 0 {
            let Ok(link) = self.link() else { return };
            let mut pipe = redis::pipe();
            for op in batch.drain(..) {
                match op {
                    Op::Reconcile { key, second, delta } => {
                        // only while the bucket is in the window (else it is gone)
                        pipe.hincr(&key, second, delta).ignore();
                        pipe.pexpire(&key, 61_000).ignore();
                    }
                    Op::Release { key, lease } => {
                        pipe.zrem(&key, &lease).ignore();
                    }
                }
            }
            if shared::down() {
                continue; // the leases expire; the estimates stand
            }
            let mut conn = link.conn();
            if let Err(e) = link.bounded(pipe.query_async::<()>(&mut conn)).await {
                (self.failed)(&e);
            }
        }
    }

    /// Keeps the leases of calls still running alive.
    async fn renew_leases(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let held: Vec<(String, String)> = self
                .held
                .lock()
                .iter()
                .map(|(l, k)| (l.clone(), k.clone()))
                .collect();
            if held.is_empty() || shared::down() {
                continue;
            }
            let Ok(link) = self.link() else { continue };
            for part in held.chunks(512) {
                let mut call = self.renew.prepare_invoke();
                call.arg(LEASE_TTL_MS);
                for (lease, key) in part {
                    call.key(key).arg(lease);
                }
                let mut conn = link.conn();
                if let Err(e) = link.bounded(call.invoke_async::<i64>(&mut conn)).await {
                    (self.failed)(&e);
                    break;
                }
            }
        }
    }

    /// Local mode: every `sync`, this instance's counts out and the
    /// others' in. While the store is down, nobody else's count holds a
    /// limit back (each instance counts alone).
    async fn exchange(self: Arc<Self>) {
        let stale_ms = (self.sync.as_millis() as u64 * 3).max(2_000);
        let mut cleared = false;
        let mut every = tokio::time::interval(self.sync);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let limits = crate::limits::registered();
            if shared::down() || limits.is_empty() {
                if !cleared {
                    limits.iter().for_each(|(_, l)| l.set_others(0));
                    cleared = true;
                }
                continue;
            }
            let Ok(link) = self.link() else { continue };
            let now = crate::clock::now_ms();
            for part in limits.chunks(512) {
                let mut call = self.sync_script.prepare_invoke();
                call.arg(&self.instance).arg(stale_ms);
                for (id, l) in part {
                    call.key(self.key("local", id)).arg(l.mine(now));
                }
                let mut conn = link.conn();
                match link.bounded(call.invoke_async::<Vec<u64>>(&mut conn)).await {
                    Ok(others) if others.len() == part.len() => {
                        for ((_, l), n) in part.iter().zip(others) {
                            l.set_others(n);
                        }
                        cleared = false;
                    }
                    Ok(_) => (self.failed)("the sync script answered a different count"),
                    Err(e) => {
                        (self.failed)(&e);
                        break;
                    }
                }
            }
        }
    }
}

/// The script's answer read as an admission.
fn granted_or_refused(out: &[i64], dims: usize) -> Result<Granted, Refused> {
    let bad = || Refused::Store("the admission script answered something else".into());
    let (&head, rest) = out.split_first().ok_or_else(bad)?;
    if head > 0 {
        let index = usize::try_from(head - 1).map_err(|_| bad())?;
        if index >= dims {
            return Err(bad());
        }
        return match rest.first() {
            Some(-1) => Err(Refused::TooLarge { index }),
            Some(&w) => Err(Refused::Full {
                index,
                wait_ms: u64::try_from(w).unwrap_or(0),
            }),
            None => Err(bad()),
        };
    }
    let (&second, pairs) = rest.split_first().ok_or_else(bad)?;
    if head != 0 || pairs.len() != dims * 2 {
        return Err(bad());
    }
    let whole = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Granted {
        left: pairs
            .chunks(2)
            .map(|p| (whole(p[0]), whole(p[1])))
            .collect(),
        second: whole(second),
    })
}

#[async_trait]
impl Store for SharedLimits {
    async fn admit(&self, dims: &[Dim], lease: &str) -> Result<Granted, Refused> {
        let link = self.link()?;
        let mut call = self.admit.prepare_invoke();
        call.arg(lease).arg(LEASE_TTL_MS);
        for d in dims {
            let kind = match d.kind {
                Kind::Requests => "r",
                Kind::Tokens => "t",
                Kind::Concurrency => "c",
            };
            call.key(self.key("strict", &d.id()))
                .arg(kind)
                .arg(d.limit)
                .arg(d.amount);
        }
        let mut conn = link.conn();
        let out = match link.bounded(call.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(out) => out,
            // the script may have run: the caller's lease guard gives it back
            Err(e) => return self.fail(e),
        };
        let granted = granted_or_refused(&out, dims.len())?;
        for d in dims.iter().filter(|d| d.kind == Kind::Concurrency) {
            self.held
                .lock()
                .insert(lease.to_string(), self.key("strict", &d.id()));
        }
        Ok(granted)
    }

    fn reconcile(&self, id: String, second: u64, delta: i64) {
        let op = Op::Reconcile {
            key: self.key("strict", &id),
            second,
            delta,
        };
        if self.ops.try_send(op).is_err() {
            crate::metrics::STORE_FAILURES.inc();
        }
    }

    fn release(&self, id: String, lease: String) {
        // no longer renewed: if the release below is lost, it expires
        self.held.lock().remove(&lease);
        let op = Op::Release {
            key: self.key("strict", &id),
            lease,
        };
        if self.ops.try_send(op).is_err() {
            crate::metrics::STORE_FAILURES.inc();
        }
    }

    async fn pace(
        &self,
        upstream: &str,
        model: &str,
        interval_ms: u64,
        max_wait_ms: u64,
    ) -> Result<Result<u64, u64>, String> {
        let link = self.link().map_err(|_| "not connected yet".to_string())?;
        let model: String = model.chars().take(256).collect();
        let mut call = self
            .pace
            .key(self.key("pace", &format!("{upstream}:{model}")));
        call.arg(interval_ms).arg(max_wait_ms);
        let mut conn = link.conn();
        match link.bounded(call.invoke_async::<i64>(&mut conn)).await {
            Ok(w) if w >= 0 => Ok(Ok(w as u64)),
            Ok(w) => Ok(Err(w.unsigned_abs().saturating_sub(1))),
            Err(e) => {
                (self.failed)(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_answers_read_strictly() {
        let g = granted_or_refused(&[0, 1_765_000_000, 9, 60_000, 90, 0], 2).unwrap();
        assert_eq!(g.second, 1_765_000_000);
        assert_eq!(g.left, vec![(9, 60_000), (90, 0)]);
        assert_eq!(
            granted_or_refused(&[2, 41_000], 2),
            Err(Refused::Full {
                index: 1,
                wait_ms: 41_000
            })
        );
        assert_eq!(
            granted_or_refused(&[1, -1], 2),
            Err(Refused::TooLarge { index: 0 })
        );
        for hostile in [&[][..], &[3, 5], &[0, 1, 2], &[-4, 1], &[0]] {
            assert!(
                matches!(granted_or_refused(hostile, 2), Err(Refused::Store(_))),
                "{hostile:?}"
            );
        }
    }
}
