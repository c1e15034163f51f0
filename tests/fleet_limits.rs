//! A fleet's shared limits and usage, through real instances and a real
//! `redis-server` on 127.0.0.1: `strict` is exact across instances,
//! `local` stays within its documented bound, `on_store_failure` does what
//! it says, a paused Redis costs at most the store's timeout, and the fleet's
//! usage sums every instance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::redis::*;
use common::*;
use std::time::{Duration, Instant};

const KEY: &str = "team-key-0123456789";

/// `n` instances on `redis` with `limits` (`state.redis.limits`), a client
/// `team` with `client` limits, each with its own usage store.
fn fleet(
    n: usize,
    redis: &Redis,
    mock: &MockUpstream,
    limits: &str,
    client: &str,
) -> (Vec<Gw>, Vec<tempfile::TempDir>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let gws = dirs
        .iter()
        .map(|d| {
            Gw::start(&format!(
                "state: {{path: '{}', redis: {{url: '{}', prefix: limits-test, timeout: 200ms, limits: {{{limits}}}}}}}\n\
                 clients: [{{name: team, key: {KEY}, {client}}}, {{name: free, key: free-key-0123456789}}]\n\
                 upstreams:\n{}",
                d.path().display(),
                redis.url(),
                up_yaml(mock, "up", 1, ""),
            ))
        })
        .collect::<Vec<_>>();
    for gw in &gws {
        within(Duration::from_secs(5), "the store is up", || {
            gw.admin_json("/health")["store"] == "up"
        });
    }
    (gws, dirs)
}

fn call(gw: &Gw, key: &str) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat("gpt-4o"))
        .send()
        .unwrap()
}

#[test]
fn strict_rpm_is_exact_across_three_instances_and_usage_sums_them() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(ok_script);
    let (gws, _dirs) = fleet(3, &redis, &mock, "mode: strict", "rpm: 10, tpm: 100000");
    let mut ok = 0;
    let mut refused = Vec::new();
    for i in 0..30 {
        let r = call(&gws[i % 3], KEY);
        match r.status().as_u16() {
            200 => {
                ok += 1;
                let left = r.headers()["x-ratelimit-remaining-requests"]
                    .to_str()
                    .unwrap();
                assert_eq!(
                    left,
                    (10 - ok).to_string(),
                    "the fleet's count, not one instance's"
                );
            }
            429 => refused.push(r),
            s => panic!("status {s}"),
        }
    }
    assert_eq!(ok, 10, "exactly the client's rpm across the fleet");
    assert_eq!(client_calls(&mock).len(), 10, "the upstream saw 10 calls");
    let r = refused.pop().unwrap();
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("clients[].rpm"),
        "{body}"
    );
    // a client without limits is not held back by team's
    assert_eq!(call(&gws[1], "free-key-0123456789").status(), 200);

    // every instance's usage, summed (published every 5 s)
    let fleet_team = || {
        let v = gws[0].admin_json("/admin/usage?by=client&since=1h");
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        let team = rows.iter().find(|r| r["client"] == "team").cloned();
        (v, team.map_or(0, |t| t["requests"].as_u64().unwrap()))
    };
    within(
        Duration::from_secs(15),
        "the fleet's usage counts all 30",
        || fleet_team().1 == 30,
    );
    let (v, _) = fleet_team();
    assert_eq!(
        (v["scope"].as_str(), v["instances"].as_u64()),
        (Some("fleet"), Some(3)),
        "{v}"
    );
    let here = gws[0].admin_json("/admin/usage?by=client&since=1h&scope=instance");
    let rows = here["rows"].as_array().unwrap();
    let team = rows.iter().find(|r| r["client"] == "team").unwrap();
    assert_eq!(team["requests"], 10, "{here}");
    let (okc, out, _) = cli(&gws[2], &["usage", "--by", "client", "--since", "1h"]);
    assert!(okc && out.contains("the fleet (3 instances)"), "{out}");
}

