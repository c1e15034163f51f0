//! Streams both ways through the real binary: aggregation (stream_only),
//! synthesis (no_stream), usage stripping, and broken streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

const K1: &str = "sk-stream-key-aaaaaaaaaaaa0001";
const K2: &str = "sk-stream-key-bbbbbbbbbbbb0002";

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openai-chat-streams")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(format!("{name}.sse"))).unwrap()
}

/// The fixture as a chunked SSE reply, split every `piece` bytes (not at event borders).
fn replay(data: &[u8], piece: usize) -> Reply {
    let mut r = Reply::sse(vec![], Duration::ZERO);
    r.body = ReplyBody::Chunks(
        data.chunks(piece)
            .map(|c| (Duration::ZERO, bytes::Bytes::copy_from_slice(c)))
            .collect(),
    );
    r
}

/// Events' JSON of a fixture (without `[DONE]`).
fn chunks_of(data: &[u8]) -> Vec<Value> {
    switchyard::sse::parse_all(data)
        .into_iter()
        .filter(|e| !e.is_done())
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

/// Mock: replays the fixture named by the request's model.
fn fixture_mock() -> MockUpstream {
    MockUpstream::start(|req: &Request| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        match std::fs::read(fixture_dir().join(format!("{model}.sse"))) {
            Ok(data) => replay(&data, 37),
            Err(_) => Reply::json(404, &json!({"error": {"message": "no fixture"}})),
        }
    })
}

fn yaml(mock: &MockUpstream, flags: &str, extra: &str) -> String {
    format!("{extra}upstreams:\n  - name: up\n    base_url: {}/v1\n    keys: ['{K1}', '{K2}']\n    {flags}\n", mock.url())
}

fn read_sse(resp: reqwest::blocking::Response) -> String {
    let mut s = String::new();
    let mut r = resp;
    r.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn stream_only_upstream_answers_json_for_every_fixture() {
    let mock = fixture_mock();
    let gw = Gw::start(&yaml(&mock, "stream_only: true", ""));
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "sse") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let data = std::fs::read(&path).unwrap();
        let chunks = chunks_of(&data);
        mock.clear();
        let resp = gw.post(
            "/v1/chat/completions",
            &json!({"model": name, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let len: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = resp.bytes().unwrap();
        assert_eq!(len, body.len());
        let v: Value = serde_json::from_slice(&body).unwrap();

        // the upstream was asked for a stream with usage
        let sent = mock.requests()[0].json();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"]["include_usage"], true);

        // independent expectations straight from the chunks
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], chunks[0]["id"]);
        assert_eq!(v["created"], chunks[0]["created"]);
        assert_eq!(v["model"], chunks[0]["model"]);
        let n = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .map(|c| c["index"].as_u64().unwrap())
            .max()
            .unwrap()
            + 1;
        assert_eq!(v["choices"].as_array().unwrap().len() as u64, n, "{name}");
        for i in 0..n {
            let deltas: Vec<&Value> = chunks
                .iter()
                .flat_map(|c| c["choices"].as_array().unwrap().iter())
                .filter(|c| c["index"] == i)
                .collect();
            let cat = |k: &str| -> Option<String> {
                let parts: Vec<&str> = deltas
                    .iter()
                    .filter_map(|d| d["delta"][k].as_str())
                    .collect();
                if deltas.iter().all(|d| d["delta"][k].is_null()) {
                    None
                } else {
                    Some(parts.concat())
                }
            };
            let msg = &v["choices"][i as usize]["message"];
            assert_eq!(
                msg["content"].as_str().map(String::from),
                cat("content"),
                "{name} content"
            );
            assert_eq!(msg["role"], "assistant");
            if let Some(r) = cat("refusal").filter(|r| !r.is_empty()) {
                assert_eq!(msg["refusal"], r, "{name} refusal");
            }
            let finish = deltas
                .iter()
                .filter_map(|d| d["finish_reason"].as_str())
                .next_back()
                .unwrap();
            assert_eq!(v["choices"][i as usize]["finish_reason"], finish);
            let tool_ids: Vec<&str> = deltas
                .iter()
                .flat_map(|d| {
                    d["delta"]["tool_calls"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                })
                .filter_map(|t| t["id"].as_str().map(|_| ()))
                .map(|_| "")
                .collect();
            assert_eq!(
                msg["tool_calls"].as_array().map_or(0, |a| a.len()),
                tool_ids.len(),
                "{name} tool calls"
            );
            for call in msg["tool_calls"].as_array().cloned().unwrap_or_default() {
                serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap())
                    .expect("arguments are whole JSON");
            }
            let lp: usize = deltas
                .iter()
                .map(|d| d["logprobs"]["content"].as_array().map_or(0, |a| a.len()))
                .sum();
            assert_eq!(
                v["choices"][i as usize]["logprobs"]["content"]
                    .as_array()
                    .map_or(0, |a| a.len()),
                lp,
                "{name} logprobs"
            );
        }
        let usage = chunks
            .iter()
            .rev()
            .find(|c| !c["usage"].is_null())
            .map(|c| c["usage"].clone())
            .unwrap_or(Value::Null);
        assert_eq!(v["usage"], usage, "{name} usage");
    }
}

