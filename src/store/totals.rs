//! Usage totals of a group of requests (a client, a model, a minute), as
//! `/admin/usage` shows them, and as a fleet's instances publish them.

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// Sums over some requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub errors: u64,
    pub estimated: u64,
    pub latency_us: u64,
    pub ttft_us: u64,
    pub ttft_n: u64,
    /// What the requests cost, in picodollars (`prices`).
    pub cost: u64,
}

impl Totals {
    /// Adds one request.
    pub fn add(
        &mut self,
        status: u16,
        tokens: (u64, u64),
        estimated: bool,
        latency_us: u64,
        ttft_us: Option<u64>,
    ) {
        self.requests += 1;
        self.tokens_in += tokens.0;
        self.tokens_out += tokens.1;
        self.errors += u64::from(status >= 400);
        self.estimated += u64::from(estimated);
        self.latency_us += latency_us;
        if let Some(t) = ttft_us {
            self.ttft_us += t;
            self.ttft_n += 1;
        }
    }

    /// Adds another group's totals (saturating: hostile values cannot wrap).
    pub fn merge(&mut self, o: &Totals) {
        for (a, b) in self.fields_mut().into_iter().zip(o.fields()) {
            *a = a.saturating_add(b);
        }
    }

    fn fields(&self) -> [u64; 9] {
        [
            self.requests,
            self.tokens_in,
            self.tokens_out,
            self.errors,
            self.estimated,
            self.latency_us,
            self.ttft_us,
            self.ttft_n,
            self.cost,
        ]
    }

    fn fields_mut(&mut self) -> [&mut u64; 9] {
        [
            &mut self.requests,
            &mut self.tokens_in,
            &mut self.tokens_out,
            &mut self.errors,
            &mut self.estimated,
            &mut self.latency_us,
            &mut self.ttft_us,
            &mut self.ttft_n,
            &mut self.cost,
        ]
    }

    /// `requests,tokens_in,…`: how the fleet stores them.
    pub fn to_text(&self) -> String {
        let f = self.fields().map(|n| n.to_string());
        f.join(",")
    }

    /// What [`Self::to_text`] wrote (or an older instance's, without the
    /// cost); anything else is `None`.
    pub fn from_text(s: &str) -> Option<Totals> {
        let mut t = Totals::default();
        let mut parts = s.split(',');
        let fields = t.fields_mut();
        let count = fields.len();
        for (i, f) in fields.into_iter().enumerate() {
            match parts.next() {
                Some(p) => *f = p.parse().ok()?,
                // the cost (the last field) came later
                None if i == count - 1 => {}
                None => return None,
            }
        }
        parts.next().is_none().then_some(t)
    }
}

/// Groups of one minute: (client, model, key, upstream) → totals.
type Minute = HashMap<[String; 4], Totals>;

/// The totals of the last minutes logged here, for a fleet to publish
/// (`None`: not in a fleet). A minute is the one its records were written
/// in, so a minute once over never changes again.
static ROLLUP: Mutex<Option<Rollup>> = Mutex::new(None);

/// Most groups kept unpublished (a store down for long); the oldest
/// minutes go first.
const MAX_GROUPS: usize = 200_000;

#[derive(Default)]
struct Rollup {
    /// minute → (its groups, changes since it was last published, changes)
    minutes: BTreeMap<u64, (Minute, u64, u64)>,
    groups: usize,
}

/// Keeps per-minute totals from now on (a fleet publishes them).
pub fn keep_rollups() {
    ROLLUP.lock().get_or_insert_with(Rollup::default);
}

/// Whether per-minute totals are kept.
pub fn rollups_on() -> bool {
    ROLLUP.lock().is_some()
}

/// Adds requests written in `minute`: (group, request's totals).
pub fn note(minute: u64, requests: impl Iterator<Item = ([String; 4], Totals)>) {
    let mut r = ROLLUP.lock();
    let Some(r) = r.as_mut() else { return };
    let (groups, _, changes) = r.minutes.entry(minute).or_default();
    let before = groups.len();
    for (g, t) in requests {
        groups.entry(g.map(field_safe)).or_default().merge(&t);
    }
    *changes += 1;
    r.groups += groups.len() - before;
    while r.groups > MAX_GROUPS && r.minutes.len() > 1 {
        if let Some((_, (g, _, _))) = r.minutes.pop_first() {
            r.groups -= g.len();
            crate::metrics::STORE_FAILURES.inc();
        }
    }
}

/// A minute to publish: (minute, its changes so far, its groups).
pub type Unpublished = (u64, u64, Vec<([String; 4], Totals)>);

