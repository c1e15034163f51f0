//! Streams on HTTP/1.1 connections: the wire format a client sees,
//! keep-alive before and after, clients that ask to close or pipeline,
//! HTTP/1.0, and the request counted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::wire::*;
use common::*;
use std::io::Write;
use std::time::Duration;

fn gateway() -> (MockUpstream, Gw) {
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["stream"] == serde_json::json!(true) {
            Reply::sse(
                switchyard::mock::chat_stream_events("m", 3, false),
                Duration::from_millis(20),
            )
        } else {
            ok_script(req)
        }
    });
    let gw = Gw::start(&format!(
        "upstreams: [{{name: mock, base_url: '{}/v1', keys: ['sk-up-aaaaaaaaaaaaaaaa1111']}}]\n",
        mock.url()
    ));
    (mock, gw)
}

#[test]
fn streams_and_json_calls_share_one_kept_alive_connection() {
    let (mock, gw) = gateway();
    let mut s = connect(gw.port);
    for round in 0..2 {
        s.write_all(&request(STREAM, "")).unwrap();
        let (head, body) = response(&mut s);
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert!(head.contains("date: "), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        let sent = switchyard::mock::chat_stream_events("m", 3, false).len();
        assert_eq!(
            body.matches("data: ").count(),
            sent,
            "round {round}: {body}"
        );
        assert!(body.contains("data: [DONE]"), "{body}");
    }
    s.write_all(&request(JSON, "")).unwrap();
    let (head, body) = response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("hi from mock"), "{body}");
    // and a stream again after the JSON call
    s.write_all(&request(STREAM, "")).unwrap();
    let (_, body) = response(&mut s);
    assert!(body.contains("data: [DONE]"), "{body}");
    assert_eq!(mock.requests().len(), 4);
    // every request counted once, streams by their own task
    let chat = [("route", "chat"), ("status", "2xx")];
    gw.assert_series("switchyard_requests_total", &chat, 4.0);
}

#[test]
fn a_client_that_asks_to_close_gets_its_stream_then_the_close() {
    let (_mock, gw) = gateway();
    let mut s = connect(gw.port);
    s.write_all(&request(STREAM, "connection: close\r\n"))
        .unwrap();
    let (head, body) = response(&mut s);
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(closed(&mut s));
}

#[test]
fn a_request_pipelined_behind_a_stream_is_answered_after_it() {
    let (mock, gw) = gateway();
    let mut s = connect(gw.port);
    let mut both = request(STREAM, "");
    both.extend_from_slice(&request(JSON, ""));
    s.write_all(&both).unwrap();
    let (head, body) = response(&mut s);
    assert!(
        body.contains("data: [DONE]"),
        "the first answer is whole: {body}"
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (head, body) = response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        body.contains("chat.completion"),
        "the second answer is JSON: {body}"
    );
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn an_http_1_0_stream_is_still_served() {
    let (_mock, gw) = gateway();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{STREAM}",
        STREAM.len()
    );
    let out = raw(gw.port, req.as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("data: [DONE]"), "{out}");
}

#[test]
fn a_stream_refused_before_its_first_byte_gets_a_json_error_on_its_connection() {
    let mock = MockUpstream::start(|_req: &Request| {
        Reply::json(401, &serde_json::json!({"error": {"message": "bad key"}}))
    });
    let gw = Gw::start(&format!(
        "upstreams: [{{name: mock, base_url: '{}/v1', keys: ['sk-up-aaaaaaaaaaaaaaaa1111']}}]\n",
        mock.url()
    ));
    let mut s = connect(gw.port);
    s.write_all(&request(STREAM, "")).unwrap();
    let (head, body) = response(&mut s);
    let status: u16 = head[9..12].parse().unwrap();
    assert!(status >= 400, "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("an OpenAI-shaped error");
    assert!(v["error"]["message"].is_string(), "{body}");
    assert!(!body.contains("sk-up-"), "{body}");
    // the connection still serves the next call
    s.write_all(&request(STREAM, "")).unwrap();
    let (head, _) = response(&mut s);
    assert!(head.starts_with("http/1.1 "), "{head}");
}
