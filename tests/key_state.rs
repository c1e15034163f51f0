//! The key pool's state through the real binary: persistence across restarts,
//! reload, the admin API and its old-proxy aliases, and many parallel requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn cooldowns_survive_a_restart() {
    let mock = MockUpstream::start(|req: &Request| {
        if key_no(req) == 1 {
            return rate_limited(
                &[
                    ("x-ratelimit-type", "UserByModelByDay"),
                    ("retry-after", "3600"),
                ],
                "",
            );
        }
        ok_script(req)
    });
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state: {{path: '{}'}}\nupstreams:\n{}",
        state.path().display(),
        up_yaml(&mock, "gh", 2, "    key_strategy: sticky\n")
    );
    let mut gw = Gw::start(&yaml);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("openai/gpt-4o-mini"))
            .status(),
        200
    );
    let before = admin_keys(&gw)[0].clone();
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(100));
    let first_logs = gw.logs();
    drop(gw);
    assert!(first_logs.contains("SIGTERM"), "{first_logs}");
    mock.clear();
    let gw = Gw::start(&yaml);
    let after = admin_keys(&gw)[0].clone();
    assert_eq!(
        after["state"],
        "cooling",
        "{after}\n{first_logs}\n{}",
        gw.logs()
    );
    assert_eq!(after["until_ms"], before["until_ms"]);
    assert_eq!(after["scope_model"], "openai/gpt-4o-mini");
    assert_eq!(after["requests"], 1);
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("openai/gpt-4o-mini"))
                .status(),
            200
        );
    }
    assert_eq!(
        mock.requests().iter().map(key_no).collect::<Vec<_>>(),
        vec![2, 2, 2],
        "the exhausted key is still skipped"
    );
    assert!(
        !std::fs::read(state.path().join("switchyard.db"))
            .unwrap()
            .windows(key(1).len())
            .any(|w| w == key(1).as_bytes()),
        "no secret in the store"
    );
}

#[test]
fn reload_keeps_key_state_and_rejects_bad_configs() {
    let mock = MockUpstream::start(|req: &Request| {
        if key_no(req) == 1 {
            return rate_limited(&[("retry-after", "3600")], "");
        }
        ok_script(req)
    });
    let yaml = format!(
        "upstreams:\n{}",
        up_yaml(
            &mock,
            "oa",
            2,
            "    models: ['gpt-*']\n    key_strategy: sticky\n"
        )
    );
    let gw = Gw::start(&yaml);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    assert_eq!(gw.post("/v1/chat/completions", &chat("o1")).status(), 404);
    let path = gw.dir.path().join("switchyard.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // add a key and a model through the CLI's reload
    let new = text
        .replace("models: ['gpt-*']", "models: ['gpt-*', 'o1']")
        .replace(
            &format!("'{}']", key(2)),
            &format!("'{}', '{}']", key(2), key(3)),
        );
    std::fs::write(&path, &new).unwrap();
    let out = std::process::Command::new(bin())
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 key(s), 2 kept their state"));
    assert_eq!(gw.post("/v1/chat/completions", &chat("o1")).status(), 200);
    let keys = admin_keys(&gw);
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0]["state"], "cooling", "key 1 kept its cooldown");
    // a broken config is refused with its YAML path; the old one keeps serving
    std::fs::write(
        &path,
        new.replace(
            "key_strategy: sticky",
            "key_strategy: sticky\n    bogus_field: 1",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams[0]") && err.contains("bogus_field"),
        "{err}"
    );
    assert_eq!(gw.post("/v1/chat/completions", &chat("o1")).status(), 200);
    // SIGHUP reloads too
    std::fs::write(&path, new.replace("'o1'", "'o3'")).unwrap();
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.post("/v1/chat/completions", &chat("o3")).status() != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP reload did not happen: {}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.post("/v1/chat/completions", &chat("o1")).status(), 404);
}

#[test]
fn admin_api_and_old_proxy_aliases() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "gh", 3, "    key_strategy: sticky\n")
    ));
    for _ in 0..2 {
        gw.post("/v1/chat/completions", &chat("m"));
    }
    let stats = gw.admin_json("/v1/tokens/stats");
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["keys"][0]["requests"], 2);
    assert_eq!(stats["keys"][0]["current"], true);
    assert!(stats["keys"][0]["last_used"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let text = stats.to_string();
    assert!(!text.contains(&key(1)) && text.contains("gh#1 (…aaaa)"));
    let r: Value = client()
        .post(gw.admin("/v1/tokens/rotate"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["rotated"][0]["now_using"], "gh#2 (…aaaa)");
    mock.clear();
    gw.post("/v1/chat/completions", &chat("m"));
    assert_eq!(
        mock.requests().iter().map(key_no).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        client()
            .post(gw.admin("/admin/keys/rotate"))
            .send()
            .unwrap()
            .status(),
        200
    );
    client()
        .post(gw.admin("/v1/tokens/reset-stats"))
        .send()
        .unwrap();
    let keys = admin_keys(&gw);
    assert!(keys.iter().all(|k| k["requests"] == 0));
    let k = client()
        .post(gw.admin("/admin/keys/gh%231/disable"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(
        (k["state"].as_str(), k["reason"].as_str()),
        (Some("parked"), Some("disabled by operator"))
    );
    let k = client()
        .post(gw.admin("/admin/keys/gh%231/reset"))
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(k["state"], "active");
    assert_eq!(
        client()
            .post(gw.admin("/admin/keys/gh%239/enable"))
            .send()
            .unwrap()
            .status(),
        404
    );
    let ups = gw.admin_json("/admin/upstreams");
    assert_eq!(ups["upstreams"][0]["keys"], 3);
    assert_eq!(
        client()
            .get(gw.admin("/admin/reload"))
            .send()
            .unwrap()
            .status(),
        405
    );
}

#[test]
fn two_hundred_parallel_requests_while_a_key_starts_429ing() {
    const ALLOWED: usize = 20;
    let served = Arc::new(Mutex::new(Vec::<usize>::new()));
    let s2 = served.clone();
    let k2_calls = Arc::new(AtomicUsize::new(0));
    let c2 = k2_calls.clone();
    let mock = MockUpstream::start(move |req: &Request| {
        let k = key_no(req);
        if k == 2 && c2.fetch_add(1, Ordering::SeqCst) >= ALLOWED {
            return rate_limited(&[("retry-after", "60")], "");
        }
        s2.lock().unwrap().push(k);
        let mut r = ok_script(req);
        r.delay = Duration::from_millis(5);
        r
    });
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&mock, "oa", 3, "")));
    let url = gw.url("/v1/chat/completions");
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    const THREADS: usize = 16;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (url, next, failures) = (url.clone(), next.clone(), failures.clone());
            std::thread::spawn(move || {
                let c = client();
                while next.fetch_add(1, Ordering::SeqCst) < 200 {
                    let r = c.post(&url).json(&chat("gpt-4o")).send().unwrap();
                    if r.status() != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request fails");
    assert_eq!(served.lock().unwrap().len(), 200);
    let after_limit = k2_calls.load(Ordering::SeqCst).saturating_sub(ALLOWED);
    assert!((1..=THREADS).contains(&after_limit), "the cooling key got {after_limit} requests past its limit (at most the {THREADS} in flight)");
}
