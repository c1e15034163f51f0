//! Usage accounting: one record per API request (never its body), kept in
//! SQLite (`state.path`/usage.db, or in memory without a state path) and
//! written off the request path: the request only pushes its record onto a
//! bounded list; a writer thread (at a lower OS priority) stores the list
//! ten times a second and then applies retention (`state.retention` by age,
//! `state.max_rows` by count), so the store never grows without bound.
//!
//! Layout: each flush is one row of `batches` holding its records packed
//! (postcard: varints, a record is ~40 bytes), with the batch's time span
//! and count; the names records repeat (client, upstream, key id, route,
//! error kind: bounded sets, from the config and the code) are numbers into
//! `names`. One insert per flush instead of one per request: a row per
//! request cost the writer ~1 µs each, which a saturated benchmark felt.
//! Queries decode the batches they need (newest first for the request
//! list, those since `since` for totals).
//!
//! Failure behaviour: a full list (the writer far behind) drops records and
//! counts them in `switchyard_usage_dropped_total`; a store error is logged
//! and the batch is lost; a batch that does not decode is skipped; requests
//! never wait for the store.

use crate::keys::Key;
use crate::upstream::Upstream;
use parking_lot::Mutex;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the writer stores what is queued: often enough that a batch is
/// a short burst of work (a busy machine feels long ones in its latency).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Records waiting for the writer at most; beyond, new ones are dropped.
const MAX_PENDING: usize = 100_000;

/// One request, as the request path hands it over: the upstream and key are
/// shared references (the writer reads their names), the model strings are
/// the request's own; no name is copied.
#[derive(Default)]
pub struct Record {
    pub ts_ms: u64,
    pub client: Arc<str>,
    /// The model asked for, and the one that answered when another did (a fallback).
    pub model: String,
    pub served_model: Option<String>,
    pub upstream: Option<Arc<Upstream>>,
    /// Stored by its public id (`github#2 (…Xq9f)`), never the key.
    pub key: Option<Arc<Key>>,
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
    pub error: &'static str,
}

/// A record as stored: names as `names` ids, times in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    ts_ms: u64,
    client: u32,
    model: String,
    served_model: Option<String>,
    upstream: u32,
    key: u32,
    route: u32,
    status: u16,
    attempts: u32,
    latency_us: u64,
    ttft_us: Option<u64>,
    tokens_in: u64,
    tokens_out: u64,
    estimated: bool,
    error: u32,
}

/// The usage store.
pub struct UsageLog {
    db: Mutex<Db>,
    pending: Mutex<Vec<Record>>,
    /// The other half of the double buffer: the last batch's vector, emptied,
    /// swapped in for `pending` so requests never regrow (and page-fault) a
    /// fresh vector after each flush. Held while a flush runs.
    spare: Mutex<Vec<Record>>,
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
    CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS batches (
        id INTEGER PRIMARY KEY, first_ts_ms INTEGER NOT NULL, last_ts_ms INTEGER NOT NULL,
        count INTEGER NOT NULL, records BLOB NOT NULL);
    CREATE INDEX IF NOT EXISTS batches_last ON batches (last_ts_ms);";

/// The connection and the `names` table both ways.
struct Db {
    conn: Connection,
    ids: HashMap<String, u32>,
    names: HashMap<u32, String>,
}

impl Db {
    fn open(conn: Connection) -> rusqlite::Result<Db> {
        conn.execute_batch(SCHEMA)?;
        let names: HashMap<u32, String> = conn
            .prepare("SELECT id, name FROM names")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let ids = names.iter().map(|(i, n)| (n.clone(), *i)).collect();
        Ok(Db { conn, ids, names })
    }

    /// The id of `name` (added to `names` when new).
    fn intern(&mut self, name: &str) -> rusqlite::Result<u32> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO names (name) VALUES (?1)")?
            .execute(params![name])?;
        let id: u32 = self
            .conn
            .prepare_cached("SELECT id FROM names WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))?;
        self.ids.insert(name.to_string(), id);
        self.names.insert(id, name.to_string());
        Ok(id)
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(&id).map_or("", String::as_str)
    }

