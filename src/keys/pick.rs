//! Choosing a key for a call: the strategy's next usable key, or a given
//! one when it is usable.

use super::{Availability, Key, KeyPool, KeyStrategy, Pick};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl KeyPool {
    /// Where the scan starts for this call.
    fn start(&self) -> usize {
        let n = self.keys.len();
        match self.strategy {
            KeyStrategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            KeyStrategy::Sticky => self.current.load(Ordering::Acquire) % n,
            KeyStrategy::Random => rand::random::<usize>() % n,
            KeyStrategy::Weighted => {
                let mut ticket =
                    self.next.fetch_add(1, Ordering::Relaxed) as u64 % self.total_weight;
                for (i, k) in self.keys.iter().enumerate() {
                    if ticket < k.weight as u64 {
                        return i;
                    }
                    ticket -= k.weight as u64;
                }
                0
            }
            KeyStrategy::LeastBusy => {
                let base = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .map(|i| (base + i) % n)
                    .min_by_key(|&i| self.keys[i].in_flight.load(Ordering::Relaxed))
                    .unwrap_or(0)
            }
        }
    }

    /// The key of `fingerprint`, if it is ready for `model` and not tried.
    pub fn ready(
        &self,
        fingerprint: &str,
        model: &str,
        tried: &[usize],
        now: u64,
    ) -> Option<(usize, Arc<Key>)> {
        let i = self
            .keys
            .iter()
            .position(|k| k.fingerprint == fingerprint)?;
        let key = &self.keys[i];
        (!tried.contains(&i) && key.availability(model, now) == Availability::Ready)
            .then(|| (i, key.clone()))
    }

    /// Picks a usable key for `model` that is not in `tried` (indexes).
    pub fn pick(&self, model: &str, tried: &[usize], now: u64) -> Pick {
        let n = self.keys.len();
        if n == 0 {
            return Pick::None {
                earliest_ms: None,
                all_parked: false,
            };
        }
        let start = self.start();
        let mut earliest: Option<u64> = None;
        let mut all_parked = true;
        let mut best: Option<usize> = None;
        for i in (0..n).map(|i| (start + i) % n) {
            let key = &self.keys[i];
            let avail = key.availability(model, now);
            match avail {
                Availability::Ready => all_parked = false,
                Availability::CoolingUntil(u) => {
                    all_parked = false;
                    earliest = Some(earliest.map_or(u, |e| e.min(u)));
                }
                Availability::Parked(Some(u)) => earliest = Some(earliest.map_or(u, |e| e.min(u))),
                Availability::Parked(None) => {}
            }
            if avail != Availability::Ready || tried.contains(&i) {
                continue;
            }
            if self.strategy == KeyStrategy::LeastBusy {
                let load = key.in_flight.load(Ordering::Relaxed);
                if best.is_none_or(|b| load < self.keys[b].in_flight.load(Ordering::Relaxed)) {
                    best = Some(i);
                }
                continue;
            }
            best = Some(i);
            break;
        }
        match best {
            Some(i) => {
                if self.strategy == KeyStrategy::Sticky && i != self.current.load(Ordering::Acquire)
                {
                    self.current.store(i, Ordering::Release);
                }
                Pick::Key(i, self.keys[i].clone())
            }
            None => Pick::None {
                earliest_ms: earliest,
                all_parked,
            },
        }
    }
}
