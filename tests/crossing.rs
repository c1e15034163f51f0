//! What crosses the gateway, through the real binary: secrets stay out of
//! logs and answers; the upstream account's headers stay with the gateway;
//! every answer carries a request id; a deep body goes up whole; a client
//! that leaves mid-stream is billed for what it got; the small shapes
//! (`stream_options` without `stream`, the role chunk's `refusal`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::isolation::*;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn secrets_stay_out_of_logs_and_answers() {
    let echoing = MockUpstream::start(|req: &Request| {
        let key = req
            .header("authorization")
            .unwrap_or("")
            .trim_start_matches("Bearer ")
            .to_string();
        if req.json()["stream"] == json!(true) {
            let mut events = vec![format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": null}]})
            )];
            events.push(format!("data: {}\n\n", json!({"error": {"message": format!("key {key} is over its budget"), "type": "server_error"}})));
            return Reply::sse(events, Duration::ZERO);
        }
        Reply::json(
            400,
            &json!({"error": {"message": format!("bad request for key {key}"), "code": "bad"}}),
        )
    });
    let gw = Gw::start_env(
        &format!(
            "clients: [{{name: c, key: {CLIENT}}}]\nupstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n",
            echoing.url()
        ),
        &[("RUST_LOG", "trace")],
    );
    for auth in [
        format!("Bearer  {CLIENT}"),
        CLIENT.to_string(),
        format!("bearer {CLIENT}"),
    ] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("Authorization", auth.as_str())
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{auth:?} is accepted");
        let body = r.text().unwrap();
        assert!(!body.contains(UP_KEY) && body.contains("mock#1"), "{body}");
    }
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT)
        .json(&json!({"model": "m", "stream": true, "messages": []}))
        .send()
        .unwrap();
    let text = r.text().unwrap();
    assert!(!text.contains(UP_KEY) && text.contains("mock#1"), "{text}");
    // a model name cannot forge a log line
    let forged = "m\n2026-12-06T00:00:00Z INFO switchyard forged";
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT)
        .json(&json!({"model": forged, "messages": []}))
        .send()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.logs();
    assert!(!log.contains(CLIENT), "a client key in the trace log");
    assert!(!log.contains(UP_KEY), "an upstream key in the log");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-12-06T00:00:00Z INFO")),
        "a forged line"
    );
    assert!(
        log.contains(r"model=m\n2026-12-06T00:00:00Z"),
        "escaped in place: {log}"
    );
}

