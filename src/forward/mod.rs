//! The understood lane's upstream leg: ask the attempt [`plan`] for the next
//! candidate (model → upstream → key), make the call ([`attempt`]), judge the
//! answer, and deliver it to the client ([`deliver`]: pass-through, aggregated
//! or synthesized; see [`shape`]). Every failure that happens before a byte
//! reaches the client is retried on the next candidate; a chat or completions
//! stream that breaks after is continued by the next candidate inside the
//! same client stream where its seam allows ([`stream`], [`Resume`]).
//!
//! Invariants: the client's credentials are never forwarded; the upstream key is
//! set only in `Authorization`; an answer that breaks after bytes reached the
//! client never ends like a complete one (SSE gets an error event and no
//! `[DONE]`, other bodies a closed connection).

pub mod admit;
pub mod announced;
pub mod attempt;
pub mod call;
pub mod client;
pub mod deliver;
pub mod edit;
pub mod headers;
pub mod held;
mod judge;
pub mod plan;
pub mod probe;
pub mod shape;
mod step;
pub mod stream;

use crate::clock::{fmt_wait, now_ms};
use crate::config::raw::Continuation;
use crate::config::UpstreamConf;
use crate::error::GatewayError;
use crate::keys::signals;
use crate::metrics::CallOutcome;
use crate::sse::seam::Mode;
use crate::state::Snapshot;
use crate::upstream::Upstream;
use attempt::{Answer, Connector};
pub use call::{Call, Downstream, Outcome, RelayEnd, Resume};
use client::{unless_client_gone, Client};
use plan::{Budget, Candidate, GiveUp, Next, Plan, Verdict};
use std::sync::Arc;
use std::time::Instant;
use step::{Failure, Step};

/// Connects the understood lane to upstreams (idle connections live in each
/// upstream's pool).
pub struct Forwarder {
    connector: Connector,
}

impl Forwarder {
    /// Probes one target (see [`probe::probe`]).
    pub async fn probe(&self, snap: &Snapshot, t: &probe::Target) -> serde_json::Value {
        probe::probe(&self.connector, snap, t).await
    }

    pub fn new(options: Option<pingora::connectors::ConnectorOptions>) -> Forwarder {
        Forwarder {
            connector: Connector::new(options),
        }
    }