#[test]
fn aggregated_answers_match_the_openai_sdk_accumulator() {
    let mock = fixture_mock();
    let gw = Gw::start(&yaml(&mock, "stream_only: true", ""));
    let fixtures = fixture_dir();
    run_python(
        "sdk_aggregate.py",
        &[&gw.url("/v1"), fixtures.to_str().unwrap()],
    );
}

/// A Responses API answer: a message, or a function call.
fn response_object(tool: bool) -> Value {
    let item = if tool {
        json!({"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
            "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    } else {
        json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there", "annotations": []}]})
    };
    json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "m",
        "output": [item], "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}})
}

#[test]
fn no_stream_upstream_is_replayed_as_a_stream() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.path.ends_with("/responses") {
            return Reply::json(200, &response_object(req.json()["model"] == "tools"));
        }
        let mut v = switchyard::mock::chat_completion("m", "Hello there");
        if req.json()["model"] == "tools" {
            v["choices"][0]["message"] = json!({"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
            v["choices"][0]["finish_reason"] = json!("tool_calls");
        }
        Reply::json(200, &v)
    });
    let gw = Gw::start(&yaml(&mock, "no_stream: true", ""));
    let resp = gw.post("/v1/chat/completions", &json!({"model": "m", "stream": true, "stream_options": {"include_usage": false}, "messages": []}));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.headers()["transfer-encoding"],
        "chunked",
        "keep-alive framing"
    );
    let text = read_sse(resp);
    let sent = mock.requests()[0].json();
    assert!(
        sent.get("stream").is_none() && sent.get("stream_options").is_none(),
        "{sent}"
    );
    let events = switchyard::sse::parse_all(text.as_bytes());
    assert!(events.last().unwrap().is_done());
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello there");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(!text.contains("\"usage\""), "no usage chunk unless asked");

    let text = read_sse(gw.post(
        "/v1/chat/completions",
        &json!({"model": "tools", "stream": true, "stream_options": {"include_usage": true}}),
    ));
    let chunks: Vec<Value> = switchyard::sse::parse_all(text.as_bytes())
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .unwrap();
    assert_eq!(call[0]["index"], 0);
    assert_eq!(call[0]["id"], "call_1");
    assert_eq!(call[0]["function"]["name"], "get_weather");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 8);
    // the real openai SDK consumes the synthesized stream
    run_python("sdk_synth.py", &[&gw.url("/v1")]);
    // a client that did not ask for a stream gets the JSON as is
    let plain: Value = gw
        .post("/v1/chat/completions", &json!({"model": "m"}))
        .json()
        .unwrap();
    assert_eq!(plain["choices"][0]["message"]["content"], "Hello there");
}

#[test]
fn usage_is_asked_for_and_stripped_for_streaming_clients() {
    let mock = fixture_mock();
    let gw = Gw::start(&yaml(&mock, "", ""));
    let data = fixture("e2aad469b71d");
    let resp = gw.post(
        "/v1/chat/completions",
        &json!({"model": "e2aad469b71d", "stream": true}),
    );
    let text = read_sse(resp);
    let sent = mock.requests()[0].json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asks for usage"
    );
    // exactly the upstream bytes minus the usage event
    let original = String::from_utf8(data).unwrap();
    let usage_event = original
        .split("\n\n")
        .find(|e| e.contains("\"usage\":{"))
        .unwrap()
        .to_string()
        + "\n\n";
    assert_eq!(text, original.replace(&usage_event, ""));
    assert!(text.trim_end().ends_with("data: [DONE]"));
    // the tokens were still metered
    let completion = |t: &str| {
        series(
            t,
            "switchyard_tokens_total",
            &[("kind", "completion"), ("upstream", "up")],
        )
    };
    let metrics = gw.metrics_when(|t| completion(t) > 0.0);
    assert!(completion(&metrics) > 0.0, "{metrics}");
    // a client that asked for usage gets the upstream bytes unchanged
    let text = read_sse(gw.post("/v1/chat/completions", &json!({"model": "e2aad469b71d", "stream": true, "stream_options": {"include_usage": true}})));
    assert_eq!(text, original);
}

