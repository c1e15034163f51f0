//! Delivering a 2xx answer to the client: SSE pass-through event by event,
//! raw pass-through, stream → JSON aggregation, JSON → stream synthesis; and
//! whole bodies (error answers). `Err` from [`deliver`] means nothing reached
//! the client yet, so the attempt loop may try elsewhere; after the first
//! byte, a failure ends an SSE stream with an error event (never `[DONE]`)
//! and any other body with a closed connection.

use super::attempt::{protocol_err, Answer, Buffered, MAX_CONVERTED_BODY};
use super::call::{end_with_error_event, Downstream, RelayEnd, Resume};
use super::client::unless_client_gone;
use super::headers::{self, Head};
use super::shape::{self, Delivery};
use super::stream::{relay_sse, skip_malformed};
use crate::error::GatewayError;
use crate::metrics;
use crate::routes::Api;
use crate::sse::aggregate::{AggregateError, Aggregator};
use crate::sse::complete::Completion;
use crate::sse::seam::{Mode, Seam};
use crate::sse::{Event, Frame, Framer};
use bytes::{Bytes, BytesMut};
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
    if down.resume.as_ref().is_some_and(|r| r.open())
        && !(is_sse
            && matches!(answer.delivery, Delivery::Pass { .. })
            && (200..300).contains(&status))
    {
        // the client has part of a stream: only a stream can continue it
        return Err(protocol_err(
            answer.name(),
            "the continuation is not a stream",
        ));
    }
    if !(200..300).contains(&status) {
        return Ok(Box::pin(relay_raw(down, answer)).await);
    }
    if let Some(c) = down.outcome.capture.as_mut() {
        match &down.resume {
            // a continued answer is never kept
            Some(_) => c.spoil(),
            None => c.restart(),
        }
    }
    // every way is boxed: inline, the largest would size the future of every
    // request, a stream's included, for as long as it lives
    match answer.delivery {
        Delivery::Aggregate(api) if is_sse => Box::pin(aggregate(down, answer, api)).await,
        Delivery::Synthesize { api, include_usage } if is_json => {
            Box::pin(synthesize(down, answer, api, include_usage)).await
        }
        Delivery::Pass { strip_usage } if is_sse => {
            Box::pin(relay_sse(down, answer, strip_usage)).await
        }
        _ => Ok(Box::pin(relay_raw(down, answer)).await),
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
    if down.client.write_head(header, false).await.is_err()
        || down.client.write_body(Some(body), true).await.is_err()
    {
        return RelayEnd::ClientGone;
    }
    RelayEnd::Complete
}

/// Stream → one JSON answer. A broken, truncated or erroring stream is an
/// `Err` (nothing was sent), so the caller retries it elsewhere; one that can
/// be continued leaves its aggregation in `down.resume` for a prefill
/// continuation to complete. A client that leaves meanwhile ends the read.
async fn aggregate(
    down: &mut Downstream<'_>,
    mut answer: Answer,
    api: Api,
) -> Result<RelayEnd, GatewayError> {
    let Downstream {
        client,
        resume,
        timeouts,
        deadline,
        choices,
        seam_cap,
        ..
    } = down;
    let limits = Reading {
        timeouts: *timeouts,
        deadline: *deadline,
        choices: *choices,
        seam_cap: *seam_cap,
    };
    let merge = merge_stream(&mut answer, api, resume, limits);
    let merged = match unless_client_gone(client, merge).await {
        None => return Ok(RelayEnd::ClientGone),
        Some(m) => m?,
    };
    metrics::TRANSFORMS.with_label_values(&["aggregated"]).inc();
    if let Some(u) = merged.get("usage").filter(|u| !u.is_null()) {
        down.outcome.meter(u);
    }
    let header = headers::client_header(answer.head(), answer.name(), Some("application/json"));
    answer.release().await;
    let body = Bytes::from(
        serde_json::to_vec(&merged).map_err(|e| GatewayError::Internal(e.to_string()))?,
    );
    if let Some(c) = down.outcome.capture.as_mut() {
        c.whole(&body);
    }
    Ok(send_whole(down, header, body, false).await)
}

/// What bounds the reading of one aggregated stream.
#[derive(Clone, Copy)]
struct Reading {
    timeouts: crate::config::Timeouts,
    deadline: Instant,
    choices: u32,
    seam_cap: usize,
}

