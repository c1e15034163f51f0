//! A chat completions stream as a Messages stream: `message_start` (and a
//! `ping`), then per content block `content_block_start`, its deltas
//! (`text_delta`, `thinking_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, usage) and
//! `message_stop`. Text and thinking stream as they come. Tool calls are
//! gathered (their arguments may come in pieces, in one piece, only at the
//! end, or interleaved between calls) and each is sent whole when the
//! message ends: its `tool_use` block with one `input_json_delta`, so no
//! piece ever lands on a closed block. A stream that ends in an error ends
//! with `event: error` and no `message_stop`.

use super::answer::{message_id, stop_reason, usage};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// What the encoder reads of a chat chunk, borrowed where unescaped (read
/// straight from the event's text: no JSON tree per event).
#[derive(Debug, Default, Deserialize)]
pub struct Chunk<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice<'a> {
    #[serde(borrow, default)]
    pub delta: Delta<'a>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub finish_reason: Option<Cow<'a, str>>,
    /// The stop sequence that matched (vLLM), or a token id.
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub stop_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
}

/// A string, or `None` for anything else (a null, a number, an object an
/// upstream put where text belongs).
pub fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(Text)
}

/// A `content_block_delta` event for block `index`: `kind` (`text_delta`,
/// `thinking_delta`) with `field` = `text`, written without a JSON tree.
fn delta_event(out: &mut String, index: usize, kind: &str, field: &str, text: &str) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"{kind}\",\"{field}\":"
    );
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
    out.push_str("}}\n\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking(usize),
    Text(usize),
}

impl Open {
    fn index(self) -> usize {
        match self {
            Open::Thinking(i) | Open::Text(i) => i,
        }
    }
}

/// A tool call gathered from its pieces.
#[derive(Debug, Default)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// Most tool calls one message gathers, and the most bytes of arguments
/// (a hostile upstream cannot grow it without end).
const MAX_CALLS: usize = 128;
const MAX_ARGUMENTS: usize = 16 << 20;

/// The state of one translated stream.
pub struct Encoder {
    model: String,
    started: bool,
    open: Option<Open>,
    blocks: usize,
    /// Tool calls by their chat index, in the order they started.
    calls: Vec<(u64, Call)>,
    arguments: usize,
    finish: Option<String>,
    /// The stop sequence that ended the answer (`stop_reason`, vLLM's way).
    stop_sequence: Option<String>,
    usage: Option<Value>,
    ended: bool,
    tool_blocks: usize,
}

