//! Usage accounting: one record per API request (never its body), kept in
//! SQLite (`state.path`/usage.db, or in memory without a state path) and
//! written off the request path: the request only pushes its record onto a
//! bounded list; a writer thread inserts the list in one transaction twice a
//! second and then applies retention (`state.retention` by age,
//! `state.max_rows` by count), so the store never grows without bound.
//!
//! Failure behaviour: a full list (the writer far behind) drops records and
//! counts them in `switchyard_usage_dropped_total`; a store error is logged
//! and the batch is lost; requests never wait for the store.

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// Records waiting for the writer at most; beyond, new ones are dropped.
const MAX_PENDING: usize = 100_000;

/// One request, as the usage store keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub ts_ms: u64,
    pub client: String,
    /// The model asked for, and the one that answered (a fallback may).
    pub model: String,
    pub served_model: String,
    pub upstream: String,
    /// The key's public id (`github#2 (…Xq9f)`), never the key.
    pub key: String,
    pub route: &'static str,
    pub status: u16,
    pub attempts: u32,
    pub latency_ms: f64,
    /// Streams: request start to the first event the client got.
    pub ttft_ms: Option<f64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// No upstream reported usage: the tokens are the gateway's estimate.
    pub estimated: bool,
    pub error: String,
}

/// The usage store.
pub struct UsageLog {
    conn: Mutex<Connection>,
    pending: Mutex<Vec<Record>>,
    retention: Duration,
    max_rows: u64,
}

static LOG: OnceLock<UsageLog> = OnceLock::new();

/// The process's usage store, once [`UsageLog::install`]ed.
pub fn log() -> Option<&'static UsageLog> {
    LOG.get()
}

/// Queues `r` for the store (no-op before the store is installed).
pub fn record(r: Record) {
    if let Some(l) = LOG.get() {
        let mut p = l.pending.lock();
        if p.len() >= MAX_PENDING {
            crate::metrics::USAGE_DROPPED.inc();
            return;
        }
        p.push(r);
    }
}

const SCHEMA: &str = "PRAGMA journal_mode=WAL;
    PRAGMA synchronous=NORMAL;
    CREATE TABLE IF NOT EXISTS requests (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL, client TEXT NOT NULL, model TEXT NOT NULL,
        served_model TEXT NOT NULL, upstream TEXT NOT NULL, key TEXT NOT NULL,
        route TEXT NOT NULL, status INTEGER NOT NULL, attempts INTEGER NOT NULL,
        latency_ms REAL NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
        estimated INTEGER NOT NULL, error TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms);";

/// Columns added after the first schema: (name, SQL type), added to an older
/// store when it is opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[("ttft_ms", "REAL")];

/// Brings a store written by an older version up to this schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let have: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('requests')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, ty) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE requests ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
}

