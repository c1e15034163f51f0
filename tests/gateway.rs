//! End-to-end tests of the foundation: the real binary in front of a mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

const UP_KEY: &str = "sk-upstream-aaaaaaaaaaaaaaaa1111";
const UP_KEY2: &str = "sk-upstream-bbbbbbbbbbbbbbbb2222";
const CLIENT_KEY: &str = "client-key-cccccccccccccccc3333";

fn upstream_yaml(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "upstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}', '{UP_KEY2}']\n{extra}",
        mock.url()
    )
}

#[test]
fn chat_is_forwarded_with_upstream_key_and_mapped_model() {
    let mock = MockUpstream::start(ok_script);
    let yaml = format!(
        "clients: [{{name: team-a, key: '{CLIENT_KEY}'}}]\n{}    model_map: {{fast: gpt-4o-mini}}\n",
        upstream_yaml(&mock, "")
    );
    let gw = Gw::start(&yaml);
    let resp = client()
        .post(gw.url("/v1/chat/completions?trace=1"))
        .bearer_auth(CLIENT_KEY)
        .header("x-api-key", CLIENT_KEY)
        .header("openai-beta", "assistants=v2")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.5}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let len = resp
        .headers()
        .get("content-length")
        .expect("JSON reply keeps Content-Length")
        .clone();
    assert!(resp.headers().contains_key("x-upstream-active"));
    assert_eq!(resp.headers()["x-upstream-queue"], "0");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hi from mock");
    assert_eq!(
        len.to_str().unwrap().parse::<usize>().unwrap(),
        body.to_string().len()
    );

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions?trace=1");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {UP_KEY}").as_str())
    );
    assert_eq!(
        r.header("x-api-key"),
        None,
        "client key must not be forwarded"
    );
    assert_eq!(r.header("openai-beta"), Some("assistants=v2"));
    assert_eq!(r.header("host"), Some(mock.addr.to_string().as_str()));
    let sent = r.json();
    assert_eq!(
        sent["model"], "gpt-4o-mini",
        "model_map renames the model upstream"
    );
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["messages"][0]["content"], "hello");
    let raw = String::from_utf8_lossy(&r.body);
    assert!(!raw.contains(CLIENT_KEY));
    assert!(!format!("{:?}", r.headers).contains(CLIENT_KEY));
    // secrets never reach the logs
    std::thread::sleep(Duration::from_millis(100));
    let logs = gw.logs();
    assert!(
        logs.contains("model=fast") && logs.contains("key=mock#1 (…1111)"),
        "{logs}"
    );
    assert!(!logs.contains(UP_KEY) && !logs.contains(CLIENT_KEY));
}

#[test]
fn keys_rotate_round_robin_and_base_path_is_kept() {
    let mock = MockUpstream::start(ok_script);
    let yaml = format!(
        "upstreams:\n  - name: gh\n    base_url: {}/inference/\n    keys: ['{UP_KEY}', '{UP_KEY2}']\n",
        mock.url()
    );
    let gw = Gw::start(&yaml);
    for _ in 0..4 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("openai/gpt-4o"))
                .status(),
            200
        );
    }
    let seen = mock.requests();
    let keys: Vec<_> = seen
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    let k1 = format!("Bearer {UP_KEY}");
    let k2 = format!("Bearer {UP_KEY2}");
    assert_eq!(keys, vec![k1.clone(), k2.clone(), k1, k2]);
    assert!(seen.iter().all(|r| r.path == "/inference/chat/completions"));
}

#[test]
fn other_understood_endpoints_are_forwarded() {
    let mock = MockUpstream::start(|req: &Request| Reply::json(200, &json!({"path": req.path})));
    let gw = Gw::start(&upstream_yaml(&mock, ""));
    for p in ["/v1/completions", "/v1/embeddings", "/v1/responses"] {
        let r = gw.post(p, &json!({"model": "m", "input": "x"}));
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<Value>().unwrap()["path"],
            format!("/v1{}", &p[3..])
        );
    }
}

