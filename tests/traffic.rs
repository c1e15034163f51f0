//! Traffic control toward upstreams, through the real binary and mock
//! upstreams: the concurrency cap and its FIFO queue (full, timed out, a
//! client that leaves while queued, `X-Upstream-Queue`), a key's own
//! `max_concurrent`, per-model pacing measured from the mock's arrival times,
//! tokens per minute (estimate, then the answer's usage), an upstream's own
//! `rpm` keeping its mock from ever answering 429, and the context pre-check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A mock that answers after `delay`, recording when each call arrived.
fn slow_mock(delay: Duration) -> (MockUpstream, Arc<Mutex<Vec<Instant>>>) {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let a2 = arrivals.clone();
    let mock = MockUpstream::start(move |req: &Request| {
        a2.lock().unwrap().push(Instant::now());
        let mut r = ok_script(req);
        r.delay = delay;
        r
    });
    (mock, arrivals)
}

/// Sends a chat call from a thread; its status and headers come back.
fn send_async(
    url: String,
    body: Value,
) -> std::thread::JoinHandle<(u16, reqwest::header::HeaderMap, String)> {
    std::thread::spawn(move || {
        let r = client().post(url).json(&body).send().unwrap();
        let (s, h) = (r.status().as_u16(), r.headers().clone());
        (s, h, r.text().unwrap_or_default())
    })
}

/// A 429's `Retry-After` seconds.
fn retry_after(r: &reqwest::blocking::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["error"]["message"].as_str().unwrap().to_string()
}

#[test]
fn the_queue_waits_in_order_refuses_when_full_and_times_out() {
    let (mock, arrivals) = slow_mock(Duration::from_millis(700));
    let gw = Gw::start(&format!(
        "limits: {{max_concurrent: 1, queue: 1, queue_timeout: 5s}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let url = gw.url("/v1/chat/completions");
    let first = send_async(url.clone(), chat("m"));
    std::thread::sleep(Duration::from_millis(200));
    let queued = send_async(url.clone(), chat("m"));
    std::thread::sleep(Duration::from_millis(200));
    // one in flight, one waiting: the next finds the queue full, at once
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert!(t.elapsed() < Duration::from_millis(400), "refused at once");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-upstream-queue"], "1");
    assert_eq!(r.headers()["x-upstream-active"], "1");
    assert_eq!(r.headers()["retry-after"], "1");
    let msg = message(&r.text().unwrap());
    assert!(
        msg.contains("queue is full") && msg.contains("limits.queue"),
        "{msg}"
    );
    let (s1, h1, _) = first.join().unwrap();
    let (s2, _, _) = queued.join().unwrap();
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        h1["x-upstream-queue"], "1",
        "the first answer saw the waiting call"
    );
    let at = arrivals.lock().unwrap().clone();
    assert_eq!(at.len(), 2, "the refused call never went up");
    assert!(
        at[1] - at[0] >= Duration::from_millis(650),
        "the queued call started when the first ended: {:?}",
        at[1] - at[0]
    );
    let m = gw.metrics();
    assert!(
        m.contains(r#"switchyard_errors_total{kind="queue_full"} 1"#),
        "{m}"
    );
    assert!(m.contains("switchyard_queue_waiting 0"), "{m}");
    assert!(m.contains("switchyard_queue_wait_seconds_count 1"), "{m}");
}

#[test]
fn a_queued_call_times_out_and_a_client_that_leaves_is_never_sent() {
    let (mock, arrivals) = slow_mock(Duration::from_millis(1500));
    let gw = Gw::start(&format!(
        "limits: {{max_concurrent: 1, queue_timeout: 400ms}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let url = gw.url("/v1/chat/completions");
    let first = send_async(url.clone(), chat("m"));
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("m"));
    let waited = t.elapsed();
    assert_eq!(r.status(), 429);
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
    let msg = message(&r.text().unwrap());
    assert!(
        msg.contains("in the queue") && msg.contains("limits.queue_timeout"),
        "{msg}"
    );
    // a client that leaves while queued: gone from the queue, never sent
    use std::io::Write;
    let body = chat("m").to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(gw.metrics().contains("switchyard_queue_waiting 1"));
    drop(s);
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        gw.metrics().contains("switchyard_queue_waiting 0"),
        "left at once"
    );
    assert_eq!(first.join().unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        arrivals.lock().unwrap().len(),
        1,
        "only the first call went up"
    );
}

#[test]
fn a_key_with_max_concurrent_takes_one_call_at_a_time() {
    let (mock, arrivals) = slow_mock(Duration::from_millis(400));
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: up, base_url: '{}/v1', keys: [{{key: sk-up-1111, max_concurrent: 1}}]}}\n",
        mock.url()
    ));
    let url = gw.url("/v1/chat/completions");
    let calls: Vec<_> = (0..2).map(|_| send_async(url.clone(), chat("m"))).collect();
    for c in calls {
        assert_eq!(c.join().unwrap().0, 200);
    }
    let at = arrivals.lock().unwrap().clone();
    assert!(
        at[1] - at[0] >= Duration::from_millis(350),
        "{:?}",
        at[1] - at[0]
    );
}

