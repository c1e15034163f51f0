//! The validated config sections other than upstreams, each built from its raw
//! form with `TryFrom` (the error is every problem found in that section, each
//! naming its YAML path). Defaults live in each section's `impl Default`.

use super::edge::Nets;
use super::raw::{
    OneOrMany, RawAdmin, RawCors, RawLimits, RawListen, RawRetry, RawServer, RawState, RawTimeouts,
};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The problems found in one section (or the whole file), each with its YAML path.
pub type Problems = Vec<String>;

/// A listening address with optional TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub addr: String,
    /// `(cert file, key file)`.
    pub tls: Option<(String, String)>,
    /// Connections may start with a PROXY protocol preamble.
    pub proxy_protocol: bool,
}

/// `listen:` (one address or a list).
#[derive(Debug, Clone, PartialEq)]
pub struct Listeners(pub Vec<Listener>);

impl Default for Listeners {
    fn default() -> Self {
        Listeners(vec![Listener {
            addr: "127.0.0.1:4000".into(),
            tls: None,
            proxy_protocol: false,
        }])
    }
}

impl TryFrom<Option<OneOrMany<RawListen>>> for Listeners {
    type Error = Problems;

    fn try_from(raw: Option<OneOrMany<RawListen>>) -> Result<Self, Problems> {
        let Some(l) = raw else {
            return Ok(Listeners::default());
        };
        let mut e = Vec::new();
        let many = matches!(l, OneOrMany::Many(_));
        let list: Vec<Listener> = l
            .into_vec()
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let path = if many {
                    format!("listen[{i}]")
                } else {
                    "listen".into()
                };
                let l = match l {
                    RawListen::Addr(a) => Listener {
                        addr: a,
                        tls: None,
                        proxy_protocol: false,
                    },
                    RawListen::Full(f) => Listener {
                        addr: f.addr,
                        tls: f.tls.map(|t| (t.cert, t.key)),
                        proxy_protocol: f.proxy_protocol,
                    },
                };
                check_listen_addr(&l.addr, &path, &mut e);
                if l.proxy_protocol && l.addr.starts_with('/') {
                    e.push(format!(
                        "{path}.proxy_protocol: needs a TCP listener, not a Unix socket"
                    ));
                }
                if let Some((cert, key)) = &l.tls {
                    for (p, what) in [(cert, "cert"), (key, "key")] {
                        if !Path::new(p).exists() {
                            e.push(format!("{path}.tls.{what}: file {p:?} does not exist"));
                        }
                    }
                }
                l
            })
            .collect();
        if list.is_empty() {
            e.push("listen: at least one address is needed".into());
        }
        if e.is_empty() {
            Ok(Listeners(list))
        } else {
            Err(e)
        }
    }
}

/// `admin:`: the admin listener and its token.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: Option<String>,
    pub token: Option<String>,
    /// Host names it answers to besides `localhost` and IP addresses (lower case).
    pub hosts: Vec<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: Some("127.0.0.1:4001".into()),
            token: None,
            hosts: Vec::new(),
        }
    }
}

impl TryFrom<Option<RawAdmin>> for Admin {
    type Error = Problems;

    fn try_from(raw: Option<RawAdmin>) -> Result<Self, Problems> {
        let raw = raw.unwrap_or_default();
        let d = Admin::default();
        let admin = Admin {
            listen: raw.listen.or(d.listen),
            token: raw.token.filter(|t| !t.is_empty()),
            hosts: raw
                .hosts
                .unwrap_or_default()
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        };
        let mut e = Vec::new();
        if let Some(a) = &admin.listen {
            check_listen_addr(a, "admin.listen", &mut e);
            if !is_loopback_addr(a) && admin.token.is_none() {
                e.push(format!(
                    "admin.token: required because admin.listen ({a}) is reachable beyond loopback"
                ));
            }
        }
        if e.is_empty() {
            Ok(admin)
        } else {
            Err(e)
        }
    }
}

