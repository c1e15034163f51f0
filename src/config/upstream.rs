//! `upstreams:`: where calls go, with which keys, for which models. Validated
//! as a whole list (names must be unique).

use super::glob::glob_match;
use super::raw::{Continuation, KeyStrategy, RateLimitScope, RawKey, RawKind, RawUpstream};
use super::sections::{check_concurrency, check_interval, check_rate, Problems};
use std::collections::BTreeMap;
use std::fmt;

/// `base_url` split the way the connector needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`, `/inference`, or empty).
    pub path: String,
}

/// Why a `base_url` is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(String);

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, BadUrl> {
        Self::parse_inner(s).map_err(BadUrl)
    }

    fn parse_inner(s: &str) -> Result<BaseUrl, String> {
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
    /// Calls in flight on this key at once; `None`: no limit of its own.
    pub max_concurrent: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConf {
    pub name: String,
    pub kind: UpstreamKind,
    pub keys: Vec<KeyConf>,
    pub key_strategy: KeyStrategy,
    /// A 429 cools one key, or every key of the upstream.
    pub rate_limit_scope: RateLimitScope,
    /// Model globs served; `["*"]` when not given.
    pub models: Vec<String>,
    /// Client-facing model name → upstream model name.
    pub model_map: BTreeMap<String, String>,
    /// Opaque-lane path globs routed here.
    pub paths: Vec<String>,
    pub stream_only: bool,
    pub no_stream: bool,
    /// No `/responses` here: Responses calls are bridged to chat.
    pub no_responses: bool,
    /// HTTP/2 to the upstream (`http2`).
    pub http2: bool,
    /// PEM file of the CA(s) to trust for this upstream (`tls.ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Share of calls among upstreams serving the same model (`weight`).
    pub weight: u32,
    pub health: HealthConf,
    /// How a broken stream is continued here.
    pub continuation: Continuation,
    /// The provider's limits, kept under (`rpm`, `tpm`).
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// Calls in flight here at once; `None`: no limit.
    pub max_concurrent: Option<u32>,
    /// This upstream's own pacing (`Some(None)`: turned off with `0s`);
    /// `None`: the gateway's `limits.model_min_interval`.
    pub model_min_interval: Option<Option<std::time::Duration>>,
    /// `OpenAI-Organization` / `OpenAI-Project` from `organization` / `project`.
    pub account_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `kind: azure`: its URL form and api-version.
    pub azure: Option<super::azure::Azure>,
    /// `kind: anthropic`: speaks Anthropic's Messages API, not OpenAI's.
    pub anthropic: bool,
}

/// `upstreams[].health`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConf {
    /// GET this path (after the base path) to check the upstream; none: passive only.
    pub path: Option<String>,
    pub interval: std::time::Duration,
    pub failures: u32,
}

impl Default for HealthConf {
    fn default() -> Self {
        HealthConf {
            path: None,
            interval: std::time::Duration::from_secs(10),
            failures: 3,
        }
    }
}

impl UpstreamConf {
    /// The name this upstream knows `model` by, if it serves it: a `model_map`
    /// entry wins over a `models` glob (which keeps the name). A name with
    /// `*` or `?` in it is served only by a `model_map` entry of that name.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        match self.model_map.get(model) {
            Some(m) => Some(m.as_str()),
            // a name holding glob characters is a pattern, never a model
            None => (!model.contains(['*', '?'])
                && self.models.iter().any(|p| glob_match(p, model)))
            .then_some(model),
        }
    }
}

/// `upstreams:` validated.
pub struct Upstreams(pub Vec<UpstreamConf>);

impl TryFrom<Vec<RawUpstream>> for Upstreams {
    type Error = Problems;

    fn try_from(raw: Vec<RawUpstream>) -> Result<Self, Problems> {
        let mut errors = Vec::new();
        let upstreams = Upstreams::validate(raw, &mut errors);
        if errors.is_empty() {
            Ok(upstreams)
        } else {
            Err(errors)
        }
    }
}

