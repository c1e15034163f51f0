//! Run-time client keys, quotas and cost through the real binary: keys
//! made over the admin API work at once (and on a second instance of a
//! fleet), revoked or rotated keys stop, a token quota holds under 16
//! concurrent requests within its documented bound and resets at the
//! period's end (the test clock), and cost is usage × prices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::up_yaml;
use common::redis::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ALPHA: &str = "alpha-key-0123456789abcdef";

/// A completion reporting `prompt` tokens in (`cached` of them from the
/// provider's cache) and `completion` out, after `delay`.
fn usage_script(
    prompt: u64,
    cached: u64,
    completion: u64,
    delay: Duration,
) -> impl Fn(&Request) -> Reply {
    move |req: &Request| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        let mut v = switchyard::mock::chat_completion(&model, "hi");
        v["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}});
        let mut r = Reply::json(200, &v);
        r.delay = delay;
        r
    }
}

fn admin_call(gw: &Gw, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = client();
    let url = format!("http://127.0.0.1:{}{path}", gw.admin_port);
    let req = match method {
        "GET" => c.get(url),
        "PATCH" => c.patch(url),
        _ => c.post(url),
    }
    .header("x-switchyard-actor", "test-suite")
    .header("content-type", "application/json");
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn call(gw: &Gw, key: &str, model: &str) -> reqwest::blocking::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat(model))
        .send()
        .unwrap()
}

