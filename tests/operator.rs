//! An operator's first week, through the real binary: glob routes listed as
//! real models (`/v1/models`, the 404, the dashboard's playground, `probe`),
//! a `.env` quick start, environment variables a file overrides, and the
//! CLI's request filters, `stats reset` and key errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// An upstream whose `GET /v1/models` lists three models; key 2 is refused.
fn listing_upstream(req: &Request) -> Reply {
    if req.path.ends_with("/models") {
        return Reply::json(
            200,
            &json!({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model"}, {"id": "gpt-4o-mini", "object": "model"},
                {"id": "dall-e-3", "object": "model"}, {"id": "gpt-*", "object": "model"}]}),
        );
    }
    if key_no(req) == 2 {
        return Reply::json(
            401,
            &json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        );
    }
    ok_script(req)
}

#[test]
fn glob_routes_list_probe_and_refuse_patterns_as_real_models() {
    let mock = MockUpstream::start(listing_upstream);
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "openai", 2, "    models: ['gpt-*']\n")
    ));
    // the upstream's own list, filtered by the route's glob, replaces the catalog's
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let v: Value = client()
            .get(gw.url("/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let got = model_ids(&v);
        if got == ["gpt-4o", "gpt-4o-mini"] || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(listed, ["gpt-4o", "gpt-4o-mini"], "{}", gw.logs());
    let fetch = mock
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/models")
        .expect("the gateway asked the upstream for its models");
    assert_eq!(fetch.header("authorization"), Some(bearer(1).as_str()));
    assert!(
        gw.logs().contains("upstream openai lists 3 model(s)"),
        "{}",
        gw.logs()
    );

    // the dashboard's playground menu comes from /admin/status
    let status = gw.admin_json("/admin/status");
    assert_eq!(status["models"], json!(["gpt-4o", "gpt-4o-mini"]));

    // a model nothing serves: the 404 names real models and the pattern
    let r = gw.post("/v1/chat/completions", &chat("claude-x"));
    assert_eq!(r.status(), 404);
    let msg = r.json::<Value>().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("gpt-4o-mini") && msg.contains("any name matching gpt-*"),
        "{msg}"
    );
    // a glob is never a model name: refused here, never sent upstream
    mock.clear();
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-*")).status(),
        404
    );
    let (ok, _, err) = cli(&gw, &["probe", "--model", "gpt-*"]);
    assert!(!ok && err.contains("is a pattern"), "{err}");
    assert!(mock.requests().is_empty(), "{:?}", mock.requests().len());

    // probe with no argument: every key, with a model the upstream serves
    let (ok, out, err) = cli(&gw, &["probe", "--json"]);
    assert!(!ok, "key 2 is refused: {out} {err}");
    let v: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|r| r["model"] == "gpt-4o"), "{v:?}");
    assert_eq!(v[0]["result"], "ok");
    assert_eq!(v[1]["result"], "rejected");
    let sent: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.json()["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, ["gpt-4o", "gpt-4o"]);
    assert_eq!(
        admin_keys(&gw)[1]["state"],
        "parked",
        "probe found the bad key"
    );
}

fn env_dir(lines: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), lines).unwrap();
    dir
}

#[test]
fn a_dot_env_quick_start_serves_its_upstream() {
    let mock = MockUpstream::start(ok_script);
    let (port, admin) = (free_port(), free_port());
    let dir = env_dir(&format!(
        "# the old proxy's file\nOPENAI_API_KEY=sk-from-dotenv-aaaaaaaaaaaa\nOPENAI_BASE_URL={}/v1\nPORT={port}\nSWITCHYARD_ADMIN_LISTEN=127.0.0.1:{admin}\n",
        mock.url()
    ));
    let gw = Gw::serve_in(dir, &[], port, admin);
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o-mini"));
    assert_eq!(r.status(), 200);
    let seen = mock.requests();
    assert_eq!(
        seen[seen.len() - 1].header("authorization"),
        Some("Bearer sk-from-dotenv-aaaaaaaaaaaa")
    );
    let logs = gw.logs();
    assert!(logs.contains("env file .env: set OPENAI_API_KEY"), "{logs}");
    assert!(
        !logs.contains("sk-from-dotenv"),
        "no secret in the banner or logs"
    );
}

