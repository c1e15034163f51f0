//! The API listener's application: Pingora's `HttpProxy` (whose
//! `request_filter` serves the understood calls on its own session, see
//! [`super::handle`]) with the client-side limits Pingora's loop does not
//! set by itself:
//! - an idle kept-alive connection waits `timeouts.keepalive` for its next
//!   request, then is closed;
//! - reading one request head takes at most `timeouts.request_head` (plus
//!   `timeouts.keepalive` on a kept-alive connection), however slowly its
//!   bytes come: then the connection is closed;
//! - HTTP/1.1 requests pipelined behind another are answered in order;
//! - every write to the client gives up after `timeouts.client_write`
//!   without progress (Pingora's write timeout), so a client that stops
//!   reading cannot hold its slots, a key or an upstream call.

use super::head::HeadWatch;
use super::Gateway;
use crate::state::State;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The API listener's application (see the module doc).
#[derive(Clone)]
pub struct ApiApp {
    proxy: Arc<HttpProxy<Gateway>>,
    state: Arc<State>,
}

impl ApiApp {
    pub fn new(proxy: HttpProxy<Gateway>, state: Arc<State>) -> ApiApp {
        ApiApp {
            proxy: Arc::new(proxy),
            state,
        }
    }
}

/// A kept-alive connection's mark, carried to its next request's session.
struct KeptAlive;

#[async_trait]
impl HttpServerApp for ApiApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let t = self.state.load().config.timeouts;
        session.set_write_timeout(Some(t.client_write));
        if session.as_http1().is_none() {
            // an h2 stream's head is read already (idle h2 connections: `h2_idle_timeout`)
            return self.proxy.process_new_http(session, shutdown).await;
        }
        let kept_alive = session
            .take_connection_user_context()
            .is_some_and(|c| c.is::<KeptAlive>());
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(t.keepalive.as_secs().max(1)));
        }
        session.set_read_timeout(Some(t.idle));
        // a request sent behind another is answered after it, in order
        session.set_pipelining_enabled(true);
        let head = Arc::new(AtomicBool::new(false));
        session.set_connection_user_context(Some(Box::new(HeadWatch(head.clone()))));
        let deadline = if kept_alive {
            t.request_head.saturating_add(t.keepalive)
        } else {
            t.request_head
        };
        let served = served_within_head_deadline(&self.proxy, session, shutdown, &head, deadline);
        let reused = served.await?;
        let (stream, settings) = reused.consume();
        let mut settings = settings?;
        settings.set_user_context(Box::new(KeptAlive));
        Some(ReusedHttpStream::new(stream, Some(settings)))
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.proxy.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}

/// Serves the session through the proxy; a head not read within `deadline`
/// drops it (the connection closes).
async fn served_within_head_deadline(
    proxy: &Arc<HttpProxy<Gateway>>,
    session: ServerSession,
    shutdown: &ShutdownWatch,
    head: &AtomicBool,
    deadline: Duration,
) -> Option<ReusedHttpStream> {
    let serve = proxy.process_new_http(session, shutdown);
    tokio::pin!(serve);
    tokio::select! {
        biased;
        served = &mut serve => return served,
        () = pingora::time::sleep(deadline) => {}
    }
    if head.load(Ordering::Acquire) {
        serve.await
    } else {
        log::debug!("closing a connection whose request head took over {deadline:?}");
        None
    }
}
