//! Upstreams at run time: where each one is ([`Target`]), its live key pool,
//! the peer its connections are made to (pooled by Pingora's connector), and
//! its per-call metrics. Built from an [`UpstreamConf`]; the snapshot owns
//! them.

pub mod health;

use crate::config::{UpstreamConf, UpstreamKind};
use crate::keys::{Key, KeyPool};
use crate::metrics::{CallCounters, CallOutcome};
use parking_lot::Mutex;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a DNS answer for an upstream host is reused.
const DNS_TTL: Duration = Duration::from_secs(60);

/// How long an idle upstream connection stays pooled.
pub const POOL_IDLE: Duration = Duration::from_secs(60);

/// Concurrent streams the gateway opens on one HTTP/2 upstream connection.
const H2_STREAMS: usize = 100;

/// `tls.ca_file` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("tls.ca_file {}: {detail}", .file.display())]
pub struct CaFileError {
    pub file: PathBuf,
    pub detail: String,
}

/// The certificates of a PEM file.
fn load_ca(file: &Path) -> Result<CaType, CaFileError> {
    let err = |detail: String| CaFileError {
        file: file.to_path_buf(),
        detail,
    };
    let pem = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs.into_boxed_slice())
}

/// The header carrying `secret` to `conf`'s upstream (marked sensitive):
/// `api-key` for Azure, `x-api-key` for Anthropic, else `Authorization: Bearer`; `None` when the key
/// cannot be a header value.
pub fn credential(
    conf: &UpstreamConf,
    secret: &str,
) -> Option<(http::HeaderName, http::HeaderValue)> {
    let plain = |name| {
        Some((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(secret).ok()?,
        ))
    };
    let (name, mut value) = if conf.azure.is_some() {
        plain("api-key")?
    } else if conf.anthropic {
        plain("x-api-key")?
    } else {
        let bearer = format!("Bearer {secret}");
        (
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&bearer).ok()?,
        )
    };
    value.set_sensitive(true);
    Some((name, value))
}

/// The `anthropic-version` sent to a `kind: anthropic` upstream when the
/// client named none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

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
    /// The name's number for usage records (`store::names`).
    pub name_id: u32,
    pub target: Target,
    /// CAs trusted for this upstream's certificate (`tls.ca_file`); `None`: the system's.
    pub ca: Option<Arc<CaType>>,
    pub keys: KeyPool,
    /// The pool group of this upstream's connections (the peer's
    /// `group_key`): a new one leaves every idle connection unused.
    generation: std::sync::atomic::AtomicU64,
    /// Taken around taking an HTTP/2 session: Pingora's pool lends a
    /// connection out while it opens a stream on it, and callers that come
    /// meanwhile would each open a connection of their own.
    pub h2_turn: tokio::sync::Mutex<()>,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
    /// Upstream-call counters for calls made without a key.
    keyless_calls: CallCounters,
    /// Circuit breaker and active-check state.
    pub health: health::Health,
    /// The provider's limits kept here and this upstream's pacing.
    pub limits: Limits,
}

/// An upstream's own limits (`rpm`, `tpm`, `max_concurrent`,
/// `model_min_interval`), their state kept across reloads that keep them.
#[derive(Default)]
pub struct Limits {
    pub rpm: Option<Arc<crate::limits::window::RequestWindow>>,
    pub tpm: Option<Arc<crate::limits::tokens::TokenWindow>>,
    pub gate: Option<Arc<crate::limits::gate::Gate>>,
    pub pacer: Option<Arc<crate::limits::pace::Pacer>>,
}

impl Limits {
    /// The limits of `conf`; `pacing` is the gateway's `limits.model_min_interval`.
    pub fn of(conf: &UpstreamConf, pacing: Option<Duration>) -> Limits {
        use crate::limits::gate;
        use crate::limits::pace;
        use crate::limits::tokens;
        use crate::limits::window;
        let name = &conf.name;
        Limits {
            rpm: conf
                .rpm
                .map(|r| window::named(&format!("upstream {name}"), r)),
            tpm: conf
                .tpm
                .map(|t| tokens::named(&format!("upstream {name}"), t)),
            gate: conf.max_concurrent.map(|m| {
                let what = format!("upstreams[{name}].max_concurrent");
                gate::named(&what, &what, m)
            }),
            pacer: conf
                .model_min_interval
                .unwrap_or(pacing)
                .map(|d| pace::named(&format!("upstream {name}"), d)),
        }
    }