#[test]
fn account_headers_stay_and_every_answer_has_a_request_id() {
    let mock = MockUpstream::start(|req: &Request| {
        let r = echo(req)
            .with_header("Set-Cookie", "__cf_bm=secret; path=/")
            .with_header("openai-organization", "org-gateway-account")
            .with_header("openai-project", "proj_gateway")
            .with_header("server", "cloudflare")
            .with_header("cf-ray", "8f00")
            .with_header("x-ratelimit-limit-requests", "5000")
            .with_header("x-ratelimit-remaining-requests", "4999");
        if req.path.contains("files") {
            return r;
        }
        if req.json()["model"] == "tagged" {
            return r.with_header("x-request-id", "req_upstream_1");
        }
        r
    });
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: limited, key: {CLIENT}, rpm: 3}}\n  - {{name: open, key: {OPEN}}}\n{}",
        one_upstream(&mock, "")
    ));
    let call = |key: &str, model: &str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("X-Forwarded-For", "203.0.113.50")
            .header("Forwarded", "for=203.0.113.50")
            .json(&json!({"model": model, "messages": []}))
            .send()
            .unwrap()
    };
    let files = client()
        .get(gw.url("/v1/files"))
        .bearer_auth(OPEN)
        .send()
        .unwrap();
    for r in [call(CLIENT, "m"), call(OPEN, "m"), files] {
        let h = r.headers();
        for gone in [
            "set-cookie",
            "openai-organization",
            "openai-project",
            "server",
            "cf-ray",
        ] {
            assert!(h.get(gone).is_none(), "{gone} reached the client: {h:?}");
        }
        assert_ne!(
            h.get("x-ratelimit-limit-requests")
                .map(|v| v.to_str().unwrap()),
            Some("5000")
        );
        assert!(
            h["x-request-id"].to_str().unwrap().starts_with("req_sy"),
            "{h:?}"
        );
    }
    let r = call(CLIENT, "m");
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "3");
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "1");
    assert!(call(OPEN, "m")
        .headers()
        .get("x-ratelimit-remaining-requests")
        .is_none());
    let tagged = call(OPEN, "tagged");
    assert_eq!(tagged.headers()["x-request-id"], "req_upstream_1");
    assert_eq!(
        call(CLIENT, "m").headers()["x-ratelimit-remaining-requests"],
        "0"
    );
    let refused = call(CLIENT, "m");
    assert_eq!(refused.status(), 429);
    let id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("req_sy"));
    for seen in mock.requests() {
        assert_eq!(seen.header("x-forwarded-for"), None);
        assert_eq!(seen.header("forwarded"), None);
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.logs();
    assert!(log.contains("request_id=req_upstream_1"), "{log}");
    assert!(log.contains(&format!("request_id={id}")), "{log}");
    let recent = gw.admin_json("/admin/requests?limit=20");
    let ids: Vec<_> = recent["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or("-").to_string())
        .collect();
    assert!(
        ids.contains(&id) && ids.contains(&"req_upstream_1".to_string()),
        "{ids:?}"
    );
}

#[test]
fn deep_bodies_and_small_shapes() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["stream"] == json!(true) {
            return Reply::sse(
                switchyard::mock::chat_stream_events("m", 2, true),
                Duration::ZERO,
            );
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "upstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n    models: ['m']\n  - name: plain\n    base_url: {}/v1\n    no_stream: true\n    models: ['plain']\n",
        mock.url(),
        mock.url()
    ));
    // nested past serde_json's 128 levels: sent on whole, with usage asked for
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let body = format!(r#"{{"model":"m","stream":true,"messages":[],"x":{deep}}}"#);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().unwrap();
    let sent = String::from_utf8(mock.requests()[0].body.to_vec()).unwrap();
    assert!(
        sent.starts_with(&body[..body.len() - 1]),
        "{}",
        &sent[..200]
    );
    assert!(sent.ends_with(r#","stream_options":{"include_usage":true}}"#));

    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": false, "stream_options": {"include_usage": true}, "messages": []}),
    );
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .unwrap()
        .contains("only allowed when 'stream' is enabled"));

    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "plain", "stream": true, "messages": []}),
    );
    let text = r.text().unwrap();
    let role = text.lines().find(|l| l.contains("\"role\"")).unwrap();
    let v: Value = serde_json::from_str(role.trim_start_matches("data: ")).unwrap();
    assert_eq!(
        v["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
}

#[test]
fn a_client_that_leaves_mid_stream_is_billed_for_what_it_got() {
    let mock = MockUpstream::start(|_: &Request| {
        Reply::sse(
            switchyard::mock::chat_stream_events("m", 60, true),
            Duration::from_millis(25),
        )
    });
    let gw = Gw::start(&format!(
        "clients: [{{name: leaver, key: {CLIENT}}}]\n{}",
        one_upstream(&mock, "")
    ));
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(5).filter(|w| w == b"tok19").count() == 0 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let rows = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let v = gw.admin_json("/admin/requests?limit=1");
            let row = v["requests"][0].clone();
            (row["error"] == "client_gone").then_some(row)
        })
        .expect("the request was recorded as client_gone");
    let out = rows["tokens_out"].as_u64().unwrap();
    assert!(
        (20..=30).contains(&out),
        "about the ~21 events it got: {rows}"
    );
    assert_eq!(rows["estimated"], true);
}
