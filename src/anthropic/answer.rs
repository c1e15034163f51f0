//! A chat completion as a Messages API answer, and the pieces both the
//! whole answer and the stream share (stop reasons, usage, ids, errors).

use serde_json::{json, Value};

/// A chat `finish_reason` as a Messages `stop_reason`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A chat `usage` as Messages usage: `input_tokens` excludes cached ones,
/// which are `cache_read_input_tokens`.
pub fn usage(u: Option<&Value>) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let u = u.filter(|u| u.is_object());
    let prompt = n(u.and_then(|u| u.get("prompt_tokens")));
    let cached = n(u.and_then(|u| u.pointer("/prompt_tokens_details/cached_tokens")));
    json!({
        "input_tokens": prompt.saturating_sub(cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": n(u.and_then(|u| u.get("completion_tokens"))),
    })
}

/// A message id from the upstream's (`msg_…`).
pub fn message_id(chat_id: Option<&str>) -> String {
    let id = chat_id.unwrap_or("");
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect();
    if clean.is_empty() {
        format!("msg_sy{:016x}", rand::random::<u64>())
    } else {
        format!("msg_{clean}")
    }
}

/// A tool call's arguments (JSON text) as a `tool_use` input object; text
/// that is not a JSON object is kept under `_raw` rather than lost.
pub fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"_raw": arguments}),
    }
}

/// Chat completion `v` (of a call for `model`) as a Messages answer.
pub fn to_message(v: &Value, model: &str) -> Value {
    let choice = &v["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    for key in ["reasoning_content", "reasoning"] {
        if let Some(t) = msg[key].as_str().filter(|t| !t.is_empty()) {
            // no signature: a chat upstream signs nothing (see the README)
            content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
            break;
        }
    }
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(r) = msg["refusal"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": r}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        content.push(json!({
            "type": "tool_use",
            "id": call["id"].as_str().unwrap_or(""),
            "name": call["function"]["name"].as_str().unwrap_or(""),
            "input": tool_input(call["function"]["arguments"].as_str().unwrap_or("")),
        }));
    }
    // a stop sequence named the vLLM way (`stop_reason`)
    let sequence = choice["stop_reason"]
        .as_str()
        .filter(|_| choice["finish_reason"] == "stop");
    let stop = match (stop_reason(choice["finish_reason"].as_str()), sequence) {
        ("end_turn", Some(_)) => "stop_sequence",
        (r, _) => r,
    };
    json!({
        "id": message_id(v["id"].as_str()),
        "type": "message",
        "role": "assistant",
        "model": v["model"].as_str().unwrap_or(model),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": sequence,
        "usage": usage(v.get("usage")),
    })
}

/// An error's Messages `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        413 => "request_too_large",
        400 | 405 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The status a Messages client gets for the gateway's or an upstream's
/// `status`: 503 (no capacity) is Anthropic's 529 `overloaded_error`.
pub fn error_status(status: u16) -> u16 {
    if status == 503 {
        529
    } else {
        status
    }
}

/// An OpenAI-shaped (or any) error body with `status`, in the Messages shape.
pub fn error_body(status: u16, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("The upstream answered {status}.")
            } else {
                text.chars().take(1000).collect()
            }
        });
    // Claude Code compacts its history on Anthropic's wording of this error
    let context =
        v.pointer("/error/code").and_then(Value::as_str) == Some("context_length_exceeded");
    let message = if context && !message.starts_with("prompt is too long") {
        format!("prompt is too long: {message}")
    } else {
        message
    };
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_answer_with_text_and_tools_as_a_message() {
        let chat = json!({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 12}}});
        let m = to_message(&chat, "claude-x");
        assert_eq!(m["id"], "msg_chatcmpl-1");
        assert_eq!(m["type"], "message");
        assert_eq!(
            m["content"][0],
            json!({"type": "text", "text": "Let me look."})
        );
        assert_eq!(m["content"][1]["input"], json!({"city": "Paris"}));
        assert_eq!(m["content"][2]["input"], json!({}));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 8);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 12);
        assert_eq!(m["usage"]["output_tokens"], 9);
        assert_eq!(stop_reason(Some("length")), "max_tokens");
        assert_eq!(tool_input("[1]"), json!({"_raw": "[1]"}));
    }

    #[test]
    fn errors_in_the_messages_shape() {
        let e = error_body(
            429,
            br#"{"error": {"message": "slow down", "type": "rate_limit_error"}}"#,
        );
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        assert_eq!(error_body(503, b"")["error"]["type"], "overloaded_error");
        assert_eq!(error_status(503), 529);
        assert_eq!(
            error_body(502, b"<html>bad gateway</html>")["error"]["message"],
            "<html>bad gateway</html>"
        );
    }
}
