//! Shared by the tenant-isolation suites (`isolation.rs`, `crossing.rs`):
//! client and upstream keys, an upstream that echoes what it saw, raw
//! requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::{json, Value};
use std::time::Duration;

pub const CLIENT: &str = "client-isolation-aaaaaaaaaaaa1111";
pub const OPEN: &str = "client-isolation-open-bbbbbbbb2222";
pub const UP_KEY: &str = "sk-isolation-upstream-cccccccc3333";

/// Answers with what it saw: the path, the model and the headers.
pub fn echo(req: &Request) -> Reply {
    let headers: serde_json::Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), json!(v)))
        .collect();
    Reply::json(
        200,
        &json!({"path": req.path, "model": req.json()["model"], "headers": headers,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
    )
}

pub fn one_upstream(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "upstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n{extra}",
        mock.url()
    )
}

pub fn send(gw: &Gw, method: &str, path: &str, headers: &str, body: &str) -> String {
    raw(
        gw.port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
}

pub fn status(answer: &str) -> u16 {
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}