/// Reads and merges the stream (continuing the aggregation in `resume`,
/// or leaving it there when the stream breaks and can be continued).
async fn merge_stream(
    answer: &mut Answer,
    api: Api,
    resume: &mut Option<Box<Resume>>,
    down: Reading,
) -> Result<serde_json::Value, GatewayError> {
    let (agg, seam) = match resume.take() {
        Some(r) if r.seam.mode() == Some(Mode::Prefill) => match r.agg {
            Some(agg) => (agg, Some(r.seam)),
            None => (Aggregator::new(api), None),
        },
        _ => (
            Aggregator::new(api),
            Seam::new(api, down.choices, down.seam_cap),
        ),
    };
    let name = answer.name().to_string();
    let mut merge = Merge::new(name, api, agg, seam, down.choices);
    let mut size = 0usize;
    let mut done = false;
    let first_deadline = Instant::now() + down.timeouts.first_byte;
    let broke = loop {
        if done {
            break None;
        }
        let read = answer
            .read_stream_chunk(
                merge.seen_event,
                first_deadline,
                &down.timeouts,
                down.deadline,
            )
            .await;
        match read {
            Ok(Some(c)) => {
                size += c.len();
                if size > MAX_CONVERTED_BODY {
                    return Err(protocol_err(
                        &merge.name,
                        "the stream is larger than the gateway aggregates (64MiB)",
                    ));
                }
                merge.framer.push(&c, &mut merge.frames);
            }
            Ok(None) => {
                merge.framer.finish(&mut merge.frames);
                done = true;
            }
            Err(e) => break Some(e),
        }
        if let Some(e) = merge.merge_frames()? {
            break Some(e);
        }
    };
    merge.end(broke, resume)
}

/// The state of one stream being merged into a JSON answer.
struct Merge {
    /// The upstream's name, for errors and logs.
    name: String,
    api: Api,
    agg: Aggregator,
    /// What of the answer a continuation could resume from.
    seam: Option<Seam>,
    /// This answer continues a broken stream's aggregation.
    joining: bool,
    framer: Framer,
    frames: Vec<Frame>,
    /// A continuation's events, joined to the aggregation so far.
    joined: Vec<serde_json::Value>,
    completion: Completion,
    /// An event arrived: reads now wait `idle`, not `first_byte`.
    seen_event: bool,
}

impl Merge {
    fn new(name: String, api: Api, agg: Aggregator, seam: Option<Seam>, choices: u32) -> Self {
        let joining = seam.as_ref().and_then(Seam::mode).is_some();
        Merge {
            name,
            api,
            agg,
            seam,
            joining,
            framer: Framer::new(),
            frames: Vec::new(),
            joined: Vec::new(),
            completion: Completion::new(api, choices),
            seen_event: false,
        }
    }

    /// Merges the framed events. `Ok(Some)`: the stream broke (it may be
    /// continued); `Err`: the answer failed.
    fn merge_frames(&mut self) -> Result<Option<GatewayError>, GatewayError> {
        let mut frames = std::mem::take(&mut self.frames);
        let mut broke = None;
        for frame in frames.drain(..) {
            let Some(ev) = frame.event else { continue };
            broke = self.merge_event(ev)?;
            if broke.is_some() {
                break;
            }
        }
        self.frames = frames;
        Ok(broke)
    }

