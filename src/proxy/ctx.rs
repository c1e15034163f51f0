//! Per-request context carried through Pingora's phases.

use crate::forward::Outcome;
use crate::keys::{InFlight, Key};
use crate::limits::Caller;
use crate::metrics;
use crate::routes::RouteClass;
use crate::state::Snapshot;
use crate::upstream::Upstream;
use std::sync::Arc;
use std::time::Instant;

/// Counts the request in `switchyard_in_flight_requests` while it lives; the
/// graceful shutdown waits for this gauge to reach zero.
pub struct InFlightRequest;

impl InFlightRequest {
    fn new() -> InFlightRequest {
        metrics::IN_FLIGHT.inc();
        InFlightRequest
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        metrics::IN_FLIGHT.dec();
    }
}

/// Where an opaque-lane request goes.
pub struct OpaqueTarget {
    pub upstream: Arc<Upstream>,
    pub key: Option<Arc<Key>>,
    _key_guard: Option<InFlight>,
}

impl OpaqueTarget {
    pub fn new(upstream: Arc<Upstream>, key: Option<Arc<Key>>) -> OpaqueTarget {
        let guard = key.clone().map(InFlight::new);
        OpaqueTarget {
            upstream,
            key,
            _key_guard: guard,
        }
    }
}

pub struct Ctx {
    pub start: Instant,
    pub snap: Option<Arc<Snapshot>>,
    /// Route class for metrics.
    pub route: RouteClass,
    pub model: Option<String>,
    pub caller: Option<Caller>,
    /// The real client's address (set once the request is past `/health`).
    pub addr: Option<crate::limits::addr::ClientAddr>,
    /// How the call went: the last attempt's upstream and key (logged by
    /// name and public id only), attempts, the status sent, tokens, the
    /// model that served it, the first event's time. The forwarder writes it
    /// in place; the access line, metrics and usage record read it.
    pub outcome: Outcome,
    pub error: Option<&'static str>,
    /// Set when the response broke mid-body and the connection must be closed.
    pub abort: Option<String>,
    pub opaque: Option<OpaqueTarget>,
    /// The request's `Origin`, when `cors` allows it: echoed on the answer.
    pub cors: Option<http::HeaderValue>,
    /// The client's `max_concurrent` slot, held until the request (stream
    /// included) ends.
    pub slot: Option<crate::limits::window::Slot>,
    /// Or its lease in the fleet's store (`strict` mode).
    pub lease: Option<crate::limits::shared::Lease>,
    /// The client's and gateway's rpm and concurrency were passed.
    pub admitted: bool,
    /// Answered from the response cache.
    pub cached: bool,
    /// The outcome's tokens are the estimate (no usage was reported).
    pub estimated: bool,
    /// What the call cost, in picodollars (`prices`; 0 until it settles).
    pub cost: u64,
    /// Added to every answer head: the gateway's request id, the client's limits.
    pub answer: crate::forward::headers::AnswerHeaders,
    _in_flight: InFlightRequest,
}

impl Ctx {
    /// Keeps what an admission holds for the rest of the request.
    pub fn hold(&mut self, a: crate::limits::admit::Admission) {
        self.slot = a.slot;
        self.lease = a.lease;
        self.answer.limits = a.headers;
        self.admitted = true;
    }

    /// Time to first event, for streamed answers.
    pub fn ttft(&self) -> Option<std::time::Duration> {
        self.outcome
            .first_event
            .map(|t| t.saturating_duration_since(self.start))
    }

    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            snap: None,
            route: RouteClass::Other,
            model: None,
            caller: None,
            addr: None,
            outcome: Outcome::default(),
            cost: 0,
            error: None,
            abort: None,
            opaque: None,
            cors: None,
            slot: None,
            lease: None,
            admitted: false,
            cached: false,
            estimated: false,
            answer: crate::forward::headers::AnswerHeaders::new(),
            _in_flight: InFlightRequest::new(),
        }
    }

    /// The gateway's request id (what its own answers carry), for logs.
    pub fn request_id(&self) -> &str {
        self.answer
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The client's configured name, `-` for none.
    pub fn client_name(&self) -> &str {
        match (&self.snap, &self.caller) {
            (Some(s), Some(c)) => crate::limits::caller_name(&s.config, c),
            _ => "-",
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
