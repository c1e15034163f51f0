//! Usage accounting: one record per API request (never its body), kept in
//! SQLite (`state.path`/usage.db, or in memory without a state path) and
//! written off the request path. A request writes its record (64 bytes of
//! numbers, names numbered by `store::names`, plus its model names) into
//! its worker thread's small stage, which moves to a bounded shared queue
//! 64 records at a time; a background writer thread (`SCHED_BATCH`, nice 10)
//! takes the queue and what is staged ten times a second, stores it, and
//! applies retention (`state.retention` by age, `state.max_rows` by count),
//! so the store never grows without bound.
//!
//! Layout: each flush is one row of `batches` holding its records packed
//! (`store::batch`: varints, ~20 bytes a record), with the batch's time span,
//! count and how many of its oldest records were trimmed (`skip`); the names
//! records repeat (client, upstream, key id, route, error kind: bounded sets,
//! from the config and the code) are numbers into `names`. One insert per
//! flush instead of one per request: a row per request cost the writer ~1 µs
//! each, which a saturated benchmark felt; packed, it is ~0.15 µs. Queries
//! decode the batches they need (newest first for the request list, those
//! since `since` for totals) and flush first, so they see every request
//! that has ended.
//!
//! Failure behaviour: a full queue (the writer far behind) drops records and
//! counts them in `switchyard_usage_dropped_total`; a store error is logged
//! and the batch is lost; a batch that does not decode is skipped; requests
//! never wait for the store.

use super::filter::RequestFilter;
use super::totals::Totals;
use crate::store::batch::{self, Borrowed, Stored};
use crate::store::queue::{Queue, Queued};
pub use crate::store::queue::{Record, RecordNames};
use parking_lot::Mutex;
use rusqlite::{params, Connection};
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

/// The usage store.
pub struct UsageLog {
    db: Mutex<Db>,
    pending: Mutex<Queue>,
    /// The other half of the double buffer: the last batch's queue, emptied,
    /// swapped in for `pending` so requests never regrow (and page-fault) a
    /// fresh one after each flush. Held while a flush runs.
    spare: Mutex<Queue>,
    /// Each recording thread's stage (see [`record`]); lock order: `stages`,
    /// then a stage, then `pending`.
    stages: Mutex<Vec<Arc<Mutex<Queue>>>>,
    retention: Duration,
    max_rows: u64,
}

static LOG: OnceLock<UsageLog> = OnceLock::new();

/// The process's usage store, once [`UsageLog::install`]ed.
pub fn log() -> Option<&'static UsageLog> {
    LOG.get()
}

/// Records a worker thread gathers before it moves them to the shared queue
/// at once: its stage (~4 KiB) stays in that thread's cache, so a request
/// writes a hot line instead of waiting on a cold one.
const STAGE: usize = 64;

thread_local! {
    static STAGED: std::cell::OnceCell<Arc<Mutex<Queue>>> = const { std::cell::OnceCell::new() };
}

/// Queues `r` with its names (the model asked, the one served when another
/// answered, the request id; no-op before the store is installed). Copies
/// the names into this thread's stage; allocates only when a queue grows.
pub fn record(r: Record, names: &RecordNames<'_>) {
    let Some(l) = LOG.get() else { return };
    STAGED.with(|cell| {
        let stage = cell.get_or_init(|| {
            let s = Arc::new(Mutex::new(Queue::default()));
            l.stages.lock().push(s.clone());
            s
        });
        let mut stage = stage.lock();
        stage.push(r, names);
        if stage.records.len() >= STAGE {
            l.take(&mut stage);
        }
    });
}

/// Adds record `r` to totals `t`.
fn add<S>(t: &mut Totals, r: &batch::Stored<S>) {
    let tokens = (r.tokens_in, r.tokens_out);
    t.add(r.status, tokens, r.estimated, r.latency_us, r.ttft_us);
    t.cost = t.cost.saturating_add(r.cost);
}

