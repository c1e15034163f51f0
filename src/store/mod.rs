//! Embedded persistence (SQLite under `state.path`): key cooldowns, parked keys
//! and per-key counters survive restarts. Written off the request path: the
//! state's writer thread flushes keys marked dirty twice a second, in one
//! transaction; key actions, reloads and the drain on SIGTERM flush at once.
//! Keys are stored by (upstream, fingerprint): never the secret itself.
//! The store takes the keys it persists; it knows nothing of the snapshot.

mod batch;
pub mod filter;
pub mod names;
mod queue;
pub mod totals;
pub mod usage;

use crate::keys::{Key, KeyState};
use parking_lot::Mutex;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong with the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state.path {}: cannot create: {source}", .dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("state.path: cannot open {}: {source}", .file.display())]
    Open {
        file: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state.path: cannot initialise {}: {source}", .file.display())]
    Init {
        file: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// Key state saved by (upstream name, key fingerprint).
pub type SavedKeys = HashMap<(String, String), KeyState>;

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating) `dir/switchyard.db`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join("switchyard.db");
        let conn = Connection::open(&file).map_err(|source| StoreError::Open {
            file: file.clone(),
            source,
        })?;
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
        .map_err(|source| StoreError::Init { file, source })?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// Every stored key state by (upstream, fingerprint). Rows that no longer
    /// parse (an older format) are skipped.
    pub fn load(&self) -> Result<SavedKeys, StoreError> {
        let mut out = HashMap::new();
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT upstream, fingerprint, state FROM key_state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for (u, f, s) in rows.flatten() {
            if let Ok(state) = serde_json::from_str::<KeyState>(&s) {
                out.insert((u, f), state);
            }
        }
        Ok(out)
    }

    /// Upserts the given states in one transaction.
    pub fn save(&self, states: &[(String, String, KeyState)]) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO key_state (upstream, fingerprint, state, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(upstream, fingerprint) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            )?;
            let now = crate::clock::now_ms() as i64;
            for (u, f, s) in states {
                let json = serde_json::to_string(s)?;
                stmt.execute(params![u, f, json, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes every key among `keys` whose state changed since its last flush.
    /// On failure those keys stay marked, so the next flush writes them again.
    pub fn flush(&self, keys: &[Arc<Key>]) {
        let dirty: Vec<&Arc<Key>> = keys.iter().filter(|k| k.take_dirty()).collect();
        let rows: Vec<(String, String, KeyState)> = dirty
            .iter()
            .map(|k| (k.upstream.clone(), k.fingerprint.clone(), k.state()))
            .collect();
        if let Err(e) = self.save(&rows) {
            log::error!("state store: could not save key state: {e}");
            for k in dirty {
                k.mark_dirty();
            }
        }
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
        let again = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(again.get(&("gh".to_string(), "abc".to_string())), Some(&s));
    }
}
