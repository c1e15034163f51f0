//! A Messages API request (`POST /v1/messages`) as a chat completions
//! request for an OpenAI-compatible upstream.
//!
//! - `system` (a string or text blocks) becomes the first `system` message.
//! - Text blocks become text parts; images (`base64` or `url` sources) become
//!   `image_url` parts (a data URL for base64).
//! - An assistant's `tool_use` blocks become its `tool_calls` (input as JSON
//!   text); a user's `tool_result` blocks become `tool` messages, in order,
//!   before the rest of that user turn.
//! - `thinking` / `redacted_thinking` blocks are dropped (a chat upstream
//!   has no place for them); `cache_control` is dropped everywhere.
//! - `tools` → functions (`input_schema` → `parameters`); `tool_choice`
//!   `auto` / `any` / `tool` / `none` → `auto` / `required` / the function /
//!   `none` (`disable_parallel_tool_use` → `parallel_tool_calls: false`).
//! - `stop_sequences` → `stop`, `max_tokens`, `temperature`, `top_p`,
//!   `stream`; `metadata.user_id` → `user`. `thinking`, `top_k` and
//!   anything else unknown is left out here (`thinking` becomes
//!   `reasoning_effort` at the door, only for a chat model that reasons:
//!   `proxy::door::fit_to_model`).

use serde_json::{json, Map, Value};

/// Why a request cannot be translated (a 400 `invalid_request_error`).
pub type Invalid = String;

/// The chat request for Messages request `v`.
pub fn to_chat(v: &Value) -> Result<Value, Invalid> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("model: field required")?;
    let max_tokens = obj
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("max_tokens: field required (a positive integer)")?;
    let mut messages = Vec::new();
    if let Some(system) = obj.get("system") {
        let text = text_of(&without_billing_line(system), "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: field required (an array)")?;
    for (i, m) in turns.iter().enumerate() {
        turn(m, i, &mut messages)?;
    }
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), max_tokens.into());
    for key in ["temperature", "top_p"] {
        if let Some(x) = obj.get(key).filter(|x| x.is_number()) {
            out.insert(key.into(), x.clone());
        }
    }
    if let Some(stops) = obj.get("stop_sequences").and_then(Value::as_array) {
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops.clone()));
        }
    }
    if obj.get("stream") == Some(&Value::Bool(true)) {
        out.insert("stream".into(), true.into());
        // the usage for message_delta
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), user.into());
    }
    tools(obj, &mut out)?;
    Ok(Value::Object(out))
}

/// `system` without Claude Code's per-request billing line (a text block
/// starting `x-anthropic-billing-header:` with a nonce): it would make
/// every prompt new to an upstream's prefix cache and the response cache.
fn without_billing_line(system: &Value) -> Value {
    match system {
        Value::Array(blocks) => Value::Array(
            blocks
                .iter()
                .filter(|b| {
                    !b.get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.starts_with("x-anthropic-billing-header:"))
                })
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A string, or text blocks joined (other blocks are an error here).
fn text_of(v: &Value, field: &str) -> Result<String, Invalid> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    _ => return Err(format!("{field}.{i}: only text blocks are allowed here")),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(format!("{field}: a string or an array of text blocks")),
    }
}

/// Adds the chat messages for Messages turn `m` (number `i`).
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), Invalid> {
    let role = m.get("role").and_then(Value::as_str);
    let role = match role {
        Some(r @ ("user" | "assistant")) => r,
        _ => return Err(format!("messages.{i}.role: user or assistant")),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(format!(
                "messages.{i}.content: a string or an array of blocks"
            ))
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = || format!("messages.{i}.content.{j}");
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": text}));
            }
            "image" => parts.push(
                image(b)
                    .ok_or_else(|| format!("{}: an image needs a base64 or url source", at()))?,
            ),
            "tool_use" if role == "assistant" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let input = b.get("input").cloned().unwrap_or(json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            "tool_result" if role == "user" => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                let content = tool_result_text(b.get("content"));
                let text = if b.get("is_error") == Some(&Value::Bool(true)) {
                    format!("Error: {content}")
                } else {
                    content
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(format!(
                    "{}: a {other:?} block is not supported in a {role} turn",
                    at()
                ))
            }
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut msg = Map::new();
    msg.insert("role".into(), role.into());
    let all_text = parts.iter().all(|p| p["type"] == "text");
    let content = if role == "assistant" || all_text {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if texts.is_empty() {
            Value::Null
        } else {
            // the assistant's text as one; a user's blocks a line apart
            let sep = if role == "assistant" { "" } else { "\n" };
            Value::String(texts.join(sep))
        }
    } else {
        Value::Array(parts)
    };
    msg.insert("content".into(), content);
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

/// An image block as an `image_url` part.
fn image(b: &Value) -> Option<Value> {
    let src = b.get("source")?;
    let url = match src.get("type")?.as_str()? {
        "base64" => format!(
            "data:{};base64,{}",
            src.get("media_type")?.as_str()?,
            src.get("data")?.as_str()?
        ),
        "url" => src.get("url")?.as_str()?.to_string(),
        _ => return None,
    };
    Some(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's content as text (text blocks joined; others noted).
fn tool_result_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `tools` and `tool_choice`.
fn tools(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), Invalid> {
    if let Some(list) = obj.get("tools").and_then(Value::as_array) {
        let mut fns = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tools.{i}.name: field required"))?;
            let mut f = json!({"name": name,
                "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"}))});
            if let Some(d) = t
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
            {
                f["description"] = d.into();
            }
            fns.push(json!({"type": "function", "function": f}));
        }
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
    }
    if let Some(choice) = obj.get("tool_choice") {
        let c = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
                json!({"type": "function", "function": {"name": name}})
            }
            _ => return Err("tool_choice.type: auto, any, tool or none".into()),
        };
        out.insert("tool_choice".into(), c);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    Ok(())
}
