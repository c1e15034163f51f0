//! Debian's headless Chromium driven by chromedriver over the WebDriver
//! protocol, for the dashboard suites.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    /// Opens the dashboard at `url`, which asks for the admin token first,
    /// and gives it `token`.
    pub fn log_in(&self, url: &str, token: &str) {
        self.post("/url", &json!({"url": url}));
        self.until(
            "the token prompt",
            "return getComputedStyle(document.getElementById('login')).display === 'flex'",
        );
        self.js(&format!(
            "document.getElementById('login-token').value = {token:?}; document.getElementById('login-form').requestSubmit(); return true;"
        ));
    }

    pub fn start() -> Option<Browser> {
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

    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Runs `script` in the page; its return value.
    pub fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", &json!({"script": script, "args": []}))["value"].clone()
    }

    /// Waits (up to 15 s) until `script` returns something truthy; returns it.
    pub fn until(&self, what: &str, script: &str) -> Value {
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

    /// Sets the form control `id` to `value` and fires `event` on it, as
    /// typing or choosing does.
    pub fn set(&self, id: &str, value: &str, event: &str) {
        let r = self.js(&format!(
            "const e = document.getElementById({id:?}); if (!e) return false; e.value = {value:?}; e.dispatchEvent(new Event({event:?}, {{bubbles: true}})); return true;"
        ));
        assert_eq!(r, json!(true), "no element #{id}");
    }

    pub fn click(&self, css: &str) {
        let r = self.js(&format!(
            "const e = document.querySelector({css:?}); if (!e) return false; e.click(); return true;"
        ));
        assert_eq!(r, json!(true), "no element {css}");
    }

    /// Browser console entries at level SEVERE (errors).
    pub fn console_errors(&self) -> Vec<String> {
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

    pub fn screenshot(&self, path: &std::path::Path) {
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
