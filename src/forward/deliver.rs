//! Delivering a 2xx answer to the client: SSE pass-through event by event,
//! raw pass-through, stream → JSON aggregation, JSON → stream synthesis; and
//! whole bodies (error answers). `Err` from [`deliver`] means nothing reached
//! the client yet, so the attempt loop may try elsewhere; after the first
//! byte, a failure ends an SSE stream with an error event (never `[DONE]`)
//! and any other body with a closed connection.

use super::attempt::{protocol_err, Answer, Buffered, MAX_CONVERTED_BODY};
use super::call::{Downstream, RelayEnd};
use super::headers::{self, Head};
use super::shape::{self, Delivery, UsageEvent};
use crate::error::GatewayError;
use crate::metrics;
use crate::routes::Api;
use crate::sse::aggregate::{
    AggregateError, ChatAggregator, CompletionAggregator, ResponsesAggregator,
};
use crate::sse::complete::Completion;
use crate::sse::{Frame, Framer};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use std::time::Instant;

/// JSON answers up to this size are parsed after relaying, to meter `usage`.
const METER_JSON_LIMIT: usize = 1 << 20;

/// Chooses how to deliver a 2xx answer; errors and non-2xx pass through.
/// `Err` means nothing was written to the client (the caller may retry).
pub async fn deliver(down: &mut Downstream<'_>, answer: Answer) -> Result<RelayEnd, GatewayError> {
    let status = answer.status();
    let ct = answer.content_type().as_bytes();
    let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
    let is_sse = starts(b"text/event-stream");
    let is_json = starts(b"application/json") || ct.is_empty();
    if !(200..300).contains(&status) {
        return Ok(relay_raw(down, answer).await);
    }
    match answer.delivery {
        // boxed: their state is large and would otherwise size every request's future
        Delivery::Aggregate(api) if is_sse => Box::pin(aggregate(down, answer, api)).await,
        Delivery::Synthesize { api, include_usage } if is_json => {
            Box::pin(synthesize(down, answer, api, include_usage)).await
        }
        Delivery::Pass { strip_usage } if is_sse => {
            Box::pin(relay_sse(down, answer, strip_usage)).await
        }
        _ => Ok(relay_raw(down, answer).await),
    }
}

/// Writes a whole body to the client.
async fn send_whole(
    down: &mut Downstream<'_>,
    mut header: Head,
    body: Bytes,
    sse: bool,
) -> RelayEnd {
    use http::header::{CACHE_CONTROL, CONTENT_LENGTH, TRANSFER_ENCODING};
    if let Some(origin) = &down.cors {
        headers::cors_headers(&mut header.headers, origin);
    }
    if !sse {
        header
            .headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    } else {
        // chunked keeps the connection reusable (no framing header = close-delimited)
        header
            .headers
            .insert(CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
        header
            .headers
            .insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
    }
    down.outcome.status = header.status.as_u16();
    if down
        .session
        .write_response_header(Box::new(header.into()), false)
        .await
        .is_err()
        || down
            .session
            .write_response_body(Some(body), true)
            .await
            .is_err()
    {
        return RelayEnd::ClientGone;
    }
    RelayEnd::Complete
}

/// Stream → one JSON answer. A broken, truncated or erroring stream is an
/// `Err` (nothing was sent), so the caller retries it elsewhere.
async fn aggregate(
    down: &mut Downstream<'_>,
    mut answer: Answer,
    api: Api,
) -> Result<RelayEnd, GatewayError> {
    enum Agg {
        Chat(ChatAggregator),
        Completion(CompletionAggregator),
        Responses(ResponsesAggregator),
    }
    let mut agg = match api {
        Api::Completions => Agg::Completion(CompletionAggregator::new()),
        Api::Responses => Agg::Responses(ResponsesAggregator::new()),
        _ => Agg::Chat(ChatAggregator::new()),
    };
    let name = answer.name().to_string();
    let fail = |e: AggregateError| protocol_err(&name, e.to_string());
    let mut framer = Framer::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut size = 0usize;
    let mut done = false;
    let mut seen_event = false;
    let first_deadline = Instant::now() + down.timeouts.first_byte;
    while !done {
        let limit = if seen_event {
            Instant::now() + down.timeouts.idle
        } else {
            first_deadline
        };
        let wait = limit
            .min(down.deadline)
            .saturating_duration_since(Instant::now());
        match answer.read_chunk(wait).await? {
            Some(c) => {
                size += c.len();
                if size > MAX_CONVERTED_BODY {
                    return Err(protocol_err(
                        &name,
                        "the stream is larger than the gateway aggregates (64MiB)",
                    ));
                }
                framer.push(&c, &mut frames);
            }
            None => {
                framer.finish(&mut frames);
                done = true;
            }
        }
        for frame in frames.drain(..) {
            let Some(ev) = frame.event else { continue };
            seen_event = true;
            if ev.is_done() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(&ev.data) {
                Ok(v) => v,
                Err(e) => {
                    // one broken event does not spoil the answer: skip it, count it
                    metrics::MALFORMED_EVENTS
                        .with_label_values(&["aggregated"])
                        .inc();
                    log::warn!(
                        "upstream {name}: skipped an event that is not JSON ({e}): {:.120}",
                        ev.data
                    );
                    continue;
                }
            };
            if let Some(err) = crate::sse::stream_error(&ev, Some(&v)) {
                if !matches!(api, Api::Responses)
                    || v.get("type").and_then(|t| t.as_str()) == Some("error")
                {
                    return Err(fail(AggregateError::Upstream(err)));
                }
            }
            match &mut agg {
                Agg::Chat(a) => a.push(&v),
                Agg::Completion(a) => a.push(&v),
                Agg::Responses(a) => a.push(ev.event.as_deref(), &v),
            }
            .map_err(fail)?;
        }
    }
    let merged = match agg {
        Agg::Chat(a) => a.finish(),
        Agg::Completion(a) => a.finish(),
        Agg::Responses(a) => a.finish(),
    }
    .map_err(fail)?;
    if let Some(u) = merged.get("usage").filter(|u| !u.is_null()) {
        answer.upstream.tokens.record(&name, u);
    }
    metrics::TRANSFORMS.with_label_values(&["aggregated"]).inc();
    let header = headers::client_header(&answer.head, answer.name(), Some("application/json"));
    answer.release();
    let body = Bytes::from(
        serde_json::to_vec(&merged).map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    Ok(send_whole(down, header, body, false).await)
}

/// One JSON answer → a stream.
#[allow(clippy::too_many_arguments)]
async fn synthesize(
    down: &mut Downstream<'_>,
    mut answer: Answer,
    api: Api,
    include_usage: bool,
) -> Result<RelayEnd, GatewayError> {
    let body = answer.read_all(down.deadline, &down.timeouts).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| protocol_err(answer.name(), format!("the answer is not valid JSON: {e}")))?;
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        answer.upstream.tokens.record(answer.name(), u);
    }
    let sse = match api {
        Api::Completions => crate::sse::synth::completion(&v, include_usage),
        Api::Responses => crate::sse::synth::responses(&v),
        _ => crate::sse::synth::chat(&v, include_usage),
    };
    metrics::TRANSFORMS
        .with_label_values(&["synthesized"])
        .inc();
    let header = headers::client_header(&answer.head, answer.name(), Some("text/event-stream"));
    answer.release();
    Ok(send_whole(down, header, Bytes::from(sse), true).await)
}

