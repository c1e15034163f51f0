//! Merging a stream into one response, following AGGREGATION.md exactly.
//!
//! [`ChatAggregator`] merges `chat.completion.chunk`s into a `chat.completion`,
//! [`CompletionAggregator`] legacy `text_completion` chunks, and
//! [`ResponsesAggregator`] Responses API events into the final `response`.
//! `finish` refuses a truncated stream (no choices, or a choice without
//! `finish_reason`) rather than passing partial text off as complete.

use crate::routes::Api;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Why a stream could not be turned into a complete answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// The upstream reported an error inside the stream.
    #[error("error inside the stream: {}", upstream_message(.0))]
    Upstream(Value),
    /// The stream ended before the answer was complete.
    #[error("the stream ended early: {0}")]
    Truncated(String),
    /// A data line was not valid JSON.
    #[error("the stream had invalid data: {0}")]
    Malformed(String),
}

/// An in-stream error's `message`, else the whole error.
fn upstream_message(e: &Value) -> String {
    e.get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string())
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
        // content that only ever received "" next to tool calls, a function call
        // or a refusal is `null`, as the non-streaming API returns it
        let content = self.content.filter(|c| {
            !c.is_empty()
                || (self.tool_calls.is_empty()
                    && self.function_call.is_none()
                    && self.refusal.is_none())
        });
        msg.insert("content".into(), json!(content));
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

/// The aggregator for one API's stream.
#[derive(Debug)]
pub enum Aggregator {
    Chat(ChatAggregator),
    Completion(CompletionAggregator),
    Responses(ResponsesAggregator),
}

impl Aggregator {
    pub fn new(api: Api) -> Aggregator {
        match api {
            Api::Completions => Aggregator::Completion(CompletionAggregator::new()),
            Api::Responses => Aggregator::Responses(ResponsesAggregator::new()),
            _ => Aggregator::Chat(ChatAggregator::new()),
        }
    }

    /// Adds one parsed event (`event_name` matters to the Responses API only).
    pub fn push(&mut self, event_name: Option<&str>, v: &Value) -> Result<(), AggregateError> {
        match self {
            Aggregator::Chat(a) => a.push(v),
            Aggregator::Completion(a) => a.push(v),
            Aggregator::Responses(a) => a.push(event_name, v),
        }
    }

    /// The merged answer, or why the stream was not a complete one.
    pub fn finish(self) -> Result<Value, AggregateError> {
        match self {
            Aggregator::Chat(a) => a.finish(),
            Aggregator::Completion(a) => a.finish(),
            Aggregator::Responses(a) => a.finish(),
        }
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
#[path = "aggregate_tests.rs"]
mod tests;