#[test]
fn broken_aggregated_stream_is_retried_on_the_next_key() {
    let data = fixture("e2aad469b71d");
    let mock = MockUpstream::start(move |req: &Request| {
        let mut r = replay(&data, 64);
        if req.header("authorization") == Some(&format!("Bearer {K1}")) {
            // first key: the stream is cut mid-way
            if let ReplyBody::Chunks(c) = &mut r.body {
                c.truncate(c.len() / 2);
            }
            r.fault = Fault::CutAfterBody;
        }
        r
    });
    let gw = Gw::start(&yaml(
        &mock,
        "stream_only: true",
        "retry: {attempts: 3, backoff: 10ms}\n",
    ));
    let resp = gw.post(
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": []}),
    );
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert_eq!(keys, vec![format!("Bearer {K1}"), format!("Bearer {K2}")]);
}

#[test]
fn aggregation_never_returns_partial_answers() {
    let data = fixture("e2aad469b71d");
    let text = String::from_utf8(data.clone()).unwrap();
    let no_finish: String = text
        .split("\n\n")
        .filter(|e| !e.contains("\"finish_reason\":\"stop\""))
        .collect::<Vec<_>>()
        .join("\n\n");
    let no_done = text.replace("data: [DONE]\n\n", "");
    let mock = MockUpstream::start(move |req: &Request| {
        match req.json()["model"].as_str().unwrap() {
        "cut" => {
            let mut r = replay(&data[..data.len() / 2], 50);
            r.fault = Fault::CutAfterBody;
            r
        }
        "no-finish" => replay(no_finish.as_bytes(), 50),
        "no-done" => replay(no_done.as_bytes(), 50),
        "error" => Reply::sse(vec!["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n".into(), "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n".into()], Duration::ZERO),
        "event-error" => Reply::sse(vec!["event: error\ndata: {\"message\":\"overloaded\"}\n\n".into()], Duration::ZERO),
        "vllm" => Reply::sse(vec!["data: {\"object\":\"error\",\"message\":\"bad\",\"code\":500}\n\n".into()], Duration::ZERO),
        _ => {
            let mut r = replay(&data[..data.len() / 2], 50);
            r.fault = Fault::StallAfterBody(Duration::from_secs(5));
            r
        }
    }
    });
    let gw = Gw::start(&yaml(
        &mock,
        "stream_only: true",
        "retry: {attempts: 1}\ntimeouts: {idle: 500ms}\n",
    ));
    for (model, status, code) in [
        ("cut", 502, "upstream_error"),
        ("no-finish", 502, "upstream_error"),
        ("error", 502, "upstream_error"),
        ("event-error", 502, "upstream_error"),
        ("vllm", 502, "upstream_error"),
        ("stall", 504, "upstream_timeout"),
    ] {
        let r = gw.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": []}),
        );
        assert_eq!(r.status().as_u16(), status, "{model}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], code, "{model}: {v}");
    }
    let v: Value = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "no-done", "messages": []}),
        )
        .json()
        .unwrap();
    assert_eq!(
        v["choices"][0]["finish_reason"], "stop",
        "a stream without [DONE] ends at EOF"
    );
}

