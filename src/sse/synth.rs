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

/// SSE body for a Responses API object: created, each output item, completed.
pub fn responses(resp: &Value) -> String {
    let mut seq = 0;
    let mut next = |ty: &str, mut v: Value| {
        v["type"] = json!(ty);
        v["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {ty}\ndata: {v}\n\n")
    };
    let mut created = resp.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    let mut out = next("response.created", json!({"response": created}));
    if let Some(Value::Array(items)) = resp.get("output") {
        for (i, item) in items.iter().enumerate() {
            out += &next(
                "response.output_item.added",
                json!({"output_index": i, "item": item}),
            );
            out += &next(
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            );
        }
    }
    let done = match resp.get("status").and_then(|s| s.as_str()) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    out + &next(done, json!({"response": resp}))
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
    fn usage_only_when_asked() {
        let resp = json!({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}], "usage": {"total_tokens": 1}});
        assert!(!chat(&resp, false).contains("usage"));
        assert!(chat(&resp, true).contains("\"usage\""));
        assert!(!completion(&resp, false).contains("usage"));
    }
}
