//! The built-in demo upstream: an OpenAI-compatible server on a loopback port,
//! started in-process for every `kind: demo` upstream. It answers chat
//! completions (plain and streaming), completions, embeddings and models with
//! deterministic output, so the default config works offline with no keys.
//! The gateway reaches it over TCP like any other upstream.

use crate::minihttp::{Reply, Request};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Models the demo upstream advertises (it answers any model name it is sent).
pub const MODELS: &[&str] = &["demo-chat", "demo-embed"];

/// Fixed `created` timestamp: output is deterministic.
const CREATED: u64 = 1_700_000_000;

/// Starts the demo server on `127.0.0.1:<any>` on its own thread.
pub fn start() -> std::io::Result<std::net::SocketAddr> {
    crate::minihttp::spawn_on_thread("127.0.0.1:0", 1, Arc::new(handle))
}

fn error(status: u16, message: &str, code: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

/// Answers one request. Public so tests and the benchmark can reuse it.
pub fn handle(req: &Request) -> Reply {
    let path = req.path.split('?').next().unwrap_or("");
    let path = path.strip_prefix("/v1").unwrap_or(path);
    match (req.method.as_str(), path) {
        ("GET", "/models") => Reply::json(
            200,
            &json!({"object": "list", "data": MODELS.iter().map(|m| model_obj(m)).collect::<Vec<_>>()}),
        ),
        ("GET", p) if p.starts_with("/models/") => {
            Reply::json(200, &model_obj(&p["/models/".len()..]))
        }
        ("POST", "/chat/completions") => chat(req),
        ("POST", "/completions") => completions(req),
        ("POST", "/embeddings") => embeddings(req),
        _ => error(
            404,
            &format!(
                "The demo upstream does not implement {} {path}.",
                req.method
            ),
            "not_found",
        ),
    }
}

fn model_obj(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": CREATED, "owned_by": "switchyard-demo"})
}

fn short_hash(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..12])
}

fn words(s: &str) -> usize {
    s.split_whitespace().count().max(1)
}

/// The last user message's text (string content or text parts).
fn last_user_text(messages: &[Value]) -> String {
    let Some(m) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Reply text split into word pieces, cut at `max_tokens` (one word = one token).
fn answer_pieces(prompt: &str, max_tokens: Option<u64>) -> (Vec<String>, &'static str) {
    let mut echo: String = prompt.chars().take(200).collect();
    if echo.is_empty() {
        echo = "nothing".into();
    }
    let text = format!("Hello from the Switchyard demo upstream! You said: {echo}");
    let mut pieces: Vec<String> = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        pieces.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    match max_tokens {
        Some(n) if (n as usize) < pieces.len() => {
            pieces.truncate(n as usize);
            (pieces, "length")
        }
        _ => (pieces, "stop"),
    }
}

fn max_tokens(body: &Value) -> Option<u64> {
    body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64())
}

