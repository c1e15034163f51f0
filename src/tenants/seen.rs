//! When each client last called: one timestamp per client name, kept
//! across snapshots, stored at most once a second per client.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

static SEEN: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = LazyLock::new(Default::default);

/// When client `name` last called (ms; 0: not since this process started).
pub fn seen(name: &str) -> Arc<AtomicU64> {
    SEEN.lock().entry(name.to_string()).or_default().clone()
}

/// Notes a call now on a client's `at` (one store a second at most).
pub fn saw(at: Option<&Arc<AtomicU64>>) {
    if let Some(at) = at {
        let now = crate::clock::coarse_ms();
        if now.saturating_sub(at.load(Relaxed)) >= 1000 {
            at.store(now, Relaxed);
        }
    }
}