#[test]
fn an_env_file_flag_is_read_and_a_missing_one_is_an_error() {
    let mock = MockUpstream::start(ok_script);
    let (port, admin) = (free_port(), free_port());
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("proxy.env");
    std::fs::write(
        &path,
        format!(
            "GITHUB_TOKEN=ghp_from_file_aaaaaaaaaaaa\nUPSTREAM_API_URL={}/v1\nPORT={port}\nSWITCHYARD_ADMIN_LISTEN=127.0.0.1:{admin}\n",
            mock.url()
        ),
    )
    .unwrap();
    let gw = Gw::serve_in(
        tempfile::tempdir().unwrap(),
        &["--env-file", path.to_str().unwrap()],
        port,
        admin,
    );
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    assert_eq!(
        mock.requests()[0].header("authorization"),
        Some("Bearer ghp_from_file_aaaaaaaaaaaa")
    );
    drop(gw);
    let out = Command::new(bin())
        .args(["check", "--env-file", "/nonexistent/switchyard.env"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("env file /nonexistent/switchyard.env"));
    // a line that is not KEY=value: an error that does not echo the line
    let bad = env_dir("OPENAI_API_KEY sk-secret-in-a-bad-line\n");
    let out = Command::new(bin())
        .arg("check")
        .current_dir(bad.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("env file .env") && !err.contains("sk-secret"),
        "{err}"
    );
}

#[test]
fn a_files_listeners_and_keys_win_over_the_environment_and_check_says_so() {
    let dir = env_dir("PORT=4999\nOPENAI_API_KEY=sk-stray-aaaaaaaaaaaaaaaa\n");
    std::fs::write(
        dir.path().join("c.yaml"),
        "listen: 127.0.0.1:4000\nupstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1', keys: [sk-file-bbbbbbbbbbbbbbbb]}\n",
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "-c", "c.yaml"]).current_dir(dir.path());
    for k in switchyard::config::env::VARS {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("env file .env: set PORT, OPENAI_API_KEY"),
        "{text}"
    );
    assert!(text.contains("environment NOT applied: PORT"), "{text}");
    assert!(
        text.contains(
            "environment NOT applied: OPENAI_API_KEY(S) (upstream openai lists its own keys)"
        ),
        "{text}"
    );
    assert!(text.contains("api    127.0.0.1:4000"), "{text}");
}

#[test]
fn request_filters_stats_reset_and_key_errors_in_the_cli() {
    let mock =
        MockUpstream::start(
            |req: &Request| match req.json()["model"].as_str().unwrap_or("") {
                "bad" => Reply::json(400, &json!({"error": {"message": "no"}})),
                "broken" => Reply::json(500, &json!({"error": {"message": "down"}})),
                _ => ok_script(req),
            },
        );
    let gw = Gw::start(&format!(
        "retry: {{attempts: 1}}\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "")
    ));
    for m in ["gpt-4o", "bad", "broken", "gpt-4o-mini"] {
        gw.post("/v1/chat/completions", &chat(m));
    }
    let rows = |args: &[&str]| -> Vec<(String, u64)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut a = vec!["requests", "--json"];
            a.extend_from_slice(args);
            let (ok, out, err) = cli(&gw, &a);
            assert!(ok, "{err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            let got: Vec<(String, u64)> = v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["model"].as_str().unwrap().into(),
                        r["status"].as_u64().unwrap(),
                    )
                })
                .collect();
            // usage records land just after each answer
            if args.is_empty() && got.len() < 4 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            return got;
        }
    };
    assert_eq!(rows(&[]).len(), 4);
    assert_eq!(rows(&["--status", "errors"]).len(), 2);
    assert_eq!(rows(&["--status", "4xx"]), [("bad".to_string(), 400)]);
    assert_eq!(rows(&["--status", "ok", "--model", "gpt-4o*"]).len(), 2);
    assert_eq!(rows(&["--since", "1h", "--model", "broken"]).len(), 1);
    assert!(rows(&["--until", "1h"]).is_empty());
    let (ok, _, err) = cli(&gw, &["requests", "--status", "6xx"]);
    assert!(!ok && err.contains("status=\"6xx\""), "{err}");

    // a table with a TTFT column
    let (_, table, _) = cli(&gw, &["requests"]);
    assert!(table.contains("TTFT"), "{table}");

    // stats reset zeroes the key counters
    assert!(admin_keys(&gw)[0]["requests"].as_u64().unwrap() >= 4);
    let (ok, out, err) = cli(&gw, &["stats", "reset"]);
    assert!(ok && out.contains("reset"), "{out} {err}");
    assert_eq!(admin_keys(&gw)[0]["requests"], 0);

    // rotate moves sticky pools only: a round-robin one is left alone, and said so
    let (ok, _, err) = cli(&gw, &["keys", "rotate", "--upstream", "up"]);
    assert!(!ok && err.contains("only sticky pools"), "{err}");
    let (ok, out, _) = cli(&gw, &["keys", "rotate", "--json"]);
    assert!(ok && out.contains("\"rotated\": []"), "{out}");

    // a wrong key id: one plain line naming the id as typed
    let (ok, out, err) = cli(&gw, &["keys", "disable", "up#9"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("no key \"up#9\"") && !err.contains("%23") && !err.contains('{'),
        "{err}"
    );
    // the gateway logs a rejected reload
    std::fs::write(gw.dir.path().join("switchyard.yaml"), "upstreams: [").unwrap();
    let (ok, _, _) = cli(&gw, &["reload"]);
    assert!(!ok);
    assert!(gw.logs().contains("reload rejected"), "{}", gw.logs());
}