#[test]
fn sse_reaches_the_client_chunk_by_chunk() {
    let mock = MockUpstream::start(|_req: &Request| {
        let events = (0..5).map(|i| format!("data: {{\"n\":{i}}}\n\n")).collect();
        Reply::sse(events, Duration::from_millis(300))
    });
    let gw = Gw::start(&upstream_yaml(&mock, ""));
    let start = Instant::now();
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "stream": true, "messages": []}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    let mut all = String::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = resp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        arrivals.push((start.elapsed(), all.matches("data:").count()));
    }
    assert_eq!(all.matches("data:").count(), 5, "{all}");
    // the first event arrived long before the last one was sent
    let first = arrivals.iter().find(|(_, c)| *c >= 1).unwrap().0;
    let last = arrivals.last().unwrap().0;
    assert!(
        last - first >= Duration::from_millis(900),
        "events were buffered: {arrivals:?}"
    );
}

#[test]
fn multi_megabyte_bodies_arrive_whole() {
    let mock =
        MockUpstream::start(|req: &Request| Reply::json(200, &json!({"len": req.body.len()})));
    let gw = Gw::start(&upstream_yaml(&mock, ""));
    for size in [1usize << 20, 5 << 20] {
        mock.clear();
        let filler: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let body = json!({"model": "m", "messages": [{"role": "user", "content": filler}]});
        let text = body.to_string();
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(text.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().unwrap()["len"], text.len());
        let seen = mock.requests();
        assert_eq!(
            seen[0].body.as_ref(),
            text.as_bytes(),
            "body of {size} bytes changed"
        );
    }
}

#[test]
fn request_errors_have_openai_shape() {
    let mock = MockUpstream::start(ok_script);
    let yaml = format!("limits: {{max_request_body: 1MiB}}\n{}    models: ['gpt-*']\n    model_map: {{fast: gpt-4o}}\n", upstream_yaml(&mock, ""));
    let gw = Gw::start(&yaml);
    let check = |r: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
        assert!(v["error"].get("type").is_some() && v["error"].get("param").is_some());
        v
    };
    let c = client();
    check(
        c.post(gw.url("/v1/chat/completions"))
            .body("{not json")
            .send()
            .unwrap(),
        400,
        "invalid_json",
    );
    check(
        c.post(gw.url("/v1/chat/completions"))
            .body("[1,2]")
            .send()
            .unwrap(),
        400,
        "invalid_json",
    );
    check(
        gw.post("/v1/chat/completions", &json!({"messages": []})),
        400,
        "missing_model",
    );
    check(
        gw.post("/v1/chat/completions", &json!({"model": ""})),
        400,
        "missing_model",
    );
    let v = check(
        gw.post("/v1/chat/completions", &chat("claude-3")),
        404,
        "model_not_found",
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("fast"),
        "404 names the models that exist: {v}"
    );
    let big = "x".repeat(2 << 20);
    check(
        c.post(gw.url("/v1/chat/completions"))
            .body(big)
            .send()
            .unwrap(),
        413,
        "request_too_large",
    );
    check(
        c.get(gw.url("/v1/chat/completions")).send().unwrap(),
        405,
        "method_not_allowed",
    );
    check(c.get(gw.url("/nowhere")).send().unwrap(), 404, "not_found");
    assert!(
        client_calls(&mock).is_empty(),
        "no bad request reached the upstream"
    );
    // a chunked body over the limit (no Content-Length) is refused too
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b'x'; 64 * 1024])).collect();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap())
                .collect::<Vec<u8>>(),
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[test]
fn upstream_errors_pass_through_unchanged() {
    let body = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    let mock = MockUpstream::start(move |req: &Request| {
        let status = if req.json()["model"] == "five" {
            503
        } else {
            400
        };
        Reply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), "req_123".into()),
            ],
            body: ReplyBody::Full(bytes::Bytes::from_static(body.as_bytes())),
            delay: Duration::ZERO,
            fault: Fault::None,
        }
    });
    let gw = Gw::start(&upstream_yaml(&mock, ""));
    for (model, status) in [("four", 400), ("five", 503)] {
        let r = gw.post("/v1/chat/completions", &chat(model));
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["x-request-id"], "req_123");
        assert_eq!(r.text().unwrap(), body);
    }
}