/// `server:`: Pingora's server settings.
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
    pub trusted_proxies: Nets,
    pub client_ip_header: super::edge::ClientIpHeader,
    pub allow_ips: Nets,
    pub deny_ips: Nets,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            grace_period: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            pid_file: None,
            upgrade_sock: None,
            error_log: None,
            keepalive_pool_size: 256,
            work_stealing: false,
            trusted_proxies: Nets::default(),
            client_ip_header: Default::default(),
            allow_ips: Nets::default(),
            deny_ips: Nets::default(),
        }
    }
}

impl TryFrom<RawServer> for ServerSettings {
    type Error = Problems;

    fn try_from(s: RawServer) -> Result<Self, Problems> {
        let d = ServerSettings::default();
        let mut e = Vec::new();
        let server = ServerSettings {
            trusted_proxies: Nets::parse("server.trusted_proxies", s.trusted_proxies, &mut e),
            client_ip_header: s.client_ip_header.unwrap_or_default(),
            allow_ips: Nets::parse("server.allow_ips", s.allow_ips, &mut e),
            deny_ips: Nets::parse("server.deny_ips", s.deny_ips, &mut e),
            threads: s.threads.unwrap_or(d.threads),
            grace_period: s.grace_period.map_or(d.grace_period, |x| x.0),
            shutdown_timeout: s.shutdown_timeout.map_or(d.shutdown_timeout, |x| x.0),
            pid_file: s.pid_file,
            upgrade_sock: s.upgrade_sock,
            error_log: s.error_log,
            keepalive_pool_size: s.keepalive_pool_size.unwrap_or(d.keepalive_pool_size),
            work_stealing: s.work_stealing.unwrap_or(d.work_stealing),
        };
        if server.threads == 0 || server.threads > 1024 {
            e.push(format!(
                "server.threads: {} is out of range (1..=1024)",
                server.threads
            ));
        }
        if e.is_empty() {
            Ok(server)
        } else {
            Err(e)
        }
    }
}

/// `state:`: where the embedded store lives (`None`: in memory only).
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub path: Option<PathBuf>,
    /// Usage records are kept this long, and at most `max_rows` of them.
    pub retention: Duration,
    pub max_rows: u64,
    /// `state.usage`: record requests in the usage store.
    pub usage: bool,
    /// `state.redis`: key state shared with the other instances.
    pub redis: Option<super::redis::RedisSettings>,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            path: None,
            retention: Duration::from_secs(30 * 86_400),
            max_rows: 1_000_000,
            usage: true,
            redis: None,
        }
    }
}

impl TryFrom<Option<RawState>> for StateSettings {
    type Error = Problems;

    fn try_from(raw: Option<RawState>) -> Result<Self, Problems> {
        let Some(st) = raw else {
            return Ok(StateSettings::default());
        };
        let redis = match st.redis {
            None => None,
            Some(r) => Some(super::redis::RedisSettings::parse(r)?),
        };
        let d = StateSettings::default();
        if st.max_rows == Some(0) {
            return Err(vec!["state.max_rows: must be at least 1".into()]);
        }
        Ok(StateSettings {
            path: st.path.filter(|p| !p.is_empty()).map(PathBuf::from),
            retention: st.retention.map_or(d.retention, |x| x.0),
            max_rows: st.max_rows.unwrap_or(d.max_rows),
            usage: st.usage.unwrap_or(d.usage),
            redis,
        })
    }
}

/// `limits:`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_body: u64,
    pub queue_timeout: Duration,
    /// Gateway-wide: at most this many calls in any minute; `None`: no limit.
    pub rpm: Option<u32>,
    /// Gateway-wide: at most this many tokens in any minute; `None`: no limit.
    pub tpm: Option<u64>,
    /// Upstream calls in flight, whole gateway; `None`: no limit.
    pub max_concurrent: Option<u32>,
    /// Calls that may wait for a slot or their model's turn.
    pub queue: u32,
    /// Calls for one upstream model start this far apart; `None`: no pacing.
    pub model_min_interval: Option<Duration>,
    /// Gateway-wide quotas (`limits.budget`).
    pub budget: Vec<super::quota::Quota>,
    /// Fractions of a quota that log a warning (`limits.quota_warn_at`).
    pub quota_warn_at: Vec<f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: 32 << 20,
            queue_timeout: Duration::from_secs(30),
            rpm: None,
            tpm: None,
            max_concurrent: None,
            queue: 50,
            model_min_interval: None,
            budget: Vec::new(),
            quota_warn_at: vec![0.8, 0.95],
        }
    }
}

