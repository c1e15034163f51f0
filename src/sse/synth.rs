//! Replaying a complete JSON answer as a stream, for upstreams that cannot
//! stream (`no_stream: true`). Every chat chunk has
//! `object: "chat.completion.chunk"`; usage is sent only if the client asked.

use serde_json::{json, Map, Value};

fn event(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// SSE body for a `chat.completion` answer.
pub fn chat(resp: &Value, include_usage: bool) -> String {
    let mut base = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = resp.get(k) {
            base.insert(k.into(), v.clone());
        }
    }
    base.insert("object".into(), json!("chat.completion.chunk"));
    let chunk = |choices: Value| {
        let mut c = base.clone();
        c.insert("choices".into(), choices);
        Value::Object(c)
    };
    let mut out = String::new();
    let empty = Vec::new();
    let choices = resp
        .get("choices")
        .and_then(|c| c.as_array())
        .unwrap_or(&empty);
    for (pos, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(pos));
        let msg = choice.get("message").cloned().unwrap_or(json!({}));
        let role = msg.get("role").cloned().unwrap_or(json!("assistant"));
        // like OpenAI: the role chunk carries "" for the field the answer
        // uses (content or refusal) and null for the other
        let opened = |field: &str| match msg.get(field) {
            Some(Value::String(_)) => json!(""),
            _ => Value::Null,
        };
        let (first_content, first_refusal) = (opened("content"), opened("refusal"));
        out += &event(&chunk(
            json!([{"index": index, "delta": {"role": role, "content": first_content, "refusal": first_refusal}, "logprobs": null, "finish_reason": null}]),
        ));
        if let Some(Value::String(r)) = msg.get("refusal").filter(|r| r.as_str() != Some("")) {
            out += &event(&chunk(
                json!([{"index": index, "delta": {"refusal": r}, "logprobs": null, "finish_reason": null}]),
            ));
        }
        for key in ["reasoning_content", "reasoning"] {
            if let Some(Value::String(r)) = msg.get(key) {
                out += &event(&chunk(
                    json!([{"index": index, "delta": {key: r}, "logprobs": null, "finish_reason": null}]),
                ));
            }
        }
        if let Some(Value::String(text)) = msg.get("content") {
            if !text.is_empty() {
                let lp = choice
                    .get("logprobs")
                    .filter(|l| !l.is_null())
                    .cloned()
                    .unwrap_or(Value::Null);
                out += &event(&chunk(
                    json!([{"index": index, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}]),
                ));
            }
        }
        if let Some(Value::String(r)) = msg.get("refusal") {
            out += &event(&chunk(
                json!([{"index": index, "delta": {"refusal": r}, "logprobs": null, "finish_reason": null}]),
            ));
        }
        if let Some(Value::Array(calls)) = msg.get("tool_calls") {
            let with_index: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("index".into(), json!(i));
                        o.entry("type").or_insert(json!("function"));
                    }
                    c
                })
                .collect();
            out += &event(&chunk(
                json!([{"index": index, "delta": {"tool_calls": with_index}, "logprobs": null, "finish_reason": null}]),
            ));
        }
        if let Some(fc @ Value::Object(_)) = msg.get("function_call") {
            out += &event(&chunk(
                json!([{"index": index, "delta": {"function_call": fc}, "logprobs": null, "finish_reason": null}]),
            ));
        }
        if let Some(a @ Value::Object(_)) = msg.get("audio") {
            out += &event(&chunk(
                json!([{"index": index, "delta": {"audio": a}, "logprobs": null, "finish_reason": null}]),
            ));
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        out += &event(&chunk(
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        ));
    }
    if include_usage {
        let mut c = chunk(json!([]));
        c["usage"] = resp.get("usage").cloned().unwrap_or(Value::Null);
        out += &event(&c);
    }
    out + "data: [DONE]\n\n"
}

