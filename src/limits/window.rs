//! A sliding one-minute window of requests: at most `limit` requests in any
//! 60 s (`rpm` settings). Up to [`EXACT_UP_TO`] the window keeps each
//! request's time: exact, and a refused request learns to the millisecond
//! when the oldest one leaves. Above, it counts requests in 600 buckets of
//! 100 ms: memory stays 2.4 KiB whatever the limit (a fleet-sized `rpm` of
//! millions), and a bucket leaves the window whole, so the window is never
//! longer than 60 s and at most 100 ms shorter.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// The window's length (ms).
pub const WINDOW_MS: u64 = 60_000;

/// Limits up to this keep every request's time (80 KiB at most).
pub const EXACT_UP_TO: u32 = 10_000;

/// Bucket length and count of the counted window.
const BUCKET_MS: u64 = 100;
const BUCKETS: usize = (WINDOW_MS / BUCKET_MS) as usize;

/// The requests admitted in the last minute.
#[derive(Debug)]
pub struct RequestWindow {
    limit: u32,
    times: Mutex<Times>,
    /// What the fleet's other instances admitted (their last sync).
    others: AtomicU64,
}

#[derive(Debug)]
enum Times {
    Exact(VecDeque<u64>),
    Counted(Box<Counted>),
}

/// Requests per 100 ms bucket, for the last 600 buckets.
#[derive(Debug)]
struct Counted {
    counts: [u32; BUCKETS],
    /// The newest bucket's number (ms / 100).
    newest: u64,
    total: u64,
}

impl Counted {
    /// Drops the buckets that left the window by bucket `now_b`.
    fn advance(&mut self, now_b: u64) {
        if now_b <= self.newest {
            return;
        }
        if now_b - self.newest >= BUCKETS as u64 {
            self.counts = [0; BUCKETS];
            self.total = 0;
        } else {
            for b in self.newest + 1..=now_b {
                let slot = &mut self.counts[(b % BUCKETS as u64) as usize];
                self.total -= u64::from(*slot);
                *slot = 0;
            }
        }
        self.newest = now_b;
    }

    /// When (ms) the oldest bucket with requests leaves the window.
    fn oldest_leaves_ms(&self) -> Option<u64> {
        let first = self.newest + 1 - BUCKETS as u64;
        (first..=self.newest)
            .find(|b| self.counts[(b % BUCKETS as u64) as usize] > 0)
            .map(|b| (b + BUCKETS as u64) * BUCKET_MS)
    }
}

/// An admitted request: how many more fit now, and when the oldest leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub remaining: u32,
    pub reset_ms: u64,
}

