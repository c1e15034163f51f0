//! The response cache (`cache:`) through the real binary and the mock
//! upstream: what is served again without an upstream call, what is never
//! kept, what splits entries, client controls, purge, the Redis store
//! shared by two instances, and the openai SDK on a replayed stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::redis::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const A: &str = "client-a-key-0123456789";
const B: &str = "client-b-key-0123456789";

fn gateway(mock: &MockUpstream, cache: &str, state: &str) -> Gw {
    Gw::start(&format!(
        "{state}cache: {{models: ['gpt-*', 'text-embedding-*'], {cache}}}\n\
         clients: [{{name: a, key: {A}}}, {{name: b, key: {B}}}]\n\
         upstreams:\n{}",
        up_yaml(mock, "up", 1, "")
    ))
}

/// Posts raw `body` as client `key` with extra `headers`.
fn post(gw: &Gw, key: &str, body: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().unwrap()
}

fn cache_header(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("x-switchyard-cache")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string())
}

const BODY: &str = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0.2}"#;

#[test]
fn a_repeat_is_served_without_an_upstream_call_and_only_what_matches() {
    let mock = MockUpstream::start(ok_script);
    let gw = gateway(&mock, "scope: client", "");
    let first = post(&gw, A, BODY, &[]);
    assert_eq!(
        (first.status().as_u16(), cache_header(&first)),
        (200, "miss".into())
    );
    let first: Value = first.json().unwrap();
    // the same call, fields in another order and spaced otherwise, with
    // `user` and `stream: false`: one entry
    let same = r#"{"temperature":0.20,"user":"u-1","stream":false,"messages":[{"content":"cache me","role":"user"}],"model":"gpt-4o"}"#;
    let hit = post(&gw, A, same, &[]);
    assert_eq!(cache_header(&hit), "hit");
    let age: u64 = hit.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age < 60, "{age}");
    assert_eq!(
        hit.json::<Value>().unwrap(),
        first,
        "the kept answer as it was"
    );
    assert_eq!(
        client_calls(&mock).len(),
        1,
        "the repeat never reached the upstream"
    );
    // what changes the answer is another entry
    let warmer = BODY.replace("0.2", "0.9");
    assert_eq!(cache_header(&post(&gw, A, &warmer, &[])), "miss");
    let tools = BODY.replace(
        "\"temperature\"",
        r#""tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "temperature""#,
    );
    assert_eq!(cache_header(&post(&gw, A, &tools, &[])), "miss");
    // scope: client — another client's call is a miss
    assert_eq!(cache_header(&post(&gw, B, BODY, &[])), "miss");
    // a model the cache does not name: no header at all
    let other = BODY.replace("gpt-4o", "claude-x");
    assert_eq!(cache_header(&post(&gw, A, &other, &[])), "-");
    // no-cache: looked past (and kept again); no-store: served, not kept
    let r = post(&gw, A, BODY, &[("cache-control", "no-cache")]);
    assert_eq!(cache_header(&r), "bypass");
    let fresh = BODY.replace("cache me", "do not keep");
    assert_eq!(
        cache_header(&post(&gw, A, &fresh, &[("cache-control", "no-store")])),
        "miss"
    );
    assert_eq!(
        cache_header(&post(&gw, A, &fresh, &[])),
        "miss",
        "no-store kept nothing"
    );
    let calls = client_calls(&mock).len();
    assert_eq!(calls, 8, "every miss, bypass and uncached call; no hit");

    let m = gw.metrics();
    assert!(
        series(&m, "switchyard_cache_total", &[("result", "hit")]) >= 1.0,
        "{m}"
    );
    // the one hit saved its answer's 8 tokens
    assert!(
        m.contains("\nswitchyard_cache_tokens_saved_total 8\n"),
        "{m}"
    );
    // usage marks the cached answer
    let reqs = gw.admin_json("/admin/requests?limit=50");
    let rows = reqs["requests"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["upstream"] == "cache" && r["tokens_in"] == 0),
        "{reqs}"
    );
    // purge by client over the admin API, then by model with the CLI
    let purged: Value = client()
        .post(gw.admin("/admin/cache/purge?client=b"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(
        cache_header(&post(&gw, A, BODY, &[])),
        "hit",
        "a's entry stayed"
    );
    let (ok, out, _) = cli(&gw, &["cache", "purge", "--model", "gpt-4o"]);
    assert!(ok && out.contains("purged"), "{out}");
    assert_eq!(cache_header(&post(&gw, A, BODY, &[])), "miss");
    let (ok, out, _) = cli(&gw, &["cache"]);
    assert!(
        ok && out.contains("hits") && out.contains("store memory"),
        "{out}"
    );
}

#[test]
fn truncated_failed_and_continued_answers_are_never_kept() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.path.ends_with("/embeddings") {
            return Reply::json(
                200,
                &json!({"object": "list", "model": "text-embedding-3-small",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
            );
        }
        let text = req.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match text.as_str() {
            "cut" => {
                let mut v = switchyard::mock::chat_completion("gpt-4o", "partial");
                v["choices"][0]["finish_reason"] = "length".into();
                Reply::json(200, &v)
            }
            "fail" => Reply::json(400, &json!({"error": {"message": "bad", "code": "x"}})),
            _ => ok_script(req),
        }
    });
    let gw = gateway(&mock, "scope: shared", "");
    for text in ["cut", "fail"] {
        let body =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).to_string();
        for _ in 0..2 {
            assert_eq!(cache_header(&post(&gw, A, &body, &[])), "miss", "{text}");
        }
    }
    assert_eq!(client_calls(&mock).len(), 4);
    // embeddings are kept the same way
    let embed = |key: &str| {
        client()
            .post(gw.url("/v1/embeddings"))
            .bearer_auth(key)
            .json(&json!({"model": "text-embedding-3-small", "input": "cache me"}))
            .send()
            .unwrap()
    };
    assert_eq!(cache_header(&embed(A)), "miss");
    let hit = embed(A);
    assert_eq!(cache_header(&hit), "hit");
    assert_eq!(
        hit.json::<Value>().unwrap()["data"][0]["embedding"],
        json!([0.25, -0.5])
    );
    assert_eq!(client_calls(&mock).len(), 5);
    // scope: shared — b gets what a's call kept
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "ok"}]}).to_string();
    assert_eq!(cache_header(&post(&gw, A, &body, &[])), "miss");
    assert_eq!(cache_header(&post(&gw, B, &body, &[])), "hit");
}

