//! Where run-time clients and their audit records are kept on one
//! instance: SQLite, `state.path/tenants.db` (in memory without a state
//! path). With a fleet they live in Redis instead (`fleet::tenants`); this
//! store then keeps the last copy read, so an instance that restarts while
//! Redis is down still knows its clients.
//!
//! Failure behaviour: a record that no longer parses is skipped (logged);
//! a write error reaches the admin caller; the audit list is trimmed to
//! its newest [`MAX_AUDIT`] records.

use super::record::{Audit, Tenant};
use parking_lot::Mutex;
use rusqlite::{params, Connection};
use std::path::Path;

/// Audit records kept (the oldest go first).
pub const MAX_AUDIT: u64 = 10_000;

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (creating) `dir/tenants.db`, or an in-memory store.
    pub fn open(dir: Option<&Path>) -> Result<Db, String> {
        let conn = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("state.path {}: {e}", d.display()))?;
                Connection::open(d.join("tenants.db"))
            }
            None => Connection::open_in_memory(),
        }
        .map_err(|e| format!("tenant store: {e}"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, record TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);",
        )
        .map_err(|e| format!("tenant store: {e}"))?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// Every stored tenant, by name.
    pub fn load(&self) -> Result<Vec<Tenant>, String> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT name, record FROM tenants ORDER BY name")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (name, text) in rows.flatten() {
            match serde_json::from_str::<Tenant>(&text) {
                Ok(t) if t.name == name => out.push(t),
                _ => log::warn!("tenant store: the record of {name:?} does not parse; skipped"),
            }
        }
        Ok(out)
    }

    /// Writes `tenant` and its audit record in one transaction.
    pub fn put(&self, tenant: &Tenant, audit: &Audit) -> Result<(), String> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        let record = serde_json::to_string(tenant).map_err(|e| e.to_string())?;
        tx.execute(
            "INSERT INTO tenants (name, record) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET record = excluded.record",
            params![tenant.name, record],
        )
        .map_err(|e| e.to_string())?;
        let audit = serde_json::to_string(audit).map_err(|e| e.to_string())?;
        tx.execute("INSERT INTO audit (record) VALUES (?1)", params![audit])
            .map_err(|e| e.to_string())?;
        tx.execute(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?1",
            params![MAX_AUDIT as i64],
        )
        .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    /// Replaces every stored tenant with `all` (the fleet's copy).
    pub fn replace(&self, all: &[Tenant]) -> Result<(), String> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute("DELETE FROM tenants", [])
            .map_err(|e| e.to_string())?;
        for t in all {
            let record = serde_json::to_string(t).map_err(|e| e.to_string())?;
            tx.execute(
                "INSERT INTO tenants (name, record) VALUES (?1, ?2)",
                params![t.name, record],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit(&self, limit: u32) -> Result<Vec<Audit>, String> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT record FROM audit ORDER BY id DESC LIMIT ?1")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![i64::from(limit)], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())?;
        Ok(rows
            .flatten()
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }
}

/// The run-time clients this instance knows, and where they are stored.
#[derive(Default)]
pub struct Registry {
    /// The local store (the fleet's copy when there is one).
    pub db: std::sync::OnceLock<Db>,
    list: parking_lot::Mutex<std::sync::Arc<Vec<Tenant>>>,
    /// Serializes this instance's changes (never held across an `.await`).
    pub changing: parking_lot::Mutex<()>,
    /// The fleet's version of the clients served (0: none read).
    version: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// Every run-time client known now (revoked ones too).
    pub fn list(&self) -> std::sync::Arc<Vec<Tenant>> {
        self.list.lock().clone()
    }

    /// Notes the fleet's `version` as served, unless an older one is
    /// asked for (`false`: a read that raced a newer one).
    pub fn newer(&self, version: u64) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.version.fetch_max(version, AcqRel) <= version
    }

    pub fn set(&self, list: Vec<Tenant>) {
        *self.list.lock() = std::sync::Arc::new(list);
    }

    /// `list` with `t` in place of its namesake (or added).
    pub fn with(list: &[Tenant], t: Tenant) -> Vec<Tenant> {
        let mut out: Vec<Tenant> = list.iter().filter(|x| x.name != t.name).cloned().collect();
        out.push(t);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_and_audit_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tenant {
            name: "a".into(),
            key_sha256: "00".repeat(32),
            key_hint: "…abcd".into(),
            models: vec![],
            rpm: Some(5),
            tpm: None,
            max_concurrent: None,
            expires_ms: None,
            quotas: vec![],
            notes: String::new(),
            created_ms: 1,
            updated_ms: 1,
            revoked_ms: None,
        };
        let audit = |n: u64| Audit {
            ts_ms: n,
            actor: "admin".into(),
            address: "127.0.0.1".into(),
            action: "create".into(),
            client: "a".into(),
            detail: String::new(),
        };
        {
            let db = Db::open(Some(dir.path())).unwrap();
            db.put(&t, &audit(1)).unwrap();
            db.put(&t, &audit(2)).unwrap();
        }
        let db = Db::open(Some(dir.path())).unwrap();
        assert_eq!(db.load().unwrap(), vec![t]);
        let a = db.audit(10).unwrap();
        assert_eq!(a.iter().map(|a| a.ts_ms).collect::<Vec<_>>(), vec![2, 1]);
        db.replace(&[]).unwrap();
        assert!(db.load().unwrap().is_empty());
    }
}
