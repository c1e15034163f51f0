//! Merging a stream into one response, following AGGREGATION.md exactly.
//!
//! [`ChatAggregator`] merges `chat.completion.chunk`s into a `chat.completion`,
//! [`CompletionAggregator`] legacy `text_completion` chunks, and
//! [`ResponsesAggregator`] Responses API events into the final `response`.
//! `finish` refuses a truncated stream (no choices, or a choice without
//! `finish_reason`) rather than passing partial text off as complete.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Why a stream could not be turned into a complete answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateError {
    /// The upstream reported an error inside the stream.
    Upstream(Value),
    /// The stream ended before the answer was complete.
    Truncated(String),
    /// A data line was not valid JSON.
    Malformed(String),
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::Upstream(e) => write!(
                f,
                "error inside the stream: {}",
                e.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            ),
            AggregateError::Truncated(m) => write!(f, "the stream ended early: {m}"),
            AggregateError::Malformed(m) => write!(f, "the stream had invalid data: {m}"),
        }
    }
}

/// Keys of a chunk that are not "other top-level keys".
const CHUNK_SKIP: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "choices",
    "usage",
    "obfuscation",
    "prompt_filter_results",
];

fn non_empty(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        _ => true,
    })
}

fn concat(slot: &mut Option<String>, v: Option<&Value>) {
    if let Some(Value::String(s)) = v {
        slot.get_or_insert_with(String::new).push_str(s);
    }
}

#[derive(Default, Debug)]
struct ToolAcc {
    id: Option<String>,
    ty: Option<String>,
    name: Option<String>,
    arguments: String,
    extra: Map<String, Value>,
}

#[derive(Default, Debug)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    tool_calls: BTreeMap<i64, ToolAcc>,
    /// The tool call most recently touched (for deltas with no index).
    current_tool: Option<i64>,
    function_call: Option<(Option<String>, String)>,
    audio: Option<Map<String, Value>>,
    annotations: Option<Vec<Value>>,
    logprobs: Option<Value>,
    finish_reason: Option<Value>,
    /// Other choice keys (e.g. Azure `content_filter_results`): last non-null.
    extra: Map<String, Value>,
}

