//! `cache`: answers kept for identical calls (off without the section).

use super::units::{Dur, Size};
use serde::Deserialize;
use std::time::Duration;

/// `cache` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Model patterns whose answers are kept (`gpt-*`, `text-embedding-3-small`).
    pub models: Vec<String>,
    /// How long an answer is served again (duration); default `1h`.
    pub ttl: Option<Dur>,
    /// `client` (default: one client never gets another's answer) or `shared`.
    pub scope: Option<CacheScope>,
    /// The memory store's bound (bytes); default `64MiB`.
    pub max_bytes: Option<Size>,
    /// The largest answer kept (bytes); default `1MiB`.
    pub max_entry: Option<Size>,
    /// `memory` (default: this instance) or `redis` (the fleet's, `state.redis`).
    pub store: Option<CacheStore>,
    /// A cached answer to a streaming client: `instant` (default) or `paced`
    /// (the original stream's timing, capped).
    pub replay: Option<Replay>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Entries are per client (the caller's name is part of the key).
    #[default]
    Client,
    /// Every client may get an answer another client's call stored.
    Shared,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    #[default]
    Instant,
    Paced,
}

/// `cache` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub models: Vec<String>,
    pub ttl: Duration,
    pub scope: CacheScope,
    pub max_bytes: u64,
    pub max_entry: u64,
    pub store: CacheStore,
    pub replay: Replay,
}

impl CacheSettings {
    /// Checks `cache`; `redis`: whether `state.redis` is set.
    pub fn parse(raw: RawCache, redis: bool) -> Result<CacheSettings, Vec<String>> {
        let mut e = Vec::new();
        if raw.models.is_empty() {
            e.push("cache.models: name at least one model pattern (such as gpt-*)".into());
        }
        for (i, m) in raw.models.iter().enumerate() {
            if m.is_empty() || m.len() > 256 || m.chars().any(char::is_whitespace) {
                e.push(format!(
                    "cache.models[{i}]: {m:?} is not a model pattern (1 to 256 characters, no spaces)"
                ));
            }
        }
        let ttl = raw.ttl.map_or(Duration::from_secs(3600), |d| d.0);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 86_400) {
            e.push("cache.ttl: between 1s and 30d".into());
        }
        let max_bytes = raw.max_bytes.map_or(64 << 20, |s| s.0);
        let max_entry = raw.max_entry.map_or(1 << 20, |s| s.0);
        if !(1 << 10..=64 << 30).contains(&max_bytes) {
            e.push("cache.max_bytes: between 1KiB and 64GiB".into());
        }
        if max_entry == 0 || max_entry > max_bytes || max_entry > 64 << 20 {
            e.push("cache.max_entry: more than 0, at most max_bytes and 64MiB".into());
        }
        let store = raw.store.unwrap_or_default();
        if store == CacheStore::Redis && !redis {
            e.push("cache.store: redis needs state.redis".into());
        }
        if store == CacheStore::Redis && max_entry > 1 << 20 {
            e.push("cache.max_entry: at most 1MiB with store: redis (the fleet's connection carries it)".into());
        }
        if !e.is_empty() {
            return Err(e);
        }
        Ok(CacheSettings {
            models: raw.models,
            ttl,
            scope: raw.scope.unwrap_or_default(),
            max_bytes,
            max_entry,
            store,
            replay: raw.replay.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(yaml: &str) -> Result<Config, crate::config::ConfigErrors> {
        Config::from_yaml(
            &format!("{yaml}\nupstreams: [{{name: d, kind: demo}}]"),
            &|_| None,
        )
    }

    #[test]
    fn settings_defaults_and_errors_naming_the_field() {
        let c = parse("cache: {models: ['gpt-*']}").unwrap();
        let s = c.cache.unwrap();
        assert_eq!(s.ttl, std::time::Duration::from_secs(3600));
        assert_eq!((s.max_bytes, s.max_entry), (64 << 20, 1 << 20));
        assert!(parse("").unwrap().cache.is_none());
        for (bad, field) in [
            ("cache: {models: []}", "cache.models"),
            ("cache: {models: ['a b']}", "cache.models[0]"),
            ("cache: {models: [x], ttl: 0s}", "cache.ttl"),
            ("cache: {models: [x], max_bytes: 10}", "cache.max_bytes"),
            ("cache: {models: [x], max_entry: 2GiB}", "cache.max_entry"),
            ("cache: {models: [x], store: redis}", "cache.store"),
            ("cache: {models: [x], scope: everyone}", "cache.scope"),
            ("cache: {models: [x], size: 1}", "cache"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