#[test]
fn pacing_starts_calls_for_one_model_an_interval_apart() {
    let (mock, arrivals) = slow_mock(Duration::ZERO);
    let gw = Gw::start(&format!(
        "limits: {{model_min_interval: 400ms}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let url = gw.url("/v1/chat/completions");
    let calls: Vec<_> = (0..3).map(|_| send_async(url.clone(), chat("m"))).collect();
    for c in calls {
        assert_eq!(c.join().unwrap().0, 200);
    }
    // another model is not held back by this one
    let t = Instant::now();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("other")).status(),
        200
    );
    assert!(t.elapsed() < Duration::from_millis(300));
    let at = arrivals.lock().unwrap().clone();
    for w in at[..3].windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(380), "calls {gap:?} apart");
    }
    assert!(at[2] - at[0] < Duration::from_millis(1300));
}

#[test]
fn a_pacing_turn_beyond_the_queue_timeout_is_a_429() {
    let (mock, _) = slow_mock(Duration::ZERO);
    let gw = Gw::start(&format!(
        "limits: {{queue_timeout: 1s}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111], model_min_interval: 5s}}\n",
        mock.url()
    ));
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 429);
    let retry = retry_after(&r);
    assert!((4..=5).contains(&retry), "{retry}");
    let msg = message(&r.text().unwrap());
    assert!(
        msg.contains("model_min_interval") && msg.contains("`m`"),
        "{msg}"
    );
}

/// A chat call asking for `max_tokens`.
fn chat_max(max_tokens: u64) -> Value {
    json!({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello"}]})
}

#[test]
fn tokens_per_minute_charge_the_estimate_then_the_reported_usage() {
    // the mock reports `prompt_tokens: 5, completion_tokens: 3` (8 in all)
    let mock = MockUpstream::start(ok_script);
    let key = "client-t-key-tttttttttttt";
    let gw = Gw::start(&format!(
        "clients:\n  - {{name: t, key: {key}, tpm: 1000}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\n",
        mock.url()
    ));
    let send = |body: &Value| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body)
            .send()
            .unwrap()
    };
    // charged ~620 before the call, 8 after it: the next 620 fits
    assert_eq!(send(&chat_max(600)).status(), 200);
    assert_eq!(
        send(&chat_max(600)).status(),
        200,
        "the first was corrected to its usage"
    );
    // larger than the whole limit: refused, never sent
    let r = send(&chat_max(5000));
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    let msg = message(&r.text().unwrap());
    assert!(
        msg.contains("Request too large") && msg.contains("clients[].tpm"),
        "{msg}"
    );
    // estimates pile up when answers report no usage
    mock.set(|_req: &Request| {
        let mut v = switchyard::mock::chat_completion("m", "no usage");
        v.as_object_mut().unwrap().remove("usage");
        Reply::json(200, &v)
    });
    assert_eq!(send(&chat_max(600)).status(), 200);
    let t = Instant::now();
    let r = send(&chat_max(600));
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
    assert_eq!(h["x-ratelimit-remaining-tokens"], "0");
    let retry: f64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    // the first charge (of 8) leaving frees too little; the 620 one leaves at ~60 s
    assert!(
        (58.0..=61.0).contains(&(retry + t.elapsed().as_secs_f64())),
        "{retry}"
    );
    let msg = message(&r.text().unwrap());
    assert!(msg.contains("1000 tokens per minute"), "{msg}");
    assert_eq!(mock.requests().len(), 3);
    assert!(gw
        .metrics()
        .contains(r#"switchyard_errors_total{kind="tpm_limited"} 2"#));
}

#[test]
fn an_upstreams_own_rpm_sends_the_rest_elsewhere_and_its_mock_never_says_429() {
    // the provider allows 2 calls a minute and answers 429 beyond
    let seen = Arc::new(Mutex::new(0u32));
    let s2 = seen.clone();
    let strict = MockUpstream::start(move |req: &Request| {
        let mut n = s2.lock().unwrap();
        *n += 1;
        if *n > 2 {
            Reply::json(
                429,
                &json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
            )
        } else {
            ok_script(req)
        }
    });
    let spare = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "limits: {{queue_timeout: 1s}}\nupstreams:\n  - {{name: strict, base_url: '{}/v1', keys: [sk-strict-1111], rpm: 2}}\n  - {{name: spare, base_url: '{}/v1', keys: [sk-spare-2222], weight: 1}}\n",
        strict.url(),
        spare.url()
    ));
    for _ in 0..6 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    assert_eq!(*seen.lock().unwrap(), 2, "strict got exactly its 2 calls");
    assert_eq!(spare.requests().len(), 4);
    let m = gw.metrics();
    assert!(!m.contains(r#"outcome="429""#), "no 429 was ever seen: {m}");
    // alone, the limited upstream gives a 429 that names its limit
    let alone = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "limits: {{queue_timeout: 1s}}\nupstreams:\n  - {{name: solo, base_url: '{}/v1', keys: [sk-solo-1111], rpm: 1}}\n",
        alone.url()
    ));
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 429);
    let retry = retry_after(&r);
    assert!((58..=60).contains(&retry), "{retry}");
    let msg = message(&r.text().unwrap());
    assert!(msg.contains("`solo`") && msg.contains("rpm 1"), "{msg}");
    assert_eq!(alone.requests().len(), 1);
}

