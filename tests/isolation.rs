//! One client cannot hurt another (round 2), through the real binary: a
//! path spelled another way is routed and checked like the plain one; a
//! 401/403 parks a key only when the key alone is refused; a same-host
//! reverse proxy does not make the internet local; the admin listener and
//! the dashboard's CORS rule refuse other host names; secrets stay out of
//! logs and answers; account headers stay with the gateway; every answer
//! carries a request id; deep bodies, client-left streams and the small
//! shapes come out right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::{admin_keys, key_no, up_yaml};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

const CLIENT: &str = "client-isolation-aaaaaaaaaaaa1111";
const OPEN: &str = "client-isolation-open-bbbbbbbb2222";
const UP_KEY: &str = "sk-isolation-upstream-cccccccc3333";

/// Answers with what it saw: the path, the model and the headers.
fn echo(req: &Request) -> Reply {
    let headers: serde_json::Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), json!(v)))
        .collect();
    Reply::json(
        200,
        &json!({"path": req.path, "model": req.json()["model"], "headers": headers,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}),
    )
}

fn one_upstream(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "upstreams:\n  - name: mock\n    base_url: {}/v1\n    keys: ['{UP_KEY}']\n{extra}",
        mock.url()
    )
}

fn send(gw: &Gw, method: &str, path: &str, headers: &str, body: &str) -> String {
    raw(
        gw.port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
}

fn status(answer: &str) -> u16 {
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn a_path_spelled_another_way_is_routed_and_checked_like_the_plain_one() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: limited, key: {CLIENT}, models: ['gpt-4o*']}}\n  - {{name: files, key: {CLIENT}-files, models: ['gpt-4o*'], endpoints: ['/v1/files*']}}\n  - {{name: open, key: {OPEN}}}\n{}",
        one_upstream(&mock, "")
    ));
    let auth = format!("Authorization: Bearer {CLIENT}\r\n");
    let o1 = r#"{"model":"o1-pro","messages":[{"role":"user","content":"hi"}]}"#;
    for path in [
        "/v1/chat/%63ompletions",
        "/v1/chat/completion%73",
        "/v1/Chat/Completions",
        "/v1/chat/completions/",
        "/v1/%63hat/%43ompletions",
    ] {
        // no content type, or one that is not JSON: the body is still read
        for ct in ["", "Content-Type: text/plain\r\n"] {
            let answer = send(&gw, "POST", path, &format!("{auth}{ct}"), o1);
            assert_eq!(status(&answer), 403, "{path} {ct}: {answer}");
            assert!(answer.contains("model_not_allowed"), "{answer}");
        }
    }
    assert!(
        mock.requests().is_empty(),
        "o1-pro never reached the upstream"
    );
    let gpt = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let answer = send(&gw, "POST", "/v1/chat/%63ompletions", &auth, gpt);
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
    let log = gw.logs();
    assert!(
        log.contains("/v1/chat/completions model=gpt-4o-mini"),
        "{log}"
    );

    // paths that name no model: only through the client's `endpoints`
    mock.clear();
    let batch = r#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}"#;
    let ct = "Content-Type: application/json\r\n";
    for (method, path, body) in [
        ("GET", "/v1/files", ""),
        ("POST", "/v1/batches", batch),
        ("GET", "/v1/%66iles/file-1/content", ""),
    ] {
        let answer = send(&gw, method, path, &format!("{auth}{ct}"), body);
        assert_eq!(status(&answer), 403, "{method} {path}: {answer}");
        assert!(answer.contains("endpoint_not_allowed"), "{answer}");
    }
    assert!(mock.requests().is_empty());
    let files = format!("Authorization: Bearer {CLIENT}-files\r\n");
    assert_eq!(status(&send(&gw, "GET", "/v1/files", &files, "")), 200);
    let answer = send(&gw, "POST", "/v1/batches", &format!("{files}{ct}"), batch);
    assert_eq!(status(&answer), 403, "{answer}");
    let open = format!("Authorization: Bearer {OPEN}\r\n{ct}");
    assert_eq!(status(&send(&gw, "POST", "/v1/batches", &open, batch)), 200);
    let paths: Vec<_> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/files", "/v1/batches"]);
}