    /// `r` as stored (its strings move: no copy, and no free of the request
    /// thread's memory here until the batch is written).
    fn pack(&mut self, r: &mut Record) -> rusqlite::Result<Stored> {
        let us = |ms: f64| (ms.max(0.0) * 1000.0) as u64;
        Ok(Stored {
            ts_ms: r.ts_ms,
            client: self.intern(&r.client)?,
            model: std::mem::take(&mut r.model),
            served_model: r.served_model.take(),
            upstream: self.intern(r.upstream.as_ref().map_or("", |u| u.name()))?,
            key: self.intern(r.key.as_ref().map_or("", |k| k.id.as_str()))?,
            route: self.intern(r.route)?,
            status: r.status,
            attempts: r.attempts,
            latency_us: us(r.latency_ms),
            ttft_us: r.ttft_ms.map(us),
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            estimated: r.estimated,
            error: self.intern(r.error)?,
        })
    }

    /// The batches whose records may be at or after `since_ms`, newest first,
    /// decoded (one that does not decode is skipped).
    fn batches_since(&self, since_ms: u64) -> rusqlite::Result<Vec<Vec<Stored>>> {
        let mut st = self.conn.prepare_cached(
            "SELECT records FROM batches WHERE last_ts_ms >= ?1 ORDER BY id DESC",
        )?;
        let rows = st.query_map(params![since_ms as i64], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for blob in rows {
            match postcard::from_bytes::<Vec<Stored>>(&blob?) {
                Ok(b) => out.push(b),
                Err(e) => log::warn!("usage store: a batch does not decode ({e}); skipped"),
            }
        }
        Ok(out)
    }
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
        let log = UsageLog {
            db: Mutex::new(Db::open(conn)?),
            pending: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            retention,
            max_rows: max_rows.max(1),
        };
        let installed = LOG.get_or_init(|| log);
        static WRITER: OnceLock<()> = OnceLock::new();
        WRITER.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("usage-writer".into())
                .spawn(|| {
                    background_priority();
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        if let Some(l) = LOG.get() {
                            l.flush();
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("usage store: cannot start its writer: {e}");
            }
        });
        Ok(installed)
    }

    /// Writes the queued records as one batch, then drops what is past the
    /// retention.
    pub fn flush(&self) {
        let mut spare = self.spare.lock();
        if self.pending.lock().is_empty() {
            return;
        }
        std::mem::swap(&mut *self.pending.lock(), &mut *spare);
        if let Err(e) = self.write(&mut spare) {
            log::error!("usage store: {} records lost: {e}", spare.len());
        }
        let n = spare.len();
        spare.clear();
        // room for the next batch like this one is kept (growing a vector of
        // records on the request path copies and page-faults megabytes); a
        // burst's room is given back once the load falls
        if spare.capacity() > 4 * n.max(1024) {
            spare.shrink_to(2 * n.max(1024));
        }
    }

    fn write(&self, batch: &mut [Record]) -> rusqlite::Result<()> {
        let mut db = self.db.lock();
        let packed = batch
            .iter_mut()
            .map(|r| db.pack(r))
            .collect::<rusqlite::Result<Vec<Stored>>>()?;
        let blob = postcard::to_allocvec(&packed)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let first = packed.iter().map(|r| r.ts_ms).min().unwrap_or(0);
        let last = packed.iter().map(|r| r.ts_ms).max().unwrap_or(0);
        let tx = db.conn.transaction()?;
        tx.execute(
            "INSERT INTO batches (first_ts_ms, last_ts_ms, count, records) VALUES (?1, ?2, ?3, ?4)",
            params![first as i64, last as i64, packed.len() as i64, blob],
        )?;
        let oldest = crate::clock::now_ms().saturating_sub(self.retention.as_millis() as u64);
        tx.execute(
            "DELETE FROM batches WHERE last_ts_ms < ?1",
            params![oldest as i64],
        )?;
        trim(&tx, oldest, self.max_rows)?;
        tx.commit()
    }

