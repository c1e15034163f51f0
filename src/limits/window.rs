//! A sliding one-minute window of request times: at most `limit` requests in
//! any 60 s (`clients[].rpm`). Exact: a refused request learns when the
//! oldest request in the window leaves it, to the millisecond. Memory is
//! bounded by `limit` timestamps.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

/// The window's length (ms).
pub const WINDOW_MS: u64 = 60_000;

/// The requests admitted in the last minute.
#[derive(Debug)]
pub struct RequestWindow {
    limit: u32,
    times: Mutex<VecDeque<u64>>,
}

/// An admitted request: how many more fit now, and when the oldest leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub remaining: u32,
    pub reset_ms: u64,
}

impl RequestWindow {
    pub fn new(limit: u32) -> RequestWindow {
        RequestWindow {
            limit: limit.max(1),
            times: Mutex::new(VecDeque::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts a request at `now_ms` if one more fits; else `Err(ms)` until one does.
    pub fn admit(&self, now_ms: u64) -> Result<Admitted, u64> {
        let mut t = self.times.lock();
        while t.front().is_some_and(|&f| f + WINDOW_MS <= now_ms) {
            t.pop_front();
        }
        if t.len() >= self.limit as usize {
            let oldest = t.front().copied().unwrap_or(now_ms);
            return Err((oldest + WINDOW_MS).saturating_sub(now_ms).max(1));
        }
        t.push_back(now_ms);
        let oldest = t.front().copied().unwrap_or(now_ms);
        Ok(Admitted {
            remaining: self.limit - t.len() as u32,
            reset_ms: (oldest + WINDOW_MS).saturating_sub(now_ms),
        })
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
    used: std::sync::atomic::AtomicU32,
}

/// One call's slot: freed when dropped (the request, stream included, ended).
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .used
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Slots {
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A slot if fewer than `limit` are taken.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }
}

static SLOTS: Registry<Slots> = LazyLock::new(Default::default);

/// The in-flight slots of client `name` (kept across reloads that keep the limit).
pub fn slots_for_client(name: &str, limit: u32) -> Arc<Slots> {
    shared(&SLOTS, name, limit.into(), || Slots {
        limit: limit.max(1),
        used: Default::default(),
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