/// Key `n` is refused for everything; the others refuse only the model
/// `secret-model` (403) and any call carrying a client organization (401).
fn picky(refused: &'static [usize]) -> impl Fn(&Request) -> Reply + Send + Sync {
    move |req: &Request| {
        if refused.contains(&key_no(req)) {
            return Reply::json(
                401,
                &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
            );
        }
        if req.method == "GET" && req.path.ends_with("/models") {
            return Reply::json(200, &json!({"object": "list", "data": []}));
        }
        if req
            .header("openai-organization")
            .is_some_and(|o| o != "org-gateway")
        {
            return Reply::json(
                401,
                &json!({"error": {"message": "mismatched organization", "code": "mismatched_organization"}}),
            );
        }
        if req.json()["model"] == "secret-model" {
            return Reply::json(
                403,
                &json!({"error": {"message": "You are not allowed to use this model", "code": "model_not_permitted"}}),
            );
        }
        ok_script(req)
    }
}

#[test]
fn a_request_the_provider_refuses_parks_no_key() {
    let mock = MockUpstream::start(picky(&[]));
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    organization: org-gateway\n")
    ));
    let r = gw.post("/v1/chat/completions", &chat("secret-model"));
    assert_eq!(r.status(), 403, "the upstream's answer goes back");
    assert!(r.text().unwrap().contains("model_not_permitted"));
    // an SDK with OPENAI_ORG_ID set sends its own organization: dropped
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("OpenAI-Organization", "org-client")
        .header("OpenAI-Project", "proj_client")
        .json(&chat("gpt-4o"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let keys = admin_keys(&gw);
    assert!(
        keys.iter().all(|k| k["state"] == "active"),
        "no key parked: {keys:?}"
    );
    let seen = mock.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.header("openai-organization"), Some("org-gateway"));
    assert_eq!(last.header("openai-project"), None);
    let checks = seen.iter().filter(|r| r.method == "GET").count();
    assert_eq!(checks, 1, "one GET /models checked the key: {seen:?}");
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        2,
        "the refused request was not tried on the other keys"
    );
    let log = gw.logs();
    assert!(log.contains("the key works: nothing parked"), "{log}");
}

#[test]
fn a_refused_key_is_parked_but_one_request_parks_one_key_at_most() {
    let mock = MockUpstream::start(picky(&[1]));
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    key_strategy: sticky\n")
    ));
    // key 1 is refused alone (GET /models too): parked, the call moves on
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let states: Vec<_> = admin_keys(&gw).iter().map(|k| k["state"].clone()).collect();
    assert_eq!(states, ["parked", "active", "active"]);

    // every key refused: the first is parked, the answer goes back
    let all = MockUpstream::start(picky(&[1, 2, 3]));
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&all, "oa", 3, "")));
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 401);
    let parked = admin_keys(&gw)
        .iter()
        .filter(|k| k["state"] == "parked")
        .count();
    assert_eq!(parked, 1, "one request parks one key at most");
}