/// SSE body for a legacy `text_completion` answer.
pub fn completion(resp: &Value, include_usage: bool) -> String {
    let mut out = String::new();
    let base = |choices: Value| {
        json!({"id": resp.get("id"), "object": "text_completion", "created": resp.get("created"),
            "model": resp.get("model"), "choices": choices})
    };
    if let Some(Value::Array(choices)) = resp.get("choices") {
        for c in choices {
            out += &event(&base(json!([c])));
        }
    }
    if include_usage {
        let mut c = base(json!([]));
        c["usage"] = resp.get("usage").cloned().unwrap_or(Value::Null);
        out += &event(&c);
    }
    out + "data: [DONE]\n\n"
}

/// SSE body for a Responses API object, with every event a real stream
/// has: `response.created` and `response.in_progress` (status
/// `in_progress`), then per output item `output_item.added`, its parts
/// (`content_part.added`, `output_text.delta` / `refusal.delta`, their
/// `done`s, `content_part.done`) or a function call's arguments
/// (`function_call_arguments.delta` / `.done`), `output_item.done`; and
/// `response.completed` (or `incomplete` / `failed`).
pub fn responses(resp: &Value) -> String {
    let mut out = Responses {
        out: String::new(),
        seq: 0,
    };
    let empty = json!({});
    // an answer that is not an object is told as an empty one
    let resp = if resp.is_object() { resp } else { &empty };
    let mut created = resp.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    out.event("response.created", json!({"response": created}));
    out.event("response.in_progress", json!({"response": created}));
    if let Some(Value::Array(items)) = resp.get("output") {
        for (i, item) in items.iter().enumerate().filter(|(_, i)| i.is_object()) {
            out.item(i, item);
        }
    }
    let done = match resp.get("status").and_then(|s| s.as_str()) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    out.event(done, json!({"response": resp}));
    out.out
}

/// A synthesized Responses stream being written.
struct Responses {
    out: String,
    seq: u64,
}

/// Writes Responses event `ty` (its `type` and the next `sequence_number`
/// set on `v`, an object).
pub fn responses_event(out: &mut String, seq: &mut u64, ty: &str, mut v: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("type".into(), json!(ty));
        o.insert("sequence_number".into(), json!(*seq));
    }
    *seq += 1;
    out.push_str(&format!("event: {ty}\ndata: {v}\n\n"));
}

impl Responses {
    fn event(&mut self, ty: &str, v: Value) {
        responses_event(&mut self.out, &mut self.seq, ty, v);
    }

