//! What the upstream leg does with the client's connection while it works:
//! watch it (a client that leaves cancels the work) and end a stream that
//! already reached it with an error event.

use super::call::RelayEnd;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::proxy::Session;
use std::time::Duration;

/// Ends a stream that already reached the client with `data: {"error": ...}`
/// and no `[DONE]`, so clients see an error rather than a clean finish.
pub async fn end_with_error_event(session: &mut Session, e: &GatewayError) -> RelayEnd {
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(&e.body());
    ev.extend_from_slice(b"\n\n");
    let _ = session
        .write_response_body(Some(Bytes::from(ev)), false)
        .await;
    let _ = session.write_response_body(None, true).await;
    RelayEnd::ErrorEvent(e.label())
}

/// How long `fut` runs before the client's connection is watched: answers
/// faster than this (the usual JSON call) cost no extra read of the client socket.
const CLIENT_WATCH_AFTER: Duration = Duration::from_millis(20);

/// Runs `fut` unless the client goes away first: then `None`, and `fut` is
/// dropped (an upstream call in it is closed). The request body was read
/// whole, so any end of the client's connection means it left. The client is
/// watched from [`CLIENT_WATCH_AFTER`] on (Pingora's cheap shared timer).
pub async fn unless_client_gone<T>(
    session: &mut Session,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    let watch = async {
        pingora::time::sleep(CLIENT_WATCH_AFTER).await;
        loop {
            match session.as_downstream_mut().read_body_or_idle(true).await {
                Err(_) => return,
                // bytes from the client (a pipelined request): stop watching
                Ok(_) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        biased;
        v = &mut fut => Some(v),
        () = watch => None,
    }
}