#[test]
fn a_same_host_proxy_does_not_make_the_internet_local() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::with_admin_token(
        "admin-tok-isolation",
        &format!("metrics: {{path: /metrics}}\n{}", one_upstream(&mock, "")),
    );
    let body = r#"{"model":"m","messages":[]}"#;
    let ct = "Content-Type: application/json\r\n";
    assert_eq!(
        status(&send(&gw, "POST", "/v1/chat/completions", ct, body)),
        200
    );
    for forwarded in [
        "X-Forwarded-For: 203.0.113.9\r\n",
        "X-Forwarded-For: 127.0.0.1\r\n",
        "Forwarded: for=127.0.0.1\r\n",
        "X-Real-IP: 127.0.0.1\r\n",
    ] {
        let answer = send(
            &gw,
            "POST",
            "/v1/chat/completions",
            &format!("{ct}{forwarded}"),
            body,
        );
        assert_eq!(status(&answer), 403, "{forwarded}: {answer}");
        assert!(answer.contains("loopback"), "{answer}");
    }
    // the API port's admin paths need the admin token once one is set
    for (method, path) in [
        ("GET", "/metrics"),
        ("POST", "/v1/tokens/rotate"),
        ("GET", "/v1/tokens/stats"),
    ] {
        assert_eq!(status(&send(&gw, method, path, "", "")), 403, "{path}");
        let token = "Authorization: Bearer admin-tok-isolation\r\n";
        assert_eq!(status(&send(&gw, method, path, token, "")), 200, "{path}");
    }
    assert_eq!(mock.requests().len(), 1, "no forwarded call reached it");

    // behind a trusted proxy: its word names the client
    let gw = Gw::start(&format!(
        "server: {{trusted_proxies: ['127.0.0.1'], allow_ips: ['10.0.0.0/8', '127.0.0.1'], deny_ips: ['10.6.0.0/16']}}\n{}",
        one_upstream(&mock, "")
    ));
    let via = |xff: &str| {
        send(
            &gw,
            "POST",
            "/v1/chat/completions",
            &format!("{ct}X-Forwarded-For: {xff}\r\n"),
            body,
        )
    };
    assert_eq!(
        status(&via("127.0.0.1")),
        200,
        "the proxy's own loopback call"
    );
    let far = via("10.1.2.3");
    assert_eq!(
        status(&far),
        403,
        "a proxied caller is never loopback: {far}"
    );
    assert!(far.contains("loopback"));
    for refused in ["203.0.113.9", "10.6.0.1", "unknown"] {
        let answer = via(refused);
        assert_eq!(status(&answer), 403, "{refused}: {answer}");
        assert!(
            answer.contains("address_not_allowed"),
            "{refused}: {answer}"
        );
    }
    let log = gw.logs();
    assert!(log.contains("ip=10.1.2.3 status=403"), "{log}");
}

#[test]
fn client_addresses_limit_a_client_behind_a_trusted_proxy() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&format!(
        "server: {{trusted_proxies: ['127.0.0.0/8']}}\nclients:\n  - {{name: office, key: {CLIENT}, allow_ips: ['198.51.100.0/24']}}\n{}",
        one_upstream(&mock, "")
    ));
    let headers = |xff: &str| {
        format!("Content-Type: application/json\r\nAuthorization: Bearer {CLIENT}\r\nX-Forwarded-For: {xff}\r\n")
    };
    let body = r#"{"model":"m","messages":[]}"#;
    let inside = send(
        &gw,
        "POST",
        "/v1/chat/completions",
        &headers("198.51.100.7, 127.0.0.2"),
        body,
    );
    assert_eq!(status(&inside), 200, "{inside}");
    let outside = send(
        &gw,
        "POST",
        "/v1/chat/completions",
        &headers("192.0.2.1"),
        body,
    );
    assert_eq!(status(&outside), 403, "{outside}");
    assert!(outside.contains("address_not_allowed"));
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        None,
        "the upstream does not learn it"
    );
}

#[test]
fn the_admin_listener_and_the_dashboard_answer_their_own_names_only() {
    let mock = MockUpstream::start(echo);
    let gw = Gw::start(&one_upstream(&mock, ""));
    let admin = |host: &str| {
        raw(
            gw.admin_port,
            format!("GET /admin/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
    };
    let rebinding = admin(&format!("evil.example:{}", gw.admin_port));
    assert_eq!(status(&rebinding), 421, "{rebinding}");
    for ok in [
        format!("127.0.0.1:{}", gw.admin_port),
        format!("localhost:{}", gw.admin_port),
    ] {
        assert_eq!(status(&admin(&ok)), 200, "{ok}");
    }
    // the playground's CORS rule: the dashboard's origin on a loopback name only
    let api = |host: &str, origin: &str| {
        raw(
            gw.port,
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{{\"model\":\"m\",\"messages\":[]}}"
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
    };
    let evil = api(
        &format!("evil.example:{}", gw.port),
        &format!("http://evil.example:{}", gw.admin_port),
    );
    assert!(
        !evil
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{evil}"
    );
    let own = api(
        &format!("127.0.0.1:{}", gw.port),
        &format!("http://127.0.0.1:{}", gw.admin_port),
    );
    assert!(
        own.to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{own}"
    );
}

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
