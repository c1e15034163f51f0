//! The last five minutes of traffic, second by second, for the dashboard's
//! charts and `switchyard status` ("requests/s now"): per second the
//! requests answered, the errors among them (status ≥ 400 or a broken
//! stream) and a latency histogram from which p50/p95/p99 are read.
//!
//! Recording is a handful of relaxed atomics on a fixed ring (no lock, no
//! allocation). A slot is reused when its second comes round again; a request
//! racing that reset may be counted in the wrong second, never lost the
//! process or double-counted for long: the charts are approximate by design,
//! the Prometheus histograms are the exact record.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Seconds kept.
pub const SECONDS: usize = 300;

/// Upper bounds of the latency buckets, in milliseconds (the last is open).
const BOUNDS_MS: [f64; 24] = [
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 25.0, 40.0, 60.0, 100.0, 150.0, 250.0, 400.0,
    600.0, 1000.0, 1500.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
];
const BUCKETS: usize = BOUNDS_MS.len() + 1;

struct Slot {
    /// The second (since the epoch) this slot holds; 0 = empty.
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            second: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: [const { AtomicU32::new(0) }; BUCKETS],
        }
    }
}

/// One second as the dashboard draws it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Second {
    /// Seconds since the epoch.
    pub t: u64,
    pub requests: u32,
    pub errors: u32,
    /// Latency percentiles in ms (bucket upper bounds; `None` with no requests).
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// A ring of [`SECONDS`] slots.
pub struct Series {
    slots: [Slot; SECONDS],
}

impl Default for Series {
    fn default() -> Self {
        Series::new()
    }
}

impl Series {
    pub const fn new() -> Series {
        Series {
            slots: [const { Slot::new() }; SECONDS],
        }
    }

    /// Counts one answered request at second `now_s`.
    pub fn record(&self, now_s: u64, latency_ms: f64, error: bool) {
        let slot = &self.slots[(now_s % SECONDS as u64) as usize];
        let held = slot.second.load(Relaxed);
        if held != now_s
            && slot
                .second
                .compare_exchange(held, now_s, Relaxed, Relaxed)
                .is_ok()
        {
            // this request opened the second: clear what the slot held before
            slot.requests.store(0, Relaxed);
            slot.errors.store(0, Relaxed);
            for b in &slot.latency {
                b.store(0, Relaxed);
            }
        }
        slot.requests.fetch_add(1, Relaxed);
        if error {
            slot.errors.fetch_add(1, Relaxed);
        }
        let b = BOUNDS_MS
            .iter()
            .position(|&ub| latency_ms <= ub)
            .unwrap_or(BUCKETS - 1);
        slot.latency[b].fetch_add(1, Relaxed);
    }

    /// The last `n` whole seconds before `now_s` (oldest first; seconds with
    /// no traffic are zeros).
    pub fn last(&self, now_s: u64, n: usize) -> Vec<Second> {
        let n = n.min(SECONDS - 1);
        (1..=n as u64)
            .rev()
            .map(|back| self.second(now_s.saturating_sub(back)))
            .collect()
    }

    /// Requests per second over the last `n` whole seconds.
    pub fn rate(&self, now_s: u64, n: usize) -> f64 {
        let s = self.last(now_s, n);
        let total: u64 = s.iter().map(|x| u64::from(x.requests)).sum();
        total as f64 / s.len().max(1) as f64
    }

    fn second(&self, t: u64) -> Second {
        let slot = &self.slots[(t % SECONDS as u64) as usize];
        let empty = Second {
            t,
            requests: 0,
            errors: 0,
            p50: None,
            p95: None,
            p99: None,
        };
        if slot.second.load(Relaxed) != t {
            return empty;
        }
        let counts: Vec<u32> = slot.latency.iter().map(|b| b.load(Relaxed)).collect();
        Second {
            requests: slot.requests.load(Relaxed),
            errors: slot.errors.load(Relaxed),
            p50: percentile(&counts, 0.50),
            p95: percentile(&counts, 0.95),
            p99: percentile(&counts, 0.99),
            ..empty
        }
    }
}

/// The bucket bound at quantile `q` of a histogram (the open bucket reads as
/// the last bound).
fn percentile(counts: &[u32], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            return Some(BOUNDS_MS[i.min(BOUNDS_MS.len() - 1)]);
        }
    }
    BOUNDS_MS.last().copied()
}

/// The process's series (recorded by the proxy's `logging`).
pub static TRAFFIC: Series = Series::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_percentiles_and_reuse() {
        let s = Series::new();
        for i in 0..100 {
            s.record(1000, if i < 90 { 4.0 } else { 200.0 }, i >= 98);
        }
        s.record(1001, 1.0, false);
        let last = s.last(1002, 3);
        assert_eq!(last.len(), 3);
        assert_eq!(last[0].requests, 0);
        assert_eq!(last[0].t, 999);
        let x = last[1];
        assert_eq!((x.requests, x.errors), (100, 2));
        assert_eq!(x.p50, Some(5.0));
        assert_eq!(x.p95, Some(250.0));
        assert_eq!(last[2].requests, 1);
        assert!((s.rate(1002, 2) - 50.5).abs() < 1e-9);
        // the slot of second 1000 comes round again: the old counts are gone
        s.record(1000 + SECONDS as u64, 1.0, false);
        let again = s.last(1001 + SECONDS as u64, 1);
        assert_eq!(again[0].requests, 1);
        assert_eq!(s.last(1002, 3)[1].requests, 0);
    }

    #[test]
    fn hostile_latencies_land_in_a_bucket() {
        let s = Series::new();
        for v in [f64::NAN, -1.0, f64::INFINITY, 1e300] {
            s.record(5, v, false);
        }
        assert_eq!(s.last(6, 1)[0].requests, 4);
    }
}
