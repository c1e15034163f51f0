//! The key pool through the real binary: reading rate-limit signals, cooldown
//! scopes, parking, failover, fallbacks and waiting vs 429.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn every_rate_limit_signal_sets_the_cooldown() {
    let http_date =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(700));
    // (model, headers, body, expected cooldown seconds)
    let cases: Vec<SignalCase> = vec![
        ("ra-secs", vec![("retry-after", "300".into())], "", 300),
        ("ra-frac", vec![("retry-after", "90.5".into())], "", 90),
        ("ra-date", vec![("retry-after", http_date)], "", 700),
        ("ra-ms", vec![("retry-after-ms", "400000".into())], "", 400),
        (
            "ms-ms",
            vec![("x-ms-retry-after-ms", "500000".into())],
            "",
            500,
        ),
        (
            "reset",
            vec![
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "6m0s".into()),
            ],
            "",
            360,
        ),
        (
            "reset-long",
            vec![
                ("x-ratelimit-remaining-tokens", "0".into()),
                ("x-ratelimit-reset-tokens", "23h18m29.1s".into()),
            ],
            "",
            83909,
        ),
        (
            "hint",
            vec![],
            r#"{"error":{"message":"Rate limit reached. Please try again in 20s.","code":"rate_limit_exceeded"}}"#,
            20,
        ),
        (
            "gh-remaining",
            vec![
                ("x-ratelimit-type", "UserByModelByDay".into()),
                ("x-ratelimit-timeremaining", "23141".into()),
            ],
            "",
            23141,
        ),
        (
            "latest",
            vec![
                ("retry-after", "10".into()),
                ("retry-after-ms", "30000".into()),
                ("x-ratelimit-timeremaining", "20".into()),
            ],
            "",
            30,
        ),
    ];
    let table: MockTable = Arc::new(
        cases
            .iter()
            .map(|(m, h, b, _)| {
                (
                    m.to_string(),
                    h.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                    b.to_string(),
                )
            })
            .collect(),
    );
    let t2 = table.clone();
    let mock = MockUpstream::start(move |req: &Request| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        if key_no(req) == 1 {
            if let Some((_, h, b)) = t2.iter().find(|(m, _, _)| *m == model) {
                let hs: Vec<(&str, &str)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                return rate_limited(&hs, b);
            }
        }
        ok_script(req)
    });
    let mut yaml = String::from("upstreams:\n");
    for (model, _, _, _) in &cases {
        yaml += &up_yaml(
            &mock,
            &format!("u-{model}"),
            2,
            &format!("    models: ['{model}']\n    key_strategy: sticky\n"),
        );
    }
    let gw = Gw::start(&yaml);
    for (model, _, _, secs) in &cases {
        let before = now_ms();
        let r = gw.post("/v1/chat/completions", &chat(model));
        assert_eq!(r.status(), 200, "{model}: the next key answers");
        let k = admin_keys(&gw)
            .into_iter()
            .find(|k| k["short_id"] == format!("u-{model}#1"))
            .unwrap();
        assert_eq!(k["state"], "cooling", "{model}: {k}");
        let until = k["until_ms"].as_u64().unwrap();
        let expect = before + secs * 1000;
        assert!(
            until + 2_000 >= expect && until <= expect + 3_000,
            "{model}: until {until} vs expected {expect}: {k}"
        );
        assert_eq!(k["rate_limited"], 1);
    }
    let seen = mock.requests();
    // each model: key 1 (429) then key 2, and nothing else
    for (model, _, _, _) in &cases {
        let keys: Vec<usize> = seen
            .iter()
            .filter(|r| r.json()["model"] == *model)
            .map(key_no)
            .collect();
        assert_eq!(keys, vec![1, 2], "{model}");
    }
    let logs = gw.logs();
    assert!(logs.contains("key u-gh-remaining#1 (…aaaa) cooling until") && logs.contains("for gh-remaining (429 UserByModelByDay, x-ratelimit-timeremaining 23141); next: u-gh-remaining#2 (…aaaa)"), "{logs}");
    assert!(!logs.contains(&key(1)));
}

