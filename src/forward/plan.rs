//! The attempt plan: which candidate the next attempt uses (model → route →
//! key) and what each attempt's verdict means for the request. Plain data and
//! logic: no sockets, no sleeping; the I/O loop in [`super`] asks [`Plan::next`],
//! makes the attempt, and tells the plan with [`Plan::record`].
//!
//! Rules (DESIGN.md's key pool section):
//! - candidates are tried model by model (the asked model, then its
//!   fallbacks), upstream by upstream (the first chosen by weight among those
//!   serving the model, the others in config order), key by key as the pool's
//!   strategy picks them; cooling and parked keys are skipped, and so are
//!   upstreams whose circuit is open (they cost no attempt);
//! - a rate-limited or parked key ([`Verdict::Rotate`]) moves on to the next
//!   key at once and does not count as a failed attempt;
//! - a transient failure ([`Verdict::Transient`]: 5xx, reset, broken answer)
//!   counts toward `retry.attempts`; the next attempt waits an exponential
//!   backoff with ±25% jitter first and goes to the same upstream's next key,
//!   or, when the upstream has only one key, to that key once more, then on;
//! - a silent upstream ([`Verdict::UpstreamDown`]: no connection or no answer
//!   head in time) counts too, but the plan moves to the next upstream at once:
//!   its other keys would wait just as long;
//! - `retry.attempts` is per model: a fallback model starts with its own
//!   budget (and without backoff);
//! - `context_length_exceeded` ([`Verdict::NextModel`]) skips the rest of the
//!   model's candidates: only a fallback model may take it;
//! - when a model's candidates are all cooling and the earliest recovers
//!   within `retry.max_wait`, the plan waits for it and tries that model again
//!   rather than falling back;
//! - when no candidate is left and some key recovers within the client's
//!   patience (`limits.queue_timeout` from the request's start) and before the
//!   total deadline, the plan waits for it (at most [`MAX_WAITS`] times) and
//!   starts over; otherwise a request whose last failure was not transient
//!   gets 429 with the recovery time, and any other ends with its last failure;
//! - a model gets no attempt once it had `retry.attempts` transient failures,
//!   and nothing is attempted after the total deadline (the first attempt
//!   always goes); after a spent budget the plan does not wait for recoveries.

use crate::keys::{Key, Pick};
use crate::state::{Route, Snapshot};
use crate::upstream::health::Admit;
use crate::upstream::Upstream;
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most times one request waits for a cooling key to recover.
pub const MAX_WAITS: u32 = 8;

/// Added to a wait for a recovery, so the key is ready when the wait ends.
pub const WAIT_MARGIN: Duration = Duration::from_millis(5);

/// What one request may spend.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Transient failures allowed (`retry.attempts`, at least 1).
    pub max_failures: u32,
    /// Backoff before the first retry (`retry.backoff`); doubles each time.
    pub backoff: Duration,
    /// No attempt starts after this (`timeouts.total` from the start).
    pub deadline: Instant,
    /// Waits for a recovery must end by this (`limits.queue_timeout` from the start).
    pub patience: Instant,
    /// A model whose keys recover this soon is waited for (`retry.max_wait`).
    pub max_wait: Duration,
}

impl Budget {
    /// The budget `snap`'s config gives a request that arrived at `start`.
    pub fn of(snap: &Snapshot, start: Instant) -> Budget {
        let c = &snap.config;
        Budget {
            max_failures: c.retry.attempts.max(1),
            backoff: c.retry.backoff,
            deadline: start + c.timeouts.total,
            patience: start + c.limits.queue_timeout,
            max_wait: c.retry.max_wait,
        }
    }
}

/// The upstream and key of one attempt.
pub struct Candidate<'s> {
    /// The model this attempt serves (the asked one or a fallback).
    pub model: &'s str,
    pub route: Route<'s>,
    pub upstream: &'s Arc<Upstream>,
    /// `None` for an upstream without keys.
    pub key: Option<Arc<Key>>,
    /// The estimate charged on the upstream's `tpm`, to correct after the call.
    pub charge: Option<crate::limits::tokens::Charge>,
}

