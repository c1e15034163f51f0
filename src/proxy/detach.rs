//! Detached streams: a streamed answer leaves Pingora's request handling.
//!
//! A stream can stay open for minutes, mostly waiting between events. Served
//! inside `request_filter`, it would hold Pingora's whole per-request state
//! (the connection's task, its session futures, the request head's 4 KiB
//! buffer: about 20 KB) for all that time. So once an HTTP/1.1 stream request
//! is read whole and admitted, its connection is taken out of the session
//! ([`take`]), the request runs in a task of its own that writes the answer
//! to the bare connection ([`OwnConn`]), and Pingora's handling of the
//! request ends at once. After a complete answer the connection goes back to
//! Pingora for the client's next request ([`Reentry::resume`]): keep-alive
//! works as before.
//!
//! What stays attached: HTTP/2 and HTTP/1.0 clients, and every JSON answer.
//! Requests the gateway's own lane reads (`proxy::lane`, plain TCP) never
//! enter Pingora's session: detaching is for the streams Pingora reads (TLS
//! listeners, connections the lane handed over).

use crate::forward::own::OwnConn;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use std::sync::{Arc, OnceLock, Weak};

/// The way back into Pingora for a detached stream's connection: the API
/// service's application `A` (Pingora's proxy) and its shutdown signal, both
/// set once the service runs.
pub struct Reentry<A> {
    app: OnceLock<Weak<A>>,
    shutdown: OnceLock<ShutdownWatch>,
}

impl<A> Default for Reentry<A> {
    fn default() -> Self {
        Reentry {
            app: OnceLock::new(),
            shutdown: OnceLock::new(),
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> Reentry<A> {
    /// Whether streams can be detached: the API service runs (it set both).
    fn ready(&self) -> bool {
        self.app.get().is_some() && self.shutdown.get().is_some()
    }

    /// Serves the client's next requests on `stream` as Pingora serves any
    /// kept-alive connection; closes it instead when the server is stopping.
    pub async fn resume(&self, mut stream: Stream) {
        let app = self.app.get().and_then(Weak::upgrade);
        match (app, self.shutdown.get()) {
            (Some(app), Some(shutdown)) if !*shutdown.borrow() => {
                // HTTP/1 connections are served to their end inside
                let _ = app.process_new(stream, shutdown).await;
            }
            _ => pingora::protocols::Shutdown::shutdown(&mut *stream).await,
        }
    }
}

/// A way to serve a connection before (and instead of) Pingora's HTTP
/// handling: see `proxy::lane`.
#[async_trait]
pub trait Lane: Send + Sync {
    /// Serves the connection's requests while they are its kind. Returns the
    /// connection for Pingora, any bytes it read unconsumed and readable
    /// again, or `None` when the connection is done.
    async fn serve(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream>;
}

/// The API listener's application: Pingora's proxy, behind the gateway's own
/// lane (when there is one), plus what a detached stream needs to give its
/// connection back to it.
pub struct ApiApp<A> {
    proxy: Arc<A>,
    reentry: Arc<Reentry<A>>,
    lane: Option<Arc<dyn Lane>>,
}

impl<A: ServerApp + Send + Sync + 'static> ApiApp<A> {
    /// Wraps `proxy`, whose gateway holds `reentry`; connections go to
    /// `lane` first.
    pub fn new(proxy: A, reentry: Arc<Reentry<A>>, lane: Option<Arc<dyn Lane>>) -> ApiApp<A> {
        let proxy = Arc::new(proxy);
        let _ = reentry.app.set(Arc::downgrade(&proxy));
        ApiApp {
            proxy,
            reentry,
            lane,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ApiApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if self.reentry.shutdown.get().is_none() {
            let _ = self.reentry.shutdown.set(shutdown.clone());
        }
        let stream = match &self.lane {
            Some(lane) => lane.serve(stream, shutdown).await?,
            None => stream,
        };
        self.proxy.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}

/// What [`take`] did with the session.
pub enum Taken {
    /// The request stays in Pingora's session (not HTTP/1.1, or not ready).
    No,
    /// The connection, now the stream's own; the session holds a stand-in.
    Own(OwnConn),
    /// The connection failed while it was taken out (the client is gone).
    Lost,
}

/// Takes the client's connection out of `session` when its request (read
/// whole) can be answered on the bare connection: HTTP/1.1, nothing written
/// yet. The session is left with a closed stand-in that Pingora finishes
/// without reusing; the caller must not touch the request in it again.
pub async fn take<A: ServerApp + Send + Sync + 'static>(
    session: &mut Session,
    reentry: &Reentry<A>,
) -> Taken {
    let fits = |s: &mut ServerSession| match s {
        ServerSession::H1(v1) => {
            v1.req_header().version == http::Version::HTTP_11
                && v1.response_written().is_none()
                && v1.is_body_done()
        }
        _ => false,
    };
    if !reentry.ready() || !fits(&mut session.downstream_session) {
        return Taken::No;
    }
    let mut stand_in = ServerSession::new_http1(Box::new(std::io::Cursor::new(Vec::new())));
    stand_in.set_keepalive(None);
    let mut v1 = match std::mem::replace(&mut *session.downstream_session, stand_in) {
        ServerSession::H1(v1) => v1,
        other => {
            *session.downstream_session = other;
            return Taken::No;
        }
    };
    if !v1.will_keepalive() {
        return Taken::Own(OwnConn::new(v1.into_inner(), false));
    }
    // bytes past the body (a pipelined request) come back instead of being
    // dropped with the connection; their presence rules out reuse
    v1.set_pipelining_enabled(true);
    match v1.reuse().await {
        Ok(Some(r)) => {
            let (stream, extra) = r.into_parts();
            Taken::Own(OwnConn::new(stream, extra.is_none_or(|b| b.is_empty())))
        }
        _ => Taken::Lost,
    }
}
