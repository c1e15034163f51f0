//! Upstreams that are not plain OpenAI: Azure OpenAI (`kind: azure`), in the
//! deployment form and the `/openai/v1` form, checked by what an
//! Azure-shaped mock receives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::json;

const AZURE_KEY: &str = "azure-key-0123456789abcdef";

#[test]
fn azure_deployments_get_the_url_api_version_and_api_key() {
    let mock = MockUpstream::start(|r| stream_or_ok(r, 3));
    let gw = Gw::start(&format!(
        "upstreams:\n  - name: az\n    kind: azure\n    base_url: {}/openai\n    api_version: 2024-10-21\n    \
         deployments: {{gpt-4o: prod-4o, text-embedding-3-small: emb}}\n    keys: ['{AZURE_KEY}']\n",
        mock.url()
    ));
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o"));
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    let mut streamed = chat("gpt-4o");
    streamed["stream"] = json!(true);
    let text = gw.post("/v1/chat/completions", &streamed).text().unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let r = gw.post(
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "hi"}),
    );
    assert_eq!(r.status(), 200);
    // a model without a deployment is not served here
    let r = gw.post("/v1/chat/completions", &chat("gpt-4.1"));
    assert_eq!(r.status(), 404);
    let seen = mock.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
            "/openai/deployments/emb/embeddings?api-version=2024-10-21",
        ]
    );
    for r in &seen {
        assert_eq!(r.header("api-key"), Some(AZURE_KEY));
        assert_eq!(r.header("authorization"), None, "no Bearer to Azure");
    }
    assert!(!gw.logs().contains(AZURE_KEY), "the key is never logged");
}

#[test]
fn azure_v1_form_keeps_openai_paths_and_replaces_a_clients_api_version() {
    let mock = MockUpstream::start(|r| stream_or_ok(r, 3));
    let gw = Gw::start(&format!(
        "clients: [{{name: app, key: client-key-0123456789}}]\nupstreams:\n  - name: az\n    kind: azure\n    \
         base_url: {}/openai/v1\n    api_version: preview\n    keys: ['{AZURE_KEY}']\n",
        mock.url()
    ));
    let r = client()
        .post(gw.url("/v1/chat/completions?api-version=2099-01-01&x=1"))
        .header("api-key", "client-key-0123456789")
        .json(&chat("gpt-4o"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a client's own api-key header is its gateway key"
    );
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        "/openai/v1/chat/completions?x=1&api-version=preview"
    );
    assert_eq!(
        seen[0].header("api-key"),
        Some(AZURE_KEY),
        "the pool's key, not the client's"
    );
}

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic-messages")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap()
}

/// A recorded stream, sent in pieces cut mid-event.
fn recorded_stream(name: &str) -> Reply {
    let text = String::from_utf8(fixture(name)).unwrap();
    let bytes = text.as_bytes();
    let pieces = bytes
        .chunks(97)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Reply::sse(pieces, std::time::Duration::from_millis(1))
}

/// An Anthropic-shaped mock: key 1 is rate limited; the others get recorded
/// answers chosen by the last user text.
fn anthropic_mock() -> MockUpstream {
    MockUpstream::start(|r| {
        if r.header("x-api-key") == Some(common::keys::key(1).as_str()) {
            let body: serde_json::Value =
                serde_json::from_slice(&fixture("error-429-rate-limit.json")).unwrap();
            return Reply::json(429, &body)
                .with_header("retry-after", "30")
                .with_header("anthropic-ratelimit-requests-remaining", "0");
        }
        let v = r.json();
        let last = v["messages"].as_array().and_then(|m| m.last()).cloned();
        let content = last.map(|m| m["content"].clone()).unwrap_or_default();
        // a string, or the last text block (a translated chat call's)
        let text = content
            .as_str()
            .or_else(|| content.as_array()?.last()?["text"].as_str());
        let whole = |name: &str| {
            let mut reply = Reply::json(200, &json!({}));
            reply.body = switchyard::minihttp::ReplyBody::Full(fixture(name).into());
            reply
        };
        match text {
            Some("stream thinking") => recorded_stream("stream-thinking-text.sse"),
            Some("stream tools") => recorded_stream("stream-text-and-parallel-tool-use.sse"),
            Some("stream text") => recorded_stream("stream-text.sse"),
            Some("plain text") => whole("json-text.json"),
            Some("tools") => whole("json-tool-use.json"),
            Some("overloaded") => Reply::json(
                529,
                &serde_json::from_slice(&fixture("error-529-overloaded.json")).unwrap(),
            ),
            _ => whole("json-thinking.json"),
        }
    })
}

