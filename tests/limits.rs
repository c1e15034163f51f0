//! Limits through the real binary: `clients[].max_concurrent` (a slot held
//! until the stream ends), `clients[].rpm` and `limits.rpm` (a sliding minute,
//! exact `Retry-After`, OpenAI's rate-limit headers, other clients unaffected,
//! the upstream never sees a refused call) and `clients[].expires`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::Value;
use std::time::Instant;

const KEY_A: &str = "client-a-key-aaaaaaaaaaaa";
const KEY_B: &str = "client-b-key-bbbbbbbbbbbb";

/// A chat call with client key `key`.
fn chat_as(gw: &Gw, key: &str) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat("m"))
        .send()
        .unwrap()
}

#[test]
fn the_eleventh_request_of_a_10_rpm_client_gets_an_exact_429() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: small, key: {KEY_A}, rpm: 10}}\n  - {{name: other, key: {KEY_B}}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let send = |key: &str| chat_as(&gw, key);
    let first = Instant::now();
    for i in 0..10 {
        assert_eq!(send(KEY_A).status(), 200, "request {}", i + 1);
    }
    let r = send(KEY_A);
    let elapsed = first.elapsed().as_secs_f64();
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    let retry: f64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    // the first request leaves the window 60 s after it was admitted
    let expected = (60.0 - elapsed).ceil();
    assert!(
        (retry - expected).abs() <= 1.0,
        "retry-after {retry}, expected about {expected}"
    );
    assert_eq!(h["x-ratelimit-limit-requests"], "10");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    assert_eq!(
        h["x-ratelimit-reset-requests"].to_str().unwrap(),
        format!("{retry}s")
    );
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`small`") && msg.contains("10 requests per minute"),
        "{msg}"
    );
    assert_eq!(mock.requests().len(), 10, "the refused call never went up");
    // another client has its own allowance (none here)
    assert_eq!(send(KEY_B).status(), 200);
    // listing models does not count
    let r = client()
        .get(gw.url("/v1/models"))
        .bearer_auth(KEY_A)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = gw.metrics();
    assert!(
        m.contains(r#"switchyard_errors_total{kind="rpm_limited"} 1"#),
        "{m}"
    );
}

#[test]
fn the_gateway_wide_rpm_counts_every_caller() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "limits: {{rpm: 3}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    for _ in 0..3 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "3");
    let v: Value = r.json().unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("The gateway is over its rate limit of 3 requests per minute (limits.rpm)"),
        "{msg}"
    );
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn limits_in_the_config_are_checked() {
    for (yaml, want) in [
        (
            "clients: [{name: c, key: k-123456789, rpm: 0}]",
            "clients[0].rpm",
        ),
        (
            "clients: [{name: c, key: k-123456789, expires: tomorrow}]",
            "clients[0].expires",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!("{yaml}\nupstreams: [{{name: d, kind: demo}}]\n"),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_client_at_max_concurrent_gets_429_until_its_stream_ends() {
    use std::io::Read;
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["stream"] == serde_json::json!(true) {
            Reply::sse(
                switchyard::mock::chat_stream_events("m", 8, false),
                std::time::Duration::from_millis(100),
            )
        } else {
            ok_script(req)
        }
    });
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: one, key: {KEY_A}, max_concurrent: 1}}\n  - {{name: other, key: {KEY_B}}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let url = gw.url("/v1/chat/completions");
    let streaming = std::thread::spawn(move || {
        let mut r = client()
            .post(url)
            .bearer_auth(KEY_A)
            .json(&serde_json::json!({"model": "m", "stream": true, "messages": []}))
            .send()
            .unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        s
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let send = |key: &str| chat_as(&gw, key);
    let r = send(KEY_A);
    assert_eq!(r.status(), 429, "the stream holds the only slot");
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 calls in flight"),
        "{v}"
    );
    assert_eq!(send(KEY_B).status(), 200, "other clients are not limited");
    assert!(streaming.join().unwrap().contains("[DONE]"));
    // the slot is freed as the request ends (just after its last byte)
    let freed = (0..20).any(|_| {
        let ok = send(KEY_A).status() == 200;
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ok
    });
    assert!(freed, "the slot was freed with the stream");
}
