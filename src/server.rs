//! Builds the Pingora server from a validated [`Config`] and runs it.
//!
//! Shutdown: SIGINT exits at once. SIGTERM stops the listeners, then exits as
//! soon as no request is in flight (streams included), or after
//! `server.grace_period` at the latest. SIGQUIT (a graceful upgrade) writes
//! the key state, hands the listening sockets to the new process, then
//! drains the same way.

use crate::admin::AdminApp;
use crate::config::Listener;
use crate::config::{Config, UpstreamKind};
use crate::forward::Forwarder;
use crate::proxy::app::ApiApp;
use crate::proxy::preamble::{PreambleApp, PreambleReader};
use crate::proxy::Gateway;
use crate::state::{Snapshot, State};
use pingora::connectors::ConnectorOptions;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the demo upstream: {0}")]
    Demo(std::io::Error),
    #[error(transparent)]
    Snapshot(#[from] crate::state::SnapshotError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("listen {addr}: TLS setup failed: {detail}")]
    Tls { addr: String, detail: String },
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("{0}")]
    Redis(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Write buffer of each client connection (bytes): a typical JSON answer's
/// head and body (about 1 KiB) leave in one send; a larger answer costs a
/// second send. It lives as long as the connection, an open stream's
/// included, so it is not larger (it was 16 KiB, then 4 KiB).
const CLIENT_WRITE_BUFFER: usize = 2 << 10;
/// Read buffer of each client connection: none. Pingora reads request heads
/// into its own 4 KiB buffer and bodies into its body buffer, so a second
/// 64 KiB buffer per connection (its default) would only sit idle for as
/// long as a stream lasts.
const CLIENT_READ_BUFFER: usize = 0;

/// Command-line switches handed to Pingora. (`-d` is not among them: `main`
/// daemonizes before any thread starts, see [`daemonize`].)
#[derive(Debug, Default, Clone, Copy)]
pub struct RunFlags {
    pub upgrade: bool,
}

fn server_conf(cfg: &Config) -> ServerConf {
    let s = &cfg.server;
    let mut conf = ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(s.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: s.keepalive_pool_size,
        error_log: s.error_log.clone(),
        ..ServerConf::default()
    };
    conf.pid_file = s
        .pid_file
        .clone()
        .unwrap_or_else(|| "/tmp/switchyard.pid".into());
    conf.upgrade_sock = s
        .upgrade_sock
        .clone()
        .unwrap_or_else(|| "/tmp/switchyard_upgrade.sock".into());
    conf
}

/// `server.pid_file`, or its default.
pub fn pid_file(cfg: &Config) -> std::path::PathBuf {
    cfg.server
        .pid_file
        .clone()
        .unwrap_or_else(|| "/tmp/switchyard.pid".into())
        .into()
}

/// Builds every service; returns the server ready to `run`, with its signal watch.
pub fn build(cfg: Config, flags: RunFlags) -> Result<(Server, SignalWatch), StartError> {
    crate::metrics::init();
    let _ = crate::clock::uptime(); // uptime counts from here
    let demo_addr = if cfg.upstreams.iter().any(|u| u.kind == UpstreamKind::Demo) {
        Some(crate::demo::start().map_err(StartError::Demo)?)
    } else {
        None
    };
    if !flags.upgrade {
        check_listen(&cfg)?;
    }
    let listen = cfg.listen.clone();
    let source = cfg.source.clone();
    let state_path = cfg.state_path.clone();
    let usage_limits = (cfg.usage_retention, cfg.usage_max_rows);
    let admin_listen = cfg.admin.listen.clone();
    let conf = server_conf(&cfg);
    let redis = cfg.redis.clone();
    if let Some(r) = &redis {
        match crate::fleet::check(r) {
            Err(e) => return Err(StartError::Redis(e)),
            Ok(Some(why)) => log::warn!(
                "state.redis {} is not reachable ({why}): starting on this instance's key state; it is tried again every second",
                r.shown()
            ),
            Ok(None) => {}
        }
    }
    let snapshot = Snapshot::build(cfg, demo_addr)?;
    let mut state = State::new(snapshot, demo_addr);
    state.config_path = source;
    if let Some(dir) = &state_path {
        state.store = Some(Arc::new(crate::store::Store::open(dir)?));
    }
    // usage records: beside the key state, or in memory without a state path
    if let Err(e) = crate::store::usage::UsageLog::install(
        state_path.as_deref(),
        usage_limits.0,
        usage_limits.1,
    ) {
        log::error!("usage store: cannot open it ({e}); usage is not recorded");
    }
    let state = Arc::new(state);
    state.open_tenants();
    state.spawn_flusher();
    if state
        .load()
        .upstreams
        .iter()
        .any(|u| u.conf.health.path.is_some())
    {
        state.spawn_health_checks();
    }
    crate::forward::announced::spawn(state.clone());
    if let Some(r) = redis {
        crate::fleet::start(r, state.clone());
    }
    let signals = spawn_signal_thread(state.clone())?;
    STATE.get_or_init(|| state.clone());

    let opt = Opt {
        upgrade: flags.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if flags.upgrade {
        // `serve -u -d`: started; the old process's sockets come next
        crate::daemon::ready();
    }
    server.bootstrap();
    // after the sockets: an old process wrote its key state on SIGQUIT
    state.restore_from_store();
    let sconf = server.configuration.clone();

    let forwarder = Arc::new(Forwarder::new(Some(ConnectorOptions::from_server_conf(
        &sconf,
    ))));
    let gateway = Gateway {
        state: state.clone(),
        forwarder,
    };
    let mut proxy = pingora::proxy::HttpProxy::new(gateway, sconf.clone());
    proxy.handle_init_modules();
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(state.load().config.timeouts.keepalive);
    proxy.server_options = Some(options);
    let app = ApiApp::new(proxy, state.clone());
    let (framed, plain): (Vec<&Listener>, Vec<&Listener>) =
        listen.iter().partition(|l| l.proxy_protocol);
    if !framed.is_empty() {
        // listeners whose connections may start with a PROXY protocol preamble
        let reader = PreambleApp {
            inner: Arc::new(app.clone()),
            state: state.clone(),
        };
        let mut svc = Service::new("switchyard-api-proxy-protocol".into(), reader);
        add_listeners(&mut svc, &framed)?;
        svc.endpoints()
            .set_pre_tls_callback(Arc::new(PreambleReader {
                state: state.clone(),
            }));
        server.add_service(svc);
    }
    if !plain.is_empty() {
        let mut api = Service::new("switchyard-api".into(), app);
        add_listeners(&mut api, &plain)?;
        server.add_service(api);
    }

    if let Some(addr) = admin_listen {
        let prober = Forwarder::new(Some(ConnectorOptions::from_server_conf(&sconf)));
        let mut admin = Service::new("switchyard-admin".to_string(), AdminApp { state, prober });
        admin.add_tcp(&addr);
        server.add_service(admin);
    }
    Ok((server, signals))
}

/// Adds the API listeners to a service: TLS ones with their certificate,
/// Unix sockets, plain TCP with a write buffer that holds a whole typical
/// answer.
fn add_listeners<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    svc: &mut Service<A>,
    listeners: &[&Listener],
) -> Result<(), StartError> {
    for l in listeners {
        match &l.tls {
            Some((cert, key)) => {
                let settings = crate::tls::Certificate::load(cert, key)
                    .and_then(|c| c.settings())
                    .map_err(|detail| StartError::Tls {
                        addr: l.addr.clone(),
                        detail,
                    })?;
                svc.add_tls_with_settings(&l.addr, None, settings);
            }
            None if l.addr.starts_with('/') => svc.add_uds(&l.addr, None),
            // A write buffer that holds a whole typical answer (Pingora's default is
            // one MSS): the head and body, or a chunk's size line, data and CRLF,
            // leave in one send. Pingora still flushes every chunked/SSE write.
            None => svc.add_listener(ListenerConfig::tcp(&l.addr).l4_buffer(
                L4BufferSettings::new(CLIENT_READ_BUFFER, CLIENT_WRITE_BUFFER),
            )),
        }
    }
    Ok(())
}

/// Fails at once, naming the address, when a listen address is taken (Pingora
/// itself would retry for a while, then panic without exiting). With `-u` the
/// sockets come from the running instance instead.
fn check_listen(cfg: &Config) -> Result<(), StartError> {
    let addrs = cfg
        .listen
        .iter()
        .map(|l| l.addr.as_str())
        .chain(cfg.admin.listen.as_deref())
        .filter(|a| !a.starts_with('/'));
    for addr in addrs {
        if let Err(source) = std::net::TcpListener::bind(addr) {
            return Err(StartError::Listen {
                addr: addr.to_string(),
                source,
            });
        }
    }
    Ok(())
}

/// The running gateway's state, for the shutdown path (final store flush).
static STATE: std::sync::OnceLock<Arc<State>> = std::sync::OnceLock::new();

/// Writes pending key state before the process exits.
pub fn flush_state() {
    if let Some(state) = STATE.get() {
        state.flush_store();
    }
    if let Some(usage) = crate::store::usage::log() {
        usage.flush();
    }
}

/// Signals, registered when the server is built (before any listener opens, so
/// none can arrive unhandled): SIGHUP reloads the config, SIGINT flushes state
/// and exits at once, SIGTERM/SIGQUIT go to Pingora (graceful stop / upgrade).
fn spawn_signal_thread(state: Arc<State>) -> Result<SignalWatch, StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Signals)?;
    let (mut hup, mut int, mut term, mut quit) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::hangup())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::quit())?,
            ))
        })
        .map_err(StartError::Signals)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("switchyard-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = hup.recv() => {
                            log::info!("SIGHUP: reloading the config");
                            if let Err(e) = state.reload() {
                                log::error!("reload rejected, the previous config keeps serving:\n{e}");
                            }
                        }
                        _ = int.recv() => {
                            log::info!("SIGINT: exiting now");
                            flush_state();
                            std::process::exit(0);
                        }
                        _ = term.recv() => { let _ = tx.send(ShutdownSignal::GracefulTerminate); }
                        _ = quit.recv() => {
                            // the new process reads the key state once it has the
                            // sockets: write it now, and never again from here
                            flush_state();
                            crate::state::stop_writing_key_state();
                            let _ = tx.send(ShutdownSignal::GracefulUpgrade);
                        }
                    }
                }
            })
        })
        .map_err(StartError::Signals)?;
    Ok(SignalWatch(tokio::sync::Mutex::new(rx)))
}

/// Hands SIGTERM/SIGQUIT from the signal thread to Pingora's main loop.
pub struct SignalWatch(tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<ShutdownSignal>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        match self.0.lock().await.recv().await {
            Some(s) => s,
            None => ShutdownSignal::FastShutdown,
        }
    }
}

/// Runs until a signal stops the server.
pub fn run((server, signals): (Server, SignalWatch), grace: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("switchyard-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                // SIGTERM; or after SIGQUIT, once the new process has the sockets
                Ok(ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted) => {
                    drain_then_exit(grace);
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        })
        .ok();
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(signals),
    });
    flush_state();
}

/// Listeners are closed: wait until no request is in flight, then exit. If the
/// grace period runs out first, Pingora's own shutdown takes over.
fn drain_then_exit(grace: Duration) {
    let start = std::time::Instant::now();
    let mut quiet = 0;
    while start.elapsed() < grace {
        if crate::metrics::IN_FLIGHT.get() <= 0 {
            quiet += 1;
            if quiet >= 3 {
                log::info!(
                    "shutting down: no request in flight after {:?}; exiting",
                    start.elapsed()
                );
                flush_state();
                std::process::exit(0);
            }
        } else {
            quiet = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::warn!("shutting down: grace period over with requests still in flight");
}
