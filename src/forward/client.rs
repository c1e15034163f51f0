//! What the upstream leg does with the client's connection while it works:
//! write the answer to it (Pingora's session, h1 or h2, plain or TLS) and
//! watch it (a client that leaves cancels the work).

use super::headers::{AnswerHeaders, Head, Reshaped};
use bytes::Bytes;
use pingora::proxy::Session;
use std::time::Duration;

/// Where the answer goes: Pingora's session, and what every head written to
/// it gets (its request id, the client's own rate limits). Writes fail
/// (`Err(())`) when the client is gone or stopped reading (the session's
/// write timeout).
pub struct Client<'a>(pub &'a mut Session, pub &'a AnswerHeaders);

impl Client<'_> {
    /// Writes the answer's head; `end`: it has no body.
    pub async fn write_head(&mut self, mut head: Head, end: bool) -> Result<(), ()> {
        self.1.apply(&mut head.headers);
        if let Some(r) = &self.1.reshape {
            let out = r.lock().head(head, end);
            return self.write_reshaped(out).await;
        }
        self.head_as_is(head, end).await
    }

    async fn head_as_is(&mut self, head: Head, end: bool) -> Result<(), ()> {
        // Pingora's writes are boxed (here and below): inline, their state
        // would size every future that writes to a client
        Box::pin(self.0.write_response_header(Box::new(head.into()), end))
            .await
            .map_err(drop)
    }

    /// Writes (and flushes) a piece of the body; `end`: the body is complete.
    pub async fn write_body(&mut self, data: Option<Bytes>, end: bool) -> Result<(), ()> {
        if let Some(r) = &self.1.reshape {
            let out = r.lock().body(data, end);
            return self.write_reshaped(out).await;
        }
        self.body_as_is(data, end).await
    }

    async fn body_as_is(&mut self, data: Option<Bytes>, end: bool) -> Result<(), ()> {
        Box::pin(self.0.write_response_body(data, end))
            .await
            .map_err(drop)
    }

    /// Writes what a [`Reshape`] made of a head or a piece of body.
    async fn write_reshaped(&mut self, out: Reshaped) -> Result<(), ()> {
        match out {
            Reshaped::Nothing => Ok(()),
            Reshaped::Head(h, end) => self.head_as_is(h, end).await,
            Reshaped::Body(b, end) if b.is_empty() && !end => Ok(()),
            Reshaped::Body(b, end) => {
                let data = (!b.is_empty()).then_some(b);
                self.body_as_is(data, end).await
            }
            Reshaped::Whole(h, b) => {
                self.head_as_is(h, false).await?;
                self.body_as_is(Some(b), true).await
            }
        }
    }

    /// Resolves when the client closes its connection (or resets its h2
    /// stream). The request body was read whole, so any end of the connection
    /// means the client left; bytes from the client (a pipelined request) are
    /// no end.
    async fn left(&mut self) {
        loop {
            match self.0.as_downstream_mut().read_body_or_idle(true).await {
                Err(_) => return,
                Ok(_) => std::future::pending::<()>().await,
            }
        }
    }
}

/// How long `fut` runs before the client's connection is watched: answers
/// faster than this (the usual JSON call) cost no read of the client's socket.
const CLIENT_WATCH_AFTER: Duration = Duration::from_millis(20);

/// Runs `fut` unless the client goes away first: then `None`, and `fut` is
/// dropped (an upstream call in it is closed). The client is watched from
/// [`CLIENT_WATCH_AFTER`] on (Pingora's shared timer).
pub async fn unless_client_gone<T>(
    client: &mut Client<'_>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    let watch = async {
        pingora::time::sleep(CLIENT_WATCH_AFTER).await;
        // boxed when the watch starts: inline, the read would size every
        // future that waits on the upstream
        Box::pin(client.left()).await
    };
    tokio::select! {
        biased;
        v = &mut fut => Some(v),
        () = watch => None,
    }
}