#[test]
fn one_entry_answers_json_and_streams_both_ways() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["stream"] == json!(true) {
            return Reply::sse(
                switchyard::mock::chat_stream_events("gpt-4o", 4, true),
                Duration::from_millis(30),
            );
        }
        Reply::json(
            200,
            &switchyard::mock::chat_completion("gpt-4o", "kept as JSON"),
        )
    });
    let gw = gateway(&mock, "replay: paced", "");
    // a JSON answer kept, replayed as a stream to the openai SDK
    let cache_me = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "cache me"}]}"#;
    assert_eq!(cache_header(&post(&gw, A, cache_me, &[])), "miss");
    run_python(
        "sdk_cache.py",
        &[&gw.url("/v1"), A, "gpt-4o", "kept as JSON"],
    );
    // a streamed answer kept (merged as it passed), served as JSON
    let streamed = r#"{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "stream me"}]}"#;
    let r = post(&gw, A, streamed, &[]);
    assert_eq!(cache_header(&r), "miss");
    let text = r.text().unwrap();
    assert!(text.contains("tok3"), "{text}");
    let json_repeat = streamed.replace("\"stream\": true, ", "");
    let hit = post(&gw, A, &json_repeat, &[]);
    assert_eq!(cache_header(&hit), "hit");
    let v: Value = hit.json().unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 "
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // and streamed again, paced as the original: its content in pieces
    let again = post(&gw, A, streamed, &[]);
    assert_eq!(cache_header(&again), "hit");
    let body = again.text().unwrap();
    let pieces = body.matches("\"content\":\"tok").count();
    assert_eq!(pieces, 4, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(
        client_calls(&mock).len(),
        2,
        "two misses, every other call a hit"
    );
}

#[test]
fn the_redis_store_is_shared_and_a_redis_restart_is_only_misses() {
    let port = free_port();
    let redis = Redis::start(port, &[]);
    let mock = MockUpstream::start(ok_script);
    let state = format!("state: {{redis: '{}'}}\n", redis.url());
    let a = gateway(&mock, "store: redis, scope: shared", &state);
    let b = gateway(&mock, "store: redis, scope: shared", &state);
    for gw in [&a, &b] {
        within(Duration::from_secs(5), "the store is up", || {
            gw.admin_json("/health")["store"] == "up"
        });
    }
    assert_eq!(cache_header(&post(&a, A, BODY, &[])), "miss");
    within(Duration::from_secs(3), "B gets A's answer", || {
        cache_header(&post(&b, B, BODY, &[])) == "hit"
    });
    // Redis gone: misses, never failures
    drop(redis);
    for gw in [&a, &b] {
        let r = post(gw, A, BODY, &[]);
        assert_eq!(
            (r.status().as_u16(), cache_header(&r)),
            (200, "miss".into())
        );
    }
    let _back = Redis::start(port, &[]);
    within(
        Duration::from_secs(6),
        "kept again once Redis is back",
        || {
            post(&a, A, BODY, &[]);
            cache_header(&post(&b, B, BODY, &[])) == "hit"
        },
    );
    let purged: Value = client()
        .post(a.admin("/admin/cache/purge"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");
    assert_eq!(cache_header(&post(&b, B, BODY, &[])), "miss");
}
