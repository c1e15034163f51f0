//! What an OpenAI chat client gets written when a `kind: anthropic`
//! upstream answers its call: the upstream's Messages answers become chat
//! ones (a stream event by event, a message whole, an error in OpenAI's
//! shape); the gateway's own answers (and its error ending a stream) are
//! already chat-shaped and pass.

use super::chat_answer::{to_completion, ChatEncoder};
use crate::forward::headers::{Head, Reshaped as Out, X_SWITCHYARD_UPSTREAM};
use crate::forward::held::{is_sse, rewritten_stream, whole_json, Held, Retell, Retold, Way};
use crate::sse::Event;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ChatWriter {
    include_usage: bool,
    way: Way<ChatEncoder>,
}

impl ChatWriter {
    /// `include_usage`: the client asked for the usage chunk.
    pub fn new(include_usage: bool) -> ChatWriter {
        ChatWriter {
            include_usage,
            way: Way::Pass,
        }
    }
}

impl crate::forward::headers::Reshape for ChatWriter {
    fn head(&mut self, mut head: Head, end: bool) -> Out {
        if !head.headers.contains_key(&X_SWITCHYARD_UPSTREAM) {
            self.way = Way::Pass; // the gateway's own answer
            return Out::Head(head, end);
        }
        if head.status.is_success() && is_sse(&head) {
            rewritten_stream(&mut head);
            let encoder = ChatEncoder::new(self.include_usage);
            self.way = Way::Stream(Box::new(Retold::new(encoder)));
            return Out::Head(head, end);
        }
        self.way.hold(head, end, finish_held)
    }

    fn body(&mut self, data: Option<Bytes>, end: bool) -> Out {
        self.way.body(data, end, finish_held)
    }
}

impl Retell for ChatEncoder {
    fn event(&mut self, ev: &Event, out: &mut String) {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if ev.event.is_none() && crate::sse::stream_error(ev, Some(&v)).is_some() {
            // the gateway's own error (chat-shaped already) ends it
            out.push_str(&format!("data: {v}\n\n"));
            return self.mark_ended();
        }
        ChatEncoder::event(self, &v, out);
    }

    fn keepalive(&mut self, out: &mut String) {
        out.push_str(": keepalive\n\n");
    }

    fn end(&mut self, out: &mut String) {
        if !self.ended() {
            let e = json!({"error": {"message": "The stream ended before the answer was complete.",
                "type": "upstream_error", "code": "stream_broken"}});
            out.push_str(&format!("data: {e}\n\n"));
        }
    }
}

/// The held Messages answer or error, as chat's.
fn finish_held(held: Held) -> Out {
    let status = held.head.status.as_u16();
    let parsed = held
        .body()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    let ok = held.head.status.is_success();
    let (status, v) = match parsed {
        _ if held.body().is_none() => (
            502,
            error(
                "The upstream's answer is too large to translate.",
                "upstream_error",
            ),
        ),
        Some(m) if ok && m["type"] == "message" => (status, to_completion(&m)),
        Some(e) if !ok => openai_error(status, &e),
        _ => (
            502,
            error(
                "The upstream's answer is not a Messages API answer.",
                "upstream_error",
            ),
        ),
    };
    whole_json(held.head, status, Bytes::from(v.to_string()))
}

fn error(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": kind}})
}

/// An upstream's Messages error as OpenAI's: 529 as 503, a refused gateway
/// key (401/403) as 502 (the client's own key was fine).
fn openai_error(status: u16, e: &Value) -> (u16, Value) {
    let kind = e["error"]["type"].as_str().unwrap_or("api_error");
    let message = e["error"]["message"]
        .as_str()
        .unwrap_or("The upstream failed.");
    match status {
        401 | 403 => (
            502,
            error(
                &format!("The upstream refused the gateway's key ({status}): {message}"),
                "upstream_error",
            ),
        ),
        529 => (503, error(message, kind)),
        s => (s, error(message, kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::headers::Reshape;
    use http::header::CONTENT_TYPE;

    fn head(status: u16, ct: &str, upstream: bool) -> Head {
        let mut h = crate::forward::headers::head(http::StatusCode::from_u16(status).unwrap(), 4);
        h.headers.insert(CONTENT_TYPE, ct.parse().unwrap());
        if upstream {
            h.headers
                .insert(X_SWITCHYARD_UPSTREAM, "claude".parse().unwrap());
        }
        h
    }

    fn whole(out: Out) -> (u16, Value) {
        match out {
            Out::Whole(h, b) => (h.status.as_u16(), serde_json::from_slice(&b).unwrap()),
            _ => panic!("not whole"),
        }
    }

    #[test]
    fn every_recorded_stream_split_anywhere_gives_the_same_chunks() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/anthropic-messages");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sse") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let run = |split: usize| {
                let mut w = ChatWriter::new(true);
                assert!(matches!(
                    w.head(head(200, "text/event-stream", true), false),
                    Out::Head(..)
                ));
                let mut out = Vec::new();
                for piece in bytes.chunks(split) {
                    if let Out::Body(b, _) = w.body(Some(Bytes::copy_from_slice(piece)), false) {
                        out.extend_from_slice(&b);
                    }
                }
                if let Out::Body(b, _) = w.body(None, true) {
                    out.extend_from_slice(&b);
                }
                String::from_utf8(out).unwrap()
            };
            let chunks = |out: &str| -> Vec<Value> {
                out.split("\n\n")
                    .filter_map(|l| l.strip_prefix("data: "))
                    .map(|d| {
                        let mut v: Value = serde_json::from_str(d).unwrap_or(json!(d));
                        if let Some(o) = v.as_object_mut() {
                            o.remove("created");
                        }
                        v
                    })
                    .collect()
            };
            let (whole, split) = (run(bytes.len()), run(7));
            assert_eq!(chunks(&whole), chunks(&split), "{}", path.display());
            assert!(
                whole.ends_with("data: [DONE]\n\n"),
                "{}: {whole}",
                path.display()
            );
        }
    }

    #[test]
    fn held_answers_errors_and_the_gateways_own() {
        let mut w = ChatWriter::new(false);
        let m = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/anthropic-messages/json-tool-use.json"),
        )
        .unwrap();
        assert!(matches!(
            w.head(head(200, "application/json", true), false),
            Out::Nothing
        ));
        let (status, v) = whole(w.body(Some(Bytes::from(m)), true));
        assert_eq!(
            (status, v["choices"][0]["finish_reason"].as_str()),
            (200, Some("tool_calls"))
        );
        for (status, want) in [(529, 503), (401, 502), (429, 429), (400, 400)] {
            let mut w = ChatWriter::new(false);
            w.head(head(status, "application/json", true), false);
            let body = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            let (got, v) = whole(w.body(Some(Bytes::from(body.to_string())), true));
            assert_eq!(got, want);
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Overloaded"),
                "{v}"
            );
        }
        let mut w = ChatWriter::new(false);
        assert!(
            matches!(
                w.head(head(429, "application/json", false), false),
                Out::Head(..)
            ),
            "the gateway's own"
        );
        let mut w = ChatWriter::new(false);
        w.head(head(200, "application/json", true), false);
        let (status, _) = whole(w.body(Some(Bytes::from_static(b"{\"choices\": []}")), true));
        assert_eq!(status, 502, "not a Messages answer");
    }
}
