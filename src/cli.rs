//! Command-line definitions (clap) only.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "conf/switchyard.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hosted gateway for OpenAI-compatible LLM APIs, on Pingora",
    after_help = "Environment (a quick start without a file; with one, adjustments `check` lists: PORT only when the file has no `listen`, keys only for an `openai`/`github` upstream that lists none): OPENAI_API_KEY, OPENAI_API_KEYS, OPENAI_BASE_URL, GITHUB_TOKEN, GITHUB_TOKEN2..N, UPSTREAM_API_URL, PORT, RATE_LIMIT_ENABLED, RATE_LIMIT_PER_MINUTE, UPSTREAM_CONCURRENCY_ENABLED, UPSTREAM_MAX_CONCURRENT, UPSTREAM_QUEUE_MAX, UPSTREAM_QUEUE_TIMEOUT_MS, ENABLE_MODEL_THROTTLING, MODEL_MIN_INTERVAL_MS, METRICS_ENABLED, METRICS_PATH."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Read environment variables from this file (KEY=value lines) first;
    /// without it, `.env` in the working directory is read when present.
    /// Variables already set in the environment win over the file's.
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Do not read `.env` from the working directory.
    #[arg(long, global = true, conflicts_with = "env_file")]
    pub no_env_file: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. Without one: the old proxies' environment variables
        /// when they name an upstream (OPENAI_API_KEY(S), GITHUB_TOKEN*,
        /// UPSTREAM_API_URL), else conf/switchyard.yaml if it exists, else the
        /// built-in demo.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Run in the background; the log goes to server.error_log (required).
        #[arg(short, long)]
        daemon: bool,
        /// Take over the listening sockets of a running instance (Pingora graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file and print what it will do; exits non-zero on errors.
    Check {
        /// Config file; without one, the config `serve` would build (see `serve --help`).
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// A running gateway now: version, uptime, listeners, upstream health,
    /// keys, queue and requests/s.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Requests and tokens of a running gateway, grouped (from its usage store).
    Usage {
        #[command(flatten)]
        admin: AdminArgs,
        /// Group by client, model, key, upstream or day.
        #[arg(long, default_value = "model")]
        by: String,
        /// How far back: a duration (24h, 7d) or a time (2026-12-01T00:00:00Z).
        #[arg(long, default_value = "24h")]
        since: String,
    },
    /// The most recent requests of a running gateway (no bodies).
    Requests {
        #[command(flatten)]
        admin: AdminArgs,
        /// How many (1..=1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only this client's.
        #[arg(long)]
        client: Option<String>,
        /// Only answers with this status: a code (429), a class (4xx, 5xx),
        /// ok (2xx) or errors (400 and up).
        #[arg(long)]
        status: Option<String>,
        /// Only this model (asked or served); a glob such as 'gpt-4o*' works.
        #[arg(long)]
        model: Option<String>,
        /// Only requests that ended since: a duration (15m, 24h) or a time
        /// (2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only requests that ended before: a duration back from now or a time.
        #[arg(long)]
        until: Option<String>,
    },
    /// Send a minimal request through every upstream key (or model) of a
    /// running gateway and report what works, what is rate limited (until
    /// when), what is parked or broken; exits 1 unless every probe works.
    Probe {
        #[command(flatten)]
        admin: AdminArgs,
        /// Probe this model on each upstream serving it, with every key.
        #[arg(long, conflicts_with = "all")]
        model: Option<String>,
        /// Probe every listed model on each upstream serving it (one key each).
        #[arg(long)]
        all: bool,
        /// Only this upstream.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Show every upstream key of a running gateway, or act on one.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: Option<KeyAction>,
    },
    /// Act on a running gateway's counters.
    Stats {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: StatsAction,
    },
    /// The response cache of a running gateway: what it holds, or purge it.
    Cache {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: Option<CacheAction>,
    },
    /// Make a running gateway re-read its config file (like SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Client keys: list them (the config's too), or create, change, revoke
    /// and rotate run-time ones through the admin API; `audit` lists the changes.
    Clients {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        action: Option<ClientAction>,
    },
    /// Print the SHA-256 form of a client key, for `clients[].key_sha256`.
    HashKey {
        /// The key; read from standard input when omitted.
        key: Option<String>,
    },
}

/// How the CLI reaches a running gateway's admin API.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Config file whose `admin` section (address, token) to use.
    #[arg(short, long, default_value = DEFAULT_CONFIG, env = "SWITCHYARD_CONFIG", global = true)]
    pub config: PathBuf,
    /// Admin address (host:port), overriding the config.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// Admin token, overriding the config.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the admin API's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Put a key back into rotation now (clears cooldowns and parking).
    Enable { id: String },
    /// Take a key out of rotation until enabled.
    Disable { id: String },
    /// Clear a key's cooldowns, parking and counters.
    Reset { id: String },
    /// Sticky upstreams: move on to the next key.
    Rotate {
        /// Only this upstream (it must pick its keys `sticky`).
        #[arg(long)]
        upstream: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Drop kept answers: all, or those of one model and/or client.
    Purge {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StatsAction {
    /// Zero every key's request and 429 counters (the usage log is kept).
    Reset,
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Every client: source, status, limits, quotas used, spend, last seen (the default).
    List,
    /// Make a run-time client; its key is printed once, never again.
    Create {
        /// Unique name, shown in logs, metrics and usage.
        name: String,
        #[command(flatten)]
        limits: ClientLimits,
        /// Use this key (at least 24 characters) instead of a generated one.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// One client: limits, usage now, quotas, spend.
    Show { name: String },
    /// Change a run-time client's limits; only the flags given change.
    Update {
        name: String,
        #[command(flatten)]
        limits: ClientLimits,
    },
    /// Stop a run-time client's key now (every instance within a second).
    Revoke { name: String },
    /// Give a run-time client a new key (printed once); the old one stops now.
    Rotate { name: String },
    /// Who created, changed, revoked or rotated which client, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// A client's limits, for `clients create` and `clients update`. With
/// `update`, `none` clears a limit (`--rpm none`) and `--models all` lets
/// the client use every model again.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientLimits {
    /// Model globs the client may use, comma-separated (`gpt-*,o3*`);
    /// default all (`all` lifts a restriction).
    #[arg(long, value_delimiter = ',', value_name = "GLOBS")]
    pub models: Option<Vec<String>>,
    /// Requests per minute (or `none`).
    #[arg(long, value_name = "N")]
    pub rpm: Option<String>,
    /// Tokens per minute (or `none`).
    #[arg(long, value_name = "N")]
    pub tpm: Option<String>,
    /// Calls in flight at once (or `none`).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<String>,
    /// When the key stops working, RFC 3339 (`2027-01-01T00:00:00Z`), or `none`.
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// A quota per UTC day, week or month: `100000tokens/day`, `25usd/month`;
    /// repeat for several; `none` removes them all. With `update` the quotas
    /// given replace the client's.
    #[arg(long = "quota", value_name = "AMOUNT/PERIOD")]
    pub quotas: Vec<String>,
    /// Free text for operators (`''` clears it).
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
}
