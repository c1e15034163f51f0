//! The dashboard in a real browser: Debian's headless Chromium driven by
//! chromedriver over the WebDriver protocol, against the real binary and a
//! mock upstream. The page loads (after asking for the admin token) with no
//! console errors, shows a key cooling after a scripted 429, a key action
//! changes the table, and the chat playground streams an answer through the
//! gateway. The screenshot is kept as `target/dashboard.png`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/deps.sh
//! test` installs them); without them the test fails, unless
//! `SWITCHYARD_SKIP_BROWSER=1` says to skip it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::keys::*;
use common::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-admin-token-42";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    fn start() -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            if std::env::var("SWITCHYARD_SKIP_BROWSER").as_deref() == Ok("1") {
                eprintln!("dashboard browser test skipped (SWITCHYARD_SKIP_BROWSER=1)");
                return None;
            }
            panic!("{chromium} and {driver} are needed (apt-get install chromium chromium-driver, or scripts/deps.sh test)");
        }
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = Browser {
            driver: child,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        let start = Instant::now();
        while b.http.get(format!("{}/status", b.base)).send().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,2200", "--no-first-run", "--disable-extensions"]},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let v = b.post("/session", &caps);
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"));
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Runs `script` in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", &json!({"script": script, "args": []}))["value"].clone()
    }

    /// Waits (up to 15 s) until `script` returns something truthy; returns it.
    fn until(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let body = self.js("return document.body.innerText");
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let r = self.js(&format!(
            "const e = document.querySelector({css:?}); if (!e) return false; e.click(); return true;"
        ));
        assert_eq!(r, json!(true), "no element {css}");
    }

    /// Browser console entries at level SEVERE (errors).
    fn console_errors(&self) -> Vec<String> {
        let v = self.post("/se/log", &json!({"type": "browser"}));
        let entries = v["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no browser log: {v}"));
        entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let v = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["value"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

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

#[test]
fn dashboard_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let mock = MockUpstream::start(script);
    let gw = Gw::with_admin_token(
        TOKEN,
        &format!(
            "upstreams:\n{}",
            up_yaml(&mock, "mock", 2, "    models: [gpt-4o]\n")
        ),
    );

    browser.post("/url", &json!({"url": gw.admin("/")}));
    // the page asks for the admin token first
    browser.until(
        "the token prompt",
        "return getComputedStyle(document.getElementById('login')).display === 'flex'",
    );
    browser.js(&format!(
        "document.getElementById('login-token').value = {TOKEN:?}; document.getElementById('login-form').requestSubmit(); return true;"
    ));
    browser.until(
        "the key table",
        "return document.querySelectorAll('#keys tbody tr').length === 2",
    );
    // a scripted 429 on key 1: the table shows it cooling, with a countdown
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o")).status(),
        200
    );
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

    // the playground streams an answer through the gateway's API listener
    browser.until(
        "the playground's model list",
        "return document.getElementById('pg-model').options.length === 1",
    );
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
    assert_eq!(sent[0].json()["model"], "gpt-4o");

    // charts drawn by uPlot, and the recent requests listed
    browser.until(
        "the charts",
        "return document.querySelectorAll('.uplot').length === 2",
    );
    browser.until(
        "recent requests",
        "return document.querySelectorAll('#requests tbody tr').length >= 2",
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
