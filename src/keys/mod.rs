//! Key pools: which key the next call uses, and each key's live state
//! (cooldowns, parking, counters). Selection is lock-free: atomics only, plus a
//! per-key model-cooldown map that is locked only when non-empty, never across
//! an `.await`.
//!
//! Keys own their state: the rest of the gateway changes a key only through
//! its `record_*` methods (what an answer means for the key: cooldown length,
//! scope, park reason) and the operator actions, never by writing fields.
//!
//! A key's secret is reachable only through [`Key::secret`]; its `Debug` and
//! `Display` print the id (`github#2 (…Xq9f)`), never the key.

pub mod auth_check;
mod note;
mod pick;
pub mod shared;
pub mod signals;
mod state;

use crate::clock::{fmt_clock, now_ms};
use crate::config::raw::KeyStrategy;
use crate::metrics::{CallCounters, CallOutcome};
pub use note::Note;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use signals::Limits;
pub use state::{KeyState, KeyStatus, Park};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cooldown after a 429 that named no time (±20% jitter).
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);

/// What a 429 did to a key.
#[derive(Debug, Clone)]
pub struct Cooldown {
    /// The deadline now in force (ms since epoch).
    pub until_ms: u64,
    /// The model it applies to (`None`: the whole key).
    pub scope: Option<String>,
    pub reason: String,
    /// The log line: `key github#1 (…Xq9f) cooling until 14:03:12 for … (429 …)`.
    pub note: Note,
}

