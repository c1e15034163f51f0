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
use super::call::{end_with_error_event, Downstream, Outcome, RelayEnd, Resume};
use super::headers;
use super::shape::{self, UsageEvent};
use crate::error::GatewayError;
use crate::metrics;
use crate::routes::Api;
use crate::sse::complete::Completion;
use crate::sse::seam::{Mode, Seam};
use crate::sse::{Event, Frame, Framer};
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Instant;

/// Why a relay stopped before the stream's end.
enum Stop {
    /// The upstream broke (or erred) after events reached the client.
    Broke(GatewayError),
    /// A continuation's text contradicts what the client has.
    Diverged(&'static str),
}

/// How a relayed stream ends once the relay stopped.
enum Ending {
    /// The answer is whole: close the client's stream.
    Complete,
    /// End the client's stream with this error event.
    ErrorEvent(GatewayError),
    /// Leave it open for a continuation (`down.resume` is set).
    Continue(GatewayError),
}

/// Awaits `read`, writing a keepalive (an SSE comment; a Messages client's
/// is a `ping` event) to the client every `every` until it resolves;
/// `None`: the client is gone.
async fn keeping_alive<T>(
    read: impl std::future::Future<Output = T>,
    client: &mut super::client::Client<'_>,
    every: std::time::Duration,
) -> Option<T> {
    tokio::pin!(read);
    loop {
        tokio::select! {
            r = &mut read => return Some(r),
            () = pingora::time::sleep(every) => {
                let comment = Bytes::from_static(b": keepalive\n\n");
                if client.write_body(Some(comment), false).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// The upstream's next piece of the stream; while the client has its head
/// (`began`), with keepalives. `None`: the client is gone.
async fn next_piece(
    down: &mut Downstream<'_>,
    answer: &mut Answer,
    got_event: bool,
    first_deadline: Instant,
    began: bool,
) -> Option<Result<Option<Bytes>, GatewayError>> {
    let reading =
        answer.read_stream_chunk(got_event, first_deadline, &down.timeouts, down.deadline);
    let ping = down.timeouts.stream_ping;
    if began && !ping.is_zero() {
        // a silent upstream is no silent stream (inline: no allocation per
        // read; this future lives in the boxed relay's)
        keeping_alive(reading, &mut down.client, ping).await
    } else {
        Some(reading.await)
    }
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
    // a continuation joins the stream the client already has
    let (mut header, seam) = match down.resume.take() {
        Some(r) if r.open() => (None, Some(r.seam)),
        _ => (
            // the body may change (usage stripped): chunked, never the upstream's length
            Some(headers::relayed_head(
                answer.head(),
                answer.name(),
                false,
                down.cors.as_ref(),
            )),
            Seam::new(down.api, down.choices, down.seam_cap),
        ),
    };
    let mut relay = SseRelay::new(name, seam, strip_usage, down.api, down.choices);
    let first_deadline = Instant::now() + down.timeouts.first_byte;
    let stop = loop {
        let began = header.is_none();
        let read = next_piece(down, &mut answer, relay.got_event, first_deadline, began);
        let Some(mut read) = read.await else {
            return Ok(RelayEnd::ClientGone);
        };
        let ended = relay.take_chunk(&mut read);
        let stop = relay.relay_frames(header.is_some(), down.outcome)?;
        if header.is_some()
            && !relay.saw_event
            && relay.pending.is_empty()
            && matches!(read, Ok(None))
        {
            return Err(protocol_err(
                &relay.name,
                "the stream ended before its first event",
            ));
        }
        if let Some(h) = header.take_if(|_| relay.saw_event || (ended && read.is_ok())) {
            down.outcome.status = h.status.as_u16();
            if down.client.write_head(h, false).await.is_err() {
                return Ok(RelayEnd::ClientGone);
            }
        }
        if header.is_none() && !relay.pending.is_empty() {
            down.outcome.first_event.get_or_insert_with(Instant::now);
            if down
                .client
                .write_body(Some(relay.pending.split().freeze()), false)
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
    match relay.end(stop, &mut down.resume) {
        Ending::Complete => {
            if down.client.write_body(None, true).await.is_err() {
                return Ok(RelayEnd::ClientGone);
            }
            answer.release().await;
            relay.count_continued();
            Ok(RelayEnd::Complete)
        }
        Ending::ErrorEvent(e) => Ok(end_with_error_event(&mut down.client, &e).await),
        Ending::Continue(e) => Err(e),
    }
}

/// The state of one relayed stream between reads.
struct SseRelay {
    /// The upstream's name, for errors and logs.
    name: String,
    strip_usage: bool,
    api: Api,
    framer: Framer,
    frames: Vec<Frame>,
    /// A continuation's events, joined to what the client has.
    joined: Vec<Value>,
    /// Bytes for the client, written after each read.
    pending: BytesMut,
    seam: Option<Seam>,
    /// How this answer continues a broken stream; `None`: it is the first.
    joining: Option<Mode>,
    completion: Completion,
    /// An event was relayed: reads now wait `idle`, not `first_byte`.
    got_event: bool,
    /// An event was relayed from the last read.
    saw_event: bool,
}

impl SseRelay {
    fn new(name: String, seam: Option<Seam>, strip_usage: bool, api: Api, choices: u32) -> Self {
        let joining = seam.as_ref().and_then(Seam::mode);
        SseRelay {
            name,
            strip_usage,
            api,
            framer: Framer::new(),
            frames: Vec::new(),
            joined: Vec::new(),
            pending: BytesMut::new(),
            seam,
            joining,
            completion: Completion::new(api, choices),
            got_event: false,
            saw_event: false,
        }
    }

    /// Frames what a read brought (an over-long event turns it into an
    /// error); whether the stream ended.
    fn take_chunk(&mut self, read: &mut Result<Option<Bytes>, GatewayError>) -> bool {
        let mut ended = match &*read {
            Ok(Some(c)) => {
                self.framer.push(c, &mut self.frames);
                false
            }
            Ok(None) => {
                self.framer.finish(&mut self.frames);
                true
            }
            Err(_) => true,
        };
        if self.framer.overlong() {
            *read = Err(protocol_err(
                &self.name,
                "an event is longer than the gateway reads (16MiB)",
            ));
            ended = true;
        }
        ended
    }

    /// Queues the framed events for the client; `Some`: the stream stops
    /// here. `Err`: the first event is an error and nothing was sent.
    fn relay_frames(
        &mut self,
        head_pending: bool,
        outcome: &mut Outcome,
    ) -> Result<Option<Stop>, GatewayError> {
        self.saw_event = false;
        let mut frames = std::mem::take(&mut self.frames);
        let mut stop = None;
        for frame in frames.drain(..) {
            stop = self.relay_frame(&frame, head_pending, outcome)?;
            if stop.is_some() {
                break;
            }
        }
        self.frames = frames;
        Ok(stop)
    }

    /// Queues one frame for the client (see [`Self::relay_frames`]).
    fn relay_frame(
        &mut self,
        frame: &Frame,
        head_pending: bool,
        outcome: &mut Outcome,
    ) -> Result<Option<Stop>, GatewayError> {
        let Some(ev) = &frame.event else {
            self.pending.extend_from_slice(&frame.raw);
            return Ok(None);
        };
        let resumable = self.seam.as_ref().is_some_and(Seam::resumable);
        let is_error = crate::sse::stream_error(ev, None).is_some();
        if (head_pending || resumable) && is_error {
            let e = protocol_err(
                &self.name,
                format!("error inside the stream: {:.300}", ev.data),
            );
            if head_pending {
                // the very first event is an error: nothing was sent, try elsewhere
                return Err(e);
            }
            return Ok(Some(Stop::Broke(e)));
        }
        if malformed(self.api, &ev.data) {
            // a client SDK would fail on it: skip it, count it
            skip_malformed("passthrough", &self.name, &ev.data, None);
            if let Some(c) = outcome.capture.as_mut() {
                c.spoil(); // the answer lacks it: never kept
            }
            return Ok(None);
        }
        self.got_event = true;
        self.saw_event = true;
        self.completion.observe(ev);
        if !ev.is_done() {
            outcome.events_out += 1;
        }
        if is_error {
            // an upstream may quote the key it was sent in its error
            if let Cow::Owned(clean) =
                crate::logging::scrub_known(&String::from_utf8_lossy(&frame.raw))
            {
                self.pending.extend_from_slice(clean.as_bytes());
                return Ok(None);
            }
        }
        if self.seam.is_some() && self.joining.is_some() {
            return Ok(self.join_event(frame, ev, outcome));
        }
        self.pass_event(frame, ev, outcome);
        Ok(None)
    }

    /// Queues a continuation's event: only what the client lacks, `usage`
    /// metered (and counting the broken stream's). `Some`: it diverged.
    fn join_event(&mut self, frame: &Frame, ev: &Event, outcome: &mut Outcome) -> Option<Stop> {
        if let Some(c) = outcome.capture.as_mut() {
            c.spoil(); // a continued answer is never kept
        }
        let seam = self.seam.as_mut()?;
        if ev.is_done() {
            self.pending.extend_from_slice(&frame.raw);
            return None;
        }
        let v = match serde_json::from_str::<Value>(&ev.data) {
            Ok(v) => v,
            Err(e) => {
                skip_malformed("passthrough", &self.name, &ev.data, Some(&e));
                return None;
            }
        };
        if let Err(why) = seam.join(v, &mut self.joined) {
            return Some(Stop::Diverged(why));
        }
        for mut v in self.joined.drain(..) {
            if let Some(u) = v.get_mut("usage").filter(|u| !u.is_null()) {
                outcome.meter(u);
                seam.add_earlier_usage(u);
            }
            match shape::usage_event(&v, self.strip_usage) {
                UsageEvent::Keep => self
                    .pending
                    .extend_from_slice(format!("data: {v}\n\n").as_bytes()),
                UsageEvent::Drop => {}
                UsageEvent::Rewrite(event) => self.pending.extend_from_slice(event.as_bytes()),
            }
        }
        None
    }

    /// Queues an event of the first answer as it is, `usage` metered (and
    /// stripped when asked).
    fn pass_event(&mut self, frame: &Frame, ev: &Event, outcome: &mut Outcome) {
        if let Some(s) = self.seam.as_mut() {
            s.observe(&ev.data);
        }
        if let Some(c) = outcome.capture.as_mut() {
            c.event(ev.event.as_deref(), &ev.data);
        }
        if shape::find_usage_key(&frame.raw).is_some() {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                if let Some(u) = shape::messages_usage(&v) {
                    outcome.add_usage(u);
                } else if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    outcome.meter(u);
                }
                if self.api == Api::Responses {
                    // the final event (it carries usage) holds the whole response
                    if let Some(r) = v.get("response").filter(|r| r.is_object()) {
                        outcome.response_ids = crate::responses::affinity::ids_of(r);
                    }
                }
                match shape::usage_event(&v, self.strip_usage) {
                    UsageEvent::Keep => self.pending.extend_from_slice(&frame.raw),
                    UsageEvent::Drop => {}
                    UsageEvent::Rewrite(event) => self.pending.extend_from_slice(event.as_bytes()),
                }
                return;
            }
        }
        self.pending.extend_from_slice(&frame.raw);
    }

    /// How the client's stream ends after the relay stopped (`None`: the
    /// body ended); a break that can be continued is left in `resume`. Not
    /// async: a future of it would hold a second `SseRelay` and `Answer`.
    fn end(&mut self, stop: Option<Stop>, resume: &mut Option<Box<Resume>>) -> Ending {
        let name = &self.name;
        let stop = match stop {
            None if self.completion.complete() => None,
            // a clean end of the body, but not of the answer: never pass it off as complete
            None => Some(Stop::Broke(protocol_err(
                name,
                "the stream ended before the answer was complete",
            ))),
            s => s,
        };
        let mode = self.joining.map_or("first", |m| m.as_str());
        match stop {
            None => Ending::Complete,
            Some(Stop::Diverged(why)) => {
                metrics::CONTINUATIONS
                    .with_label_values(&[mode, "diverged"])
                    .inc();
                let e = protocol_err(name, format!("the stream broke and {why}"));
                log::warn!("upstream {name}: {}", e.message());
                Ending::ErrorEvent(e)
            }
            Some(Stop::Broke(e)) => match self.seam.take().filter(Seam::resumable) {
                Some(seam) => {
                    log::warn!(
                        "upstream {name} broke mid-stream ({}); {} bytes of text sent, to be continued",
                        e.message(),
                        seam.sent_len()
                    );
                    *resume = Some(Box::new(Resume {
                        seam,
                        broke: e.message(),
                        agg: None,
                    }));
                    Ending::Continue(e)
                }
                None => {
                    log::warn!("upstream {name} failed mid-stream: {}", e.message());
                    Ending::ErrorEvent(e)
                }
            },
        }
    }

    /// Counts and logs a continuation that completed the stream.
    fn count_continued(&self) {
        if let Some(m) = self.joining {
            let mode = m.as_str();
            metrics::CONTINUATIONS
                .with_label_values(&[mode, "continued"])
                .inc();
            log::info!("upstream {} continued a broken stream ({mode})", self.name);
        }
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
