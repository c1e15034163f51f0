//! The Redis calls of the fleet, each bounded by `state.redis.timeout`.

use crate::config::redis::RedisSettings;
use crate::keys::shared::Change;
use crate::keys::{KeyState, Park};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::time::Duration;

const SCRIPT: &str = include_str!("script.lua");

/// The longest the first connection may take.
const CONNECT: Duration = Duration::from_secs(3);

/// A key's state as the script writes it. Numbers may come back as floats.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Shared {
    #[serde(default)]
    cool: f64,
    #[serde(default)]
    models: HashMap<String, f64>,
    park: Option<SharedPark>,
    reason: Option<String>,
    #[serde(default)]
    resets: f64,
    #[serde(default)]
    seq: f64,
}

#[derive(Debug, serde::Deserialize)]
struct SharedPark {
    reason: String,
    until_ms: Option<f64>,
}

/// A JSON number as a time or count: negative, NaN or huge values are 0.
fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 && x < 1e16 {
        x as u64
    } else {
        0
    }
}

impl Shared {
    pub fn seq(&self) -> u64 {
        whole(self.seq)
    }

    pub fn resets(&self) -> u64 {
        whole(self.resets)
    }

    pub fn key_state(&self) -> KeyState {
        KeyState {
            cool_until_ms: whole(self.cool),
            model_cool: self
                .models
                .iter()
                .filter(|(m, _)| m.len() <= 256)
                .map(|(m, u)| (m.clone(), whole(*u)))
                .collect(),
            park: self.park.as_ref().map(|p| Park {
                reason: p.reason.chars().take(512).collect(),
                until_ms: p.until_ms.map(whole).filter(|u| *u > 0),
            }),
            reason: self.reason.as_ref().map(|r| r.chars().take(512).collect()),
            ..Default::default()
        }
    }
}

/// A connection (renewed after failures: see [`Link::renew`]) and the
/// client for subscriptions.
pub struct Link {
    client: redis::Client,
    conn: arc_swap::ArcSwap<ConnectionManager>,
    config: ConnectionManagerConfig,
    timeout: Duration,
    script: redis::Script,
}

/// A Redis error in words, without the URL (which may hold a password).
fn said(e: &redis::RedisError) -> String {
    let text = e.to_string();
    crate::logging::scrub(&text).into_owned()
}

async fn connect(
    client: &redis::Client,
    config: &ConnectionManagerConfig,
) -> Result<ConnectionManager, String> {
    tokio::time::timeout(
        CONNECT,
        ConnectionManager::new_with_config(client.clone(), config.clone()),
    )
    .await
    .map_err(|_| format!("no connection within {CONNECT:?}"))?
    .map_err(|e| said(&e))
}

