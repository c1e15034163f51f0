//! The memory store: least recently used answers go first once the kept
//! ones pass `cache.max_bytes`.

use super::entry::Entry;
use lru::LruCache;
use parking_lot::Mutex;
use std::sync::Arc;

struct Store {
    entries: LruCache<[u8; 32], Arc<Entry>>,
    bytes: u64,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Store) -> T) -> T {
    let mut s = STORE.lock();
    let store = s.get_or_insert_with(|| Store {
        entries: LruCache::unbounded(),
        bytes: 0,
    });
    let (bytes, entries) = (store.bytes, store.entries.len());
    let out = f(store);
    if (store.bytes, store.entries.len()) != (bytes, entries) {
        crate::metrics::CACHE_BYTES.set(store.bytes as i64);
        crate::metrics::CACHE_ENTRIES.set(store.entries.len() as i64);
    }
    out
}

/// The answer kept under `key` if it is still `fresh` (now the most
/// recently used); a stale one is dropped.
pub fn get(key: &[u8; 32], fresh: impl Fn(&Entry) -> bool) -> Option<Arc<Entry>> {
    with(|s| {
        let e = s.entries.get(key).cloned()?;
        if fresh(&e) {
            return Some(e);
        }
        if let Some(old) = s.entries.pop(key) {
            s.bytes -= old.size();
        }
        None
    })
}

/// Keeps `entry`, dropping the least recently used past `max_bytes`;
/// `false` when it is larger than the whole store.
pub fn put(key: [u8; 32], entry: Entry, max_bytes: u64) -> bool {
    let size = entry.size();
    if size > max_bytes {
        return false;
    }
    with(|s| {
        if let Some(old) = s.entries.put(key, Arc::new(entry)) {
            s.bytes -= old.size();
        }
        s.bytes += size;
        while s.bytes > max_bytes {
            match s.entries.pop_lru() {
                Some((_, e)) => s.bytes -= e.size(),
                None => break,
            }
        }
        true
    })
}

/// Drops the answers of `model` and/or `client` (all: neither given).
pub fn purge(model: Option<&str>, client: Option<&str>) -> u64 {
    with(|s| {
        let gone: Vec<[u8; 32]> = s
            .entries
            .iter()
            .filter(|(_, e)| model.is_none_or(|m| e.model == m))
            .filter(|(_, e)| client.is_none_or(|c| e.client == c))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            if let Some(e) = s.entries.pop(k) {
                s.bytes -= e.size();
            }
        }
        gone.len() as u64
    })
}

/// Answers kept and their bytes.
pub fn stats() -> (u64, u64) {
    with(|s| (s.entries.len() as u64, s.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_any(key: &[u8; 32]) -> Option<Arc<Entry>> {
        get(key, |_| true)
    }
    use bytes::Bytes;

    fn entry(model: &str, n: usize) -> Entry {
        Entry {
            body: Bytes::from(vec![b'x'; n]),
            created_ms: 0,
            model: model.into(),
            client: "c".into(),
            tokens: (0, 0),
            pace: Vec::new(),
        }
    }

    #[test]
    fn bounded_by_bytes_least_recent_first_and_purged_by_model() {
        // keys of this test only (the store is process-wide)
        let k = |i: u8| [i; 32];
        let one = entry("lru-test-a", 1000).size();
        let max = one * 3;
        for i in 200..203 {
            put(k(i), entry("lru-test-a", 1000), max);
        }
        assert!(get_any(&k(200)).is_some()); // 200 is now the most recent
        put(k(203), entry("lru-test-b", 1000), max);
        assert!(get_any(&k(201)).is_none(), "the least recently used went");
        assert!(get_any(&k(200)).is_some() && get_any(&k(203)).is_some());
        put(k(204), entry("lru-test-b", 10_000), max);
        assert!(get_any(&k(204)).is_none(), "larger than the whole store");
        assert_eq!(purge(Some("lru-test-b"), None), 1);
        assert!(get_any(&k(203)).is_none());
        assert_eq!(purge(Some("lru-test-a"), Some("c")), 2);
    }
}
