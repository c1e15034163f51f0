//! Whether an upstream is worth an attempt. Passive: consecutive failures
//! (no connection, no answer in time, 5xx) open a circuit for `health.interval`;
//! then one trial request may go, and its outcome closes or reopens the
//! circuit. Active (with `health.path`): a background check
//! (`pingora-load-balancing`'s HTTP health check) every `health.interval`
//! marks the upstream down until the next check, or up at once.
//! Lock-free on the request path: atomics only.

use crate::clock::now_ms;
use crate::metrics;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// May an attempt go to the upstream now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// The circuit's cool-off is over: this one attempt is the trial.
    Trial,
    /// Down until then (ms since epoch).
    No(u64),
}

/// The upstream's health, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthView {
    /// `up`, `down` or `trial`.
    pub state: &'static str,
    pub until_ms: Option<u64>,
    pub reason: Option<String>,
    pub consecutive_failures: u32,
    pub last_check_ms: Option<u64>,
}

pub struct Health {
    upstream: String,
    threshold: u32,
    cool_off_ms: u64,
    failures: AtomicU32,
    /// 0 = closed (up); else down until this time.
    open_until_ms: AtomicU64,
    /// When the running trial request started (ms since epoch); 0 = none.
    trial: AtomicU64,
    last_check_ms: AtomicU64,
    reason: Mutex<Option<String>>,
}

impl Health {
    /// `threshold` consecutive failures open the circuit for `cool_off_ms`.
    pub fn new(upstream: &str, threshold: u32, cool_off_ms: u64) -> Health {
        let h = Health {
            upstream: upstream.to_string(),
            threshold: threshold.max(1),
            cool_off_ms,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            trial: AtomicU64::new(0),
            last_check_ms: AtomicU64::new(0),
            reason: Mutex::new(None),
        };
        h.publish(true);
        h
    }

    fn publish(&self, up: bool) {
        metrics::UPSTREAM_HEALTHY
            .with_label_values(&[self.upstream.as_str()])
            .set(i64::from(up));
    }

    /// Whether an attempt may go now (one caller gets the trial after a cool-off).
    pub fn admits(&self, now: u64) -> Admit {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Yes;
        }
        if now < until {
            return Admit::No(until);
        }
        // one trial at a time; a trial that never reported (its client left)
        // gives way to another after a cool-off
        let started = self.trial.load(Ordering::Acquire);
        if (started == 0 || now.saturating_sub(started) > self.cool_off_ms)
            && self
                .trial
                .compare_exchange(started, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Admit::Trial;
        }
        Admit::No(now + self.cool_off_ms.min(1000))
    }

    /// Logs an event of this upstream's with its fields (and `upstream`).
    fn event(&self, level: log::Level, text: &str, fields: &[(&str, &str)]) {
        let mut all = Vec::with_capacity(fields.len() + 1);
        all.extend_from_slice(fields);
        all.push(("upstream", self.upstream.as_str()));
        crate::logging::event(level, "switchyard::health", text, &all);
    }

    /// The circuit just opened: says so (WARN, with its fields) and in the metric.
    fn went_down(&self, text: &str, until_ms: u64, why: &str) {
        let until = crate::clock::fmt_iso(until_ms);
        let fields = [
            ("event", "upstream_down"),
            ("until", until.as_str()),
            ("reason", why),
        ];
        self.event(log::Level::Warn, text, &fields);
        self.publish(false);
    }

    /// The upstream answered (any answer below 500): the circuit closes.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            self.event(
                log::Level::Info,
                &format!("upstream {} is back: circuit closed", self.upstream),
                &[("event", "upstream_up")],
            );
            self.publish(true);
        }
        self.trial.store(0, Ordering::Release);
        *self.reason.lock() = None;
    }

    /// A failed attempt (no connection, no answer in time, 5xx).
    pub fn record_failure(&self, why: &str) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let was_trial = self.trial.swap(0, Ordering::AcqRel) != 0;
        if n >= self.threshold || was_trial {
            let until = now_ms() + self.cool_off_ms;
            if self.open_until_ms.swap(until, Ordering::AcqRel) == 0 {
                let text = format!(
                    "upstream {} is down after {n} failure(s) in a row ({why}): no attempts for {} ms",
                    self.upstream, self.cool_off_ms
                );
                self.went_down(&text, until, why);
            }
            *self.reason.lock() = Some(format!("{n} failure(s) in a row: {why}"));
        }
    }

    /// The active check failed: down until the next check.
    pub fn check_failed(&self, why: &str) {
        self.last_check_ms.store(now_ms(), Ordering::Relaxed);
        let until = now_ms() + self.cool_off_ms;
        if self.open_until_ms.swap(until, Ordering::AcqRel) == 0 {
            let text = format!("upstream {}: health check failed ({why})", self.upstream);
            self.went_down(&text, until, why);
        }
        self.trial.store(0, Ordering::Release);
        *self.reason.lock() = Some(format!("health check: {why}"));
    }

    /// The active check passed: up at once.
    pub fn check_passed(&self) {
        self.last_check_ms.store(now_ms(), Ordering::Relaxed);
        self.record_success();
    }

    pub fn view(&self, now: u64) -> HealthView {
        let until = self.open_until_ms.load(Ordering::Acquire);
        let last = self.last_check_ms.load(Ordering::Relaxed);
        HealthView {
            state: if until == 0 {
                "up"
            } else if now < until {
                "down"
            } else {
                "trial"
            },
            until_ms: (until != 0).then_some(until),
            reason: self.reason.lock().clone(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            last_check_ms: (last != 0).then_some(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_after_the_threshold_then_one_trial() {
        let h = Health::new("u", 3, 50);
        h.record_failure("502");
        h.record_failure("502");
        assert_eq!(h.admits(now_ms()), Admit::Yes, "two of three");
        h.record_failure("timeout");
        assert!(matches!(h.admits(now_ms()), Admit::No(_)));
        assert_eq!(h.view(now_ms()).state, "down");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(h.admits(now_ms()), Admit::Trial);
        assert!(
            matches!(h.admits(now_ms()), Admit::No(_)),
            "one trial at a time"
        );
        h.record_failure("502 again");
        assert!(
            matches!(h.admits(now_ms()), Admit::No(_)),
            "a failed trial reopens"
        );
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(h.admits(now_ms()), Admit::Trial);
        h.record_success();
        assert_eq!(h.admits(now_ms()), Admit::Yes);
        assert_eq!(h.view(now_ms()).state, "up");
    }

    #[test]
    fn active_checks_take_it_down_and_bring_it_back() {
        let h = Health::new("v", 3, 10_000);
        h.check_failed("connection refused");
        assert!(matches!(h.admits(now_ms()), Admit::No(_)));
        assert!(h
            .view(now_ms())
            .reason
            .unwrap()
            .contains("connection refused"));
        h.check_passed();
        assert_eq!(h.admits(now_ms()), Admit::Yes);
        assert!(h.view(now_ms()).last_check_ms.is_some());
    }
}
