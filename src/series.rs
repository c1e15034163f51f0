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

/// Latency buckets: 16 of 4 µs below 64 µs, then 16 per doubling up to
/// 2^32 µs (over an hour): a bucket's midpoint is within 3.2% of every
/// latency in it.
const SUB: u32 = 16;
const BUCKETS: usize = 16 + (32 - 6) * SUB as usize;

/// The bucket of a latency in µs.
fn bucket(us: u64) -> usize {
    if us < 64 {
        return (us / 4) as usize;
    }
    let us = us.min((1 << 32) - 1);
    let e = 63 - us.leading_zeros(); // 6..=31
    let m = (us >> (e - 4)) & u64::from(SUB - 1);
    16 + ((e - 6) * SUB) as usize + m as usize
}

/// The midpoint of bucket `i`, in ms.
fn midpoint_ms(i: usize) -> f64 {
    if i < 16 {
        return (i as f64 * 4.0 + 2.0) / 1000.0;
    }
    let (octave, m) = ((i - 16) / SUB as usize, (i - 16) % SUB as usize);
    let shift = octave as u32 + 2; // e - 4
    let lower = ((16 + m) as u64) << shift;
    (lower as f64 + (1u64 << shift) as f64 / 2.0) / 1000.0
}

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
    /// Latency percentiles in ms, within 3.2% (`None` with no requests).
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
        // NaN and negatives count as 0, infinities as the longest
        let us = (latency_ms * 1000.0).max(0.0);
        slot.latency[bucket(us as u64)].fetch_add(1, Relaxed);
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

/// The latency at quantile `q` of a histogram (its bucket's midpoint), rounded to µs.
fn percentile(counts: &[u32], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    let i = counts
        .iter()
        .position(|&c| {
            seen += u64::from(c);
            seen >= rank
        })
        .unwrap_or(counts.len() - 1);
    Some((midpoint_ms(i) * 1000.0).round() / 1000.0)
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
        let near = |got: Option<f64>, want: f64| {
            let g = got.unwrap();
            assert!(
                (g - want).abs() / want < 0.033,
                "{g} is not within 3.3% of {want}"
            );
        };
        near(x.p50, 4.0);
        near(x.p95, 200.0);
        assert_eq!(last[2].requests, 1);
        assert!((s.rate(1002, 2) - 50.5).abs() < 1e-9);
        // the slot of second 1000 comes round again: the old counts are gone
        s.record(1000 + SECONDS as u64, 1.0, false);
        let again = s.last(1001 + SECONDS as u64, 1);
        assert_eq!(again[0].requests, 1);
        assert_eq!(s.last(1002, 3)[1].requests, 0);
    }

    #[test]
    fn every_latency_reads_back_within_3_percent() {
        let mut prev = 0;
        for us in (0u64..200_000)
            .step_by(7)
            .chain([480_000, 3_600_000_000, u64::MAX])
        {
            let b = bucket(us);
            assert!(b < BUCKETS && b >= prev, "{us} -> {b}");
            prev = b;
            let mid = midpoint_ms(b) * 1000.0;
            if (64..1 << 32).contains(&us) {
                assert!(
                    (mid - us as f64).abs() / us as f64 <= 0.032,
                    "{us} reads {mid}"
                );
            } else if us < 64 {
                assert!((mid - us as f64).abs() <= 2.0);
            }
        }
        let s = Series::new();
        s.record(7, 480.0, false);
        let p = s.last(8, 1)[0].p50.unwrap();
        assert!((p - 480.0).abs() < 480.0 * 0.032, "{p}");
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
