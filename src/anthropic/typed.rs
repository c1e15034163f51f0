//! The usual chat completion told as a Messages answer without JSON trees:
//! read into borrowed fields, written from typed ones. The same answer as
//! [`super::answer::to_message`], which takes anything this does not (an
//! error, odd types, no choices).

use super::answer::{message_id, stop_reason, tool_input};
use super::stream::{lenient_text, Delta};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    /// A message reads like a stream's delta (text, reasoning, tool calls).
    #[serde(borrow, default)]
    message: Delta<'a>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient_text")]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Serialize)]
struct Message<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'static str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

/// Chat completion `body` (of a call for `model`) as a Messages answer's
/// bytes; `None` when it is not the usual completion (then
/// [`super::answer::to_message`] reads it).
pub fn message(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let c: Completion = serde_json::from_slice(body).ok()?;
    if c.error.as_ref().is_some_and(|e| !e.is_null()) {
        return None;
    }
    let choice = c.choices.first()?;
    let m = &choice.message;
    let mut content = Vec::new();
    let thinking = [&m.reasoning_content, &m.reasoning]
        .into_iter()
        .find_map(|t| t.as_deref().filter(|t| !t.is_empty()));
    if let Some(t) = thinking {
        // no signature: a chat upstream signs nothing (see the README)
        content.push(Block::Thinking {
            thinking: t,
            signature: "",
        });
    }
    for t in [&m.content, &m.refusal] {
        if let Some(t) = t.as_deref().filter(|t| !t.is_empty()) {
            content.push(Block::Text { text: t });
        }
    }
    for call in m.tool_calls.iter().flatten() {
        content.push(Block::ToolUse {
            id: call["id"].as_str().unwrap_or(""),
            name: call["function"]["name"].as_str().unwrap_or(""),
            input: tool_input(call["function"]["arguments"].as_str().unwrap_or("")),
        });
    }
    let finish = choice.finish_reason.as_deref();
    // a stop sequence named the vLLM way (`stop_reason`)
    let sequence = choice
        .stop_reason
        .as_deref()
        .filter(|_| finish == Some("stop"));
    let stop = match (stop_reason(finish), sequence) {
        ("end_turn", Some(_)) => "stop_sequence",
        (r, _) => r,
    };
    let u = c.usage.unwrap_or_default();
    let cached = u
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let out = Message {
        id: message_id(c.id.as_deref()),
        kind: "message",
        role: "assistant",
        model: c.model.as_deref().unwrap_or(model),
        content,
        stop_reason: stop,
        stop_sequence: sequence,
        usage: Usage {
            input_tokens: u.prompt_tokens.unwrap_or(0).saturating_sub(cached),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
            output_tokens: u.completion_tokens.unwrap_or(0),
        },
    };
    serde_json::to_vec(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_message_as_the_tree_reader() {
        let answers = [
            json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Let me look.", "reasoning_content": "hm",
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "oops"}}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 3}}}),
            json!({"id": "c", "choices": [{"message": {"content": "x\u{e9}\"y", "refusal": null}, "finish_reason": "stop", "stop_reason": "END"}]}),
            json!({"choices": [{"message": {"content": null}, "finish_reason": "length"}], "usage": null}),
        ];
        for a in answers {
            let typed: Value =
                serde_json::from_slice(&message(a.to_string().as_bytes(), "asked").unwrap())
                    .unwrap();
            let mut tree = super::super::answer::to_message(&a, "asked");
            // ids made up for an answer without one differ; the rest may not
            if a["id"].is_null() {
                tree["id"] = typed["id"].clone();
            }
            assert_eq!(typed, tree, "{a}");
        }
        for odd in [
            json!({"error": {"message": "x"}, "choices": []}),
            json!({"choices": []}),
            json!({"object": "x"}),
            json!({"choices": [{"message": {}}], "usage": {"prompt_tokens": "7"}}),
        ] {
            assert!(message(odd.to_string().as_bytes(), "m").is_none(), "{odd}");
        }
    }
}