fn create(gw: &Gw, body: Value) -> String {
    let (s, v) = admin_call(gw, "POST", "/admin/clients", Some(body));
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

#[test]
fn run_time_keys_work_at_once_stop_when_revoked_and_survive_a_restart() {
    let mock = MockUpstream::start(usage_script(10, 0, 5, Duration::ZERO));
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "state: {{path: '{}'}}\nclients: [{{name: alpha, key: {ALPHA}}}]\nupstreams:\n{}",
        state.path().display(),
        up_yaml(&mock, "up", 1, "")
    );
    let gw = Gw::start(&yaml);
    let key = create(
        &gw,
        json!({"name": "team-a", "models": ["gpt-4o"], "rpm": 100, "notes": "first"}),
    );
    assert!(key.starts_with("sy-") && key.len() == 67, "{key}");
    // works at once, for its models only
    assert_eq!(call(&gw, &key, "gpt-4o").status(), 200);
    assert_eq!(call(&gw, &key, "gpt-4.1").status(), 403);
    assert_eq!(
        client_calls(&mock).len(),
        1,
        "the refused model never reached the upstream"
    );
    assert_eq!(client_calls(&mock)[0].json()["model"], "gpt-4o");
    // the list: the config file's client read only, the key never shown again
    let (_, list) = admin_call(&gw, "GET", "/admin/clients", None);
    assert!(!list.to_string().contains(&key[3..]), "{list}");
    let clients = list["clients"].as_array().unwrap();
    assert_eq!(
        (
            clients[0]["name"].as_str(),
            clients[0]["read_only"].as_bool()
        ),
        (Some("alpha"), Some(true))
    );
    let team = &clients[1];
    assert_eq!(
        (team["source"].as_str(), team["rpm"].as_u64()),
        (Some("runtime"), Some(100))
    );
    assert_eq!(team["key_hint"], format!("…{}", &key[key.len() - 4..]));
    assert_eq!(team["usage"]["rpm_used"], 2, "{team}");
    assert!(team["last_seen"].is_string(), "{team}");
    // what it sees of itself, and nothing of alpha
    let me: Value = client()
        .get(gw.url("/v1/me"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (me["name"].as_str(), me["limits"]["rpm"].as_u64()),
        (Some("team-a"), Some(100)),
        "{me}"
    );
    assert!(!me.to_string().contains("alpha"), "{me}");
    // the config file's client cannot be changed here
    let (s, v) = admin_call(&gw, "POST", "/admin/clients/alpha/revoke", None);
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("read_only_client")),
        "{v}"
    );
    // an update takes effect at once
    let (s, v) = admin_call(
        &gw,
        "PATCH",
        "/admin/clients/team-a",
        Some(json!({"models": null, "rpm": 200})),
    );
    assert_eq!((s, v["rpm"].as_u64()), (200, Some(200)), "{v}");
    assert_eq!(call(&gw, &key, "gpt-4.1").status(), 200);
    // rotate: the old key stops, the new one works
    let (s, v) = admin_call(&gw, "POST", "/admin/clients/team-a/rotate", None);
    assert_eq!(s, 200, "{v}");
    let new_key = v["key"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, &key, "gpt-4o").status(), 401);
    assert_eq!(call(&gw, &new_key, "gpt-4o").status(), 200);
    // revoke: 401 at once on this instance
    let (s, v) = admin_call(&gw, "POST", "/admin/clients/team-a/revoke", None);
    assert_eq!((s, v["status"].as_str()), (200, Some("revoked")), "{v}");
    let r = call(&gw, &new_key, "gpt-4o");
    assert_eq!(r.status(), 401);
    // every change is in the audit list, newest first, with who and where
    let (_, audit) = admin_call(&gw, "GET", "/admin/clients/audit", None);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "rotate", "update", "create"], "{audit}");
    assert_eq!(audit["audit"][0]["actor"], "test-suite");
    assert!(audit["audit"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1"));
    assert_eq!(
        audit["audit"][2]["detail"],
        "models [\"gpt-4o\"] → []; rpm 100 → 200"
    );
    // a second client, then a restart: it is still served, the revoked one not
    let kept = create(
        &gw,
        json!({"name": "team-b", "quotas": [{"per": "day", "tokens": 1000}]}),
    );
    assert_eq!(call(&gw, &kept, "gpt-4o").status(), 200);
    // the usage log is written every 100 ms: then the restart
    std::thread::sleep(Duration::from_millis(500));
    drop(gw);
    let db = std::fs::read(state.path().join("tenants.db")).unwrap();
    for k in [&key, &new_key, &kept] {
        assert!(
            !String::from_utf8_lossy(&db).contains(k.as_str()),
            "a key was stored"
        );
    }
    let gw = Gw::start(&yaml);
    // what the day used before the restart still counts
    let (_, v) = admin_call(&gw, "GET", "/admin/clients/team-b", None);
    assert_eq!(v["quotas"][0]["used"], 15, "{v}");
    assert_eq!(call(&gw, &kept, "gpt-4o").status(), 200);
    assert_eq!(call(&gw, &new_key, "gpt-4o").status(), 401);
    assert_eq!(call(&gw, ALPHA, "gpt-4o").status(), 200);
    assert!(!gw.logs().contains(&kept[3..]), "a key reached the log");
}

#[test]
fn bad_client_input_is_refused_naming_the_field() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "clients: [{{name: alpha, key: {ALPHA}}}]\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "")
    ));
    create(&gw, json!({"name": "team-a"}));
    for (body, field, words) in [
        (
            json!({"name": "alpha"}),
            "name",
            "exists (in the config file)",
        ),
        (
            json!({"name": "team-a"}),
            "name",
            "exists (made at run time)",
        ),
        (json!({"name": "x", "key": "too-short"}), "key", "too short"),
        (
            json!({"name": "x", "key": ALPHA}),
            "key",
            "another client has this key",
        ),
        (
            json!({"name": "x", "quotas": [{"per": "day", "tokens": -5}]}),
            "quotas[0].tokens",
            "whole number",
        ),
        (
            json!({"name": "x", "quotas": [{"per": "month", "usd": 1e15}]}),
            "quotas[0].usd",
            "amount",
        ),
        (json!({"name": "x", "rpm": -1}), "rpm", "invalid value"),
        (
            json!({"name": "<img src=x onerror=alert(1)>"}),
            "name",
            "letters",
        ),
        (json!({"name": "x", "limits": 1}), "limits", "unknown field"),
    ] {
        let (s, v) = admin_call(&gw, "POST", "/admin/clients", Some(body.clone()));
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], field, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(field) && msg.contains(words),
            "{body}: {msg}"
        );
    }
    let (s, _) = admin_call(&gw, "GET", "/admin/clients/nobody", None);
    assert_eq!(s, 404);
    let (s, _) = admin_call(&gw, "GET", "/admin/clientsteam-a", None);
    assert_eq!(s, 404, "not a path of the clients API");
    // what a web page could send: refused, and nothing was made or revoked
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", gw.admin_port);
    let plain = client()
        .post(url("/admin/clients"))
        .header("content-type", "text/plain")
        .body(r#"{"name": "from-a-page", "key": "chosen-by-the-page-0123456789"}"#)
        .send()
        .unwrap();
    assert_eq!(plain.status(), 415);
    let cross = client()
        .post(url("/admin/clients/team-a/revoke"))
        .header("content-type", "application/json")
        .header("sec-fetch-site", "cross-site")
        .send()
        .unwrap();
    assert_eq!(cross.status(), 403);
    let (_, list) = admin_call(&gw, "GET", "/admin/clients", None);
    assert!(!list.to_string().contains("from-a-page"), "{list}");
    assert_eq!(list["clients"][1]["status"], "active", "{list}");
    // `clients: []` in the file still admits no one, loopback included
    let closed = Gw::start(&format!(
        "clients: []\nupstreams:\n{}",
        up_yaml(&mock, "up", 1, "")
    ));
    assert_eq!(chat_status(&closed, None, "gpt-4o"), 401);
    // a price for a model nobody serves is a config error naming it
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!(
            "prices: {{nope-model: {{input: 1, output: 2}}, gpt-4o: {{input: -1, output: 2}}}}\nupstreams:\n{}",
            up_yaml(&mock, "up", 1, "    models: [gpt-4o]\n")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .arg("--no-env-file")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("prices.nope-model: unknown model"), "{text}");
    assert!(text.contains("prices.gpt-4o.input:"), "{text}");
}

