//! The process's name numbers: each name a usage record repeats (client,
//! upstream, key id, route, error kind) gets a small number once, where it is
//! made (a key or upstream when the config is built, a client when the
//! snapshot is), so a record is plain numbers and the request path neither
//! hashes nor copies a name. The usage writer turns these numbers into the
//! store's own (`names` in usage.db) when it writes a batch.
//!
//! Invariants: 0 is the empty name; a number, once given, always means the
//! same name in this process. The set only grows: it holds config names and
//! the code's own labels (bounded; never text from a request).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

#[derive(Default)]
struct Table {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::default();
        add(&mut t, "");
        Mutex::new(t)
    })
}

fn add(t: &mut Table, name: &str) -> u32 {
    if let Some(&id) = t.ids.get(name) {
        return id;
    }
    let id = t.names.len() as u32;
    let name: Arc<str> = Arc::from(name);
    t.names.push(name.clone());
    t.ids.insert(name, id);
    id
}

/// The number of `name` (given now when it is new). Not for text from a
/// request: the set is never trimmed.
pub fn id(name: &str) -> u32 {
    if name.is_empty() {
        return 0;
    }
    add(&mut table().lock(), name)
}

/// The name of number `id` (`None` for a number never given).
pub fn name(id: u32) -> Option<Arc<str>> {
    table().lock().names.get(id as usize).cloned()
}

/// The number of a name known at compile time (a route or error label),
/// from a per-thread cache keyed by the string's address: one lookup in a
/// small table, no hashing of the text.
pub fn static_id(name: &'static str) -> u32 {
    if name.is_empty() {
        return 0;
    }
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<(usize, usize, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let key = (name.as_ptr() as usize, name.len());
    CACHE.with(|c| {
        if let Some(&(_, _, id)) = c.borrow().iter().find(|e| (e.0, e.1) == key) {
            return id;
        }
        let id = id(name);
        c.borrow_mut().push((key.0, key.1, id));
        id
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_zero_is_empty() {
        assert_eq!(id(""), 0);
        let a = id("names-test-a");
        let b = id("names-test-b");
        assert_ne!(a, b);
        assert_eq!(id("names-test-a"), a);
        assert_eq!(static_id("names-test-b"), b);
        assert_eq!(static_id("names-test-b"), b);
        assert_eq!(name(a).as_deref(), Some("names-test-a"));
        assert_eq!(name(0).as_deref(), Some(""));
        assert_eq!(name(u32::MAX), None);
    }
}
