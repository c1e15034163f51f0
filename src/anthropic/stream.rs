//! A chat completions stream as a Messages stream: `message_start` (and a
//! `ping`), then per content block `content_block_start`, its deltas
//! (`text_delta`, `thinking_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason, usage) and
//! `message_stop`. Tool arguments pass as they arrive: in pieces, in one
//! piece, or only at the end. A stream that ends in an error ends with
//! `event: error` and no `message_stop`.

use super::answer::{message_id, stop_reason, usage};
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking(usize),
    Text(usize),
    Tool(usize),
}

impl Open {
    fn index(self) -> usize {
        match self {
            Open::Thinking(i) | Open::Text(i) | Open::Tool(i) => i,
        }
    }
}

/// The state of one translated stream.
pub struct Encoder {
    model: String,
    started: bool,
    open: Option<Open>,
    blocks: usize,
    /// A chat tool call's index → its block.
    tools: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Value>,
    ended: bool,
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
            tools: HashMap::new(),
            finish: None,
            usage: None,
            ended: false,
        }
    }

    /// Whether the stream ended (`message_stop` or `error` written).
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn start(&mut self, chunk: &Value, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(chunk["id"].as_str()),
            "type": "message", "role": "assistant",
            "model": chunk["model"].as_str().unwrap_or(&self.model),
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

    /// One chat chunk (parsed `data:`).
    pub fn chunk(&mut self, v: &Value, out: &mut String) {
        if self.ended {
            return;
        }
        self.start(v, out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                let start = json!({"type": "thinking", "thinking": "", "signature": ""});
                let i = self.open_block(Open::Thinking, start, out);
                event(
                    out,
                    &json!({"type": "content_block_delta", "index": i,
                    "delta": {"type": "thinking_delta", "thinking": t}}),
                );
            }
        }
        for key in ["content", "refusal"] {
            if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                let i = self.open_block(Open::Text, json!({"type": "text", "text": ""}), out);
                event(
                    out,
                    &json!({"type": "content_block_delta", "index": i,
                    "delta": {"type": "text_delta", "text": t}}),
                );
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.tool_call(call, out);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
            self.close(out);
        }
    }

    /// A tool call's piece: a new call opens its `tool_use` block; its
    /// arguments go on as `input_json_delta`s to that block.
    fn tool_call(&mut self, call: &Value, out: &mut String) {
        let at = call["index"].as_u64().unwrap_or(0);
        let block = match self.tools.get(&at) {
            Some(&b) => b,
            None => {
                self.close(out);
                let b = self.blocks;
                self.blocks += 1;
                self.tools.insert(at, b);
                self.open = Some(Open::Tool(b));
                let start = json!({"type": "tool_use",
                    "id": call["id"].as_str().unwrap_or(""),
                    "name": call["function"]["name"].as_str().unwrap_or(""),
                    "input": {}});
                event(
                    out,
                    &json!({"type": "content_block_start", "index": b, "content_block": start}),
                );
                b
            }
        };
        if let Some(args) = call["function"]["arguments"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            event(
                out,
                &json!({"type": "content_block_delta", "index": block,
                "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
    }

    /// The chat stream's `[DONE]` (or its end): the message ends.
    pub fn done(&mut self, out: &mut String) {
        if self.ended {
            return;
        }
        self.start(&Value::Null, out);
        self.close(out);
        let u = usage(self.usage.as_ref());
        event(
            out,
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
            "usage": u}),
        );
        event(out, &json!({"type": "message_stop"}));
        self.ended = true;
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
        let args: String = ev
            .iter()
            .filter(|v| v["index"] == 1 && v["delta"]["type"] == "input_json_delta")
            .map(|v| v["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        assert_eq!(ev[12]["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[12]["usage"]["output_tokens"], 5);
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
