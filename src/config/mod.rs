//! Configuration: raw YAML (`raw`) → `${VAR}` expansion (`expand`) → a validated
//! [`Config`]. Every error names the YAML path it is about.

pub mod azure;
pub mod cache;
pub mod catalog;
pub mod clients;
pub mod dotenv;
pub mod edge;
pub mod env;
pub mod expand;
pub mod glob;
pub mod prices;
pub mod quota;
pub mod raw;
pub mod redis;
pub mod sections;
pub mod units;
pub mod upstream;

pub use clients::{Client, Clients};
pub use glob::glob_match;
use raw::RawConfig;
pub use sections::{
    Admin, Cors, Limits, Listener, Listeners, Retry, ServerSettings, StateSettings, Timeouts,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
pub use upstream::{BaseUrl, KeyConf, UpstreamConf, UpstreamKind, Upstreams};

/// A section's value, or its default when it has problems (which are kept).
fn section<T: Default>(r: Result<T, sections::Problems>, errors: &mut Vec<String>) -> T {
    r.unwrap_or_else(|e| {
        errors.extend(e);
        T::default()
    })
}

/// All problems found in one config file, each prefixed with its YAML path.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// The validated configuration. Built only through [`Config::from_yaml`].
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub listen: Vec<Listener>,
    pub admin: Admin,
    pub server: ServerSettings,
    pub clients: Option<Vec<Client>>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub upstreams: Vec<UpstreamConf>,
    /// Model → models to try when it cannot be served.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Directory of the embedded state store (`state.path`); none = in memory only.
    pub state_path: Option<PathBuf>,
    /// `state.redis`: key state shared with the other instances of a fleet.
    pub redis: Option<redis::RedisSettings>,
    /// Usage records: kept this long and at most this many (`state.retention`, `state.max_rows`).
    pub usage_retention: std::time::Duration,
    pub usage_max_rows: u64,
    /// `state.usage`: requests are recorded in the usage store.
    pub usage_enabled: bool,
    /// `metrics.enabled`: requests are counted in the per-request series.
    pub metrics_enabled: bool,
    /// Browser origins allowed to call the API (`cors`); none = no CORS headers.
    pub cors: Option<Cors>,
    /// `cache`: answers kept for identical calls; none = off.
    pub cache: Option<cache::CacheSettings>,
    /// Environment variables that changed this config (or built it).
    pub env_applied: Vec<String>,
    /// Variables set but not applied because the file says otherwise (with why).
    pub env_ignored: Vec<String>,
    /// Prometheus also on the API listener at this path (`metrics.path`).
    pub metrics_path: Option<String>,
    /// `log:` (format and level filter).
    pub log: raw::RawLog,
    /// Context windows and output limits of known models (`models.catalog` on
    /// the built-in list).
    pub catalog: catalog::Catalog,
    /// What each model's tokens cost (built in, `prices:` on top).
    pub prices: prices::Prices,
    /// `clients` by the SHA-256 of their key: one hashed lookup per request,
    /// however many clients there are.
    pub client_index: std::collections::HashMap<[u8; 32], usize>,
}

impl Config {
    /// Puts `clients` in place (the config file's and the run-time ones)
    /// and indexes their keys; a key seen twice keeps its first client.
    pub fn set_clients(&mut self, clients: Option<Vec<Client>>) {
        self.client_index.clear();
        for (i, c) in clients.iter().flatten().enumerate() {
            self.client_index.entry(c.key_sha256).or_insert(i);
        }
        self.clients = clients;
    }
}

/// `prices:` on the built-in prices; a model neither catalogued nor
/// served by an upstream is an error.
fn known_prices(
    raw: BTreeMap<String, prices::RawPrice>,
    catalog: &catalog::Catalog,
    upstreams: &[UpstreamConf],
    errors: &mut Vec<String>,
) -> prices::Prices {
    let known = |m: &str| {
        catalog.known_name(m).is_some() || upstreams.iter().any(|u| u.upstream_model(m).is_some())
    };
    prices::Prices::with(raw, known).unwrap_or_else(|e| {
        errors.extend(e);
        Default::default()
    })
}