#[test]
fn unreachable_upstream_is_502_and_slow_one_504() {
    let dead = free_port();
    let slow = MockUpstream::start(|_r: &Request| {
        let mut r = Reply::json(200, &json!({}));
        r.delay = Duration::from_secs(3);
        r
    });
    let yaml = format!(
        "timeouts: {{connect: 1s, first_byte: 500ms}}\nretry: {{attempts: 1}}\nupstreams:\n  - {{name: dead, base_url: 'http://127.0.0.1:{dead}/v1', models: ['dead-*']}}\n  - {{name: slow, base_url: '{}/v1', models: ['slow-*']}}\n",
        slow.url()
    );
    let gw = Gw::start(&yaml);
    let r = gw.post("/v1/chat/completions", &chat("dead-1"));
    assert_eq!(r.status(), 502);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(v["error"]["message"].as_str().unwrap().contains("dead"));
    let start = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("slow-1"));
    assert_eq!(r.status(), 504);
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "first_byte timeout applies"
    );
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "upstream_timeout"
    );
}

#[test]
fn connect_failure_fails_over_to_the_next_upstream() {
    let dead = free_port();
    let mock = MockUpstream::start(ok_script);
    let yaml = format!(
        "retry: {{attempts: 3, backoff: 10ms}}\nupstreams:\n  - {{name: dead, base_url: 'http://127.0.0.1:{dead}/v1', keys: [k1]}}\n  - {{name: live, base_url: '{}/v1', keys: ['{UP_KEY}']}}\n",
        mock.url()
    );
    let gw = Gw::start(&yaml);
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-upstream"], "live");
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn opaque_lane_proxies_other_paths_with_the_key() {
    let files = MockUpstream::start(|req: &Request| {
        Reply::json(
            200,
            &json!({"path": req.path, "len": req.body.len(), "ct": req.header("content-type")}),
        )
    });
    let main = MockUpstream::start(|req: &Request| Reply::json(200, &json!({"main": req.path})));
    let yaml = format!(
        "clients: [{{name: a, key: '{CLIENT_KEY}'}}]\nupstreams:\n  - {{name: main, base_url: '{}/v1', keys: ['{UP_KEY}']}}\n  - {{name: files, base_url: '{}/api/v1', keys: ['{UP_KEY2}'], paths: ['/v1/files*']}}\n",
        main.url(),
        files.url()
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let r = c
        .get(gw.url("/v1/batches?limit=2"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["main"], "/v1/batches?limit=2");
    assert_eq!(
        main.requests()[0].header("authorization"),
        Some(format!("Bearer {UP_KEY}").as_str())
    );

    let form = reqwest::blocking::multipart::Form::new()
        .text("purpose", "fine-tune")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![7u8; 300_000]).file_name("data.jsonl"),
        );
    let r = c
        .post(gw.url("/v1/files"))
        .bearer_auth(CLIENT_KEY)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["path"], "/api/v1/files");
    assert!(v["ct"]
        .as_str()
        .unwrap()
        .starts_with("multipart/form-data; boundary="));
    let seen = files.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UP_KEY2}").as_str())
    );
    assert!(seen[0].body.len() > 300_000);
    assert!(
        seen[0].body.windows(7).any(|w| w == [7u8; 7]),
        "multipart body arrives untouched"
    );
    // unauthenticated opaque calls are refused before any proxying
    let r = c.get(gw.url("/v1/files")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(files.requests().len(), 1);
}

