//! Key pools: which key the next call uses, and each key's live state
//! (cooldowns, parking, counters). Selection is lock-free: atomics only, plus a
//! per-key model-cooldown map that is locked only when non-empty, never across
//! an `.await`.
//!
//! A key's secret is reachable only through [`Key::secret`]; its `Debug` and
//! `Display` print the id (`github#2 (…Xq9f)`), never the key.

pub mod signals;

use crate::config::raw::KeyStrategy;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why and until when a key is parked (out of rotation until an operator or its reset).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Park {
    pub reason: String,
    /// Automatic return to service (ms since epoch), e.g. a quota reset.
    pub until_ms: Option<u64>,
}

/// One upstream API key with its live state.
pub struct Key {
    /// `github#2 (…Xq9f)`: safe to log and show.
    pub id: String,
    /// `github#2`: metric label and admin handle.
    pub short_id: String,
    pub upstream: String,
    /// Stable, non-reversible identity (survives reordering; used by the store).
    pub fingerprint: String,
    pub weight: u32,
    secret: String,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub rate_limited: AtomicU64,
    pub last_used_ms: AtomicU64,
    /// Whole-key cooldown deadline (ms since epoch); 0 = none. Only moves later.
    cool_until_ms: AtomicU64,
    /// Per-model cooldown deadlines; `model_cools` counts entries so the hot path
    /// can skip the lock when there are none.
    model_cool: Mutex<HashMap<String, u64>>,
    model_cools: AtomicUsize,
    parked: AtomicBool,
    park: Mutex<Option<Park>>,
    /// Last cooldown reason, for display.
    reason: Mutex<Option<String>>,
    /// Set when persistent state changed; the store clears it.
    pub dirty: AtomicBool,
    /// This key's `switchyard_upstream_requests_total` series.
    pub calls: crate::metrics::CallCounters,
}

/// Whether a key may take a request for a model right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// Cooling until this time (ms since epoch).
    CoolingUntil(u64),
    /// Parked; `Some` when it returns by itself.
    Parked(Option<u64>),
}

/// A key's state for display and persistence.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default, PartialEq)]
pub struct KeyState {
    pub cool_until_ms: u64,
    pub model_cool: HashMap<String, u64>,
    pub park: Option<Park>,
    pub reason: Option<String>,
    pub requests: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub last_used_ms: u64,
}

impl Key {
    /// `upstream`'s key number `n` (1-based).
    pub fn new(upstream: &str, n: usize, secret: String, weight: u32) -> Key {
        let short_id = format!("{upstream}#{n}");
        let chars: Vec<char> = secret.chars().collect();
        // Only reveal a suffix when the key is long enough that 4 chars leak nothing useful.
        let id = if chars.len() >= 16 {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("{short_id} (…{tail})")
        } else {
            short_id.clone()
        };
        let fingerprint =
            hex::encode(&Sha256::digest(format!("{upstream}\0{secret}").as_bytes())[..12]);
        Key {
            id,
            short_id,
            upstream: upstream.to_string(),
            fingerprint,
            weight: weight.max(1),
            secret,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            cool_until_ms: AtomicU64::new(0),
            model_cool: Mutex::new(HashMap::new()),
            model_cools: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            park: Mutex::new(None),
            reason: Mutex::new(None),
            dirty: AtomicBool::new(false),
            calls: Default::default(),
        }
    }

    /// The secret, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// May this key serve `model` at `now`?
    pub fn availability(&self, model: &str, now: u64) -> Availability {
        if self.parked.load(Ordering::Acquire) {
            let until = self
                .park
                .lock()
                .ok()
                .and_then(|p| p.as_ref().and_then(|p| p.until_ms));
            match until {
                Some(u) if u <= now => {
                    self.unpark();
                }
                other => return Availability::Parked(other),
            }
        }
        let whole = self.cool_until_ms.load(Ordering::Acquire);
        let mut until = if whole > now { whole } else { 0 };
        if self.model_cools.load(Ordering::Acquire) > 0 {
            if let Ok(m) = self.model_cool.lock() {
                if let Some(&u) = m.get(model) {
                    if u > now {
                        until = until.max(u);
                    }
                }
            }
        }
        if until > now {
            Availability::CoolingUntil(until)
        } else {
            Availability::Ready
        }
    }

