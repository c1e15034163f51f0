//! What a Messages client gets written: every answer head and body of its
//! call passes here on its way out (`forward::client::Client`), so every
//! path of the pipeline (pass-through, aggregated, synthesized, errors, the
//! cache) answers in the Messages shape without knowing it.
//!
//! - An SSE answer (2xx) is re-framed event by event ([`Encoder`]).
//! - Anything else is held whole (at most `forward::held::MAX_HELD`) and written at its
//!   end: a 2xx chat completion as a message, any other status as a
//!   Messages error (503 as 529 `overloaded_error`).

use super::answer::{error_body, error_status, to_message};
use super::stream::Encoder;
use crate::forward::headers::Head;
use crate::forward::held::{is_sse, rewritten_stream, whole_json, Held, Retell, Retold};
use crate::sse::Event;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;

#[derive(Debug, Default)]
enum Mode {
    #[default]
    Head,
    Stream(Box<Retold<Encoder>>),
    /// A `kind: anthropic` upstream's stream, passed (see [`super::native`]).
    Native(Box<super::native::NativeStream>),
    Held(Box<Held>),
}

/// One Messages call's answer on its way out.
#[derive(Debug)]
pub struct Writer {
    model: String,
    mode: Mode,
    /// A `kind: anthropic` upstream answers: its answers pass as they are,
    /// only the gateway's own are reshaped.
    native: bool,
}

use crate::forward::headers::Reshaped as Out;

impl crate::forward::headers::Reshape for Writer {
    fn head(&mut self, head: Head, end: bool) -> Out {
        Writer::head(self, head, end)
    }
    fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        Writer::body(self, data, end)
    }
}

impl Writer {
    pub fn new(model: &str) -> Writer {
        Writer {
            model: model.to_string(),
            mode: Mode::Head,
            native: false,
        }
    }

    /// A writer for calls a `kind: anthropic` upstream answers natively.
    pub fn native() -> Writer {
        Writer {
            native: true,
            ..Writer::new("")
        }
    }

    /// The answer's head.
    pub fn head(&mut self, mut head: Head, end: bool) -> Out {
        let status = head.status.as_u16();
        let sse = is_sse(&head) && (200..300).contains(&status);
        let from_upstream = head
            .headers
            .contains_key(&crate::forward::headers::X_SWITCHYARD_UPSTREAM);
        if self.native && from_upstream && !matches!(status, 401 | 403) {
            // already in the Messages API's shape: the body passes too
            self.mode = match sse {
                true => {
                    head.headers.remove(CONTENT_LENGTH);
                    Mode::Native(Box::default())
                }
                false => Mode::Head,
            };
            return Out::Head(head, end);
        }
        if sse {
            rewritten_stream(&mut head);
            head.headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            self.mode = Mode::Stream(Box::new(Retold::new(Encoder::new(&self.model))));
            return Out::Head(head, end);
        }
        self.mode = Mode::Held(Box::new(Held::new(head)));
        if end {
            return self.body(None, true);
        }
        Out::Nothing
    }

    /// A piece of the body; `end`: the last.
    pub fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        match &mut self.mode {
            Mode::Head => Out::Body(data.unwrap_or_default(), end),
            Mode::Native(n) => Out::Body(n.push(data.as_ref(), end), end),
            Mode::Stream(s) => Out::Body(s.body(data.as_ref(), end), end),
            Mode::Held(h) => {
                h.push(data);
                if !end {
                    return Out::Nothing;
                }
                match std::mem::take(&mut self.mode) {
                    Mode::Held(h) => self.finish_held(*h),
                    _ => Out::Nothing,
                }
            }
        }
    }

    /// The held answer, translated.
    fn finish_held(&self, held: Held) -> Out {
        let status = held.head.status.as_u16();
        let bad = |why: &str| (502, error_body(502, why.as_bytes()));
        let from_upstream = held.head.headers.contains_key("x-switchyard-upstream");
        if let Some(body) = held.body().filter(|_| (200..300).contains(&status)) {
            // the usual completion, read and written without JSON trees
            if let Some(m) = super::typed::message(body, &self.model) {
                return whole_json(held.head, status, Bytes::from(m));
            }
        }
        let (status, v) = match held.body() {
            None => bad("The upstream's answer is too large to translate."),
            Some(body) if (200..300).contains(&status) => {
                match serde_json::from_slice::<serde_json::Value>(body) {
                    Ok(v) if v.get("error").is_some_and(|e| !e.is_null()) => {
                        (502, error_body(502, body))
                    }
                    Ok(chat) if chat.get("choices").is_some() => {
                        (status, to_message(&chat, &self.model))
                    }
                    // the gateway's own count_tokens answer
                    Ok(count) if count.get("input_tokens").is_some() => (status, count),
                    _ => bad("The upstream's answer is not a chat completion."),
                }
            }
            Some(body) if from_upstream && matches!(status, 401 | 403) => {
                // the upstream refused the gateway's key: not the client's
                let mut v = error_body(502, body);
                v["error"]["message"] = format!(
                    "The upstream refused the gateway's key ({status}): {}",
                    v["error"]["message"].as_str().unwrap_or("")
                )
                .into();
                (502, v)
            }
            Some(body) => (error_status(status), error_body(status, body)),
        };
        whole_json(held.head, status, Bytes::from(v.to_string()))
    }
}

