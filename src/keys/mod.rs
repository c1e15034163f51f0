//! The key pool of one upstream: which key the next call uses, and the key's
//! public identity. Selection is lock-free (atomics only).
//!
//! A key's secret is reachable only through [`Key::secret`]; its `Debug` and
//! `Display` print the short id (`github#2 (…Xq9f)`), never the key.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One upstream API key with its live counters.
pub struct Key {
    /// `github#2 (…Xq9f)`: safe to log and show.
    pub id: String,
    /// `github#2`: used as a metric label and in admin paths.
    pub short_id: String,
    secret: String,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl Key {
    /// `upstream`'s key number `n` (1-based).
    pub fn new(upstream: &str, n: usize, secret: String) -> Key {
        let short_id = format!("{upstream}#{n}");
        let chars: Vec<char> = secret.chars().collect();
        // Only reveal a suffix when the key is long enough that 4 chars leak nothing useful.
        let id = if chars.len() >= 16 {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("{short_id} (…{tail})")
        } else {
            short_id.clone()
        };
        Key {
            id,
            short_id,
            secret,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// The secret, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The keys of one upstream, in config order.
pub struct KeyPool {
    keys: Vec<Arc<Key>>,
    next: AtomicUsize,
}

impl KeyPool {
    pub fn new(upstream: &str, secrets: impl IntoIterator<Item = String>) -> KeyPool {
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(i, s)| Arc::new(Key::new(upstream, i + 1, s)))
            .collect();
        KeyPool {
            keys,
            next: AtomicUsize::new(0),
        }
    }

    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Round-robin over the keys not in `tried` (indexes). `None` when the pool
    /// has no keys or every key was tried.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Arc<Key>)> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i))
            .map(|i| (i, self.keys[i].clone()))
    }
}

/// Counts a call in flight on a key for as long as it lives.
pub struct InFlight(Arc<Key>);

impl InFlight {
    pub fn new(key: Arc<Key>) -> InFlight {
        key.in_flight.fetch_add(1, Ordering::Relaxed);
        key.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(key)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_show_the_secret() {
        let k = Key::new("github", 2, "ghp_aaaaaaaaaaaaaaaaXq9f".into());
        assert_eq!(k.id, "github#2 (…Xq9f)");
        assert_eq!(format!("{k:?} {k}"), "github#2 (…Xq9f) github#2 (…Xq9f)");
        let short = Key::new("x", 1, "short".into());
        assert_eq!(short.id, "x#1");
    }

    #[test]
    fn round_robin_skips_tried() {
        let p = KeyPool::new("u", ["a".to_string(), "b".into(), "c".into()]);
        let seq: Vec<usize> = (0..6).map(|_| p.pick(&[]).unwrap().0).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        let (i, _) = p.pick(&[0, 1]).unwrap();
        assert_eq!(i, 2);
        assert!(p.pick(&[0, 1, 2]).is_none());
        assert!(KeyPool::new("e", Vec::<String>::new()).pick(&[]).is_none());
    }
}