/// SHA-256 of a client key, hex encoded (what `switchyard hash-key` prints).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![format!(
                "cannot read config file {}: {e}",
                path.display()
            )])
        })?;
        let mut cfg = Config::from_yaml(&text, &|k| std::env::var(k).ok())?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The config `serve` and `check` use: the file at `path`; without one,
    /// the environment's when it names an upstream, else
    /// `conf/switchyard.yaml` if it exists, else the environment's (the demo).
    /// The error says where the config came from.
    pub fn resolve(path: Option<&Path>) -> Result<Config, (String, ConfigErrors)> {
        let env = |k: &str| std::env::var(k).ok();
        let default = Path::new(crate::cli::DEFAULT_CONFIG);
        let file = match path {
            Some(p) => Some(p),
            None if env::names_an_upstream(&env) => None,
            None if default.exists() => Some(default),
            None => None,
        };
        match file {
            Some(p) => Config::load(p).map_err(|e| (p.display().to_string(), e)),
            None => Config::from_env(&env).map_err(|e| ("from the environment".into(), e)),
        }
    }

    /// Parses and validates YAML text; `env` resolves `${VAR}`.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigErrors(vec![format!("not valid YAML: {e}")]))?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        let mut errors = Vec::new();
        expand::expand_tree(&mut value, "", env, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let overlay = env::overlay(&mut value, env).map_err(ConfigErrors)?;
        let mut cfg = Config::from_tree(value)?;
        cfg.env_applied = overlay.applied;
        cfg.env_ignored = overlay.ignored;
        Ok(cfg)
    }

    /// The config the environment alone builds (no file; see [`env::quick_start`]).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let (tree, applied) = env::quick_start(env).map_err(ConfigErrors)?;
        let mut cfg = Config::from_tree(tree)?;
        cfg.env_applied = applied;
        Ok(cfg)
    }

    /// Deserializes and validates an expanded YAML tree.
    fn from_tree(value: serde_yaml::Value) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "(top level)".to_string()
            } else {
                path
            };
            ConfigErrors(vec![format!("{path}: {}", e.inner())])
        })?;
        Config::validate(raw)
    }

    /// Validates section by section, then what spans sections; every problem
    /// is reported, not only the first.
    fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let listen = section(Listeners::try_from(raw.listen), &mut errors).0;
        let admin = section(Admin::try_from(raw.admin), &mut errors);
        if let Some(a) = &admin.listen {
            if listen.iter().any(|l| &l.addr == a) {
                errors.push(format!("admin.listen: {a} is already used by listen"));
            }
        }
        let server = section(ServerSettings::try_from(raw.server), &mut errors);
        if let Some(i) = listen.iter().position(|l| l.proxy_protocol) {
            if server.trusted_proxies.is_empty() {
                errors.push(format!(
                    "listen[{i}].proxy_protocol: server.trusted_proxies names no proxy, so every preamble would be refused"
                ));
            }
        }
        let state = section(StateSettings::try_from(raw.state), &mut errors);
        let clients = raw
            .clients
            .map(|c| section(Clients::try_from(c), &mut errors).0);
        let limits = section(Limits::try_from(raw.limits), &mut errors);
        let timeouts = section(Timeouts::try_from(raw.timeouts), &mut errors);
        let retry = section(Retry::try_from(raw.retry), &mut errors);
        let cors = raw.cors.map(|c| section(Cors::try_from(c), &mut errors));
        let has_redis = state.redis.is_some();
        let cache = raw.cache.and_then(|c| {
            cache::CacheSettings::parse(c, has_redis)
                .map_err(|e| errors.extend(e))
                .ok()
        });
        let mut client_index = std::collections::HashMap::new();
        for (i, c) in clients.iter().flatten().enumerate() {
            if let Some(first) = client_index.insert(c.key_sha256, i) {
                errors.push(format!(
                    "clients[{i}]: {:?} has the same key as clients[{first}]; every client needs its own",
                    c.name
                ));
                client_index.insert(c.key_sha256, first);
            }
        }
        let upstreams = Upstreams::validate(raw.upstreams, &mut errors).0;
        for (model, list) in &raw.models.fallbacks {
            for (j, m) in list.iter().enumerate() {
                if !upstreams.iter().any(|u| u.upstream_model(m).is_some()) {
                    errors.push(format!(
                        "models.fallbacks.{model}[{j}]: no upstream serves {m:?}"
                    ));
                }
            }
        }
        let mut extra = Vec::new();
        for (model, entry) in raw.models.catalog {
            let path = format!("models.catalog.{model}");
            if entry.context == 0 {
                errors.push(format!("{path}.context: must be at least 1"));
            }
            if entry
                .max_output
                .is_some_and(|m| m == 0 || m > entry.context)
            {
                errors.push(format!(
                    "{path}.max_output: must be between 1 and the context ({})",
                    entry.context
                ));
            }
            let limits = catalog::ModelLimits {
                context: entry.context,
                max_output: entry.max_output,
            };
            extra.push((model, limits));
        }
        let catalog = catalog::Catalog::with(extra);
        let prices = known_prices(raw.prices, &catalog, &upstreams, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if let Some(level) = &raw.log.level {
            let ok = !level.trim().is_empty()
                && level.split(',').all(|d| {
                    let lvl = d.rsplit('=').next().unwrap_or("").trim();
                    let target = d.split('=').next().unwrap_or("");
                    (d.contains('=') || !target.is_empty())
                        && ["error", "warn", "info", "debug", "trace", "off"]
                            .contains(&lvl.to_ascii_lowercase().as_str())
                });
            if !ok {
                errors.push(format!(
                    "log.level: {level:?} is not a level (error, warn, info, debug, trace, off) or a filter like info,pingora=warn"
                ));
            }
        }
        let metrics_enabled = raw.metrics.as_ref().and_then(|m| m.enabled).unwrap_or(true);
        let metrics_path = raw.metrics.and_then(|m| m.path);
        if let Some(p) = &metrics_path {
            if !p.starts_with('/') || p.starts_with("/v1/") || p == "/health" || p.len() > 200 {
                errors.push(format!(
                    "metrics.path: {p:?} must start with / and not be /health or under /v1/"
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            env_applied: Vec::new(),
            env_ignored: Vec::new(),
            metrics_path,
            log: raw.log,
            catalog,
            prices,
            source: None,
            listen,
            admin,
            server,
            clients,
            limits,
            timeouts,
            retry,
            upstreams,
            fallbacks: raw.models.fallbacks,
            state_path: state.path,
            redis: state.redis,
            usage_retention: state.retention,
            usage_max_rows: state.max_rows,
            usage_enabled: state.usage,
            metrics_enabled,
            cors,
            cache,
            client_index,
        })
    }

    /// Model names the gateway can list in `/v1/models`: concrete patterns (no
    /// wildcard) and `model_map` keys, in config order, without duplicates.
    pub fn listed_models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for u in &self.upstreams {
            for m in u.model_map.keys().chain(u.models.iter()) {
                if !m.contains('*') && !m.contains('?') && !out.iter().any(|(x, _)| x == m) {
                    out.push((m.clone(), u.name.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn glob() {
        assert!(glob_match("gpt-4o*", "gpt-4o-mini"));
        assert!(glob_match("*", ""));
        assert!(glob_match("openai/*", "openai/gpt-4o"));
        assert!(!glob_match("openai/*", "meta/llama"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("*mini*", "gpt-4o-mini-2024"));
    }

    #[test]
    fn base_url() {
        let b = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            b,
            BaseUrl {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                path: "/v1".into()
            }
        );
        let b = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (b.port, b.path.as_str(), b.host_header()),
            (8080, "", "127.0.0.1:8080".to_string())
        );
        let b = BaseUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 9));
        assert!(BaseUrl::parse("ftp://x").is_err());
    }

    #[test]
    fn edge_settings_are_checked_with_their_paths() {
        let untrusted = Config::from_yaml(
            "listen: [{addr: '127.0.0.1:4000', proxy_protocol: true}]\nupstreams: [{name: d, kind: demo}]",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            untrusted.contains("listen[0].proxy_protocol: server.trusted_proxies names no proxy"),
            "{untrusted}"
        );
        let err = Config::from_yaml(
            "listen: [{addr: '127.0.0.1:4000', proxy_protocol: true}, {addr: /tmp/s.sock, proxy_protocol: true}]\nserver: {allow_ips: [10.0.0.0/33], client_ip_header: x-real-ip}\nclients: [{name: a, key: kkkkkkkk, endpoints: ['/v1/files*']}]\nupstreams: [{name: d, kind: demo}]",
            &env,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "listen[1].proxy_protocol: needs a TCP listener",
            "server.allow_ips[0]: \"10.0.0.0/33\"",
            "clients[0].endpoints: only means something with `models`",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn minimal_and_errors_with_paths() {
        let c = Config::from_yaml("upstreams: [{name: demo, kind: demo}]", &env).unwrap();
        assert_eq!(c.upstreams.len(), 1);
        let err =
            Config::from_yaml("upstreams: [{name: a, base_url: x, bogus: 1}]", &env).unwrap_err();
        assert!(
            err.0[0].contains("upstreams[0]") && err.0[0].contains("bogus"),
            "{err}"
        );
        let err = Config::from_yaml(
            "timeouts: {connect: 5}\nupstreams: [{name: demo, kind: demo}]",
            &env,
        )
        .unwrap_err();
        assert!(err.0[0].starts_with("timeouts.connect:"), "{err}");
        let err =
            Config::from_yaml("upstreams: [{name: a, base_url: 'ftp://x'}]", &env).unwrap_err();
        assert!(err.0[0].starts_with("upstreams[0].base_url:"), "{err}");
        let err = Config::from_yaml(
            "state: {redis: 'ftp://127.0.0.1'}\nupstreams: [{name: a, kind: demo}]",
            &env,
        )
        .unwrap_err();
        assert!(err.0[0].starts_with("state.redis.url:"), "{err}");
        for (level, ok) in [
            ("debug", true),
            ("info,pingora=warn", true),
            ("loud", false),
            ("", false),
        ] {
            let r = Config::from_yaml(
                &format!(
                    "log: {{format: json, level: '{level}'}}\nupstreams: [{{name: a, kind: demo}}]"
                ),
                &env,
            );
            assert_eq!(r.is_ok(), ok, "{level}: {:?}", r.err());
            if let Err(e) = r {
                assert!(e.0[0].starts_with("log.level:"), "{e}");
            }
        }
        let err = Config::from_yaml(
            "log: {format: xml}\nupstreams: [{name: a, kind: demo}]",
            &env,
        )
        .unwrap_err();
        assert!(err.0[0].starts_with("log.format"), "{err}");
        let err = Config::from_yaml(
            "upstreams: [{name: a, kind: demo, stream_only: true, no_stream: true}]",
            &env,
        )
        .unwrap_err();
        assert!(
            err.0[0].starts_with("upstreams[0]: stream_only and no_stream"),
            "{err}"
        );
        let err = Config::from_yaml(
            "admin: {listen: '0.0.0.0:4001'}\nupstreams: [{name: demo, kind: demo}]",
            &env,
        )
        .unwrap_err();
        assert!(err.0[0].starts_with("admin.token"), "{err}");
    }
}