impl Retell for Encoder {
    fn event(&mut self, ev: &Event, out: &mut String) {
        if ev.is_done() {
            return self.done(out);
        }
        // the usual chunk is read as it is; an error (or anything odd) as a tree
        let error = ev.event.as_deref() == Some("error") || ev.data.contains("\"error\"");
        if !error {
            if let Ok(c) = serde_json::from_str::<super::stream::Chunk>(&ev.data) {
                return self.read(&c, out);
            }
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) else {
            return; // not JSON: skipped, as the relay does
        };
        match crate::sse::stream_error(ev, Some(&v)) {
            Some(e) => {
                let wrapped = serde_json::json!({"error": e});
                let status = error_event_status(&wrapped);
                self.error(status, wrapped.to_string().as_bytes(), out);
            }
            None => self.chunk(&v, out),
        }
    }

    fn keepalive(&mut self, out: &mut String) {
        // the gateway's keepalive: Anthropic's is a ping
        out.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    }

    fn end(&mut self, out: &mut String) {
        if self.ended() {
            return;
        }
        // no [DONE]: whole if a finish reason came, else broken
        if self.finished() {
            self.done(out);
        } else {
            let why =
                br#"{"error": {"message": "The stream ended before the answer was complete."}}"#;
            self.error(502, why, out);
        }
    }
}

/// The status an in-stream error event stands for (for its Messages type).
fn error_event_status(v: &serde_json::Value) -> u16 {
    let code = v
        .pointer("/error/code")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let kind = v
        .pointer("/error/type")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    if code.contains("rate_limit") || kind.contains("rate_limit") {
        429
    } else if code.contains("overloaded")
        || kind.contains("overloaded")
        || code == "no_available_keys"
    {
        529
    } else if code.contains("timeout") {
        504
    } else {
        500
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;

    fn head(status: u16, ct: &'static str) -> Head {
        let mut h = crate::forward::headers::head(http::StatusCode::from_u16(status).unwrap(), 4);
        h.headers
            .insert(CONTENT_TYPE, http::HeaderValue::from_static(ct));
        h
    }

    #[test]
    fn a_held_answer_and_an_error_are_translated_at_the_end() {
        let mut w = Writer::new("claude-x");
        assert!(matches!(
            w.head(head(200, "application/json"), false),
            Out::Nothing
        ));
        let chat =
            br#"{"id":"c1","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}"#;
        assert!(matches!(
            w.body(Some(Bytes::from_static(&chat[..10])), false),
            Out::Nothing
        ));
        let Out::Whole(h, body) = w.body(Some(Bytes::from_static(&chat[10..])), true) else {
            panic!("not whole")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (h.status.as_u16(), v["content"][0]["text"].as_str()),
            (200, Some("hi"))
        );
        assert_eq!(h.headers[CONTENT_LENGTH], body.len().to_string().as_str());
        let mut w = Writer::new("claude-x");
        let Out::Whole(h, body) = w.head(head(503, "application/json"), true) else {
            panic!("not whole")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (h.status.as_u16(), v["error"]["type"].as_str()),
            (529, Some("overloaded_error"))
        );
    }

    #[test]
    fn a_stream_is_reframed_across_any_split() {
        let chat = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                    data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let mut w = Writer::new("m");
        assert!(matches!(
            w.head(head(200, "text/event-stream"), false),
            Out::Head(..)
        ));
        let mut out = String::new();
        for piece in chat.as_bytes().chunks(7) {
            if let Out::Body(b, _) = w.body(Some(Bytes::copy_from_slice(piece)), false) {
                out.push_str(std::str::from_utf8(&b).unwrap());
            }
        }
        assert!(out.starts_with("event: message_start\n"), "{out}");
        assert!(
            out.contains(r#"{"type":"text_delta","text":"Hi"}"#),
            "{out}"
        );
        assert!(
            out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{out}"
        );
    }

    #[test]
    fn ends_without_done_upstream_refusals_and_odd_answers() {
        let run = |chat: &str| {
            let mut w = Writer::new("m");
            let _ = w.head(head(200, "text/event-stream"), false);
            match w.body(Some(Bytes::copy_from_slice(chat.as_bytes())), true) {
                Out::Body(b, true) => String::from_utf8(b.to_vec()).unwrap(),
                _ => panic!("no body"),
            }
        };
        let finished = run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\n");
        assert!(
            finished.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{finished}"
        );
        let cut = run("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n");
        assert!(
            cut.contains("event: error") && !cut.contains("message_stop"),
            "{cut}"
        );
        let whole = |status: u16, upstream: bool, body: &'static [u8]| {
            let mut w = Writer::new("m");
            let mut h = head(status, "application/json");
            if upstream {
                h.headers.insert(
                    "x-switchyard-upstream",
                    http::HeaderValue::from_static("up"),
                );
            }
            let _ = w.head(h, false);
            let Out::Whole(h, b) = w.body(Some(Bytes::from_static(body)), true) else {
                panic!("not whole")
            };
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            (
                h.status.as_u16(),
                v["error"]["type"].as_str().unwrap_or("").to_string(),
            )
        };
        assert_eq!(
            whole(401, true, br#"{"error":{"message":"bad key"}}"#),
            (502, "api_error".into())
        );
        assert_eq!(
            whole(401, false, br#"{"error":{"message":"who?"}}"#),
            (401, "authentication_error".into())
        );
        assert_eq!(
            whole(200, true, br#"{"error":{"message":"oops"}}"#),
            (502, "api_error".into())
        );
        assert_eq!(
            whole(200, true, br#"{"object":"list"}"#),
            (502, "api_error".into())
        );
        assert_eq!(
            whole(200, false, br#"{"input_tokens":12}"#),
            (200, String::new())
        );
    }
}