/// A refused call: status, body, `x-should-retry`.
type Refusal = (u16, Value, String);

/// 16 threads call until refused; (answered, refused answers).
fn hammer(gw: &Gw, key: &str) -> (usize, Vec<Refusal>) {
    let results: Vec<(usize, Vec<Refusal>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let mut ok = 0;
                    let mut refused = Vec::new();
                    for _ in 0..20 {
                        let body = json!({"model": "gpt-4o", "max_tokens": 200,
                            "messages": [{"role": "user", "content": "hello"}]});
                        let r = client()
                            .post(gw.url("/v1/chat/completions"))
                            .bearer_auth(key)
                            .json(&body)
                            .send()
                            .unwrap();
                        let status = r.status().as_u16();
                        if status == 200 {
                            ok += 1;
                            continue;
                        }
                        let retry = r
                            .headers()
                            .get("x-should-retry")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        refused.push((status, r.json().unwrap(), retry));
                        break;
                    }
                    (ok, refused)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().map(|r| r.0).sum();
    (ok, results.into_iter().flat_map(|r| r.1).collect())
}

#[test]
fn a_token_quota_holds_under_16_concurrent_requests_and_resets_with_the_day() {
    // each call: 100 tokens used; it reserves more (its max_tokens 200 and the prompt)
    let mock = MockUpstream::start(usage_script(60, 0, 40, Duration::from_millis(30)));
    let gw = Gw::start_env(
        &format!("upstreams:\n{}", up_yaml(&mock, "up", 1, "")),
        &[("SWITCHYARD_TEST_CLOCK", "1")],
    );
    let key = create(
        &gw,
        json!({"name": "q", "quotas": [{"per": "day", "tokens": 1000}]}),
    );
    let (ok, refused) = hammer(&gw, &key);
    let used = ok as u64 * 100;
    eprintln!("quota 1000 tokens, 16 threads: {ok} calls answered, {used} tokens used");
    // the bound (README): one reservation (about 200 + the prompt) past the quota
    assert!(
        (1000..1000 + 260).contains(&used),
        "used {used} tokens in {ok} calls"
    );
    assert_eq!(
        client_calls(&mock).len(),
        ok,
        "each answered call reached the upstream once"
    );
    assert_eq!(refused.len(), 16, "every thread was refused in the end");
    for (status, body, retry) in &refused {
        assert_eq!(*status, 429);
        assert_eq!(
            (body["error"]["type"].as_str(), retry.as_str()),
            (Some("insufficient_quota"), "false"),
            "{body}"
        );
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("Client `q` has used ") && msg.contains("of its 1,000 tokens per day"),
            "{msg}"
        );
        assert!(
            msg.contains("T00:00:00Z"),
            "resets at a UTC midnight: {msg}"
        );
    }
    // nor can it go on through paths the gateway does not meter
    let files = client()
        .get(gw.url("/v1/files"))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(files.status(), 429);
    assert_eq!(
        client_calls(&mock).len(),
        ok,
        "the refused call did not reach the upstream"
    );
    let (_, v) = admin_call(&gw, "GET", "/admin/clients/q", None);
    assert_eq!(v["quotas"][0]["used"].as_u64(), Some(used), "{v}");
    assert_eq!(v["quotas"][0]["reserved"].as_u64(), Some(0), "{v}");
    // the next day (the test clock): the quota is whole again
    let (s, _) = admin_call(&gw, "POST", "/admin/clock?advance=24h", None);
    assert_eq!(s, 200);
    assert_eq!(call(&gw, &key, "gpt-4o").status(), 200);
    let (_, v) = admin_call(&gw, "GET", "/admin/clients/q", None);
    assert_eq!(v["quotas"][0]["used"].as_u64(), Some(100), "{v}");
    // warnings were logged and counted as the quota filled
    let m = gw.metrics();
    for t in ["80%", "95%"] {
        assert_eq!(
            series(
                &m,
                "switchyard_quota_warnings_total",
                &[("owner", "client q"), ("threshold", t)]
            ),
            1.0,
            "{t}"
        );
    }
    assert!(
        gw.logs().contains("quota: client q has used"),
        "{}",
        gw.logs()
    );
}

