//! What one request asks of the upstream leg ([`Call`]), where its answer
//! goes ([`Downstream`]) and how it ended ([`RelayEnd`], [`Outcome`]).

use super::client::Client;
use super::shape;
use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::keys::Key;
use crate::routes::Api;
use crate::sse::aggregate::Aggregator;
use crate::sse::seam::Seam;
use crate::upstream::Upstream;
use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// What one request asks of the upstream leg.
pub struct Call {
    /// `POST` for the understood lane; the client's method for other routed bodies.
    pub method: http::Method,
    /// Path after `/v1`, e.g. `/chat/completions`.
    pub suffix: Cow<'static, str>,
    pub api: Api,
    /// The body's content type as sent upstream (`application/json`, or the
    /// client's multipart type with its boundary).
    pub content_type: Cow<'static, str>,
    /// Send to this upstream (index) whatever the model: a body that names no model.
    pub pinned: Option<usize>,
    pub query: Option<String>,
    /// The client's body and its parsed form.
    pub body: Bytes,
    /// The fields routing decides on.
    pub peek: shape::Peek,
    pub model: String,
    /// Client headers to pass along, in wire form (`name: value\r\n` each).
    pub headers: super::headers::Forwarded,
    /// The tokens the request is expected to use (for `tpm` limits and the
    /// context pre-check).
    pub estimate: crate::limits::tokens::Estimate,
    /// The body is Anthropic's Messages API, for `kind: anthropic` upstreams.
    pub anthropic: bool,
    /// Try this upstream and key first: they hold the call's context
    /// (`responses::affinity`).
    pub affinity: Option<crate::responses::affinity::Made>,
}

impl Call {
    /// The body as JSON (`Null` when it is not JSON). Parsed where it is
    /// needed (an attempt's edits, a large body's token estimate) and dropped
    /// there: a stream does not hold its request's parsed copy, often several
    /// times the body's size, for as long as it lasts.
    pub fn parse_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What happened, for logs and metrics.
#[derive(Default)]
pub struct Outcome {
    pub upstream: Option<Arc<Upstream>>,
    pub key: Option<Arc<Key>>,
    pub attempts: u32,
    /// Status sent to the client (0 if none).
    pub status: u16,
    /// Prompt and output tokens the upstreams' usage reported for this
    /// request, every attempt together; `metered`: some answer reported usage.
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Of `tokens_in`, those the provider read from its cache.
    pub tokens_cached: u64,
    pub metered: bool,
    /// The model that served the last attempt (the asked one or a fallback).
    pub served_model: Option<String>,
    /// When the client got the first event of a streamed answer.
    pub first_event: Option<std::time::Instant>,
    /// Stream events relayed to the client (about one token each): the
    /// output estimate when no usage was reported (a client that left).
    pub events_out: u64,
    /// What the answer leaves for the response cache (a call it may keep).
    pub capture: Option<Box<crate::cache::Capture>>,
    /// A Responses answer's id and encrypted reasoning items (see
    /// `responses::affinity`).
    pub response_ids: Vec<String>,
}

impl Outcome {
    /// Records an answer's `usage` object (see [`Outcome::add_usage`]).
    pub fn meter(&mut self, usage: &serde_json::Value) {
        self.add_usage(crate::metrics::Usage::from_value(usage));
    }

    /// Adds usage `u` to this request's (metrics and the usage record take
    /// the total when the request ends).
    pub fn add_usage(&mut self, u: crate::metrics::Usage) {
        self.tokens_in = self.tokens_in.saturating_add(u.prompt().unwrap_or(0));
        self.tokens_out = self.tokens_out.saturating_add(u.completion().unwrap_or(0));
        self.tokens_cached = self.tokens_cached.saturating_add(u.cached());
        self.metered |= u.total().is_some();
    }

    /// The tokens reported so far (`None`: no answer reported usage).
    pub fn tokens(&self) -> Option<u64> {
        self.metered
            .then(|| self.tokens_in.saturating_add(self.tokens_out))
    }
}

/// How a delivered response ended.
pub enum RelayEnd {
    /// Response fully delivered.
    Complete,
    /// The client went away; nothing more to do.
    ClientGone,
    /// The upstream broke mid-body of a non-SSE response: close the connection.
    Broken(String),
    /// The stream ended with an error event (no `[DONE]`), of this kind.
    ErrorEvent(&'static str),
}

/// The client side of one request: where the answer goes, the time it has,
/// and what is recorded about it.
pub struct Downstream<'a> {
    pub client: Client<'a>,
    pub outcome: &'a mut Outcome,
    /// `timeouts.total` from the request's arrival.
    pub deadline: Instant,
    pub timeouts: Timeouts,
    /// Which API the answer is, and how many choices it has (decide when a
    /// stream counts as complete).
    pub api: Api,
    pub choices: u32,
    /// The `Origin` to allow in CORS response headers, when `cors` allows it.
    pub cors: Option<http::HeaderValue>,
    /// Most answer text kept per stream to continue it (`retry.continuation_buffer`).
    pub seam_cap: usize,
    /// A stream that broke and waits for the next candidate to continue it.
    pub resume: Option<Box<Resume>>,
    /// A key was parked for a 401/403 during this request: no other will be.
    pub auth_parked: bool,
}

/// A broken stream the next candidate may continue: what the client has of
/// it, and why it broke.
pub struct Resume {
    pub seam: Seam,
    /// The last break, for the error event when nobody continues it.
    pub broke: String,
    /// `Some`: the client waits for JSON and this is the aggregation so far;
    /// `None`: the client already has the stream's head and events.
    pub agg: Option<Aggregator>,
}

impl Resume {
    /// Whether the client already has part of the stream (its head was sent).
    pub fn open(&self) -> bool {
        self.agg.is_none()
    }
}

/// Ends a stream that already reached the client with `data: {"error": ...}`
/// and no `[DONE]`, so clients see an error rather than a clean finish.
pub async fn end_with_error_event(client: &mut Client<'_>, e: &GatewayError) -> RelayEnd {
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(&e.body());
    ev.extend_from_slice(b"\n\n");
    let _ = client.write_body(Some(Bytes::from(ev)), false).await;
    let _ = client.write_body(None, true).await;
    RelayEnd::ErrorEvent(e.label())
}