    /// Counts a call of `tokens` (estimated) against `rpm` and `tpm`: `Ok`
    /// with the tpm charge to correct later, or `Err(ms)` until both have
    /// room (`u64::MAX`: the call is larger than the whole `tpm`). Nothing is
    /// counted when refused.
    pub fn admit(
        &self,
        now_ms: u64,
        tokens: u64,
    ) -> Result<Option<crate::limits::tokens::Charge>, u64> {
        use crate::limits::tokens::Refusal;
        if let Some(t) = &self.tpm {
            match t.check(now_ms, tokens) {
                Ok(()) => {}
                Err(Refusal::Wait(ms)) => return Err(ms),
                Err(Refusal::TooLarge) => return Err(u64::MAX),
            }
        }
        if let Some(r) = &self.rpm {
            r.admit(now_ms)?;
        }
        Ok(self.tpm.as_ref().map(|t| t.force(now_ms, tokens)))
    }
}

impl Upstream {
    /// A fresh upstream (keys numbered from 1 in config order, no state yet)
    /// Fails when `tls.ca_file`
    /// cannot be read as PEM certificates.
    pub fn new(conf: UpstreamConf, target: Target) -> Result<Upstream, CaFileError> {
        let ca = match &conf.ca_file {
            None => None,
            Some(f) => Some(Arc::new(load_ca(f)?)),
        };
        let keys = conf
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut key = Key::new(&conf.name, i + 1, k.secret.clone(), k.weight);
                key.gate = k.max_concurrent.map(|m| {
                    let what = format!("upstreams[{}].keys[{i}].max_concurrent", conf.name);
                    crate::limits::gate::named(&format!("key {}", key.fingerprint), &what, m)
                });
                Arc::new(key)
            })
            .collect();
        let health = health::Health::new(
            &conf.name,
            conf.health.failures,
            conf.health.interval.as_millis() as u64,
        );
        Ok(Upstream {
            keys: KeyPool::new(conf.key_strategy, keys),
            name_id: crate::store::names::id(&conf.name),
            conf,
            target,
            ca,
            generation: std::sync::atomic::AtomicU64::new(0),
            h2_turn: tokio::sync::Mutex::new(()),
            resolved: Mutex::new(None),
            keyless_calls: CallCounters::default(),
            health,
            limits: Limits::default(),
        })
    }

    /// A peer for a connection to this upstream at `addr`: TLS with
    /// verification on (certificate and host name), against `tls.ca_file`
    /// when set; HTTP/2 with `http2: true` (ALPN on TLS, prior knowledge on
    /// plain TCP), many streams on one connection.
    pub fn peer(&self, addr: SocketAddr, connect: Duration) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, self.target.tls, self.target.host.clone());
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
        peer.options.ca = self.ca.clone();
        peer.group_key = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        if self.conf.http2 {
            peer.options.alpn = if self.target.tls {
                pingora::protocols::ALPN::H2H1
            } else {
                pingora::protocols::ALPN::H2
            };
            peer.options.max_h2_streams = H2_STREAMS;
        }
        peer
    }

    /// Leaves this upstream's idle pooled connections unused (they close at
    /// their idle timeout): one of them was found dead.
    pub fn retire_idle_connections(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// One active health check (`health.path`, with a usable key), through
    /// `pingora-load-balancing`'s HTTP check: a 200 within `timeout` passes.
    /// Records the outcome on [`Upstream::health`]; no-op without a path.
    pub async fn check_health(&self, timeout: Duration) {
        use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
        let Some(path) = &self.conf.health.path else {
            return;
        };
        let addr = match self.addr().await {
            Ok(a) => a,
            Err(e) => return self.health.check_failed(&format!("cannot resolve: {e}")),
        };
        let Ok(backend) = pingora::lb::Backend::new(&addr.to_string()) else {
            return self.health.check_failed("bad address");
        };
        let mut hc = HttpHealthCheck::new(&self.target.host, self.target.tls);
        let uri = format!("{}{path}", self.target.base_path);
        if let Ok(req) = pingora::http::RequestHeader::build("GET", uri.as_bytes(), None) {
            hc.req = req;
        }
        let _ = hc
            .req
            .insert_header("Host", self.target.host_header.as_str());
        let key = match self.keys.pick("", &[], crate::clock::now_ms()) {
            crate::keys::Pick::Key(_, k) => Some(k),
            crate::keys::Pick::None { .. } => self.keys.keys().first().cloned(),
        };
        if let Some((name, value)) = key.and_then(|k| credential(&self.conf, k.secret())) {
            let _ = hc.req.insert_header(name, value);
        }
        if self.conf.anthropic {
            let _ = hc.req.insert_header("anthropic-version", ANTHROPIC_VERSION);
        }
        hc.peer_template.options.ca = self.ca.clone();
        hc.peer_template.options.connection_timeout = Some(timeout);
        hc.peer_template.options.read_timeout = Some(timeout);
        match pingora::time::timeout(timeout, hc.check(&backend)).await {
            Ok(Ok(())) => self.health.check_passed(),
            Ok(Err(e)) => self.health.check_failed(e.etype().as_str()),
            Err(_) => self.health.check_failed("no answer in time"),
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