    /// Totals since `since_ms`, grouped `by` client, model, key, upstream or day.
    pub fn usage(&self, by: &str, since_ms: u64) -> Result<Value, String> {
        if !["client", "model", "key", "upstream", "day"].contains(&by) {
            return Err(format!(
                "by={by:?}: use client, model, key, upstream or day"
            ));
        }
        self.flush();
        let db = self.db.lock();
        let since = since_ms.max(self.oldest_kept());
        let batches = db.batches_since(since).map_err(|e| e.to_string())?;
        #[derive(Default)]
        struct Agg {
            requests: u64,
            tokens_in: u64,
            tokens_out: u64,
            errors: u64,
            estimated: u64,
            latency_us: u64,
            ttft_us: u64,
            ttft_n: u64,
        }
        let mut groups: HashMap<String, Agg> = HashMap::new();
        for r in batches.iter().flatten().filter(|r| r.ts_ms >= since) {
            let name = match by {
                "client" => db.name(r.client).to_string(),
                "key" => db.name(r.key).to_string(),
                "upstream" => db.name(r.upstream).to_string(),
                "day" => crate::clock::fmt_iso(r.ts_ms)[..10].to_string(),
                _ => r.served_model.as_ref().unwrap_or(&r.model).clone(),
            };
            let g = groups.entry(name).or_default();
            g.requests += 1;
            g.tokens_in += r.tokens_in;
            g.tokens_out += r.tokens_out;
            g.errors += u64::from(r.status >= 400);
            g.estimated += u64::from(r.estimated);
            g.latency_us += r.latency_us;
            if let Some(t) = r.ttft_us {
                g.ttft_us += t;
                g.ttft_n += 1;
            }
        }
        let mut rows: Vec<(String, Agg)> = groups.into_iter().collect();
        rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|(name, g)| {
                json!({
                    by: name,
                    "requests": g.requests,
                    "tokens_in": g.tokens_in,
                    "tokens_out": g.tokens_out,
                    "errors": g.errors,
                    "estimated": g.estimated,
                    "avg_latency_ms": g.latency_us as f64 / g.requests.max(1) as f64 / 1000.0,
                    "avg_ttft_ms": (g.ttft_n > 0).then(|| g.ttft_us as f64 / g.ttft_n as f64 / 1000.0),
                })
            })
            .collect();
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
        let db = self.db.lock();
        let limit = limit.clamp(1, 1000) as usize;
        let mut st = db
            .conn
            .prepare_cached("SELECT records FROM batches ORDER BY id DESC")
            .map_err(|e| e.to_string())?;
        let mut blobs = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| e.to_string())?;
        let oldest = self.oldest_kept();
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(blob) = blobs.next() else { break };
            let Ok(batch) = postcard::from_bytes::<Vec<Stored>>(&blob.map_err(|e| e.to_string())?)
            else {
                continue;
            };
            for r in batch.iter().rev().filter(|r| r.ts_ms >= oldest) {
                if client.is_some_and(|c| db.name(r.client) != c)
                    || status.is_some_and(|s| r.status != s)
                {
                    continue;
                }
                out.push(json!({
                    "time": crate::clock::fmt_iso(r.ts_ms),
                    "client": db.name(r.client),
                    "model": r.model,
                    "served_model": r.served_model.as_ref().unwrap_or(&r.model),
                    "upstream": db.name(r.upstream),
                    "key": db.name(r.key),
                    "route": db.name(r.route),
                    "status": r.status,
                    "attempts": r.attempts,
                    "latency_ms": r.latency_us as f64 / 1000.0,
                    "tokens_in": r.tokens_in,
                    "tokens_out": r.tokens_out,
                    "estimated": r.estimated,
                    "error": db.name(r.error),
                    "ttft_ms": r.ttft_us.map(|t| t as f64 / 1000.0),
                }));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(json!({"requests": out}))
    }

    /// Records before this time are past the retention (a batch may still
    /// hold some until its newest record is too): queries skip them.
    fn oldest_kept(&self) -> u64 {
        crate::clock::now_ms().saturating_sub(self.retention.as_millis() as u64)
    }
}