const SCHEMA: &str = "PRAGMA journal_mode=WAL;
    PRAGMA synchronous=NORMAL;
    CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS batches (
        id INTEGER PRIMARY KEY, first_ts_ms INTEGER NOT NULL, last_ts_ms INTEGER NOT NULL,
        count INTEGER NOT NULL, records BLOB NOT NULL, skip INTEGER NOT NULL DEFAULT 0,
        ids BLOB, costs BLOB);
    CREATE INDEX IF NOT EXISTS batches_last ON batches (last_ts_ms);";

/// The connection and the `names` table both ways.
struct Db {
    conn: Connection,
    ids: HashMap<String, u32>,
    names: HashMap<u32, String>,
    /// `store::names` number → `names` id (0: not looked up yet).
    of_process: Vec<u32>,
    /// The last batch's packed bytes' room, reused.
    blob: Vec<u8>,
}

impl Db {
    fn open(conn: Connection) -> rusqlite::Result<Db> {
        conn.execute_batch(SCHEMA)?;
        // a store made before `skip` existed gets it
        let has_skip = conn
            .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'skip'")?
            .exists([])?;
        if !has_skip {
            conn.execute_batch("ALTER TABLE batches ADD COLUMN skip INTEGER NOT NULL DEFAULT 0")?;
        }
        // and before `ids` (the records' request ids: NULL in older rows)
        let has_ids = conn
            .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'ids'")?
            .exists([])?;
        if !has_ids {
            conn.execute_batch("ALTER TABLE batches ADD COLUMN ids BLOB")?;
        }
        // and before `costs` (NULL in older rows: they cost nothing)
        let has_costs = conn
            .prepare("SELECT 1 FROM pragma_table_info('batches') WHERE name = 'costs'")?
            .exists([])?;
        if !has_costs {
            conn.execute_batch("ALTER TABLE batches ADD COLUMN costs BLOB")?;
        }
        let names: HashMap<u32, String> = conn
            .prepare("SELECT id, name FROM names")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let ids = names.iter().map(|(i, n)| (n.clone(), *i)).collect();
        Ok(Db {
            conn,
            ids,
            names,
            of_process: Vec::new(),
            blob: Vec::new(),
        })
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

    /// The group a record counts in, `by` client, key, upstream, day or
    /// (anything else) the model served.
    fn group(&self, r: &Stored, by: &str) -> String {
        match by {
            "client" => self.name(r.client).to_string(),
            "key" => self.name(r.key).to_string(),
            "upstream" => self.name(r.upstream).to_string(),
            "day" => crate::clock::fmt_iso(r.ts_ms)[..10].to_string(),
            _ => r.served_model.as_ref().unwrap_or(&r.model).clone(),
        }
    }

    /// The `names` id of process name number `n` (`store::names`).
    fn id_of(&mut self, n: u32) -> rusqlite::Result<u32> {
        if let Some(&id) = self.of_process.get(n as usize).filter(|id| **id != 0) {
            return Ok(id);
        }
        let name = crate::store::names::name(n).unwrap_or_default();
        let id = self.intern(&name)?;
        if self.of_process.len() <= n as usize {
            self.of_process.resize(n as usize + 1, 0);
        }
        self.of_process[n as usize] = id;
        Ok(id)
    }

    /// Looks up (and adds to `names` when new) every name `records` use,
    /// so [`Db::stored`] finds them all in `of_process`.
    fn resolve(&mut self, records: &[Queued]) -> rusqlite::Result<()> {
        for q in records {
            let r = &q.r;
            for n in [r.client, r.upstream, r.key, r.route, r.error] {
                self.id_of(n)?;
            }
        }
        Ok(())
    }

    /// `q` as stored (its names [`Db::resolve`]d before).
    fn stored<'q>(of_process: &[u32], q: &Queued, queue: &'q Queue) -> Borrowed<'q> {
        let id = |n: u32| of_process.get(n as usize).copied().unwrap_or(0);
        let r = &q.r;
        let (model, served_model) = queue.models(q);
        Borrowed {
            ts_ms: r.ts_us / 1000,
            client: id(r.client),
            model,
            served_model,
            upstream: id(r.upstream),
            key: id(r.key),
            route: id(r.route),
            status: r.status,
            attempts: u32::from(r.attempts),
            latency_us: u64::from(r.latency_us),
            ttft_us: r.ttft_us.map(u64::from),
            tokens_in: u64::from(r.tokens_in),
            tokens_out: u64::from(r.tokens_out),
            estimated: r.estimated,
            error: id(r.error),
            cost: r.cost,
        }
    }

    /// The batches whose records may be at or after `since_ms`, newest first,
    /// decoded (one that does not decode is skipped).
    fn batches_since(&self, since_ms: u64) -> rusqlite::Result<Vec<Vec<Stored>>> {
        let mut st = self.conn.prepare_cached(
            "SELECT records, skip, costs FROM batches WHERE last_ts_ms >= ?1 ORDER BY id DESC",
        )?;
        let rows = st.query_map(params![since_ms as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (blob, skip, costs) = row?;
            match decode_row(&blob, skip, costs.as_deref()) {
                Some(b) => out.push(b),
                None => log::warn!("usage store: a batch does not decode; skipped"),
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
            pending: Mutex::new(Queue::default()),
            spare: Mutex::new(Queue::default()),
            stages: Mutex::new(Vec::new()),
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
        {
            let mut stages = self.stages.lock();
            for stage in stages.iter() {
                self.take(&mut stage.lock());
            }
            // a thread that ended left its (now empty) stage here alone
            stages.retain(|s| Arc::strong_count(s) > 1);
        }
        {
            let mut pending = self.pending.lock();
            if pending.records.is_empty() {
                return;
            }
            std::mem::swap(&mut *pending, &mut *spare);
        }
        // threads' stages arrive in any order: a batch is stored oldest first
        spare.records.sort_unstable_by_key(|q| q.r.ts_us);
        if let Err(e) = self.write(&spare) {
            log::error!("usage store: {} records lost: {e}", spare.records.len());
        }
        let (n, text) = (spare.records.len(), spare.text.len());
        spare.clear();
        // room for the next batch like this one is kept (growing a queue on
        // the request path copies and page-faults megabytes); a burst's room
        // is given back once the load falls
        if spare.records.capacity() > 4 * n.max(1024) {
            spare.records.shrink_to(2 * n.max(1024));
        }
        if spare.text.capacity() > 4 * text.max(16 * 1024) {
            spare.text.shrink_to(2 * text.max(16 * 1024));
        }
    }

    /// Moves `stage`'s records to the shared queue; beyond [`MAX_PENDING`]
    /// (the writer far behind) they are dropped and counted.
    fn take(&self, stage: &mut Queue) {
        if stage.records.is_empty() {
            return;
        }
        let dropped = self.pending.lock().append(stage, MAX_PENDING);
        if dropped > 0 {
            crate::metrics::USAGE_DROPPED.inc_by(dropped as u64);
        }
    }

    fn write(&self, queue: &Queue) -> rusqlite::Result<()> {
        let mut db = self.db.lock();
        db.resolve(&queue.records)?;
        let first = queue.records.iter().map(|q| q.r.ts_us).min().unwrap_or(0) / 1000;
        let last = queue.records.iter().map(|q| q.r.ts_us).max().unwrap_or(0) / 1000;
        let Db {
            of_process, blob, ..
        } = &mut *db;
        blob.clear();
        let records = queue
            .records
            .iter()
            .map(|q| Db::stored(of_process, q, queue));
        batch::encode_into(blob, first, records)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let blob = std::mem::take(&mut db.blob);
        let ids = batch::encode_ids(queue.records.iter().map(|q| queue.request_id(q)))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        // no costs column for a batch that cost nothing
        let costs = if queue.records.iter().any(|q| q.r.cost > 0) {
            Some(
                batch::encode_costs(queue.records.iter().map(|q| q.r.cost))
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            )
        } else {
            None
        };
        let tx = db.conn.transaction()?;
        tx.execute(
            "INSERT INTO batches (first_ts_ms, last_ts_ms, count, records, ids, costs) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![first as i64, last as i64, queue.records.len() as i64, blob, ids, costs],
        )?;
        tx.execute(
            "DELETE FROM batches WHERE last_ts_ms < ?1",
            params![self.oldest_kept() as i64],
        )?;
        trim(&tx, self.max_rows)?;
        let done = tx.commit();
        db.blob = blob; // its room serves the next batch
        if done.is_ok() && super::totals::rollups_on() {
            let name = |id: u32| db.name(id).to_string();
            let names = |r: &Borrowed<'_>| {
                let model = r.served_model.unwrap_or(r.model).to_string();
                [name(r.client), model, name(r.key), name(r.upstream)]
            };
            let minute = crate::clock::now_ms() / 60_000 * 60_000;
            let of_process = &db.of_process;
            super::totals::note(
                minute,
                queue.records.iter().map(|q| {
                    let r = Db::stored(of_process, q, queue);
                    let mut t = Totals::default();
                    add(&mut t, &r);
                    (names(&r), t)
                }),
            );
        }
        done
    }

    /// Totals since `since_ms`, grouped `by` client, model, key, upstream or day.
    pub fn usage(&self, by: &str, since_ms: u64) -> Result<Value, String> {
        if !["client", "model", "key", "upstream", "day"].contains(&by) {
            return Err(format!(
                "by={by:?}: use client, model, key, upstream or day"
            ));
        }
        let rows = super::totals::rows(by, self.totals(by, since_ms)?);
        Ok(json!({"by": by, "since": crate::clock::fmt_iso(since_ms), "rows": rows}))
    }

    /// [`UsageLog::usage`]'s groups as numbers (`by` already checked).
    pub fn totals(&self, by: &str, since_ms: u64) -> Result<HashMap<String, Totals>, String> {
        self.flush();
        let db = self.db.lock();
        let since = since_ms.max(self.oldest_kept());
        let batches = db.batches_since(since).map_err(|e| e.to_string())?;
        let mut groups: HashMap<String, Totals> = HashMap::new();
        for r in batches.iter().flatten().filter(|r| r.ts_ms >= since) {
            let g = groups.entry(db.group(r, by)).or_default();
            add(g, r);
        }
        Ok(groups)
    }

    /// Totals since `since_ms` per `bucket_ms` (from the start of a UTC
    /// bucket) and per client, model, key or upstream (`by`): points sorted
    /// by time, then name; empty buckets left out.
    pub fn usage_series(&self, by: &str, since_ms: u64, bucket_ms: u64) -> Result<Value, String> {
        if !["client", "model", "key", "upstream"].contains(&by) {
            return Err(format!("by={by:?}: use client, model, key or upstream"));
        }
        let bucket_ms = bucket_ms.max(60_000);
        self.flush();
        let db = self.db.lock();
        let since = since_ms.max(self.oldest_kept());
        let start = since - since % bucket_ms;
        let batches = db.batches_since(since).map_err(|e| e.to_string())?;
        // (bucket start, name) -> requests, tokens in, tokens out, errors, cost
        let mut groups: std::collections::BTreeMap<(u64, String), [u64; 5]> = Default::default();
        for r in batches.iter().flatten().filter(|r| r.ts_ms >= since) {
            let name = db.group(r, by);
            let g = groups
                .entry((r.ts_ms - r.ts_ms % bucket_ms, name))
                .or_default();
            g[0] += 1;
            g[1] += r.tokens_in;
            g[2] += r.tokens_out;
            g[3] += u64::from(r.status >= 400);
            g[4] = g[4].saturating_add(r.cost);
        }
        let points: Vec<Value> = groups
            .into_iter()
            .map(|((t, name), g)| {
                json!({"t": t / 1000, "name": name, "requests": g[0],
                       "tokens_in": g[1], "tokens_out": g[2], "errors": g[3],
                       "cost_usd": crate::config::quota::dollars(g[4])})
            })
            .collect();
        Ok(json!({"by": by, "bucket_seconds": bucket_ms / 1000,
                  "since": crate::clock::fmt_iso(start), "points": points}))
    }

    /// The newest `limit` requests that `filter` keeps.
    pub fn recent(&self, limit: u32, filter: &RequestFilter) -> Result<Value, String> {
        self.flush();
        let db = self.db.lock();
        let limit = limit.clamp(1, 1000) as usize;
        let since = filter.since_ms.max(self.oldest_kept());
        let until = filter.until_ms.unwrap_or(u64::MAX).min(i64::MAX as u64);
        let mut st = db
            .conn
            .prepare_cached(
                "SELECT records, skip, ids, costs FROM batches \
                 WHERE last_ts_ms >= ?1 AND first_ts_ms <= ?2 ORDER BY id DESC",
            )
            .map_err(|e| e.to_string())?;
        let mut blobs = st
            .query_map(params![since as i64, until as i64], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(row) = blobs.next() else { break };
            let (blob, skip, ids, costs) = row.map_err(|e| e.to_string())?;
            let Some(batch) = decode_row(&blob, skip, costs.as_deref()) else {
                continue;
            };
            let ids = request_ids(ids.as_deref(), skip, batch.len());
            for (r, id) in batch
                .iter()
                .zip(ids)
                .rev()
                .filter(|(r, _)| r.ts_ms >= since)
            {
                let client = db.name(r.client);
                let served = r.served_model.as_deref();
                if !filter.matches(client, &r.model, served, r.status, r.ts_ms) {
                    continue;
                }
                out.push(json!({
                    "time": crate::clock::fmt_iso(r.ts_ms),
                    "client": client,
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
                    "cost_usd": crate::config::quota::dollars(r.cost),
                    "error": db.name(r.error),
                    "ttft_ms": r.ttft_us.map(|t| t as f64 / 1000.0),
                    "request_id": id,
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
/// oldest one left skips its first records (`skip`: they are never read
/// again) when only part of it fits. Nothing is decoded.
fn trim(tx: &rusqlite::Transaction<'_>, max_rows: u64) -> rusqlite::Result<()> {
    let total: i64 = tx.query_row("SELECT COALESCE(SUM(count), 0) FROM batches", [], |r| {
        r.get(0)
    })?;
    let mut excess = (total as u64).saturating_sub(max_rows);
    while excess > 0 {
        let oldest = tx
            .query_row(
                "SELECT id, count FROM batches ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let Some((id, count)) = oldest else { break };
        if count <= excess {
            tx.execute("DELETE FROM batches WHERE id = ?1", params![id])?;
            excess -= count;
            continue;
        }
        tx.execute(
            "UPDATE batches SET skip = skip + ?2, count = count - ?2 WHERE id = ?1",
            params![id, excess as i64],
        )?;
        break;
    }
    Ok(())
}

/// The records of a stored batch with their `costs` (none: a batch that
/// cost nothing, or from before costs were kept), less the `skip` oldest
/// trimmed away (`None`: it does not decode).
fn decode_row(blob: &[u8], skip: i64, costs: Option<&[u8]>) -> Option<Vec<Stored>> {
    let mut records = batch::decode(blob)?;
    if let Some(costs) = costs.and_then(batch::decode_costs) {
        for (r, c) in records.iter_mut().zip(costs) {
            r.cost = c;
        }
    }
    let skip = usize::try_from(skip).unwrap_or(0).min(records.len());
    records.drain(..skip);
    Some(records)
}

/// The request ids of a stored batch's `len` records left after `skip`
/// (`None` each: a row from before ids were kept, or ids that do not decode).
fn request_ids(blob: Option<&[u8]>, skip: i64, len: usize) -> Vec<Option<String>> {
    let all = blob.and_then(batch::decode_ids).unwrap_or_default();
    let skip = usize::try_from(skip).unwrap_or(0);
    let mut ids: Vec<Option<String>> = all.into_iter().skip(skip).collect();
    ids.resize(len, None);
    ids
}

/// Makes the calling thread a background one: `SCHED_BATCH` (it never
/// preempts a request thread when it wakes, it waits for the next tick) at
/// nice 10 (a small share of a busy CPU, still enough to keep up). Failure
/// leaves the thread as it was.
#[allow(unsafe_code)]
fn background_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both calls change only this thread's own (pid 0 / gettid)
    // scheduling; `param` is read during the call and not retained.
    let (batch, nice) = unsafe {
        (
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param),
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10),
        )
    };
    if batch != 0 || nice != 0 {
        log::debug!("usage writer: could not lower its priority");
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