/// Checks `rpm` and `tpm` settings under `path`.
pub fn check_rate(path: &str, rpm: Option<u32>, tpm: Option<u64>, e: &mut Problems) {
    // sized for a fleet: a billion requests a minute is far beyond what a
    // hundred instances serve
    if rpm.is_some_and(|r| !(1..=1_000_000_000).contains(&r)) {
        e.push(format!("{path}.rpm: must be between 1 and 1000000000"));
    }
    if tpm.is_some_and(|t| !(1..=1_000_000_000_000).contains(&t)) {
        e.push(format!("{path}.tpm: must be between 1 and 1000000000000"));
    }
}

/// Checks a `max_concurrent` setting at `path`.
pub fn check_concurrency(path: &str, max: Option<u32>, e: &mut Problems) {
    if max.is_some_and(|m| !(1..=100_000).contains(&m)) {
        e.push(format!("{path}: must be between 1 and 100000"));
    }
}

/// A pacing interval at `path`: `0s` is none; more than an hour is a mistake.
pub fn check_interval(path: &str, d: Option<Duration>, e: &mut Problems) -> Option<Duration> {
    match d {
        Some(d) if d > Duration::from_secs(3600) => {
            e.push(format!("{path}: at most 1h"));
            None
        }
        Some(d) if d.is_zero() => None,
        other => other,
    }
}

impl TryFrom<RawLimits> for Limits {
    type Error = Problems;

    fn try_from(l: RawLimits) -> Result<Self, Problems> {
        let mut e = Vec::new();
        let d = Limits::default();
        check_rate("limits", l.rpm, l.tpm, &mut e);
        check_concurrency("limits.max_concurrent", l.max_concurrent, &mut e);
        if l.queue.is_some_and(|q| q > 100_000) {
            e.push("limits.queue: must be between 0 and 100000".into());
        }
        let budget = super::quota::parse("limits.budget", l.budget.as_deref().unwrap_or_default())
            .unwrap_or_else(|errs| {
                e.extend(errs);
                Vec::new()
            });
        let quota_warn_at = l.quota_warn_at.unwrap_or(d.quota_warn_at);
        if quota_warn_at.len() > 8 || quota_warn_at.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            e.push("limits.quota_warn_at: at most 8 fractions, each above 0 and at most 1 (0.8 is 80%)".into());
        }
        let limits = Limits {
            budget,
            quota_warn_at,
            max_request_body: l.max_request_body.map_or(d.max_request_body, |s| s.0),
            queue_timeout: l.queue_timeout.map_or(d.queue_timeout, |x| x.0),
            rpm: l.rpm,
            tpm: l.tpm,
            max_concurrent: l.max_concurrent,
            queue: l.queue.unwrap_or(d.queue),
            model_min_interval: check_interval(
                "limits.model_min_interval",
                l.model_min_interval.map(|x| x.0),
                &mut e,
            ),
        };
        if limits.max_request_body == 0 {
            e.push("limits.max_request_body: must be greater than 0".into());
        }
        if e.is_empty() {
            Ok(limits)
        } else {
            Err(e)
        }
    }
}

/// `timeouts:`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
    pub request_head: Duration,
    pub request_body: Duration,
    pub client_write: Duration,
    pub keepalive: Duration,
    /// A begun stream silent this long gets a keepalive; zero: never.
    pub stream_ping: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
            request_head: Duration::from_secs(30),
            request_body: Duration::from_secs(60),
            client_write: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            stream_ping: Duration::from_secs(15),
        }
    }
}

impl TryFrom<RawTimeouts> for Timeouts {
    type Error = Problems;

