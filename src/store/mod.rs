//! Embedded persistence (SQLite under `state.path`): key cooldowns, parked keys
//! and per-key counters survive restarts. Written off the request path: a
//! background thread flushes keys marked dirty twice a second, in one
//! transaction; the drain on SIGTERM flushes once more before exiting.
//! Keys are stored by (upstream, fingerprint): never the secret itself.

use crate::keys::KeyState;
use crate::state::State;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating) `dir/switchyard.db`.
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("state.path {}: cannot create: {e}", dir.display()))?;
        let file = dir.join("switchyard.db");
        let conn = Connection::open(&file)
            .map_err(|e| format!("state.path: cannot open {}: {e}", file.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS key_state (
                 upstream TEXT NOT NULL,
                 fingerprint TEXT NOT NULL,
                 state TEXT NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 PRIMARY KEY (upstream, fingerprint)
             );",
        )
        .map_err(|e| format!("state.path: cannot initialise {}: {e}", file.display()))?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Every stored key state by (upstream, fingerprint).
    pub fn load(&self) -> HashMap<(String, String), KeyState> {
        let mut out = HashMap::new();
        let Ok(conn) = self.conn.lock() else {
            return out;
        };
        let Ok(mut stmt) = conn.prepare("SELECT upstream, fingerprint, state FROM key_state")
        else {
            return out;
        };
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        });
        if let Ok(rows) = rows {
            for (u, f, s) in rows.flatten() {
                if let Ok(state) = serde_json::from_str::<KeyState>(&s) {
                    out.insert((u, f), state);
                }
            }
        }
        out
    }

    /// Upserts the given states in one transaction.
    pub fn save(&self, states: &[(String, String, KeyState)]) -> Result<(), String> {
        if states.is_empty() {
            return Ok(());
        }
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO key_state (upstream, fingerprint, state, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(upstream, fingerprint) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
                )
                .map_err(|e| e.to_string())?;
            let now = crate::keys::signals::now_ms() as i64;
            for (u, f, s) in states {
                let json = serde_json::to_string(s).map_err(|e| e.to_string())?;
                stmt.execute(params![u, f, json, now])
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// Writes every dirty key of the current snapshot.
pub fn flush(state: &State, store: &Store) {
    let snap = state.load();
    let mut dirty = Vec::new();
    for up in &snap.upstreams {
        for k in up.keys.keys() {
            if k.dirty.swap(false, Ordering::AcqRel) {
                dirty.push((k.upstream.clone(), k.fingerprint.clone(), k.state()));
            }
        }
    }
    if let Err(e) = store.save(&dirty) {
        log::error!("state store: could not save key state: {e}");
        for up in &snap.upstreams {
            for k in up.keys.keys() {
                if dirty.iter().any(|(_, f, _)| f == &k.fingerprint) {
                    k.dirty.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// Flushes dirty keys every 500 ms on a background thread, for the life of the process.
pub fn spawn_flusher(state: Arc<State>, store: Arc<Store>) {
    let spawned = std::thread::Builder::new()
        .name("switchyard-store".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            flush(&state, &store);
        });
    if let Err(e) = spawned {
        log::error!("state store: cannot start the writer thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = KeyState {
            cool_until_ms: 123,
            requests: 7,
            ..Default::default()
        };
        s.model_cool.insert("gpt-4o".into(), 456);
        store
            .save(&[("gh".into(), "abc".into(), s.clone())])
            .unwrap();
        s.requests = 8;
        store
            .save(&[("gh".into(), "abc".into(), s.clone())])
            .unwrap();
        drop(store);
        let again = Store::open(dir.path()).unwrap().load();
        assert_eq!(again.get(&("gh".to_string(), "abc".to_string())), Some(&s));
    }
}