#[test]
fn a_prompt_too_long_for_the_model_goes_to_a_larger_one_or_gets_400() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-1111]}}\nmodels:\n  catalog:\n    tiny: {{context: 50, max_output: 20}}\n    roomy: {{context: 100000}}\n    lonely: {{context: 50}}\n  fallbacks: {{tiny: [roomy]}}\n",
        mock.url()
    ));
    let long = "word ".repeat(200);
    let ask =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": long}]});
    let r = gw.post("/v1/chat/completions", &ask("tiny"));
    assert_eq!(r.status(), 200);
    let seen = mock.requests();
    assert_eq!(seen.len(), 1, "tiny was never called");
    assert_eq!(seen[0].json()["model"], "roomy");
    let r = gw.post("/v1/chat/completions", &ask("lonely"));
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "messages");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("50 tokens"),
        "{v}"
    );
    assert_eq!(mock.requests().len(), 1, "no upstream call for it");
    // a short prompt is not held back
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("lonely")).status(),
        200
    );
    // the catalog shows in /v1/models, built-in models included
    let gw2 = Gw::start(&format!(
        "upstreams:\n  - {{name: up, base_url: '{}/v1', models: [gpt-4o-mini, tiny]}}\nmodels:\n  catalog:\n    tiny: {{context: 50, max_output: 20}}\n",
        mock.url()
    ));
    let v: Value = client()
        .get(gw2.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let find = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("gpt-4o-mini")["context_window"], 128000);
    assert_eq!(find("gpt-4o-mini")["max_output_tokens"], 16384);
    assert_eq!(find("tiny")["context_window"], 50);
    let one: Value = client()
        .get(gw2.url("/v1/models/tiny"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(one["max_output_tokens"], 20);
}

#[test]
fn the_environment_alone_makes_a_working_gateway() {
    let mock = MockUpstream::start(ok_script);
    let (port, admin) = (free_port(), free_port());
    let admin_listen = format!("127.0.0.1:{admin}");
    let base = format!("{}/v1", mock.url());
    let gw = Gw::env_only(
        port,
        admin,
        &[
            ("PORT", &port.to_string()),
            ("SWITCHYARD_ADMIN_LISTEN", &admin_listen),
            ("OPENAI_BASE_URL", &base),
            (
                "OPENAI_API_KEYS",
                "sk-env-one-aaaaaaaaaaaa,sk-env-two-bbbbbbbbbbbb",
            ),
            ("RATE_LIMIT_PER_MINUTE", "3"),
            ("METRICS_ENABLED", "true"),
        ],
    );
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("gpt-4o-mini"))
                .status(),
            200
        );
    }
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o-mini"));
    assert_eq!(r.status(), 429, "RATE_LIMIT_PER_MINUTE=3");
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_string())
        .collect();
    assert!(
        keys.contains(&"Bearer sk-env-one-aaaaaaaaaaaa".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"Bearer sk-env-two-bbbbbbbbbbbb".to_string()),
        "{keys:?}"
    );
    let logs = gw.logs();
    assert!(logs.contains("from the environment"), "{logs}");
    assert!(
        logs.contains("point an OpenAI client at http://127.0.0.1:"),
        "{logs}"
    );
    assert!(
        !logs.contains("sk-env-one-aaaaaaaaaaaa"),
        "no key in the banner or logs"
    );
    // METRICS_ENABLED: Prometheus on the API port too, not counted as an API call
    let m = client().get(gw.url("/metrics")).send().unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().unwrap();
    assert!(text.contains("switchyard_queue_waiting"), "{text}");
    assert!(
        text.contains(r#"switchyard_errors_total{kind="rpm_limited"} 1"#),
        "{text}"
    );
}

