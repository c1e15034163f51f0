//! Configuration: raw YAML (`raw`) → `${VAR}` expansion (`expand`) → a validated
//! [`Config`]. Every error names the YAML path it is about.

pub mod expand;
pub mod raw;
pub mod units;

use raw::{KeyStrategy, OneOrMany, RawConfig, RawKey, RawKind, RawListen};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// All problems found in one config file, each prefixed with its YAML path.
#[derive(Debug, Clone)]
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

impl std::error::Error for ConfigErrors {}

/// A listening address with optional TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub addr: String,
    pub tls: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub keepalive_pool_size: usize,
    pub work_stealing: bool,
}

/// A client allowed to call the API listener.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    /// SHA-256 of the client's key; the plaintext is never kept.
    pub key_sha256: [u8; 32],
    /// Model globs this client may use; empty = all.
    pub models: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
}

/// `base_url` split the way the connector needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`, `/inference`, or empty).
    pub path: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("expected an http:// or https:// URL, got {s:?}"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || path.contains('?') || path.contains('#') {
            return Err(format!(
                "expected a URL like https://api.openai.com/v1, got {s:?}"
            ));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let end = h
                .find(']')
                .ok_or_else(|| format!("bad IPv6 address in {s:?}"))?;
            let port = match h[end + 1..].strip_prefix(':') {
                Some(p) => Some(p),
                None if h[end + 1..].is_empty() => None,
                None => return Err(format!("bad address in {s:?}")),
            };
            (h[..end].to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(BaseUrl {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as the Host header writes it (port omitted when default).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if (self.tls && self.port == 443) || (!self.tls && self.port == 80) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamKind {
    /// Any OpenAI-compatible HTTP(S) server.
    Http(BaseUrl),
    /// The built-in offline demo server.
    Demo,
}

#[derive(Debug, Clone)]
pub struct KeyConf {
    pub secret: String,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct UpstreamConf {
    pub name: String,
    pub kind: UpstreamKind,
    pub keys: Vec<KeyConf>,
    pub key_strategy: KeyStrategy,
    /// Model globs served; `["*"]` when not given.
    pub models: Vec<String>,
    /// Client-facing model name → upstream model name.
    pub model_map: BTreeMap<String, String>,
    /// Opaque-lane path globs routed here.
    pub paths: Vec<String>,
    pub stream_only: bool,
    pub no_stream: bool,
}

impl UpstreamConf {
    /// The name this upstream knows `model` by, if it serves it: a `model_map`
    /// entry wins over a `models` glob (which keeps the name).
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        match self.model_map.get(model) {
            Some(m) => Some(m.as_str()),
            None => self
                .models
                .iter()
                .any(|p| glob_match(p, model))
                .then_some(model),
        }
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
}

/// `*` matches any run of characters, `?` one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// SHA-256 of a client key, hex encoded (what `switchyard hash-key` prints).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn is_loopback_addr(addr: &str) -> bool {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    if let Some((host, _)) = addr.rsplit_once(':') {
        if host == "localhost" {
            return true;
        }
        if let Ok(ip) = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            return ip.is_loopback();
        }
    }
    false
}

fn check_listen_addr(addr: &str, path: &str, errors: &mut Vec<String>) {
    if addr.starts_with('/') {
        return; // unix socket path
    }
    if addr.to_socket_addrs().is_err() && addr.parse::<SocketAddr>().is_err() {
        errors.push(format!(
            "{path}: {addr:?} is not a listen address (expected host:port such as 0.0.0.0:4000)"
        ));
    }
}

fn unsupported(path: &str, what: &str, errors: &mut Vec<String>) {
    errors.push(format!(
        "{path}: {what} is not supported yet by this build of switchyard; remove it"
    ));
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

    fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let e = &mut errors;

        // listen
        let listen: Vec<Listener> = match raw.listen {
            None => vec![Listener {
                addr: "127.0.0.1:4000".into(),
                tls: None,
            }],
            Some(l) => {
                let many = matches!(l, OneOrMany::Many(_));
                l.into_vec()
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let path = if many {
                            format!("listen[{i}]")
                        } else {
                            "listen".into()
                        };
                        let l = match l {
                            RawListen::Addr(a) => Listener { addr: a, tls: None },
                            RawListen::Full(f) => Listener {
                                addr: f.addr,
                                tls: f.tls.map(|t| (t.cert, t.key)),
                            },
                        };
                        check_listen_addr(&l.addr, &path, e);
                        if let Some((cert, key)) = &l.tls {
                            for (p, what) in [(cert, "cert"), (key, "key")] {
                                if !Path::new(p).exists() {
                                    e.push(format!("{path}.tls.{what}: file {p:?} does not exist"));
                                }
                            }
                        }
                        l
                    })
                    .collect()
            }
        };
        if listen.is_empty() {
            e.push("listen: at least one address is needed".into());
        }

        // admin
        let raw_admin = raw.admin.unwrap_or_default();
        let admin = Admin {
            listen: Some(raw_admin.listen.unwrap_or_else(|| "127.0.0.1:4001".into())),
            token: raw_admin.token.filter(|t| !t.is_empty()),
        };
        if let Some(a) = &admin.listen {
            check_listen_addr(a, "admin.listen", e);
            if !is_loopback_addr(a) && admin.token.is_none() {
                e.push(format!(
                    "admin.token: required because admin.listen ({a}) is reachable beyond loopback"
                ));
            }
            if listen.iter().any(|l| &l.addr == a) {
                e.push(format!("admin.listen: {a} is already used by listen"));
            }
        }

        // server
        let s = raw.server;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let server = ServerSettings {
            threads: s.threads.unwrap_or(cores),
            grace_period: s
                .grace_period
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            shutdown_timeout: s
                .shutdown_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(5)),
            pid_file: s.pid_file,
            upgrade_sock: s.upgrade_sock,
            error_log: s.error_log,
            keepalive_pool_size: s.keepalive_pool_size.unwrap_or(256),
            work_stealing: s.work_stealing.unwrap_or(false),
        };
        if server.threads == 0 || server.threads > 1024 {
            e.push(format!(
                "server.threads: {} is out of range (1..=1024)",
                server.threads
            ));
        }

        // state
        let mut state_path = None;
        if let Some(st) = &raw.state {
            state_path = st
                .path
                .as_ref()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from);
            if st.redis.is_some() {
                unsupported("state.redis", "sharing state through Redis", e);
            }
        }

        // clients
        let clients = raw.clients.map(|list| {
            let mut names = std::collections::HashSet::new();
            list.into_iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let path = format!("clients[{i}]");
                    if !names.insert(c.name.clone()) {
                        e.push(format!("{path}.name: duplicate client name {:?}", c.name));
                    }
                    if c.rpm.is_some() {
                        unsupported(&format!("{path}.rpm"), "per-client rate limits", e);
                    }
                    let hash = match (&c.key, &c.key_sha256) {
                        (Some(k), None) if !k.is_empty() => Some(Sha256::digest(k.as_bytes()).into()),
                        (None, Some(h)) => {
                            let mut out = [0u8; 32];
                            match hex::decode(h.trim()) {
                                Ok(b) if b.len() == 32 => {
                                    out.copy_from_slice(&b);
                                    Some(out)
                                }
                                _ => {
                                    e.push(format!(
                                        "{path}.key_sha256: expected 64 hex digits (see `switchyard hash-key`)"
                                    ));
                                    None
                                }
                            }
                        }
                        (Some(_), Some(_)) => {
                            e.push(format!("{path}: give key or key_sha256, not both"));
                            None
                        }
                        _ => {
                            e.push(format!("{path}.key: a non-empty key (or key_sha256) is required"));
                            None
                        }
                    }?;
                    Some(Client { name: c.name, key_sha256: hash, models: c.models.unwrap_or_default() })
                })
                .collect::<Vec<_>>()
        });

        // limits
        let l = raw.limits;
        for (v, p, what) in [
            (l.rpm.is_some(), "limits.rpm", "the gateway-wide rate limit"),
            (
                l.max_concurrent.is_some(),
                "limits.max_concurrent",
                "the upstream concurrency limit",
            ),
            (l.queue.is_some(), "limits.queue", "the request queue"),
            (
                l.model_min_interval.is_some(),
                "limits.model_min_interval",
                "per-model pacing",
            ),
        ] {
            if v {
                unsupported(p, what, e);
            }
        }
        let limits = Limits {
            max_request_body: l.max_request_body.map(|s| s.0).unwrap_or(32 << 20),
            queue_timeout: l
                .queue_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
        };
        if limits.max_request_body == 0 {
            e.push("limits.max_request_body: must be greater than 0".into());
        }

        let t = raw.timeouts;
        let timeouts = Timeouts {
            connect: t.connect.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
            first_byte: t.first_byte.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
            idle: t.idle.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
            total: t.total.map(|d| d.0).unwrap_or(Duration::from_secs(600)),
        };
        for (d, p) in [
            (timeouts.connect, "timeouts.connect"),
            (timeouts.first_byte, "timeouts.first_byte"),
            (timeouts.idle, "timeouts.idle"),
            (timeouts.total, "timeouts.total"),
        ] {
            if d.is_zero() {
                e.push(format!("{p}: must be greater than 0"));
            }
        }

        let retry = Retry {
            attempts: raw.retry.attempts.unwrap_or(3),
            backoff: raw
                .retry
                .backoff
                .map(|d| d.0)
                .unwrap_or(Duration::from_millis(250)),
        };
        if retry.attempts == 0 {
            e.push("retry.attempts: must be at least 1 (1 = no retry)".into());
        }

        // upstreams
        if raw.upstreams.is_empty() {
            e.push(
                "upstreams: at least one upstream is needed (try `- {name: demo, kind: demo}`)"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut upstreams = Vec::new();
        for (i, u) in raw.upstreams.into_iter().enumerate() {
            let path = format!("upstreams[{i}]");
            if u.name.is_empty()
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                e.push(format!(
                    "{path}.name: {:?} must be non-empty and use only letters, digits, '-', '_' or '.'",
                    u.name
                ));
            }
            if !names.insert(u.name.clone()) {
                e.push(format!("{path}.name: duplicate upstream name {:?}", u.name));
            }
            let kind = match (u.kind, &u.base_url) {
                (RawKind::Demo, None) => UpstreamKind::Demo,
                (RawKind::Demo, Some(_)) => {
                    e.push(format!("{path}.base_url: a demo upstream has no base_url"));
                    UpstreamKind::Demo
                }
                (RawKind::Openai, Some(url)) => match BaseUrl::parse(url) {
                    Ok(b) => UpstreamKind::Http(b),
                    Err(msg) => {
                        e.push(format!("{path}.base_url: {msg}"));
                        UpstreamKind::Demo
                    }
                },
                (RawKind::Openai, None) => {
                    e.push(format!(
                        "{path}.base_url: required (e.g. https://api.openai.com/v1), or set kind: demo"
                    ));
                    UpstreamKind::Demo
                }
            };
            let mut keys = Vec::new();
            for (k, key) in u.keys.into_iter().enumerate() {
                let (secret, weight) = match key {
                    RawKey::Plain(s) => (s, 1),
                    RawKey::Weighted(w) => (w.key, w.weight.unwrap_or(1)),
                };
                if secret.trim().is_empty() {
                    e.push(format!("{path}.keys[{k}]: key is empty"));
                    continue;
                }
                if weight == 0 {
                    e.push(format!("{path}.keys[{k}].weight: must be at least 1"));
                }
                keys.push(KeyConf {
                    secret: secret.trim().to_string(),
                    weight,
                });
            }
            if keys.iter().any(|k| k.weight != 1) && u.key_strategy != KeyStrategy::Weighted {
                e.push(format!(
                    "{path}.keys: weights only apply with key_strategy: weighted"
                ));
            }
            if u.weight.is_some() {
                unsupported(&format!("{path}.weight"), "upstream weights", e);
            }
            if u.stream_only && u.no_stream {
                e.push(format!(
                    "{path}: stream_only and no_stream cannot both be true"
                ));
            }
            let models = match u.models {
                Some(m) if m.is_empty() => {
                    e.push(format!(
                        "{path}.models: empty list (omit it to serve every model)"
                    ));
                    m
                }
                Some(m) => m,
                None if kind == UpstreamKind::Demo => {
                    crate::demo::MODELS.iter().map(|s| s.to_string()).collect()
                }
                None => vec!["*".into()],
            };
            for (j, m) in models.iter().enumerate() {
                if m.is_empty() {
                    e.push(format!("{path}.models[{j}]: empty pattern"));
                }
            }
            let paths = u.paths.unwrap_or_default();
            for (j, p) in paths.iter().enumerate() {
                if !p.starts_with("/v1/") {
                    e.push(format!("{path}.paths[{j}]: {p:?} must start with /v1/"));
                }
            }
            upstreams.push(UpstreamConf {
                name: u.name,
                kind,
                keys,
                key_strategy: u.key_strategy,
                models,
                model_map: u.model_map,
                paths,
                stream_only: u.stream_only,
                no_stream: u.no_stream,
            });
        }
        for (model, list) in &raw.models.fallbacks {
            for (j, m) in list.iter().enumerate() {
                if !upstreams.iter().any(|u| u.upstream_model(m).is_some()) {
                    e.push(format!(
                        "models.fallbacks.{model}[{j}]: no upstream serves {m:?}"
                    ));
                }
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
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
            state_path,
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
            "state: {redis: 'redis://127.0.0.1'}\nupstreams: [{name: a, kind: demo}]",
            &env,
        )
        .unwrap_err();
        assert!(err.0[0].contains("not supported yet"), "{err}");
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