#[test]
fn json_logs_carry_key_events_as_fields_and_the_start_is_quiet() {
    let mock = MockUpstream::start(|req: &Request| {
        if key_no(req) == 1 {
            return rate_limited(&[("retry-after", "120")], "");
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "log: {{format: json}}\nupstreams:\n{}",
        up_yaml(&mock, "up", 2, "    key_strategy: sticky\n")
    ));
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let event = loop {
        let logs = gw.logs();
        let found = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "key_cooldown");
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no key_cooldown event:\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(event["target"], "switchyard::keys");
    assert!(
        event["key"].as_str().unwrap().starts_with("up#1 (…"),
        "{event}"
    );
    assert_eq!(event["upstream"], "up");
    assert!(
        event["next"].as_str().unwrap().starts_with("up#2"),
        "{event}"
    );
    assert!(event["reason"].as_str().unwrap().contains("429"), "{event}");
    let until = humantime::parse_rfc3339(event["until"].as_str().unwrap()).unwrap();
    let ahead = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!((110..=121).contains(&ahead.as_secs()), "{ahead:?}");
    assert!(event["message"].as_str().unwrap().contains("cooling until"));
    let logs = gw.logs();
    assert!(!logs.contains(&key(1)), "no key in the logs");
    // Pingora's start sequence is debug detail
    assert!(
        !logs.contains("Bootstrap starting") && !logs.contains("Starting service"),
        "{logs}"
    );
}

#[test]
fn daemon_mode_logs_to_the_error_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("switchyard.log");
    let pid = dir.path().join("switchyard.pid");
    // a config on `port` in the test's directory, with `server` settings
    let config = |name: &str, server: &str| {
        let path = dir.path().join(name);
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin: {{listen: '127.0.0.1:{}'}}\nupstreams: [{{name: d, kind: demo}}]\n{server}",
            free_port()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    };
    let serve_d = |path: &std::path::Path| {
        std::process::Command::new(bin())
            .args(["serve", "-d", "-c"])
            .arg(path)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let out = serve_d(&config("c.yaml", ""));
    assert!(
        !out.status.success(),
        "-d without server.error_log is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.error_log"));

    let with_log = |pid: &std::path::Path| {
        format!(
            "server: {{error_log: '{}', pid_file: '{}'}}\n",
            log.display(),
            pid.display()
        )
    };
    assert!(serve_d(&config("c.yaml", &with_log(&pid))).status.success());
    // `serve -d` returns once the gateway is up, its pid file written
    let read_pid = || -> i32 {
        std::fs::read_to_string(&pid)
            .expect("the pid file exists when serve -d returns")
            .trim()
            .parse()
            .unwrap()
    };
    let written = read_pid();
    assert!(client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .is_ok());
    // a second one on the same port: it fails, and `serve -d` says so
    let other_pid = dir.path().join("other.pid");
    let out = serve_d(&config("other.yaml", &with_log(&other_pid)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(
        !other_pid.exists(),
        "no pid file for a gateway that did not start"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    while client()
        .post(&url)
        .json(&chat("gpt-4o-mini"))
        .send()
        .is_err()
    {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = read_pid();
    assert_eq!(pid, written);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on the daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    assert!(
        text.contains("POST /v1/chat/completions"),
        "the access line is in the log: {text}"
    );
}

#[test]
fn a_model_outside_a_clients_list_is_refused_naming_what_it_may_use() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "clients: [{{name: a, key: client-a-key-0123456789, models: ['gpt-4o*', 'o3-mini']}}]\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "")
    ));
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("client-a-key-0123456789")
        .json(&chat("o1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let msg = r.json::<Value>().unwrap()["error"]["message"].to_string();
    assert!(
        msg.contains("`o1`") && msg.contains("`gpt-4o*`, `o3-mini`"),
        "{msg}"
    );
    assert!(mock
        .requests()
        .iter()
        .all(|r| r.path != "/v1/chat/completions"));
}

#[test]
fn an_oversized_or_broken_model_list_leaves_the_catalogs_names() {
    // 5 MiB of models: more than the gateway reads of a model list
    let huge: Vec<Value> = (0..120_000)
        .map(|i| json!({"id": format!("gpt-bulk-model-number-{i:08}"), "object": "model"}))
        .collect();
    let huge = json!({"object": "list", "data": huge});
    let mock = MockUpstream::start(move |req: &Request| {
        if req.path.ends_with("/models") {
            return Reply::json(200, &huge);
        }
        ok_script(req)
    });
    let gw = Gw::start(&format!(
        "upstreams:\n{}",
        up_yaml(&mock, "up", 1, "    models: ['gpt-4o*']\n")
    ));
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        model_ids(&v),
        ["gpt-4o", "gpt-4o-mini"],
        "the catalog's matches"
    );
    assert!(mock.requests().iter().any(|r| r.path == "/v1/models"));
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
}