    fn try_from(t: RawTimeouts) -> Result<Self, Problems> {
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: t.connect.map_or(d.connect, |x| x.0),
            first_byte: t.first_byte.map_or(d.first_byte, |x| x.0),
            idle: t.idle.map_or(d.idle, |x| x.0),
            total: t.total.map_or(d.total, |x| x.0),
            request_head: t.request_head.map_or(d.request_head, |x| x.0),
            request_body: t.request_body.map_or(d.request_body, |x| x.0),
            client_write: t.client_write.map_or(d.client_write, |x| x.0),
            keepalive: t.keepalive.map_or(d.keepalive, |x| x.0),
            stream_ping: t.stream_ping.map_or(d.stream_ping, |x| x.0),
        };
        let e: Problems = [
            (timeouts.connect, "timeouts.connect"),
            (timeouts.first_byte, "timeouts.first_byte"),
            (timeouts.idle, "timeouts.idle"),
            (timeouts.total, "timeouts.total"),
            (timeouts.request_head, "timeouts.request_head"),
            (timeouts.request_body, "timeouts.request_body"),
            (timeouts.client_write, "timeouts.client_write"),
            (timeouts.keepalive, "timeouts.keepalive"),
        ]
        .into_iter()
        .filter(|(d, _)| d.is_zero())
        .map(|(_, p)| format!("{p}: must be greater than 0"))
        .collect();
        let mut e = e;
        let ping = timeouts.stream_ping;
        if !ping.is_zero() && ping < Duration::from_millis(100) {
            e.push("timeouts.stream_ping: at least 100ms (or 0s: never)".into());
        }
        if e.is_empty() {
            Ok(timeouts)
        } else {
            Err(e)
        }
    }
}

/// `retry:`.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Transient failures allowed per model (a fallback model has its own).
    pub attempts: u32,
    pub backoff: Duration,
    /// Recoveries this close are waited for on the requested model.
    pub max_wait: Duration,
    /// Most answer text (bytes) kept per stream to continue it; 0: never continued.
    pub continuation_buffer: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(5),
            continuation_buffer: 1 << 20,
        }
    }
}

impl TryFrom<RawRetry> for Retry {
    type Error = Problems;

    fn try_from(r: RawRetry) -> Result<Self, Problems> {
        let d = Retry::default();
        let retry = Retry {
            attempts: r.attempts.unwrap_or(d.attempts),
            backoff: r.backoff.map_or(d.backoff, |x| x.0),
            max_wait: r.max_wait.map_or(d.max_wait, |x| x.0),
            continuation_buffer: r.continuation_buffer.map_or(d.continuation_buffer, |x| {
                usize::try_from(x.0).unwrap_or(usize::MAX)
            }),
        };
        if retry.attempts == 0 {
            return Err(vec![
                "retry.attempts: must be at least 1 (1 = no retry)".into()
            ]);
        }
        Ok(retry)
    }
}

/// `cors:`: which browser origins may call the API listener.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`https://chat.example.com`).
    pub origins: Vec<String>,
    /// `"*"` was listed: any origin.
    pub any: bool,
    pub max_age: Duration,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            origins: Vec::new(),
            any: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl Cors {
    /// May a page from `origin` call the gateway?
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

impl TryFrom<RawCors> for Cors {
    type Error = Problems;

    fn try_from(raw: RawCors) -> Result<Self, Problems> {
        let mut e = Vec::new();
        let d = Cors::default();
        let mut cors = Cors {
            max_age: raw.max_age.map_or(d.max_age, |x| x.0),
            ..d
        };
        for (i, o) in raw.origins.into_iter().enumerate() {
            if o == "*" {
                cors.any = true;
                continue;
            }
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') && !host.contains(' ') => {
                    cors.origins.push(o.trim_end_matches('/').to_string())
                }
                _ => e.push(format!(
                    "cors.origins[{i}]: {o:?} is not an origin (expected scheme://host[:port] such as https://chat.example.com, or \"*\")"
                )),
            }
        }
        if e.is_empty() {
            Ok(cors)
        } else {
            Err(e)
        }
    }
}

/// Whether a listen address is on loopback (then the admin listener needs no token).
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

fn check_listen_addr(addr: &str, path: &str, errors: &mut Problems) {
    if addr.starts_with('/') {
        return; // unix socket path
    }
    if addr.to_socket_addrs().is_err() && addr.parse::<SocketAddr>().is_err() {
        errors.push(format!(
            "{path}: {addr:?} is not a listen address (expected host:port such as 0.0.0.0:4000)"
        ));
    }
}
