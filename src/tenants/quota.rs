//! Quota counters and their enforcement. Each quota of a client (or the
//! gateway's budget) is one [`Counter`] for the current UTC period, kept
//! across config changes by (owner, period, unit). A call reserves its
//! estimate at admission ([`reserve`]: the prompt's estimate plus its
//! `max_tokens`, or [`OUTPUT_RESERVE`] tokens when it sets none; priced at
//! the asked model's prices for money) and is charged what the upstream
//! reported when it ends ([`Hold::settle`]).
//!
//! Admission passes while what is used plus what calls in flight reserved
//! is under the limit. So concurrent calls can pass a quota only by the
//! last admitted call's reservation plus what calls used beyond their
//! reservations: the documented bound.
//!
//! Failure behaviour: a call dropped before it settles gives its
//! reservation back; all arithmetic saturates; the period rolls over on the
//! first use after its end (the quota clock can be moved forward by tests,
//! see [`advance_clock`]).

use crate::config::quota::{dollars, Period, Quota, Unit};
use crate::error::GatewayError;
use crate::store::totals::Totals;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

/// Output tokens a call that sets no `max_tokens` reserves.
pub const OUTPUT_RESERVE: u64 = 1024;

/// Added to the wall clock for quota periods (tests only: see `advance_clock`).
static SKEW_MS: AtomicU64 = AtomicU64::new(0);

/// The quota clock: ms since the epoch.
pub fn now_ms() -> u64 {
    crate::clock::coarse_ms().saturating_add(SKEW_MS.load(Relaxed))
}

/// Moves the quota clock forward by `ms` (`POST /admin/clock`, served only
/// when `SWITCHYARD_TEST_CLOCK=1` is set: a test crossing a period).
pub fn advance_clock(ms: u64) -> u64 {
    SKEW_MS.fetch_add(ms, Relaxed).saturating_add(ms)
}

/// One quota's count for its current period.
#[derive(Debug)]
pub struct Counter {
    /// `client team-a` or `gateway`.
    pub owner: String,
    pub per: Period,
    pub unit: Unit,
    limit: AtomicU64,
    /// The period counted (its start, ms).
    start: AtomicU64,
    /// Settled use this period on this instance.
    used: AtomicU64,
    /// The rest of the fleet's use this period, as last read.
    others: AtomicU64,
    /// What calls in flight reserved.
    reserved: AtomicU64,
    /// Warning thresholds passed this period.
    warned: AtomicUsize,
    /// Of `used`, what the fleet has been told.
    published: AtomicU64,
    /// The period's use before this counter was made was counted (`seed`).
    seeded: AtomicBool,
}

/// A quota's figures now (for views and messages).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub per: Period,
    pub unit: Unit,
    pub limit: u64,
    pub used: u64,
    pub reserved: u64,
    pub resets_ms: u64,
}

/// Counters by (owner, period, counts money).
type Counters = HashMap<(String, Period, bool), Arc<Counter>>;

static COUNTERS: LazyLock<Mutex<Counters>> = LazyLock::new(Default::default);

/// The counter of `owner`'s quota `q` (made on first use; its limit set to `q`'s).
pub fn counter(owner: &str, q: &Quota) -> Arc<Counter> {
    let key = (owner.to_string(), q.per, q.unit == Unit::Usd);
    let mut all = COUNTERS.lock();
    let c = all.entry(key).or_insert_with(|| {
        Arc::new(Counter {
            owner: owner.to_string(),
            per: q.per,
            unit: q.unit,
            limit: AtomicU64::new(q.limit),
            start: AtomicU64::new(q.per.start(now_ms())),
            used: AtomicU64::new(0),
            others: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            warned: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            seeded: AtomicBool::new(false),
        })
    });
    c.limit.store(q.limit, Relaxed);
    c.clone()
}

/// Every counter (for the fleet's exchange).
pub fn all_counters() -> Vec<Arc<Counter>> {
    COUNTERS.lock().values().cloned().collect()
}

impl Counter {
    /// Starts a new period when `now` is past the counted one.
    fn roll(&self, now: u64) {
        let start = self.per.start(now);
        let old = self.start.load(Relaxed);
        if old < start
            && self
                .start
                .compare_exchange(old, start, Relaxed, Relaxed)
                .is_ok()
        {
            self.used.store(0, Relaxed);
            self.others.store(0, Relaxed);
            self.published.store(0, Relaxed);
            self.warned.store(0, Relaxed);
        }
    }

    /// The figures now.
    pub fn read(&self) -> Reading {
        let now = now_ms();
        self.roll(now);
        Reading {
            per: self.per,
            unit: self.unit,
            limit: self.limit.load(Relaxed),
            used: self.used_total(),
            reserved: self.reserved.load(Relaxed),
            resets_ms: self.per.next(now),
        }
    }

    fn used_total(&self) -> u64 {
        self.used
            .load(Relaxed)
            .saturating_add(self.others.load(Relaxed))
    }