impl ChoiceAcc {
    fn push(&mut self, choice: &Map<String, Value>) {
        if let Some(Value::Object(delta)) = choice.get("delta") {
            if let Some(Value::String(r)) = non_empty(delta.get("role")) {
                self.role = Some(r.clone());
            }
            concat(&mut self.content, delta.get("content"));
            concat(&mut self.refusal, delta.get("refusal"));
            concat(&mut self.reasoning_content, delta.get("reasoning_content"));
            concat(&mut self.reasoning, delta.get("reasoning"));
            if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                for call in calls {
                    self.push_tool(call);
                }
            }
            if let Some(Value::Object(fc)) = delta.get("function_call") {
                let acc = self.function_call.get_or_insert((None, String::new()));
                if let Some(Value::String(n)) = non_empty(fc.get("name")) {
                    acc.0 = Some(n.clone());
                }
                if let Some(Value::String(a)) = fc.get("arguments") {
                    acc.1.push_str(a);
                }
            }
            if let Some(Value::Object(audio)) = delta.get("audio") {
                let acc = self.audio.get_or_insert_with(Map::new);
                for (k, v) in audio {
                    match (k.as_str(), v) {
                        ("data" | "transcript", Value::String(s)) => {
                            let cur = acc
                                .entry(k.clone())
                                .or_insert_with(|| Value::String(String::new()));
                            if let Value::String(c) = cur {
                                c.push_str(s);
                            }
                        }
                        (_, Value::Null) => {}
                        _ => {
                            acc.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            if let Some(Value::Array(a)) = delta.get("annotations") {
                self.annotations
                    .get_or_insert_with(Vec::new)
                    .extend(a.iter().cloned());
            }
        }
        if let Some(lp @ Value::Object(new)) = choice.get("logprobs") {
            match &mut self.logprobs {
                None => self.logprobs = Some(lp.clone()),
                Some(Value::Object(cur)) => {
                    for key in ["content", "refusal"] {
                        if let Some(Value::Array(items)) = new.get(key) {
                            match cur.get_mut(key) {
                                Some(Value::Array(existing)) => {
                                    existing.extend(items.iter().cloned())
                                }
                                _ => {
                                    cur.insert(key.to_string(), Value::Array(items.clone()));
                                }
                            }
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(fr) = non_empty(choice.get("finish_reason")) {
            self.finish_reason = Some(fr.clone());
        }
        for (k, v) in choice {
            if !matches!(k.as_str(), "index" | "delta" | "logprobs" | "finish_reason")
                && !v.is_null()
            {
                self.extra.insert(k.clone(), v.clone());
            }
        }
    }

    fn push_tool(&mut self, call: &Value) {
        let idx = match call.get("index").and_then(|i| i.as_i64()) {
            Some(i) if i >= 0 => i,
            Some(_) => 0,
            None => self.current_tool.unwrap_or(0),
        };
        self.current_tool = Some(idx);
        let acc = self.tool_calls.entry(idx).or_default();
        if let Some(Value::String(s)) = non_empty(call.get("id")) {
            acc.id = Some(s.clone());
        }
        if let Some(Value::String(s)) = non_empty(call.get("type")) {
            acc.ty = Some(s.clone());
        }
        if let Some(f) = call.get("function") {
            if let Some(Value::String(s)) = non_empty(f.get("name")) {
                acc.name = Some(s.clone());
            }
            if let Some(Value::String(a)) = f.get("arguments") {
                acc.arguments.push_str(a);
            }
        }
        if let Some(obj) = call.as_object() {
            for (k, v) in obj {
                if !matches!(k.as_str(), "index" | "id" | "type" | "function") && !v.is_null() {
                    acc.extra.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn finish(self, index: i64) -> Value {
        let mut msg = Map::new();
        msg.insert(
            "role".into(),
            json!(self.role.unwrap_or_else(|| "assistant".into())),
        );
        msg.insert("content".into(), json!(self.content));
        msg.insert("refusal".into(), json!(self.refusal));
        if let Some(r) = self.reasoning_content {
            msg.insert("reasoning_content".into(), json!(r));
        }
        if let Some(r) = self.reasoning {
            msg.insert("reasoning".into(), json!(r));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_values()
                .map(|t| {
                    let mut c = t.extra;
                    c.insert("id".into(), json!(t.id));
                    c.insert(
                        "type".into(),
                        json!(t.ty.unwrap_or_else(|| "function".into())),
                    );
                    c.insert(
                        "function".into(),
                        json!({"name": t.name, "arguments": t.arguments}),
                    );
                    Value::Object(c)
                })
                .collect();
            msg.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some((name, args)) = self.function_call {
            msg.insert(
                "function_call".into(),
                json!({"name": name, "arguments": args}),
            );
        }
        if let Some(a) = self.audio {
            msg.insert("audio".into(), Value::Object(a));
        }
        if let Some(a) = self.annotations {
            msg.insert("annotations".into(), Value::Array(a));
        }
        let mut c = self.extra;
        c.insert("index".into(), json!(index));
        c.insert("message".into(), Value::Object(msg));
        c.insert("logprobs".into(), self.logprobs.unwrap_or(Value::Null));
        c.insert(
            "finish_reason".into(),
            self.finish_reason.unwrap_or(Value::Null),
        );
        Value::Object(c)
    }
}

/// Shared top-level handling for chat and completions chunks.
#[derive(Default, Debug)]
struct Top {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    usage: Option<Value>,
    extra: Map<String, Value>,
    prompt_filter_results: Option<Vec<Value>>,
}

impl Top {
    fn push(&mut self, chunk: &Map<String, Value>) {
        if self.id.is_none() {
            self.id = non_empty(chunk.get("id")).cloned();
        }
        if self.created.is_none() {
            self.created = non_empty(chunk.get("created"))
                .filter(|c| c.as_i64() != Some(0))
                .cloned();
        }
        if self.model.is_none() {
            self.model = non_empty(chunk.get("model")).cloned();
        }
        if let Some(u) = non_empty(chunk.get("usage")) {
            self.usage = Some(u.clone());
        }
        if let Some(Value::Array(p)) = chunk.get("prompt_filter_results") {
            self.prompt_filter_results
                .get_or_insert_with(Vec::new)
                .extend(p.iter().cloned());
        }
        for (k, v) in chunk {
            if !CHUNK_SKIP.contains(&k.as_str()) && !v.is_null() {
                self.extra.insert(k.clone(), v.clone());
            }
        }
    }

    fn finish(self, object: &str, choices: Vec<Value>) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), self.id.unwrap_or(Value::String(String::new())));
        out.insert("object".into(), json!(object));
        out.insert("created".into(), self.created.unwrap_or(json!(0)));
        out.insert(
            "model".into(),
            self.model.unwrap_or(Value::String(String::new())),
        );
        out.insert("choices".into(), Value::Array(choices));
        out.insert("usage".into(), self.usage.unwrap_or(Value::Null));
        if object == "chat.completion" {
            out.entry("system_fingerprint").or_insert(Value::Null);
            out.entry("service_tier").or_insert(Value::Null);
        }
        if let Some(p) = self.prompt_filter_results {
            out.insert("prompt_filter_results".into(), Value::Array(p));
        }
        for (k, v) in self.extra {
            out.insert(k, v);
        }
        Value::Object(out)
    }
}

/// Merges `chat.completion.chunk`s into one `chat.completion`.
#[derive(Default, Debug)]
pub struct ChatAggregator {
    top: Top,
    choices: BTreeMap<i64, ChoiceAcc>,
    saw_choices: bool,
}

impl ChatAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one parsed chunk. Errors inside the stream are reported here.
    pub fn push(&mut self, chunk: &Value) -> Result<(), AggregateError> {
        let Some(obj) = chunk.as_object() else {
            return Err(AggregateError::Malformed(
                "a chunk is not a JSON object".into(),
            ));
        };
        self.top.push(obj);
        if let Some(Value::Array(choices)) = obj.get("choices") {
            for c in choices {
                let Some(c) = c.as_object() else { continue };
                let idx = c.get("index").and_then(|i| i.as_i64()).unwrap_or(0);
                self.saw_choices = true;
                self.choices.entry(idx).or_default().push(c);
            }
        }
        Ok(())
    }

    /// The merged completion, or why the stream was not a complete answer.
    pub fn finish(self) -> Result<Value, AggregateError> {
        if !self.saw_choices {
            return Err(AggregateError::Truncated(
                "no chunk carried a choice".into(),
            ));
        }
        if let Some((i, _)) = self.choices.iter().find(|(_, c)| c.finish_reason.is_none()) {
            return Err(AggregateError::Truncated(format!(
                "choice {i} has no finish_reason"
            )));
        }
        let choices = self.choices.into_iter().map(|(i, c)| c.finish(i)).collect();
        Ok(self.top.finish("chat.completion", choices))
    }
}

/// Merges legacy `/v1/completions` stream chunks into one `text_completion`.
#[derive(Default, Debug)]
pub struct CompletionAggregator {
    top: Top,
    choices: BTreeMap<i64, (String, Option<Value>, Option<Value>)>,
    saw_choices: bool,
}

impl CompletionAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &Value) -> Result<(), AggregateError> {
        let Some(obj) = chunk.as_object() else {
            return Err(AggregateError::Malformed(
                "a chunk is not a JSON object".into(),
            ));
        };
        self.top.push(obj);
        if let Some(Value::Array(choices)) = obj.get("choices") {
            for c in choices {
                let idx = c.get("index").and_then(|i| i.as_i64()).unwrap_or(0);
                self.saw_choices = true;
                let acc = self.choices.entry(idx).or_default();
                if let Some(Value::String(t)) = c.get("text") {
                    acc.0.push_str(t);
                }
                if let Some(lp @ Value::Object(new)) = c.get("logprobs") {
                    match &mut acc.1 {
                        None => acc.1 = Some(lp.clone()),
                        Some(Value::Object(cur)) => {
                            for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
                                if let Some(Value::Array(items)) = new.get(key) {
                                    match cur.get_mut(key) {
                                        Some(Value::Array(e)) => e.extend(items.iter().cloned()),
                                        _ => {
                                            cur.insert(key.into(), Value::Array(items.clone()));
                                        }
                                    }
                                }
                            }
                        }
                        Some(_) => {}
                    }
                }
                if let Some(fr) = non_empty(c.get("finish_reason")) {
                    acc.2 = Some(fr.clone());
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Value, AggregateError> {
        if !self.saw_choices {
            return Err(AggregateError::Truncated(
                "no chunk carried a choice".into(),
            ));
        }
        if let Some((i, _)) = self.choices.iter().find(|(_, c)| c.2.is_none()) {
            return Err(AggregateError::Truncated(format!(
                "choice {i} has no finish_reason"
            )));
        }
        let choices = self
            .choices
            .into_iter()
            .map(|(i, (text, lp, fr))| json!({"index": i, "text": text, "logprobs": lp, "finish_reason": fr}))
            .collect();
        Ok(self.top.finish("text_completion", choices))
    }
}

/// Collects Responses API events into the final `response` object.
#[derive(Default, Debug)]
pub struct ResponsesAggregator {
    final_response: Option<Value>,
    items: BTreeMap<i64, Value>,
}

impl ResponsesAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// `event_name` is the SSE `event:` field (the JSON `type` is used when absent).
    pub fn push(&mut self, event_name: Option<&str>, data: &Value) -> Result<(), AggregateError> {
        let ty = data
            .get("type")
            .and_then(|t| t.as_str())
            .or(event_name)
            .unwrap_or("");
        match ty {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.final_response = data.get("response").cloned();
            }
            "response.output_item.done" => {
                let idx = data
                    .get("output_index")
                    .and_then(|i| i.as_i64())
                    .unwrap_or(self.items.len() as i64);
                if let Some(item) = data.get("item") {
                    self.items.insert(idx, item.clone());
                }
            }
            "error" => {
                return Err(AggregateError::Upstream(
                    data.get("error").cloned().unwrap_or_else(|| data.clone()),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Value, AggregateError> {
        let Some(mut resp) = self.final_response else {
            return Err(AggregateError::Truncated(
                "no response.completed event".into(),
            ));
        };
        let empty = resp
            .get("output")
            .and_then(|o| o.as_array())
            .is_none_or(|a| a.is_empty());
        if empty && !self.items.is_empty() {
            resp["output"] = Value::Array(self.items.into_values().collect());
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::parse_all;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/openai-chat-streams")
                .join(name),
        )
        .unwrap()
    }

    fn aggregate(data: &[u8]) -> Result<Value, AggregateError> {
        let mut agg = ChatAggregator::new();
        for ev in parse_all(data) {
            if ev.is_done() {
                break;
            }
            agg.push(&serde_json::from_str(&ev.data).unwrap())?;
        }
        agg.finish()
    }

    fn chunks(list: &[Value]) -> Result<Value, AggregateError> {
        let mut agg = ChatAggregator::new();
        for c in list {
            agg.push(c)?;
        }
        agg.finish()
    }

    #[test]
    fn plain_text_with_usage() {
        let v = aggregate(&fixture("e2aad469b71d.sse")).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["total_tokens"].as_i64().unwrap() > 0);
        assert!(v["system_fingerprint"].is_string());
        assert!(v.get("obfuscation").is_none());
    }

    #[test]
    fn three_interleaved_choices() {
        let v = aggregate(&fixture("a491adda08c3.sse")).unwrap();
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["message"]["role"], "assistant");
            assert!(!c["message"]["content"].as_str().unwrap().is_empty());
        }
    }

    #[test]
    fn refusal_keeps_content_null() {
        let v = aggregate(&fixture("173417d55340.sse")).unwrap();
        let m = &v["choices"][0]["message"];
        assert!(m["content"].is_null());
        assert!(m["refusal"].as_str().unwrap().len() > 5);
    }

    #[test]
    fn parallel_tool_calls() {
        let v = aggregate(&fixture("f82268f2fefd.sse")).unwrap();
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        for c in calls {
            assert!(c["id"].as_str().unwrap().starts_with("call_"));
            assert_eq!(c["type"], "function");
            serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()).unwrap();
        }
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn logprobs_extend() {
        let data = fixture("83b060bae42e.sse");
        let n_chunks_with_lp = parse_all(&data)
            .iter()
            .filter(|e| !e.is_done())
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
            .map(|v| {
                v["choices"][0]["logprobs"]["content"]
                    .as_array()
                    .map_or(0, |a| a.len())
            })
            .sum::<usize>();
        let v = aggregate(&data).unwrap();
        assert_eq!(
            v["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap()
                .len(),
            n_chunks_with_lp
        );
    }

    #[test]
    fn repeated_role_is_replaced_not_concatenated() {
        let v = chunks(&[
            json!({"id": "a", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}}]}),
            json!({"id": "a", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "llo"}, "finish_reason": "stop"}]}),
        ])
        .unwrap();
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    }

    #[test]
    fn tool_index_one_before_zero_and_empty_lists() {
        let v = chunks(&[
            json!({"choices": [{"index": 0, "delta": {"tool_calls": []}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "b", "arguments": "{\"y\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": ""}}]}, "finish_reason": "tool_calls"}]}),
        ])
        .unwrap();
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[1]["id"], "call_b");
        assert_eq!(calls[1]["function"]["arguments"], "{\"y\":2}");
        assert_eq!(calls[1]["type"], "function", "type defaults to function");
    }

