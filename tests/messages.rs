//! Anthropic's Messages API from clients (`/v1/messages`), served onto an
//! OpenAI-compatible mock upstream: the official anthropic Python SDK
//! (plain, streamed, a tool round trip, count_tokens, error classes), what
//! the upstream saw, and the Messages shape of the gateway's own errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "claude-code-key-0123456789";

/// The mock: answers by the last user message (see sdk_messages.py).
fn script(req: &Request) -> Reply {
    let v = req.json();
    let last = v["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let text = last["content"].as_str().unwrap_or("").to_string();
    let stream = v["stream"] == json!(true);
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 1, "model": "claude-test",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    if last["role"] == "tool" {
        return Reply::json(
            200,
            &switchyard::mock::chat_completion("claude-test", "It is 18C and sunny in Paris."),
        );
    }
    match text.as_str() {
        "busy" => rate_limited(&[("retry-after", "90")], ""),
        // the upstream is overloaded on every try: the client gets a 529
        "overloaded" => Reply::json(
            503,
            &json!({"error": {"message": "The engine is currently overloaded", "type": "server_error"}}),
        ),
        "slow" if stream => Reply::sse(
            switchyard::mock::chat_stream_events("claude-test", 4, true),
            Duration::from_millis(20),
        ),
        "tool" if stream => {
            let mut ev = vec![chunk(
                json!({"role": "assistant", "content": null}),
                Value::Null,
            )];
            ev.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_w", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in ["{\"ci", "ty\": \"Pa", "ris\"}"] {
                ev.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            ev.push(chunk(json!({}), "tool_calls".into()));
            ev.push("data: [DONE]\n\n".to_string());
            Reply::sse(ev, Duration::from_millis(5))
        }
        _ => Reply::json(
            200,
            &switchyard::mock::chat_completion("claude-test", "Hello from the mock"),
        ),
    }
}

fn gateway(mock: &MockUpstream) -> Gw {
    Gw::start(&format!(
        "clients: [{{name: claude-code, key: {KEY}}}]\nupstreams:\n{}",
        up_yaml(mock, "up", 1, "    models: [claude-test]\n")
    ))
}

#[test]
fn the_anthropic_sdk_against_an_openai_compatible_upstream() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock);
    run_python("sdk_messages.py", &[&gw.url(""), KEY]);
    let calls = client_calls(&mock);
    // what the upstream saw: chat requests, the system prompt first, the
    // tool round trip as tool_calls and a tool message
    let first = calls[0].json();
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(first["max_tokens"], 64);
    assert!(calls.iter().all(|c| c.path.ends_with("/chat/completions")));
    let round_trip = calls
        .iter()
        .map(|c| c.json())
        .find(|v| v["messages"].as_array().is_some_and(|m| m.len() == 3))
        .unwrap();
    let m = &round_trip["messages"];
    assert_eq!(m[1]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(
            m[1]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(m[2]["role"], "tool");
    assert_eq!(m[2]["tool_call_id"], m[1]["tool_calls"][0]["id"]);
    assert_eq!(
        round_trip["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );
    // no client key reached the upstream, and the calls count as messages
    assert!(calls.iter().all(|c| c.header("x-api-key").is_none()));
    let m = gw.metrics();
    assert!(
        series(&m, "switchyard_requests_total", &[("route", "messages")]) >= 6.0,
        "{m}"
    );
}

#[test]
fn no_key_left_is_a_529_and_a_broken_body_a_400_in_the_messages_shape() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock);
    let post = |body: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let r = post("{not json");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let r = post(r#"{"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}"#);
    assert_eq!(r.status(), 400, "max_tokens is required");
    assert!(r.text().unwrap().contains("max_tokens"));
    // every key disabled: the gateway's 503 is Anthropic's 529
    let off = client()
        .post(gw.admin("/admin/keys/up%231/disable"))
        .send()
        .unwrap();
    assert_eq!(off.status(), 200);
    let r = post(
        r#"{"model": "claude-test", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#,
    );
    assert_eq!(r.status(), 529);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    // a GET is a 405, still in the Messages shape
    let r = client()
        .get(gw.url("/v1/messages"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().unwrap()["type"], "error");
}

#[test]
fn the_anthropic_node_sdk_against_an_openai_compatible_upstream() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock);
    let out = run_node("messages.mjs", &[&gw.url(""), KEY]);
    assert!(out.contains("node messages: ok"), "{out}");
}

#[test]
fn a_silent_upstream_gets_pings_to_a_messages_client_and_comments_to_a_chat_one() {
    // three events 600 ms apart; a keepalive every 150 ms of silence
    let mock = MockUpstream::start(|_| {
        Reply::sse(
            switchyard::mock::chat_stream_events("claude-test", 2, true),
            Duration::from_millis(600),
        )
    });
    let gw = Gw::start(&format!(
        "timeouts: {{stream_ping: 150ms}}\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "    models: [claude-test]\n")
    ));
    let text = gw
        .post(
            "/v1/messages",
            &json!({"model": "claude-test", "max_tokens": 16, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .text()
        .unwrap();
    let pings = text.matches("event: ping").count();
    // one ping follows message_start; the silences add the rest
    assert!(pings >= 4, "{pings} pings: {text}");
    let first_ping = text.find("event: ping").unwrap();
    assert!(text.find("event: message_start").unwrap() < first_ping);
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
    let mut chat = json!({"model": "claude-test", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let text = gw.post("/v1/chat/completions", &chat).text().unwrap();
    assert!(text.matches(": keepalive\n\n").count() >= 3, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // 0s turns it off
    let quiet = Gw::start(&format!(
        "timeouts: {{stream_ping: 0s}}\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "    models: [claude-test]\n")
    ));
    chat["stream"] = json!(true);
    let text = quiet.post("/v1/chat/completions", &chat).text().unwrap();
    assert!(!text.contains("keepalive"), "{text}");
}