/// SSE pass-through, event by event. The client header waits for the first
/// event, so an upstream that fails before it is retried invisibly. After
/// that, a failure ends the stream with an error event and no `[DONE]`.
async fn relay_sse(
    down: &mut Downstream<'_>,
    mut answer: Answer,
    strip_usage: bool,
) -> Result<RelayEnd, GatewayError> {
    let name = answer.name().to_string();
    let mut framer = Framer::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut pending = BytesMut::new();
    let mut head = headers::client_header(&answer.head, answer.name(), None);
    // the body may change (usage stripped): frame it as chunks, never by the upstream's length
    head.headers.remove(http::header::CONTENT_LENGTH);
    head.headers.insert(
        http::header::TRANSFER_ENCODING,
        http::HeaderValue::from_static("chunked"),
    );
    if let Some(origin) = &down.cors {
        headers::cors_headers(&mut head.headers, origin);
    }
    let mut header = Some(head);
    let mut completion = Completion::new(down.api, down.choices);
    let first_deadline = Instant::now() + down.timeouts.first_byte;
    loop {
        let limit = if header.is_some() {
            first_deadline
        } else {
            Instant::now() + down.timeouts.idle
        };
        let wait = limit
            .min(down.deadline)
            .saturating_duration_since(Instant::now());
        let read = answer.read_chunk(wait).await;
        let ended = match &read {
            Ok(Some(c)) => {
                framer.push(c, &mut frames);
                false
            }
            Ok(None) => {
                framer.finish(&mut frames);
                true
            }
            Err(_) => true,
        };
        let mut saw_event = false;
        for frame in frames.drain(..) {
            let Some(ev) = &frame.event else {
                pending.extend_from_slice(&frame.raw);
                continue;
            };
            if header.is_some() && crate::sse::stream_error(ev, None).is_some() {
                // the very first event is an error: nothing was sent, try elsewhere
                return Err(protocol_err(
                    &name,
                    format!("error inside the stream: {:.300}", ev.data),
                ));
            }
            if malformed(down.api, &ev.data) {
                // a client SDK would fail on it: skip it, count it
                metrics::MALFORMED_EVENTS
                    .with_label_values(&["passthrough"])
                    .inc();
                log::warn!(
                    "upstream {name}: skipped an event that is not JSON: {:.120}",
                    ev.data
                );
                continue;
            }
            saw_event = true;
            completion.observe(ev);
            if shape::find_usage_key(&frame.raw).is_some() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) {
                    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                        answer.upstream.tokens.record(&name, u);
                    }
                    match shape::usage_event(&v, strip_usage) {
                        UsageEvent::Keep => pending.extend_from_slice(&frame.raw),
                        UsageEvent::Drop => {}
                        UsageEvent::Rewrite(s) => pending.extend_from_slice(s.as_bytes()),
                    }
                    continue;
                }
            }
            pending.extend_from_slice(&frame.raw);
        }
        if header.is_some() && !saw_event && pending.is_empty() && matches!(read, Ok(None)) {
            return Err(protocol_err(
                &name,
                "the stream ended before its first event",
            ));
        }
        if let Some(h) = header.take_if(|_| saw_event || (ended && read.is_ok())) {
            down.outcome.status = h.status.as_u16();
            if down
                .session
                .write_response_header(Box::new(h.into()), false)
                .await
                .is_err()
            {
                return Ok(RelayEnd::ClientGone);
            }
        }
        if header.is_none()
            && !pending.is_empty()
            && down
                .session
                .write_response_body(Some(pending.split().freeze()), false)
                .await
                .is_err()
        {
            return Ok(RelayEnd::ClientGone);
        }
        match read {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                if header.is_some() {
                    return Err(e); // nothing sent: retry elsewhere
                }
                log::warn!("upstream {name} failed mid-stream: {}", e.message());
                return Ok(end_with_error_event(down.session, &e).await);
            }
        }
    }
    if !completion.complete() {
        // a clean end of the body, but not of the answer: never pass it off as complete
        let e = protocol_err(&name, "the stream ended before the answer was complete");
        log::warn!("upstream {name}: {}", e.message());
        return Ok(end_with_error_event(down.session, &e).await);
    }
    if down.session.write_response_body(None, true).await.is_err() {
        return Ok(RelayEnd::ClientGone);
    }
    answer.release();
    Ok(RelayEnd::Complete)
}