fn event(out: &mut String, v: &Value) {
    let name = v["type"].as_str().unwrap_or("message");
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

impl Encoder {
    pub fn new(model: &str) -> Encoder {
        Encoder {
            model: model.to_string(),
            started: false,
            open: None,
            blocks: 0,
            calls: Vec::new(),
            arguments: 0,
            finish: None,
            stop_sequence: None,
            usage: None,
            ended: false,
            tool_blocks: 0,
        }
    }

    /// Whether the stream ended (`message_stop` or `error` written).
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn start(&mut self, chunk: &Chunk, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(chunk.id.as_deref()),
            "type": "message", "role": "assistant",
            "model": chunk.model.as_deref().unwrap_or(&self.model),
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 0},
        });
        event(out, &json!({"type": "message_start", "message": message}));
        event(out, &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut String) {
        if let Some(o) = self.open.take() {
            event(
                out,
                &json!({"type": "content_block_stop", "index": o.index()}),
            );
        }
    }

    /// Opens a block of `kind` unless one is open (`start`: its start block).
    fn open_block(&mut self, kind: fn(usize) -> Open, start: Value, out: &mut String) -> usize {
        if let Some(o) = self.open {
            if o == kind(o.index()) {
                return o.index();
            }
        }
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some(kind(index));
        event(
            out,
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        index
    }

    /// One chat chunk, parsed (a chunk that is not one is skipped).
    pub fn chunk(&mut self, v: &Value, out: &mut String) {
        if let Ok(c) = Chunk::deserialize(v) {
            self.read(&c, out);
        }
    }

    /// One chat chunk.
    pub fn read(&mut self, c: &Chunk, out: &mut String) {
        if self.ended {
            return;
        }
        self.start(c, out);
        if let Some(u) = c.usage.as_ref().filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = c.choices.first() else {
            return;
        };
        let delta = &choice.delta;
        // one of the two names (an upstream sending both sends one text)
        let thinking = [&delta.reasoning_content, &delta.reasoning]
            .into_iter()
            .find_map(|t| t.as_deref().filter(|t| !t.is_empty()));
        if let Some(t) = thinking {
            let start = json!({"type": "thinking", "thinking": "", "signature": ""});
            let i = self.open_block(Open::Thinking, start, out);
            delta_event(out, i, "thinking_delta", "thinking", t);
        }
        for t in [&delta.content, &delta.refusal] {
            if let Some(t) = t.as_deref().filter(|t| !t.is_empty()) {
                let i = self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
                delta_event(out, i, "text_delta", "text", t);
            }
        }
        for call in delta.tool_calls.iter().flatten() {
            self.gather(call);
        }
        if let Some(seq) = &choice.stop_reason {
            self.stop_sequence = Some(seq.to_string());
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.to_string());
            self.close(out);
        }
    }

    /// A tool call's piece: a new index (or a new id at a known one) starts
    /// a call, and arguments join their call's. Without an index, the id
    /// finds the call; without either, a name starts one and anything else
    /// joins the last.
    fn gather(&mut self, piece: &Value) {
        let id = piece["id"].as_str().filter(|i| !i.is_empty());
        let named = piece["function"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let found = match (piece["index"].as_u64(), id) {
            (Some(at), id) => self
                .calls
                .iter()
                .rposition(|(i, c)| *i == at && id.is_none_or(|id| c.id == id || c.id.is_empty())),
            (None, Some(id)) => self.calls.iter().rposition(|(_, c)| c.id == id),
            (None, None) if named => None,
            (None, None) => self.calls.len().checked_sub(1),
        };
        let pos = match found {
            Some(p) => p,
            None if self.calls.len() >= MAX_CALLS => return,
            None => {
                let at = piece["index"].as_u64().unwrap_or(u64::MAX);
                self.calls.push((at, Call::default()));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[pos].1;
        if let Some(id) = id {
            call.id = id.chars().take(256).collect();
        }
        if let Some(name) = piece["function"]["name"].as_str().filter(|n| !n.is_empty()) {
            call.name = name.chars().take(256).collect();
        }
        if let Some(args) = piece["function"]["arguments"].as_str() {
            if self.arguments + args.len() <= MAX_ARGUMENTS {
                self.arguments += args.len();
                call.arguments.push_str(args);
            }
        }
    }

    /// The gathered tool calls, each a whole block.
    fn flush_calls(&mut self, out: &mut String) {
        self.close(out);
        for (_, call) in std::mem::take(&mut self.calls) {
            let index = self.blocks;
            self.blocks += 1;
            let id = if call.id.is_empty() {
                format!("toolu_sy{:016x}", rand::random::<u64>())
            } else {
                call.id
            };
            let start = json!({"type": "tool_use", "id": id, "name": call.name, "input": {}});
            event(
                out,
                &json!({"type": "content_block_start", "index": index, "content_block": start}),
            );
            event(
                out,
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
            );
            event(out, &json!({"type": "content_block_stop", "index": index}));
            self.tool_blocks += 1;
        }
    }

    /// The chat stream's `[DONE]` (or its end): the message ends.
    pub fn done(&mut self, out: &mut String) {
        if self.ended {
            return;
        }
        self.start(&Chunk::default(), out);
        self.flush_calls(out);
        let u = usage(self.usage.as_ref());
        event(
            out,
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason(), "stop_sequence": self.stop_sequence()},
            "usage": u}),
        );
        event(out, &json!({"type": "message_stop"}));
        self.ended = true;
    }

    /// Whether a finish reason came (the answer is whole).
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    /// `tool_use` whenever tool blocks went out, `stop_sequence` when one
    /// was named, else the finish reason's.
    fn stop_reason(&self) -> &'static str {
        match stop_reason(self.finish.as_deref()) {
            "end_turn" if self.tool_blocks > 0 => "tool_use",
            "end_turn" if self.stop_sequence.is_some() => "stop_sequence",
            r => r,
        }
    }

    fn stop_sequence(&self) -> Value {
        match self.stop_reason() {
            "stop_sequence" => self.stop_sequence.clone().into(),
            _ => Value::Null,
        }
    }

    /// The stream broke: an `error` event (Messages shape) ends it.
    pub fn error(&mut self, status: u16, body: &[u8], out: &mut String) {
        if self.ended {
            return;
        }
        event(out, &super::answer::error_body(status, body));
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<Value> {
        crate::sse::parse_all(text.as_bytes())
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn text_then_two_tool_calls_in_pieces_then_usage() {
        let mut e = Encoder::new("m");
        let mut out = String::new();
        let c = |delta: Value, finish: Value| {
            json!({"id": "c1", "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        e.chunk(
            &c(json!({"role": "assistant", "content": ""}), Value::Null),
            &mut out,
        );
        e.chunk(&c(json!({"content": "Checking"}), Value::Null), &mut out);
        e.chunk(
            &c(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "weather", "arguments": ""}}]}),
                Value::Null,
            ),
            &mut out,
        );
        e.chunk(
            &c(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
                Value::Null,
            ),
            &mut out,
        );
        e.chunk(
            &c(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Paris\"}"}}]}),
                Value::Null,
            ),
            &mut out,
        );
        // the second call's arguments in one piece with its start
        e.chunk(
            &c(
                json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
            "function": {"name": "time", "arguments": "{}"}}]}),
                Value::Null,
            ),
            &mut out,
        );
        e.chunk(&c(json!({}), "tool_calls".into()), &mut out);
        e.chunk(&json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}}), &mut out);
        e.done(&mut out);
        let ev = events(&out);
        let kinds: Vec<&str> = ev.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(ev[5]["content_block"]["name"], "weather");
        assert_eq!(ev[5]["content_block"]["id"], "call_a");
        assert_eq!(ev[6]["delta"]["partial_json"], "{\"city\":\"Paris\"}");
        assert_eq!(ev[8]["content_block"]["name"], "time");
        assert_eq!(ev[9]["delta"]["partial_json"], "{}");
        assert_eq!(ev[11]["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[11]["usage"]["output_tokens"], 5);
        assert!(e.ended());
    }

    #[test]
    fn an_error_ends_the_stream_without_message_stop() {
        let mut e = Encoder::new("m");
        let mut out = String::new();
        e.chunk(
            &json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            &mut out,
        );
        e.error(529, br#"{"error": {"message": "Overloaded"}}"#, &mut out);
        e.done(&mut out);
        let ev = events(&out);
        assert_eq!(ev.last().unwrap()["error"]["type"], "overloaded_error");
        assert!(!out.contains("message_stop"));
    }
}

#[cfg(test)]
mod interleaved {
    use super::*;

    #[test]
    fn interleaved_calls_and_calls_without_index_or_id_stay_apart() {
        let mut e = Encoder::new("m");
        let mut out = String::new();
        let tc = |calls: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]});
        e.chunk(&tc(json!([{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{\"x\""}},
                           {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{\"y\""}}])), &mut out);
        e.chunk(
            &tc(json!([{"index": 1, "function": {"arguments": ":2}"}},
                           {"index": 0, "function": {"arguments": ":1}"}}])),
            &mut out,
        );
        // no index, no id: a call of its own, with an id made up
        e.chunk(
            &tc(json!([{"function": {"name": "h", "arguments": "{}"}}])),
            &mut out,
        );
        e.chunk(
            &json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            &mut out,
        );
        e.done(&mut out);
        let ev: Vec<Value> = crate::sse::parse_all(out.as_bytes())
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let args: Vec<&str> = ev
            .iter()
            .filter_map(|v| v["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(args, ["{\"x\":1}", "{\"y\":2}", "{}"]);
        let ids: Vec<&str> = ev
            .iter()
            .filter_map(|v| v["content_block"]["id"].as_str())
            .collect();
        assert_eq!(&ids[..2], ["a", "b"]);
        assert!(ids[2].starts_with("toolu_sy"));
        // tool blocks went out: tool_use whatever the finish reason said
        let delta = ev.iter().find(|v| v["type"] == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }
}
