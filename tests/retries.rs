//! Retries by cause through the real binary: a silent upstream is left at
//! once, a one-key upstream retries its key, a short 429 is waited for on the
//! requested model, keys of one account cool together, and a client that
//! leaves stops the attempt loop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::{key, key_no, rate_limited};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn keys(n: usize) -> String {
    (1..=n)
        .map(|i| format!("'{}'", key(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A mock whose first chat call (for `model`, or any) gets `first`, every
/// other call an ordinary answer.
fn once_then_ok(first: Reply, model: Option<&'static str>) -> MockUpstream {
    let calls = Arc::new(AtomicUsize::new(0));
    MockUpstream::start(move |req: &Request| {
        let counts = model.is_none_or(|m| req.json()["model"] == m);
        if counts && calls.fetch_add(1, Ordering::SeqCst) == 0 {
            first.clone()
        } else {
            ok_script(req)
        }
    })
}

#[test]
fn a_silent_upstream_costs_one_timeout_not_one_per_key() {
    let slow = MockUpstream::start(|req: &Request| {
        let mut r = ok_script(req);
        r.delay = Duration::from_secs(3);
        r
    });
    let fast = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "timeouts: {{first_byte: 1s}}\nupstreams:\n  - {{name: slow, base_url: '{}/v1', keys: [{}]}}\n  - {{name: fast, base_url: '{}/v1', keys: [{}]}}\n",
        slow.url(),
        keys(3),
        fast.url(),
        keys(1)
    ));
    let start = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("m"));
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-upstream"], "fast");
    assert_eq!(
        slow.requests().len(),
        1,
        "none of slow's other keys was tried"
    );
    assert!(
        took < Duration::from_millis(2500),
        "one timeout, then failover at once: {took:?}"
    );
}

#[test]
fn a_one_key_upstream_retries_its_key_after_a_5xx() {
    let mock = once_then_ok(
        Reply::json(500, &json!({"error": {"message": "flaky"}})),
        None,
    );
    let gw = Gw::start(&format!(
        "retry: {{backoff: 50ms}}\nupstreams:\n  - {{name: only, base_url: '{}/v1', keys: [{}]}}\n",
        mock.url(),
        keys(1)
    ));
    let r = gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(r.status(), 200);
    let seen = mock.requests();
    assert_eq!(seen.iter().map(key_no).collect::<Vec<_>>(), vec![1, 1]);
}

#[test]
fn a_short_retry_after_is_waited_for_not_fallen_back() {
    let mock = once_then_ok(rate_limited(&[("retry-after", "2")], ""), Some("big"));
    let gw = Gw::start(&format!(
        "models: {{fallbacks: {{big: [small]}}}}\nupstreams:\n  - {{name: oa, base_url: '{}/v1', keys: [{}]}}\n",
        mock.url(),
        keys(1)
    ));
    let start = Instant::now();
    let v: Value = gw
        .post("/v1/chat/completions", &chat("big"))
        .json()
        .unwrap();
    assert_eq!(
        v["model"], "big",
        "the requested model answered, after the wait"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        start.elapsed()
    );
    assert!(
        mock.requests().iter().all(|r| r.json()["model"] == "big"),
        "the fallback was never asked"
    );
}

#[test]
fn keys_of_one_account_cool_together() {
    let mock = once_then_ok(rate_limited(&[("retry-after", "1")], ""), None);
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: acct, base_url: '{}/v1', keys: [{}], rate_limit_scope: upstream}}\n",
        mock.url(),
        keys(3)
    ));
    let start = Instant::now();
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    assert_eq!(
        mock.requests().len(),
        2,
        "no rotation through the account's keys"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "waited for the account: {:?}",
        start.elapsed()
    );
    let logs = gw.logs();
    assert!(
        logs.contains("and every key of acct: one account"),
        "{logs}"
    );
}