#[test]
fn opaque_lane_unreachable_upstream_is_openai_shaped_502() {
    let dead = free_port();
    let gw = Gw::start(&format!(
        "upstreams: [{{name: dead, base_url: 'http://127.0.0.1:{dead}/v1'}}]\n"
    ));
    let r = client().get(gw.url("/v1/files")).send().unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "upstream_unreachable"
    );
}

#[test]
fn models_endpoint_lists_routable_models() {
    let mock = MockUpstream::start(ok_script);
    let yaml = format!(
        "{}    models: ['gpt-4o', 'gpt-4o-mini', 'o1-*']\n    model_map: {{fast: gpt-4o-mini}}\n",
        upstream_yaml(&mock, "")
    );
    let gw = Gw::start(&yaml);
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["object"], "list");
    // the glob lists the catalog's matches (this upstream's GET /models lists nothing)
    let want = ["fast", "gpt-4o", "gpt-4o-mini", "o1-mini", "o1-preview"];
    assert_eq!(model_ids(&v), want);
    let one: Value = client()
        .get(gw.url("/v1/models/o1-preview"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(one["id"], "o1-preview");
    let claude = client().get(gw.url("/v1/models/claude")).send().unwrap();
    assert_eq!(claude.status(), 404);
    let asked: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(asked, ["/v1/models"], "only its model list");
}

#[test]
fn client_keys_and_model_allowlists() {
    let mock = MockUpstream::start(ok_script);
    let hashed = switchyard::config::hash_key("second-client-key-xxxxxxxx");
    let yaml = format!(
        "clients:\n  - {{name: a, key: '{CLIENT_KEY}', models: ['gpt-4o*'], expires: 2999-01-01T00:00:00Z}}\n  - {{name: b, key_sha256: '{hashed}'}}\n  - {{name: old, key: old-client-key-xxxxxxxxx, expires: '2020-06-30T12:00:00Z'}}\n{}",
        upstream_yaml(&mock, "")
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let send = |key: Option<&str>, model: &str| {
        let mut r = c.post(gw.url("/v1/chat/completions")).json(&chat(model));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().unwrap()
    };
    assert_eq!(send(None, "gpt-4o").status(), 401);
    assert_eq!(send(Some("wrong"), "gpt-4o").status(), 401);
    assert_eq!(send(Some(CLIENT_KEY), "gpt-4o-mini").status(), 200);
    let r = send(Some(CLIENT_KEY), "o1");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().unwrap()["error"]["code"],
        "model_not_allowed"
    );
    assert_eq!(send(Some("second-client-key-xxxxxxxx"), "o1").status(), 200);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("api-key", CLIENT_KEY)
        .json(&chat("gpt-4o"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests().len(), 3);
    // an expired key is refused, saying so (and never reaches an upstream)
    let r = send(Some("old-client-key-xxxxxxxxx"), "gpt-4o");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "expired_api_key");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 2020-06-30T12:00:00Z"),
        "{v}"
    );
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn metrics_are_scraped_without_secrets() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&upstream_yaml(&mock, ""));
    for _ in 0..3 {
        gw.post("/v1/chat/completions", &chat("gpt-4o"));
    }
    gw.post("/v1/chat/completions", &json!({}));
    let req = |t: &str, status| {
        series(
            t,
            "switchyard_requests_total",
            &[("route", "chat"), ("status", status)],
        )
    };
    let text = gw.metrics_when(|t| req(t, "2xx") == 3.0 && req(t, "4xx") == 1.0);
    assert_eq!(req(&text, "2xx"), 3.0, "{text}");
    assert_eq!(req(&text, "4xx"), 1.0, "{text}");
    assert_eq!(
        series(
            &text,
            "switchyard_requests_total",
            &[("model", "gpt-4o"), ("upstream", "mock"), ("client", "-")]
        ),
        3.0,
        "{text}"
    );
    assert!(
        text.contains(
            r#"switchyard_upstream_requests_total{key="mock#1",outcome="2xx",upstream="mock"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"switchyard_upstream_requests_total{key="mock#2",outcome="2xx",upstream="mock"} 1"#
    ));
    assert!(text.contains("switchyard_request_duration_seconds_bucket"));
    assert!(text.contains("switchyard_in_flight_requests"));
    assert!(text.contains(r#"switchyard_errors_total{kind="missing_model"} 1"#));
    assert!(text.contains("process_resident_memory_bytes"));
    // Neither key nor its tail in short-id form; a metric value may well
    // contain the digits "1111", so look for the key's own letters.
    assert!(!text.contains(UP_KEY) && !text.contains(UP_KEY2), "{text}");
    assert!(
        !text.contains("aaaa1111") && !text.contains("\u{2026}1111"),
        "{text}"
    );
}

#[test]
fn admin_token_protects_metrics() {
    let gw = Gw::with_admin_token("s3cret-admin", "upstreams: [{name: demo, kind: demo}]\n");
    assert_eq!(
        client().get(gw.admin("/metrics")).send().unwrap().status(),
        401
    );
    assert_eq!(
        client()
            .get(gw.admin("/metrics"))
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(gw.admin("/metrics"))
            .bearer_auth("s3cret-admin")
            .send()
            .unwrap()
            .status(),
        200
    );
    assert!(!gw.logs().contains("s3cret-admin"));
}

#[test]
fn sigterm_lets_a_stream_finish_then_exits_promptly() {
    let mock = MockUpstream::start(|_req: &Request| {
        let events = (0..8).map(|i| format!("data: {{\"n\":{i}}}\n\n")).collect();
        Reply::sse(events, Duration::from_millis(250))
    });
    let mut gw = Gw::start(&format!(
        "server: {{grace_period: 30s}}\n{}",
        upstream_yaml(&mock, "")
    ));
    let url = gw.url("/v1/chat/completions");
    let reader = std::thread::spawn(move || {
        let mut r = client()
            .post(url)
            .json(&json!({"model": "m", "stream": true}))
            .send()
            .unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).map(|_| s)
    });
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    gw.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // no new connections are accepted while draining
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err()
            || client().get(gw.url("/health")).send().is_err()
    );
    let exited = gw
        .wait_exit(Duration::from_secs(20))
        .expect("exits well before the 30s grace period");
    let body = reader.join().unwrap().expect("stream completed");
    assert_eq!(
        body.matches("data:").count(),
        8,
        "the in-flight stream finished: {body}"
    );
    let total = sent.elapsed();
    assert!(
        total < Duration::from_secs(10),
        "exit followed the last request, took {total:?} ({exited:?})"
    );
}

