//! Stream continuation through the real binary: a stream that breaks after
//! some text is continued on the next candidate inside the same client
//! stream (prefill; restart when prefill is refused; aggregated answers too),
//! and ends with an error event when the new text diverges or nobody may
//! continue it. The mock is scripted per model name and knows one whole
//! answer, so each test checks the client got it exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;
use switchyard::minihttp::Fault;

/// The answer every model of the mock gives, in pieces.
const PIECES: [&str; 8] = [
    "The ",
    "quick ",
    "brown ",
    "fox ",
    "jumps ",
    "over ",
    "the ",
    "lazy dog.",
];

fn whole() -> String {
    PIECES.concat()
}

fn event(model: &str, created: u64, delta: Value, finish: Value) -> String {
    let v = json!({"id": format!("chatcmpl-{model}"), "object": "chat.completion.chunk",
        "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

/// A stream of `text` in pieces of at most 6 bytes, finished, with usage when asked.
fn stream_of(model: &str, created: u64, text: &str, usage: bool) -> Vec<String> {
    let mut ev = vec![event(
        model,
        created,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut rest = text;
    while !rest.is_empty() {
        let mut n = rest.len().min(6);
        while !rest.is_char_boundary(n) {
            n -= 1;
        }
        ev.push(event(
            model,
            created,
            json!({"content": &rest[..n]}),
            Value::Null,
        ));
        rest = &rest[n..];
    }
    ev.push(event(model, created, json!({}), json!("stop")));
    if usage {
        let v = json!({"id": format!("chatcmpl-{model}"), "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}});
        ev.push(format!("data: {v}\n\n"));
    }
    ev.push("data: [DONE]\n\n".into());
    ev
}

/// The first `n` pieces of the answer, then `fault`.
fn broken(model: &str, n: usize, fault: Fault, extra: Option<&str>) -> Reply {
    let mut ev = vec![event(
        model,
        1000,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for (i, p) in PIECES[..n].iter().enumerate() {
        ev.push(event(model, 1000, json!({"content": p}), Value::Null));
        if i == 0 {
            if let Some(e) = extra {
                ev.push(e.to_string());
            }
        }
    }
    let mut r = Reply::sse(ev, Duration::from_millis(5));
    r.fault = fault;
    r
}

/// The assistant prefill a request carries, if any.
fn prefill_of(req: &Request) -> Option<String> {
    let v = req.json();
    let last = v["messages"].as_array()?.last()?.clone();
    (last["role"] == "assistant").then(|| last["content"].as_str().unwrap_or("").to_string())
}

/// Models: `cut` (4 pieces, then the connection is cut), `stall` (4 pieces,
/// then silence), `tool` (a tool call, then cut), `prefill` (continues a
/// prefill), `no-prefill` (400 on a prefill, else the whole answer),
/// `diverge` (another answer), `error-mid` (4 pieces, then an error event).
fn script(req: &Request) -> Reply {
    let v = req.json();
    let model = v["model"].as_str().unwrap_or("").to_string();
    let usage = v["stream_options"]["include_usage"] == json!(true);
    match model.as_str() {
        "cut" => broken(
            "cut",
            4,
            Fault::CutAfterBody,
            Some("data: {\"choices\":[{\"delta\":\n\n"),
        ),
        "stall" => broken(
            "stall",
            4,
            Fault::StallAfterBody(Duration::from_secs(5)),
            None,
        ),
        "error-mid" => broken("error-mid", 4, Fault::None, None).with_tail(
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        ),
        "tool" => {
            let mut r = Reply::sse(
                vec![
                    event(
                        "tool",
                        1000,
                        json!({"role": "assistant", "content": "Let me check. "}),
                        Value::Null,
                    ),
                    event(
                        "tool",
                        1000,
                        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
                        Value::Null,
                    ),
                ],
                Duration::ZERO,
            );
            r.fault = Fault::CutAfterBody;
            r
        }
        "prefill" => {
            let rest = match prefill_of(req) {
                Some(p) => whole().strip_prefix(&p).unwrap_or("").to_string(),
                None => whole(),
            };
            Reply::sse(stream_of("prefill", 2000, &rest, usage), Duration::ZERO)
        }
        "no-prefill" if prefill_of(req).is_some() => Reply::json(
            400,
            &json!({"error": {"message": "assistant prefill is not supported", "type": "invalid_request_error"}}),
        ),
        "no-prefill" => Reply::sse(
            stream_of("no-prefill", 3000, &whole(), usage),
            Duration::ZERO,
        ),
        _ => Reply::sse(
            stream_of(&model, 4000, "The slow red fox sleeps.", usage),
            Duration::ZERO,
        ),
    }
}

trait Tail {
    fn with_tail(self, ev: &str) -> Self;
}

impl Tail for Reply {
    fn with_tail(mut self, ev: &str) -> Reply {
        if let switchyard::minihttp::ReplyBody::Chunks(c) = &mut self.body {
            c.push((Duration::ZERO, bytes::Bytes::from(ev.to_string())));
        }
        self
    }
}

/// A gateway with upstream `a` serving `first` and `b` serving `second`
/// (`b_flags` added to b), `first` falling back to `second`.
fn gateway(mock: &MockUpstream, first: &str, second: &str, b_flags: &str, extra: &str) -> Gw {
    Gw::start(&format!(
        "retry: {{attempts: 1, backoff: 10ms}}\ntimeouts: {{idle: 500ms}}\n{extra}models: {{fallbacks: {{{first}: [{second}]}}}}\nupstreams:\n  - {{name: a, base_url: '{url}/v1', keys: [sk-a-1111], models: [{first}]}}\n  - {{name: b, base_url: '{url}/v1', keys: [sk-b-2222], models: [{second}]{b_flags}}}\n",
        url = mock.url()
    ))
}

fn stream(gw: &Gw, model: &str, usage: bool) -> Vec<Value> {
    let mut body =
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut resp = gw.post("/v1/chat/completions", &body);
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    resp.read_to_string(&mut text).unwrap();
    let events = switchyard::sse::parse_all(text.as_bytes());
    events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or(json!("[DONE]")))
        .collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn ends_done(events: &[Value]) -> bool {
    events.last() == Some(&json!("[DONE]"))
}

#[test]
fn a_cut_stream_is_continued_by_a_prefill_fallback() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock, "cut", "prefill", "", "");
    let before = malformed_count(&gw);
    let events = stream(&gw, "cut", true);
    assert_eq!(text_of(&events), whole(), "the whole answer, exactly once");
    assert!(ends_done(&events));
    let chunks: Vec<&Value> = events.iter().filter(|v| v.is_object()).collect();
    assert!(chunks
        .iter()
        .all(|v| v["id"] == "chatcmpl-cut" && v["created"] == 1000));
    assert!(chunks.iter().any(|v| v["model"] == "cut"));
    assert!(
        chunks.iter().any(|v| v["model"] == "prefill"),
        "chunks name their model"
    );
    let roles = chunks
        .iter()
        .filter(|v| v["choices"][0]["delta"]["role"].is_string())
        .count();
    assert_eq!(roles, 1, "one role chunk");
    // what the fallback was asked: the original messages plus the text sent
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    let asked = seen[1].json();
    assert_eq!(asked["messages"][0]["content"], "hi");
    assert_eq!(prefill_of(&seen[1]).unwrap(), PIECES[..4].concat());
    assert_eq!(seen[1].header("authorization"), Some("Bearer sk-b-2222"));
    // usage counts both attempts: the fallback's 10 + 4, plus the first
    // attempt's prompt (10 less the prefill's ~5) and ~5 generated tokens
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 10 + 5, "{usage}");
    assert_eq!(usage["completion_tokens"], 4 + 5, "{usage}");
    assert_eq!(
        malformed_count(&gw),
        before + 1,
        "the malformed event was skipped and counted"
    );
    let m = gw.metrics();
    assert!(
        m.contains(r#"switchyard_stream_continuations_total{mode="prefill",result="continued"} 1"#),
        "{m}"
    );
}

fn malformed_count(gw: &Gw) -> u64 {
    gw.metrics()
        .lines()
        .find(|l| l.starts_with(r#"switchyard_stream_malformed_events_total{mode="passthrough"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_target_that_refuses_prefill_restarts_and_the_overlap_is_skipped() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock, "cut", "no-prefill", "", "");
    let events = stream(&gw, "cut", false);
    assert_eq!(text_of(&events), whole());
    assert!(ends_done(&events));
    assert!(
        events
            .iter()
            .all(|v| !v.to_string().contains("prefill is not supported")),
        "the prefill error never reaches the client"
    );
    assert!(events
        .iter()
        .filter(|v| v.is_object())
        .all(|v| v["id"] == "chatcmpl-cut"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 3, "cut, refused prefill, restart");
    assert!(prefill_of(&seen[1]).is_some());
    assert!(prefill_of(&seen[2]).is_none());
    assert!(
        gw.logs().contains("refused assistant prefill"),
        "{}",
        gw.logs()
    );
}

#[test]
fn a_restart_that_diverges_ends_with_an_error_event() {
    let mock = MockUpstream::start(script);
    let gw = gateway(&mock, "cut", "diverge", ", continuation: restart", "");
    let events = stream(&gw, "cut", false);
    assert_eq!(text_of(&events), PIECES[..4].concat(), "nothing spliced");
    assert!(!ends_done(&events));
    let last = events.last().unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("differs from the text already sent"),
        "{last}"
    );
    assert!(
        prefill_of(&mock.requests()[1]).is_none(),
        "restart sends the request again"
    );
    // the access line says how the stream really ended (its head said 200)
    let logged = (0..40).any(|_| {
        let l = gw.logs();
        let done = l
            .lines()
            .any(|x| x.contains("status=200") && x.contains("error=upstream_protocol"));
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        done
    });
    assert!(logged, "{}", gw.logs());
}

#[test]
fn an_idle_stall_and_an_error_event_are_continued() {
    let mock = MockUpstream::start(script);
    for model in ["stall", "error-mid"] {
        let gw = gateway(&mock, model, "prefill", "", "");
        let events = stream(&gw, model, false);
        assert_eq!(text_of(&events), whole(), "{model}");
        assert!(ends_done(&events), "{model}");
        assert!(
            events.iter().all(|v| v.get("error").is_none()),
            "{model}: the upstream's error event is not passed on"
        );
    }
}

#[test]
fn streams_are_not_continued_where_the_seam_is_ambiguous_or_not_allowed() {
    let mock = MockUpstream::start(script);
    // a tool call
    let gw = gateway(&mock, "tool", "prefill", "", "");
    let events = stream(&gw, "tool", false);
    assert!(!ends_done(&events));
    assert!(events.last().unwrap()["error"].is_object());
    assert_eq!(mock.requests().len(), 1, "the fallback was not asked");
    // `continuation: off` on the only other candidate
    mock.clear();
    let gw = gateway(&mock, "cut", "prefill", ", continuation: off", "");
    let ups = gw.admin_json("/admin/upstreams");
    assert_eq!(ups["upstreams"][0]["continuation"], "auto");
    assert_eq!(ups["upstreams"][1]["continuation"], "off");
    let events = stream(&gw, "cut", false);
    assert!(!ends_done(&events));
    let msg = events.last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("could not be continued"), "{msg}");
    assert_eq!(mock.requests().len(), 1);
    // the text outgrew the continuation buffer
    mock.clear();
    let gw = Gw::start(&format!(
        "retry: {{attempts: 1, continuation_buffer: 8B}}\nmodels: {{fallbacks: {{cut: [prefill]}}}}\nupstreams:\n  - {{name: a, base_url: '{u}/v1', models: [cut]}}\n  - {{name: b, base_url: '{u}/v1', models: [prefill]}}\n",
        u = mock.url()
    ));
    let events = stream(&gw, "cut", false);
    assert!(!ends_done(&events));
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn an_aggregated_answer_is_continued_not_started_over() {
    let mock = MockUpstream::start(script);
    // both upstreams only stream: a stream:false client gets an aggregation
    let gw = Gw::start(&format!(
        "retry: {{attempts: 1}}\nmodels: {{fallbacks: {{cut: [prefill]}}}}\nupstreams:\n  - {{name: a, base_url: '{u}/v1', models: [cut], stream_only: true}}\n  - {{name: b, base_url: '{u}/v1', models: [prefill], stream_only: true}}\n",
        u = mock.url()
    ));
    let v: Value = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "cut", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .json()
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], whole(), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["id"], "chatcmpl-cut");
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(prefill_of(&seen[1]).unwrap(), PIECES[..4].concat());
    assert_eq!(
        v["usage"]["completion_tokens"],
        4 + 5,
        "both attempts counted"
    );
}