impl Upstreams {
    /// Every upstream that could be read, with the problems found on the way
    /// (an upstream with a problem is still listed, so later checks such as
    /// fallbacks see it).
    pub fn validate(raw: Vec<RawUpstream>, e: &mut Problems) -> Upstreams {
        // upstreams
        if raw.is_empty() {
            e.push(
                "upstreams: at least one upstream is needed (try `- {name: demo, kind: demo}`)"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut upstreams = Vec::new();
        for (i, u) in raw.into_iter().enumerate() {
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
                (RawKind::Openai | RawKind::Azure | RawKind::Anthropic, Some(url)) => {
                    match BaseUrl::parse(url) {
                        Ok(b) => UpstreamKind::Http(b),
                        Err(msg) => {
                            e.push(format!("{path}.base_url: {msg}"));
                            UpstreamKind::Demo
                        }
                    }
                }
                (RawKind::Openai | RawKind::Azure | RawKind::Anthropic, None) => {
                    e.push(format!(
                        "{path}.base_url: required (e.g. https://api.openai.com/v1), or set kind: demo"
                    ));
                    UpstreamKind::Demo
                }
            };
            let base_path = match &kind {
                UpstreamKind::Http(b) => b.path.as_str(),
                UpstreamKind::Demo => "",
            };
            let azure = super::azure::validate(&path, &u, base_path, e);
            let mut keys = Vec::new();
            for (k, key) in u.keys.into_iter().enumerate() {
                let (secret, weight, max_concurrent) = match key {
                    RawKey::Plain(s) => (s, 1, None),
                    RawKey::Weighted(w) => (w.key, w.weight.unwrap_or(1), w.max_concurrent),
                };
                check_concurrency(
                    &format!("{path}.keys[{k}].max_concurrent"),
                    max_concurrent,
                    e,
                );
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
                    max_concurrent,
                });
            }
            check_rate(&path, u.rpm, u.tpm, e);
            check_concurrency(&format!("{path}.max_concurrent"), u.max_concurrent, e);
            let model_min_interval = u
                .model_min_interval
                .map(|d| check_interval(&format!("{path}.model_min_interval"), Some(d.0), e));
            if keys.iter().any(|k| k.weight != 1) && u.key_strategy != KeyStrategy::Weighted {
                e.push(format!(
                    "{path}.keys: weights only apply with key_strategy: weighted"
                ));
            }
            let weight = u.weight.unwrap_or(1);
            if weight == 0 || weight > 1000 {
                e.push(format!(
                    "{path}.weight: {weight} is out of range (1..=1000)"
                ));
            }
            let d = HealthConf::default();
            let health = match u.health {
                None => d,
                Some(h) => HealthConf {
                    path: h.path,
                    interval: h.interval.map_or(d.interval, |x| x.0),
                    failures: h.failures.unwrap_or(d.failures),
                },
            };
            if health.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                e.push(format!(
                    "{path}.health.path: must start with / (e.g. /models)"
                ));
            }
            if health.interval < std::time::Duration::from_millis(100) {
                e.push(format!("{path}.health.interval: must be at least 100ms"));
            }
            if health.failures == 0 {
                e.push(format!("{path}.health.failures: must be at least 1"));
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
                // Anthropic serves Claude: every other model stays off it
                None if u.kind == RawKind::Anthropic => vec!["claude-*".into()],
                // an Azure resource serves its deployments
                None if azure.as_ref().is_some_and(|a| !a.deployments.is_empty()) => azure
                    .iter()
                    .flat_map(|a| a.deployments.keys().cloned())
                    .collect(),
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
            let ca_file = u.tls.and_then(|t| t.ca_file).map(std::path::PathBuf::from);
            if let Some(f) = &ca_file {
                if !matches!(&kind, UpstreamKind::Http(b) if b.tls) {
                    e.push(format!("{path}.tls: only an https:// base_url uses TLS"));
                }
                match std::fs::read(f) {
                    Ok(pem)
                        if pingora::tls::x509::X509::stack_from_pem(&pem)
                            .is_ok_and(|certs| !certs.is_empty()) => {}
                    Ok(_) => e.push(format!(
                        "{path}.tls.ca_file: {} holds no PEM certificate",
                        f.display()
                    )),
                    Err(err) => e.push(format!(
                        "{path}.tls.ca_file: cannot read {}: {err}",
                        f.display()
                    )),
                }
            }
            let account_headers = [
                ("organization", "openai-organization", u.organization),
                ("project", "openai-project", u.project),
            ]
            .into_iter()
            .filter_map(|(field, header, value)| {
                let value = value.filter(|v| !v.trim().is_empty())?;
                match http::HeaderValue::from_str(value.trim()) {
                    Ok(v) => Some((http::HeaderName::from_static(header), v)),
                    Err(_) => {
                        e.push(format!("{path}.{field}: not a valid header value"));
                        None
                    }
                }
            })
            .collect();
            upstreams.push(UpstreamConf {
                name: u.name,
                kind,
                keys,
                key_strategy: u.key_strategy,
                rate_limit_scope: u.rate_limit_scope,
                models,
                model_map: u.model_map,
                paths,
                stream_only: u.stream_only,
                no_stream: u.no_stream,
                no_responses: u.no_responses,
                http2: u.http2,
                ca_file,
                weight,
                health,
                continuation: u.continuation,
                rpm: u.rpm,
                tpm: u.tpm,
                max_concurrent: u.max_concurrent,
                model_min_interval,
                account_headers,
                azure,
                anthropic: u.kind == RawKind::Anthropic,
            });
        }
        Upstreams(upstreams)
    }
}