#[test]
fn a_client_that_leaves_stops_the_wait_and_the_calls() {
    let mock = MockUpstream::start(|_req: &Request| rate_limited(&[("retry-after", "3")], ""));
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: oa, base_url: '{}/v1', keys: [{}]}}\n",
        mock.url(),
        keys(1)
    ));
    let s = post_raw(gw.port);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        mock.requests().len(),
        1,
        "the first call went up, then the gateway waits"
    );
    drop(s); // the client gives up
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(mock.requests().len(), 1, "no call after the client left");
    let logs = gw.logs();
    assert!(logs.contains("the client left while waiting"), "{logs}");
}

#[test]
fn weighted_upstreams_share_the_load_in_proportion() {
    let heavy = MockUpstream::start(ok_script);
    let light = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: heavy, base_url: '{}/v1', weight: 3}}\n  - {{name: light, base_url: '{}/v1', weight: 1}}\n",
        heavy.url(),
        light.url()
    ));
    for _ in 0..200 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let (h, l) = (heavy.requests().len(), light.requests().len());
    assert_eq!(h + l, 200);
    assert!(
        (140..=160).contains(&h),
        "3:1 by weight: heavy {h}, light {l}"
    );
}

#[test]
fn an_outage_opens_the_circuit_and_a_health_check_closes_it() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = healthy.clone();
    let flaky = MockUpstream::start(move |req: &Request| {
        if h2.load(Ordering::SeqCst) {
            ok_script(req)
        } else {
            Reply::json(503, &json!({"error": {"message": "down for maintenance"}}))
        }
    });
    let steady = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "retry: {{backoff: 10ms}}\nupstreams:\n  - {{name: flaky, base_url: '{}/v1', keys: [{}], health: {{path: /models, interval: 1s, failures: 2}}}}\n  - {{name: steady, base_url: '{}/v1'}}\n",
        flaky.url(),
        keys(1),
        steady.url()
    ));
    std::thread::sleep(Duration::from_millis(300)); // the first health check fails too
    for _ in 0..12 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let calls = |m: &MockUpstream| {
        m.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };
    assert!(
        calls(&flaky) <= 2,
        "a down upstream costs no attempts: {}",
        calls(&flaky)
    );
    let ups = gw.admin_json("/admin/upstreams");
    assert_eq!(ups["upstreams"][0]["health"]["state"], "down", "{ups}");
    assert!(gw
        .metrics()
        .contains("switchyard_upstream_healthy{upstream=\"flaky\"} 0"));
    let checks = flaky
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/models")
        .count();
    assert!(checks >= 1, "the active check ran");
    assert!(
        flaky
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/models")
            .all(|r| r.header("authorization") == Some(format!("Bearer {}", key(1)).as_str())),
        "the check carries the upstream's key"
    );
    // recovery: back in rotation within one interval
    healthy.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let before = calls(&flaky);
    for _ in 0..8 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    assert!(calls(&flaky) >= before + 3, "balanced again after recovery");
    let ups = gw.admin_json("/admin/upstreams");
    assert_eq!(ups["upstreams"][0]["health"]["state"], "up", "{ups}");
    assert!(gw
        .metrics()
        .contains("switchyard_upstream_healthy{upstream=\"flaky\"} 1"));
}

#[test]
fn a_client_that_leaves_during_an_aggregation_closes_the_upstream_stream() {
    // 40 events 150 ms apart: the stream would take 6 s
    let mock = MockUpstream::start(|_req: &Request| {
        Reply::sse(
            switchyard::mock::chat_stream_events("m", 40, false),
            Duration::from_millis(150),
        )
    });
    let gw = Gw::start(&format!(
        "upstreams:\n  - {{name: oa, base_url: '{}/v1', keys: [{}], stream_only: true}}\n",
        mock.url(),
        keys(1)
    ));
    let active = || {
        gw.metrics()
            .lines()
            .find(|l| l.starts_with("switchyard_upstream_active "))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .unwrap()
    };
    let s = post_raw(gw.port);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(active(), "1", "the aggregation is reading the upstream");
    drop(s);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        active(),
        "0",
        "the upstream stream was closed with the client"
    );
}

/// Sends a JSON chat request on a raw connection and leaves it open (the
/// caller drops it to leave).
fn post_raw(port: u16) -> std::net::TcpStream {
    let body = chat("m").to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}