    /// Cools the key (whole key, or only `model`) until `until_ms`. A deadline only
    /// moves later. Returns the deadline now in force.
    pub fn cool_down(&self, model: Option<&str>, until_ms: u64, reason: &str) -> u64 {
        let effective = match model {
            None => {
                let prev = self.cool_until_ms.fetch_max(until_ms, Ordering::AcqRel);
                prev.max(until_ms)
            }
            Some(m) => match self.model_cool.lock() {
                Ok(mut map) => {
                    let now = signals::now_ms();
                    map.retain(|_, u| *u > now);
                    let slot = map.entry(m.to_string()).or_insert(0);
                    *slot = (*slot).max(until_ms);
                    let v = *slot;
                    self.model_cools.store(map.len(), Ordering::Release);
                    v
                }
                Err(_) => until_ms,
            },
        };
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(reason.to_string());
        }
        self.dirty.store(true, Ordering::Release);
        effective
    }

    /// Takes the key out of rotation.
    pub fn park(&self, park: Park) {
        if let Ok(mut p) = self.park.lock() {
            *p = Some(park);
        }
        self.parked.store(true, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
    }

    /// Back into rotation (also clears cooldowns: an operator's "enable" means now).
    pub fn unpark(&self) {
        if let Ok(mut p) = self.park.lock() {
            *p = None;
        }
        self.parked.store(false, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
    }

    /// Clears cooldowns, parking and the reason.
    pub fn reset(&self) {
        self.unpark();
        self.cool_until_ms.store(0, Ordering::Release);
        if let Ok(mut m) = self.model_cool.lock() {
            m.clear();
        }
        self.model_cools.store(0, Ordering::Release);
        if let Ok(mut r) = self.reason.lock() {
            *r = None;
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        for c in [&self.requests, &self.failures, &self.rate_limited] {
            c.store(0, Ordering::Relaxed);
        }
        self.dirty.store(true, Ordering::Release);
    }

    pub fn state(&self) -> KeyState {
        let now = signals::now_ms();
        KeyState {
            cool_until_ms: self.cool_until_ms.load(Ordering::Acquire),
            model_cool: self
                .model_cool
                .lock()
                .map(|m| {
                    m.iter()
                        .filter(|(_, u)| **u > now)
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                })
                .unwrap_or_default(),
            park: if self.parked.load(Ordering::Acquire) {
                self.park.lock().ok().and_then(|p| p.clone())
            } else {
                None
            },
            reason: self.reason.lock().ok().and_then(|r| r.clone()),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
        }
    }

    /// Restores persisted or carried-over state.
    pub fn restore(&self, s: &KeyState) {
        self.cool_until_ms
            .fetch_max(s.cool_until_ms, Ordering::AcqRel);
        if let Ok(mut m) = self.model_cool.lock() {
            for (k, v) in &s.model_cool {
                let slot = m.entry(k.clone()).or_insert(0);
                *slot = (*slot).max(*v);
            }
            self.model_cools.store(m.len(), Ordering::Release);
        }
        if let Some(p) = &s.park {
            self.park(p.clone());
        }
        if let Ok(mut r) = self.reason.lock() {
            if r.is_none() {
                r.clone_from(&s.reason);
            }
        }
        self.requests.fetch_max(s.requests, Ordering::Relaxed);
        self.failures.fetch_max(s.failures, Ordering::Relaxed);
        self.rate_limited
            .fetch_max(s.rate_limited, Ordering::Relaxed);
        self.last_used_ms
            .fetch_max(s.last_used_ms, Ordering::Relaxed);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The outcome of a selection.
#[derive(Debug)]
pub enum Pick {
    Key(usize, Arc<Key>),
    /// No key is usable now; the earliest automatic recovery, if any.
    None {
        earliest_ms: Option<u64>,
        all_parked: bool,
    },
}

/// The keys of one upstream, in config order.
pub struct KeyPool {
    keys: Vec<Arc<Key>>,
    strategy: KeyStrategy,
    next: AtomicUsize,
    /// Sticky: the key in use.
    current: AtomicUsize,
    total_weight: u64,
}

impl KeyPool {
    pub fn new(strategy: KeyStrategy, keys: Vec<Arc<Key>>) -> KeyPool {
        let total_weight = keys.iter().map(|k| k.weight as u64).sum::<u64>().max(1);
        KeyPool {
            keys,
            strategy,
            next: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
            total_weight,
        }
    }

    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn strategy(&self) -> KeyStrategy {
        self.strategy
    }

    /// Sticky pools: move on to the next key (operator's rotate).
    pub fn rotate(&self) -> Option<Arc<Key>> {
        if self.keys.is_empty() {
            return None;
        }
        let n = self.keys.len();
        let next = (self.current.load(Ordering::Acquire) + 1) % n;
        self.current.store(next, Ordering::Release);
        Some(self.keys[next].clone())
    }

    /// Index of the key sticky selection uses now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// Where the scan starts for this call.
    fn start(&self) -> usize {
        let n = self.keys.len();
        match self.strategy {
            KeyStrategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            KeyStrategy::Sticky => self.current.load(Ordering::Acquire) % n,
            KeyStrategy::Random => rand::random::<usize>() % n,
            KeyStrategy::Weighted => {
                let mut ticket =
                    self.next.fetch_add(1, Ordering::Relaxed) as u64 % self.total_weight;
                for (i, k) in self.keys.iter().enumerate() {
                    if ticket < k.weight as u64 {
                        return i;
                    }
                    ticket -= k.weight as u64;
                }
                0
            }
            KeyStrategy::LeastBusy => {
                let base = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .map(|i| (base + i) % n)
                    .min_by_key(|&i| self.keys[i].in_flight.load(Ordering::Relaxed))
                    .unwrap_or(0)
            }
        }
    }

    /// Picks a usable key for `model` that is not in `tried` (indexes).
    pub fn pick(&self, model: &str, tried: &[usize], now: u64) -> Pick {
        let n = self.keys.len();
        if n == 0 {
            return Pick::None {
                earliest_ms: None,
                all_parked: false,
            };
        }
        let start = self.start();
        let mut earliest: Option<u64> = None;
        let mut all_parked = true;
        let mut best: Option<usize> = None;
        for i in (0..n).map(|i| (start + i) % n) {
            let key = &self.keys[i];
            let avail = key.availability(model, now);
            match avail {
                Availability::Ready => all_parked = false,
                Availability::CoolingUntil(u) => {
                    all_parked = false;
                    earliest = Some(earliest.map_or(u, |e| e.min(u)));
                }
                Availability::Parked(Some(u)) => earliest = Some(earliest.map_or(u, |e| e.min(u))),
                Availability::Parked(None) => {}
            }
            if avail != Availability::Ready || tried.contains(&i) {
                continue;
            }
            if self.strategy == KeyStrategy::LeastBusy {
                let load = key.in_flight.load(Ordering::Relaxed);
                if best.is_none_or(|b| load < self.keys[b].in_flight.load(Ordering::Relaxed)) {
                    best = Some(i);
                }
                continue;
            }
            best = Some(i);
            break;
        }
        match best {
            Some(i) => {
                if self.strategy == KeyStrategy::Sticky && i != self.current.load(Ordering::Acquire)
                {
                    self.current.store(i, Ordering::Release);
                }
                Pick::Key(i, self.keys[i].clone())
            }
            None => Pick::None {
                earliest_ms: earliest,
                all_parked,
            },
        }
    }
}

/// Counts a call in flight on a key for as long as it lives.
pub struct InFlight(Arc<Key>);

impl InFlight {
    pub fn new(key: Arc<Key>) -> InFlight {
        key.in_flight.fetch_add(1, Ordering::Relaxed);
        key.requests.fetch_add(1, Ordering::Relaxed);
        key.last_used_ms.store(signals::now_ms(), Ordering::Relaxed);
        key.dirty.store(true, Ordering::Release);
        InFlight(key)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(strategy: KeyStrategy, weights: &[u32]) -> KeyPool {
        let keys = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Key::new(
                    "u",
                    i + 1,
                    format!("secret-number-{i}-xxxxxxxx"),
                    *w,
                ))
            })
            .collect();
        KeyPool::new(strategy, keys)
    }

    fn seq(p: &KeyPool, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| match p.pick("m", &[], 1000) {
                Pick::Key(i, _) => i,
                Pick::None { .. } => 99,
            })
            .collect()
    }

    #[test]
    fn ids_never_show_the_secret() {
        let k = Key::new("github", 2, "ghp_aaaaaaaaaaaaaaaaXq9f".into(), 1);
        assert_eq!(k.id, "github#2 (…Xq9f)");
        assert_eq!(format!("{k:?} {k}"), "github#2 (…Xq9f) github#2 (…Xq9f)");
        assert!(!k.fingerprint.contains("Xq9f"));
        assert_eq!(Key::new("x", 1, "short".into(), 1).id, "x#1");
    }

    #[test]
    fn round_robin_skips_tried_and_cooling() {
        let p = pool(KeyStrategy::RoundRobin, &[1, 1, 1]);
        assert_eq!(seq(&p, 6), vec![0, 1, 2, 0, 1, 2]);
        assert!(matches!(p.pick("m", &[0, 1], 1000), Pick::Key(2, _)));
        assert!(matches!(p.pick("m", &[0, 1, 2], 1000), Pick::None { .. }));
        p.keys()[1].cool_down(None, 5000, "429");
        assert!(!seq(&p, 6).contains(&1));
        assert!(seq(&p, 6).iter().all(|&i| i != 1));
        // after the deadline the key is back
        assert!(matches!(p.pick("m", &[0, 2], 6000), Pick::Key(1, _)));
    }

    #[test]
    fn per_model_cooldown_only_blocks_that_model() {
        let p = pool(KeyStrategy::RoundRobin, &[1]);
        let k = &p.keys()[0];
        let far = signals::now_ms() + 60_000;
        k.cool_down(Some("gpt-4o"), far, "429 UserByModelByDay");
        assert_eq!(
            k.availability("gpt-4o", signals::now_ms()),
            Availability::CoolingUntil(far)
        );
        assert_eq!(
            k.availability("gpt-4o-mini", signals::now_ms()),
            Availability::Ready
        );
        match p.pick("gpt-4o", &[], signals::now_ms()) {
            Pick::None {
                earliest_ms,
                all_parked,
            } => assert_eq!((earliest_ms, all_parked), (Some(far), false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deadlines_only_move_later() {
        let k = Key::new("u", 1, "s".into(), 1);
        assert_eq!(k.cool_down(None, 10_000, "a"), 10_000);
        assert_eq!(k.cool_down(None, 5_000, "b"), 10_000);
        assert_eq!(k.cool_down(None, 20_000, "c"), 20_000);
        assert_eq!(
            k.cool_down(Some("m"), 9_000_000_000_000, "d"),
            9_000_000_000_000
        );
        assert_eq!(
            k.cool_down(Some("m"), 8_000_000_000_000, "e"),
            9_000_000_000_000
        );
    }

    #[test]
    fn parking() {
        let p = pool(KeyStrategy::RoundRobin, &[1, 1]);
        p.keys()[0].park(Park {
            reason: "401".into(),
            until_ms: None,
        });
        assert_eq!(seq(&p, 4), vec![1, 1, 1, 1]);
        p.keys()[1].park(Park {
            reason: "quota".into(),
            until_ms: Some(5000),
        });
        match p.pick("m", &[], 1000) {
            Pick::None {
                earliest_ms,
                all_parked,
            } => assert_eq!((earliest_ms, all_parked), (Some(5000), true)),
            other => panic!("{other:?}"),
        }
        // a quota park ends by itself at its reset
        assert!(matches!(p.pick("m", &[], 6000), Pick::Key(1, _)));
        p.keys()[0].unpark();
        assert!(matches!(p.pick("m", &[1], 6000), Pick::Key(0, _)));
    }

    #[test]
    fn sticky_stays_until_the_key_cools() {
        let p = pool(KeyStrategy::Sticky, &[1, 1, 1]);
        assert_eq!(seq(&p, 3), vec![0, 0, 0]);
        p.keys()[0].cool_down(None, 5000, "429");
        assert_eq!(seq(&p, 3), vec![1, 1, 1]);
        p.rotate();
        assert_eq!(seq(&p, 2), vec![2, 2]);
    }

    #[test]
    fn weighted_follows_weights() {
        let p = pool(KeyStrategy::Weighted, &[3, 1]);
        let s = seq(&p, 400);
        let zeros = s.iter().filter(|&&i| i == 0).count();
        assert_eq!(zeros, 300);
    }

    #[test]
    fn random_and_least_busy() {
        let p = pool(KeyStrategy::Random, &[1, 1, 1]);
        let s = seq(&p, 300);
        for i in 0..3 {
            assert!(s.iter().filter(|&&x| x == i).count() > 50);
        }
        let p = pool(KeyStrategy::LeastBusy, &[1, 1, 1]);
        let _a = InFlight::new(p.keys()[0].clone());
        let _b = InFlight::new(p.keys()[2].clone());
        assert!(matches!(p.pick("m", &[], 1000), Pick::Key(1, _)));
    }

    #[test]
    fn state_roundtrip() {
        let a = Key::new("u", 1, "s".into(), 1);
        a.cool_down(Some("m"), u64::MAX / 2, "429");
        a.park(Park {
            reason: "401".into(),
            until_ms: None,
        });
        a.requests.store(5, Ordering::Relaxed);
        let b = Key::new("u", 1, "s".into(), 1);
        b.restore(&a.state());
        assert_eq!(b.state(), a.state());
    }
}
