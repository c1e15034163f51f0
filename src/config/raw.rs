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
    /// `host:port` (or a Unix socket path), plain HTTP.
    Addr(String),
    /// `{addr, tls}`.
    Full(RawListenFull),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenFull {
    /// `host:port`, or a Unix socket path starting with `/`.
    pub addr: String,
    /// Serve HTTPS with this certificate; default plain HTTP.
    pub tls: Option<RawTls>,
    /// `server.trusted_proxies` peers start each connection with a PROXY
    /// protocol preamble (v1 or v2) naming the client; default false.
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain file (must exist).
    pub cert: String,
    /// PEM private key file (must exist).
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// API listener address(es); default `127.0.0.1:4000`.
    pub listen: Option<OneOrMany<RawListen>>,
    /// Admin listener; default `127.0.0.1:4001` without a token.
    pub admin: Option<RawAdmin>,
    /// Pingora server settings.
    #[serde(default)]
    pub server: RawServer,
    /// Embedded store; default none (key state lives in memory only).
    pub state: Option<RawState>,
    /// Client keys; default none (only loopback callers are served).
    pub clients: Option<Vec<RawClient>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub retry: RawRetry,
    /// At least one upstream.
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub models: RawModels,
    /// Browser clients from other origins; default none (no CORS headers).
    pub cors: Option<RawCors>,
    /// Prometheus on the API listener too; default only on the admin listener.
    pub metrics: Option<RawMetrics>,
    /// Log format and level; default text at `info` (`RUST_LOG` wins when set).
    #[serde(default)]
    pub log: RawLog,
    /// Answers kept for identical calls; default none (off).
    pub cache: Option<super::cache::RawCache>,
    /// Prices in USD per million tokens by model (`{input, cached_input,
    /// output}`), over the built-in ones; default the built-in list.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, super::prices::RawPrice>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `env_logger`'s lines (the default).
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `message`; access
    /// lines carry their fields (method, path, model, …) as keys.
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json`; default `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug`, `trace` or `off`, or an `env_logger`
    /// filter such as `info,pingora=warn`; default `info`.
    pub level: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Also serve `/metrics` text on the API listener at this path (to
    /// loopback callers and holders of the admin token), e.g. `/metrics`; default none.
    pub path: Option<String>,
    /// Count each request in the per-request series (by client, model,
    /// upstream, status; latency; time to first token; tokens); default true.
    /// Off, `/metrics` keeps the gauges, key states and upstream calls.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Allowed origins, exactly as browsers send them (`https://chat.example.com`),
    /// or `"*"` for any; default none.
    #[serde(default)]
    pub origins: Vec<String>,
    /// How long browsers may cache a preflight answer (duration); default `10m`.
    pub max_age: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path (after the base_url) of a cheap GET to check the upstream with,
    /// e.g. `/models`; default none (passive only).
    pub path: Option<String>,
    /// Time between checks, and how long an open circuit stays open (duration); default `10s`.
    pub interval: Option<Dur>,
    /// Failures in a row that open the circuit (count); default 3.
    pub failures: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM file of the CA(s) that sign the upstream's certificate (a private CA);
    /// default the system's trust store. Verification always stays on.
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port`; default `127.0.0.1:4001`.
    pub listen: Option<String>,
    /// Bearer token for everything but `/health`; required beyond loopback; default none.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub token: Option<String>,
    /// Host names (besides `localhost` and IP addresses) the admin listener
    /// and the dashboard answer to; others get 421 (no DNS rebinding);
    /// default none.
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads, 1..=1024; default the number of cores.
    pub threads: Option<usize>,
    /// How long SIGTERM lets in-flight requests finish (duration); default `30s`.
    pub grace_period: Option<Dur>,
    /// Pingora's final shutdown wait after the grace period (duration); default `5s`.
    pub shutdown_timeout: Option<Dur>,
    /// Pid file path; default `/tmp/switchyard.pid`.
    pub pid_file: Option<String>,
    /// Socket for handing listeners to a new binary (`serve -u`); default `/tmp/switchyard_upgrade.sock`.
    pub upgrade_sock: Option<String>,
    /// Log file; default standard error (required with `serve -d`).
    pub error_log: Option<String>,
    /// Idle upstream connections kept per upstream (count); default 256.
    pub keepalive_pool_size: Option<usize>,
    /// Tokio work stealing between worker threads; default off.
    pub work_stealing: Option<bool>,
    /// Peers (CIDRs or addresses) whose `X-Forwarded-For` / `Forwarded` /
    /// `X-Real-IP` name the real client; default none (a request carrying
    /// those headers from any other peer is never a loopback caller).
    pub trusted_proxies: Option<Vec<String>>,
    /// The header those proxies name the client in: `x-forwarded-for`,
    /// `forwarded` or `x-real-ip`; default `x-forwarded-for`.
    pub client_ip_header: Option<super::edge::ClientIpHeader>,
    /// Only clients from these addresses (CIDRs) are served; default all.
    pub allow_ips: Option<Vec<String>>,
    /// Clients from these addresses (CIDRs) are refused (403); default none.
    pub deny_ips: Option<Vec<String>>,
}

/// `state.redis`: a URL alone, or with its settings.
#[derive(Debug, Clone)]
pub enum RawRedis {
    Url(String),
    Full(RawRedisFull),
}

/// A string is the URL; a map, the settings (whose errors name their field).
impl<'de> Deserialize<'de> for RawRedis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawRedis;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Redis URL, or {url, prefix, timeout, limits, keys}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRedis, E> {
                Ok(RawRedis::Url(v.to_string()))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, m: M) -> Result<RawRedis, M::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(m);
                RawRedisFull::deserialize(d).map(RawRedis::Full)
            }
        }
        d.deserialize_any(Either)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisFull {
    /// `redis://[:password@]host:port[/db]`, `rediss://…` (TLS) or `unix:///path`.
    pub url: String,
    /// Prefix of every Redis key the gateway writes; default `switchyard`.
    pub prefix: Option<String>,
    /// The longest a Redis call may take before the store counts as down;
    /// default `250ms`.
    pub timeout: Option<Dur>,
    /// How rpm/tpm/concurrency limits are shared.
    pub limits: Option<RawSharedLimits>,
    /// What key state does when the store fails.
    pub keys: Option<RawSharedKeys>,
}

