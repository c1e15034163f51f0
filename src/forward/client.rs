//! What the upstream leg does with the client's connection while it works:
//! write the answer to it (Pingora's session, or a detached stream's own
//! connection) and watch it (a client that leaves cancels the work).

use super::headers::{self, Head};
use super::own::OwnConn;
use crate::upstream::h1;
use bytes::Bytes;
use pingora::proxy::Session;
use std::time::Duration;

/// Where the answer goes. Writes fail (`Err(())`) only when the client is gone.
pub enum Client<'a> {
    /// Pingora's session: every answer but a detached stream.
    Session(&'a mut Session),
    /// A stream's own connection, taken out of Pingora's session.
    Own(&'a mut OwnConn),
}

impl Client<'_> {
    /// Writes the answer's head; `end`: it has no body.
    pub async fn write_head(&mut self, head: Head, end: bool) -> Result<(), ()> {
        // Pingora's writes are boxed (here and below): inline, their state
        // would size every future that writes to a client, the gateway's own
        // connections' included
        match self {
            Client::Session(s) => Box::pin(s.write_response_header(Box::new(head.into()), end))
                .await
                .map_err(drop),
            Client::Own(c) => c.write_head(head, end).await.map_err(drop),
        }
    }

    /// Writes the head of the upstream answer `up` relayed unchanged from
    /// `upstream` (CORS headers for a page from `cors`). A connection the
    /// gateway writes itself gets the upstream's lines as they came, with no
    /// header map built; Pingora's session gets [`headers::client_header`].
    pub async fn write_relayed_head(
        &mut self,
        up: &h1::Head,
        upstream: &str,
        cors: Option<&http::HeaderValue>,
    ) -> Result<(), ()> {
        match self {
            Client::Session(_) => {
                let mut head = headers::client_header(up, upstream, None);
                if let Some(origin) = cors {
                    headers::cors_headers(&mut head.headers, origin);
                }
                Box::pin(self.write_head(head, false)).await
            }
            Client::Own(c) => {
                let length = up.get("content-length").map(str::as_bytes);
                let wire = headers::relayed_lines(up, upstream, cors, |lines| {
                    c.head_wire(up.status, length, lines, false)
                });
                c.write_wire(wire, false).await.map_err(drop)
            }
        }
    }

    /// Writes (and flushes) a piece of the body; `end`: the body is complete.
    pub async fn write_body(&mut self, data: Option<Bytes>, end: bool) -> Result<(), ()> {
        match self {
            Client::Session(s) => Box::pin(s.write_response_body(data, end))
                .await
                .map_err(drop),
            Client::Own(c) => c.write_body(data, end).await.map_err(drop),
        }
    }

    /// Resolves when the client closes its connection. The request body was
    /// read whole, so any end of the connection means the client left; bytes
    /// from the client (a pipelined request) are no end.
    async fn left(&mut self) {
        match self {
            Client::Session(s) => loop {
                match s.as_downstream_mut().read_body_or_idle(true).await {
                    Err(_) => return,
                    Ok(_) => std::future::pending::<()>().await,
                }
            },
            Client::Own(c) => c.closed().await,
        }
    }
}

/// How long `fut` runs before Pingora's session is watched: answers faster
/// than this (the usual JSON call) cost no read of the client's socket there.
const CLIENT_WATCH_AFTER: Duration = Duration::from_millis(20);

/// Runs `fut` unless the client goes away first: then `None`, and `fut` is
/// dropped (an upstream call in it is closed).
///
/// The gateway's own connection is watched at once: its request was read
/// whole, usually in a read that drained the socket, so the watch registers
/// for readability without a read and costs no timer. Pingora's session is
/// watched from [`CLIENT_WATCH_AFTER`] on (Pingora's shared timer).
pub async fn unless_client_gone<T>(
    client: &mut Client<'_>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    let watch = async {
        match client {
            Client::Own(c) => c.closed().await,
            Client::Session(_) => {
                pingora::time::sleep(CLIENT_WATCH_AFTER).await;
                // boxed when the watch starts: inline, the read would size every
                // future that waits on the upstream
                Box::pin(client.left()).await
            }
        }
    };
    tokio::select! {
        biased;
        v = &mut fut => Some(v),
        () = watch => None,
    }
}