fn native_gateway(mock: &MockUpstream) -> Gw {
    Gw::start(&format!(
        "clients: [{{name: claude-code, key: {CLIENT_KEY}}}]\nupstreams:\n  - name: claude\n    kind: anthropic\n    \
         base_url: {}/v1\n    keys: ['{}', '{}']\n    models: ['claude-*']\n",
        mock.url(),
        common::keys::key(1),
        common::keys::key(2)
    ))
}

const CLIENT_KEY: &str = "claude-code-key-0123456789";

#[test]
fn anthropic_clients_pass_through_to_a_kind_anthropic_upstream() {
    let mock = anthropic_mock();
    let gw = native_gateway(&mock);
    // byte for byte: the thinking signature as recorded
    let sent = json!({"model": "claude-sonnet-4-5", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "How do I cross the street?"}]});
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&sent)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap(), fixture("json-thinking.json"));
    let seen = mock.requests();
    // key 1 was rate limited: key 2 answered; key 1 now cools
    assert_eq!(seen.len(), 2);
    for (r, k) in seen.iter().zip([1, 2]) {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(common::keys::key(k).as_str()));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(
            r.header("anthropic-beta"),
            Some("interleaved-thinking-2025-05-14")
        );
        assert_eq!(r.json(), sent, "the client's body as it was");
    }
    // a streamed answer passes as recorded (ping, padding and all)
    let mut streamed = sent.clone();
    streamed["stream"] = json!(true);
    streamed["messages"][0]["content"] = json!("stream thinking");
    let r = client()
        .post(gw.url("/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .json(&streamed)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap(), fixture("stream-thinking-text.sse"));
    // a call without anthropic-version gets the default
    let seen = mock.requests();
    assert_eq!(
        seen.last().unwrap().header("anthropic-version"),
        Some("2023-06-01")
    );
    assert_eq!(seen.len(), 3, "the cooling key is skipped");
    // usage is metered: the answer's 43 in, 321 out; the stream's 46 in
    // (message_start) and 84 out (message_delta's total, not added to the start's)
    let tokens = |m: &str, kind| {
        series(
            m,
            "switchyard_tokens_total",
            &[("upstream", "claude"), ("kind", kind)],
        )
    };
    let m = gw.metrics_when(|m| tokens(m, "prompt") >= 89.0);
    assert_eq!(
        (tokens(&m, "prompt"), tokens(&m, "completion")),
        (43.0 + 46.0, 321.0 + 84.0)
    );
    // the SDKs, natively
    let fixtures = fixture_dir();
    let args = [&gw.url("")[..], CLIENT_KEY, fixtures.to_str().unwrap()];
    run_python("sdk_native.py", &args);
    run_node("native.mjs", &args);
    // a gateway error keeps the Messages shape
    let r = client()
        .post(gw.url("/v1/messages"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": []}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error")),
        "{v}"
    );
    assert!(
        !gw.logs().contains(&common::keys::key(2)),
        "no key in the logs"
    );
}