#[test]
fn pass_through_fails_over_before_the_first_event_only() {
    let data = fixture("e2aad469b71d");
    let original = String::from_utf8(data.clone()).unwrap();
    let first_half = data[..data.len() / 2].to_vec();
    let mock = MockUpstream::start(move |req: &Request| {
        let first_key = req.header("authorization") == Some(&format!("Bearer {K1}"));
        match req.json()["model"].as_str().unwrap() {
            // key 1 sends headers, then dies before any event
            "early" if first_key => {
                let mut r = Reply::sse(vec![": keep-alive\n\n".into()], Duration::ZERO);
                r.fault = Fault::CutAfterBody;
                r
            }
            "early" => replay(&data, 80),
            // mid-stream cut, whatever the key
            "late" => {
                let mut r = replay(&data[..data.len() / 2], 80);
                r.fault = Fault::CutAfterBody;
                r
            }
            _ => {
                let mut r = replay(&data[..data.len() / 2], 80);
                r.fault = Fault::StallAfterBody(Duration::from_secs(5));
                r
            }
        }
    });
    let gw = Gw::start(&yaml(
        &mock,
        "",
        "retry: {attempts: 3, backoff: 10ms}\ntimeouts: {idle: 500ms}\n",
    ));
    let text = read_sse(gw.post(
        "/v1/chat/completions",
        &json!({"model": "early", "stream": true, "stream_options": {"include_usage": true}}),
    ));
    assert_eq!(text, original, "invisible failover to key 2");
    assert_eq!(mock.requests().len(), 2);

    for model in ["late", "stall"] {
        mock.clear();
        let text = read_sse(gw.post(
            "/v1/chat/completions",
            &json!({"model": model, "stream": true}),
        ));
        let events = switchyard::sse::parse_all(text.as_bytes());
        assert!(
            events.len() > 2,
            "{model}: events before the failure reached the client"
        );
        let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        assert!(
            last["error"]["message"].is_string(),
            "{model}: ends with an error event: {text}"
        );
        assert!(!text.contains("[DONE]"), "{model}");
        // the mock restarts from the beginning whatever it is asked: the
        // continuation is joined like a restart and cut at the same place,
        // so the client has the first half's text exactly once
        let half = content_of(&switchyard::sse::parse_all(&first_half));
        assert_eq!(content_of(&events), half, "{model}: no text twice");
        let calls = mock.requests().len();
        if model == "stall" {
            assert_eq!(calls, 1, "a stalled upstream is not asked again");
        } else {
            assert!(calls > 1, "{model}: the other key was asked to continue");
        }
    }
}

/// The answer text of chat chunk events.
fn content_of(events: &[switchyard::sse::Event]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[test]
fn completions_and_responses_aggregate_too() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.path.ends_with("/responses") {
            let ev = |ty: &str, v: Value| {
                format!(
                    "event: {ty}\ndata: {}\n\n",
                    json!({"type": ty})
                        .as_object()
                        .unwrap()
                        .clone()
                        .into_iter()
                        .chain(v.as_object().unwrap().clone())
                        .collect::<serde_json::Map<_, _>>()
                        .into_iter()
                        .collect::<Value>()
                )
            };
            Reply::sse(
                vec![
                    ev(
                        "response.created",
                        json!({"response": {"id": "resp_1", "status": "in_progress", "output": []}}),
                    ),
                    ev("response.output_text.delta", json!({"delta": "Hi"})),
                    ev(
                        "response.output_item.done",
                        json!({"output_index": 0, "item": {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}}),
                    ),
                    ev(
                        "response.completed",
                        json!({"response": {"id": "resp_1", "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 2, "output_tokens": 1}}}),
                    ),
                ],
                Duration::ZERO,
            )
        } else {
            Reply::sse(vec![
                "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hel\",\"logprobs\":null,\"finish_reason\":null}]}\n\n".into(),
                "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"lo\",\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n".into(),
                "data: [DONE]\n\n".into(),
            ], Duration::ZERO)
        }
    });
    let gw = Gw::start(&yaml(&mock, "stream_only: true", ""));
    let v: Value = gw
        .post("/v1/completions", &json!({"model": "m", "prompt": "x"}))
        .json()
        .unwrap();
    assert_eq!(
        (v["object"].as_str(), v["choices"][0]["text"].as_str()),
        (Some("text_completion"), Some("Hello"))
    );
    let v: Value = gw
        .post("/v1/responses", &json!({"model": "m", "input": "x"}))
        .json()
        .unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(
        v["output"][0]["content"][0]["text"], "Hi",
        "output rebuilt from output_item.done"
    );
    let sent = mock.requests().last().unwrap().json();
    assert_eq!(sent["stream"], true);
    assert!(sent.get("stream_options").is_none());
}
