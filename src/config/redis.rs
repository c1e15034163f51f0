//! `state.redis`: where the instances of a fleet share key state.

use super::raw::{LimitMode, OnStoreFailure, RawRedis};
use std::time::Duration;

/// `state.redis` validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// As written (may hold a password: never shown; see [`Self::shown`]).
    pub url: String,
    /// Every Redis key starts `{prefix}:` (a hash tag: one Cluster slot).
    pub prefix: String,
    pub timeout: Duration,
    pub limits: SharedLimits,
    /// `state.redis.keys.on_store_failure`.
    pub keys_on_failure: OnStoreFailure,
}

/// `state.redis.limits` validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedLimits {
    pub mode: LimitMode,
    pub sync: Duration,
    pub on_failure: OnStoreFailure,
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits {
            mode: LimitMode::Local,
            sync: Duration::from_millis(100),
            on_failure: OnStoreFailure::Local,
        }
    }
}

impl RedisSettings {
    /// `state.redis` checked: scheme, prefix characters, timeout range.
    pub fn parse(raw: RawRedis) -> Result<RedisSettings, Vec<String>> {
        let (url, prefix, timeout, limits, keys) = match raw {
            RawRedis::Url(u) => (u, None, None, None, None),
            RawRedis::Full(f) => (f.url, f.prefix, f.timeout.map(|d| d.0), f.limits, f.keys),
        };
        let limits = limits.unwrap_or_default();
        let shared = SharedLimits {
            mode: limits.mode.unwrap_or_default(),
            sync: limits.sync.map_or(Duration::from_millis(100), |d| d.0),
            on_failure: limits.on_store_failure.unwrap_or_default(),
        };
        let mut e = Vec::new();
        let path = "state.redis";
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| url.starts_with(s))
        {
            e.push(format!(
                "{path}.url: use redis://host:port, rediss://host:port (TLS) or unix:///path"
            ));
        } else if redis_url_host(&url).is_empty() {
            e.push(format!("{path}.url: no host or socket path"));
        }
        let prefix = prefix.unwrap_or_else(|| "switchyard".into());
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:{}".contains(c))
        {
            e.push(format!(
                "{path}.prefix: 1 to 64 of letters, digits and - _ . : {{ }}"
            ));
        }
        let timeout = timeout.unwrap_or(Duration::from_millis(250));
        if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(10) {
            e.push(format!("{path}.timeout: between 10ms and 10s"));
        }
        if shared.sync < Duration::from_millis(10) || shared.sync > Duration::from_secs(10) {
            e.push(format!("{path}.limits.sync: between 10ms and 10s"));
        }
        if e.is_empty() {
            Ok(RedisSettings {
                url,
                prefix,
                timeout,
                limits: shared,
                keys_on_failure: keys.and_then(|k| k.on_store_failure).unwrap_or_default(),
            })
        } else {
            Err(e)
        }
    }

    /// What every Redis key starts with: the prefix as a hash tag
    /// (`{switchyard}`), so a script's keys share one Redis Cluster slot;
    /// a prefix that holds braces already is taken as written.
    pub fn keyspace(&self) -> String {
        if self.prefix.contains('{') {
            self.prefix.clone()
        } else {
            format!("{{{}}}", self.prefix)
        }
    }

    /// The URL without its credentials or query: `rediss://host:6380/0`.
    pub fn shown(&self) -> String {
        let (scheme, rest) = without_credentials(&self.url);
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        format!("{scheme}://{rest}")
    }

    /// The password in the URL (`:pass@` or, for unix sockets, `?pass=`),
    /// to keep it out of every log line.
    pub fn password(&self) -> Option<String> {
        let (_, rest) = self.url.split_once("://")?;
        let in_query = rest
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("pass=")));
        let in_auth = rest
            .rsplit_once('@')
            .map(|(auth, _)| auth.split_once(':').map_or(auth, |(_, p)| p));
        in_query
            .or(in_auth)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    }
}

/// The URL's scheme, and what follows it and any credentials.
fn without_credentials(url: &str) -> (&str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    (scheme, rest.rsplit_once('@').map_or(rest, |(_, r)| r))
}

