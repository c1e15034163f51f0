//! Answering a call from the response cache (see `crate::cache`): the kept
//! JSON as it is, or a stream synthesized from it, with
//! `x-switchyard-cache: hit` and `Age`. A hit costs no upstream tokens.

use super::ctx::Ctx;
use super::respond;
use crate::cache::{replay, Entry};
use crate::config::cache::Replay;
use crate::forward::client::{unless_client_gone, Client};
use crate::forward::headers::{cors_headers, gateway_headers, head as new_head};
use crate::forward::{Call, RelayEnd};
use crate::routes::Api;
use crate::state::Snapshot;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::proxy::Session;
use std::time::Duration;

/// Serves `hit` to the client of `call`.
async fn serve(
    session: &mut Session,
    ctx: &mut Ctx,
    call: &Call,
    hit: &Entry,
    replay_mode: Replay,
) -> RelayEnd {
    let now = crate::clock::now_ms();
    let age = now.saturating_sub(hit.created_ms) / 1000;
    ctx.cached = true;
    ctx.model = Some(call.model.clone());
    ctx.outcome.status = 200;
    ctx.outcome.metered = true; // no upstream tokens: 0 in, 0 out
    crate::metrics::CACHE_TOKENS_SAVED.inc_by(hit.tokens.0.saturating_add(hit.tokens.1));
    let extra = [
        (
            HeaderName::from_static("x-switchyard-cache"),
            HeaderValue::from_static("hit"),
        ),
        (http::header::AGE, HeaderValue::from(age)),
    ];
    let streamed = call.peek.client_stream() && call.api != Api::Other;
    if !streamed {
        let sent = respond::respond(
            session,
            ctx,
            200,
            "application/json",
            hit.body.clone(),
            &extra,
        );
        return match sent.await {
            Ok(()) => RelayEnd::Complete,
            Err(_) => RelayEnd::ClientGone,
        };
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&hit.body) else {
        return RelayEnd::Broken("a cached answer does not parse".into());
    };
    let pace: &[(u32, u32)] = match replay_mode {
        Replay::Paced => &hit.pace,
        Replay::Instant => &[],
    };
    let pieces = replay::events(call.api, &v, call.peek.client_usage(), pace);
    Box::pin(stream(session, ctx, &extra, pieces)).await
}

/// Writes the replayed stream, each piece after its pause.
async fn stream(
    session: &mut Session,
    ctx: &mut Ctx,
    extra: &[(HeaderName, HeaderValue)],
    pieces: Vec<(u32, String)>,
) -> RelayEnd {
    let mut head = new_head(http::StatusCode::OK, 8);
    let h = &mut head.headers;
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    // chunked keeps the connection reusable (no framing header = close-delimited)
    h.insert(
        http::header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    gateway_headers(h);
    for (k, v) in extra {
        h.insert(k.clone(), v.clone());
    }
    if let Some(origin) = &ctx.cors {
        cors_headers(h, origin);
    }
    let mut client = Client(session, &ctx.answer);
    if client.write_head(head, false).await.is_err() {
        return RelayEnd::ClientGone;
    }
    for (pause, text) in pieces {
        if pause > 0 {
            let wait = tokio::time::sleep(Duration::from_millis(pause.into()));
            if unless_client_gone(&mut client, wait).await.is_none() {
                return RelayEnd::ClientGone;
            }
        }
        ctx.outcome
            .first_event
            .get_or_insert_with(std::time::Instant::now);
        ctx.outcome.events_out += 1;
        if client
            .write_body(Some(Bytes::from(text)), false)
            .await
            .is_err()
        {
            return RelayEnd::ClientGone;
        }
    }
    if client.write_body(None, true).await.is_err() {
        return RelayEnd::ClientGone;
    }
    RelayEnd::Complete
}

/// Where the response cache has `call`'s answer, when `cache:` applies to it.
pub fn lookup(
    session: &Session,
    snap: &Snapshot,
    caller: crate::limits::Caller,
    call: &Call,
) -> Option<crate::cache::Lookup> {
    snap.config.cache.as_ref()?;
    let cc = session
        .req_header()
        .headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok());
    let endpoint = (call.api, call.suffix.as_ref(), call.query.as_deref());
    let sent = (&call.body[..], &call.headers);
    crate::cache::lookup(snap, caller, endpoint, &call.model, sent, cc)
}

/// Keeps a complete answer the call's capture holds (see `crate::cache`).
pub fn keep(snap: &Snapshot, lookup: Option<&crate::cache::Lookup>, ctx: &mut Ctx) {
    let (Some(l), Some(settings)) = (lookup.filter(|l| l.write), &snap.config.cache) else {
        return;
    };
    let Some(capture) = ctx.outcome.capture.take() else {
        return;
    };
    // only what the key's route answered: not a fallback model's answer,
    // nor another upstream's
    let served = ctx.outcome.served_model.as_deref();
    let by = ctx.outcome.upstream.as_ref().map(|u| u.name());
    if ctx.outcome.status != 200
        || served.is_some_and(|m| m != l.model)
        || by != Some(l.upstream.as_str())
    {
        return;
    }
    if let Some((body, pace)) = capture.finish() {
        let entry = crate::cache::Entry {
            body,
            created_ms: crate::clock::now_ms(),
            model: l.model.clone(),
            client: l.client.clone(),
            // what the upstream reported (an estimate saves nothing sure)
            tokens: if ctx.estimated {
                (0, 0)
            } else {
                (ctx.outcome.tokens_in, ctx.outcome.tokens_out)
            },
            pace,
        };
        crate::cache::put(settings, l, entry);
    }
}

/// Answers `call` from the response cache when it holds its answer (then
/// `true`); else marks the answer a miss (or bypass) and, when it may be
/// kept, sets the capture up.
pub async fn answer(
    session: &mut Session,
    ctx: &mut Ctx,
    snap: &Snapshot,
    call: &Call,
    lookup: Option<&crate::cache::Lookup>,
    charges: &crate::limits::TokenCharges,
) -> bool {
    let (Some(l), Some(settings)) = (lookup, &snap.config.cache) else {
        return false;
    };
    if l.read {
        if let Some(hit) = crate::cache::get(settings, l).await {
            charges.settle(Some(0), true);
            let end = serve(session, ctx, call, &hit, settings.replay).await;
            if let RelayEnd::ClientGone | RelayEnd::Broken(_) = end {
                ctx.abort = Some("the client is gone".into());
            }
            return true;
        }
    }
    let value = http::HeaderValue::from_static(l.miss_header());
    let name = http::HeaderName::from_static("x-switchyard-cache");
    ctx.answer.limits.push((name, value));
    if l.write {
        let capture = crate::cache::Capture::new(call.api, settings.max_entry);
        ctx.outcome.capture = Some(Box::new(capture));
    }
    false
}
