//! Per-model pacing (`model_min_interval`): calls for the same upstream model
//! start at least the interval apart. A call that comes early is given the
//! next free start time and waits for it; two calls at once start one
//! interval apart. State is one start time per model served (bounded by the
//! models an upstream is asked for; names over 256 bytes share one entry).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::window::{shared, Registry};

static PACERS: Registry<Pacer> = LazyLock::new(Default::default);

/// The pacer registered as `name` with `interval` (kept across reloads that keep it).
pub fn named(name: &str, interval: Duration) -> Arc<Pacer> {
    shared(&PACERS, name, interval.as_millis() as u64, || {
        Pacer::new(interval)
    })
}

/// The next free start time of each model, for one upstream.
#[derive(Debug)]
pub struct Pacer {
    interval_ms: u64,
    next: Mutex<HashMap<String, u64>>,
}

/// Most models one pacer keeps a start time for; beyond that, stale entries go.
const MAX_MODELS: usize = 4096;

impl Pacer {
    pub fn new(interval: Duration) -> Pacer {
        Pacer {
            interval_ms: interval.as_millis().max(1) as u64,
            next: Mutex::new(HashMap::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Books the earliest start for `model` at or after `now_ms`, if it is
    /// at most `max_wait_ms` away: `Ok(ms to wait)`. Farther: `Err(ms)` and
    /// nothing booked.
    pub fn book(&self, model: &str, now_ms: u64, max_wait_ms: u64) -> Result<u64, u64> {
        let model = if model.len() > 256 { "" } else { model };
        let mut next = self.next.lock();
        let start = next.get(model).copied().unwrap_or(0).max(now_ms);
        let wait = start - now_ms;
        if wait > max_wait_ms {
            return Err(wait);
        }
        if next.len() >= MAX_MODELS && !next.contains_key(model) {
            next.retain(|_, t| *t > now_ms);
        }
        next.insert(model.to_string(), start + self.interval_ms);
        Ok(wait)
    }

    /// Gives back a booked start that was not used (the caller left while
    /// waiting), when no later call was booked after it.
    pub fn unbook(&self, model: &str, start_ms: u64) {
        let model = if model.len() > 256 { "" } else { model };
        let mut next = self.next.lock();
        if next.get(model) == Some(&(start_ms + self.interval_ms)) {
            next.insert(model.to_string(), start_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_start_an_interval_apart() {
        let p = Pacer::new(Duration::from_millis(2000));
        assert_eq!(p.book("m", 1000, 30_000), Ok(0));
        assert_eq!(p.book("m", 1000, 30_000), Ok(2000));
        assert_eq!(p.book("m", 1500, 30_000), Ok(3500));
        // another model is not held back
        assert_eq!(p.book("other", 1500, 30_000), Ok(0));
        // too far away: refused, nothing booked
        assert_eq!(p.book("m", 1500, 1000), Err(5500));
        assert_eq!(p.book("m", 10_000, 0), Ok(0));
        // an unused booking is given back
        assert_eq!(p.book("m", 10_000, 5000), Ok(2000));
        p.unbook("m", 12_000);
        assert_eq!(p.book("m", 10_000, 5000), Ok(2000));
        let long = "x".repeat(300);
        assert_eq!(p.book(&long, 0, 0), Ok(0));
        assert_eq!(p.book(&"y".repeat(300), 0, 0), Err(2000));
    }
}
