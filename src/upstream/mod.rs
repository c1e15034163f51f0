//! Upstreams at run time: where each one is ([`Target`]), its live key pool,
//! its idle connections ([`pool`]), the HTTP/1 reader for its answers ([`h1`]),
//! and its per-call metrics. Built from an [`UpstreamConf`]; the snapshot owns
//! them.

pub mod h1;
pub mod pool;

use crate::config::{UpstreamConf, UpstreamKind};
use crate::keys::{Key, KeyPool};
use crate::metrics::{CallCounters, CallOutcome, TokenCounters};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a DNS answer for an upstream host is reused.
const DNS_TTL: Duration = Duration::from_secs(60);

/// How long an idle upstream connection stays pooled.
pub const POOL_IDLE: Duration = Duration::from_secs(60);

/// Where an upstream's HTTP server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    /// Host name (SNI, DNS) or IP literal.
    pub host: String,
    pub port: u16,
    /// Host header value.
    pub host_header: String,
    /// Path prefix of the OpenAI-style API (`/v1`, `/inference`).
    pub base_path: String,
}

impl Target {
    /// The target of `conf`; a demo upstream is the built-in server at `demo_addr`
    /// (`None` when it is not running: an error).
    pub fn of(conf: &UpstreamConf, demo_addr: Option<SocketAddr>) -> Option<Target> {
        Some(match &conf.kind {
            UpstreamKind::Http(b) => Target {
                tls: b.tls,
                host: b.host.clone(),
                port: b.port,
                host_header: b.host_header(),
                base_path: b.path.clone(),
            },
            UpstreamKind::Demo => {
                let addr = demo_addr?;
                Target {
                    tls: false,
                    host: addr.ip().to_string(),
                    port: addr.port(),
                    host_header: addr.to_string(),
                    base_path: "/v1".into(),
                }
            }
        })
    }
}

/// An upstream with its live key pool.
pub struct Upstream {
    pub conf: UpstreamConf,
    pub target: Target,
    pub keys: KeyPool,
    /// Idle connections of the understood lane.
    pub pool: pool::ConnPool,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
    /// Upstream-call counters for calls made without a key.
    keyless_calls: CallCounters,
    pub tokens: TokenCounters,
}

impl Upstream {
    /// A fresh upstream (keys numbered from 1 in config order, no state yet)
    /// keeping at most `pool_size` idle connections.
    pub fn new(conf: UpstreamConf, target: Target, pool_size: usize) -> Upstream {
        let keys = conf
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Arc::new(Key::new(&conf.name, i + 1, k.secret.clone(), k.weight)))
            .collect();
        Upstream {
            keys: KeyPool::new(conf.key_strategy, keys),
            conf,
            target,
            pool: pool::ConnPool::new(pool_size, POOL_IDLE),
            resolved: Mutex::new(None),
            keyless_calls: CallCounters::default(),
            tokens: TokenCounters::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.conf.name
    }

    /// Counts one call to this upstream in `switchyard_upstream_requests_total`.
    pub fn count_call(&self, key: Option<&Key>, outcome: CallOutcome) {
        match key {
            Some(k) => k.count_call(self.name(), outcome),
            None => self.keyless_calls.inc(self.name(), "-", outcome),
        }
    }

    /// The socket address to connect to, resolving (and caching) host names.
    pub async fn addr(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.target.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.target.port));
        }
        if let Some((at, addr)) = *self.resolved.lock() {
            if at.elapsed() < DNS_TTL {
                return Ok(addr);
            }
        }
        let mut addrs =
            tokio::net::lookup_host((self.target.host.as_str(), self.target.port)).await?;
        let addr = addrs.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "host name has no address")
        })?;
        *self.resolved.lock() = Some((Instant::now(), addr));
        Ok(addr)
    }
}
