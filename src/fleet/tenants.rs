//! Run-time clients shared by a fleet: every record in one Redis hash
//! (`{keyspace}:v1:clients`, name → JSON), a version counter bumped with
//! each change, and the audit list (newest first, trimmed). Each instance
//! reads the version every [`POLL_EVERY`] and the whole hash when it moved,
//! so a new or revoked key reaches every instance within a second.
//!
//! Failure behaviour: a change while Redis does not answer is refused (the
//! admin caller is told); instances keep the clients they last read; a
//! hash larger than [`super::super::tenants::MAX_TENANTS`] records, or a
//! record that does not parse or check, is skipped and logged.

use super::link::Link;
use crate::tenants::{Audit, Tenant, MAX_TENANTS};
use std::time::Duration;

/// How often the version is read.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// A stored record longer than this is not one the gateway wrote.
const MAX_RECORD: usize = 64 << 10;

fn hash_key(keyspace: &str) -> String {
    format!("{keyspace}:v1:clients")
}

fn version_key(keyspace: &str) -> String {
    format!("{keyspace}:v1:clients:version")
}

fn audit_key(keyspace: &str) -> String {
    format!("{keyspace}:v1:clients:audit")
}

/// Stores a record, bumps the version and adds the audit record, in one
/// script (all or nothing): when `ARGV[4]` is empty only if the name is
/// free, otherwise only if the stored record is still exactly `ARGV[4]`.
static WRITE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[4] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[4] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
return 1",
    )
});

/// Writes `tenant` and its audit record and bumps the version, at once:
/// a new one (`expected` none) only if its name is free, a change only if
/// the stored record is still `expected` (`Ok(false)` otherwise).
pub async fn write(
    link: &Link,
    keyspace: &str,
    tenant: &Tenant,
    audit: &Audit,
    expected: Option<&str>,
) -> Result<bool, String> {
    let record = serde_json::to_string(tenant).map_err(|e| e.to_string())?;
    let audit = serde_json::to_string(audit).map_err(|e| e.to_string())?;
    let mut conn = link.conn();
    let mut call = WRITE.key(hash_key(keyspace));
    call.key(version_key(keyspace))
        .key(audit_key(keyspace))
        .arg(&tenant.name)
        .arg(record)
        .arg(audit)
        .arg(expected.unwrap_or(""))
        .arg(crate::tenants::db::MAX_AUDIT);
    let done: i64 = link.bounded(call.invoke_async(&mut conn)).await?;
    Ok(done == 1)
}

/// The version now (`0`: none yet).
pub async fn version(link: &Link, keyspace: &str) -> Result<u64, String> {
    let v = link.get(&version_key(keyspace)).await?;
    Ok(v.and_then(|s| s.trim().parse().ok()).unwrap_or(0))
}

/// Every shared tenant that parses and checks.
pub async fn read_all(link: &Link, keyspace: &str) -> Result<Vec<Tenant>, String> {
    let mut conn = link.conn();
    let len: u64 = link
        .bounded(
            redis::cmd("HLEN")
                .arg(hash_key(keyspace))
                .query_async(&mut conn),
        )
        .await?;
    if len > MAX_TENANTS as u64 {
        return Err(format!(
            "{len} clients in the shared store: more than {MAX_TENANTS}"
        ));
    }
    let all: Vec<(String, String)> = link
        .bounded(
            redis::cmd("HGETALL")
                .arg(hash_key(keyspace))
                .query_async(&mut conn),
        )
        .await?;
    let mut out: Vec<Tenant> = all
        .into_iter()
        .filter_map(|(name, text)| parse(&name, &text))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A stored record, if it is one the gateway could have written.
fn parse(name: &str, text: &str) -> Option<Tenant> {
    let t = (text.len() <= MAX_RECORD)
        .then(|| serde_json::from_str::<Tenant>(text).ok())
        .flatten()
        .filter(|t| t.name == name && t.key_sha256.len() == 64);
    if t.is_none() {
        log::warn!(
            "fleet: the shared record of client {:?} does not parse; skipped",
            name.chars().take(64).collect::<String>()
        );
    }
    t
}

/// The newest `limit` audit records.
pub async fn audit(link: &Link, keyspace: &str, limit: u32) -> Result<Vec<Audit>, String> {
    let mut conn = link.conn();
    let items: Vec<String> = link
        .bounded(
            redis::cmd("LRANGE")
                .arg(audit_key(keyspace))
                .arg(0)
                .arg(i64::from(limit.clamp(1, 10_000)) - 1)
                .query_async(&mut conn),
        )
        .await?;
    Ok(items
        .iter()
        .filter(|t| t.len() <= MAX_RECORD)
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect())
}

/// Tells the fleet this instance's new quota use and reads the fleet's
/// totals back, one pipeline for every counter: each counter's period has
/// one Redis counter (`{keyspace}:v1:quota:…`) that instances add to.
pub async fn exchange_quotas(link: &Link, keyspace: &str) -> Result<(), String> {
    let counters = crate::tenants::quota::all_counters();
    for part in counters.chunks(512) {
        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(part.len());
        for c in part {
            let (start, delta) = c.unpublished();
            let key = format!(
                "{keyspace}:v1:quota:{}:{}:{}:{start}",
                c.owner.replace(char::is_whitespace, "_"),
                c.per.as_str(),
                c.unit.as_str()
            );
            pipe.incr(&key, delta);
            // a period is at most 31 days; kept a little longer
            pipe.pexpire(&key, 35 * 86_400_000).ignore();
            sent.push((start, delta));
        }
        let mut conn = link.conn();
        let totals: Vec<u64> = link.bounded(pipe.query_async(&mut conn)).await?;
        if totals.len() != part.len() {
            return Err("the quota exchange answered a different number of values".into());
        }
        for ((c, (start, delta)), total) in part.iter().zip(sent).zip(totals) {
            c.published(start, delta, total);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_records_read_as_nothing() {
        assert!(super::parse("a", "{").is_none());
        assert!(super::parse("a", &"x".repeat(70_000)).is_none());
        let t = r#"{"name":"b","key_sha256":"00","key_hint":"","rpm":null,"tpm":null,"max_concurrent":null,"expires_ms":null,"created_ms":1,"updated_ms":1,"revoked_ms":null}"#;
        // a record under another name, or with a short hash
        assert!(super::parse("a", t).is_none());
        assert!(super::parse("b", t).is_none());
    }
}