impl RequestWindow {
    pub fn new(limit: u32) -> RequestWindow {
        let limit = limit.max(1);
        let times = if limit <= EXACT_UP_TO {
            Times::Exact(VecDeque::new())
        } else {
            Times::Counted(Box::new(Counted {
                counts: [0; BUCKETS],
                newest: BUCKETS as u64,
                total: 0,
            }))
        };
        RequestWindow {
            limit,
            times: Mutex::new(times),
            others: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts a request at `now_ms` if one more fits; else `Err(ms)` until
    /// one does. In a fleet, what the others admitted takes its share of
    /// the limit (when only theirs is in the way, the wait is a guess: 1 s).
    pub fn admit(&self, now_ms: u64) -> Result<Admitted, u64> {
        let others = self.others.load(Ordering::Relaxed);
        let limit = u64::from(self.limit).saturating_sub(others) as u32;
        if limit == 0 {
            return Err(OTHERS_WAIT_MS);
        }
        match &mut *self.times.lock() {
            Times::Exact(t) => {
                leave_window(t, now_ms);
                if t.len() >= limit as usize {
                    let oldest = t.front().copied().unwrap_or(now_ms);
                    return Err((oldest + WINDOW_MS).saturating_sub(now_ms).max(1));
                }
                t.push_back(now_ms);
                let oldest = t.front().copied().unwrap_or(now_ms);
                Ok(Admitted {
                    remaining: limit - t.len() as u32,
                    reset_ms: (oldest + WINDOW_MS).saturating_sub(now_ms),
                })
            }
            Times::Counted(c) => {
                // bucket numbers start past the first window (no underflow)
                let now_b = now_ms / BUCKET_MS + BUCKETS as u64;
                c.advance(now_b);
                let leaves = |c: &Counted| {
                    c.oldest_leaves_ms()
                        .map_or(WINDOW_MS, |at| at.saturating_sub(now_ms + WINDOW_MS))
                };
                if c.total >= u64::from(limit) {
                    return Err(leaves(c).max(1));
                }
                c.counts[(now_b % BUCKETS as u64) as usize] += 1;
                c.total += 1;
                Ok(Admitted {
                    remaining: limit - c.total as u32,
                    reset_ms: leaves(c),
                })
            }
        }
    }
}

/// Drops the times that left the minute before `now_ms`.
fn leave_window(t: &mut VecDeque<u64>, now_ms: u64) {
    while t.front().is_some_and(|&f| f + WINDOW_MS <= now_ms) {
        t.pop_front();
    }
}

/// How long a call refused only for what the others admitted is told to wait.
const OTHERS_WAIT_MS: u64 = 1_000;

impl RequestWindow {
    /// Requests admitted here in the minute before `now_ms`.
    pub fn count(&self, now_ms: u64) -> u64 {
        match &mut *self.times.lock() {
            Times::Exact(t) => {
                leave_window(t, now_ms);
                t.len() as u64
            }
            Times::Counted(c) => {
                c.advance(now_ms / BUCKET_MS + BUCKETS as u64);
                c.total
            }
        }
    }
}

impl super::shared::Shareable for RequestWindow {
    fn mine(&self, now_ms: u64) -> u64 {
        self.count(now_ms)
    }
    fn set_others(&self, n: u64) {
        self.others.store(n, Ordering::Relaxed);
    }
}

/// Limiter state by name and limit, kept across config reloads (a reload
/// that keeps a client's limit keeps its state).
pub type Registry<T> = LazyLock<Mutex<HashMap<(String, u64), Arc<T>>>>;

/// The state registered under (`name`, `limit`), made on first use.
pub fn shared<T>(
    registry: &Registry<T>,
    name: &str,
    limit: u64,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    registry
        .lock()
        .entry((name.to_string(), limit))
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

static WINDOWS: Registry<RequestWindow> = LazyLock::new(Default::default);

/// Calls `f` with every entry of `registry` a config still holds.
pub fn each_in<T>(registry: &Registry<T>, mut f: impl FnMut(&str, u64, Arc<T>)) {
    let all: Vec<_> = registry
        .lock()
        .iter()
        .filter(|(_, v)| Arc::strong_count(v) > 1)
        .map(|((n, l), v)| (n.clone(), *l, v.clone()))
        .collect();
    for (n, l, v) in all {
        f(&n, l, v);
    }
}

/// Every rpm window in use: (name, limit, window).
pub fn each_window(mut f: impl FnMut(&str, u64, Arc<RequestWindow>)) {
    each_in(&WINDOWS, |n, l, w| f(n, l, w));
}

/// Every client's slots in use: (client name, limit, slots).
pub fn each_slots(mut f: impl FnMut(&str, u64, Arc<Slots>)) {
    each_in(&SLOTS, |n, l, s| f(n, l, s));
}

/// The window of client `name` with `limit` requests per minute.
pub fn for_client(name: &str, limit: u32) -> Arc<RequestWindow> {
    named(&format!("client {name}"), limit)
}

/// The gateway-wide window (`limits.rpm`).
pub fn for_gateway(limit: u32) -> Arc<RequestWindow> {
    named("gateway", limit)
}

/// The rpm window registered as `name` (`upstream github`, `client a`, …).
pub fn named(name: &str, limit: u32) -> Arc<RequestWindow> {
    shared(&WINDOWS, name, limit.into(), || RequestWindow::new(limit))
}

/// Calls in flight for one client, capped (`clients[].max_concurrent`).
#[derive(Debug)]
pub struct Slots {
    limit: u32,
    used: AtomicU32,
    /// The fleet's other instances' calls in flight (their last sync).
    others: AtomicU64,
}

/// One call's slot: freed when dropped (the request, stream included, ended).
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Slots taken on this instance now.
    pub fn in_use(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// A slot if fewer than `limit` are taken (here and, in a fleet, by
    /// the others at their last sync).
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let others = self.others.load(Ordering::Relaxed);
        let limit = u64::from(self.limit).saturating_sub(others) as u32;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

impl super::shared::Shareable for Slots {
    fn mine(&self, _now_ms: u64) -> u64 {
        self.used.load(Ordering::Relaxed).into()
    }
    fn set_others(&self, n: u64) {
        self.others.store(n, Ordering::Relaxed);
    }
}

static SLOTS: Registry<Slots> = LazyLock::new(Default::default);

/// The in-flight slots of client `name` (kept across reloads that keep the limit).
pub fn slots_for_client(name: &str, limit: u32) -> Arc<Slots> {
    shared(&SLOTS, name, limit.into(), || Slots {
        limit: limit.max(1),
        used: Default::default(),
        others: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_request_waits_for_the_first_to_leave() {
        let w = RequestWindow::new(10);
        for i in 0..10 {
            let a = w.admit(1_000 + i * 1_000).unwrap();
            assert_eq!(a.remaining, 9 - i as u32);
            assert_eq!(a.reset_ms, 60_000 - i * 1_000);
        }
        // at 20.5 s the first (at 1 s) leaves at 61 s: 40.5 s from now
        assert_eq!(w.admit(20_500), Err(40_500));
        assert_eq!(w.admit(60_999), Err(1));
        assert!(w.admit(61_000).is_ok(), "the first left the window");
        assert!(w.admit(61_000).is_err(), "one slot freed, one taken");
    }

    #[test]
    fn a_fleet_sized_limit_counts_in_buckets() {
        let limit = 50_000;
        let w = RequestWindow::new(limit);
        // 50,000 requests over 5 s, starting at 1 s
        for i in 0..u64::from(limit) {
            let a = w.admit(1_000 + i / 10).unwrap();
            assert_eq!(u64::from(a.remaining), u64::from(limit) - i - 1);
        }
        // full: the first bucket (1.0-1.1 s) leaves at 61 s
        assert_eq!(w.admit(20_000), Err(41_000));
        assert_eq!(w.admit(60_999), Err(1));
        // the first bucket held 1,000 requests: that many fit again
        for _ in 0..1_000 {
            assert!(w.admit(61_000).is_ok());
        }
        assert!(w.admit(61_050).is_err());
        // a long quiet: everything left
        let a = w.admit(600_000).unwrap();
        assert_eq!(a.remaining, limit - 1);
        assert_eq!(a.reset_ms, 60_000);
        // time going backwards (a clock step) never panics
        assert!(w.admit(10).is_ok() || w.admit(10).is_err());
        assert!(std::mem::size_of::<Counted>() < 4096);
    }

    #[test]
    fn slots_are_freed_when_dropped() {
        let s = slots_for_client("slots-test", 2);
        let a = s.take().unwrap();
        let _b = s.take().unwrap();
        assert!(s.take().is_none());
        drop(a);
        assert!(s.take().is_some());
    }

    #[test]
    fn windows_are_kept_per_client_and_limit() {
        let a = for_client("window-test", 5);
        assert!(Arc::ptr_eq(&a, &for_client("window-test", 5)));
        assert!(!Arc::ptr_eq(&a, &for_client("window-test", 6)));
        assert_eq!(RequestWindow::new(0).limit(), 1);
    }
}
