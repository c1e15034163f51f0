//! Live heap bytes by allocation size, for finding where memory per open
//! connection goes (feature `alloc-stats`, never in a release build):
//! `SWITCHYARD_ALLOC_STATS=1` prints the table to standard error every 2 s.
//! A counting wrapper around mimalloc; relaxed atomics, no locks.
#![allow(unsafe_code, clippy::print_stderr)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering};

/// Buckets by the power of two at or above the size: 0 = ≤16 B … 23 = ≥128 MiB.
const BUCKETS: usize = 24;
static LIVE: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];
static COUNT: [AtomicI64; BUCKETS] = [const { AtomicI64::new(0) }; BUCKETS];

fn bucket(size: usize) -> usize {
    let b = (usize::BITS - size.max(16).saturating_sub(1).leading_zeros()) as usize;
    b.saturating_sub(4).min(BUCKETS - 1)
}

static SAMPLED: AtomicI64 = AtomicI64::new(0);
thread_local! { static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) }; }

/// With `SWITCHYARD_ALLOC_TRACE=MIN-MAX` (bytes): prints the stack of every
/// 1000th allocation in that range (at most 12).
fn sample(size: usize) {
    static RANGE: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    if INSIDE.with(|i| i.replace(true)) {
        return;
    }
    let (lo, hi) = *RANGE.get_or_init(|| {
        std::env::var("SWITCHYARD_ALLOC_TRACE")
            .ok()
            .and_then(|v| {
                let (a, b) = v.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((usize::MAX, 0))
    });
    if size >= lo && size <= hi {
        let n = SAMPLED.fetch_add(1, Ordering::Relaxed);
        if n % 1000 == 999 && n < 12_000 {
            eprintln!(
                "alloc-trace {size} B:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
    }
    INSIDE.with(|i| i.set(false));
}

/// The counting allocator.
pub struct Counting;

// SAFETY: every call is forwarded to mimalloc with the same layout; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(l) };
        sample(l.size());
        if !p.is_null() {
            LIVE[bucket(l.size())].fetch_add(l.size() as i64, Ordering::Relaxed);
            COUNT[bucket(l.size())].fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE[bucket(l.size())].fetch_sub(l.size() as i64, Ordering::Relaxed);
        COUNT[bucket(l.size())].fetch_sub(1, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { mimalloc::MiMalloc.realloc(p, l, new) };
        if !q.is_null() {
            LIVE[bucket(l.size())].fetch_sub(l.size() as i64, Ordering::Relaxed);
            COUNT[bucket(l.size())].fetch_sub(1, Ordering::Relaxed);
            LIVE[bucket(new)].fetch_add(new as i64, Ordering::Relaxed);
            COUNT[bucket(new)].fetch_add(1, Ordering::Relaxed);
        }
        q
    }
}

/// Starts the printing thread when `SWITCHYARD_ALLOC_STATS` is set.
pub fn start() {
    if std::env::var_os("SWITCHYARD_ALLOC_STATS").is_none() {
        return;
    }
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut line = String::from("alloc-stats live KiB by size (count):");
        let mut total = 0i64;
        for b in 0..BUCKETS {
            let (bytes, n) = (
                LIVE[b].load(Ordering::Relaxed),
                COUNT[b].load(Ordering::Relaxed),
            );
            total += bytes;
            if bytes > 64 << 10 {
                line.push_str(&format!(" <={}B:{}({n})", 16usize << b, bytes >> 10));
            }
        }
        eprintln!("{line} total:{}KiB", total >> 10);
    });
}