fn chat(req: &Request) -> Reply {
    let body = req.json();
    let Some(messages) = body["messages"].as_array() else {
        return error(
            400,
            "'messages' is a required property",
            "invalid_request_error",
        );
    };
    let model = body["model"].as_str().unwrap_or("demo-chat").to_string();
    let n = body["n"].as_u64().unwrap_or(1).clamp(1, 8);
    let prompt = last_user_text(messages);
    let prompt_tokens: usize = messages
        .iter()
        .map(|m| words(&m["content"].to_string()))
        .sum();
    let (pieces, finish) = answer_pieces(&prompt, max_tokens(&body));
    let completion_tokens = pieces.len() * n as usize;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    let id = format!("chatcmpl-demo{}", short_hash(&req.body));
    if body["stream"] != Value::Bool(true) {
        let content: String = pieces.concat();
        let choices: Vec<Value> = (0..n)
            .map(|i| json!({"index": i, "message": {"role": "assistant", "content": content, "refusal": null},
                "logprobs": null, "finish_reason": finish}))
            .collect();
        return Reply::json(
            200,
            &json!({"id": id, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": choices, "usage": usage, "system_fingerprint": "fp_switchyard_demo"}),
        );
    }
    let chunk = |choices: Value, usage: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_switchyard_demo", "choices": choices});
        if !usage.is_null() {
            v["usage"] = usage;
        }
        format!("data: {v}\n\n")
    };
    let mut events = Vec::new();
    for i in 0..n {
        events.push(chunk(
            json!([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        ));
        for p in &pieces {
            events.push(chunk(
                json!([{"index": i, "delta": {"content": p}, "logprobs": null, "finish_reason": null}]),
                Value::Null,
            ));
        }
        events.push(chunk(
            json!([{"index": i, "delta": {}, "logprobs": null, "finish_reason": finish}]),
            Value::Null,
        ));
    }
    if body["stream_options"]["include_usage"] == Value::Bool(true) {
        events.push(chunk(json!([]), usage));
    }
    events.push("data: [DONE]\n\n".into());
    Reply::sse(events, Duration::ZERO)
}

fn completions(req: &Request) -> Reply {
    let body = req.json();
    let prompt = match &body["prompt"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => {
            return error(
                400,
                "'prompt' is a required property",
                "invalid_request_error",
            )
        }
    };
    let model = body["model"].as_str().unwrap_or("demo-chat").to_string();
    let (pieces, finish) = answer_pieces(&prompt, max_tokens(&body));
    let prompt_tokens = words(&prompt);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": pieces.len(),
        "total_tokens": prompt_tokens + pieces.len()});
    let id = format!("cmpl-demo{}", short_hash(&req.body));
    if body["stream"] != Value::Bool(true) {
        return Reply::json(
            200,
            &json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "text": pieces.concat(), "logprobs": null, "finish_reason": finish}],
                "usage": usage}),
        );
    }
    let mut events: Vec<String> = Vec::new();
    let last = pieces.len().saturating_sub(1);
    for (i, p) in pieces.iter().enumerate() {
        let fr = if i == last {
            json!(finish)
        } else {
            Value::Null
        };
        let v = json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": p, "logprobs": null, "finish_reason": fr}]});
        events.push(format!("data: {v}\n\n"));
    }
    if body["stream_options"]["include_usage"] == Value::Bool(true) {
        let v = json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
            "choices": [], "usage": usage});
        events.push(format!("data: {v}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());
    Reply::sse(events, Duration::ZERO)
}

fn embeddings(req: &Request) -> Reply {
    let body = req.json();
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => {
            return error(
                400,
                "'input' is a required property",
                "invalid_request_error",
            )
        }
    };
    let dims = body["dimensions"].as_u64().unwrap_or(8).clamp(1, 4096) as usize;
    let base64 = body["encoding_format"] == "base64";
    let model = body["model"].as_str().unwrap_or("demo-embed").to_string();
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += words(text);
            let vec = embedding(text, dims);
            let emb = if base64 {
                let bytes: Vec<u8> = vec.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(b64(&bytes))
            } else {
                json!(vec)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    Reply::json(
        200,
        &json!({"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

/// A deterministic unit vector derived from the text's hash.
fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut block = Sha256::digest(text.as_bytes());
    while out.len() < dims {
        for pair in block.chunks(2) {
            if out.len() == dims {
                break;
            }
            let v = u16::from_le_bytes([pair[0], pair[1]]) as f32 / 65535.0 * 2.0 - 1.0;
            out.push(v);
        }
        block = Sha256::digest(block);
    }
    let norm = out
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    out.iter().map(|v| v / norm).collect()
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Used by tests: the bytes of a full reply.
pub fn full_body(r: &Reply) -> Bytes {
    match &r.body {
        crate::minihttp::ReplyBody::Full(b) => b.clone(),
        crate::minihttp::ReplyBody::Chunks(c) => c
            .iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect::<Vec<u8>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, body: Value) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            headers: vec![],
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn chat_is_deterministic_and_shaped() {
        let r1 = full_body(&handle(&req(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )));
        let r2 = full_body(&handle(&req(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )));
        assert_eq!(r1, r2);
        let v: Value = serde_json::from_slice(&r1).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with("You said: hi"));
    }

    #[test]
    fn stream_has_usage_only_when_asked() {
        let s = full_body(&handle(&req(
            "/chat/completions",
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )));
        let s = String::from_utf8(s.to_vec()).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n") && !s.contains("\"usage\""));
        let s = full_body(&handle(&req(
            "/chat/completions",
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": []}),
        )));
        assert!(String::from_utf8(s.to_vec()).unwrap().contains("\"usage\""));
    }

    #[test]
    fn base64_embedding_roundtrips_length() {
        assert_eq!(b64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        let v: Value = serde_json::from_slice(&full_body(&handle(&req(
            "/v1/embeddings",
            json!({"model": "e", "input": ["a", "b"], "dimensions": 4}),
        ))))
        .unwrap();
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
    }
}