/// Streams the upstream answer to the client as it arrives, unchanged.
async fn relay_raw(down: &mut Downstream<'_>, mut answer: Answer) -> RelayEnd {
    let mut header = headers::client_header(&answer.head, answer.name(), None);
    if let Some(origin) = &down.cors {
        headers::cors_headers(&mut header.headers, origin);
    }
    let status = header.status.as_u16();
    let ct = answer.content_type();
    let is_sse = ct.starts_with("text/event-stream");
    // only JSON answers carry `usage` (not audio, images or files)
    let meter =
        (200..300).contains(&status) && (ct.is_empty() || ct.starts_with("application/json"));
    let mut kept = BytesMut::new();
    let mut first: Option<Bytes> = None;
    down.outcome.status = status;
    if down
        .session
        .write_response_header(Box::new(header.into()), false)
        .await
        .is_err()
    {
        return RelayEnd::ClientGone;
    }
    loop {
        let wait = down
            .timeouts
            .idle
            .min(down.deadline.saturating_duration_since(Instant::now()));
        match answer.read_chunk(wait).await {
            Ok(Some(chunk)) => {
                if meter {
                    // one-chunk bodies (the usual case) are kept without copying
                    match first.take() {
                        None if kept.is_empty() => first = Some(chunk.clone()),
                        prev => {
                            if let Some(p) = prev {
                                kept.extend_from_slice(&p);
                            }
                            if kept.len() + chunk.len() <= METER_JSON_LIMIT {
                                kept.extend_from_slice(&chunk);
                            }
                        }
                    }
                }
                if down
                    .session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    return RelayEnd::ClientGone;
                }
                if answer.conn.body_done() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                log::warn!(
                    "upstream {} failed mid-response: {}",
                    answer.name(),
                    e.message()
                );
                if is_sse {
                    return end_with_error_event(down.session, &e).await;
                }
                return RelayEnd::Broken(e.message());
            }
        }
    }
    if down.session.write_response_body(None, true).await.is_err() {
        return RelayEnd::ClientGone;
    }
    let kept: &[u8] = match &first {
        Some(b) => b,
        None => &kept,
    };
    if meter {
        if let Some(u) = shape::usage_in_json(kept) {
            answer.upstream.tokens.add(answer.name(), u);
        }
    }
    answer.release();
    RelayEnd::Complete
}

/// Passes a buffered upstream answer on as it is.
pub async fn send_buffered(down: &mut Downstream<'_>, b: Box<Buffered>) -> RelayEnd {
    send_whole(down, b.header, b.body, false).await
}

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
    RelayEnd::Complete
}

/// Whether a pass-through event of `api` cannot be JSON (a cheap structural
/// check: chat, completions and Responses events are objects or `[DONE]`;
/// full parsing is left to the client).
fn malformed(api: Api, data: &str) -> bool {
    if !matches!(api, Api::Chat | Api::Completions | Api::Responses) {
        return false;
    }
    let d = data.trim();
    !(d == "[DONE]" || (d.starts_with('{') && d.ends_with('}')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_check_of_pass_through_events() {
        assert!(!malformed(Api::Chat, r#"{"choices":[]}"#));
        assert!(!malformed(Api::Chat, " [DONE] "));
        assert!(malformed(Api::Chat, r#"{"choices":[{"delta":"#));
        assert!(malformed(Api::Responses, "garbage"));
        assert!(!malformed(Api::Generic, "anything goes"));
    }
}