    /// One output item: added (in progress, empty), its content, done.
    fn item(&mut self, i: usize, item: &Value) {
        let id = item.get("id").cloned().unwrap_or(Value::Null);
        let mut started = item.clone();
        if started.get("status").is_some() {
            started["status"] = json!("in_progress");
        }
        match item["type"].as_str() {
            Some("message") => started["content"] = json!([]),
            Some("function_call") => started["arguments"] = json!(""),
            _ => {}
        }
        self.event(
            "response.output_item.added",
            json!({"output_index": i, "item": started}),
        );
        match item["type"].as_str() {
            Some("message") => {
                let parts = item["content"].as_array().cloned().unwrap_or_default();
                for (j, part) in parts.iter().enumerate().filter(|(_, p)| p.is_object()) {
                    self.part(&id, i, j, part);
                }
            }
            Some("function_call") => {
                let args = item["arguments"].clone();
                let at = json!({"item_id": id, "output_index": i});
                let mut delta = at.clone();
                delta["delta"] = args.clone();
                self.event("response.function_call_arguments.delta", delta);
                let mut done = at;
                done["arguments"] = args;
                self.event("response.function_call_arguments.done", done);
            }
            _ => {}
        }
        self.event(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
    }

    /// One content part of a message: added (empty), its text, done.
    fn part(&mut self, id: &Value, i: usize, j: usize, part: &Value) {
        let at = json!({"item_id": id, "output_index": i, "content_index": j});
        let (kind, field) = match part["type"].as_str() {
            Some("refusal") => ("refusal", "refusal"),
            _ => ("output_text", "text"),
        };
        let mut empty = part.clone();
        empty[field] = json!("");
        if kind == "output_text" {
            empty["annotations"] = json!([]);
        }
        let with = |k: &str, v: Value| {
            let mut e = at.clone();
            e[k] = v;
            e
        };
        self.event("response.content_part.added", with("part", empty));
        let text = part[field].clone();
        self.event(
            &format!("response.{kind}.delta"),
            with("delta", text.clone()),
        );
        let mut done = with(field, text);
        if kind == "output_text" {
            done["logprobs"] = json!([]);
        }
        self.event(&format!("response.{kind}.done"), done);
        self.event("response.content_part.done", with("part", part.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::aggregate::ChatAggregator;
    use crate::sse::parse_all;

    #[test]
    fn chat_roundtrips_through_the_aggregator() {
        let resp = json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m", "system_fingerprint": "fp",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi there", "refusal": null}, "logprobs": null, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                 "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
        let sse = chat(&resp, true);
        let events = parse_all(sse.as_bytes());
        assert!(events.last().unwrap().is_done());
        let mut agg = ChatAggregator::new();
        for e in &events[..events.len() - 1] {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            agg.push(&v).unwrap();
        }
        let back = agg.finish().unwrap();
        assert_eq!(back["choices"], resp["choices"]);
        assert_eq!(back["usage"], resp["usage"]);
        assert_eq!(
            (
                back["id"].clone(),
                back["created"].clone(),
                back["system_fingerprint"].clone()
            ),
            (json!("c1"), json!(7), json!("fp"))
        );
    }

    #[test]
    fn a_response_is_told_with_every_event_of_a_real_stream() {
        let resp = json!({"id": "r1", "object": "response", "status": "completed", "model": "m",
            "output": [
                {"id": "rs_1", "type": "reasoning", "summary": []},
                {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": [
                    {"type": "output_text", "text": "Hi", "annotations": []},
                    {"type": "refusal", "refusal": "No."}]},
                {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c", "name": "f", "arguments": "{}"}],
            "usage": {"input_tokens": 1, "output_tokens": 2}});
        let events = parse_all(responses(&resp).as_bytes());
        let data: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let types: Vec<&str> = data.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.content_part.added",
                "response.refusal.delta",
                "response.refusal.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, (e, v)) in events.iter().zip(&data).enumerate() {
            assert_eq!(e.event.as_deref(), v["type"].as_str(), "named events");
            assert_eq!(v["sequence_number"], i, "numbered in order");
        }
        assert_eq!(data[0]["response"]["status"], "in_progress");
        assert_eq!(data[0]["response"]["output"], json!([]));
        assert_eq!(
            data[4]["item"]["content"],
            json!([]),
            "a message starts empty"
        );
        assert_eq!(data[4]["item"]["status"], "in_progress");
        assert_eq!(
            (data[6]["delta"].as_str(), data[6]["item_id"].as_str()),
            (Some("Hi"), Some("msg_1"))
        );
        assert_eq!(data[10]["delta"], "No.");
        assert_eq!(
            data[14]["item"]["arguments"], "",
            "a call's arguments come as deltas"
        );
        assert_eq!(data[16]["arguments"], "{}");
        assert_eq!(data[18]["response"], resp);
        let cut = json!({"id": "r2", "status": "incomplete", "output": []});
        assert!(responses(&cut).contains("event: response.incomplete"));
        // hostile answers are told, not panicked on
        for odd in [
            json!("x"),
            json!({"output": ["x", {"type": "message", "content": ["y", 1]}]}),
        ] {
            assert!(responses(&odd).contains("response.completed"));
        }
    }

    #[test]
    fn usage_only_when_asked() {
        let resp = json!({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}], "usage": {"total_tokens": 1}});
        assert!(!chat(&resp, false).contains("usage"));
        assert!(chat(&resp, true).contains("\"usage\""));
        assert!(!completion(&resp, false).contains("usage"));
    }
}