/// `state.redis.limits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedLimits {
    /// `local` (default: counted here, synced every `sync`) or `strict`
    /// (one Redis round trip per admission).
    pub mode: Option<LimitMode>,
    /// How often `local` mode exchanges counts (duration); default `100ms`.
    pub sync: Option<Dur>,
    /// `local` (default: count per instance) or `refuse` (503).
    pub on_store_failure: Option<OnStoreFailure>,
}

/// `state.redis.keys`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedKeys {
    /// `local` (default: this instance's key state) or `refuse` (503).
    pub on_store_failure: Option<OnStoreFailure>,
}

/// How a fleet shares its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Counted here; the others' counts arrive every `sync`.
    #[default]
    Local,
    /// Every admission asks Redis.
    Strict,
}

/// What a class of shared state does while Redis is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreFailure {
    /// Go on with this instance's own state.
    #[default]
    Local,
    /// Refuse the requests that need the store (503).
    Refuse,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Directory of the SQLite store (created); default none.
    pub path: Option<String>,
    /// Key state shared with other instances through Redis: a URL, or
    /// `{url, prefix, timeout}`.
    pub redis: Option<RawRedis>,
    /// Usage records older than this are deleted (duration); default `30d`.
    pub retention: Option<Dur>,
    /// Most usage records kept (the oldest go first), at least 1; default 1000000.
    pub max_rows: Option<u64>,
    /// Record every API request in the usage store; default true.
    pub usage: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// Unique name, shown in logs and metrics.
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// The client's key in plain text (usually `${ENV}`); this or `key_sha256`.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub key: Option<String>,
    /// SHA-256 of the key, 64 hex digits (`switchyard hash-key`).
    #[serde(default, deserialize_with = "opt_lenient")]
    pub key_sha256: Option<String>,
    /// Model globs the client may use; default all.
    pub models: Option<Vec<String>>,
    /// With `models`: the paths (globs such as `/v1/files*`) the client may
    /// use that do not name a model (files, batches, assistants' runs, …);
    /// default none.
    pub endpoints: Option<Vec<String>>,
    /// The client is served only from these addresses (CIDRs); default all.
    pub allow_ips: Option<Vec<String>>,
    /// Requests per minute, at most this many in any 60 s (1..=1000000000); default none.
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt + output, estimated before the call and
    /// corrected from the answer's usage), 1..=1000000000000; default none.
    pub tpm: Option<u64>,
    /// Calls in flight at once (streams until they end), 1..=100000; more get
    /// 429 at once; default no limit.
    pub max_concurrent: Option<u32>,
    /// When the key stops working, RFC 3339 in UTC (`2027-06-30T00:00:00Z`); default never.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub expires: Option<String>,
    /// Tokens and/or money per UTC day, week or month:
    /// `[{per: day, tokens: 100000}, {per: month, usd: 25}]`; default none.
    pub quotas: Option<Vec<super::quota::RawQuota>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Gateway-wide requests per minute, at most this many in any 60 s (1..=1000000000); default none.
    pub rpm: Option<u32>,
    /// Gateway-wide tokens per minute (1..=1000000000000); default none.
    pub tpm: Option<u64>,
    /// Upstream calls in flight at once, whole gateway (1..=100000); default no limit.
    pub max_concurrent: Option<u32>,
    /// Calls waiting (FIFO) for a `max_concurrent` slot or a model's turn,
    /// 0..=100000 (0: a full gateway answers 429 at once); default 50.
    pub queue: Option<u32>,
    /// How long a request may wait in the queue, for its model's turn or for
    /// a cooling key (duration); default `30s`.
    pub queue_timeout: Option<Dur>,
    /// Calls for the same upstream model start at least this far apart (a
    /// call that comes early waits its turn; duration); default none.
    pub model_min_interval: Option<Dur>,
    /// Largest request body (size); larger gets 413; default `32MiB`.
    pub max_request_body: Option<Size>,
    /// Gateway-wide quotas: `[{per: day|week|month, tokens: N, usd: X}]`
    /// (UTC periods; every caller counts); default none.
    pub budget: Option<Vec<super::quota::RawQuota>>,
    /// Fractions of a quota at which a warning is logged and counted
    /// (`switchyard_quota_warnings_total`), each in (0, 1]; default `[0.8, 0.95]`.
    pub quota_warn_at: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP (and TLS) connect (duration); default `5s`.
    pub connect: Option<Dur>,
    /// Request sent → response head, and → first SSE event (duration); default `60s`.
    pub first_byte: Option<Dur>,
    /// Longest silence between body chunks or events (duration); default `30s`.
    pub idle: Option<Dur>,
    /// Whole request, all attempts and waits (duration); default `10m`.
    pub total: Option<Dur>,
    /// Client side: reading one request head, from the connection's start or
    /// the end of the previous answer, beyond `keepalive` (duration); default `30s`.
    pub request_head: Option<Dur>,
    /// Client side: reading a whole request body the gateway reads itself
    /// (duration); default `60s`.
    pub request_body: Option<Dur>,
    /// Client side: one write to a client that does not take it (duration);
    /// default `30s`. A stream whose client stopped reading ends then.
    pub client_write: Option<Dur>,
    /// Client side: how long an idle kept-alive connection waits for its next
    /// request (duration); default `60s`.
    pub keepalive: Option<Dur>,
    /// A stream the client has begun that its upstream leaves silent this
    /// long gets a keepalive: an SSE comment, a `ping` event for Messages
    /// clients (duration; `0s`: never); default `15s`.
    pub stream_ping: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Transient failures allowed per request, at least 1 (1 = no retry); default 3.
    pub attempts: Option<u32>,
    /// Backoff before the first retry, doubling, ±25% jitter (duration); default `250ms`.
    pub backoff: Option<Dur>,
    /// A 429 whose recovery is at most this far away is waited for on the
    /// requested model instead of falling back (duration); default `5s`.
    pub max_wait: Option<Dur>,
    /// Most answer text kept per stream to continue it after a break (size;
    /// `0` turns continuation off); default `1MiB`.
    pub continuation_buffer: Option<Size>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawKey {
    /// The key alone (weight 1).
    Plain(#[serde(deserialize_with = "lenient_string")] String),
    /// `{key, weight}`.
    Weighted(RawWeightedKey),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedKey {
    /// The upstream API key.
    #[serde(deserialize_with = "lenient_string")]
    pub key: String,
    /// Share of calls with `key_strategy: weighted`, at least 1; default 1.
    pub weight: Option<u32>,
    /// Calls in flight on this key at once (1..=100000); more wait in the
    /// queue; default the upstream's limit only.
    pub max_concurrent: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKind {
    /// Any OpenAI-compatible HTTP(S) server at `base_url` (the default).
    #[default]
    Openai,
    /// The built-in offline demo server (no `base_url`).
    Demo,
    /// Azure OpenAI: deployment URLs or the `/openai/v1` form, `api-key`.
    Azure,
    /// Anthropic's Messages API (`x-api-key`): Messages clients pass through.
    Anthropic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// Each key has its own limits: a 429 cools that key (the default).
    #[default]
    Key,
    /// The keys share one account's limit: a 429 cools every key of the upstream.
    Upstream,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// Prefill; restart on the same target when it refuses prefill with a 400 (the default).
    #[default]
    Auto,
    /// Send the text already delivered as a trailing assistant message; forward the rest.
    Prefill,
    /// Send the request again; forward what goes beyond the text already delivered.
    Restart,
    /// Never continue a broken stream here.
    Off,
}

impl Continuation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Continuation::Auto => "auto",
            Continuation::Prefill => "prefill",
            Continuation::Restart => "restart",
            Continuation::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    /// Each call takes the next key (the default).
    #[default]
    RoundRobin,
    /// One key until it cools or is parked, then the next.
    Sticky,
    /// Calls shared in proportion to each key's `weight`.
    Weighted,
    /// A random key per call.
    Random,
    /// The key with the fewest calls in flight.
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
    /// Unique name (letters, digits, `-_.`), shown in logs, metrics and key ids.
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    /// `openai` (any OpenAI-compatible server), `azure` (Azure OpenAI),
    /// `anthropic` (Anthropic's Messages API) or `demo` (built in); default
    /// `openai`.
    #[serde(default)]
    pub kind: RawKind,
    /// `http(s)://host[:port]/path`; required unless `kind: demo`.
    pub base_url: Option<String>,
    /// API keys, plain or `{key, weight}`; default none (no `Authorization` sent).
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// How keys are picked; default `round_robin`.
    #[serde(default)]
    pub key_strategy: KeyStrategy,
    /// Whether a 429 limits one key or the whole upstream (keys of one
    /// account); default `key`.
    #[serde(default)]
    pub rate_limit_scope: RateLimitScope,
    /// Share of calls among upstreams serving the same model, at least 1; default 1.
    pub weight: Option<u32>,
    /// How a broken stream is continued on this upstream; default `auto`.
    #[serde(default)]
    pub continuation: Continuation,
    /// The provider's requests per minute, kept under: a full minute makes
    /// the gateway use another upstream or wait (1..=1000000000); default none.
    pub rpm: Option<u32>,
    /// The provider's tokens per minute, kept under like `rpm`; default none.
    pub tpm: Option<u64>,
    /// Calls in flight to this upstream at once (1..=100000); more wait in
    /// the queue; default no limit.
    pub max_concurrent: Option<u32>,
    /// This upstream's spacing of calls per model (overrides
    /// `limits.model_min_interval`; `0s` turns it off); default the gateway's.
    pub model_min_interval: Option<Dur>,
    /// Circuit breaker and active health check; default: 3 failures in a row
    /// take the upstream out for `10s`, no active check.
    pub health: Option<RawHealth>,
    /// Model globs served; default `*` (the demo's models for `kind: demo`,
    /// `claude-*` for `kind: anthropic`, the deployments for `kind: azure`).
    pub models: Option<Vec<String>>,
    /// Client model name → upstream model name; default none.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Opaque-lane path globs (e.g. `/v1/files*`) this upstream serves; default none
    /// (the first upstream takes unmatched paths).
    pub paths: Option<Vec<String>>,
    /// The upstream only streams: aggregate for `stream: false` clients; default false.
    #[serde(default)]
    pub stream_only: bool,
    /// The upstream cannot stream: synthesize SSE for `stream: true` clients; default false.
    #[serde(default)]
    pub no_stream: bool,
    /// The upstream has no Responses API: `/v1/responses` calls for the
    /// models it serves first are bridged to chat and back; default false.
    #[serde(default)]
    pub no_responses: bool,
    /// Speak HTTP/2 to the upstream (ALPN on `https://`, prior knowledge on
    /// `http://`): many calls share a few connections; default false.
    #[serde(default)]
    pub http2: bool,
    /// TLS settings for an `https://` base_url; default the system's trust store.
    pub tls: Option<RawUpstreamTls>,
    /// Sent as `OpenAI-Organization` with every call (the keys' own
    /// organization); clients' are never passed on; default none.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub organization: Option<String>,
    /// Sent as `OpenAI-Project` with every call; default none.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub project: Option<String>,
    /// `kind: azure`: sent as `?api-version=` with every call; required
    /// with `deployments`; default none.
    #[serde(default, deserialize_with = "opt_lenient")]
    pub api_version: Option<String>,
    /// `kind: azure`: model → deployment name (the deployment form); the
    /// models served default to these; default none (the /openai/v1 form).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    /// Model → models tried when it cannot be served; default none.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Model → context window and output limit (tokens), added to or
    /// overriding the built-in catalog; default none.
    #[serde(default)]
    pub catalog: BTreeMap<String, RawCatalogEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalogEntry {
    /// Context window: prompt plus output (tokens, at least 1).
    pub context: u64,
    /// Most output tokens per answer; default unknown.
    pub max_output: Option<u64>,
}

fn opt_lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    lenient_string(d).map(Some)
}