/// What follows the scheme and any credentials, up to the path.
fn redis_url_host(url: &str) -> &str {
    let (_, rest) = without_credentials(url);
    if url.starts_with("unix") || url.starts_with("redis+unix") {
        return rest;
    }
    rest.split('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawRedisFull;

    #[test]
    fn urls_prefixes_timeouts_and_the_hidden_password() {
        let ok = RedisSettings::parse(RawRedis::Url(
            "rediss://:s3cret-pass@cache.internal:6380/2".into(),
        ))
        .unwrap();
        assert_eq!(ok.shown(), "rediss://cache.internal:6380/2");
        assert_eq!(ok.password().as_deref(), Some("s3cret-pass"));
        assert_eq!(
            (ok.prefix.as_str(), ok.timeout),
            ("switchyard", Duration::from_millis(250))
        );
        let user =
            RedisSettings::parse(RawRedis::Url("redis://gw:pw@127.0.0.1:6379".into())).unwrap();
        assert_eq!(user.password().as_deref(), Some("pw"));
        assert_eq!(
            RedisSettings::parse(RawRedis::Url("redis://127.0.0.1".into()))
                .unwrap()
                .password(),
            None
        );
        let unix = RedisSettings::parse(RawRedis::Url(
            "unix:///run/redis.sock?db=1&pass=sock-secret".into(),
        ))
        .unwrap();
        assert_eq!(unix.shown(), "unix:///run/redis.sock");
        assert_eq!(unix.password().as_deref(), Some("sock-secret"));
        for bad in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis://",
            "redis://:pw@",
        ] {
            assert!(
                RedisSettings::parse(RawRedis::Url(bad.into())).is_err(),
                "{bad}"
            );
        }
        let full = |prefix: &str, ms: u64| {
            RedisSettings::parse(RawRedis::Full(RawRedisFull {
                url: "redis://127.0.0.1:6379".into(),
                prefix: Some(prefix.into()),
                timeout: Some(crate::config::units::Dur(Duration::from_millis(ms))),
                limits: None,
                keys: None,
            }))
        };
        assert!(full("{gw}", 100).is_ok());
        assert_eq!(full("{gw}", 100).unwrap().keyspace(), "{gw}");
        assert_eq!(full("gw", 100).unwrap().keyspace(), "{gw}");
        assert!(full("", 100).is_err());
        assert!(full("a b", 100).is_err());
        assert!(full("gw", 1).is_err());
        assert!(full("gw", 60_000).is_err());
    }

    #[test]
    fn shared_limits_settings_and_their_errors() {
        let parse = |yaml: &str| {
            crate::config::Config::from_yaml(
                &format!("state: {{redis: {yaml}}}\nupstreams: [{{name: d, kind: demo}}]"),
                &|_| None,
            )
        };
        let c = parse("{url: 'redis://127.0.0.1:6379', limits: {mode: strict, sync: 50ms, on_store_failure: refuse}, keys: {on_store_failure: refuse}}").unwrap();
        let r = c.redis.unwrap();
        assert_eq!(r.limits.mode, LimitMode::Strict);
        assert_eq!(r.limits.sync, Duration::from_millis(50));
        assert_eq!(r.limits.on_failure, OnStoreFailure::Refuse);
        assert_eq!(r.keys_on_failure, OnStoreFailure::Refuse);
        let d = parse("'redis://127.0.0.1:6379'").unwrap().redis.unwrap();
        assert_eq!(d.limits, SharedLimits::default());
        assert_eq!(d.keys_on_failure, OnStoreFailure::Local);
        let e = parse("{url: 'redis://127.0.0.1', limits: {sync: 1ms}}").unwrap_err();
        assert!(e.to_string().contains("state.redis.limits.sync"), "{e}");
        for bad in ["{mode: exact}", "{on_store_failure: panic}", "{every: 1s}"] {
            let e = parse(&format!("{{url: 'redis://127.0.0.1', limits: {bad}}}"));
            assert!(e.is_err(), "{bad}");
        }
    }
}