#[test]
fn per_model_limits_cool_only_that_model_and_429_names_the_keys() {
    let mock = MockUpstream::start(|req: &Request| {
        if key_no(req) == 1 && req.json()["model"] == "gpt-4o" {
            return rate_limited(
                &[
                    ("x-ratelimit-type", "UserByModelByDay"),
                    ("retry-after", "23141"),
                ],
                "",
            );
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "limits: {{queue_timeout: 1s}}\nupstreams:\n{}",
        up_yaml(&mock, "gh", 2, "    key_strategy: sticky\n")
    ));
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    let k1 = admin_keys(&gw)[0].clone();
    assert_eq!(
        (k1["state"].as_str(), k1["scope_model"].as_str()),
        (Some("cooling"), Some("gpt-4o"))
    );
    // take key 2 away: key 1 still serves other models, but not gpt-4o
    assert_eq!(
        client()
            .post(gw.admin("/admin/keys/gh%232/disable"))
            .send()
            .unwrap()
            .status(),
        200
    );
    mock.clear();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o-mini"))
            .status(),
        200
    );
    assert_eq!(
        mock.requests().iter().map(key_no).collect::<Vec<_>>(),
        vec![1]
    );
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o"));
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((23_130..=23_142).contains(&retry), "Retry-After {retry}");
    let v: Value = r.json().unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gh#1 until") && msg.contains("gpt-4o") && msg.contains("gh#2 disabled"),
        "{msg}"
    );
    assert_eq!(
        mock.requests().len(),
        1,
        "no request burned on a known-exhausted key"
    );
}

#[test]
fn remaining_zero_skips_the_key_before_it_fails() {
    let mock = MockUpstream::start(|req: &Request| {
        let r = ok_script(req);
        if key_no(req) == 1 {
            return r
                .with_header("x-ratelimit-remaining-requests", "0")
                .with_header("x-ratelimit-reset-requests", "1m0s");
        }
        r
    });
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&mock, "oa", 2, "")));
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
            200
        );
    }
    assert_eq!(
        mock.requests().iter().map(key_no).collect::<Vec<_>>(),
        vec![1, 2, 2, 2, 2]
    );
}

#[test]
fn quota_and_auth_failures_park_keys_until_enabled() {
    let healed = Arc::new(AtomicUsize::new(0));
    let h2 = healed.clone();
    let mock = MockUpstream::start(move |req: &Request| match key_no(req) {
        1 if h2.load(Ordering::SeqCst) == 0 => Reply::json(
            429,
            &json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
        ),
        2 => Reply::json(
            401,
            &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        ),
        _ => ok_script(req),
    });
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    key_strategy: sticky\n")
    ));
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let keys = admin_keys(&gw);
    assert_eq!(
        (keys[0]["state"].as_str(), keys[0]["reason"].as_str()),
        (Some("parked"), Some("429 insufficient_quota"))
    );
    assert_eq!(keys[1]["state"], "parked");
    assert!(keys[1]["reason"].as_str().unwrap().starts_with("401"));
    assert_eq!(keys[2]["state"], "active");
    for _ in 0..3 {
        gw.post("/v1/chat/completions", &chat("m"));
    }
    let seen = mock.requests();
    assert_eq!(
        seen.iter()
            .filter(|r| r.method == "POST")
            .map(key_no)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 3, 3, 3],
        "parked keys get no traffic"
    );
    let checks: Vec<_> = seen
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| (r.path.ends_with("/models"), key_no(r)))
        .collect();
    assert_eq!(
        checks,
        vec![(true, 2)],
        "the 401 was confirmed with the key alone before it was parked"
    );
    // an operator re-enables key 1 with the CLI
    healed.store(1, Ordering::SeqCst);
    let out = std::process::Command::new(bin())
        .args([
            "keys",
            "enable",
            "oa#1",
            "--admin",
            &format!("127.0.0.1:{}", gw.admin_port),
            "-c",
            "/nonexistent.yaml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("oa#1"));
    client()
        .post(gw.admin("/admin/keys/oa:3/disable"))
        .send()
        .unwrap();
    mock.clear();
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    assert_eq!(
        mock.requests().iter().map(key_no).collect::<Vec<_>>(),
        vec![1]
    );
    // the table the CLI prints
    let out = std::process::Command::new(bin())
        .args(["keys", "--admin", &format!("127.0.0.1:{}", gw.admin_port)])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("oa#2 (…aaaa)")
            && table.contains("parked")
            && table.contains("disabled by operator"),
        "{table}"
    );
    assert!(!table.contains(&key(1)));
}

