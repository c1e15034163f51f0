//! What a Responses client gets written when its call was bridged to chat:
//! a 2xx chat answer (the upstream's, or the cache's) becomes a response (a
//! stream event by event, a completion whole); errors pass as they are
//! (OpenAI's shape is the Responses API's too).

use super::answer::{to_response, Encoder};
use crate::forward::headers::{Head, Reshape, Reshaped as Out};
use crate::forward::held::{is_sse, rewritten_stream, whole_json, Held};
use crate::sse::{Frame, Framer};
use bytes::Bytes;
use serde_json::{json, Value};

/// A stream on its way: frames in, Responses events out.
struct Relay(Framer, Encoder, Vec<Frame>);

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

#[derive(Debug, Default)]
enum Mode {
    #[default]
    Pass,
    Stream(Box<Relay>),
    Held(Box<Held>),
}

#[derive(Debug, Default)]
pub struct ResponsesWriter {
    mode: Mode,
}

impl Reshape for ResponsesWriter {
    fn head(&mut self, mut head: Head, end: bool) -> Out {
        // errors pass (their shape is the same); every 2xx is a chat answer,
        // the upstream's or the cache's
        if !head.status.is_success() {
            self.mode = Mode::Pass;
            return Out::Head(head, end);
        }
        if is_sse(&head) {
            rewritten_stream(&mut head);
            self.mode = Mode::Stream(Box::new(Relay(Framer::new(), Encoder::new(), Vec::new())));
            return Out::Head(head, end);
        }
        self.mode = Mode::Held(Box::new(Held::new(head)));
        if end {
            return self.body(None, true);
        }
        Out::Nothing
    }

    fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        match &mut self.mode {
            Mode::Pass => Out::Body(data.unwrap_or_default(), end),
            Mode::Stream(s) => Out::Body(s.body(data.as_ref(), end), end),
            Mode::Held(h) => {
                h.push(data);
                if !end {
                    return Out::Nothing;
                }
                match std::mem::take(&mut self.mode) {
                    Mode::Held(h) => finish_held(*h),
                    _ => Out::Nothing,
                }
            }
        }
    }
}

impl Relay {
    /// The Responses events for a piece of the chat stream.
    fn body(&mut self, data: Option<&Bytes>, end: bool) -> Bytes {
        let Relay(framer, encoder, frames) = self;
        let mut out = String::new();
        if let Some(d) = data {
            framer.push(d, frames);
        }
        if end {
            framer.finish(frames);
        }
        for f in std::mem::take(frames) {
            let Some(ev) = f.event else {
                if f.raw.starts_with(b":") {
                    out.push_str(": keepalive\n\n");
                }
                continue;
            };
            if ev.is_done() {
                encoder.done(&mut out);
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            match crate::sse::stream_error(&ev, Some(&v)) {
                Some(e) => {
                    let message = e["message"].as_str().unwrap_or("The upstream failed.");
                    let code = e["code"]
                        .as_str()
                        .or(e["type"].as_str())
                        .unwrap_or("upstream_error");
                    encoder.error(message, code, &mut out);
                }
                None => encoder.chunk(&v, &mut out),
            }
        }
        if end && !encoder.ended() {
            // no [DONE]: whole if a finish reason came, else broken
            match encoder.finished() {
                true => encoder.done(&mut out),
                false => encoder.error(
                    "The stream ended before the answer was complete.",
                    "stream_broken",
                    &mut out,
                ),
            }
        }
        Bytes::from(out)
    }
}

/// The held chat answer as a response.
fn finish_held(held: Held) -> Out {
    let chat = held
        .body()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let (status, v) = match chat {
        Some(c) if c["choices"].is_array() => (held.head.status.as_u16(), to_response(&c)),
        _ => (
            502,
            json!({"error": {"message": "The upstream's answer is not a chat completion.",
                "type": "upstream_error", "code": "upstream_error"}}),
        ),
    };
    whole_json(held.head, status, Bytes::from(v.to_string()))
}
