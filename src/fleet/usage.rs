//! Fleet usage: every instance publishes its usage totals per minute and
//! per (client, model, key, upstream) to Redis, and `/admin/usage` sums
//! every instance's. The per-request log stays per instance (SQLite).
//!
//! Publishing sets (never adds) an instance's totals of a minute (the
//! minute its records were written to its log): a retry cannot count a
//! request twice, and while the store is down the minutes wait in memory
//! (at most 200,000 groups; the oldest go first, counted as store failures).
//! An instance that stops before publishing loses at most its last 5 s.

use super::link::Link;
use crate::store::totals::{self, Totals};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How often the totals are published.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// How long the fleet keeps them (and the farthest back it answers).
pub const KEEP_MS: u64 = 8 * 24 * 3_600_000;
const HOUR_MS: u64 = 3_600_000;
/// Most fields one answer reads (a huge store cannot take the admin
/// listener's memory, nor hold Redis long).
const MAX_FIELDS: usize = 500_000;

/// One hour's hash of minute totals.
fn hour_key(keyspace: &str, hour_ms: u64) -> String {
    format!("{keyspace}:v1:usage:{hour_ms}")
}

/// Publishes this instance's totals of the minutes that changed since
/// they were last published (or all kept, after an outage).
pub async fn publish(link: &Link, keyspace: &str, who: &str) -> Result<(), String> {
    let now = crate::clock::now_ms();
    for (minute, changes, groups) in totals::unpublished() {
        let key = hour_key(keyspace, minute - minute % HOUR_MS);
        for part in groups.chunks(512) {
            let fields: Vec<(String, String)> = part
                .iter()
                .map(|(g, t)| (format!("{minute}\t{who}\t{}", g.join("\t")), t.to_text()))
                .collect();
            let mut pipe = redis::pipe();
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.pexpire(&key, (KEEP_MS + HOUR_MS) as i64).ignore();
            let mut conn = link.conn();
            link.bounded(pipe.query_async::<()>(&mut conn)).await?;
        }
        totals::published(minute, changes, now);
    }
    Ok(())
}

/// The fleet's totals since `since_ms`, grouped `by` client, model, key,
/// upstream or day (as `/admin/usage` answers for one instance).
pub async fn read(link: &Link, keyspace: &str, by: &str, since_ms: u64) -> Result<Value, String> {
    if !["client", "model", "key", "upstream", "day"].contains(&by) {
        return Err(format!(
            "by={by:?}: use client, model, key, upstream or day"
        ));
    }
    let now = crate::clock::now_ms();
    let since = since_ms.max(now.saturating_sub(KEEP_MS));
    let from_minute = since - since % 60_000;
    let hours: Vec<u64> = (since - since % HOUR_MS..=now)
        .step_by(HOUR_MS as usize)
        .collect();
    // sizes first: a store too large to answer is said so before it is read
    let mut sizes = redis::pipe();
    for h in &hours {
        sizes.hlen(hour_key(keyspace, *h));
    }
    let mut conn = link.conn();
    let lens: Vec<u64> = link.bounded(sizes.query_async(&mut conn)).await?;
    if lens.iter().sum::<u64>() > MAX_FIELDS as u64 {
        return Err(format!(
            "the fleet's usage since {} is too large to answer at once; ask for less (since=)",
            crate::clock::fmt_iso(since)
        ));
    }
    let mut groups: HashMap<String, Totals> = HashMap::new();
    let mut instances = HashSet::new();
    for part in hours.chunks(24) {
        let mut pipe = redis::pipe();
        for h in part {
            pipe.hgetall(hour_key(keyspace, *h));
        }
        let mut conn = link.conn();
        let got: Vec<HashMap<String, String>> = link.bounded(pipe.query_async(&mut conn)).await?;
        for (field, value) in got.iter().flatten() {
            let Some((minute, who, names)) = parse_field(field) else {
                continue;
            };
            let Some(t) = Totals::from_text(value) else {
                continue;
            };
            if minute < from_minute {
                continue;
            }
            instances.insert(who.to_string());
            let name = match by {
                "client" => names[0].to_string(),
                "model" => names[1].to_string(),
                "key" => names[2].to_string(),
                "upstream" => names[3].to_string(),
                _ => crate::clock::fmt_iso(minute)[..10].to_string(),
            };
            groups.entry(name).or_default().merge(&t);
        }
    }
    Ok(json!({
        "by": by,
        "since": crate::clock::fmt_iso(since_ms),
        "scope": "fleet",
        "instances": instances.len(),
        "rows": totals::rows(by, groups),
    }))
}

/// `minute \t instance \t client \t model \t key \t upstream`, each part
/// at most 512 bytes; anything else is not ours.
fn parse_field(f: &str) -> Option<(u64, &str, [&str; 4])> {
    let mut p = f.split('\t');
    let minute = p.next()?.parse().ok()?;
    let who = p.next()?;
    let names = [p.next()?, p.next()?, p.next()?, p.next()?];
    if p.next().is_some() || f.len() > 6 * 512 {
        return None;
    }
    Some((minute, who, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_strictly() {
        assert_eq!(
            parse_field("1765000020000\tgw-a\tteam\tgpt-4o\topenai#1\topenai"),
            Some((
                1_765_000_020_000,
                "gw-a",
                ["team", "gpt-4o", "openai#1", "openai"]
            ))
        );
        for bad in [
            "",
            "x\ta\tb\tc\td\te",
            "1\ta\tb\tc\td",
            "1\ta\tb\tc\td\te\tf",
        ] {
            assert_eq!(parse_field(bad), None, "{bad:?}");
        }
    }
}
