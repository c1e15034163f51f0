//! The mark that ends a request head's deadline ([`super::app`]): put into
//! the session's connection context before Pingora reads the head, set by
//! the proxy once the head is in.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared with the connection's deadline: `true` once the head is read.
pub struct HeadWatch(pub Arc<AtomicBool>);

/// Called by the proxy (`on_connection_reuse`) with the connection context
/// [`super::app::ApiApp`] set: the request's head has been read.
pub fn head_read(context: Box<dyn Any + Send + Sync>) {
    if let Ok(watch) = context.downcast::<HeadWatch>() {
        watch.0.store(true, Ordering::Release);
    }
}
