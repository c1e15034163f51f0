//! A chat completions request as a Messages API request, for an OpenAI
//! client whose model a `kind: anthropic` upstream serves.
//!
//! - `system` and `developer` messages join (blank-line separated) into
//!   `system`.
//! - Text parts stay text blocks; `image_url` parts become image blocks (a
//!   data URL as a `base64` source, anything else as a `url` source).
//! - An assistant's `tool_calls` become `tool_use` blocks (arguments parsed;
//!   `{}` when they are not a JSON object); `tool` messages become
//!   `tool_result` blocks of a user turn. Turns of one role in a row merge
//!   (the Messages API alternates roles).
//! - `tools` (functions) → `{name, description, input_schema}`;
//!   `tool_choice` `auto` / `required` / `none` / a function → `auto` /
//!   `any` / `none` / `tool`; `parallel_tool_calls: false` →
//!   `disable_parallel_tool_use`.
//! - `max_completion_tokens` or `max_tokens` (else `default_max`), `stop` →
//!   `stop_sequences`, `temperature` (at most 1), `top_p`, `stream`,
//!   `user` → `metadata.user_id`. `n` above 1 is refused; anything else a
//!   Messages upstream has no place for is left out.

use serde_json::{json, Map, Value};

/// The Messages request for chat request `v`; `Err`: why it cannot be one
/// (a 400 for the client).
pub fn to_messages(v: &Value, default_max: u64) -> Result<Value, String> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err("n: this model answers one choice at a time".into());
    }
    let chat = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: field required (an array)")?;
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in chat.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(
                    text_of(&m["content"])
                        .ok_or(format!("messages[{i}].content: text expected"))?,
                );
                continue;
            }
            "user" => ("user", content_blocks(&m["content"], i)?),
            "assistant" => ("assistant", assistant_blocks(m, i)?),
            "tool" | "function" => ("user", vec![tool_result(m)]),
            other => return Err(format!("messages[{i}].role: unknown role {other:?}")),
        };
        match turns.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => turns.push((role.to_string(), blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or_default(),
    );
    out.insert("messages".into(), Value::Array(messages));
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_u64))
        .unwrap_or(default_max);
    out.insert("max_tokens".into(), max.into());
    let system = system.join("\n\n");
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }
    settings(obj, &mut out);
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