    /// Merges one event (see [`Self::merge_frames`]).
    fn merge_event(&mut self, ev: Event) -> Result<Option<GatewayError>, GatewayError> {
        let name = &self.name;
        let fail = |e: AggregateError| protocol_err(name, e.to_string());
        self.seen_event = true;
        self.completion.observe(&ev);
        if ev.is_done() {
            return Ok(None);
        }
        let v: serde_json::Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(e) => {
                // one broken event does not spoil the answer: skip it, count it
                skip_malformed("aggregated", name, &ev.data, Some(&e));
                return Ok(None);
            }
        };
        if let Some(err) = crate::sse::stream_error(&ev, Some(&v)) {
            if !matches!(self.api, Api::Responses)
                || v.get("type").and_then(|t| t.as_str()) == Some("error")
            {
                return Ok(Some(fail(AggregateError::Upstream(err))));
            }
        }
        match self.seam.as_mut() {
            Some(s) if self.joining => {
                if let Err(why) = s.join(v, &mut self.joined) {
                    // nothing was sent: the next candidate starts over
                    return Err(protocol_err(name, format!("the continuation {why}")));
                }
                for mut v in self.joined.drain(..) {
                    if let Some(u) = v.get_mut("usage").filter(|u| !u.is_null()) {
                        s.add_earlier_usage(u);
                    }
                    self.agg.push(ev.event.as_deref(), &v).map_err(fail)?;
                }
            }
            other => {
                if let Some(s) = other {
                    s.observe_value(&v);
                }
                self.agg.push(ev.event.as_deref(), &v).map_err(fail)?;
            }
        }
        Ok(None)
    }

    /// The merged answer, or why the stream broke; one that can be continued
    /// leaves its aggregation in `resume`.
    fn end(
        self,
        broke: Option<GatewayError>,
        resume: &mut Option<Box<Resume>>,
    ) -> Result<serde_json::Value, GatewayError> {
        let Merge {
            name,
            agg,
            seam,
            joining,
            completion,
            seen_event,
            ..
        } = self;
        let broke = broke.or_else(|| {
            (!completion.complete())
                .then(|| protocol_err(&name, "the stream ended before the answer was complete"))
        });
        if let Some(e) = broke {
            if let Some(seam) = seam.filter(|s| seen_event && s.resumable()) {
                log::warn!(
                    "upstream {name} broke mid-stream ({}); {} bytes of text aggregated, to be continued",
                    e.message(),
                    seam.sent_len()
                );
                *resume = Some(Box::new(Resume {
                    seam,
                    broke: e.message(),
                    agg: Some(agg),
                }));
            }
            return Err(e);
        }
        let merged = agg
            .finish()
            .map_err(|e| protocol_err(&name, e.to_string()))?;
        if joining {
            metrics::CONTINUATIONS
                .with_label_values(&["prefill", "continued"])
                .inc();
            log::info!("upstream {name} continued a broken stream (prefill, aggregated)");
        }
        Ok(merged)
    }
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
        down.outcome.meter(u);
    }
    if let Some(c) = down.outcome.capture.as_mut() {
        c.whole(&body);
    }
    let sse = match api {
        Api::Completions => crate::sse::synth::completion(&v, include_usage),
        Api::Responses => crate::sse::synth::responses(&v),
        _ => crate::sse::synth::chat(&v, include_usage),
    };
    metrics::TRANSFORMS
        .with_label_values(&["synthesized"])
        .inc();
    let header = headers::client_header(answer.head(), answer.name(), Some("text/event-stream"));
    answer.release().await;
    Ok(send_whole(down, header, Bytes::from(sse), true).await)
}

/// Streams the upstream answer to the client as it arrives, unchanged.
async fn relay_raw(down: &mut Downstream<'_>, mut answer: Answer) -> RelayEnd {
    let status = answer.status();
    let ct = answer.content_type();
    let is_sse = ct.starts_with("text/event-stream");
    // only JSON answers carry `usage` (not audio, images or files)
    let meter =
        (200..300).contains(&status) && (ct.is_empty() || ct.starts_with("application/json"));
    let mut kept = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut whole = true;
    // a cached call keeps up to its cache.max_entry
    let keep_up_to = down.outcome.capture.as_ref().map_or(METER_JSON_LIMIT, |c| {
        (c.max() as usize).max(METER_JSON_LIMIT)
    });
    down.outcome.status = status;
    let head = headers::relayed_head(answer.head(), answer.name(), true, down.cors.as_ref());
    if down.client.write_head(head, false).await.is_err() {
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
                            if kept.len() + chunk.len() <= keep_up_to {
                                kept.extend_from_slice(&chunk);
                            } else {
                                whole = false;
                            }
                        }
                    }
                }
                if is_sse {
                    down.outcome.first_event.get_or_insert_with(Instant::now);
                }
                if down.client.write_body(Some(chunk), false).await.is_err() {
                    return RelayEnd::ClientGone;
                }
                if answer.body_done() {
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
                    return Box::pin(end_with_error_event(&mut down.client, &e)).await;
                }
                return RelayEnd::Broken(e.message());
            }
        }
    }
    let kept: &[u8] = match &first {
        Some(b) => b,
        None => &kept,
    };
    if meter {
        if let Some(u) = shape::usage_in_json(kept) {
            down.outcome.add_usage(u);
        }
        if down.api == Api::Responses && whole {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(kept) {
                down.outcome.response_ids = crate::responses::affinity::ids_of(&v);
            }
        }
    }
    if let Some(c) = down.outcome.capture.as_mut() {
        // copied: a shared piece would hold the upstream's whole read buffer
        if meter && whole {
            c.whole(kept);
        } else {
            c.spoil();
        }
    }
    // the upstream's part is done before the client's answer ends
    answer.release().await;
    if down.client.write_body(None, true).await.is_err() {
        return RelayEnd::ClientGone;
    }
    RelayEnd::Complete
}

/// Passes a buffered upstream answer on as it is.
pub async fn send_buffered(down: &mut Downstream<'_>, b: Box<Buffered>) -> RelayEnd {
    // boxed: see `deliver`
    Box::pin(send_whole(down, b.header, b.body, false)).await
}