#[test]
fn upstream_api_url_shares_the_load_and_fails_over() {
    let (a, b) = (
        MockUpstream::start(ok_script),
        MockUpstream::start(ok_script),
    );
    let dead = free_port();
    let (port, admin) = (free_port(), free_port());
    let urls = format!(
        "{}/v1/chat/completions,{}/v1/chat/completions,http://127.0.0.1:{dead}/v1/chat/completions",
        a.url(),
        b.url()
    );
    let gw = Gw::env_only(
        port,
        admin,
        &[
            ("PORT", &port.to_string()),
            ("SWITCHYARD_ADMIN_LISTEN", &format!("127.0.0.1:{admin}")),
            ("UPSTREAM_API_URL", &urls),
            ("GITHUB_TOKEN", "ghp_env_token_aaaaaaaaaaaa"),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    );
    for i in 0..12 {
        let r = gw.post("/v1/chat/completions", &chat("m"));
        assert_eq!(r.status(), 200, "request {i}: the dead URL fails over");
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 12);
    assert!(na >= 3 && nb >= 3, "both share the load: {na} / {nb}");
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some("Bearer ghp_env_token_aaaaaaaaaaaa")
    );
    assert!(a
        .requests()
        .iter()
        .all(|r| r.path == "/v1/chat/completions"));
}

#[test]
fn check_without_a_file_shows_the_config_the_environment_builds() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .arg("check")
        .current_dir(dir.path())
        .env_remove("SWITCHYARD_CONFIG")
        .env("GITHUB_TOKEN", "ghp_check_token_aaaaaaaaaa")
        .env("GITHUB_TOKEN2", "ghp_check_token_bbbbbbbbbb")
        .env("UPSTREAM_MAX_CONCURRENT", "3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("from the environment"), "{text}");
    assert!(text.contains("GITHUB_TOKEN, GITHUB_TOKEN2"), "{text}");
    assert!(
        text.contains("https://models.github.ai/inference"),
        "{text}"
    );
    assert!(
        text.contains("keys: 2") && text.contains("sticky"),
        "{text}"
    );
    assert!(text.contains("3 calls in flight"), "{text}");
    assert!(!text.contains("ghp_check_token"), "{text}");
    let bad = std::process::Command::new(bin())
        .arg("check")
        .current_dir(dir.path())
        .env_remove("SWITCHYARD_CONFIG")
        .env("GITHUB_TOKEN", "ghp_check_token_aaaaaaaaaa")
        .env("UPSTREAM_QUEUE_MAX", "lots")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("environment UPSTREAM_QUEUE_MAX"));
}

#[test]
fn json_logs_carry_the_access_fields() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "log: {{format: json}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-up-json-aaaaaaaaaaaa]}}\n",
        mock.url()
    ));
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    assert_eq!(
        gw.post("/v1/chat/completions", &json!({"model": 1}))
            .status(),
        400
    );
    let lines = || -> Vec<Value> {
        gw.logs()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    };
    let mut access = Vec::new();
    for _ in 0..40 {
        access = lines()
            .into_iter()
            .filter(|v| v["target"] == "switchyard::access")
            .collect();
        if access.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(access.len(), 2, "{}", gw.logs());
    let ok = &access[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["path"], "/v1/chat/completions");
    assert_eq!(ok["model"], "m");
    assert_eq!(ok["upstream"], "up");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["attempts"], 1);
    assert!(ok["key"].as_str().unwrap().starts_with("up#1"), "{ok}");
    assert!(ok["error"].is_null() && ok["ts"].is_string(), "{ok}");
    assert_eq!(access[1]["status"], 400);
    assert_eq!(access[1]["error"], "missing_model");
    assert!(!gw.logs().contains("sk-up-json-aaaaaaaaaaaa"));
    // every other line is JSON too (start-up lines from the gateway and Pingora)
    assert!(lines().iter().any(|v| v["message"].is_string()));
}
