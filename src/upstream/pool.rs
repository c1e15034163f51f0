//! The understood lane's idle upstream connections: a LIFO stack per upstream.
//!
//! Unlike Pingora's connector pool it spawns no watcher task per idle
//! connection and does not probe the socket on reuse; a pooled connection the
//! upstream closed meanwhile is detected when the request is written or the
//! response header read, and the attempt then retries on a fresh one.
//! The lock is held only to push or pop, never across an `.await`.
//!
//! A connection keeps its read buffer while pooled (empty, a few KiB): the
//! next answer on it is read without allocating one.

use crate::clock::coarse_mono_ms;
use bytes::BytesMut;
use parking_lot::Mutex;
use pingora::protocols::Stream;
use std::time::Duration;

pub struct ConnPool {
    /// Each connection and its read buffer, with the coarse monotonic time
    /// it was put back.
    idle: Mutex<Vec<(u64, Stream, BytesMut)>>,
    max: usize,
    max_idle_ms: u64,
}

impl ConnPool {
    /// At most `max` idle connections, each kept at most `max_idle`.
    pub fn new(max: usize, max_idle: Duration) -> ConnPool {
        ConnPool {
            idle: Mutex::new(Vec::new()),
            max,
            max_idle_ms: max_idle.as_millis() as u64,
        }
    }

    /// The most recently used connection that has not been idle too long.
    pub fn take(&self) -> Option<(Stream, BytesMut)> {
        let now = coarse_mono_ms();
        let mut idle = self.idle.lock();
        while let Some((at, s, buf)) = idle.pop() {
            if now.saturating_sub(at) < self.max_idle_ms {
                return Some((s, buf));
            }
        }
        None
    }

    /// Keeps a connection whose last response was fully read.
    pub fn put(&self, s: Stream, buf: BytesMut) {
        let now = coarse_mono_ms();
        let mut idle = self.idle.lock();
        if idle.len() >= self.max {
            // drop the oldest: the stack's bottom
            idle.remove(0);
        }
        idle.push((now, s, buf));
    }

    pub fn len(&self) -> usize {
        self.idle.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