#[test]
fn cost_in_usage_is_tokens_times_prices_and_a_money_quota_stops_the_client() {
    // 1000 in (200 from the provider's cache), 500 out, every call
    let mock = MockUpstream::start(usage_script(1000, 200, 500, Duration::ZERO));
    let gw = Gw::start(&format!(
        "clients: [{{name: alpha, key: {ALPHA}, quotas: [{{per: month, usd: 0.02}}]}}]\n\
         prices: {{gpt-4o: {{input: 2.5, cached_input: 1.25, output: 10}}, my-model: {{input: 1, output: 2}}}}\n\
         upstreams:\n{}",
        up_yaml(&mock, "up", 1, "    models: [gpt-4o, my-model]\n")
    ));
    for model in ["my-model", "my-model", "gpt-4o", "gpt-4o", "gpt-4o"] {
        assert_eq!(call(&gw, ALPHA, model).status(), 200, "{model}");
    }
    // (800 × 2.5 + 200 × 1.25 + 500 × 10) / 10⁶ and (1000 × 1 + 500 × 2) / 10⁶
    let (gpt, mine) = (0.00725, 0.002);
    let r = call(&gw, ALPHA, "gpt-4o");
    assert_eq!(r.status(), 429);
    let body: Value = r.json().unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("has used $0.0257 of its $0.02 per month"),
        "{msg}"
    );
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let by_model = gw.admin_json("/admin/usage?by=model");
    let cost = |name: &str| {
        by_model["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == name)
            .unwrap()["cost_usd"]
            .as_f64()
            .unwrap()
    };
    assert!(close(cost("gpt-4o"), 3.0 * gpt), "{by_model}");
    assert!(close(cost("my-model"), 2.0 * mine), "{by_model}");
    let by_client = gw.admin_json("/admin/usage?by=client");
    assert!(
        close(
            by_client["rows"][0]["cost_usd"].as_f64().unwrap(),
            3.0 * gpt + 2.0 * mine
        ),
        "{by_client}"
    );
    let requests = gw.admin_json("/admin/requests?limit=10");
    let costs: Vec<f64> = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .collect();
    assert!(
        costs.iter().filter(|c| close(**c, gpt)).count() == 3,
        "{requests}"
    );
    let me: Value = client()
        .get(gw.url("/v1/me"))
        .bearer_auth(ALPHA)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        close(
            me["quotas"][0]["used"].as_f64().unwrap(),
            3.0 * gpt + 2.0 * mine
        ),
        "{me}"
    );
    assert!(
        close(
            me["spend"]["month_usd"].as_f64().unwrap(),
            3.0 * gpt + 2.0 * mine
        ),
        "{me}"
    );
    let series = gw.admin_json("/admin/usage/series?by=model&bucket=day");
    let total: f64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(close(total, 3.0 * gpt + 2.0 * mine), "{series}");
}

#[test]
fn cli_makes_lists_and_revokes_keys() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!("upstreams:\n{}", up_yaml(&mock, "up", 1, "")));
    let (ok, out, err) = cli(
        &gw,
        &[
            "clients",
            "create",
            "cli-team",
            "--rpm",
            "5",
            "--quota",
            "2000tokens/day",
        ],
    );
    assert!(ok, "{out}{err}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("sy-"))
        .expect("the key is printed")
        .to_string();
    assert!(out.contains("will not be shown again"), "{out}");
    assert_eq!(call(&gw, &key, "gpt-4o").status(), 200);
    let (ok, out, _) = cli(&gw, &["clients", "list"]);
    assert!(
        ok && out.contains("cli-team") && !out.contains(&key),
        "{out}"
    );
    let (ok, out, err) = cli(&gw, &["clients", "create", "cli-team"]);
    assert!(!ok && (out + &err).contains("exists"));
    let (ok, _, err) = cli(&gw, &["clients", "create", "x", "--quota=-5tokens/day"]);
    assert!(!ok && err.contains("--quota"), "{err}");
    let (ok, out, err) = cli(&gw, &["clients", "revoke", "cli-team"]);
    assert!(ok, "{out}{err}");
    assert_eq!(call(&gw, &key, "gpt-4o").status(), 401);
    let (ok, out, _) = cli(&gw, &["clients", "audit"]);
    assert!(
        ok && out.contains("revoke") && out.contains("create"),
        "{out}"
    );
}