    /// Reserves `amount` if the quota is not used up (use plus reservations
    /// under the limit).
    fn try_reserve(&self, amount: u64) -> Result<(), Reading> {
        self.roll(now_ms());
        let limit = self.limit.load(Relaxed);
        let taken = self.reserved.fetch_update(Relaxed, Relaxed, |r| {
            (self.used_total().saturating_add(r) < limit).then_some(r.saturating_add(amount))
        });
        taken.map(|_| ()).map_err(|_| self.read())
    }

    /// Replaces a reservation of `reserved` with the use `actual`.
    fn settle(&self, reserved: u64, actual: u64, warn_at: &[f64]) {
        let _ = self
            .reserved
            .fetch_update(Relaxed, Relaxed, |r| Some(r.saturating_sub(reserved)));
        if actual == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_add(actual)));
        self.warn(warn_at);
    }

    /// Logs and counts each threshold of `warn_at` the use passed this period.
    fn warn(&self, warn_at: &[f64]) {
        let limit = self.limit.load(Relaxed).max(1) as f64;
        let share = self.used_total() as f64 / limit;
        let passed = warn_at.iter().filter(|t| share >= **t).count();
        let before = self.warned.fetch_max(passed, Relaxed);
        if passed <= before {
            return;
        }
        let mut sorted: Vec<f64> = warn_at.to_vec();
        sorted.sort_by(f64::total_cmp);
        for t in sorted.iter().skip(before).take(passed - before) {
            let threshold = format!("{}%", (t * 100.0).round());
            log::warn!(
                "quota: {} has used {:.0}% of its {} per {} ({})",
                self.owner,
                share * 100.0,
                amount(self.unit, self.limit.load(Relaxed)),
                self.per.as_str(),
                threshold
            );
            crate::metrics::QUOTA_WARNINGS
                .with_label_values(&[
                    &self.owner,
                    self.per.as_str(),
                    self.unit.as_str(),
                    &threshold,
                ])
                .inc();
        }
    }

    /// Use not yet told to the fleet, and the period it belongs to.
    pub fn unpublished(&self) -> (u64, u64) {
        let used = self.used.load(Relaxed);
        let told = self.published.load(Relaxed);
        (self.start.load(Relaxed), used.saturating_sub(told))
    }

    /// The fleet now counts `delta` more of this period's use (`start`),
    /// `fleet_total` in all.
    pub fn published(&self, start: u64, delta: u64, fleet_total: u64) {
        if self.start.load(Relaxed) != start {
            return;
        }
        // what the fleet's total holds of this instance's use
        let told = self
            .published
            .fetch_add(delta, Relaxed)
            .saturating_add(delta);
        self.others.store(fleet_total.saturating_sub(told), Relaxed);
    }

    pub fn period_start(&self) -> u64 {
        self.start.load(Relaxed)
    }
}

/// Counts, for each counter not counted yet, what its period used before
/// it was made, from the usage log (one instance: a fleet's counts live in
/// its store): at start, and for a quota added or a client made later.
/// `owned`: (client name, none for the gateway's budget; its counter).
pub fn seed(owned: &[(Option<&str>, &Arc<Counter>)]) {
    let fresh: Vec<_> = owned
        .iter()
        .filter(|(_, c)| !c.seeded.swap(true, Relaxed))
        .collect();
    let Some(log) = crate::store::usage::log().filter(|_| !fresh.is_empty()) else {
        return;
    };
    let mut by_start: HashMap<u64, HashMap<String, Totals>> = HashMap::new();
    for (client, c) in fresh {
        let start = c.period_start();
        let groups = by_start
            .entry(start)
            .or_insert_with(|| log.totals("client", start).unwrap_or_default());
        let used = groups
            .iter()
            .filter(|(name, _)| client.is_none_or(|n| name.as_str() == n))
            .map(|(_, t)| match c.unit {
                Unit::Tokens => t.tokens_in.saturating_add(t.tokens_out),
                Unit::Usd => t.cost,
            })
            .fold(0, u64::saturating_add);
        c.used.fetch_add(used, Relaxed);
    }
}