/// Sampling, stops, streaming and the end user.
fn settings(obj: &Map<String, Value>, out: &mut Map<String, Value>) {
    if let Some(t) = obj.get("temperature").and_then(Value::as_f64) {
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = obj.get("top_p").filter(|p| p.is_number()) {
        out.insert("top_p".into(), p.clone());
    }
    let stops: Vec<Value> = match obj.get("stop") {
        Some(Value::String(s)) => vec![s.clone().into()],
        Some(Value::Array(a)) => a.iter().filter(|s| s.is_string()).cloned().collect(),
        _ => Vec::new(),
    };
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), stops.into());
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
    }
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(list) = obj.get("tools").and_then(Value::as_array) {
        let mut tools = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let f = &t["function"];
            let name = f["name"]
                .as_str()
                .ok_or(format!("tools[{i}].function.name: required"))?;
            let mut tool = json!({"name": name, "input_schema": f.get("parameters").cloned()
                .filter(Value::is_object).unwrap_or(json!({"type": "object", "properties": {}}))});
            if let Some(d) = f["description"].as_str() {
                tool["description"] = d.into();
            }
            tools.push(tool);
        }
        if !tools.is_empty() {
            out.insert("tools".into(), tools.into());
        }
    }
    let mut choice = match obj.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
        Some(Value::String(s)) if s == "none" => json!({"type": "none"}),
        Some(Value::Object(o)) => match o.get("function").and_then(|f| f["name"].as_str()) {
            Some(name) => json!({"type": "tool", "name": name}),
            None => json!({"type": "auto"}),
        },
        _ => json!({"type": "auto"}),
    };
    if obj.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        choice["disable_parallel_tool_use"] = true.into();
    }
    if out.contains_key("tools") {
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

/// The text of a string or of text parts (`None`: something else).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// A user's content as blocks.
fn content_blocks(content: &Value, i: usize) -> Result<Vec<Value>, String> {
    let parts = match content {
        Value::String(s) if s.is_empty() => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(p) => p,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(format!("messages[{i}].content: a string or parts expected")),
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p["type"].as_str().unwrap_or("") {
            "text" => out.push(json!({"type": "text", "text": p["text"].as_str().unwrap_or("")})),
            "image_url" => {
                let url = p["image_url"]["url"]
                    .as_str()
                    .or_else(|| p["image_url"].as_str())
                    .ok_or(format!(
                        "messages[{i}].content[{j}].image_url.url: required"
                    ))?;
                out.push(image(url));
            }
            other => {
                return Err(format!(
                    "messages[{i}].content[{j}].type: {other:?} cannot be sent to this model"
                ))
            }
        }
    }
    Ok(out)
}

/// An image block for `url` (a data URL becomes a `base64` source).
fn image(url: &str) -> Value {
    let data = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"));
    match data {
        Some((media_type, data)) => json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}),
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// An assistant turn: its text, then its tool calls.
fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let text = text_of(&m["content"]).unwrap_or_default();
    if !text.is_empty() {
        out.push(json!({"type": "text", "text": text}));
    }
    for (j, call) in m["tool_calls"].as_array().into_iter().flatten().enumerate() {
        let f = &call["function"];
        let name = f["name"].as_str().ok_or(format!(
            "messages[{i}].tool_calls[{j}].function.name: required"
        ))?;
        let input = f["arguments"]
            .as_str()
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .filter(Value::is_object)
            .unwrap_or(json!({}));
        let id = call["id"].as_str().unwrap_or("");
        out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(out)
}

/// A `tool` message as a `tool_result` block.
fn tool_result(m: &Value) -> Value {
    let id = m["tool_call_id"]
        .as_str()
        .or_else(|| m["name"].as_str())
        .unwrap_or("");
    let text = text_of(&m["content"]).unwrap_or_default();
    json!({"type": "tool_result", "tool_use_id": id, "content": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_and_images() {
        let chat = json!({"model": "claude-x", "temperature": 1.5, "stop": "END", "user": "u1",
            "max_completion_tokens": 300, "parallel_tool_calls": false, "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "?"},
                {"role": "user", "content": "Thanks"}]});
        let m = to_messages(&chat, 4096).unwrap();
        assert_eq!(m["system"], "Be brief.\n\nNo emoji.");
        assert_eq!(
            (m["max_tokens"].as_u64(), m["temperature"].as_f64()),
            (Some(300), Some(1.0))
        );
        assert_eq!(m["stop_sequences"], json!(["END"]));
        assert_eq!(m["metadata"], json!({"user_id": "u1"}));
        assert_eq!(m["stream"], true);
        assert!(m.get("stream_options").is_none());
        assert_eq!(
            m["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            m["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let turns = m["messages"].as_array().unwrap();
        let roles: Vec<&str> = turns.iter().map(|t| t["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "user"],
            "tool results and the next user text merge"
        );
        assert_eq!(
            turns[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "iVBOR"})
        );
        assert_eq!(turns[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(
            turns[1]["content"][1]["input"],
            json!({}),
            "arguments that are not JSON"
        );
        assert_eq!(
            turns[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
        );
        assert_eq!(
            turns[2]["content"][2],
            json!({"type": "text", "text": "Thanks"})
        );
    }

    #[test]
    fn defaults_and_refusals() {
        let m = to_messages(
            &json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": "required"}),
            4096,
        )
        .unwrap();
        assert_eq!(m["max_tokens"], 4096);
        assert!(m.get("tool_choice").is_none(), "no tools: no choice");
        for (bad, want) in [
            (json!({"messages": [], "n": 2}), "n:"),
            (json!({"messages": "x"}), "messages:"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (json!([1]), "JSON object"),
        ] {
            let e = to_messages(&bad, 1).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
