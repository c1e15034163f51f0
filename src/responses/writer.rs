//! What a Responses client gets written when its call was bridged to chat:
//! a 2xx chat answer (the upstream's, or the cache's) becomes a response (a
//! stream event by event, a completion whole); errors pass as they are
//! (OpenAI's shape is the Responses API's too).

use super::answer::{to_response, Encoder};
use crate::forward::headers::{Head, Reshape, Reshaped as Out};
use crate::forward::held::{is_sse, rewritten_stream, whole_json, Held, Retell, Retold, Way};
use crate::sse::Event;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub struct ResponsesWriter {
    way: Way<Encoder>,
}

impl Reshape for ResponsesWriter {
    fn head(&mut self, mut head: Head, end: bool) -> Out {
        // errors pass (their shape is the same); every 2xx is a chat answer,
        // the upstream's or the cache's
        if !head.status.is_success() {
            self.way = Way::Pass;
            return Out::Head(head, end);
        }
        if is_sse(&head) {
            rewritten_stream(&mut head);
            self.way = Way::Stream(Box::new(Retold::new(Encoder::new())));
            return Out::Head(head, end);
        }
        self.way.hold(head, end, finish_held)
    }

    fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        self.way.body(data, end, finish_held)
    }
}

impl Retell for Encoder {
    fn event(&mut self, ev: &Event, out: &mut String) {
        if ev.is_done() {
            return self.done(out);
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        match crate::sse::stream_error(ev, Some(&v)) {
            Some(e) => {
                let message = e["message"].as_str().unwrap_or("The upstream failed.");
                let code = e["code"]
                    .as_str()
                    .or(e["type"].as_str())
                    .unwrap_or("upstream_error");
                self.error(message, code, out);
            }
            None => self.chunk(&v, out),
        }
    }

    fn keepalive(&mut self, out: &mut String) {
        out.push_str(": keepalive\n\n");
    }

    fn end(&mut self, out: &mut String) {
        if self.ended() {
            return;
        }
        // no [DONE]: whole if a finish reason came, else broken
        match self.finished() {
            true => self.done(out),
            false => self.error(
                "The stream ended before the answer was complete.",
                "stream_broken",
                out,
            ),
        }
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
