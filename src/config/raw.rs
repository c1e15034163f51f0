//! Raw serde types mirroring the YAML file one to one. Unknown keys are errors.
//! [`super::Config`] is built from these after validation.

use super::units::{lenient_string, Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One value or a list of them (`listen: addr` or `listen: [a, b]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    Addr(String),
    Full(RawListenFull),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenFull {
    pub addr: String,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<OneOrMany<RawListen>>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub server: RawServer,
    pub state: Option<RawState>,
    pub clients: Option<Vec<RawClient>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub models: RawModels,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    #[serde(default, deserialize_with = "opt_lenient")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub grace_period: Option<Dur>,
    pub shutdown_timeout: Option<Dur>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub keepalive_pool_size: Option<usize>,
    pub work_stealing: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: Option<String>,
    pub redis: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(default, deserialize_with = "opt_lenient")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "opt_lenient")]
    pub key_sha256: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub rpm: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub queue: Option<u32>,
    pub queue_timeout: Option<Dur>,
    pub model_min_interval: Option<Dur>,
    pub max_request_body: Option<Size>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Dur>,
    pub first_byte: Option<Dur>,
    pub idle: Option<Dur>,
    pub total: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<u32>,
    pub backoff: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKey {
    Plain(#[serde(deserialize_with = "lenient_string")] String),
    Weighted(RawWeightedKey),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedKey {
    #[serde(deserialize_with = "lenient_string")]
    pub key: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKind {
    #[default]
    Openai,
    Demo,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    #[default]
    RoundRobin,
    Sticky,
    Weighted,
    Random,
    LeastBusy,
}

impl KeyStrategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyStrategy::RoundRobin => "round_robin",
            KeyStrategy::Sticky => "sticky",
            KeyStrategy::Weighted => "weighted",
            KeyStrategy::Random => "random",
            KeyStrategy::LeastBusy => "least_busy",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(default)]
    pub kind: RawKind,
    pub base_url: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub key_strategy: KeyStrategy,
    pub weight: Option<u32>,
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Opaque-lane path globs (e.g. `/v1/files*`) this upstream serves.
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub stream_only: bool,
    #[serde(default)]
    pub no_stream: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

fn opt_lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    lenient_string(d).map(Some)
}