/// `100,000 tokens` or `$5.00`.
pub fn amount(unit: Unit, n: u64) -> String {
    match unit {
        Unit::Tokens => format!("{} tokens", grouped(n)),
        Unit::Usd => format!("${:.2}", dollars(n)),
    }
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a call reserved of its quotas, settled when it ends.
#[derive(Debug)]
pub struct Hold {
    parts: Vec<(Arc<Counter>, u64)>,
    warn_at: Arc<[f64]>,
    settled: AtomicBool,
}

impl Hold {
    /// Charges `tokens` and `cost` (picodollars) in place of the reservations.
    pub fn settle(&self, tokens: u64, cost: u64) {
        if self.settled.swap(true, Relaxed) {
            return;
        }
        for (c, reserved) in &self.parts {
            let actual = if c.unit == Unit::Usd { cost } else { tokens };
            c.settle(*reserved, actual, &self.warn_at);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // never settled (the call was dropped): its reservations go back
        self.settle(0, 0);
    }
}

/// The quotas a call of the caller counts against: its client's, then the gateway's.
pub type Quotas<'a> = (&'a [Arc<Counter>], &'a [Arc<Counter>]);

/// Reserves a call's estimate (`tokens`, `cost` in picodollars) on every
/// quota in `quotas`; `None` when there are none. A used-up quota refuses
/// with [`GatewayError::QuotaExceeded`] and nothing stays reserved.
pub fn reserve(
    quotas: Quotas<'_>,
    who: &dyn Fn() -> String,
    tokens: u64,
    cost: u64,
    warn_at: &Arc<[f64]>,
) -> Result<Option<Hold>, GatewayError> {
    let (own, gateway) = quotas;
    if own.is_empty() && gateway.is_empty() {
        return Ok(None);
    }
    let mut hold = Hold {
        parts: Vec::with_capacity(own.len() + gateway.len()),
        warn_at: warn_at.clone(),
        settled: AtomicBool::new(false),
    };
    for (c, gw) in own
        .iter()
        .map(|c| (c, false))
        .chain(gateway.iter().map(|c| (c, true)))
    {
        let amount = if c.unit == Unit::Usd { cost } else { tokens };
        if let Err(r) = c.try_reserve(amount) {
            // `hold` gives back what it took when dropped
            return Err(exceeded(&who(), gw, &r));
        }
        hold.parts.push((c.clone(), amount));
    }
    Ok(Some(hold))
}

/// The 429 for a used-up quota. The gateway's budget is named without
/// figures: what all clients spent is no one client's business.
fn exceeded(who: &str, gateway: bool, r: &Reading) -> GatewayError {
    let wait = r.resets_ms.saturating_sub(now_ms()).max(1000);
    let retry_after = std::time::Duration::from_millis(wait);
    let resets = crate::clock::fmt_iso(r.resets_ms);
    if gateway {
        return GatewayError::QuotaExceeded {
            message: format!(
                "The gateway's budget for this {} is used up (limits.budget); it resets at {resets}.",
                r.per.as_str()
            ),
            setting: "limits.budget",
            retry_after,
        };
    }
    let reserved = if r.reserved > 0 {
        format!(
            " ({} more reserved by calls in flight)",
            amount(r.unit, r.reserved)
        )
    } else {
        String::new()
    };
    let used = match r.unit {
        Unit::Tokens => grouped(r.used),
        Unit::Usd => format!("${:.4}", dollars(r.used)),
    };
    GatewayError::QuotaExceeded {
        message: format!(
            "{who} has used {used} of its {} per {}{reserved}; the quota resets at {resets}.",
            amount(r.unit, r.limit),
            r.per.as_str(),
        ),
        setting: "clients.quotas",
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(per: Period, unit: Unit, limit: u64) -> Quota {
        Quota { per, unit, limit }
    }

    #[test]
    fn reservations_bound_concurrent_use() {
        let c = counter("client t-bound", &q(Period::Day, Unit::Tokens, 1000));
        let warn: Arc<[f64]> = Arc::from(vec![0.5]);
        let quotas = [c.clone()];
        // 300 a call: the 4th is admitted (900 < 1000), the 5th not
        let holds: Vec<Hold> = (0..4)
            .map(|_| {
                reserve((&quotas, &[]), &|| "Client `t`".into(), 300, 0, &warn)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let e = reserve((&quotas, &[]), &|| "Client `t`".into(), 300, 0, &warn).unwrap_err();
        assert!(
            e.message()
                .contains("has used 0 of its 1,000 tokens per day (1,200 tokens more reserved"),
            "{}",
            e.message()
        );
        assert_eq!(e.status(), 429);
        for h in &holds {
            h.settle(300, 0);
        }
        // 1200 used: over by one reservation at most
        assert_eq!(c.read().used, 1200);
        assert_eq!(c.read().reserved, 0);
        let e = reserve((&quotas, &[]), &|| "Client `t`".into(), 1, 0, &warn).unwrap_err();
        assert!(
            e.message()
                .contains("has used 1,200 of its 1,000 tokens per day; the quota resets at"),
            "{}",
            e.message()
        );
        assert!(e.retry_after().unwrap() > 0);
    }

    #[test]
    fn dropped_calls_give_back_and_periods_roll() {
        let c = counter(
            "client t-roll",
            &q(Period::Day, Unit::Usd, 5_000_000_000_000),
        );
        let warn: Arc<[f64]> = Arc::from(vec![]);
        let quotas = [c.clone()];
        drop(reserve((&quotas, &[]), &|| "x".into(), 0, 4_000_000_000_000, &warn).unwrap());
        assert_eq!(c.read().reserved, 0);
        let h = reserve((&quotas, &[]), &|| "x".into(), 0, 1, &warn)
            .unwrap()
            .unwrap();
        h.settle(10, 6_000_000_000_000);
        let e = reserve((&quotas, &[]), &|| "x".into(), 0, 1, &warn).unwrap_err();
        assert!(
            e.message().contains("$6.0000 of its $5.00 per day"),
            "{}",
            e.message()
        );
        // the next day (rolling does not go back when the clock reads earlier)
        c.roll(now_ms() + 86_400_000);
        assert_eq!(c.read().used, 0);
        assert!(reserve((&quotas, &[]), &|| "x".into(), 0, 1, &warn).is_ok());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(amount(Unit::Usd, 2_500_000_000_000), "$2.50");
    }
}
