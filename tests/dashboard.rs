//! The dashboard in a real browser: Debian's headless Chromium driven by
//! chromedriver over the WebDriver protocol, against the real binary and a
//! mock upstream. The page loads (after asking for the admin token) with no
//! console errors, shows a key cooling after a scripted 429, a key action
//! changes the table, the chat playground (a model input with the listed
//! models as suggestions) streams an answer through the gateway, the request
//! log filters by status, client and model, usage over time is drawn by
//! client and by model, refused requests are labelled and listed last, the
//! page fits a 420 px window, and "Log out" forgets the token. The
//! screenshot is kept as `target/dashboard.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/deps.sh
//! test` installs them); without them the test fails, unless
//! `SWITCHYARD_SKIP_BROWSER=1` says to skip it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::browser::Browser;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "dashboard-admin-token-42";
const ALPHA: &str = "client-alpha-key-0123456789abcdef";
const BETA: &str = "client-beta-key-fedcba9876543210";
const REFUSED: &str = "(refused before routing)";

/// Key 1 answers 429 (retry in 90 s); the others answer, streams event by event.
fn script(req: &Request) -> Reply {
    if key_no(req) == 1 {
        return rate_limited(&[("retry-after", "90")], "");
    }
    if req.json()["stream"] == json!(true) {
        return Reply::sse(
            switchyard::mock::chat_stream_events("gpt-4o", 5, false),
            Duration::from_millis(40),
        );
    }
    ok_script(req)
}

/// Script that sets `rows`: the recent requests table's rows as
/// [status, client, model] (not the "no request matches" row).
const REQUEST_ROWS: &str = "const rows = [...document.querySelectorAll('#requests tbody tr[data-status]')].map((tr) => [Number(tr.dataset.status), tr.children[1].textContent, tr.children[2].textContent]);";