#[test]
fn a_fleet_shares_run_time_keys_revocations_and_quota_use() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(usage_script(60, 0, 40, Duration::ZERO));
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let gws: Vec<Gw> = dirs
        .iter()
        .map(|d| {
            Gw::start(&format!(
                "state: {{path: '{}', redis: {{url: '{}', prefix: tenants-test, timeout: 500ms}}}}\n\
                 clients: [{{name: other, key: other-key-0123456789abcdef}}]\nupstreams:\n{}",
                d.path().display(),
                redis.url(),
                up_yaml(&mock, "up", 1, "")
            ))
        })
        .collect();
    for gw in &gws {
        within(Duration::from_secs(5), "the store is up", || {
            gw.admin_json("/health")["store"] == "up"
        });
    }
    let key = create(
        &gws[0],
        json!({"name": "shared", "quotas": [{"per": "day", "tokens": 300}]}),
    );
    assert_eq!(call(&gws[0], &key, "gpt-4o").status(), 200);
    let took = within(
        Duration::from_secs(1),
        "the new key works on the other instance",
        || call(&gws[1], &key, "gpt-4o").status() == 200,
    );
    eprintln!("new key served by the second instance after {took:?}");
    // 200 tokens used across the fleet: once traded, the 3rd call on either fills it
    // (each instance trades its use once a second: two rounds each)
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(call(&gws[1], &key, "gpt-4o").status(), 200);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        call(&gws[0], &key, "gpt-4o").status(),
        429,
        "the fleet's use counts"
    );
    // a revoke on one instance reaches the other within a second
    let start = Instant::now();
    let (s, _) = admin_call(&gws[0], "POST", "/admin/clients/shared/revoke", None);
    assert_eq!(s, 200);
    let took = within(
        Duration::from_secs(1),
        "the revoked key is refused on the other instance",
        || call(&gws[1], &key, "gpt-4o").status() == 401,
    );
    eprintln!(
        "revoked key refused by the second instance after {:?}",
        start.elapsed().max(took)
    );
    let (_, audit) = admin_call(&gws[1], "GET", "/admin/clients/audit", None);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "create"], "{audit}");
}

#[test]
fn a_fleet_never_loses_a_revoke_nor_the_clients_of_an_instance_that_joins() {
    let redis = Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(usage_script(10, 0, 5, Duration::ZERO));
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let yaml = |d: &tempfile::TempDir, fleet: bool| {
        let redis = if fleet {
            format!(
                ", redis: {{url: '{}', prefix: join-test, timeout: 500ms}}",
                redis.url()
            )
        } else {
            String::new()
        };
        format!(
            "state: {{path: '{}'{redis}}}\nclients: [{{name: other, key: other-key-0123456789abcdef}}]\nupstreams:\n{}",
            d.path().display(),
            up_yaml(&mock, "up", 1, "")
        )
    };
    // made on an instance on its own, which then joins a fleet
    let alone = Gw::start(&yaml(&dirs[0], false));
    let key = create(&alone, json!({"name": "early"}));
    drop(alone);
    let a = Gw::start(&yaml(&dirs[0], true));
    let b = Gw::start(&yaml(&dirs[1], true));
    within(
        Duration::from_secs(5),
        "the joining instance's client reaches the other",
        || call(&b, &key, "gpt-4o").status() == 200,
    );
    assert_eq!(call(&a, &key, "gpt-4o").status(), 200);
    // a change on B racing a revoke on A: the revoke stands everywhere
    let (s, _) = admin_call(&a, "POST", "/admin/clients/early/revoke", None);
    assert_eq!(s, 200);
    let (s, v) = admin_call(
        &b,
        "PATCH",
        "/admin/clients/early",
        Some(json!({"notes": "raced"})),
    );
    assert!(
        s == 409 || (s == 200 && v["status"] == "revoked"),
        "{s} {v}"
    );
    for gw in [&a, &b] {
        within(Duration::from_secs(1), "revoked on both", || {
            call(gw, &key, "gpt-4o").status() == 401
        });
        let (_, v) = admin_call(gw, "GET", "/admin/clients/early", None);
        assert_eq!(v["status"], "revoked", "{v}");
    }
}