impl UsageLog {
    /// Opens `dir/usage.db` (or an in-memory store for `None`) and starts
    /// its writer thread. Once per process; a second call changes nothing.
    pub fn install(
        dir: Option<&Path>,
        retention: Duration,
        max_rows: u64,
    ) -> rusqlite::Result<&'static UsageLog> {
        let conn = match dir {
            Some(d) => Connection::open(d.join("usage.db"))?,
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let log = UsageLog {
            conn: Mutex::new(conn),
            pending: Mutex::new(Vec::new()),
            retention,
            max_rows: max_rows.max(1),
        };
        let installed = LOG.get_or_init(|| log);
        static WRITER: OnceLock<()> = OnceLock::new();
        WRITER.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("usage-writer".into())
                .spawn(|| loop {
                    std::thread::sleep(Duration::from_millis(500));
                    if let Some(l) = LOG.get() {
                        l.flush();
                    }
                });
            if let Err(e) = spawned {
                log::error!("usage store: cannot start its writer: {e}");
            }
        });
        Ok(installed)
    }

    /// Writes the queued records, then drops rows past the retention.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.write(&batch) {
            log::error!("usage store: {} records lost: {e}", batch.len());
        }
    }

    fn write(&self, batch: &[Record]) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO requests (ts_ms, client, model, served_model, upstream, key, route,
                 status, attempts, latency_ms, tokens_in, tokens_out, estimated, error, ttft_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for r in batch {
                ins.execute(params![
                    r.ts_ms as i64,
                    r.client,
                    r.model,
                    r.served_model,
                    r.upstream,
                    r.key,
                    r.route,
                    r.status,
                    r.attempts,
                    r.latency_ms,
                    r.tokens_in as i64,
                    r.tokens_out as i64,
                    r.estimated,
                    r.error,
                    r.ttft_ms
                ])?;
            }
        }
        let oldest = crate::clock::now_ms().saturating_sub(self.retention.as_millis() as u64);
        tx.execute(
            "DELETE FROM requests WHERE ts_ms < ?1",
            params![oldest as i64],
        )?;
        tx.execute(
            "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?1",
            params![self.max_rows as i64],
        )?;
        tx.commit()
    }

    /// Totals since `since_ms`, grouped `by` client, model, key, upstream or day.
    pub fn usage(&self, by: &str, since_ms: u64) -> Result<Value, String> {
        let col = match by {
            "client" => "client",
            "model" => "served_model",
            "key" => "key",
            "upstream" => "upstream",
            "day" => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
            other => {
                return Err(format!(
                    "by={other:?}: use client, model, key, upstream or day"
                ))
            }
        };
        self.flush();
        let conn = self.conn.lock();
        let sql = format!(
            "SELECT {col}, COUNT(*), SUM(tokens_in), SUM(tokens_out), SUM(status >= 400),
             SUM(estimated), AVG(latency_ms), AVG(ttft_ms) FROM requests WHERE ts_ms >= ?1
             GROUP BY 1 ORDER BY 2 DESC"
        );
        let rows = conn
            .prepare(&sql)
            .and_then(|mut st| {
                st.query_map(params![since_ms as i64], |r| {
                    Ok(json!({
                        by: r.get::<_, String>(0)?,
                        "requests": r.get::<_, i64>(1)?,
                        "tokens_in": r.get::<_, i64>(2)?,
                        "tokens_out": r.get::<_, i64>(3)?,
                        "errors": r.get::<_, i64>(4)?,
                        "estimated": r.get::<_, i64>(5)?,
                        "avg_latency_ms": r.get::<_, f64>(6)?,
                        "avg_ttft_ms": r.get::<_, Option<f64>>(7)?,
                    }))
                })?
                .collect::<rusqlite::Result<Vec<Value>>>()
            })
            .map_err(|e| e.to_string())?;
        Ok(json!({"by": by, "since": crate::clock::fmt_iso(since_ms), "rows": rows}))
    }

    /// The newest `limit` requests, optionally of one client and/or status.
    pub fn recent(
        &self,
        limit: u32,
        client: Option<&str>,
        status: Option<u16>,
    ) -> Result<Value, String> {
        self.flush();
        let conn = self.conn.lock();
        let mut st = conn
            .prepare(
                "SELECT ts_ms, client, model, served_model, upstream, key, route, status, attempts,
                 latency_ms, tokens_in, tokens_out, estimated, error, ttft_ms FROM requests
                 WHERE (?1 IS NULL OR client = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map(params![client, status, limit.clamp(1, 1000)], |r| {
                Ok(json!({
                    "time": crate::clock::fmt_iso(r.get::<_, i64>(0)? as u64),
                    "client": r.get::<_, String>(1)?,
                    "model": r.get::<_, String>(2)?,
                    "served_model": r.get::<_, String>(3)?,
                    "upstream": r.get::<_, String>(4)?,
                    "key": r.get::<_, String>(5)?,
                    "route": r.get::<_, String>(6)?,
                    "status": r.get::<_, u16>(7)?,
                    "attempts": r.get::<_, u32>(8)?,
                    "latency_ms": r.get::<_, f64>(9)?,
                    "tokens_in": r.get::<_, i64>(10)?,
                    "tokens_out": r.get::<_, i64>(11)?,
                    "estimated": r.get::<_, bool>(12)?,
                    "error": r.get::<_, String>(13)?,
                    "ttft_ms": r.get::<_, Option<f64>>(14)?,
                }))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Value>>>())
            .map_err(|e| e.to_string())?;
        Ok(json!({"requests": rows}))
    }
}
