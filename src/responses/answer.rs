//! A chat answer as a Responses API answer: a completion as a response
//! object ([`to_response`]), a chat stream as Responses events
//! ([`Encoder`]: `response.created`, `in_progress`, items and their parts
//! as the text and arguments come, `response.completed`).
//!
//! Items: a `reasoning` item for `reasoning_content` (its summary; streamed
//! as `reasoning_summary_text` deltas), a
//! `message` with the text, a `function_call` per tool call. A `length`
//! finish is `status: incomplete` (`max_output_tokens`), `content_filter`
//! too (`content_filter`).

use serde_json::{json, Value};

/// Responses usage for chat usage `u`.
fn usage(u: &Value) -> Value {
    if !u.is_object() {
        return Value::Null;
    }
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (input, output) = (n(&u["prompt_tokens"]), n(&u["completion_tokens"]));
    json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
        "input_tokens_details": {"cached_tokens": n(&u["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens_details": {"reasoning_tokens": n(&u["completion_tokens_details"]["reasoning_tokens"])}})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": format!("fc_{call_id}"), "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]})
}

/// The response object around `output`.
fn response(
    id: &str,
    created: u64,
    model: &Value,
    output: Vec<Value>,
    finish: &str,
    u: &Value,
) -> Value {
    let incomplete = match finish {
        "length" => Some("max_output_tokens"),
        "content_filter" => Some("content_filter"),
        _ => None,
    };
    json!({"id": id, "object": "response", "created_at": created, "model": model,
        "status": if incomplete.is_some() { "incomplete" } else { "completed" },
        "incomplete_details": incomplete.map(|r| json!({"reason": r})),
        "output": output, "usage": usage(u), "error": null,
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": []})
}

/// The response id for chat id `chat_id`.
fn response_id(chat_id: &str) -> String {
    let id: String = chat_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(48)
        .collect();
    format!("resp_{id}")
}

/// The response for chat completion `c`.
pub fn to_response(c: &Value) -> Value {
    let id = response_id(c["id"].as_str().unwrap_or(""));
    let choice = &c["choices"][0];
    let msg = &choice["message"];
    let mut output = Vec::new();
    if let Some(r) = msg["reasoning_content"].as_str().filter(|r| !r.is_empty()) {
        output.push(reasoning_item(&format!("rs_{id}"), r));
    }
    let calls = msg["tool_calls"].as_array().cloned().unwrap_or_default();
    let text = msg["content"].as_str().unwrap_or("");
    if !text.is_empty() || calls.is_empty() {
        output.push(message_item(&format!("msg_{id}"), text, "completed"));
    }
    for call in &calls {
        let f = &call["function"];
        output.push(call_item(
            call["id"].as_str().unwrap_or(""),
            f["name"].as_str().unwrap_or(""),
            f["arguments"].as_str().unwrap_or(""),
            "completed",
        ));
    }
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    let created = c["created"].as_u64().unwrap_or(0);
    response(&id, created, &c["model"], output, finish, &c["usage"])
}

/// The two items whose text streams: a message's output text and a
/// reasoning summary. Their events differ only in names and a few fields.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Text {
    Message = 0,
    Reasoning = 1,
}

/// A [`Text`] item's id prefix, event names and the key of its part index.
struct Names {
    prefix: &'static str,
    part_added: &'static str,
    part_done: &'static str,
    delta: &'static str,
    done: &'static str,
    at: &'static str,
}

impl Text {
    fn other(self) -> Text {
        match self {
            Text::Message => Text::Reasoning,
            Text::Reasoning => Text::Message,
        }
    }

    fn names(self) -> Names {
        match self {
            Text::Message => Names {
                prefix: "msg",
                part_added: "response.content_part.added",
                part_done: "response.content_part.done",
                delta: "response.output_text.delta",
                done: "response.output_text.done",
                at: "content_index",
            },
            Text::Reasoning => Names {
                prefix: "rs",
                part_added: "response.reasoning_summary_part.added",
                part_done: "response.reasoning_summary_part.done",
                delta: "response.reasoning_summary_text.delta",
                done: "response.reasoning_summary_text.done",
                at: "summary_index",
            },
        }
    }

    /// The part that holds `text`.
    fn part(self, text: &str) -> Value {
        match self {
            Text::Message => json!({"type": "output_text", "text": text, "annotations": []}),
            Text::Reasoning => json!({"type": "summary_text", "text": text}),
        }
    }

    /// The item: empty and in progress as it opens (`None`), else whole.
    fn item(self, id: &str, text: Option<&str>) -> Value {
        match (self, text) {
            (Text::Message, None) => {
                let mut item = message_item(id, "", "in_progress");
                item["content"] = json!([]);
                item
            }
            (Text::Message, Some(t)) => message_item(id, t, "completed"),
            (Text::Reasoning, None) => json!({"id": id, "type": "reasoning", "summary": []}),
            (Text::Reasoning, Some(t)) => reasoning_item(id, t),
        }
    }
}

/// One function call being streamed.
#[derive(Debug)]
struct Call {
    chat_index: u64,
    output_index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

/// A chat stream re-told as Responses events.
#[derive(Debug, Default)]
pub struct Encoder {
    id: String,
    model: Value,
    created: u64,
    seq: u64,
    started: bool,
    ended: bool,
    /// Items closed, by output index.
    done: Vec<(usize, Value)>,
    next_index: usize,
    /// The message and the reasoning summary being written (by [`Text`]):
    /// the output index and the text so far.
    texts: [Option<(usize, String)>; 2],
    calls: Vec<Call>,
    finish: String,
    usage: Value,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Whether the stream has ended (completed, or an error event).
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn event(&mut self, ty: &str, v: Value, out: &mut String) {
        crate::sse::synth::responses_event(out, &mut self.seq, ty, v);
    }

    /// Whether a finish reason came (the answer is whole).
    pub fn finished(&self) -> bool {
        !self.finish.is_empty()
    }

    fn skeleton(&self) -> Value {
        json!({"id": self.id, "object": "response", "created_at": self.created, "model": self.model,
            "status": "in_progress", "output": [], "usage": null, "error": null})
    }

    /// One chat chunk (parsed `data:`).
    pub fn chunk(&mut self, v: &Value, out: &mut String) {
        if self.ended {
            return;
        }
        if !self.started {
            self.started = true;
            self.id = response_id(v["id"].as_str().unwrap_or(""));
            self.model = v["model"].clone();
            self.created = v["created"].as_u64().unwrap_or(0);
            let r = self.skeleton();
            self.event("response.created", json!({"response": r}), out);
            self.event("response.in_progress", json!({"response": r}), out);
        }
        if v["usage"].is_object() {
            self.usage = v["usage"].clone();
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        let thinking = ["reasoning_content", "reasoning"]
            .iter()
            .find_map(|k| delta[*k].as_str().filter(|t| !t.is_empty()));
        if let Some(t) = thinking {
            self.text(Text::Reasoning, t, out);
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text(Text::Message, t, out);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            self.call(call, out);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = f.to_string();
        }
    }

    /// A piece of `kind`'s text; opening its item closes the other one.
    fn text(&mut self, kind: Text, t: &str, out: &mut String) {
        let n = kind.names();
        if self.texts[kind as usize].is_none() {
            self.close_text(kind.other(), out);
            let i = self.next_index;
            self.next_index += 1;
            let id = format!("{}_{}_{i}", n.prefix, self.id);
            let item = kind.item(&id, None);
            self.event(
                "response.output_item.added",
                json!({"output_index": i, "item": item}),
                out,
            );
            let mut added = json!({"item_id": id, "output_index": i, "part": kind.part("")});
            added[n.at] = json!(0);
            self.event(n.part_added, added, out);
            self.texts[kind as usize] = Some((i, String::new()));
        }
        let Some((i, text)) = self.texts[kind as usize].as_mut() else {
            return;
        };
        text.push_str(t);
        let i = *i;
        let mut d = json!({"item_id": format!("{}_{}_{i}", n.prefix, self.id), "output_index": i, "delta": t});
        d[n.at] = json!(0);
        if kind == Text::Message {
            d["logprobs"] = json!([]);
        }
        self.event(n.delta, d, out);
    }

    /// Closes `kind`'s item, if open: its text, its part, the item.
    fn close_text(&mut self, kind: Text, out: &mut String) {
        let Some((i, text)) = self.texts[kind as usize].take() else {
            return;
        };
        let n = kind.names();
        let id = format!("{}_{}_{i}", n.prefix, self.id);
        let mut at = json!({"item_id": id, "output_index": i});
        at[n.at] = json!(0);
        let mut done = at.clone();
        done["text"] = json!(text);
        if kind == Text::Message {
            done["logprobs"] = json!([]);
        }
        self.event(n.done, done, out);
        let mut part = at;
        part["part"] = kind.part(&text);
        self.event(n.part_done, part, out);
        let item = kind.item(&id, Some(&text));
        self.event(
            "response.output_item.done",
            json!({"output_index": i, "item": item.clone()}),
            out,
        );
        self.done.push((i, item));
    }

    fn call(&mut self, c: &Value, out: &mut String) {
        let chat_index = c["index"].as_u64().unwrap_or(self.calls.len() as u64);
        let known = self.calls.iter().position(|k| k.chat_index == chat_index);
        let at = match known {
            Some(at) => at,
            None => {
                self.close_text(Text::Reasoning, out);
                self.close_text(Text::Message, out);
                let i = self.next_index;
                self.next_index += 1;
                // an upstream that names no id: one of ours, unique in the answer
                let call_id = match c["id"].as_str().filter(|id| !id.is_empty()) {
                    Some(id) => id.to_string(),
                    None => format!("call_{}_{i}", self.id),
                };
                let name = c["function"]["name"].as_str().unwrap_or("").to_string();
                let item = call_item(&call_id, &name, "", "in_progress");
                self.event(
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                    out,
                );
                self.calls.push(Call {
                    chat_index,
                    output_index: i,
                    call_id,
                    name,
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        let piece = c["function"]["arguments"].as_str().unwrap_or("");
        if piece.is_empty() {
            return;
        }
        self.calls[at].arguments.push_str(piece);
        let (i, id) = (
            self.calls[at].output_index,
            format!("fc_{}", self.calls[at].call_id),
        );
        let d = json!({"item_id": id, "output_index": i, "delta": piece});
        self.event("response.function_call_arguments.delta", d, out);
    }

    /// The chat stream's end: every open item closes, then the response.
    pub fn done(&mut self, out: &mut String) {
        if self.ended {
            return;
        }
        if !self.started {
            self.chunk(&json!({}), out);
        }
        self.close_text(Text::Reasoning, out);
        self.close_text(Text::Message, out);
        for c in std::mem::take(&mut self.calls) {
            let id = format!("fc_{}", c.call_id);
            let d =
                json!({"item_id": id, "output_index": c.output_index, "arguments": c.arguments});
            self.event("response.function_call_arguments.done", d, out);
            let item = call_item(&c.call_id, &c.name, &c.arguments, "completed");
            self.event(
                "response.output_item.done",
                json!({"output_index": c.output_index, "item": item.clone()}),
                out,
            );
            self.done.push((c.output_index, item));
        }
        self.done.sort_by_key(|(i, _)| *i);
        let output = self.done.drain(..).map(|(_, item)| item).collect();
        let finish = if self.finish.is_empty() {
            "stop"
        } else {
            &self.finish
        };
        let r = response(
            &self.id,
            self.created,
            &self.model,
            output,
            finish,
            &self.usage,
        );
        let kind = match r["status"].as_str() {
            Some("incomplete") => "response.incomplete",
            _ => "response.completed",
        };
        self.event(kind, json!({"response": r}), out);
        self.ended = true;
    }

    /// The stream broke: an `error` event ends it.
    pub fn error(&mut self, message: &str, code: &str, out: &mut String) {
        if self.ended {
            return;
        }
        self.event(
            "error",
            json!({"message": message, "code": code, "param": null}),
            out,
        );
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_as_a_response() {
        let c = json!({"id": "chatcmpl-1", "created": 5, "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hi", "reasoning_content": "hm",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1}}});
        let r = to_response(&c);
        let types: Vec<&str> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["reasoning", "message", "function_call"]);
        assert_eq!(r["output"][2]["call_id"], "call_1");
        assert_eq!(
            (r["status"].as_str(), r["usage"]["total_tokens"].as_u64()),
            (Some("completed"), Some(5))
        );
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 1);
        let mut cut = c.clone();
        cut["choices"][0]["finish_reason"] = json!("length");
        assert_eq!(
            to_response(&cut)["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }

    #[test]
    fn a_stream_text_then_two_calls_told_as_events() {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-9", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut e = Encoder::new();
        let mut out = String::new();
        for c in [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"reasoning_content": "Think"}), Value::Null),
            chunk(json!({"content": "He"}), Value::Null),
            chunk(json!({"content": "llo"}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            json!({"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}),
        ] {
            e.chunk(&c, &mut out);
        }
        e.done(&mut out);
        let events = crate::sse::parse_all(out.as_bytes());
        let data: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let types: Vec<&str> = data.iter().map(|v| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            &types[..5],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta"
            ]
        );
        let text: String = data
            .iter()
            .filter(|v| v["type"] == "response.output_text.delta")
            .map(|v| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Hello");
        let last = data.last().unwrap();
        assert_eq!(last["type"], "response.completed");
        let output = last["response"]["output"].as_array().unwrap();
        assert_eq!(output[0]["summary"][0]["text"], "Think");
        assert_eq!(output[1]["content"][0]["text"], "Hello");
        assert_eq!(
            (
                output[2]["arguments"].as_str(),
                output[3]["arguments"].as_str()
            ),
            (Some("{\"a\":1}"), Some("{}"))
        );
        assert_eq!(last["response"]["usage"]["total_tokens"], 10);
        for (i, v) in data.iter().enumerate() {
            assert_eq!(v["sequence_number"], i);
        }
        // every item added is done, with the same id
        let ids = |ty: &str| -> Vec<Value> {
            data.iter()
                .filter(|v| v["type"] == ty)
                .map(|v| v["item"]["id"].clone())
                .collect()
        };
        assert_eq!(
            ids("response.output_item.added"),
            ids("response.output_item.done")
        );
    }
}