/// A name as a part of a fleet's usage field: no tabs, at most 256 bytes
/// (a model name comes from a client's body).
fn field_safe(name: String) -> String {
    if name.len() <= 256 && !name.contains('\t') {
        return name;
    }
    let mut end = name.len().min(256);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].replace('\t', " ")
}

/// The minutes with changes not yet published.
pub fn unpublished() -> Vec<Unpublished> {
    let r = ROLLUP.lock();
    let Some(r) = r.as_ref() else {
        return Vec::new();
    };
    r.minutes
        .iter()
        .filter(|(_, (_, published, changes))| published != changes)
        .map(|(m, (g, _, changes))| {
            let groups = g.iter().map(|(k, t)| (k.clone(), *t)).collect();
            (*m, *changes, groups)
        })
        .collect()
}

/// `minute` was published as of `changes`; minutes before `current - 1`
/// that are published go.
pub fn published(minute: u64, changes: u64, current: u64) {
    let mut r = ROLLUP.lock();
    let Some(r) = r.as_mut() else { return };
    if let Some(m) = r.minutes.get_mut(&minute) {
        m.1 = m.1.max(changes);
    }
    let old: Vec<u64> = r
        .minutes
        .iter()
        .filter(|(m, (_, p, c))| **m + 60_000 < current && p == c)
        .map(|(m, _)| *m)
        .collect();
    for m in old {
        if let Some((g, _, _)) = r.minutes.remove(&m) {
            r.groups -= g.len();
        }
    }
}

/// `/admin/usage`'s rows: one per group, busiest first.
pub fn rows(by: &str, groups: HashMap<String, Totals>) -> Vec<Value> {
    let mut rows: Vec<(String, Totals)> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    rows.into_iter()
        .map(|(name, g)| {
            json!({
                by: name,
                "requests": g.requests,
                "tokens_in": g.tokens_in,
                "tokens_out": g.tokens_out,
                "errors": g.errors,
                "estimated": g.estimated,
                "cost_usd": crate::config::quota::dollars(g.cost),
                "avg_latency_ms": g.latency_us as f64 / g.requests.max(1) as f64 / 1000.0,
                "avg_ttft_ms": (g.ttft_n > 0).then(|| g.ttft_us as f64 / g.ttft_n as f64 / 1000.0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_both_ways_and_hostile_text() {
        let mut t = Totals::default();
        t.add(200, (10, 5), false, 1_000, Some(300));
        t.add(429, (0, 0), true, 10, None);
        t.cost = 12;
        let back = Totals::from_text(&t.to_text()).unwrap();
        assert_eq!(back, t);
        // an older instance's totals (no cost) still read
        assert_eq!(Totals::from_text("1,2,3,4,5,6,7,8").unwrap().cost, 0);
        assert_eq!((back.requests, back.errors, back.ttft_n), (2, 1, 1));
        for bad in [
            "",
            "1,2,3",
            "1,2,3,4,5,6,7,8,9,10",
            "a,b,c,d,e,f,g,h",
            "-1,0,0,0,0,0,0,0",
        ] {
            assert_eq!(Totals::from_text(bad), None, "{bad}");
        }
        let mut big = Totals::from_text(&vec![u64::MAX.to_string(); 8].join(",")).unwrap();
        big.merge(&t);
        assert_eq!(big.requests, u64::MAX);
    }

    #[test]
    fn minutes_publish_once_and_names_are_field_safe() {
        assert_eq!(field_safe("gpt\t4o".into()), "gpt 4o");
        assert_eq!(field_safe("é".repeat(200)).len(), 256);
        keep_rollups();
        let one = |client: &str| {
            let mut t = Totals::default();
            t.add(200, (3, 4), false, 10, None);
            ([client.to_string(), "m".into(), "k".into(), "u".into()], t)
        };
        // a minute far in the past: other tests' minutes do not mix in
        let m = 60_000;
        note(m, [one("a"), one("a"), one("b")].into_iter());
        let mine = |all: Vec<Unpublished>| all.into_iter().find(|u| u.0 == m);
        let (_, changes, groups) = mine(unpublished()).unwrap();
        let a = groups.iter().find(|(g, _)| g[0] == "a").unwrap().1;
        assert_eq!((a.requests, a.tokens_in, a.tokens_out), (2, 6, 8));
        // published while more arrived: still to publish
        note(m, [one("a")].into_iter());
        published(m, changes, m + 30_000);
        assert!(mine(unpublished()).is_some());
        let (_, changes, _) = mine(unpublished()).unwrap();
        // published and over: gone
        published(m, changes, m + 10 * 60_000);
        assert!(mine(unpublished()).is_none());
    }
}
