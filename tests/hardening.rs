//! The gateway tried as an outsider would, through the real binary: hostile
//! paths, model allow-lists on every routed body, secrets in trace logs, the
//! old proxy's token paths, CORS, streams that lie, HTTPS upstreams, protocol
//! edges.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::tls::TlsFront;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const UP_KEY: &str = "sk-hardening-upstream-aaaaaaaa1111";
const CLIENT_KEY: &str = "client-hardening-bbbbbbbbbbbb2222";

fn upstream(mock: &MockUpstream, models: &str) -> String {
    format!(
        "upstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n    models: {models}\n",
        mock.url()
    )
}

fn echo_script(req: &Request) -> Reply {
    Reply::json(
        200,
        &json!({"path": req.path, "model": req.json()["model"]}),
    )
}

#[test]
fn paths_that_could_mean_another_path_never_reach_an_upstream() {
    let mock = MockUpstream::start(echo_script);
    let gw = Gw::start(&upstream(&mock, "['*']"));
    for path in [
        "/v1/../../etc/passwd",
        "/v1/%2e%2e/%2e%2e/etc/passwd",
        "/v1/./x/../y",
        "/v1/files%2f..%2fadmin",
        "/v1/files/..%5C..%5Cx",
        "/v1/a\\b",
        "/v1//files",
    ] {
        let answer = raw(
            gw.port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("\"code\":\"invalid_path\""),
            "{path}: {answer}"
        );
    }
    assert!(mock.requests().is_empty(), "no upstream saw a hostile path");
    // a plain path still works
    let r = client().get(gw.url("/v1/files/file-1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[0].path, "/v1/files/file-1");
}

#[test]
fn every_body_that_names_a_model_is_checked_and_routed_by_it() {
    let images = MockUpstream::start(echo_script);
    let other = MockUpstream::start(echo_script);
    let yaml = format!(
        "clients:\n  - {{name: narrow, key: '{CLIENT_KEY}', models: ['gpt-4o-mini', 'whisper-1']}}\n\
         upstreams:\n  - name: first\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n    models: ['nothing-here']\n\
         \x20 - name: main\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n    models: ['gpt-4o-mini', 'whisper-1', 'dall-e-3', 'omni-moderation-latest']\n",
        other.url(),
        images.url()
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let post = |path: &str, body: Value| {
        c.post(gw.url(path))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .unwrap()
    };
    for (path, model) in [
        ("/v1/images/generations", "dall-e-3"),
        ("/v1/moderations", "omni-moderation-latest"),
        ("/v1/audio/speech", "tts-1"),
    ] {
        let r = post(path, json!({"model": model, "input": "x"}));
        assert_eq!(r.status(), 403, "{path} with {model}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], "model_not_allowed");
    }
    // allowed, and routed by the model (not to the first upstream)
    let r = post(
        "/v1/images/generations",
        json!({"model": "gpt-4o-mini", "prompt": "x"}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["path"], "/v1/images/generations");
    let seen = images.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UP_KEY}").as_str())
    );
    assert!(other.requests().is_empty());

    // multipart: the form's model part decides
    let form = |model: &str| {
        reqwest::blocking::multipart::Form::new()
            .text("model", model.to_string())
            .part(
                "file",
                reqwest::blocking::multipart::Part::bytes(vec![7u8; 3000]).file_name("a.wav"),
            )
    };
    let r = c
        .post(gw.url("/v1/audio/transcriptions"))
        .bearer_auth(CLIENT_KEY)
        .multipart(form("dall-e-3"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(gw.url("/v1/audio/transcriptions"))
        .bearer_auth(CLIENT_KEY)
        .multipart(form("whisper-1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = images.requests();
    let up = seen.last().unwrap();
    assert_eq!(up.path, "/v1/audio/transcriptions");
    assert!(up
        .header("content-type")
        .unwrap()
        .starts_with("multipart/form-data; boundary="));
    assert!(
        up.body.windows(3000).any(|w| w.iter().all(|b| *b == 7)),
        "the form went up whole"
    );

    // /v1/models/{id} and the list follow the allow-list
    let get = |path: &str| c.get(gw.url(path)).bearer_auth(CLIENT_KEY).send().unwrap();
    assert_eq!(get("/v1/models/dall-e-3").status(), 403);
    assert_eq!(get("/v1/models/gpt-4o-mini").status(), 200);
    assert_eq!(get("/v1/models/no-such-model").status(), 404);
    let list: Value = get("/v1/models").json().unwrap();
    assert_eq!(model_ids(&list), ["gpt-4o-mini", "whisper-1"]);

    // a model no upstream serves: 404, nothing sent
    let before = images.requests().len() + other.requests().len();
    let loose = Gw::start(&upstream(&images, "['gpt-4o-mini']"));
    let r = client()
        .post(loose.url("/v1/moderations"))
        .json(&json!({"model": "unknown-model", "input": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(images.requests().len() + other.requests().len(), before);
}

#[test]
fn no_log_level_prints_a_key() {
    let mock = MockUpstream::start(|req: &Request| stream_or_ok(req, 3));
    let yaml = format!(
        "clients:\n  - {{name: team, key: '{CLIENT_KEY}'}}\n{}",
        upstream(&mock, "['*']")
    );
    let gw = Gw::start_env(&yaml, &[("RUST_LOG", "trace")]);
    let c = client();
    for body in [
        chat("m"),
        json!({"model": "m", "stream": true, "messages": []}),
    ] {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap();
    }
    // the opaque lane (Pingora's own proxy phases print the upstream request)
    let r = c
        .get(gw.url("/v1/files"))
        .header("api-key", CLIENT_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = c
        .get(gw.url("/v1/chat/completions"))
        .bearer_auth("some-unknown-client-key-zzzz")
        .send();
    std::thread::sleep(Duration::from_millis(300));
    let logs = gw.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging is on"
    );
    assert!(
        logs.contains("[redacted]") || logs.contains("mock#1"),
        "the lines are there"
    );
    for secret in [UP_KEY, CLIENT_KEY, "some-unknown-client-key-zzzz"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

#[test]
fn old_token_paths_on_the_api_port_are_answered_not_forwarded() {
    let mock = MockUpstream::start(echo_script);
    let gw = Gw::start(&upstream(&mock, "['*']"));
    let v: Value = client()
        .get(gw.url("/v1/tokens/stats"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["total"], 1, "the gateway's own key table: {v}");
    assert_eq!(v["keys"][0]["id"], "mock#1 (…1111)");
    let r = client()
        .post(gw.url("/v1/tokens/reset-stats"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(mock.requests().is_empty(), "never forwarded upstream");
    assert!(!r.text().unwrap().contains(UP_KEY));
}

#[test]
fn cors_preflights_and_answers() {
    let mock = MockUpstream::start(|req: &Request| stream_or_ok(req, 2));
    let yaml = format!(
        "cors: {{origins: ['https://chat.example.com'], max_age: 5m}}\n{}",
        upstream(&mock, "['*']")
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let pre = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .unwrap();
    assert_eq!(pre.status(), 204);
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "https://chat.example.com");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert_eq!(h["access-control-max-age"], "300");
    // another origin: no CORS, 405 with Allow
    let other = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
        .header("origin", "https://evil.example.net")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(other.status(), 405);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(other.headers()["allow"], "GET, POST, OPTIONS");
    // the answers themselves: JSON, a stream, an error, the opaque lane
    let send = |body: Value| {
        c.post(gw.url("/v1/chat/completions"))
            .header("origin", "https://chat.example.com")
            .json(&body)
            .send()
            .unwrap()
    };
    for r in [
        send(chat("m")),
        send(json!({"model": "m", "stream": true, "messages": []})),
        send(json!({"messages": []})),
        c.get(gw.url("/v1/files"))
            .header("origin", "https://chat.example.com")
            .send()
            .unwrap(),
    ] {
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://chat.example.com",
            "{:?}",
            r.status()
        );
        assert!(r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-upstream-active"));
    }
    let plain = send(chat("m"));
    assert!(plain.headers().get("access-control-allow-origin").is_some());
    let no_origin = c
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("m"))
        .send()
        .unwrap();
    assert!(no_origin
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// A chat stream as one Content-Length body (not chunked).
fn sse_with_length(events: Vec<String>) -> Reply {
    let mut r = Reply::sse(vec![], Duration::ZERO);
    r.body = switchyard::minihttp::ReplyBody::Full(bytes::Bytes::from(events.concat()));
    r
}

#[test]
fn a_changed_stream_is_framed_by_what_is_sent() {
    let mock = MockUpstream::start(|_req: &Request| {
        sse_with_length(switchyard::mock::chat_stream_events("m", 4, true))
    });
    let gw = Gw::start(&upstream(&mock, "['*']"));
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "the upstream's length no longer fits"
    );
    let text = r.text().expect("the whole body arrives as announced");
    assert!(
        !text.contains("\"usage\""),
        "the usage the gateway asked for is stripped: {text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[test]
fn a_stream_that_ends_cleanly_but_unfinished_is_not_passed_off_as_complete() {
    let mock = MockUpstream::start(|req: &Request| {
        let events = switchyard::mock::chat_stream_events("m", 5, false);
        if req.json()["messages"][0]["content"] == "cut" {
            // two content chunks, then a complete body: no finish_reason, no [DONE]
            sse_with_length(events[..3].to_vec())
        } else {
            // every finish_reason, no [DONE]: complete
            let finished: Vec<String> = events
                .into_iter()
                .filter(|e| !e.contains("[DONE]"))
                .collect();
            sse_with_length(finished)
        }
    });
    let gw = Gw::start(&upstream(&mock, "['*']"));
    let ask = |content: &str| {
        gw.post(
            "/v1/chat/completions",
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": content}]}),
        )
        .text()
        .unwrap()
    };
    let cut = ask("cut");
    assert!(cut.contains("data: {\"error\""), "{cut}");
    assert!(!cut.contains("[DONE]"), "{cut}");
    let whole = ask("whole");
    assert!(!whole.contains("\"error\""), "{whole}");
}

#[test]
fn https_upstreams_with_a_private_ca_and_verification_on() {
    let mock = MockUpstream::start(ok_script);
    let front = TlsFront::start(mock.addr);
    let yaml = |tls: &str| {
        format!(
            "upstreams:\n  - name: secure\n    base_url: https://localhost:{}/v1\n    keys: ['{UP_KEY}']\n{tls}",
            front.port
        )
    };
    let gw = Gw::start(&yaml(&format!(
        "    tls: {{ca_file: '{}'}}\n",
        front.cert.display()
    )));
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap()["choices"][0]["message"]["content"],
        "hi from mock"
    );
    let seen = mock.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UP_KEY}").as_str())
    );
    // the opaque lane over TLS too
    assert_eq!(
        client().get(gw.url("/v1/files")).send().unwrap().status(),
        200
    );
    drop(gw);
    // without the CA the certificate is refused: verification stays on
    mock.clear();
    let strict = Gw::start(&yaml(""));
    let r = strict.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 502);
    assert!(mock.requests().is_empty());
}

#[test]
fn protocol_edges() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "timeouts: {{idle: 1s}}\n{}",
        upstream(&mock, "['*']")
    ));
    // 405 says what is allowed
    let r = client().get(gw.url("/v1/chat/completions")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = client().post(gw.url("/v1/models")).send().unwrap();
    assert_eq!(r.headers()["allow"], "GET");
    // a body that stalls is cut at timeouts.idle
    let start = Instant::now();
    let answer = raw(
        gw.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // methods no OpenAI-style API takes are not passed on
    let answer = raw(
        gw.port,
        b"TRACE /v1/files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("allow: get, head, post"),
        "{answer}"
    );
    // garbage is refused, and the gateway keeps serving
    let answer = raw(
        gw.port,
        b"\x16\x03\x01garbage\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert!(mock.requests().is_empty());
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
}

#[test]
fn a_taken_port_is_a_prompt_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:{port}\nadmin: {{listen: '127.0.0.1:{}'}}\nupstreams: [{{name: d, kind: demo}}]\n", free_port()),
    )
    .unwrap();
    let start = Instant::now();
    let out = std::process::Command::new(bin())
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_key_action_just_before_a_reload_survives_a_crash() {
    let mock = MockUpstream::start(ok_script);
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state: {{path: '{}'}}\n{}",
        state.path().display(),
        upstream(&mock, "['*']")
    );
    let mut gw = Gw::start(&yaml);
    let c = client();
    let act = |gw: &Gw, what: &str| {
        let r = c
            .post(gw.admin(&format!("/admin/keys/mock%231/{what}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{what}");
    };
    act(&gw, "disable");
    std::thread::sleep(Duration::from_millis(700)); // the writer thread saved "disabled"
    act(&gw, "reset");
    assert_eq!(
        c.post(gw.admin("/admin/reload")).send().unwrap().status(),
        200
    );
    gw.signal(libc::SIGKILL); // no final flush
    gw.wait_exit(Duration::from_secs(5)).unwrap();
    let again = Gw::start(&yaml);
    let keys = again.admin_json("/admin/keys");
    assert_eq!(keys["keys"][0]["state"], "active", "{keys}");
}

#[test]
fn a_malformed_event_is_skipped_and_counted_never_fatal() {
    let mock = MockUpstream::start(|_req: &Request| {
        let mut events = switchyard::mock::chat_stream_events("m", 3, false);
        events.insert(2, "data: {\"choices\":[{\"delta\":\n\n".into());
        Reply::sse(events, Duration::ZERO)
    });
    let streaming = MockUpstream::start(|_req: &Request| {
        let mut events = switchyard::mock::chat_stream_events("m", 3, false);
        events.insert(2, "data: not json at all\n\n".into());
        Reply::sse(events, Duration::ZERO)
    });
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: agg, base_url: '{}/v1', stream_only: true, models: [agg]}}\n  - {{name: pass, base_url: '{}/v1', models: [pass]}}\n",
        mock.url(),
        streaming.url()
    ));
    let v: Value = gw
        .post("/v1/chat/completions", &chat("agg"))
        .json()
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ",
        "{v}"
    );
    let text = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "pass", "stream": true, "messages": []}),
        )
        .text()
        .unwrap();
    assert!(!text.contains("not json"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let m = gw.metrics();
    assert!(
        m.contains("switchyard_stream_malformed_events_total{mode=\"aggregated\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_stream_malformed_events_total{mode=\"passthrough\"} 1"),
        "{m}"
    );
}

#[test]
fn health_tells_the_version_and_unknown_admin_paths_are_404() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&upstream(&mock, "['*']"));
    for url in [gw.url("/health"), gw.admin("/health")] {
        let v: Value = client().get(&url).send().unwrap().json().unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            v["pid"].as_u64().unwrap() > 0 && v["uptime_seconds"].is_u64(),
            "{v}"
        );
    }
    let c = client();
    assert_eq!(
        c.get(gw.admin("/admin/nothing-here"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.post(gw.admin("/admin/nothing")).send().unwrap().status(),
        404
    );
    assert_eq!(
        c.delete(gw.admin("/admin/keys")).send().unwrap().status(),
        405,
        "a known path, another method"
    );
}
