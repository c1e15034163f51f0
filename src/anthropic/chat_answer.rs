//! A Messages API answer as a chat completion, for an OpenAI client whose
//! call a `kind: anthropic` upstream answered: the whole message
//! ([`to_completion`]) or its stream, event by event ([`ChatEncoder`]).
//!
//! - Text blocks join into `content`; `tool_use` blocks become `tool_calls`
//!   (input as JSON text); `thinking` text becomes `reasoning_content`
//!   (signatures and redacted thinking have no place in chat).
//! - `stop_reason` `end_turn` / `stop_sequence` / `max_tokens` / `tool_use`
//!   / `refusal` → `stop` / `stop` / `length` / `tool_calls` /
//!   `content_filter`.
//! - usage: `prompt_tokens` counts cache reads and writes too.
//! - A matched stop sequence is named in the choice's `stop_reason` (as
//!   vLLM does), so a Messages client behind chat sees `stop_sequence`.

use serde_json::{json, Value};

/// The chat `finish_reason` for a Messages `stop_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Chat usage for Messages usage `u`.
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    let prompt = n("input_tokens") + cached + n("cache_creation_input_tokens");
    let out = n("output_tokens");
    json!({"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": cached}})
}

fn now() -> u64 {
    crate::clock::now_ms() / 1000
}

/// The chat completion for Messages answer `m`.
pub fn to_completion(m: &Value) -> Value {
    let (mut text, mut thinking, mut calls) = (String::new(), String::new(), Vec::new());
    for b in m["content"].as_array().into_iter().flatten() {
        match b["type"].as_str().unwrap_or("") {
            "text" => text.push_str(b["text"].as_str().unwrap_or("")),
            "thinking" => thinking.push_str(b["thinking"].as_str().unwrap_or("")),
            "tool_use" => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = thinking.into();
    }
    let stop = m["stop_reason"].as_str().unwrap_or("end_turn");
    let mut c = json!({"id": m["id"], "object": "chat.completion", "created": now(), "model": m["model"],
        "choices": [{"index": 0, "message": message, "logprobs": null,
            "finish_reason": finish_reason(stop)}],
        "usage": usage(&m["usage"])});
    if let Some(seq) = m["stop_sequence"].as_str() {
        c["choices"][0]["stop_reason"] = seq.into();
    }
    c
}

/// A Messages stream re-told as chat chunks, one event at a time.
#[derive(Debug, Default)]
pub struct ChatEncoder {
    id: String,
    model: String,
    created: u64,
    /// Content block index → its tool call's index among the calls.
    tools: Vec<(u64, usize)>,
    /// Usage so far (message_start's, then message_delta's).
    usage: Value,
    include_usage: bool,
    ended: bool,
}

impl ChatEncoder {
    pub fn new(include_usage: bool) -> ChatEncoder {
        ChatEncoder {
            include_usage,
            created: now(),
            ..Default::default()
        }
    }

    /// Whether `[DONE]` (or an error) was written.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The stream was ended by something else (the gateway's error).
    pub fn mark_ended(&mut self) {
        self.ended = true;
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut String) {
        self.choice(
            json!({"index": 0, "delta": delta, "finish_reason": finish}),
            out,
        );
    }

    fn choice(&self, choice: Value, out: &mut String) {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [choice]});
        out.push_str("data: ");
        out.push_str(&c.to_string());
        out.push_str("\n\n");
    }

    /// Writes what Messages stream event `v` means to chat clients.
    pub fn event(&mut self, v: &Value, out: &mut String) {
        if self.ended {
            return;
        }
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].as_str().unwrap_or("").to_string();
                self.model = m["model"].as_str().unwrap_or("").to_string();
                self.usage = m["usage"].clone();
                self.chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                    out,
                );
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                let b = &v["content_block"];
                let index = self.tools.len();
                self.tools.push((v["index"].as_u64().unwrap_or(0), index));
                let call = json!({"index": index, "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": ""}});
                self.chunk(json!({"tool_calls": [call]}), Value::Null, out);
            }
            "content_block_delta" => self.delta(v, out),
            "message_delta" => {
                if let Some(u) = v["usage"].as_object() {
                    if !self.usage.is_object() {
                        self.usage = json!({});
                    }
                    if let Some(mine) = self.usage.as_object_mut() {
                        mine.extend(u.iter().map(|(k, x)| (k.clone(), x.clone())));
                    }
                }
                let stop = v["delta"]["stop_reason"].as_str().unwrap_or("end_turn");
                let mut choice =
                    json!({"index": 0, "delta": {}, "finish_reason": finish_reason(stop)});
                if let Some(seq) = v["delta"]["stop_sequence"].as_str() {
                    choice["stop_reason"] = seq.into(); // the match, as vLLM names it
                }
                self.choice(choice, out);
            }
            "message_stop" => self.done(out),
            "error" => {
                let e = &v["error"];
                let body = json!({"error": {"message": e["message"], "type": e["type"], "code": e["type"]}});
                out.push_str(&format!("data: {body}\n\n"));
                self.ended = true;
            }
            _ => {} // ping, content_block_stop, a text block's start
        }
    }

    fn delta(&mut self, v: &Value, out: &mut String) {
        let d = &v["delta"];
        match d["type"].as_str().unwrap_or("") {
            "text_delta" => self.chunk(json!({"content": d["text"]}), Value::Null, out),
            "thinking_delta" => self.chunk(
                json!({"reasoning_content": d["thinking"]}),
                Value::Null,
                out,
            ),
            "input_json_delta" => {
                let block = v["index"].as_u64().unwrap_or(0);
                let Some(&(_, index)) = self.tools.iter().find(|(b, _)| *b == block) else {
                    return;
                };
                let call = json!({"index": index, "function": {"arguments": d["partial_json"]}});
                self.chunk(json!({"tool_calls": [call]}), Value::Null, out);
            }
            _ => {} // signatures: no place in chat
        }
    }

    /// The end: the usage chunk when asked for, then `[DONE]`.
    pub fn done(&mut self, out: &mut String) {
        if self.ended {
            return;
        }
        if self.include_usage && !self.usage.is_null() {
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage(&self.usage)});
            out.push_str(&format!("data: {c}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_stop_reasons() {
        let m = json!({"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}});
        let c = to_completion(&m);
        let msg = &c["choices"][0]["message"];
        assert_eq!(msg["content"], "Let me check.");
        assert_eq!(msg["reasoning_content"], "hm");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["usage"]["prompt_tokens"], 15);
        assert_eq!(c["usage"]["total_tokens"], 22);
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop), want);
        }
    }

    #[test]
    fn a_stream_with_text_and_two_tools() {
        let mut e = ChatEncoder::new(true);
        let mut out = String::new();
        for ev in [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t2", "name": "g", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ":1}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
            json!({"type": "message_stop"}),
        ] {
            e.event(&ev, &mut out);
        }
        let chunks: Vec<Value> = out
            .split("\n\n")
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let mut agg = crate::sse::aggregate::Aggregator::new(crate::routes::Api::Chat);
        for c in &chunks {
            agg.push(None, c).unwrap();
        }
        let merged = agg.finish().unwrap();
        let msg = &merged["choices"][0]["message"];
        assert_eq!(msg["content"], "Hi");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(msg["tool_calls"][1]["function"]["name"], "g");
        assert_eq!(merged["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(merged["usage"]["completion_tokens"], 12);
        assert!(out.ends_with("data: [DONE]\n\n") && e.ended());
    }
}