/// What an attempt that did not end the request means. `F` is what the request
/// ends with if nothing better comes (an upstream answer or the gateway's error).
#[derive(Debug)]
pub enum Verdict<F> {
    /// The key is rate limited or parked (its state is already recorded): try
    /// the next key now; not a failed attempt. `note` is logged with the next choice.
    Rotate {
        failure: F,
        note: Option<crate::keys::Note>,
    },
    /// A transient failure: counted; retried after a backoff (the same
    /// upstream's next key, or its only key once more, then elsewhere).
    Transient(F),
    /// The upstream did not connect or answer in time: counted; the next
    /// upstream right away (none of this upstream's other keys).
    UpstreamDown(F),
    /// The request does not fit this model: go on with the next model.
    NextModel(F),
}

/// How a request ends when no attempt delivered.
#[derive(Debug, PartialEq)]
pub enum GiveUp<F> {
    /// The last failure, as it is.
    Last(F),
    /// Every candidate is cooling beyond the client's patience: 429 with this `Retry-After`.
    RateLimited { retry_after: Duration },
    /// No candidate could be tried at all (every key parked, none recovering).
    Unavailable,
    /// Every upstream serving the model is out of rotation (its circuit is
    /// open); this one (index) was the first skipped.
    UpstreamDown { upstream: usize },
}

/// The plan's answer to "what now?".
pub enum Next<'s, F> {
    /// Sleep `backoff`, then attempt `candidate`.
    Attempt {
        candidate: Candidate<'s>,
        backoff: Duration,
    },
    /// Sleep `wait` (plus [`WAIT_MARGIN`]) for the earliest recovery, then ask again.
    Wait { wait: Duration },
    /// Stop: nothing more to try.
    GiveUp(GiveUp<F>),
}

