//! A scriptable OpenAI-style upstream for tests and benchmarks, on loopback.
//! It records every request (path, headers, body) so tests can check what the
//! upstream saw, and answers with whatever the current script returns.
//! Test support only (the `test-support` feature): it may panic on misuse.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use crate::minihttp::{Reply, Request};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running mock upstream (lives until the process exits).
pub struct MockUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    script: Arc<RwLock<Script>>,
}

impl MockUpstream {
    /// Starts on `127.0.0.1:<any>`, answering with `script`.
    pub fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> MockUpstream {
        Self::start_on("127.0.0.1:0", 2, true, script)
    }

    /// Starts on `addr` with `threads` worker threads; `record` keeps every request.
    pub fn start_on(
        addr: &str,
        threads: usize,
        record: bool,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script: Arc<RwLock<Script>> = Arc::new(RwLock::new(Arc::new(script)));
        let (s2, sc2) = (seen.clone(), script.clone());
        let handler = Arc::new(move |req: &Request| {
            if record {
                s2.lock().push(req.clone());
            }
            let f = sc2.read().clone();
            f(req)
        });
        let addr = crate::minihttp::spawn_on_thread(addr, threads, handler)
            .unwrap_or_else(|e| panic!("mock upstream cannot bind: {e}"));
        MockUpstream { addr, seen, script }
    }

    /// `http://127.0.0.1:PORT` (append `/v1` for an OpenAI-style base_url).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the script for later requests.
    pub fn set(&self, script: impl Fn(&Request) -> Reply + Send + Sync + 'static) {
        *self.script.write() = Arc::new(script);
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().clear();
    }
}

/// A `chat.completion` body with `text` as the answer.
pub fn chat_completion(model: &str, text: &str) -> serde_json::Value {
    json!({"id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
}

/// SSE events of a chat stream with `n` content chunks (plus role, finish, usage, `[DONE]`).
pub fn chat_stream_events(model: &str, n: usize, with_usage: bool) -> Vec<String> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut ev = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        serde_json::Value::Null,
    )];
    for i in 0..n {
        ev.push(chunk(
            json!({"content": format!("tok{i} ")}),
            serde_json::Value::Null,
        ));
    }
    ev.push(chunk(json!({}), json!("stop")));
    if with_usage {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": model, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": n + 5}});
        ev.push(format!("data: {v}\n\n"));
    }
    ev.push("data: [DONE]\n\n".into());
    ev
}

/// The benchmark upstream: JSON for plain requests, an SSE stream of `chunks`
/// pieces for `stream: true`, one every `gap` (zero: one write burst).
pub fn bench_script(
    chunks: usize,
    gap: Duration,
) -> impl Fn(&Request) -> Reply + Send + Sync + 'static {
    let json_body = chat_completion("bench", "Hello there, this is a benchmark answer.");
    move |req: &Request| {
        let v = req.json();
        if v["stream"] == json!(true) {
            let usage = v["stream_options"]["include_usage"] == json!(true);
            Reply::sse(chat_stream_events("bench", chunks, usage), gap)
        } else {
            Reply::json(200, &json_body)
        }
    }
}
