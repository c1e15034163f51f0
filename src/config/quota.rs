//! Quotas and budgets as configured: tokens and/or money per UTC day, week
//! (from Monday) or month, for a client (`clients[].quotas`, a run-time
//! client's `quotas`) or the whole gateway (`limits.budget`). Money is held
//! in picodollars (10⁻¹² USD) so every sum is a whole number.

use serde::{Deserialize, Serialize};

/// Picodollars in a dollar.
pub const PICO: f64 = 1e12;
/// The largest token quota: 10¹⁵ (far beyond any month of any gateway).
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;
/// The largest money quota, in dollars.
pub const MAX_USD: f64 = 1_000_000.0;
/// Most quotas one client (or the gateway) has.
pub const MAX_QUOTAS: usize = 12;

/// A quota's period; each starts at 00:00 UTC (weeks on Monday, months on the 1st).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The start of the period holding `ms` (ms since the epoch, UTC).
    pub fn start(self, ms: u64) -> u64 {
        const DAY: u64 = 86_400_000;
        let day = ms / DAY;
        match self {
            Period::Day => day * DAY,
            // 1970-01-01 was a Thursday: Monday is 3 days before day 0's week start
            Period::Week => (day - (day + 3) % 7) * DAY,
            Period::Month => {
                let (y, m, _) = crate::clock::civil(day);
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// The start of the next period after the one holding `ms`.
    pub fn next(self, ms: u64) -> u64 {
        const DAY: u64 = 86_400_000;
        let start = self.start(ms);
        match self {
            Period::Day => start + DAY,
            Period::Week => start + 7 * DAY,
            Period::Month => {
                let (y, m, _) = crate::clock::civil(start / DAY);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        }
    }
}

/// The day number of a civil date (after 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Tokens,
    /// Picodollars.
    Usd,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Tokens => "tokens",
            Unit::Usd => "usd",
        }
    }
}

/// One validated quota: at most `limit` of `unit` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub per: Period,
    pub unit: Unit,
    /// Tokens, or picodollars.
    pub limit: u64,
}

/// A quota as written: `{per: day, tokens: 100000, usd: 5}` (one or both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub per: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
}

/// Checks quotas written at `path` (`clients[2].quotas`): each error names
/// its field, such as `clients[2].quotas[0].tokens: …`.
pub fn parse(path: &str, raw: &[RawQuota]) -> Result<Vec<Quota>, Vec<String>> {
    let mut out = Vec::new();
    let mut e = Vec::new();
    if raw.len() > MAX_QUOTAS {
        e.push(format!("{path}: at most {MAX_QUOTAS} quotas"));
    }
    for (i, q) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let per = match q.per.trim() {
            "day" => Period::Day,
            "week" => Period::Week,
            "month" => Period::Month,
            other => {
                e.push(format!(
                    "{at}.per: {other:?} is not a period: day, week or month"
                ));
                continue;
            }
        };
        if q.tokens.is_none() && q.usd.is_none() {
            e.push(format!("{at}: give tokens, usd or both"));
        }
        if let Some(t) = q.tokens {
            match whole_tokens(t) {
                Some(limit) => out.push(Quota {
                    per,
                    unit: Unit::Tokens,
                    limit,
                }),
                None => e.push(format!(
                    "{at}.tokens: {t} is not a whole number of tokens from 1 to {MAX_TOKENS}"
                )),
            }
        }
        if let Some(u) = q.usd {
            match picodollars(u).filter(|p| *p > 0 && u <= MAX_USD) {
                Some(limit) => out.push(Quota {
                    per,
                    unit: Unit::Usd,
                    limit,
                }),
                None => e.push(format!(
                    "{at}.usd: {u} is not an amount from 0.000001 to {MAX_USD} dollars"
                )),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for q in &out {
        if !seen.insert((q.per, q.unit)) {
            e.push(format!(
                "{path}: two {} quotas per {}",
                q.unit.as_str(),
                q.per.as_str()
            ));
        }
    }
    if e.is_empty() {
        Ok(out)
    } else {
        Err(e)
    }
}

fn whole_tokens(t: f64) -> Option<u64> {
    (t.is_finite() && t.fract() == 0.0 && t >= 1.0 && t <= MAX_TOKENS as f64).then_some(t as u64)
}

/// Dollars as picodollars, to the microdollar (`None`: negative, not a number, too large).
pub fn picodollars(usd: f64) -> Option<u64> {
    if !usd.is_finite() || !(0.0..=1e7).contains(&usd) {
        return None;
    }
    ((usd * 1e6).round() as u64).checked_mul(1_000_000)
}

/// Picodollars as dollars (for JSON and messages).
pub fn dollars(pico: u64) -> f64 {
    pico as f64 / PICO
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: &str) -> u64 {
        humantime::parse_rfc3339(t)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn periods_start_at_utc_boundaries() {
        let t = ms("2026-12-06T13:45:00Z"); // a Sunday
        assert_eq!(Period::Day.start(t), ms("2026-12-06T00:00:00Z"));
        assert_eq!(Period::Day.next(t), ms("2026-12-07T00:00:00Z"));
        assert_eq!(Period::Week.start(t), ms("2026-11-30T00:00:00Z"));
        assert_eq!(Period::Week.next(t), ms("2026-12-07T00:00:00Z"));
        assert_eq!(Period::Month.start(t), ms("2026-12-01T00:00:00Z"));
        assert_eq!(Period::Month.next(t), ms("2027-01-01T00:00:00Z"));
        let feb = ms("2028-02-29T23:59:59Z");
        assert_eq!(Period::Month.start(feb), ms("2028-02-01T00:00:00Z"));
        assert_eq!(Period::Month.next(feb), ms("2028-03-01T00:00:00Z"));
        let monday = ms("2026-12-07T00:00:00Z");
        assert_eq!(Period::Week.start(monday), monday);
    }

    #[test]
    fn quotas_are_checked_field_by_field() {
        let q = |per: &str, tokens: Option<f64>, usd: Option<f64>| RawQuota {
            per: per.into(),
            tokens,
            usd,
        };
        let ok = parse("q", &[q("day", Some(1000.0), Some(2.5))]).unwrap();
        assert_eq!(
            ok[0],
            Quota {
                per: Period::Day,
                unit: Unit::Tokens,
                limit: 1000
            }
        );
        assert_eq!(ok[1].limit, 2_500_000_000_000);
        for (bad, field) in [
            (q("day", Some(-5.0), None), "q[0].tokens"),
            (q("day", Some(1.5), None), "q[0].tokens"),
            (q("day", Some(1e18), None), "q[0].tokens"),
            (q("day", None, Some(-1.0)), "q[0].usd"),
            (q("day", None, Some(f64::NAN)), "q[0].usd"),
            (q("day", None, Some(5e9)), "q[0].usd"),
            (q("fortnight", Some(5.0), None), "q[0].per"),
            (q("day", None, None), "q[0]:"),
        ] {
            let e = parse("q", &[bad]).unwrap_err();
            assert!(e[0].starts_with(field), "{e:?}");
        }
        let two = parse("q", &[q("day", Some(1.0), None), q("day", Some(2.0), None)]).unwrap_err();
        assert!(two[0].contains("two tokens quotas per day"), "{two:?}");
    }
}
