//! The response cache in the fleet's Redis (`cache.store: redis`): one
//! string per answer under `{prefix}:v1:cache:{client}:{model}:{key}` (the
//! names hex-encoded), expiring with `cache.ttl`. A failed call is a miss:
//! it never opens the breaker (requests do not depend on the cache).

use super::link::Link;
use std::time::{Duration, Instant};

/// The longest a purge scans before it answers with what it dropped so far.
const PURGE_FOR: Duration = Duration::from_secs(10);

fn name(keyspace: &str, rest: &str) -> String {
    format!("{keyspace}:v1:cache:{rest}")
}

pub async fn get(link: &Link, keyspace: &str, rest: &str) -> Option<String> {
    let mut conn = link.conn();
    let got = link
        .bounded(
            redis::cmd("GET")
                .arg(name(keyspace, rest))
                .query_async(&mut conn),
        )
        .await;
    got.unwrap_or_else(|_| {
        crate::metrics::STORE_FAILURES.inc();
        None
    })
}

pub async fn put(link: &Link, keyspace: &str, rest: &str, text: String, ttl: Duration) {
    let mut conn = link.conn();
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let mut set = redis::cmd("SET");
    set.arg(name(keyspace, rest)).arg(text).arg("PX").arg(ms);
    if link
        .bounded(set.query_async::<()>(&mut conn))
        .await
        .is_err()
    {
        crate::metrics::STORE_FAILURES.inc();
    }
}

/// Drops the answers matching `pattern` (`client:model:*`, `*` for any part).
pub async fn purge(link: &Link, keyspace: &str, pattern: &str) -> Result<u64, String> {
    let matching = name(keyspace, pattern);
    let started = Instant::now();
    let mut cursor = 0u64;
    let mut dropped = 0u64;
    loop {
        let mut conn = link.conn();
        let (next, names): (u64, Vec<String>) = link
            .bounded(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&matching)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
        if !names.is_empty() {
            let n: u64 = link
                .bounded(redis::cmd("UNLINK").arg(&names).query_async(&mut conn))
                .await?;
            dropped += n;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(dropped);
        }
        if started.elapsed() > PURGE_FOR {
            return Err(format!(
                "dropped {dropped} answers in {PURGE_FOR:?} and stopped; purge again for the rest"
            ));
        }
    }
}
