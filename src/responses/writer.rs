//! What a Responses client gets written when its call was bridged to chat:
//! a 2xx chat answer (the upstream's, or the cache's) becomes a response (a
//! stream event by event, a completion whole); errors pass as they are
//! (OpenAI's shape is the Responses API's too).

use super::answer::{to_response, Encoder};
use crate::anthropic::writer::MAX_HELD;
use crate::forward::headers::{Head, Reshape, Reshaped as Out};
use crate::sse::{Frame, Framer};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use serde_json::{json, Value};

/// A stream on its way: frames in, Responses events out.
struct Relay(Framer, Encoder, Vec<Frame>);

#[derive(Default)]
enum Mode {
    #[default]
    Pass,
    Stream(Box<Relay>),
    Held {
        head: Box<Head>,
        body: BytesMut,
        overflow: bool,
    },
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Pass => "Pass",
            Mode::Stream(_) => "Stream",
            Mode::Held { .. } => "Held",
        })
    }
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
        let sse = head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if sse {
            head.headers.remove(CONTENT_LENGTH);
            head.headers
                .insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
            self.mode = Mode::Stream(Box::new(Relay(Framer::new(), Encoder::new(), Vec::new())));
            return Out::Head(head, end);
        }
        self.mode = Mode::Held {
            head: Box::new(head),
            body: BytesMut::new(),
            overflow: false,
        };
        if end {
            return self.body(None, true);
        }
        Out::Nothing
    }

    fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        match &mut self.mode {
            Mode::Pass => Out::Body(data.unwrap_or_default(), end),
            Mode::Stream(s) => {
                let Relay(framer, encoder, frames) = &mut **s;
                let mut out = String::new();
                if let Some(d) = &data {
                    framer.push(d, frames);
                }
                if end {
                    framer.finish(frames);
                }
                for f in frames.drain(..) {
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
                    encoder.error(
                        "The stream ended before the answer was complete.",
                        "stream_broken",
                        &mut out,
                    );
                }
                Out::Body(Bytes::from(out), end)
            }
            Mode::Held { body, overflow, .. } => {
                if let Some(d) = data {
                    if *overflow || body.len() + d.len() > MAX_HELD {
                        *overflow = true;
                        body.clear();
                    } else {
                        body.extend_from_slice(&d);
                    }
                }
                if !end {
                    return Out::Nothing;
                }
                self.finish_held()
            }
        }
    }
}

impl ResponsesWriter {
    fn finish_held(&mut self) -> Out {
        let Mode::Held {
            head,
            body,
            overflow,
        } = std::mem::take(&mut self.mode)
        else {
            return Out::Nothing;
        };
        let mut head = *head;
        let chat = serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|_| !overflow);
        let v = match chat {
            Some(c) if c["choices"].is_array() => to_response(&c),
            _ => {
                head.status = http::StatusCode::BAD_GATEWAY;
                json!({"error": {"message": "The upstream's answer is not a chat completion.",
                    "type": "upstream_error", "code": "upstream_error"}})
            }
        };
        let bytes = Bytes::from(v.to_string());
        let h = &mut head.headers;
        h.remove(TRANSFER_ENCODING);
        h.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
        Out::Whole(head, bytes)
    }
}
