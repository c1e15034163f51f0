//! Limits a fleet shares (`state.redis.limits`). The store side lives in
//! `fleet::limits`, installed here as a [`Store`]; this module only says
//! what a limit is and what an admission asks, so the limits never depend
//! on the fleet.
//!
//! - `local` mode: every rpm/tpm window and client slot set counts here and
//!   learns, every `sync`, what the other instances hold ([`Shareable`]).
//! - `strict` mode: a client's and the gateway's rpm, tpm and concurrency
//!   are decided by one store call per admission ([`Store::admit`]); a
//!   reservation of tokens is reconciled from the usage, a lease is given back
//!   when the request ends and expires by itself if its instance dies.

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// A limit counted here that the other instances' counts hold back.
pub trait Shareable: Send + Sync {
    /// What this instance holds now: requests or tokens in the window, or
    /// calls in flight.
    fn mine(&self, now_ms: u64) -> u64;
    /// What the other instances held at the last sync.
    fn set_others(&self, n: u64);
}

/// What one limit of an admission is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
    Concurrency,
}

impl Kind {
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Requests => "rpm",
            Kind::Tokens => "tpm",
            Kind::Concurrency => "conc",
        }
    }
}

/// One limit an admission must pass: `amount` more of `limit` for `name`
/// (`client a`, `gateway`).
#[derive(Debug, Clone)]
pub struct Dim {
    pub kind: Kind,
    pub name: String,
    pub limit: u64,
    pub amount: u64,
}

impl Dim {
    /// The store's name of this limit (the limit is part of it: instances
    /// that disagree during a rolling change count apart).
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.kind.tag(), self.name, self.limit)
    }
}

/// An admission granted: per dim, what is left and when (ms) the oldest
/// charge leaves; the second the charges were booked in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    pub left: Vec<(u64, u64)>,
    pub second: u64,
}

/// Why the store did not admit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Dim `index` is full; it has room in `wait_ms` (0: when a call ends).
    Full { index: usize, wait_ms: u64 },
    /// Dim `index` asks more than its whole limit.
    TooLarge { index: usize },
    /// The store failed or is down (the breaker is open).
    Store(String),
}

/// The shared store of a fleet's limits.
#[async_trait]
pub trait Store: Send + Sync {
    /// All of `dims` or none, in one round trip; a [`Kind::Concurrency`] dim
    /// takes lease `lease`.
    async fn admit(&self, dims: &[Dim], lease: &str) -> Result<Granted, Refused>;
    /// Corrects a token reservation booked in `second` by `delta` (queued).
    fn reconcile(&self, id: String, second: u64, delta: i64);
    /// Gives lease `lease` of limit `id` back (queued).
    fn release(&self, id: String, lease: String);
    /// Books model `model`'s next start on upstream `upstream` (pacing):
    /// `Ok(Ok(wait))`, `Ok(Err(wait))` past `max_wait_ms`, `Err` when the
    /// store failed.
    async fn pace(
        &self,
        upstream: &str,
        model: &str,
        interval_ms: u64,
        max_wait_ms: u64,
    ) -> Result<Result<u64, u64>, String>;
}

static STORE: OnceLock<Arc<dyn Store>> = OnceLock::new();
/// Mode: 0 none (one instance), 1 local, 2 strict.
static MODE: AtomicU8 = AtomicU8::new(0);
/// Whether limits refuse calls while the store is down.
static REFUSE: AtomicBool = AtomicBool::new(false);
/// Whether key state refuses calls while the store is down.
static KEYS_REFUSE: AtomicBool = AtomicBool::new(false);
/// Whether the store is down now (set by the fleet).
static DOWN: AtomicBool = AtomicBool::new(false);

/// How this process shares its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Alone,
    Local,
    Strict,
}

/// Installs the fleet's store (once, at start).
pub fn install(store: Arc<dyn Store>, strict: bool, refuse_limits: bool, refuse_keys: bool) {
    let _ = STORE.set(store);
    MODE.store(if strict { 2 } else { 1 }, Ordering::Release);
    REFUSE.store(refuse_limits, Ordering::Release);
    KEYS_REFUSE.store(refuse_keys, Ordering::Release);
    DOWN.store(true, Ordering::Release);
}

pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        0 => Mode::Alone,
        1 => Mode::Local,
        _ => Mode::Strict,
    }
}

/// The fleet says whether the store answers.
pub fn set_down(down: bool) {
    DOWN.store(down, Ordering::Release);
}

/// Whether the store is down now (false without a fleet).
pub fn down() -> bool {
    DOWN.load(Ordering::Acquire)
}

/// The store, when strict admission may ask it now.
pub fn strict_store() -> Option<&'static Arc<dyn Store>> {
    (mode() == Mode::Strict).then(|| STORE.get()).flatten()
}

/// The store, for pacing (either mode).
pub fn store() -> Option<&'static Arc<dyn Store>> {
    STORE.get()
}

/// With the store down: whether limits (`limits`) or else key state
/// refuse calls.
pub fn refuses(limits: bool) -> bool {
    let flag = if limits { &REFUSE } else { &KEYS_REFUSE };
    down() && flag.load(Ordering::Acquire)
}

/// A lease id unique in the fleet: this process's start and a count.
pub fn next_lease() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static PROCESS: OnceLock<String> = OnceLock::new();
    let p = PROCESS.get_or_init(|| format!("{}-{}", std::process::id(), crate::clock::now_ms()));
    format!("{p}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A held lease of a shared concurrency limit: given back when dropped.
#[derive(Debug)]
pub struct Lease {
    pub id: String,
    pub lease: String,
}

impl Lease {
    /// Drops it without giving it back (it was never taken).
    pub fn disarm(mut self) {
        self.id.clear();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        if let Some(s) = STORE.get() {
            s.release(
                std::mem::take(&mut self.id),
                std::mem::take(&mut self.lease),
            );
        }
    }
}

/// A token reservation in the store, to reconcile with the usage.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: String,
    pub second: u64,
    pub tokens: u64,
}

impl Reservation {
    /// Corrects the reservation to `actual` tokens.
    pub fn settle(&self, actual: u64) {
        let delta = i64::try_from(actual).unwrap_or(i64::MAX)
            - i64::try_from(self.tokens).unwrap_or(i64::MAX);
        if delta != 0 {
            if let Some(s) = STORE.get() {
                s.reconcile(self.id.clone(), self.second, delta);
            }
        }
    }
}
