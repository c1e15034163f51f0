//! Helpers shared by the key-pool suites (`keys.rs`, `key_state.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn key(n: usize) -> String {
    format!("sk-pool-test-key-{n:04}-aaaaaaaaaaaa")
}

pub fn bearer(n: usize) -> String {
    format!("Bearer {}", key(n))
}

/// Which key (1-based) a request used.
pub fn key_no(r: &Request) -> usize {
    (1..=9)
        .find(|n| r.header("authorization") == Some(bearer(*n).as_str()))
        .unwrap_or(0)
}

pub fn up_yaml(mock: &MockUpstream, name: &str, keys: usize, extra: &str) -> String {
    let keys: Vec<String> = (1..=keys).map(|n| format!("'{}'", key(n))).collect();
    format!(
        "  - name: {name}\n    base_url: {}/v1\n    keys: [{}]\n{extra}",
        mock.url(),
        keys.join(", ")
    )
}

pub fn rate_limited(headers: &[(&str, &str)], body: &str) -> Reply {
    let mut r = Reply::json(
        429,
        &serde_json::from_str::<Value>(body)
            .unwrap_or(json!({"error": {"message": body, "code": "rate_limit_exceeded"}})),
    );
    for (k, v) in headers {
        r = r.with_header(k, v);
    }
    r
}

pub fn admin_keys(gw: &Gw) -> Vec<Value> {
    gw.admin_json("/admin/keys")["keys"]
        .as_array()
        .unwrap()
        .clone()
}

/// (model, response headers, response body, expected cooldown seconds)
pub type SignalCase<'a> = (&'a str, Vec<(&'a str, String)>, &'a str, u64);
/// (model, headers, body) as the mock serves them
pub type MockTable = Arc<Vec<(String, Vec<(String, String)>, String)>>;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