#[test]
fn server_errors_and_resets_fail_over_in_order_with_the_whole_body() {
    let mock = MockUpstream::start(|req: &Request| match key_no(req) {
        1 => Reply::json(500, &json!({"error": {"message": "boom"}})),
        2 => {
            let mut r = ok_script(req);
            r.fault = Fault::ResetBeforeHeaders;
            r
        }
        _ => Reply::json(
            200,
            &json!({"len": req.body.len(), "tail": String::from_utf8_lossy(&req.body[req.body.len() - 20..])}),
        ),
    });
    let gw = Gw::start(&format!(
        "retry: {{attempts: 3, backoff: 20ms}}\nupstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    key_strategy: sticky\n")
    ));
    let filler = "z".repeat(200_000);
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": filler}], "end": "THE-END"});
    let text = body.to_string();
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(text.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        v["len"],
        text.len(),
        "the 200 KB body arrived whole on the third key"
    );
    let seen = mock.requests();
    assert_eq!(seen.iter().map(key_no).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(seen.iter().all(|r| r.body.len() == text.len()));
    // with retries exhausted the client gets the upstream's own error
    let gw2 = Gw::start(&format!(
        "retry: {{attempts: 1}}\nupstreams:\n{}",
        up_yaml(&mock, "oa", 3, "    key_strategy: sticky\n")
    ));
    let r = gw2.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().unwrap()["error"]["message"], "boom");
}

#[test]
fn fallback_models_take_over() {
    let mock = MockUpstream::start(|req: &Request| {
        let v = req.json();
        match v["model"].as_str().unwrap() {
            "big" if v["messages"][0]["content"] == "long" => Reply::json(
                400,
                &json!({"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}}),
            ),
            "big" => rate_limited(
                &[
                    ("retry-after", "600"),
                    ("x-ratelimit-type", "UserByModelByMinute"),
                ],
                "",
            ),
            "strict" => Reply::json(
                400,
                &json!({"error": {"message": "content policy", "code": "content_filter"}}),
            ),
            _ => ok_script(req),
        }
    });
    let gw = Gw::start(&format!(
        "models:\n  fallbacks: {{big: [small], strict: [small]}}\nupstreams:\n{}",
        up_yaml(&mock, "oa", 2, "")
    ));
    let v: Value = gw
        .post("/v1/chat/completions", &chat("big"))
        .json()
        .unwrap();
    assert_eq!(
        v["model"], "small",
        "every key cooling for big: the fallback answers"
    );
    mock.clear();
    let r = gw.post(
        "/v1/chat/completions",
        &json!({"model": "big", "messages": [{"role": "user", "content": "long"}]}),
    );
    let v: Value = r.json().unwrap();
    assert_eq!(v["model"], "small");
    // big is cooling on both keys by now; only the fallback was asked
    assert!(mock.requests().iter().all(|r| r.json()["model"] == "small"));
    // other 400s are returned as they are, never retried
    mock.clear();
    let r = gw.post("/v1/chat/completions", &chat("strict"));
    assert_eq!(r.status(), 400);
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn context_length_on_first_try_goes_to_the_fallback() {
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["model"] == "big" {
            return Reply::json(
                400,
                &json!({"error": {"message": "maximum context length", "code": "context_length_exceeded"}}),
            );
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "models: {{fallbacks: {{big: [bigger]}}}}\nupstreams:\n{}",
        up_yaml(&mock, "oa", 2, "")
    ));
    let v: Value = gw
        .post("/v1/chat/completions", &chat("big"))
        .json()
        .unwrap();
    assert_eq!(v["model"], "bigger");
    assert_eq!(
        mock.requests()
            .iter()
            .map(|r| r.json()["model"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        vec!["big", "bigger"],
        "not retried on the same model"
    );
}

#[test]
fn waits_for_a_recovery_within_the_queue_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let mock = MockUpstream::start(move |req: &Request| {
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            return rate_limited(&[("retry-after", "1")], "");
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "limits: {{queue_timeout: 5s}}\nupstreams:\n{}",
        up_yaml(&mock, "oa", 1, "")
    ));
    let start = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 200);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited for the key to recover: {took:?}"
    );
    assert_eq!(mock.requests().len(), 2);
}
