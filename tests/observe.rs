//! What an operator sees, through the real binary: `/metrics` after scripted
//! traffic (series by client/model/upstream, time to first token, retries and
//! failovers by reason, refusals by limit, key states), `/admin/status` and
//! `/admin/series`, the CLI's tables and `--json`, `switchyard probe` against
//! good, rate-limited and rejected keys, and the dashboard's files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;

/// Key 1 answers 429 (retry in 120 s); the others work, streams included.
fn script(req: &Request) -> Reply {
    if key_no(req) == 1 {
        return rate_limited(&[("retry-after", "120")], "");
    }
    stream_or_ok(req, 3)
}

fn config(mock: &MockUpstream, dead: u16) -> String {
    format!(
        "retry: {{attempts: 3, backoff: 10ms}}\nclients:\n  - {{name: alice, key: alice-key-0123456789, rpm: 3}}\n  - {{name: bob, key: bob-key-0123456789}}\nupstreams:\n  - {{name: dead, base_url: 'http://127.0.0.1:{dead}/v1', keys: [sk-dead-dddddddddddddddd], models: [gpt-4o-mini]}}\n{}",
        up_yaml(mock, "mock", 2, "    models: ['*']\n")
    )
}

fn post_as(gw: &Gw, who: &str, body: &Value) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(who)
        .json(body)
        .send()
        .unwrap()
}