/// Keeps at most `max_rows` records: whole batches go oldest first, and the
/// oldest one left loses its oldest records when only part of it fits.
fn trim(tx: &rusqlite::Transaction<'_>, oldest_ms: u64, max_rows: u64) -> rusqlite::Result<()> {
    let total: i64 = tx.query_row("SELECT COALESCE(SUM(count), 0) FROM batches", [], |r| {
        r.get(0)
    })?;
    let mut excess = (total as u64).saturating_sub(max_rows);
    while excess > 0 {
        let Some((id, count, blob)) = tx
            .query_row(
                "SELECT id, count, records FROM batches ORDER BY id LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?
        else {
            break;
        };
        if count <= excess {
            tx.execute("DELETE FROM batches WHERE id = ?1", params![id])?;
            excess -= count;
            continue;
        }
        // part of this batch fits: keep its newest records (and none past the retention)
        let mut records: Vec<Stored> = postcard::from_bytes(&blob).unwrap_or_default();
        records.sort_by_key(|r| r.ts_ms);
        let keep: Vec<Stored> = records
            .into_iter()
            .skip(excess as usize)
            .filter(|r| r.ts_ms >= oldest_ms)
            .collect();
        let first = keep.first().map_or(0, |r| r.ts_ms);
        let last = keep.last().map_or(0, |r| r.ts_ms);
        let blob = postcard::to_allocvec(&keep)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.execute(
            "UPDATE batches SET first_ts_ms = ?2, last_ts_ms = ?3, count = ?4, records = ?5 WHERE id = ?1",
            params![id, first as i64, last as i64, keep.len() as i64, blob],
        )?;
        break;
    }
    Ok(())
}

/// Lowers the calling thread's scheduling priority (nice 10): the writer
/// keeps up with its share of a busy machine's CPU without taking it from
/// the request threads. Failure leaves the priority as it was.
#[allow(unsafe_code)]
fn background_priority() {
    // SAFETY: setpriority on this thread's own id (gettid) changes only its
    // nice value; no memory is passed or retained.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if r != 0 {
        log::debug!("usage writer: could not lower its priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(max_rows: u64) -> UsageLog {
        UsageLog {
            db: Mutex::new(Db::open(Connection::open_in_memory().unwrap()).unwrap()),
            pending: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            retention: Duration::from_secs(3600),
            max_rows,
        }
    }

    fn rec(ts_ms: u64, client: &str, model: &str, status: u16) -> Record {
        Record {
            ts_ms,
            client: Arc::from(client),
            model: model.into(),
            route: "chat",
            status,
            tokens_in: 5,
            tokens_out: 3,
            latency_ms: 2.5,
            ..Default::default()
        }
    }

    #[test]
    fn batches_keep_every_record_and_at_most_max_rows() {
        let now = crate::clock::now_ms();
        let l = log_with(5);
        for batch in [3, 4] {
            let mut recs: Vec<Record> = (0..batch)
                .map(|i| rec(now - 1000 + i, if i % 2 == 0 { "a" } else { "b" }, "m", 200))
                .collect();
            l.write(&mut recs).unwrap();
        }
        // 7 written, 5 kept: the oldest batch lost its two oldest records
        let recent = l.recent(100, None, None).unwrap();
        assert_eq!(recent["requests"].as_array().unwrap().len(), 5, "{recent}");
        let usage = l.usage("client", 0).unwrap();
        let total: u64 = usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 5, "{usage}");
        assert_eq!(usage["rows"][0]["tokens_in"], 15, "{usage}");
        assert_eq!(usage["rows"][0]["avg_latency_ms"], 2.5, "{usage}");
        let only_b = l.recent(100, Some("b"), None).unwrap();
        assert!(only_b["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["client"] == "b"));
        assert!(l.usage("colour", 0).is_err());
    }

    #[test]
    fn a_batch_that_does_not_decode_is_skipped() {
        let l = log_with(100);
        l.write(&mut [rec(crate::clock::now_ms(), "a", "m", 200)])
            .unwrap();
        l.db.lock()
            .conn
            .execute(
                "INSERT INTO batches (first_ts_ms, last_ts_ms, count, records) VALUES (0, ?1, 1, x'ffffffff')",
                params![crate::clock::now_ms() as i64],
            )
            .unwrap();
        assert_eq!(
            l.recent(10, None, None).unwrap()["requests"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(l.usage("model", 0).unwrap()["rows"][0]["requests"], 1);
    }
}