    #[test]
    fn negative_and_missing_tool_index() {
        let v = chunks(&[
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": -1, "id": "c", "function": {"name": "f", "arguments": "{"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "}"}}]}, "finish_reason": "tool_calls"}]}),
        ])
        .unwrap();
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["function"]["arguments"], "{}");
    }

    #[test]
    fn missing_finish_reason_is_truncated() {
        let e = chunks(&[json!({"choices": [{"index": 0, "delta": {"content": "partial"}}]})])
            .unwrap_err();
        assert!(matches!(e, AggregateError::Truncated(_)));
        assert!(matches!(
            chunks(&[]).unwrap_err(),
            AggregateError::Truncated(_)
        ));
        // the recorded stream cut before its finish chunk
        let data = fixture("e2aad469b71d.sse");
        let text = String::from_utf8(data).unwrap();
        let cut = &text[..text.find("\"finish_reason\":\"stop\"").unwrap()];
        let cut = &cut[..cut.rfind("\n\n").unwrap() + 2];
        assert!(matches!(
            aggregate(cut.as_bytes()).unwrap_err(),
            AggregateError::Truncated(_)
        ));
    }

    #[test]
    fn usage_with_null_choices_and_azure_filter_chunk() {
        let v = chunks(&[
            json!({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false}}}]}),
            json!({"id": "x", "object": "chat.completion.chunk", "created": 5, "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "content_filter_results": {"hate": {"filtered": false}}}]}),
            json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "obfuscation": "abc", "system_fingerprint": "fp1"}),
            json!({"id": "x", "choices": null, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "system_fingerprint": "fp2"}),
        ])
        .unwrap();
        assert_eq!(
            (v["id"].as_str(), v["created"].as_i64(), v["model"].as_str()),
            (Some("x"), Some(5), Some("gpt-4o"))
        );
        assert_eq!(v["usage"]["total_tokens"], 2);
        assert_eq!(v["system_fingerprint"], "fp2", "last non-null wins");
        assert!(v.get("obfuscation").is_none());
        assert_eq!(v["prompt_filter_results"].as_array().unwrap().len(), 1);
        assert!(v["choices"][0]["content_filter_results"].is_object());
        assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn function_call_audio_reasoning() {
        let v = chunks(&[
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\""}, "reasoning_content": "think "}}]}),
            json!({"choices": [{"index": 0, "delta": {"function_call": {"arguments": ":1}"}, "reasoning_content": "hard", "audio": {"id": "au_1", "data": "AAA", "transcript": "he"}}}]}),
            json!({"choices": [{"index": 0, "delta": {"audio": {"data": "BBB", "transcript": "llo", "expires_at": 9}}, "finish_reason": "function_call"}]}),
        ])
        .unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(
            m["function_call"],
            json!({"name": "f", "arguments": "{\"a\":1}"})
        );
        assert_eq!(m["reasoning_content"], "think hard");
        assert_eq!(
            m["audio"],
            json!({"id": "au_1", "data": "AAABBB", "transcript": "hello", "expires_at": 9})
        );
        assert!(m["content"].is_null());
    }

    #[test]
    fn logprobs_null_later_does_not_reset() {
        let v = chunks(&[
            json!({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a"}], "refusal": null}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "c"}, "logprobs": {"content": [{"token": "c"}]}, "finish_reason": "stop"}]}),
        ])
        .unwrap();
        assert_eq!(
            v["choices"][0]["logprobs"]["content"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn every_fixture_aggregates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/openai-chat-streams");
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sse") {
                let v = aggregate(&std::fs::read(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(v["object"], "chat.completion", "{}", p.display());
            }
        }
    }

    #[test]
    fn completions_merge() {
        let mut a = CompletionAggregator::new();
        a.push(&json!({"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [{"index": 0, "text": "Hel", "logprobs": {"tokens": ["Hel"], "token_logprobs": [-0.1], "top_logprobs": [{}], "text_offset": [0]}, "finish_reason": null}]})).unwrap();
        a.push(&json!({"id": "c", "choices": [{"index": 0, "text": "lo", "logprobs": {"tokens": ["lo"], "token_logprobs": [-0.2], "top_logprobs": [{}], "text_offset": [3]}, "finish_reason": "length"}]})).unwrap();
        a.push(&json!({"id": "c", "choices": [], "usage": {"total_tokens": 3}}))
            .unwrap();
        let v = a.finish().unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "Hello");
        assert_eq!(v["choices"][0]["logprobs"]["tokens"], json!(["Hel", "lo"]));
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 3);
    }

    #[test]
    fn responses_final_object_and_rebuilt_output() {
        let mut a = ResponsesAggregator::new();
        a.push(None, &json!({"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}})).unwrap();
        a.push(
            None,
            &json!({"type": "response.output_item.done", "output_index": 1, "item": {"id": "b"}}),
        )
        .unwrap();
        a.push(
            None,
            &json!({"type": "response.output_item.done", "output_index": 0, "item": {"id": "a"}}),
        )
        .unwrap();
        a.push(
            Some("response.completed"),
            &json!({"response": {"id": "r", "status": "completed", "output": []}}),
        )
        .unwrap();
        let v = a.finish().unwrap();
        assert_eq!(v["status"], "completed");
        assert_eq!(v["output"], json!([{"id": "a"}, {"id": "b"}]));
        let mut b = ResponsesAggregator::new();
        assert!(b
            .push(
                None,
                &json!({"type": "error", "code": "insufficient_quota", "message": "no"})
            )
            .is_err());
        assert!(ResponsesAggregator::new().finish().is_err());
    }
}