#[test]
fn local_mode_stays_within_its_documented_bound() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(ok_script);
    // sync 100ms; 60 calls over 3 instances at ~25/s: unshared, each instance
    // would admit all 20 of its own (60); the bound is 30 + 3 × 25/s × 2 × 0.1 s
    let (gws, _dirs) = fleet(3, &redis, &mock, "mode: local, sync: 100ms", "rpm: 30");
    let mut ok = 0;
    for i in 0..60 {
        let started = Instant::now();
        if call(&gws[i % 3], KEY).status() == 200 {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(40).saturating_sub(started.elapsed()));
    }
    eprintln!("local mode admitted {ok} of 60 with rpm 30");
    assert!((30..=45).contains(&ok), "admitted {ok}");
}

#[test]
fn a_store_outage_falls_back_or_refuses_as_configured() {
    let port = free_port();
    let redis = Redis::start(port, &[]);
    let mock = MockUpstream::start(ok_script);
    let (mut gws, _dirs) = fleet(
        1,
        &redis,
        &mock,
        "mode: strict, on_store_failure: refuse",
        "rpm: 1000",
    );
    let (local, _dirs2) = fleet(1, &redis, &mock, "mode: strict", "rpm: 1000");
    let (refuse, local) = (gws.remove(0), &local[0]);
    assert_eq!(call(&refuse, KEY).status(), 200);
    drop(redis);
    within(Duration::from_secs(4), "both see the store down", || {
        refuse.admin_json("/health")["store"] == "down"
            && local.admin_json("/health")["store"] == "down"
    });
    let r = call(&refuse, KEY);
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on_store_failure: refuse"));
    // a client no limit applies to is served all the same
    assert_eq!(call(&refuse, "free-key-0123456789").status(), 200);
    // `local`: counted here meanwhile
    for _ in 0..3 {
        assert_eq!(call(local, KEY).status(), 200);
    }
    assert!(refuse.metrics().contains("switchyard_store_up 0"));
    let _back = Redis::start(port, &[]);
    within(
        Duration::from_secs(6),
        "refusing instance serves again",
        || call(&refuse, KEY).status() == 200,
    );
}

#[test]
fn a_paused_redis_costs_a_call_at_most_the_store_timeout() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(ok_script);
    let (gws, _dirs) = fleet(1, &redis, &mock, "mode: strict", "rpm: 1000");
    assert_eq!(call(&gws[0], KEY).status(), 200);
    assert_eq!(redis.command("CLIENT PAUSE 6000 ALL"), "+OK");
    let paused = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(call(&gws[0], KEY).status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("slowest call while Redis was paused: {slowest:?}");
    // answered while the pause still held: nobody waited for Redis
    assert!(
        paused.elapsed() < Duration::from_secs(4),
        "{:?}",
        paused.elapsed()
    );
    // (the pause ends by itself: even CLIENT UNPAUSE waits while it holds)
}

#[test]
fn strict_concurrency_is_one_set_of_leases_for_the_fleet() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(|req: &Request| {
        if req.json()["stream"] == serde_json::json!(true) {
            return Reply::sse(
                switchyard::mock::chat_stream_events("gpt-4o", 6, false),
                Duration::from_millis(250),
            );
        }
        ok_script(req)
    });
    let (gws, _dirs) = fleet(2, &redis, &mock, "mode: strict", "max_concurrent: 2");
    let slow = |i: usize| {
        let url = gws[i].url("/v1/chat/completions");
        std::thread::spawn(move || {
            let mut body = chat("gpt-4o");
            body["stream"] = true.into();
            let r = client()
                .post(url)
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .unwrap();
            (r.status().as_u16(), r.text().unwrap())
        })
    };
    let streams = [slow(0), slow(1)];
    std::thread::sleep(Duration::from_millis(500));
    // one stream on each instance: the client's two slots are the fleet's
    let r = call(&gws[0], KEY);
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent"),
        "{body}"
    );
    for s in streams {
        let (status, text) = s.join().unwrap();
        assert_eq!(status, 200);
        assert!(text.contains("[DONE]"), "{text}");
    }
    // both leases given back: the slots are free again on either instance
    within(Duration::from_secs(3), "a slot free again", || {
        call(&gws[1], KEY).status() == 200
    });
}