#[test]
fn dashboard_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let mock = MockUpstream::start(script);
    let gw = Gw::with_admin_token(
        TOKEN,
        &format!(
            "clients: [{{name: alpha, key: '{ALPHA}'}}, {{name: beta, key: '{BETA}'}}]\nupstreams:\n{}",
            up_yaml(&mock, "mock", 2, "    models: [gpt-4o]\n")
        ),
    );

    // the page asks for the admin token first
    browser.log_in(&gw.admin("/"), TOKEN);
    browser.until(
        "the key table",
        "return document.querySelectorAll('#keys tbody tr').length === 2",
    );
    // only shown when the admin API needs a token, as here
    browser.until(
        "the log out button",
        "return getComputedStyle(document.getElementById('logout')).display !== 'none'",
    );
    // a scripted 429 on key 1: the table shows it cooling, with a countdown
    assert_eq!(chat_status(&gw, Some(ALPHA), "gpt-4o"), 200);
    let state = browser.until(
        "key 1 cooling",
        r#"const s = document.querySelector('tr[data-key="mock#1"] .state'); return s && s.textContent === 'cooling' && s.textContent"#,
    );
    assert_eq!(state, "cooling");
    let countdown = browser
        .js(r#"return document.querySelector('tr[data-key="mock#1"] td.countdown').textContent"#);
    let countdown = countdown.as_str().unwrap().to_string();
    assert!(
        countdown.ends_with('s') && countdown.len() >= 2,
        "{countdown}"
    );
    let page = browser
        .js("return document.body.innerText")
        .as_str()
        .unwrap()
        .to_string();
    assert!(!page.contains("sk-pool-test-key"), "a secret on the page");
    assert!(!page.contains(TOKEN), "the admin token on the page");
    assert!(page.contains("times in UTC"), "{page}");

    // a key action: disable key 2 from the table
    browser.click(r#"tr[data-key="mock#2"] button:first-of-type"#);
    browser.until(
        "key 2 parked",
        r#"const s = document.querySelector('tr[data-key="mock#2"] .state'); return s && s.textContent === 'parked'"#,
    );
    let keys = client()
        .get(gw.admin("/admin/keys"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(keys["keys"][1]["state"], "parked", "{keys}");
    browser.click(r#"tr[data-key="mock#2"] button:first-of-type"#);
    browser.until(
        "key 2 active again",
        r#"const s = document.querySelector('tr[data-key="mock#2"] .state'); return s && s.textContent === 'active'"#,
    );

    // the playground's model is typed, suggested from the listed models
    let models = client()
        .get(gw.admin("/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["models"]
        .clone();
    let first = models[0]
        .as_str()
        .unwrap_or_else(|| panic!("no listed models: {models}"));
    assert!(
        models.as_array().unwrap().contains(&json!("gpt-4o")),
        "{models}"
    );
    let field = browser.js(
        "const i = document.getElementById('pg-model'); return [i.tagName, i.list && i.list.id]",
    );
    assert_eq!(field, json!(["INPUT", "pg-models"]));
    let listed = browser.until(
        "the playground's model suggestions",
        "const o = [...document.getElementById('pg-models').options].map((o) => o.value); return o.length > 0 && JSON.stringify(o)",
    );
    assert_eq!(listed, json!(models.to_string()));
    // the playground streams an answer through the gateway's API listener;
    // with the field empty it asks for the first listed model
    assert_eq!(
        browser.js("return document.getElementById('pg-model').value"),
        ""
    );
    browser.set("pg-key", ALPHA, "input");
    mock.clear();
    browser.click("#pg-send");
    browser.until(
        "the streamed answer",
        "return document.getElementById('pg-status').textContent.startsWith('done')",
    );
    let answer = browser.js("return document.getElementById('answer').textContent");
    assert_eq!(answer, "tok0 tok1 tok2 tok3 tok4 ");
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json()["stream"], true);
    assert_eq!(sent[0].json()["model"], first);

    // more traffic: refused before routing (no client key), an unknown
    // model (404), and a second client
    assert_eq!(chat_status(&gw, None, "gpt-4o"), 401);
    assert_eq!(chat_status(&gw, Some(BETA), "no-such-model"), 404);
    assert_eq!(chat_status(&gw, Some(BETA), "gpt-4o"), 200);

    // charts drawn by uPlot (requests, latency, usage over time), and the
    // recent requests listed
    browser.until(
        "the charts",
        "return document.querySelectorAll('#chart-rps .uplot, #chart-lat .uplot, #chart-usage .uplot').length === 3",
    );
    browser.until(
        "recent requests",
        "return document.querySelectorAll('#requests tbody tr[data-status]').length >= 5",
    );

    // usage over time: one series per client, then per model (a select
    // loads it again at once, not at the next 30 s refresh)
    let legend = "return [...document.querySelectorAll('#chart-usage .u-legend .u-label')].slice(1).map((l) => l.textContent)";
    browser.set("usage-by", "client", "change");
    let series = browser.until(
        "usage over time by client",
        &format!("const s = (() => {{ {legend} }})(); return s.includes('alpha') && s.includes('beta') && s"),
    );
    assert!(
        series.as_array().unwrap().iter().any(|s| s == REFUSED),
        "{series}"
    );
    browser.set("usage-by", "model", "change");
    let series = browser.until(
        "usage over time by model",
        &format!("const s = (() => {{ {legend} }})(); return s.includes('gpt-4o') && s"),
    );
    let series = series.as_array().unwrap();
    assert!(series.iter().any(|s| s == "no-such-model"), "{series:?}");
    assert!(!series.iter().any(|s| s == "alpha"), "{series:?}");
    browser.set("usage-period", "30d", "change");
    browser.until(
        "usage over 30 days",
        &format!("const s = (() => {{ {legend} }})(); return document.getElementById('usage-msg').textContent.includes('daily') && s.includes('gpt-4o')"),
    );

    // the tokens table: refused requests labelled, and last of their group
    for by in ["model", "client"] {
        let last = browser.until(
            &format!("the refused {by} row last"),
            &format!(
                "const r = [...document.querySelectorAll('#tokens tbody tr[data-by={by}]')]; const n = r.map((tr) => tr.children[1].textContent); return n.length >= 2 && n.includes({REFUSED:?}) && n[n.length - 1]"
            ),
        );
        assert_eq!(last, REFUSED, "{by}");
    }

    // the request log filtered by status: errors only (401, 404)
    browser.set("f-status", "errors", "change");
    let rows = browser.until(
        "only errors listed",
        &format!("{REQUEST_ROWS} const s = rows.map((r) => r[0]); return s.length > 0 && s.every((x) => x >= 400) && s.includes(401) && s.includes(404) && rows"),
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r[0].as_u64().unwrap() >= 400),
        "{rows}"
    );
    // and by client (typed: the filter applies once typing pauses)
    browser.set("f-client", "beta", "input");
    let rows = browser.until(
        "beta's errors",
        &format!(
            "{REQUEST_ROWS} return rows.length > 0 && rows.every((r) => r[1] === 'beta') && rows"
        ),
    );
    assert_eq!(rows, json!([[404, "beta", "no-such-model"]]));
    // by client and model, any status
    browser.set("f-status", "", "change");
    browser.set("f-model", "gpt-4o", "input");
    let rows = browser.until(
        "beta's gpt-4o calls",
        &format!("{REQUEST_ROWS} return rows.length > 0 && rows.every((r) => r[1] === 'beta' && r[2] === 'gpt-4o') && rows"),
    );
    assert_eq!(rows, json!([[200, "beta", "gpt-4o"]]));
    assert_eq!(
        browser.js("return document.getElementById('f-client').value"),
        "beta",
        "a refresh kept what was typed"
    );
    // the playground's stream: its time to first token and request id shown
    browser.set("f-client", "alpha", "input");
    browser.set("f-model", "", "input");
    browser.set("f-since", "15m", "change");
    browser.until(
        "alpha's streamed call with its TTFT",
        "const r = [...document.querySelectorAll('#requests tbody tr[data-status]')]; return r.length > 0 && r.every((tr) => tr.children[1].textContent === 'alpha' && tr.querySelector('td.rid').textContent !== '') && r.some((tr) => / ms$/.test(tr.querySelector('td.ttft').textContent))",
    );
    browser.set("f-client", "", "input");
    browser.set("f-since", "", "change");

    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // a narrow window: no sideways scrolling of the page, and the charts
    // shrink to their sections
    let rect = browser.post("/window/rect", &json!({"width": 420, "height": 900}));
    assert!(rect["value"]["width"].as_u64().is_some(), "{rect}");
    browser.until(
        "the page at 420 px",
        "return window.innerWidth <= 440 && document.documentElement.scrollWidth <= window.innerWidth + 1",
    );
    browser.until(
        "the charts resized",
        "return [...document.querySelectorAll('.uplot')].every((u) => u.querySelector('.u-wrap').offsetWidth <= u.parentNode.clientWidth + 1)",
    );

    // log out: the token is forgotten and asked for again
    browser.click("#logout");
    browser.until(
        "the token prompt after logging out",
        "return getComputedStyle(document.getElementById('login')).display === 'flex'",
    );
    let kept = browser.js(
        "return [sessionStorage.getItem('switchyard-admin-token'), document.querySelectorAll('#keys tbody tr').length]",
    );
    assert_eq!(kept, json!([null, 0]));
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

#[test]
fn the_fleet_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let redis = common::redis::Redis::start(free_port(), &[]);
    let mock = MockUpstream::start(ok_script);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |d: &tempfile::TempDir| {
        Gw::start(&format!(
            "state: {{path: '{}', redis: {{url: '{}', prefix: browser-fleet}}}}\nupstreams:\n{}",
            d.path().display(),
            redis.url(),
            up_yaml(&mock, "mock", 1, "    models: [gpt-4o]\n")
        ))
    };
    let (a, b) = (start(&dirs[0]), start(&dirs[1]));
    for gw in [&a, &b] {
        assert_eq!(chat_status(gw, None, "gpt-4o"), 200);
    }
    common::redis::within(
        Duration::from_secs(15),
        "both instances' usage published",
        || a.admin_json("/admin/usage?by=model&since=1h")["instances"] == 2,
    );
    browser.post("/url", &json!({"url": a.admin("/")}));
    browser.until(
        "two instances listed, this one marked",
        "const r = document.querySelectorAll('#fleet tbody tr'); return !document.getElementById('fleet-section').hidden && r.length === 2 && [...r].some((tr) => tr.textContent.includes('(this)'))",
    );
    // the token table counts every instance's calls
    browser.until(
        "the fleet's usage",
        "return document.getElementById('tokens-scope').textContent.includes('the fleet (2 instances)')",
    );
    // B stops: marked missing after its heartbeat goes stale
    drop(b);
    browser.until(
        "B marked missing",
        "return [...document.querySelectorAll('#fleet tbody tr .state')].some((s) => s.textContent === 'missing')",
    );
    assert!(browser.js("return document.getElementById('fleet-banner').hidden") == json!(true));
    // the store goes away: the banner says so
    drop(redis);
    browser.until(
        "the store-down banner",
        "return !document.getElementById('fleet-banner').hidden",
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

#[test]
fn the_response_cache_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "cache: {{models: ['gpt-*']}}\nupstreams:\n{}",
        up_yaml(&mock, "mock", 1, "    models: [gpt-4o]\n")
    ));
    for _ in 0..3 {
        assert_eq!(chat_status(&gw, None, "gpt-4o"), 200);
    }
    assert_eq!(client_calls(&mock).len(), 1, "one miss, two hits");
    browser.post("/url", &json!({"url": gw.admin("/")}));
    browser.until(
        "the cache section with its hits",
        "const s = document.getElementById('cache-section'); return !s.hidden && s.innerText.includes('hits') && [...document.querySelectorAll('#cache-cards .card')].some((c) => c.innerText.startsWith('2') && c.innerText.includes('hits'))",
    );
    browser.set("cache-model", "gpt-4o", "input");
    browser.click("#cache-purge");
    browser.until(
        "the purge's answer",
        "return document.getElementById('cache-msg').textContent === 'purged 1'",
    );
    assert_eq!(chat_status(&gw, None, "gpt-4o"), 200);
    assert_eq!(client_calls(&mock).len(), 2, "purged: a miss again");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
