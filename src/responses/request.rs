//! A Responses API request as a chat completions request, for an upstream
//! without `/responses` (`no_responses: true`).
//!
//! - `instructions` → a first `system` message; `input` (a string, or
//!   items) → messages: `input_text` / `output_text` parts → text,
//!   `input_image` → `image_url`, `function_call` items → the assistant's
//!   `tool_calls` (calls in a row join one message), `function_call_output`
//!   → `tool` messages; `reasoning` items are dropped.
//! - function `tools` → chat functions; `tool_choice`; `max_output_tokens`
//!   → `max_tokens`; `temperature`, `top_p`, `parallel_tool_calls`, `user`;
//!   `text.format` → `response_format`; `reasoning.effort` →
//!   `reasoning_effort`; `stream` (with the usage chunk asked for).
//! - Refused (400): `previous_response_id` and `conversation` (the bridge
//!   keeps no stored responses), built-in tools (web search, files…).

use serde_json::{json, Map, Value};

/// The chat request for Responses request `v`; `Err`: why it cannot be one.
pub fn to_chat(v: &Value) -> Result<Value, String> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    for stored in ["previous_response_id", "conversation"] {
        if obj.get(stored).is_some_and(|x| !x.is_null()) {
            return Err(format!(
                "{stored}: this model's upstream has no Responses API; send the whole conversation in input"
            ));
        }
    }
    let mut messages = Vec::new();
    if let Some(i) = obj.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match obj.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages)?;
            }
        }
        _ => return Err("input: field required (a string or an array of items)".into()),
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or_default(),
    );
    out.insert("messages".into(), messages.into());
    if let Some(n) = obj.get("max_output_tokens").filter(|n| n.is_u64()) {
        out.insert("max_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p", "parallel_tool_calls", "user"] {
        if let Some(x) = obj.get(key).filter(|x| !x.is_null()) {
            out.insert(key.into(), x.clone());
        }
    }
    if let Some(effort) = obj
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| e.is_string())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = obj.get("text").and_then(|t| t.get("format")) {
        if let Some(f) = response_format(format) {
            out.insert("response_format".into(), f);
        }
    }
    tools(obj, &mut out)?;
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        // the final response carries usage: the stream must end with it
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// `text.format` as chat's `response_format` (`None`: plain text).
fn response_format(f: &Value) -> Option<Value> {
    match f["type"].as_str()? {
        "json_schema" => {
            let mut schema = json!({"name": f.get("name").cloned().unwrap_or(json!("response")),
                "schema": f.get("schema").cloned().unwrap_or(json!({}))});
            for k in ["strict", "description"] {
                if let Some(x) = f.get(k) {
                    schema[k] = x.clone();
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

/// Function tools and `tool_choice`.
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(list) = obj.get("tools").and_then(Value::as_array) {
        let mut tools = Vec::new();
        for (i, t) in list.iter().enumerate() {
            if t["type"] != "function" {
                return Err(format!(
                    "tools[{i}].type: {} tools need the Responses API; this model's upstream has only chat",
                    t["type"]
                ));
            }
            let mut f = json!({"name": t["name"], "parameters": t.get("parameters").cloned()
                .filter(Value::is_object).unwrap_or(json!({"type": "object", "properties": {}}))});
            for k in ["description", "strict"] {
                if let Some(x) = t.get(k).filter(|x| !x.is_null()) {
                    f[k] = x.clone();
                }
            }
            tools.push(json!({"type": "function", "function": f}));
        }
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
        }
    }
    match obj.get("tool_choice") {
        Some(Value::String(s)) => {
            out.insert("tool_choice".into(), s.clone().into());
        }
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            out.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": o.get("name")}}),
            );
        }
        _ => {}
    }
    Ok(())
}

/// One `input` item as chat messages (appended to `messages`).
fn input_item(item: &Value, i: usize, messages: &mut Vec<Value>) -> Result<(), String> {
    match item["type"].as_str().unwrap_or("message") {
        "message" => {
            let role = item["role"].as_str().unwrap_or("user");
            let content = content(&item["content"], i)?;
            messages.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call = json!({"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"].as_str().unwrap_or("{}")}});
            match messages.last_mut() {
                Some(m) if m["role"] == "assistant" && m["tool_calls"].is_array() => {
                    if let Some(calls) = m["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match &item["output"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            messages
                .push(json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}));
        }
        "reasoning" => {}
        other => return Err(format!("input[{i}].type: {other:?} cannot be sent as chat")),
    }
    Ok(())
}

/// A message's content: a string as it is, parts as chat parts.
fn content(c: &Value, i: usize) -> Result<Value, String> {
    let parts = match c {
        Value::String(_) => return Ok(c.clone()),
        Value::Array(p) => p,
        _ => return Err(format!("input[{i}].content: a string or parts expected")),
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p["type"].as_str().unwrap_or("") {
            "input_text" | "output_text" | "text" => {
                out.push(json!({"type": "text", "text": p["text"]}))
            }
            "input_image" => {
                let url = p["image_url"].as_str().ok_or(format!(
                    "input[{i}].content[{j}].image_url: a URL is needed (file ids need the Responses API)"
                ))?;
                let mut image = json!({"url": url});
                if let Some(d) = p.get("detail").filter(|d| d.is_string()) {
                    image["detail"] = d.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            "refusal" => out.push(json!({"type": "text", "text": p["refusal"]})),
            other => {
                return Err(format!(
                    "input[{i}].content[{j}].type: {other:?} cannot be sent as chat"
                ))
            }
        }
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_with_tools_images_and_a_schema() {
        let r = json!({"model": "m", "instructions": "Be brief.", "max_output_tokens": 100, "stream": true,
            "reasoning": {"effort": "low"}, "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "f", "description": "F", "parameters": {"type": "object"}}],
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": {"x": 2}},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}]});
        let c = to_chat(&r).unwrap();
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1]["content"][1]["image_url"],
            json!({"url": "https://x/cat.png", "detail": "low"})
        );
        assert_eq!(
            m[2]["tool_calls"].as_array().unwrap().len(),
            2,
            "calls in a row: one message"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "one"})
        );
        assert_eq!(m[4]["content"], "{\"x\":2}");
        assert_eq!(m[5]["content"][0], json!({"type": "text", "text": "done"}));
        assert_eq!(m.len(), 6, "reasoning dropped");
        assert_eq!(c["max_tokens"], 100);
        assert_eq!(c["reasoning_effort"], "low");
        assert_eq!(c["tools"][0]["function"]["name"], "f");
        assert_eq!(
            c["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(c["response_format"]["json_schema"]["name"], "out");
        assert_eq!(c["response_format"]["json_schema"]["strict"], true);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        let plain = to_chat(&json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(
            plain["messages"],
            json!([{"role": "user", "content": "hi"}])
        );
        assert!(plain.get("stream").is_none());
    }

    #[test]
    fn what_a_bridge_cannot_carry_is_refused() {
        for (bad, want) in [
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": [{"type": "file_search_call"}]}),
                "input[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
                "image_url",
            ),
            (json!({"input": 5}), "input:"),
            (json!([]), "JSON object"),
        ] {
            let e = to_chat(&bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