#[test]
fn metrics_name_clients_models_retries_limits_and_key_states() {
    let mock = MockUpstream::start(script);
    let dead = free_port();
    let gw = Gw::start(&config(&mock, dead));
    let alice = "alice-key-0123456789";
    // 1: key 1 is rate limited, key 2 answers (a retry, same upstream)
    assert_eq!(post_as(&gw, alice, &chat("gpt-4o")).status(), 200);
    // 2: a stream (time to first token)
    let streamed =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post_as(&gw, alice, &streamed);
    assert!(r.text().unwrap().contains("[DONE]"));
    // 3: a model outside config and catalog is labelled `other`
    assert_eq!(
        post_as(&gw, alice, &chat("zz-private-finetune-77")).status(),
        200
    );
    // 4: the dead upstream first, then a failover to mock
    assert_eq!(
        post_as(&gw, "bob-key-0123456789", &chat("gpt-4o-mini")).status(),
        200
    );
    // 5: alice's rpm of 4 is spent
    let r = post_as(&gw, alice, &chat("gpt-4o"));
    assert_eq!(r.status(), 429);

    let done = |t: &str| series(t, "switchyard_requests_total", &[("route", "chat")]) >= 5.0;
    let m = gw.metrics_when(done);
    let has = |name: &str, labels: &[(&str, &str)]| series(&m, name, labels);
    assert_eq!(
        has(
            "switchyard_requests_total",
            &[
                ("client", "alice"),
                ("model", "gpt-4o"),
                ("upstream", "mock"),
                ("status", "2xx")
            ]
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_requests_total",
            &[("client", "alice"), ("model", "other"), ("status", "2xx")]
        ),
        1.0,
        "{m}"
    );
    assert!(
        !m.contains("zz-private-finetune-77"),
        "unbounded model label: {m}"
    );
    assert_eq!(
        has(
            "switchyard_requests_total",
            &[("client", "alice"), ("status", "4xx")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_request_duration_seconds_count",
            &[("client", "bob"), ("model", "gpt-4o-mini")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_time_to_first_token_seconds_count",
            &[("model", "gpt-4o"), ("upstream", "mock")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_retries_total",
            &[("upstream", "mock"), ("reason", "rate_limited")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has("switchyard_failovers_total", &[("upstream", "mock")]),
        0.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_failovers_total",
            &[("upstream", "dead"), ("reason", "upstream_unreachable")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has("switchyard_rate_limited_total", &[("limit", "clients.rpm")]),
        1.0,
        "{m}"
    );
    // key 1 cools for the 120 s the 429 named; key 2 is active
    let k1 = [("upstream", "mock"), ("key", "mock#1")];
    assert_eq!(
        has(
            "switchyard_key_state",
            &[k1[0], k1[1], ("state", "cooling")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        has("switchyard_key_state", &[k1[0], k1[1], ("state", "active")]),
        0.0,
        "{m}"
    );
    let secs = has("switchyard_key_recovery_seconds", &k1);
    assert!(secs > 100.0 && secs <= 120.0, "{secs}: {m}");
    assert_eq!(
        has(
            "switchyard_key_state",
            &[("key", "mock#2"), ("state", "active")]
        ),
        1.0,
        "{m}"
    );
    // usage the mock reported (5 + 3 per JSON answer), by client and model
    assert_eq!(
        has(
            "switchyard_tokens_total",
            &[
                ("client", "alice"),
                ("model", "gpt-4o"),
                ("kind", "completion")
            ]
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        has(
            "switchyard_tokens_total",
            &[("client", "bob"), ("kind", "prompt")]
        ),
        5.0,
        "{m}"
    );
    for must in [
        "switchyard_queue_waiting",
        "switchyard_queue_wait_seconds",
        "switchyard_in_flight_requests",
        "process_resident_memory_bytes",
    ] {
        assert!(m.contains(must), "{must}: {m}");
    }
    // every family has help text; no secret anywhere
    for line in m.lines().filter(|l| l.starts_with("# TYPE switchyard_")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(m.contains(&format!("# HELP {name} ")), "{name} has no help");
    }
    for secret in [
        key(1),
        key(2),
        alice.to_string(),
        "sk-dead-dddd".to_string(),
    ] {
        assert!(!m.contains(&secret), "{secret} in metrics");
    }

    // the rotation and the cooldown are INFO lines an operator can grep
    let logs = gw.logs();
    assert!(
        logs.lines().any(|l| l.contains(" INFO ")
            && l.contains("key mock#1 (…aaaa) cooling until")
            && l.contains("next: mock#2")),
        "{logs}"
    );

    // the status the dashboard and `switchyard status` read
    let s = gw.admin_json("/admin/status");
    assert_eq!(s["keys"]["cooling"], 1, "{s}");
    assert_eq!(s["keys"]["total"], 3, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_seconds"].is_u64() && s["pid"].is_u64(), "{s}");
    let dead_up = s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "dead")
        .unwrap();
    assert_eq!(dead_up["keys"]["total"], 1, "{s}");
    // the last seconds: this test's requests are in them
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let series_now = gw.admin_json("/admin/series?seconds=30");
    let secs = series_now["seconds"].as_array().unwrap();
    assert_eq!(secs.len(), 30);
    let total: u64 = secs.iter().map(|x| x["requests"].as_u64().unwrap()).sum();
    assert!(total >= 5, "{series_now}");
    assert!(
        secs.iter().any(|x| x["p99"].as_f64().is_some()),
        "{series_now}"
    );
    let bad = client()
        .get(gw.admin("/admin/series?seconds=junk"))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[test]
fn cli_prints_status_usage_and_requests_as_tables_and_json() {
    let mock = MockUpstream::start(script);
    let gw = Gw::start(&config(&mock, free_port()));
    for who in ["alice-key-0123456789", "bob-key-0123456789"] {
        assert_eq!(post_as(&gw, who, &chat("gpt-4o")).status(), 200);
    }
    let (ok, out, err) = cli(&gw, &["status"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("switchyard {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{}", gw.port)),
        "{out}"
    );
    assert!(
        out.contains("3 total: 2 active, 1 cooling, 0 parked"),
        "{out}"
    );
    let header = out.lines().find(|l| l.starts_with("UPSTREAM")).unwrap();
    let mock_row = out.lines().find(|l| l.starts_with("mock ")).unwrap();
    // aligned: each column starts where its header does
    assert_eq!(header.find("HEALTH"), mock_row.find("up"), "{out}");
    assert!(!out.contains('\x1b'), "no colours off a terminal");

    let (ok, out, _) = cli(&gw, &["usage", "--by", "client", "--since", "1h"]);
    assert!(ok);
    let alice = out.lines().find(|l| l.starts_with("alice")).unwrap();
    let cells: Vec<&str> = alice.split_whitespace().collect();
    assert_eq!(&cells[..4], ["alice", "1", "5", "3"], "{out}");
    let (ok, out, _) = cli(&gw, &["usage", "--by", "client", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["by"], "client");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "{v}");

    let (ok, out, _) = cli(&gw, &["requests", "--limit", "1"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().contains("bob"), "{out}");
    let (ok, out, _) = cli(&gw, &["requests", "--client", "alice", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["requests"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["requests"][0]["attempts"], 2,
        "the 429 on key 1, then key 2"
    );

    let (ok, out, _) = cli(&gw, &["keys", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cooling"], 1, "{v}");
    // a bad argument is the gateway's clear 400, and a failure exit
    let (ok, _, err) = cli(&gw, &["usage", "--by", "colour"]);
    assert!(!ok);
    assert!(
        err.contains("400") && err.contains("client, model, key, upstream or day"),
        "{err}"
    );
    // nobody listening: says so
    let out = Command::new(bin())
        .args(["status", "--admin", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the gateway running?"));
}

#[test]
fn probe_reports_working_rate_limited_and_rejected_keys() {
    let mock = MockUpstream::start(|req: &Request| match key_no(req) {
        2 => rate_limited(&[("retry-after", "300")], ""),
        3 => Reply::json(
            401,
            &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        ),
        _ => ok_script(req),
    });
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(
            &mock,
            "up",
            3,
            "    models: [gpt-4o, text-embedding-3-small]\n"
        )
    ));
    let (ok, out, err) = cli(&gw, &["probe", "--json"]);
    assert!(!ok, "not every key works: a failure exit");
    let v: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v.len(), 3, "{v:?}");
    let by_key = |n: usize| {
        v.iter()
            .find(|r| r["key"].as_str().unwrap().starts_with(&format!("up#{n} ")))
            .unwrap()
    };
    assert_eq!(by_key(1)["result"], "ok");
    assert_eq!(by_key(1)["model"], "gpt-4o");
    assert!(by_key(1)["latency_ms"].as_f64().is_some());
    assert_eq!(by_key(2)["result"], "rate_limited");
    let until = by_key(2)["until"].as_str().unwrap();
    let until = humantime::parse_rfc3339(until).unwrap();
    let secs = until
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((290..=300).contains(&secs), "{secs}");
    assert_eq!(by_key(3)["result"], "rejected");
    assert!(by_key(3)["message"]
        .as_str()
        .unwrap()
        .contains("Incorrect API key"));
    let sent = mock.requests();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].json()["max_tokens"], 1, "a minimal request");
    // the gateway now knows: key 2 cools, key 3 is parked
    let keys = admin_keys(&gw);
    assert_eq!(keys[1]["state"], "cooling");
    assert_eq!(keys[2]["state"], "parked");

    // again, as a table: keys already known bad are not called again
    mock.clear();
    let (ok, out, _) = cli(&gw, &["probe"]);
    assert!(!ok);
    assert_eq!(mock.requests().len(), 1, "only the working key is called");
    let row = |n: usize| {
        out.lines()
            .find(|l| l.contains(&format!("up#{n} ")))
            .unwrap()
            .to_string()
    };
    assert!(row(1).contains(" ok "), "{out}");
    assert!(
        row(2).contains("rate_limited") && row(2).contains("cooling (not called)"),
        "{out}"
    );
    assert!(row(3).contains("parked"), "{out}");
    assert!(out.contains("1 of 3 work"), "{out}");

    // --all: every model once (embeddings probed on their own endpoint)
    mock.clear();
    let (_, out, _) = cli(&gw, &["probe", "--all", "--json"]);
    let v: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|r| r["result"] == "ok"), "{v:?}");
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/embeddings"]);
    // an unknown upstream or model: a clear failure, nothing called
    let (ok, _, err) = cli(&gw, &["probe", "--upstream", "nope"]);
    assert!(!ok && err.contains("no upstream"), "{err}");
    let (ok, _, err) = cli(&gw, &["probe", "--model", "not-served"]);
    assert!(!ok && err.contains("nothing to probe"), "{err}");
}

#[test]
fn dashboard_is_served_embedded_and_asks_for_the_token() {
    let gw = Gw::with_admin_token(
        "dash-admin-token-123",
        "upstreams: [{name: demo, kind: demo}]\n",
    );
    let aport = gw.admin_port;
    let page = client().get(gw.admin("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().unwrap();
    assert!(html.contains(r#"data-auth="token""#));
    assert!(!html.contains("dash-admin-token-123"));
    for asset in [
        "/assets/app.js",
        "/assets/uplot.min.js",
        "/assets/uplot.min.css",
    ] {
        let r = client().get(gw.admin(asset)).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.text().unwrap().len() > 1000, "{asset}");
    }
    assert_eq!(
        client()
            .get(gw.admin("/assets/nope.js"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(gw.admin("/admin/status"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let ok = client()
        .get(gw.admin("/admin/status"))
        .bearer_auth("dash-admin-token-123")
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    // the playground's calls from the dashboard's origin pass CORS; others do not
    let pre = |origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .unwrap()
    };
    let r = pre(&format!("http://127.0.0.1:{aport}"));
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        format!("http://127.0.0.1:{aport}").as_str()
    );
    assert_eq!(pre("http://evil.example").status(), 405);
}

#[test]
fn key_rotation_cooldown_and_recovery_are_info_lines() {
    let first = std::sync::atomic::AtomicBool::new(true);
    let mock = MockUpstream::start(move |req: &Request| {
        if key_no(req) == 1 && first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return rate_limited(&[("retry-after", "1")], "");
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&mock, "up", 2, "")));
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1300));
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
            200
        );
    }
    let logs = gw.logs();
    let info = |needle: &str| {
        logs.lines()
            .any(|l| l.contains(" INFO ") && l.contains(needle))
    };
    assert!(info("key up#1 (…aaaa) cooling until"), "{logs}");
    assert!(info("; next: up#2 (…aaaa)"), "{logs}");
    assert!(
        info("key up#1 (…aaaa) is back in rotation: its cooldown ended at"),
        "{logs}"
    );
    assert_eq!(
        logs.matches("is back in rotation").count(),
        1,
        "said once: {logs}"
    );
}