/// One request's attempt plan over `snap` (see the module doc for the rules).
pub struct Plan<'s, F> {
    snap: &'s Snapshot,
    /// Try this upstream (index) first, with this key (fingerprint) first.
    prefer: Option<(usize, String)>,
    /// The call is in Anthropic's Messages API (see [`Plan::for_api`]).
    anthropic: bool,
    /// Only this upstream, under no model name.
    pinned: Option<usize>,
    models: SmallVec<[&'s str; 4]>,
    budget: Budget,
    /// Cursor: model index, its routes, route index, keys tried on that route.
    model: usize,
    routes: SmallVec<[Route<'s>; 4]>,
    route: usize,
    tried: SmallVec<[usize; 8]>,
    keyless_done: bool,
    /// Earliest recovery seen in this pass (ms since epoch), and for the current model.
    earliest: Option<u64>,
    model_earliest: Option<u64>,
    /// The route's only key was retried once already.
    retried_same: bool,
    /// The next attempt goes without backoff (after a silent upstream).
    no_backoff: bool,
    /// Some model spent its attempts budget: no more waiting for recoveries.
    budget_out: bool,
    /// An upstream skipped because its circuit is open (the first one).
    skipped_down: Option<usize>,
    /// An upstream skipped because its own `rpm`/`tpm` was full (the first one).
    skipped_limited: Option<usize>,
    /// The request's estimated tokens, charged on upstream `tpm` limits.
    tokens: u64,
    waits: u32,
    attempts: u32,
    failures: u32,
    /// The last failure and whether it was transient.
    last: Option<(F, bool)>,
    /// A rotation's log line, waiting for the next choice.
    pending_note: Option<crate::keys::Note>,
    note: Option<crate::keys::Note>,
}

impl<'s, F> Plan<'s, F> {
    /// A plan for `model` (then its fallbacks) within `budget`.
    pub fn new(snap: &'s Snapshot, model: &'s str, budget: Budget) -> Plan<'s, F> {
        Self::with(snap, model, None, false, budget)
    }

    /// A plan for a call in Anthropic's Messages API (`anthropic`): only
    /// `kind: anthropic` upstreams take it; any other call never reaches one.
    pub fn for_api(
        snap: &'s Snapshot,
        model: &'s str,
        anthropic: bool,
        budget: Budget,
    ) -> Plan<'s, F> {
        Self::with(snap, model, None, anthropic, budget)
    }

    /// A plan for a call that names no model: only upstream `pinned`'s keys.
    pub fn pinned(snap: &'s Snapshot, pinned: usize, budget: Budget) -> Plan<'s, F> {
        Self::with(snap, "", Some(pinned), false, budget)
    }

    fn with(
        snap: &'s Snapshot,
        model: &'s str,
        pinned: Option<usize>,
        anthropic: bool,
        budget: Budget,
    ) -> Plan<'s, F> {
        let models = match pinned {
            Some(_) => smallvec::smallvec![model],
            None => snap.model_chain(model),
        };
        let routes = Self::routes_of(snap, pinned, models[0], anthropic);
        Plan {
            prefer: None,
            anthropic,
            pinned,
            snap,
            models,
            budget,
            model: 0,
            routes,
            route: 0,
            tried: SmallVec::new(),
            keyless_done: false,
            earliest: None,
            model_earliest: None,
            retried_same: false,
            no_backoff: false,
            budget_out: false,
            skipped_down: None,
            skipped_limited: None,
            tokens: 1,
            waits: 0,
            attempts: 0,
            failures: 0,
            last: None,
            pending_note: None,
            note: None,
        }
    }

    /// Tries upstream `name` first (when it serves the model), with the key
    /// of `fingerprint` first (when it is usable).
    pub fn prefer(mut self, name: &str, fingerprint: String) -> Self {
        let at = self
            .routes
            .iter()
            .position(|r| self.snap.upstreams[r.upstream].name() == name);
        if let Some(at) = at {
            let route = self.routes.remove(at);
            self.prefer = Some((route.upstream, fingerprint));
            self.routes.insert(0, route);
        }
        self
    }

    /// The key for `route` on `upstream`: the preferred one when it is
    /// usable, else the strategy's; `Some(None)`: an upstream without keys,
    /// once. `None`: no key now (its recovery noted): the next route.
    fn choose_key(
        &mut self,
        route: Route<'s>,
        upstream: &Upstream,
        now_ms: u64,
    ) -> Option<Option<Arc<Key>>> {
        let preferred = self
            .prefer
            .as_ref()
            .filter(|(u, _)| *u == route.upstream)
            .and_then(|(_, fp)| {
                upstream
                    .keys
                    .ready(fp, route.upstream_model, &self.tried, now_ms)
            });
        let picked = match preferred {
            Some((i, k)) => Pick::Key(i, k),
            None => upstream
                .keys
                .pick(route.upstream_model, &self.tried, now_ms),
        };
        match picked {
            Pick::Key(i, k) => {
                self.tried.push(i);
                Some(Some(k))
            }
            Pick::None { .. } if upstream.keys.is_empty() && !self.keyless_done => {
                self.keyless_done = true;
                Some(None)
            }
            Pick::None { earliest_ms, .. } => {
                if let Some(e) = earliest_ms {
                    self.recovers_at(e);
                }
                None
            }
        }
    }

    /// Charges `tokens` (the request's estimate) on upstreams' `tpm`.
    pub fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = tokens.max(1);
        self
    }

    /// The first upstream skipped because its own `rpm`/`tpm` was full.
    pub fn skipped_limited(&self) -> Option<usize> {
        self.skipped_limited
    }

    /// The models this request may be served by, in order.
    pub fn models(&self) -> &[&'s str] {
        &self.models
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Transient failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The log line of the last decision, if it has one (a rotation with the
    /// key chosen next: `key … cooling until …; next: github#2 (…a8Kz)`).
    pub fn take_note(&mut self) -> Option<crate::keys::Note> {
        self.note.take()
    }

    fn routes_of(
        snap: &'s Snapshot,
        pinned: Option<usize>,
        model: &'s str,
        anthropic: bool,
    ) -> SmallVec<[Route<'s>; 4]> {
        match pinned {
            Some(upstream) => smallvec::smallvec![Route {
                upstream,
                upstream_model: "",
            }],
            None => {
                let mut routes = snap.balanced_routes(model);
                routes.retain(|r| snap.upstreams[r.upstream].conf.anthropic == anthropic);
                routes
            }
        }
    }

    /// Something skipped this pass recovers at `ms` (since the epoch).
    fn recovers_at(&mut self, ms: u64) {
        self.earliest = Some(self.earliest.map_or(ms, |x| x.min(ms)));
        self.model_earliest = Some(self.model_earliest.map_or(ms, |x| x.min(ms)));
    }

    /// No key of the current route tried yet.
    fn clear_keys(&mut self) {
        self.tried.clear();
        self.keyless_done = false;
        self.retried_same = false;
    }

    /// Back to the current model's first route, as if it had not been tried.
    fn rewind(&mut self) {
        self.route = 0;
        self.model_earliest = None;
        self.clear_keys();
    }

    /// The cursor on model `model`'s first route (its routes looked up again).
    fn enter_model(&mut self, model: usize) {
        self.model = model;
        self.rewind();
        self.routes = match self.models.get(model) {
            Some(m) => Self::routes_of(self.snap, self.pinned, m, self.anthropic),
            None => SmallVec::new(),
        };
    }

    fn next_route(&mut self) {
        self.route += 1;
        self.clear_keys();
    }

    /// The next model, with a budget of its own.
    fn next_model(&mut self) {
        self.failures = 0;
        self.enter_model(self.model + 1);
    }

    fn past_deadline(&self, now: &impl Fn() -> Instant) -> bool {
        // (the first attempt starts right away: no clock read)
        self.attempts > 0 && now() >= self.budget.deadline
    }

    /// The current model's candidates are used up: if its earliest recovery is
    /// within `retry.max_wait` (and the client's patience and the deadline),
    /// start the model over after that wait.
    fn short_wait(&mut self, now_ms: u64, now: Instant) -> Option<Duration> {
        let at = self.model_earliest?;
        let wait = Duration::from_millis(at.saturating_sub(now_ms));
        if self.budget_out
            || wait > self.budget.max_wait
            || self.waits >= MAX_WAITS
            || now + wait >= self.budget.deadline
            || wait > self.budget.patience.saturating_duration_since(now)
        {
            return None;
        }
        self.waits += 1;
        self.earliest = None;
        self.rewind();
        Some(wait)
    }

    /// What to do next, at `now_ms` (wall clock, for key recovery times) and
    /// `now` (monotonic, read only when needed).
    pub fn next(&mut self, now_ms: u64, now: impl Fn() -> Instant) -> Next<'s, F> {
        loop {
            if self.model >= self.models.len() {
                return self.end_of_pass(now_ms, now());
            }
            let Some(route) = self.routes.get(self.route).copied() else {
                if let Some(wait) = self.short_wait(now_ms, now()) {
                    self.note = self.pending_note.take().map(|n| {
                        n.then(
                            "next: the same model, after the wait",
                            ("next", "wait".into()),
                        )
                    });
                    return Next::Wait { wait };
                }
                self.next_model();
                continue;
            };
            if self.past_deadline(&now) {
                self.model = self.models.len();
                continue;
            }
            if self.failures >= self.budget.max_failures {
                // this model's budget is spent; a fallback gets its own
                self.budget_out = true;
                self.next_model();
                continue;
            }
            let snap: &'s Snapshot = self.snap;
            let upstream = &snap.upstreams[route.upstream];
            if let Admit::No(_) = upstream.health.admits(now_ms) {
                // out of rotation: costs no attempt (and is no recovery to wait for)
                self.skipped_down.get_or_insert(route.upstream);
                self.next_route();
                continue;
            }
            let Some(key) = self.choose_key(route, upstream, now_ms) else {
                self.next_route();
                continue;
            };
            let charge = match upstream.limits.admit(now_ms, self.tokens) {
                Ok(c) => c,
                Err(ms) => {
                    // the provider's own limit is full: like a cooling key, a
                    // recovery to wait for (unless the call can never fit)
                    if ms != u64::MAX {
                        let e = now_ms + ms;
                        self.recovers_at(e);
                    }
                    self.skipped_limited.get_or_insert(route.upstream);
                    self.next_route();
                    continue;
                }
            };
            self.note = self.pending_note.take().map(|n| {
                let next = key.as_ref().map_or(upstream.name(), |k| k.id.as_str());
                n.then(&format!("next: {next}"), ("next", next.to_string()))
            });
            let skip_backoff = std::mem::take(&mut self.no_backoff);
            let backoff = match &self.last {
                Some((_, true)) if self.failures > 0 && !skip_backoff => {
                    let base = self
                        .budget
                        .backoff
                        .saturating_mul(1 << (self.failures - 1).min(6));
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    base.mul_f64(jitter)
                        .min(self.budget.deadline.saturating_duration_since(now()))
                }
                _ => Duration::ZERO,
            };
            self.attempts += 1;
            return Next::Attempt {
                candidate: Candidate {
                    model: self.models[self.model],
                    route,
                    upstream,
                    key,
                    charge,
                },
                backoff,
            };
        }
    }

    /// Takes the verdict of the attempt [`Plan::next`] last returned.
    pub fn record(&mut self, verdict: Verdict<F>) {
        match verdict {
            Verdict::Rotate { failure, note } => {
                self.pending_note = note;
                self.last = Some((failure, false));
            }
            Verdict::Transient(failure) => {
                self.failures += 1;
                self.last = Some((failure, true));
                // an upstream with one key: that key once more (after the backoff)
                let single = self
                    .routes
                    .get(self.route)
                    .is_some_and(|r| self.snap.upstreams[r.upstream].keys.keys().len() <= 1);
                if single && !self.retried_same {
                    self.retried_same = true;
                    self.tried.clear();
                    self.keyless_done = false;
                }
            }
            Verdict::UpstreamDown(failure) => {
                self.failures += 1;
                self.last = Some((failure, true));
                self.no_backoff = true;
                self.next_route();
            }
            Verdict::NextModel(failure) => {
                self.last = Some((failure, false));
                self.next_model();
            }
        }
    }

    /// Every candidate of this pass was tried or skipped: wait for a recovery
    /// and start over, or give up.
    fn end_of_pass(&mut self, now_ms: u64, now: Instant) -> Next<'s, F> {
        self.note = self
            .pending_note
            .take()
            .map(|n| n.then("next: none", ("next", "none".into())));
        let exhausted = self.budget_out
            || self.failures >= self.budget.max_failures
            || now >= self.budget.deadline;
        if let (Some(at), false) = (self.earliest, exhausted) {
            let wait = Duration::from_millis(at.saturating_sub(now_ms));
            let patience = self.budget.patience.saturating_duration_since(now);
            if wait <= patience && now + wait < self.budget.deadline && self.waits < MAX_WAITS {
                self.waits += 1;
                self.earliest = None;
                self.enter_model(0);
                return Next::Wait { wait };
            }
            if !matches!(self.last, Some((_, true))) {
                return Next::GiveUp(GiveUp::RateLimited { retry_after: wait });
            }
        }
        Next::GiveUp(match (self.last.take(), self.skipped_down) {
            (Some((f, _)), _) => GiveUp::Last(f),
            (None, Some(upstream)) => GiveUp::UpstreamDown { upstream },
            (None, None) => GiveUp::Unavailable,
        })
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
