//! SSE pass-through, event by event, and the continuation of a broken stream
//! inside the same client stream.
//!
//! The client header waits for the first event, so an upstream that fails
//! before it is retried invisibly. After that, a break (cut, idle stall,
//! in-stream error, a body that ends before the answer did) of a stream whose
//! [`Seam`] can be continued leaves a [`Resume`] in the downstream and returns
//! `Err`: the attempt loop then asks the next candidate to continue, and its
//! events join the open stream here (original `id`/`created`, only new text).
//! Anything else ends the stream with an error event and no `[DONE]`.

use super::attempt::{protocol_err, Answer};
use super::call::{end_with_error_event, Downstream, RelayEnd, Resume};
use super::headers;
use super::shape::{self, UsageEvent};
use crate::error::GatewayError;
use crate::metrics;
use crate::routes::Api;
use crate::sse::complete::Completion;
use crate::sse::seam::Seam;
use crate::sse::{Frame, Framer};
use bytes::BytesMut;
use serde_json::Value;
use std::time::Instant;

/// Why a relay stopped before the stream's end.
enum Stop {
    /// The upstream broke (or erred) after events reached the client.
    Broke(GatewayError),
    /// A continuation's text contradicts what the client has.
    Diverged(&'static str),
}

/// Relays an SSE answer; see the module docs. `Err`: nothing of this answer
/// reached the client (and, when `down.resume` is set, the stream waits for
/// a continuation).
pub async fn relay_sse(
    down: &mut Downstream<'_>,
    mut answer: Answer,
    strip_usage: bool,
) -> Result<RelayEnd, GatewayError> {
    let name = answer.name().to_string();
    let mut framer = Framer::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut joined: Vec<Value> = Vec::new();
    let mut pending = BytesMut::new();
    // a continuation joins the stream the client already has
    let (mut header, mut seam) = match down.resume.take() {
        Some(r) if r.open() => (None, Some(r.seam)),
        _ => {
            let mut head = headers::client_header(answer.head(), answer.name(), None);
            // the body may change (usage stripped): frame it as chunks, never by the upstream's length
            head.headers.remove(http::header::CONTENT_LENGTH);
            head.headers.insert(
                http::header::TRANSFER_ENCODING,
                http::HeaderValue::from_static("chunked"),
            );
            if let Some(origin) = &down.cors {
                headers::cors_headers(&mut head.headers, origin);
            }
            (Some(head), Seam::new(down.api, down.choices, down.seam_cap))
        }
    };
    let joining = seam.as_ref().and_then(Seam::mode);
    let mut completion = Completion::new(down.api, down.choices);
    let mut got_event = false;
    let first_deadline = Instant::now() + down.timeouts.first_byte;
    let stop = loop {
        let mut read = answer
            .read_stream_chunk(got_event, first_deadline, &down.timeouts, down.deadline)
            .await;
        let mut ended = match &read {
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
        if framer.overlong() {
            read = Err(protocol_err(
                &name,
                "an event is longer than the gateway reads (16MiB)",
            ));
            ended = true;
        }
        let mut saw_event = false;
        let mut stop = None;
        for frame in frames.drain(..) {
            let Some(ev) = &frame.event else {
                pending.extend_from_slice(&frame.raw);
                continue;
            };
            let resumable = seam.as_ref().is_some_and(Seam::resumable);
            if (header.is_some() || resumable) && crate::sse::stream_error(ev, None).is_some() {
                let e = protocol_err(&name, format!("error inside the stream: {:.300}", ev.data));
                if header.is_some() {
                    // the very first event is an error: nothing was sent, try elsewhere
                    return Err(e);
                }
                stop = Some(Stop::Broke(e));
                break;
            }
            if malformed(down.api, &ev.data) {
                // a client SDK would fail on it: skip it, count it
                skip_malformed("passthrough", &name, &ev.data, None);
                continue;
            }
            got_event = true;
            saw_event = true;
            completion.observe(ev);
            if let (Some(s), Some(_)) = (seam.as_mut(), joining) {
                if ev.is_done() {
                    pending.extend_from_slice(&frame.raw);
                    continue;
                }
                let v = match serde_json::from_str::<Value>(&ev.data) {
                    Ok(v) => v,
                    Err(e) => {
                        skip_malformed("passthrough", &name, &ev.data, Some(&e));
                        continue;
                    }
                };
                if let Err(why) = s.join(v, &mut joined) {
                    stop = Some(Stop::Diverged(why));
                    break;
                }
                for mut v in joined.drain(..) {
                    if let Some(u) = v.get_mut("usage").filter(|u| !u.is_null()) {
                        down.outcome.meter(u);
                        s.add_earlier_usage(u);
                    }
                    match shape::usage_event(&v, strip_usage) {
                        UsageEvent::Keep => {
                            pending.extend_from_slice(format!("data: {v}\n\n").as_bytes())
                        }
                        UsageEvent::Drop => {}
                        UsageEvent::Rewrite(s) => pending.extend_from_slice(s.as_bytes()),
                    }
                }
                continue;
            }
            if let Some(s) = seam.as_mut() {
                s.observe(&ev.data);
            }
            if shape::find_usage_key(&frame.raw).is_some() {
                if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                        down.outcome.meter(u);
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
            if down.client.write_head(h, false).await.is_err() {
                return Ok(RelayEnd::ClientGone);
            }
        }
        if header.is_none() && !pending.is_empty() {
            down.outcome.first_event.get_or_insert_with(Instant::now);
            if down
                .client
                .write_body(Some(pending.split().freeze()), false)
                .await
                .is_err()
            {
                return Ok(RelayEnd::ClientGone);
            }
        }
        if let Some(s) = stop {
            break Some(s);
        }
        match read {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(e) => {
                if header.is_some() {
                    return Err(e); // nothing sent: retry elsewhere
                }
                break Some(Stop::Broke(e));
            }
        }
    };
    let stop = match stop {
        None if completion.complete() => None,
        // a clean end of the body, but not of the answer: never pass it off as complete
        None => Some(Stop::Broke(protocol_err(
            &name,
            "the stream ended before the answer was complete",
        ))),
        s => s,
    };
    let mode = joining.map_or("first", |m| m.as_str());
    match stop {
        None => {
            if down.client.write_body(None, true).await.is_err() {
                return Ok(RelayEnd::ClientGone);
            }
            answer.release().await;
            if let Some(m) = joining {
                metrics::CONTINUATIONS
                    .with_label_values(&[m.as_str(), "continued"])
                    .inc();
                log::info!("upstream {name} continued a broken stream ({mode})");
            }
            Ok(RelayEnd::Complete)
        }
        Some(Stop::Diverged(why)) => {
            metrics::CONTINUATIONS
                .with_label_values(&[mode, "diverged"])
                .inc();
            let e = protocol_err(&name, format!("the stream broke and {why}"));
            log::warn!("upstream {name}: {}", e.message());
            Ok(end_with_error_event(&mut down.client, &e).await)
        }
        Some(Stop::Broke(e)) => match seam.filter(Seam::resumable) {
            Some(seam) => {
                log::warn!(
                    "upstream {name} broke mid-stream ({}); {} bytes of text sent, to be continued",
                    e.message(),
                    seam.sent_len()
                );
                down.resume = Some(Box::new(Resume {
                    seam,
                    broke: e.message(),
                    agg: None,
                }));
                Err(e)
            }
            None => {
                log::warn!("upstream {name} failed mid-stream: {}", e.message());
                Ok(end_with_error_event(&mut down.client, &e).await)
            }
        },
    }
}

/// Counts and logs an upstream event skipped because it is not JSON (`mode`:
/// `passthrough` or `aggregated`); never fatal to the answer.
pub(super) fn skip_malformed(
    mode: &str,
    upstream: &str,
    data: &str,
    why: Option<&serde_json::Error>,
) {
    metrics::MALFORMED_EVENTS.with_label_values(&[mode]).inc();
    match why {
        Some(e) => {
            log::warn!("upstream {upstream}: skipped an event that is not JSON ({e}): {data:.120}")
        }
        None => log::warn!("upstream {upstream}: skipped an event that is not JSON: {data:.120}"),
    }
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