    /// Runs the attempt plan for the call's model (then its fallbacks; or the
    /// pinned upstream) and delivers the answer, with CORS headers for `cors`.
    /// On `Err` nothing was written to the client yet. `timeouts.total` and
    /// `limits.queue_timeout` count from `start`, when the request arrived.
    pub async fn run(
        &self,
        client: Client<'_>,
        snap: &Snapshot,
        call: &Call,
        start: Instant,
        outcome: &mut Outcome,
        cors: Option<http::HeaderValue>,
    ) -> Result<RelayEnd, GatewayError> {
        let budget = Budget::of(snap, start);
        let mut down = Downstream {
            client,
            outcome,
            deadline: budget.deadline,
            timeouts: snap.config.timeouts,
            api: call.api,
            choices: call.peek.choices(),
            cors,
            seam_cap: snap.config.retry.continuation_buffer,
            resume: None,
            auth_parked: false,
        };
        let plan: Plan<Failure> = match call.pinned {
            Some(up) => Plan::pinned(snap, up, budget),
            None => Plan::for_api(snap, &call.model, call.anthropic, budget),
        }
        .with_tokens(call.estimate.charge());
        // a follow-up goes to the key that holds its context first
        let plan = match &call.affinity {
            Some(made) => plan.prefer(&made.upstream, made.fingerprint.clone()),
            None => plan,
        };
        // `limits.max_concurrent`: held until the answer (stream included) ends
        let _gateway_slot = match &snap.gateway_gate {
            None => None,
            Some(g) => {
                let queue = snap.config.limits.queue;
                // boxed: a queue wait's state would otherwise size every call's future
                let wait = Box::pin(unless_client_gone(
                    &mut down.client,
                    g.enter(queue, budget.patience),
                ));
                match wait.await {
                    None => return Ok(RelayEnd::ClientGone),
                    Some(slot) => Some(slot?),
                }
            }
        };
        let mut course = Course {
            snap,
            call,
            budget,
            plan,
            failed: None,
        };
        loop {
            let next = course.plan.next(crate::clock::coarse_ms(), Instant::now);
            if let Some(note) = course.plan.take_note() {
                // key rotation: `key … cooling until …; next: …` (INFO, to grep)
                note.log();
            }
            let end = match next {
                Next::Attempt { candidate, backoff } => {
                    self.attempt(&mut down, &mut course, &candidate, backoff)
                        .await
                }
                Next::Wait { wait } => wait_for_recovery(&mut down, call, wait).await,
                Next::GiveUp(end) => Some(course.give_up(&mut down, end).await),
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// One attempt on `candidate` (after its `backoff`): `Some` ends the call,
    /// `None` leaves the next step to the plan (the verdict is recorded).
    async fn attempt(
        &self,
        down: &mut Downstream<'_>,
        course: &mut Course<'_>,
        candidate: &Candidate<'_>,
        backoff: std::time::Duration,
    ) -> Option<Result<RelayEnd, GatewayError>> {
        let (snap, call) = (course.snap, course.call);
        if let Some(e) = admit::too_long(snap, candidate, call.estimate) {
            // no upstream call: a fallback model may have room
            refund(candidate, 0);
            log::info!("{}", e.message());
            course.plan.record(Verdict::NextModel(Failure::Error(e)));
            return None;
        }
        if !backoff.is_zero()
            && unless_client_gone(&mut down.client, tokio::time::sleep(backoff))
                .await
                .is_none()
        {
            return Some(Ok(RelayEnd::ClientGone));
        }
        let patience = course.budget.patience;
        let admitted = match admit::admit(&mut down.client, snap, candidate, patience).await {
            Ok(a) => a,
            Err(admit::Refused::ClientGone) => return Some(Ok(RelayEnd::ClientGone)),
            Err(admit::Refused::Error(e)) if open(down) => {
                return Some(Ok(abandon(down, &e.message()).await))
            }
            Err(admit::Refused::Error(e)) => return Some(Err(e)),
        };
        course.count_retry(candidate);
        begin_attempt(down.outcome, candidate);
        let tokens_before = down.outcome.tokens();
        let step = self.try_candidate(down, candidate, call).await;
        drop(admitted);
        match (down.outcome.tokens(), &step) {
            (Some(after), _) if Some(after) != tokens_before => {
                refund(candidate, after - tokens_before.unwrap_or(0))
            }
            (_, Step::Go(_)) => refund(candidate, 0),
            _ => {}
        }
        match step {
            Step::Done(end) => Some(Ok(end)),
            Step::Fatal(e) if open(down) => Some(Ok(abandon(down, &e.message()).await)),
            Step::Fatal(e) => Some(Err(e)),
            Step::Go(verdict) => {
                if let Verdict::Transient(f) | Verdict::UpstreamDown(f) = &verdict {
                    log::warn!(
                        "attempt {} for model {} on {} with key {} failed: {}",
                        down.outcome.attempts,
                        candidate.model,
                        candidate.upstream.name(),
                        candidate.key.as_ref().map_or("-", |k| k.id.as_str()),
                        f.describe()
                    );
                }
                course.failed = Some((candidate.upstream.clone(), Failure::reason(&verdict)));
                course.plan.record(verdict);
                None
            }
        }
    }

    /// Sends the call to one candidate and judges the answer: delivered, or a
    /// verdict for the plan. What the answer means for the key is recorded on
    /// the key (`Key::record_*`).
    async fn try_candidate(
        &self,
        down: &mut Downstream<'_>,
        cand: &Candidate<'_>,
        call: &Call,
    ) -> Step {
        let up = cand.upstream;
        let key = cand.key.as_deref();
        let failed = || {
            if let Some(k) = key {
                k.record_failure();
            }
        };
        let auto_prefill = match prepare_continuation(down, cand, call) {
            Ok(auto) => auto,
            Err(step) => return step,
        };
        let attempt = match self.send(down, cand, call, auto_prefill).await {
            Some(a) => a,
            // the client left: the upstream call was dropped with the future
            None => return Step::Done(RelayEnd::ClientGone),
        };
        let answer = match attempt {
            Ok(a) => a,
            Err(e @ GatewayError::UpstreamTimeout { .. }) => {
                up.count_call(key, CallOutcome::Timeout);
                up.health.record_failure("no answer in time");
                failed();
                // a silent upstream: its other keys would be as silent
                return Step::Go(Verdict::UpstreamDown(Failure::Error(e)));
            }
            Err(e) => {
                up.count_call(key, CallOutcome::ConnectError);
                up.health.record_failure("unreachable");
                failed();
                return if e.retryable() {
                    Step::Go(Verdict::Transient(Failure::Error(e)))
                } else {
                    Step::Fatal(e)
                };
            }
        };
        let status = answer.status();
        up.count_call(key, CallOutcome::from_status(status));
        if status >= 500 {
            up.health.record_failure("5xx");
        } else {
            up.health.record_success();
        }
        if !(200..300).contains(&status) {
            return judge::judge_error_answer(&self.connector, down, cand, answer).await;
        }
        if let Some(k) = key.filter(|_| answer.reports_exhausted()) {
            let now = std::time::SystemTime::now();
            let limits = signals::read_limits(|n| answer.header_value(n), "", now);
            if let Some(line) = k.record_exhausted(&limits, cand.route.upstream_model) {
                log::info!("{line}");
            }
        }
        match deliver::deliver(down, answer).await {
            Ok(end) => Step::Done(end),
            Err(e @ GatewayError::UpstreamTimeout { .. }) => {
                // a stall mid-stream: the upstream is slow, not the key
                up.health.record_failure("stalled mid-answer");
                failed();
                Step::Go(Verdict::UpstreamDown(Failure::Error(e)))
            }
            Err(e) => {
                failed();
                Step::Go(Verdict::Transient(Failure::Error(e)))
            }
        }
    }

    /// Sends the call to `cand` until it answers (a target that refuses
    /// `auto_prefill` is asked again to restart the stream); `None`: the
    /// client left first.
    async fn send(
        &self,
        down: &mut Downstream<'_>,
        cand: &Candidate<'_>,
        call: &Call,
        mut auto_prefill: bool,
    ) -> Option<Result<Answer, GatewayError>> {
        loop {
            // boxed: its state (request head, connect) is dead while a stream is
            // relayed, and inline it would be held for the stream's whole life
            let attempt = Box::pin(self.connector.attempt(
                cand,
                call,
                &down.timeouts,
                down.deadline,
                down.resume.as_deref(),
            ));
            match unless_client_gone(&mut down.client, attempt).await? {
                Ok(mut refused) if auto_prefill && refused.status() == 400 => {
                    // `continuation: auto`: this target takes no prefill; restart on it
                    auto_prefill = false;
                    let body = Box::pin(refused.read_all(down.deadline, &down.timeouts))
                        .await
                        .unwrap_or_default();
                    refused.release().await;
                    log::info!(
                        "upstream {} refused assistant prefill ({:.200}); restarting the stream there",
                        cand.upstream.name(),
                        String::from_utf8_lossy(&body)
                    );
                    match down.resume.as_deref_mut() {
                        Some(r) if r.open() => r.seam.begin(Mode::Restart),
                        _ => down.resume = None,
                    }
                }
                other => return Some(other),
            }
        }
    }
}

/// One call's way through its plan: the plan, and the last failure (counted
/// as a retry, or a failover, when another attempt follows).
struct Course<'s> {
    snap: &'s Snapshot,
    call: &'s Call,
    budget: Budget,
    plan: Plan<'s, Failure>,
    failed: Option<(Arc<Upstream>, &'static str)>,
}

impl Course<'_> {
    /// Counts the attempt on `candidate` as a retry (and a failover when it
    /// moved to another upstream) after a failed one.
    fn count_retry(&mut self, candidate: &Candidate<'_>) {
        if let Some((up, reason)) = self.failed.take() {
            crate::metrics::RETRIES
                .with_label_values(&[up.name(), reason])
                .inc();
            if !Arc::ptr_eq(&up, candidate.upstream) {
                crate::metrics::FAILOVERS
                    .with_label_values(&[up.name(), reason])
                    .inc();
            }
        }
    }

    /// How the call ends when the plan gives up.
    async fn give_up(
        &self,
        down: &mut Downstream<'_>,
        end: GiveUp<Failure>,
    ) -> Result<RelayEnd, GatewayError> {
        if open(down) {
            let last = match &end {
                GiveUp::Last(f) => f.describe(),
                GiveUp::RateLimited { .. } => "every key is rate limited".into(),
                GiveUp::Unavailable => "no upstream can serve it".into(),
                GiveUp::UpstreamDown { .. } => "every upstream serving it is down".into(),
            };
            return Ok(abandon(down, &last).await);
        }
        let (snap, plan) = (self.snap, &self.plan);
        match end {
            GiveUp::Last(Failure::Answer(buffered)) => {
                Ok(deliver::send_buffered(down, buffered).await)
            }
            GiveUp::Last(Failure::Error(e)) => Err(e),
            GiveUp::RateLimited { retry_after } => Err(GatewayError::RateLimited {
                message: match plan.skipped_limited() {
                    Some(u) => limited_message(snap, u, retry_after),
                    None => snap.exhaustion_message(plan.models(), now_ms()),
                },
                retry_after,
            }),
            GiveUp::Unavailable => Err(snap.unavailable_error(plan.models(), now_ms())),
            GiveUp::UpstreamDown { upstream } => {
                let up = &snap.upstreams[upstream];
                let view = up.health.view(now_ms());
                Err(GatewayError::UpstreamUnreachable {
                    upstream: up.name().to_string(),
                    detail: format!(
                        "out of rotation ({}); every upstream serving this model is down",
                        view.reason.unwrap_or_else(|| "circuit open".into())
                    ),
                })
            }
        }
    }
}

/// Counts an attempt on `c` in `outcome` and names what it is made with.
fn begin_attempt(outcome: &mut Outcome, c: &Candidate<'_>) {
    outcome.attempts += 1;
    outcome.upstream = Some(c.upstream.clone());
    if outcome.served_model.as_deref() != Some(c.model) {
        outcome.served_model = Some(c.model.to_string());
    }
    outcome.key = c.key.clone();
}

/// Gives the tokens a candidate's upstream `tpm` was charged back, keeping `used`.
fn refund(c: &Candidate<'_>, used: u64) {
    if let (Some(w), Some(charge)) = (&c.upstream.limits.tpm, c.charge) {
        w.correct(charge, used);
    }
}

/// Waits for the earliest recovery the plan named; `Some` when the client
/// left meanwhile.
async fn wait_for_recovery(
    down: &mut Downstream<'_>,
    call: &Call,
    wait: std::time::Duration,
) -> Option<Result<RelayEnd, GatewayError>> {
    log::info!(
        "model {}: every candidate is cooling or at its upstream's rpm/tpm; waiting {} for the earliest recovery",
        call.model,
        fmt_wait(wait)
    );
    let sleep = tokio::time::sleep(wait + plan::WAIT_MARGIN);
    if unless_client_gone(&mut down.client, sleep).await.is_none() {
        log::info!("model {}: the client left while waiting", call.model);
        return Some(Ok(RelayEnd::ClientGone));
    }
    None
}

/// Sets up the continuation of a broken stream on `cand`, as its upstream
/// allows: `Ok(true)` when it is asked to prefill under `continuation: auto`;
/// `Err` when it cannot continue a stream the client has part of.
fn prepare_continuation(
    down: &mut Downstream<'_>,
    cand: &Candidate<'_>,
    call: &Call,
) -> Result<bool, Step> {
    let up = cand.upstream;
    let Some(r) = down.resume.as_deref_mut() else {
        return Ok(false);
    };
    match continuation_mode(r, &up.conf, call) {
        Some(m) => {
            r.seam.begin(m);
            Ok(m == Mode::Prefill && up.conf.continuation == Continuation::Auto)
        }
        None if r.open() => Err(Step::Go(Verdict::UpstreamDown(Failure::Error(
            GatewayError::UpstreamUnreachable {
                upstream: up.name().to_string(),
                detail: "it cannot continue a broken stream (continuation: off, or no_stream)"
                    .into(),
            },
        )))),
        // an aggregation nobody saw: start over
        None => {
            down.resume = None;
            Ok(false)
        }
    }
}

/// The 429 message when upstream `u`'s own `rpm`/`tpm` held the request back.
fn limited_message(snap: &Snapshot, u: usize, retry_after: std::time::Duration) -> String {
    let up = &snap.upstreams[u];
    let limits = crate::summary::rates(up.conf.rpm, up.conf.tpm, None, "");
    format!(
        "Upstream `{}` is at the limits the gateway keeps it under ({}), and so is every other candidate; the next call fits in {}.",
        up.name(),
        limits.join(", "),
        fmt_wait(retry_after)
    )
}

/// Whether the client has part of a stream waiting to be continued.
fn open(down: &Downstream<'_>) -> bool {
    down.resume.as_ref().is_some_and(|r| r.open())
}

/// Ends a stream the client has part of when no candidate continued it: an
/// error event naming the break and the last failure, no `[DONE]`.
async fn abandon(down: &mut Downstream<'_>, last: &str) -> RelayEnd {
    let Some(r) = down.resume.take() else {
        return RelayEnd::Complete;
    };
    let mode = r.seam.mode().map_or("none", Mode::as_str);
    crate::metrics::CONTINUATIONS
        .with_label_values(&[mode, "failed"])
        .inc();
    let e = GatewayError::UpstreamProtocol {
        upstream: down
            .outcome
            .upstream
            .as_ref()
            .map_or("-", |u| u.name())
            .to_string(),
        detail: format!(
            "the stream broke ({}) and could not be continued: {last}",
            r.broke
        ),
    };
    log::warn!("{}", e.message());
    // boxed: a rare end that would otherwise size every call's future
    Box::pin(call::end_with_error_event(&mut down.client, &e)).await
}

/// The mode in which `up` continues the broken stream `r`; `None` when it
/// does not (then an open stream skips it and an aggregation starts over).
fn continuation_mode(r: &Resume, up: &UpstreamConf, call: &Call) -> Option<Mode> {
    if up.no_stream {
        return None;
    }
    let body = call.parse_json();
    if body.is_null() {
        // (a body serde_json cannot hold, nested past its depth limit, cannot
        // be reshaped for a continuation)
        return None;
    }
    let prefill = || r.seam.can_prefill(&body);
    match up.continuation {
        Continuation::Off => None,
        Continuation::Prefill => prefill().then_some(Mode::Prefill),
        Continuation::Restart => r.open().then_some(Mode::Restart),
        Continuation::Auto if prefill() => Some(Mode::Prefill),
        Continuation::Auto => r.open().then_some(Mode::Restart),
    }
}