#[test]
fn sigint_exits_at_once() {
    let mut gw = Gw::start("upstreams: [{name: demo, kind: demo}]\n");
    gw.signal(libc::SIGINT);
    assert!(gw.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn demo_upstream_serves_the_default_config() {
    let gw = Gw::default_config();
    // the start banner says where to point a client, once
    let logs = gw.logs();
    let hint = format!("point an OpenAI client at http://127.0.0.1:{}/v1", gw.port);
    assert_eq!(logs.matches(&hint).count(), 1, "{logs}");
    assert!(logs.contains(&format!(
        "admin API, /metrics and /health at http://127.0.0.1:{}/",
        gw.admin_port
    )));
    assert!(
        logs.contains("upstreams:") || logs.contains("demo"),
        "{logs}"
    );
    let r: Value = gw
        .post("/v1/chat/completions", &chat("gpt-4o-mini"))
        .json()
        .unwrap();
    assert_eq!(r["object"], "chat.completion");
    assert!(r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("You said: hello"));
    let e: Value = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        )
        .json()
        .unwrap();
    assert_eq!(e["data"].as_array().unwrap().len(), 2);
    let c: Value = gw
        .post(
            "/v1/completions",
            &json!({"model": "demo-chat", "prompt": "Say"}),
        )
        .json()
        .unwrap();
    assert_eq!(c["object"], "text_completion");
    let mut s = String::new();
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "yo"}]}))
        .send()
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.trim_end().ends_with("data: [DONE]"));
}