/// One upstream API key with its live state.
pub struct Key {
    /// `github#2 (…Xq9f)`: safe to log and show.
    pub id: String,
    /// `github#2`: metric label and admin handle.
    pub short_id: String,
    /// `id`'s number for usage records (`store::names`).
    pub name_id: u32,
    pub upstream: String,
    /// Stable, non-reversible identity (survives reordering; used by the store).
    pub fingerprint: String,
    pub weight: u32,
    /// This key's own `max_concurrent`, if set.
    pub gate: Option<Arc<crate::limits::gate::Gate>>,
    secret: String,
    in_flight: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    rate_limited: AtomicU64,
    last_used_ms: AtomicU64,
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
    /// Set when persistent state changed; cleared by [`Key::take_dirty`].
    dirty: AtomicBool,
    /// This key's `switchyard_upstream_requests_total` series.
    calls: CallCounters,
    /// The last check of whether the key alone is refused (after a 401/403).
    pub auth_check: auth_check::AuthCheck,
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
            name_id: crate::store::names::id(&id),
            id,
            short_id,
            upstream: upstream.to_string(),
            fingerprint,
            weight: weight.max(1),
            gate: None,
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
            calls: CallCounters::default(),
            auth_check: Default::default(),
        }
    }

    /// The secret, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Calls open on this key now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one call on this key in `switchyard_upstream_requests_total`.
    pub fn count_call(&self, upstream: &str, outcome: CallOutcome) {
        self.calls.inc(upstream, &self.short_id, outcome);
    }

    /// Whether persistent state changed since the last call (and clears the mark).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Marks the state as changed (a failed save puts the mark back).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Marks the state as saved (it was just restored from the store).
    pub fn mark_clean(&self) {
        self.dirty.store(false, Ordering::Release);
    }

    /// May this key serve `model` at `now`?
    pub fn availability(&self, model: &str, now: u64) -> Availability {
        if self.parked.load(Ordering::Acquire) {
            let until = self.park.lock().as_ref().and_then(|p| p.until_ms);
            match until {
                Some(u) if u <= now => {
                    self.unpark();
                    self.log_recovery(
                        format!(
                            "key {} is back in rotation: parked until {}",
                            self.id,
                            fmt_clock(u)
                        ),
                        None,
                    );
                }
                other => return Availability::Parked(other),
            }
        }
        let whole = self.cool_until_ms.load(Ordering::Acquire);
        // the recovery is announced (and the ended cooldown cleared) by the
        // real clock only: `now` may be a caller's look ahead (read only when
        // a cooldown has ended by `now`: a key without one costs no clock read)
        if whole != 0
            && whole <= now
            && whole <= now_ms()
            && self
                .cool_until_ms
                .compare_exchange(whole, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // first look after the cooldown: say so once
            self.log_recovery(
                format!(
                    "key {} is back in rotation: its cooldown ended at {}",
                    self.id,
                    fmt_clock(whole)
                ),
                None,
            );
            self.mark_dirty();
        }
        let mut until = if whole > now { whole } else { 0 };
        if self.model_cools.load(Ordering::Acquire) > 0 {
            let mut map = self.model_cool.lock();
            match map.get(model) {
                Some(&u) if u > now => until = until.max(u),
                Some(&u) if u <= now_ms() => {
                    map.remove(model);
                    self.model_cools.store(map.len(), Ordering::Release);
                    self.log_recovery(
                        format!(
                            "key {} is back in rotation for model {model}: its cooldown ended at {}",
                            self.id,
                            fmt_clock(u)
                        ),
                        Some(model),
                    );
                    self.mark_dirty();
                }
                _ => {}
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
    pub fn cool_until(&self, model: Option<&str>, until_ms: u64, reason: &str) -> u64 {
        let effective = self.cool_here(model, until_ms, reason);
        if effective == until_ms {
            // this call set the deadline: the others learn it
            shared::emit(&self.upstream, &self.fingerprint, || shared::Change::Cool {
                model: model.map(str::to_string),
                until_ms,
                reason: reason.to_string(),
            });
        }
        effective
    }

    /// [`Self::cool_until`] without telling other instances.
    fn cool_here(&self, model: Option<&str>, until_ms: u64, reason: &str) -> u64 {
        let effective = match model {
            None => {
                let prev = self.cool_until_ms.fetch_max(until_ms, Ordering::AcqRel);
                prev.max(until_ms)
            }
            Some(m) => {
                let mut map = self.model_cool.lock();
                let now = now_ms();
                map.retain(|_, u| *u > now);
                let slot = map.entry(m.to_string()).or_insert(0);
                *slot = (*slot).max(until_ms);
                let v = *slot;
                self.model_cools.store(map.len(), Ordering::Release);
                v
            }
        };
        *self.reason.lock() = Some(reason.to_string());
        self.mark_dirty();
        effective
    }

    /// A call on this key failed in a way that says nothing about the key
    /// (5xx, connection failure, timeout, broken answer): counted, no cooldown.
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A 429 for `model` (the upstream's name for it): cools the key until the
    /// latest time the answer names, or [`DEFAULT_COOLDOWN`] ±20% when it names
    /// none; only `model` when the provider says the limit is per model.
    /// `body` is the error answer (for its code). Returns what was decided, for
    /// keys that share the limit ([`Key::share_cooldown`]) and the log.
    pub fn record_rate_limit(&self, limits: &Limits, body: &str, model: &str) -> Cooldown {
        self.record_failure();
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        let (until, why) = match (limits.until_ms, &limits.source) {
            (Some(u), Some(src)) => (u, src.clone()),
            _ => {
                let jitter = 0.8 + rand::random::<f64>() * 0.4;
                (
                    now_ms() + (DEFAULT_COOLDOWN.as_millis() as f64 * jitter) as u64,
                    "no retry signal; default".into(),
                )
            }
        };
        let scope = limits.per_model.then(|| model.to_string());
        let kind = limits
            .limit_type
            .clone()
            .or_else(|| signals::error_code(body))
            .unwrap_or_default();
        let reason = format!("429 {kind}").trim().to_string();
        let reason = format!("{reason}, {why}");
        let until_ms = self.cool_until(scope.as_deref(), until, &reason);
        let text = format!(
            "key {} cooling until {}{} ({reason})",
            self.id,
            fmt_clock(until_ms),
            scope
                .as_deref()
                .map(|m| format!(" for {m}"))
                .unwrap_or_default(),
        );
        let mut fields = self.fields("key_cooldown");
        fields.push(("until", crate::clock::fmt_iso(until_ms)));
        if let Some(m) = &scope {
            fields.push(("model", m.clone()));
        }
        fields.push(("reason", reason.clone()));
        let note = Note::new(text, fields);
        Cooldown {
            until_ms,
            scope,
            reason,
            note,
        }
    }

    /// Cools this key like another key of the same account was (`rate_limit_scope: upstream`).
    pub fn share_cooldown(&self, c: &Cooldown) {
        self.cool_until(c.scope.as_deref(), c.until_ms, &c.reason);
    }

    /// A successful answer that reported an exhausted bucket
    /// (`x-ratelimit-remaining-*: 0`): skip the key until its reset, before it
    /// fails. Returns the log line when the answer named a reset.
    pub fn record_exhausted(&self, limits: &Limits, model: &str) -> Option<String> {
        let until = limits.exhausted_until_ms?;
        let scope = limits.per_model.then_some(model);
        self.cool_until(scope, until, "remaining 0");
        Some(format!(
            "key {} has no requests left; skipping it until {}",
            self.id,
            fmt_clock(until)
        ))
    }

    /// The provider rejected the key itself (401/403, no quota): out of rotation
    /// until an operator enables it. Returns the log line.
    pub fn record_park(&self, reason: &str) -> Note {
        self.record_failure();
        self.park(Park {
            reason: reason.to_string(),
            until_ms: None,
        });
        let mut fields = self.fields("key_parked");
        fields.push(("reason", reason.to_string()));
        Note::new(
            format!(
                "key {} parked ({reason}): out of rotation until an operator enables it",
                self.id
            ),
            fields,
        )
    }

    /// The fields every event of this key's carries.
    fn fields(&self, event: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("event", event.to_string()),
            ("key", self.id.clone()),
            ("upstream", self.upstream.clone()),
        ]
    }

    /// Logs the key's return to rotation (for `model` only, or the whole key).
    fn log_recovery(&self, text: String, model: Option<&str>) {
        let mut fields = self.fields("key_recovered");
        if let Some(m) = model {
            fields.push(("model", m.to_string()));
        }
        Note::new(text, fields).log();
    }

    /// Takes the key out of rotation.
    pub fn park(&self, park: Park) {
        shared::emit(&self.upstream, &self.fingerprint, || {
            shared::Change::Park(park.clone())
        });
        self.park_here(park);
    }

    fn park_here(&self, park: Park) {
        *self.park.lock() = Some(park);
        self.parked.store(true, Ordering::Release);
        self.mark_dirty();
    }

    /// Back into rotation (also clears cooldowns: an operator's "enable" means now).
    pub fn unpark(&self) {
        self.auth_check.clear();
        *self.park.lock() = None;
        self.parked.store(false, Ordering::Release);
        self.mark_dirty();
    }

    /// Clears cooldowns, parking and the reason.
    pub fn reset(&self) {
        self.reset_here();
        shared::emit(&self.upstream, &self.fingerprint, || shared::Change::Reset);
    }

    fn reset_here(&self) {
        self.unpark();
        self.cool_until_ms.store(0, Ordering::Release);
        self.model_cool.lock().clear();
        self.model_cools.store(0, Ordering::Release);
        *self.reason.lock() = None;
        self.mark_dirty();
    }

    /// Applies what another instance says of this key: cooldowns only
    /// extend, a park is taken over, and `reset` (an operator's enable or
    /// reset there) clears both first. Nothing is sent back.
    pub fn apply_shared(&self, reset: bool, s: &KeyState) {
        if reset {
            self.reset_here();
        }
        let now = now_ms();
        let reason = s.reason.as_deref().unwrap_or("cooling (another instance)");
        if s.cool_until_ms > now.max(self.cool_until_ms.load(Ordering::Acquire)) {
            self.cool_here(None, s.cool_until_ms, reason);
        }
        for (m, until) in s.model_cool.iter().filter(|(_, u)| **u > now) {
            let known = self.model_cool.lock().get(m).copied().unwrap_or(0);
            if *until > known {
                self.cool_here(Some(m), *until, reason);
            }
        }
        if let Some(p) = s
            .park
            .as_ref()
            .filter(|p| p.until_ms.is_none_or(|u| u > now))
        {
            if self.park.lock().as_ref() != Some(p) {
                self.park_here(p.clone());
            }
        }
    }

    /// Zeroes the counters.
    pub fn reset_counters(&self) {
        for c in [&self.requests, &self.failures, &self.rate_limited] {
            c.store(0, Ordering::Relaxed);
        }
        self.mark_dirty();
    }

    pub fn state(&self) -> KeyState {
        let now = now_ms();
        KeyState {
            cool_until_ms: self.cool_until_ms.load(Ordering::Acquire),
            model_cool: self
                .model_cool
                .lock()
                .iter()
                .filter(|(_, u)| **u > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            park: if self.parked.load(Ordering::Acquire) {
                self.park.lock().clone()
            } else {
                None
            },
            reason: self.reason.lock().clone(),
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
        {
            let mut m = self.model_cool.lock();
            for (k, v) in &s.model_cool {
                let slot = m.entry(k.clone()).or_insert(0);
                *slot = (*slot).max(*v);
            }
            self.model_cools.store(m.len(), Ordering::Release);
        }
        if let Some(p) = &s.park {
            // restored, not new: nothing to tell the other instances
            self.park_here(p.clone());
        }
        {
            let mut r = self.reason.lock();
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

    /// The key whose short id (`github#2`) or full id (`github#2 (…Xq9f)`) is `id`.
    pub fn find(&self, id: &str) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.short_id == id || k.id == id)
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
}

/// Counts a call in flight on a key for as long as it lives.
pub struct InFlight(Arc<Key>);

impl InFlight {
    pub fn new(key: Arc<Key>) -> InFlight {
        key.in_flight.fetch_add(1, Ordering::Relaxed);
        key.requests.fetch_add(1, Ordering::Relaxed);
        key.last_used_ms.store(now_ms(), Ordering::Relaxed);
        key.mark_dirty();
        InFlight(key)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
