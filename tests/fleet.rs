//! A fleet: two gateway instances sharing key state through a real
//! `redis-server` (Debian's, started and stopped here, on 127.0.0.1).
//! Needs `redis-server` (`scripts/deps.sh test` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::redis::*;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn key_states(gw: &Gw) -> Vec<String> {
    admin_keys(gw)
        .iter()
        .map(|k| k["state"].as_str().unwrap().to_string())
        .collect()
}

fn fleet_of_two(redis: &Redis, mock: &MockUpstream) -> (Gw, Gw) {
    let yaml = format!(
        "state: {{redis: {{url: '{}', prefix: 'fleet-test', timeout: 200ms}}}}\nretry: {{attempts: 3, backoff: 10ms}}\nupstreams:\n{}",
        redis.url(),
        up_yaml(mock, "up", 2, "    key_strategy: sticky\n")
    );
    (Gw::start(&yaml), Gw::start(&yaml))
}

#[test]
fn a_cooldown_and_operator_actions_reach_the_other_instance_within_a_second() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(|req: &Request| {
        if key_no(req) == 1 {
            return rate_limited(&[("retry-after", "30")], "");
        }
        ok_script(req)
    });
    let (a, b) = fleet_of_two(&redis, &mock);
    // A meets the 429 on key 1 and moves to key 2
    assert_eq!(
        a.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    assert_eq!(key_states(&a)[0], "cooling");
    let took = within(Duration::from_secs(2), "B sees key 1 cooling", || {
        key_states(&b)[0] == "cooling"
    });
    eprintln!("cooldown seen by B after {took:?}");
    let until_a = admin_keys(&a)[0]["until_ms"].as_u64().unwrap();
    let until_b = admin_keys(&b)[0]["until_ms"].as_u64().unwrap();
    assert_eq!(until_a, until_b, "the same deadline");
    // B does not use key 1
    mock.clear();
    for _ in 0..4 {
        assert_eq!(
            b.post("/v1/chat/completions", &chat("gpt-4o")).status(),
            200
        );
    }
    let used: Vec<usize> = mock.requests().iter().map(key_no).collect();
    assert_eq!(used, [2, 2, 2, 2], "B never called key 1");

    // an operator disables key 2 on A: parked on B; enabled on B: back on A
    let act = |gw: &Gw, n: usize, what: &str| {
        let r = client()
            .post(gw.admin(&format!("/admin/keys/up%23{n}/{what}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{what}");
    };
    act(&a, 2, "disable");
    within(Duration::from_secs(2), "B sees key 2 parked", || {
        key_states(&b)[1] == "parked"
    });
    act(&b, 2, "enable");
    within(Duration::from_secs(2), "A sees key 2 active", || {
        key_states(&a)[1] == "active"
    });
    // and a reset of key 1 on B clears its cooldown on A
    act(&b, 1, "reset");
    within(Duration::from_secs(2), "A sees key 1 active", || {
        key_states(&a)[0] == "active"
    });
    assert_eq!(
        a.metrics()
            .lines()
            .find(|l| l.starts_with("switchyard_store_up ")),
        Some("switchyard_store_up 1")
    );
    let health = a.admin_json("/health");
    assert_eq!(health["store"], "up", "{health}");
    assert!(
        !a.logs().contains("fleet-test:key"),
        "no Redis key names in the logs"
    );

    // the fleet view: both instances, each marked; one gone is missing
    let fleet = |gw: &Gw| {
        gw.admin_json("/admin/status")["fleet"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    within(Duration::from_secs(3), "A lists two instances", || {
        fleet(&a).len() == 2
    });
    let view = fleet(&a);
    assert!(
        view.iter()
            .all(|i| i["state"] == "up" && i["version"] == env!("CARGO_PKG_VERSION")),
        "{view:?}"
    );
    assert_eq!(view.iter().filter(|i| i["this"] == true).count(), 1);
    let out = Command::new(bin())
        .args([
            "status",
            "--no-env-file",
            "--admin",
            &format!("127.0.0.1:{}", a.admin_port),
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fleet (state.redis): 2 instance(s)") && text.contains("(this)"),
        "{text}"
    );
    drop(b);
    within(Duration::from_secs(9), "A marks B missing", || {
        fleet(&a).iter().any(|i| i["state"] == "missing")
    });
}

#[test]
fn redis_gone_requests_go_on_and_the_state_is_written_back_when_it_returns() {
    let port = free_port();
    let redis = Redis::start(port, &[]);
    let mock = MockUpstream::start(ok_script);
    let (a, b) = fleet_of_two(&redis, &mock);
    assert_eq!(
        a.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    drop(redis);
    // requests keep being answered, each within the store's timeout
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            a.post("/v1/chat/completions", &chat("gpt-4o")).status(),
            200
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    within(Duration::from_secs(3), "A says the store is down", || {
        a.admin_json("/health")["store"] == "down"
    });
    let health = a.admin_json("/health");
    assert_eq!(health["status"], "ok", "still serving: {health}");
    assert_eq!(health["degraded"], serde_json::json!(["state.redis"]));
    assert!(a.metrics().contains("switchyard_store_up 0"));
    assert!(a.logs().contains("is not answering"), "{}", a.logs());
    // a change while it is down stays here...
    let r = client()
        .post(a.admin("/admin/keys/up%232/disable"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...and reaches B once Redis is back
    let _back = Redis::start(port, &[]);
    within(
        Duration::from_secs(5),
        "B sees key 2 parked after the outage",
        || key_states(&b)[1] == "parked",
    );
    within(Duration::from_secs(3), "A says the store is up", || {
        a.admin_json("/health")["store"] == "up"
    });
}

#[test]
fn a_wrong_password_or_url_is_a_clear_error_at_check() {
    let redis = Redis::start(free_port(), &["--requirepass", "right-password-123"]);
    let dir = tempfile::tempdir().unwrap();
    let run = |url: &str| {
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            format!("state: {{redis: '{url}'}}\nupstreams: [{{name: d, kind: demo}}]\n"),
        )
        .unwrap();
        let out = Command::new(bin())
            .args(["check", "--no-env-file", "-c"])
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&format!(
        "redis://:wrong-password-456@127.0.0.1:{}",
        redis.port
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("state.redis") && !text.contains("wrong-password-456"),
        "{text}"
    );
    let (code, text) = run(&format!(
        "redis://:right-password-123@127.0.0.1:{}",
        redis.port
    ));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("shared: key cooldowns") && !text.contains("right-password-123"),
        "{text}"
    );
    let (code, text) = run("http://127.0.0.1:1");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("state.redis.url"), "{text}");
    // a Redis that runs no scripts cannot hold the fleet's state
    let no_lua = Redis::start(
        free_port(),
        &[
            "--rename-command",
            "EVAL",
            "",
            "--rename-command",
            "EVALSHA",
            "",
        ],
    );
    let (code, text) = run(&no_lua.url());
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("does not run Lua scripts"), "{text}");
    // nothing listens there: a warning, not an error (the gateway would start)
    let (code, text) = run(&format!("redis://127.0.0.1:{}", free_port()));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not reachable now"), "{text}");
}

#[test]
fn a_restarted_instance_takes_the_fleets_word_over_its_own_old_state() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(ok_script);
    let dir = tempfile::tempdir().unwrap();
    let ups = up_yaml(&mock, "up", 2, "");
    let a_yaml = format!(
        "state: {{path: '{}', redis: '{}'}}\nupstreams:\n{ups}",
        dir.path().display(),
        redis.url()
    );
    let b = Gw::start(&format!(
        "state: {{redis: '{}'}}\nupstreams:\n{ups}",
        redis.url()
    ));
    let a = Gw::start(&a_yaml);
    let act = |gw: &Gw, what: &str| {
        let r = client()
            .post(gw.admin(&format!("/admin/keys/up%231/{what}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{what}");
    };
    act(&a, "disable");
    within(Duration::from_secs(2), "B sees key 1 parked", || {
        key_states(&b)[0] == "parked"
    });
    drop(a); // its SQLite store keeps the park
    act(&b, "enable");
    // A comes back with its old park: the fleet's later enable wins, and the
    // old park is not pushed to the others
    let a = Gw::start(&a_yaml);
    assert!(a.logs().contains("restored the state of"), "{}", a.logs());
    within(Duration::from_secs(3), "A takes the enable", || {
        key_states(&a)[0] == "active"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(key_states(&b)[0], "active", "B was not parked again");
    assert_eq!(key_states(&a)[0], "active");
}