impl Link {
    pub async fn open(s: &RedisSettings) -> Result<Link, String> {
        let client = redis::Client::open(s.url.as_str())
            .map_err(|e| format!("state.redis.url: {}", said(&e)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(s.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = connect(&client, &config).await?;
        Ok(Link {
            client,
            conn: arc_swap::ArcSwap::from_pointee(conn),
            config,
            timeout: s.timeout,
            script: redis::Script::new(SCRIPT),
        })
    }

    /// A new connection in place of the current one (the manager never
    /// gives up by itself a connection that only times out).
    pub async fn renew(&self) -> Result<(), String> {
        let conn = connect(&self.client, &self.config).await?;
        self.conn.store(std::sync::Arc::new(conn));
        Ok(())
    }

    pub(super) fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.conn.load())
    }

    pub(super) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
            Ok(r) => r.map_err(|e| said(&e)),
        }
    }

    /// One change through the script: (seq, resets) after it.
    pub async fn change(
        &self,
        key: &str,
        change: &Change,
        channel: &str,
        instance: &str,
    ) -> Result<(u64, u64), String> {
        let (op, until, model, reason, park_until) = match change {
            Change::Cool {
                model,
                until_ms,
                reason,
            } => (
                "cool",
                *until_ms,
                model.clone().unwrap_or_default(),
                reason.clone(),
                0,
            ),
            Change::Park(p) => (
                "park",
                0,
                String::new(),
                p.reason.clone(),
                p.until_ms.unwrap_or(0),
            ),
            Change::Reset => ("reset", 0, String::new(), String::new(), 0),
        };
        let mut conn = self.conn();
        let mut call = self.script.key(key);
        call.arg(op)
            .arg(until)
            .arg(model)
            .arg(reason)
            .arg(park_until)
            .arg(channel)
            .arg(instance);
        self.bounded(call.invoke_async::<(u64, u64)>(&mut conn))
            .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, String> {
        let mut conn = self.conn();
        self.bounded(redis::cmd("GET").arg(key).query_async(&mut conn))
            .await
    }

    /// MGET in slices of 256 keys.
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<String>>, String> {
        let mut out = Vec::with_capacity(keys.len());
        for part in keys.chunks(256) {
            let mut conn = self.conn();
            let got: Vec<Option<String>> = self
                .bounded(redis::cmd("MGET").arg(part).query_async(&mut conn))
                .await?;
            if got.len() != part.len() {
                return Err("MGET answered a different number of values".into());
            }
            out.extend(got);
        }
        if keys.is_empty() {
            let mut conn = self.conn();
            let _: String = self
                .bounded(redis::cmd("PING").query_async(&mut conn))
                .await?;
        }
        Ok(out)
    }

    /// Says this instance is alive (its fields expire in 15 s) and returns
    /// every instance seen in the last hour: (id, fields, last seen ms).
    pub async fn heartbeat(
        &self,
        prefix: &str,
        instance: &str,
        fields: &[(&str, String)],
        now_ms: u64,
    ) -> Result<Vec<(String, HashMap<String, String>, u64)>, String> {
        let all = format!("{prefix}:instances");
        let mine = format!("{prefix}:instance:{instance}");
        let mut conn = self.conn();
        let mut beat = redis::pipe();
        beat.atomic()
            .hset_multiple(&mine, fields)
            .ignore()
            .pexpire(&mine, 15_000)
            .ignore()
            .zadd(&all, instance, now_ms)
            .ignore()
            .zrembyscore(&all, "-inf", now_ms.saturating_sub(3_600_000))
            .ignore()
            .zrange_withscores(&all, 0, 63);
        let (seen,): (Vec<(String, f64)>,) = self.bounded(beat.query_async(&mut conn)).await?;
        let mut details = redis::pipe();
        for (id, _) in &seen {
            details.hgetall(format!("{prefix}:instance:{id}"));
        }
        let fields: Vec<HashMap<String, String>> = if seen.is_empty() {
            Vec::new()
        } else {
            self.bounded(details.query_async(&mut conn)).await?
        };
        Ok(seen
            .into_iter()
            .zip(fields)
            .map(|((id, at), f)| (id, f, whole(at)))
            .collect())
    }

    /// The channel's messages (their payloads as text) until the connection drops.
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<String>, String> {
        let mut pubsub = tokio::time::timeout(CONNECT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "no subscription connection in time".to_string())?
            .map_err(|e| said(&e))?;
        self.bounded(pubsub.subscribe(channel)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut messages = pubsub.into_on_message();
            while let Some(m) = messages.next().await {
                let Ok(text) = m.get_payload::<String>() else {
                    continue;
                };
                if text.len() > 4096 {
                    continue; // not one of ours
                }
                if tx.send(text).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// `check` and start: a clear error for what will never work (a bad URL, a
/// refused password, no scripting); `Ok(Some(why))` for a Redis not reachable now.
pub async fn probe(s: &RedisSettings) -> Result<Option<String>, String> {
    if redis::Client::open(s.url.as_str()).is_err() {
        return Err(format!("state.redis.url: not a Redis URL ({})", s.shown()));
    }
    let link = match Link::open(s).await {
        Ok(l) => l,
        Err(e) if refused_for_good(&e) => return Err(format!("state.redis {}: {e}", s.shown())),
        Err(e) => return Ok(Some(e)),
    };
    let mut conn = link.conn();
    let one = link
        .bounded(
            redis::cmd("EVAL")
                .arg("return 1")
                .arg(0)
                .query_async::<i64>(&mut conn),
        )
        .await;
    match one {
        Ok(1) => Ok(None),
        Ok(n) => Err(format!("state.redis {}: EVAL answered {n}", s.shown())),
        Err(e) if refused_for_good(&e) || e.to_ascii_lowercase().contains("unknown command") => {
            Err(format!(
                "state.redis {}: this Redis does not run Lua scripts for this user (EVAL: {e}); the fleet needs them",
                s.shown()
            ))
        }
        // busy, loading, out of memory, no answer: a Redis that may work soon
        Err(e) => Ok(Some(e)),
    }
}

/// Errors a retry will not fix: authentication and permissions.
fn refused_for_good(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    ["auth", "password", "noperm", "wrongpass"]
        .iter()
        .any(|w| e.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_shared_state_reads_as_nothing_harmful() {
        let s: Shared = serde_json::from_str(
            r#"{"cool": -5, "models": {"m": 1e300, "n": 1765000000000}, "seq": "x"}"#,
        )
        .unwrap_or_default();
        assert_eq!(s.seq(), 0);
        let s: Shared = serde_json::from_str(
            r#"{"cool": 1.765e12, "models": {"m": 1e300, "n": 1765000000000}, "resets": 3,
                "seq": 7, "park": {"reason": "quota", "until_ms": -1}}"#,
        )
        .unwrap();
        let k = s.key_state();
        assert_eq!(k.cool_until_ms, 1_765_000_000_000);
        assert_eq!(k.model_cool.get("m"), Some(&0));
        assert_eq!(k.model_cool.get("n"), Some(&1_765_000_000_000));
        assert_eq!(
            k.park.as_ref().map(|p| (p.reason.as_str(), p.until_ms)),
            Some(("quota", None))
        );
        assert_eq!((s.seq(), s.resets()), (7, 3));
        assert!(serde_json::from_str::<Shared>("[]").is_err());
    }
}