#[test]
fn openai_clients_reach_a_kind_anthropic_upstream_translated() {
    let mock = anthropic_mock();
    let gw = native_gateway(&mock);
    let fixtures = fixture_dir();
    let args = [&gw.url("/v1")[..], CLIENT_KEY, fixtures.to_str().unwrap()];
    run_python("sdk_via_claude.py", &args);
    run_node("via_claude.mjs", &args);
    // what the upstream saw: Messages requests, system apart, a max_tokens,
    // the tools as Anthropic's
    let seen = mock.requests();
    let answered: Vec<&Request> = seen
        .iter()
        .filter(|r| r.header("x-api-key") == Some(common::keys::key(2).as_str()))
        .collect();
    assert!(answered.len() >= 8, "{}", answered.len());
    for r in &answered {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert!(r.header("authorization").is_none());
        let v = r.json();
        assert_eq!(
            v["max_tokens"], 64_000,
            "the catalog's output limit for claude-sonnet-4-5"
        );
        assert_eq!(v["messages"][0]["role"], "user");
        assert!(v.get("stream_options").is_none());
    }
    let tools = answered
        .iter()
        .find(|r| r.json()["tools"].is_array())
        .unwrap()
        .json();
    assert_eq!(tools["tools"][0]["name"], "get_weather");
    assert!(tools["tools"][0]["input_schema"].is_object());
    assert_eq!(tools["tool_choice"], json!({"type": "auto"}));
    assert_eq!(answered[0].json()["system"], "Be brief.");
    // an upstream's 529 is a 503 in OpenAI's shape; a gateway error stays OpenAI's
    // one key, so the 529 is the last word
    let one_key = Gw::start(&format!(
        "clients: [{{name: app, key: {CLIENT_KEY}}}]\nupstreams:\n  - name: claude\n    kind: anthropic\n    \
         base_url: {}/v1\n    keys: ['{}']\n",
        mock.url(),
        common::keys::key(2)
    ));
    let post = |body: &serde_json::Value| {
        client()
            .post(one_key.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(body)
            .send()
            .unwrap()
    };
    let r = post(&json!({"model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "overloaded"}]}));
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    let r = client()
        .post(one_key.url("/v1/embeddings"))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "claude-sonnet-4-5", "input": "hi"}))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "embeddings cannot go to a Messages upstream"
    );
    let v: serde_json::Value = r.json().unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kind: anthropic"),
        "{v}"
    );
    let r = post(&json!({"model": "claude-sonnet-4-5", "n": 3,
        "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("n:"),
        "{v}"
    );
}

#[test]
fn a_messages_client_asking_claudes_output_gets_the_chat_models() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "upstreams:\n  - name: openai\n    base_url: {}/v1\n    keys: [k-0123456789]\n    \
         model_map: {{claude-sonnet-4-5: gpt-4o, claude-opus-4-5: o3}}\n",
        mock.url()
    ));
    let r = gw.post(
        "/v1/messages",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 32000,
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status(), 200);
    let seen = mock.requests();
    assert_eq!(
        seen[0].json()["max_tokens"],
        16_384,
        "gpt-4o's output limit"
    );
    assert_eq!(seen[0].json()["model"], "gpt-4o");
    assert!(
        seen[0].json().get("reasoning_effort").is_none(),
        "gpt-4o does not reason"
    );
    // a model that reasons gets the budget as an effort
    let r = gw.post(
        "/v1/messages",
        &json!({"model": "claude-opus-4-5", "max_tokens": 20000,
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status(), 200);
    let sent = mock.requests()[1].json();
    assert_eq!(
        (sent["model"].as_str(), sent["reasoning_effort"].as_str()),
        (Some("o3"), Some("medium"))
    );
    assert_eq!(sent["max_tokens"], 20_000, "under o3's limit: as asked");
}

#[test]
fn responses_calls_are_bridged_to_a_chat_only_upstream() {
    let mock = MockUpstream::start(|r: &Request| {
        let v = r.json();
        let last = v["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        if last["role"] == "tool" {
            return Reply::json(200, &switchyard::mock::chat_completion("m", "It is 18C"));
        }
        if last["content"] == "stream" {
            return Reply::sse(
                switchyard::mock::chat_stream_events("m", 3, true),
                std::time::Duration::ZERO,
            );
        }
        let mut answer = switchyard::mock::chat_completion("m", "Hello from the mock");
        if last["content"] == "tool" {
            answer["choices"][0]["message"] = json!({"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_w", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
            answer["choices"][0]["finish_reason"] = json!("tool_calls");
        }
        Reply::json(200, &answer)
    });
    let gw = Gw::start(&format!(
        "upstreams:\n  - name: chat-only\n    base_url: {}/v1\n    keys: [k-0123456789]\n    no_responses: true\n",
        mock.url()
    ));
    run_python("sdk_bridge.py", &[&gw.url("/v1")]);
    let seen = mock.requests();
    assert!(
        seen.iter().all(|r| r.path == "/v1/chat/completions"),
        "only chat reached the upstream"
    );
    let first = seen[0].json();
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    let streamed = seen
        .iter()
        .find(|r| r.json()["stream"] == true)
        .unwrap()
        .json();
    assert_eq!(streamed["stream_options"], json!({"include_usage": true}));
    let with_tools = seen
        .iter()
        .find(|r| r.json()["tools"].is_array())
        .unwrap()
        .json();
    assert_eq!(with_tools["tools"][0]["function"]["name"], "get_weather");
    let next = seen
        .iter()
        .rev()
        .find(|r| {
            r.json()["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        })
        .unwrap()
        .json();
    assert_eq!(next["messages"][1]["tool_calls"][0]["id"], "call_w");
    assert_eq!(
        next["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_w", "content": "18C"})
    );
}

#[test]
fn a_responses_follow_up_goes_to_the_key_that_made_its_context() {
    // each answer names the key that made it; round robin would alternate keys
    let mock = MockUpstream::start(|r: &Request| {
        let key = r.header("authorization").unwrap_or("").to_string();
        let n = if key.ends_with(&common::keys::key(1)) {
            1
        } else {
            2
        };
        let id = format!("resp_key{n}_{}", r.body.len());
        let body = json!({"id": id, "object": "response", "status": "completed", "model": "o3",
            "output": [{"type": "reasoning", "id": format!("rs_key{n}_{}", r.body.len()), "encrypted_content": "gAAAA", "summary": []},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "ok", "annotations": []}]}],
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}});
        if r.json()["stream"] == true {
            let done =
                json!({"type": "response.completed", "sequence_number": 1, "response": body});
            return Reply::sse(
                vec![format!("event: response.completed\ndata: {done}\n\n")],
                std::time::Duration::ZERO,
            );
        }
        Reply::json(200, &body)
    });
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        common::keys::up_yaml(&mock, "openai", 2, "")
    ));
    let ask = |body: serde_json::Value| -> String {
        let r = gw.post("/v1/responses", &body);
        assert_eq!(r.status(), 200);
        let text = r.text().unwrap();
        let at = text.find("resp_key").unwrap();
        text[at..at + 9].to_string() // resp_keyN
    };
    let first = ask(json!({"model": "o3", "input": "one"}));
    // ids carry the body's length: the first answer's whole id
    let first_id = format!("{first}_{}", mock.requests()[0].body.len());
    let mut keys = Vec::new();
    for pad in ["x", "yy", "zzz"] {
        let body = json!({"model": "o3", "input": pad, "previous_response_id": first_id});
        keys.push(ask(body));
    }
    assert!(keys.iter().all(|k| *k == first), "{first} then {keys:?}");
    // a streamed answer is remembered too, and so are encrypted reasoning items
    let streamed = gw
        .post(
            "/v1/responses",
            &json!({"model": "o3", "input": "s", "stream": true}),
        )
        .text()
        .unwrap();
    let at = streamed.find("\"id\":\"rs_key").unwrap() + 6;
    let rs: String = streamed[at..].chars().take_while(|c| *c != '"').collect();
    let by = &rs[..7]; // rs_keyN
    for pad in ["p", "qq"] {
        let body = json!({"model": "o3", "input": [
            {"type": "reasoning", "id": rs, "encrypted_content": "gAAAA", "summary": []},
            {"role": "user", "content": pad}]});
        assert_eq!(ask(body)[5..], by[3..], "reasoning {rs}");
    }
}
