//! The dashboard's clients page in a real browser (Chromium through
//! chromedriver), against the real binary and a mock upstream: a config
//! file's client read only, a client created from the form with its key
//! shown once (and nowhere after), refusals shown, revoke and rotate from
//! the table stop the old key at once, the audit and the cost charts.
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
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-admin-token-42";
const ALPHA: &str = "client-alpha-key-0123456789abcdef";

/// The admin API's JSON answer to `GET path`, with the admin token.
fn admin_get(gw: &Gw, path: &str) -> Value {
    client()
        .get(gw.admin(path))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Console errors but the browser's own lines for the refusals this test
/// asks for (a 400 or 409 answer to a client change is logged as
/// "Failed to load resource").
fn unexpected_console_errors(browser: &Browser) -> Vec<String> {
    browser
        .console_errors()
        .into_iter()
        .filter(|m| {
            !(m.contains("/admin/clients - Failed to load resource")
                && (m.contains("status of 400") || m.contains("status of 409")))
        })
        .collect()
}

/// Script that sets `row`: the clients table's row of `name` (or null).
fn client_row(name: &str) -> String {
    format!(
        "const row = [...document.querySelectorAll('#clients-table tbody tr')].find((tr) => tr.dataset.client === {name:?}) || null;"
    )
}

/// Fills the create form with `fields` (id, value) and submits it.
fn create_client(browser: &Browser, fields: &[(&str, &str)]) {
    browser.js("document.getElementById('client-create-form').reset(); return true;");
    for (id, value) in fields {
        browser.set(id, value, "input");
    }
    browser.js("document.getElementById('client-error').textContent = ''; return true;");
    browser.click("#client-create");
}

/// The key the "shown once" box shows, once it shows one other than `old`.
fn new_key(browser: &Browser, old: &str) -> String {
    let key = browser.until(
        "the new key, shown once",
        &format!(
            "const b = document.getElementById('new-key'); const k = document.getElementById('new-key-value').textContent; return !b.hidden && k !== {old:?} && b.textContent.includes('Copy it now: it will not be shown again.') && k"
        ),
    );
    key.as_str().unwrap().to_string()
}

/// The status of a chat call with `key` once it is `want`, waiting at most
/// `limit`; panics with the last status otherwise.
fn call_until(gw: &Gw, key: &str, want: u16, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = chat_status(gw, Some(key), "gpt-4o");
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "the call answered {got}, not {want}, after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_page_in_a_real_browser() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::with_admin_token(
        TOKEN,
        &format!(
            "clients: [{{name: alpha, key: '{ALPHA}', quotas: [{{per: day, tokens: 100000}}]}}]\nupstreams:\n{}",
            up_yaml(&mock, "mock", 1, "    models: [gpt-4o]\n")
        ),
    );
    browser.log_in(&gw.admin("/"), TOKEN);
    browser.click("#nav-clients");
    assert_eq!(browser.js("return location.hash"), "#clients");

    // the config file's client: read only, no buttons, its quota shown
    let alpha = browser.until(
        "alpha listed, read only",
        &format!("{} return row && row.textContent.includes('config file, read only') && row.textContent", client_row("alpha")),
    );
    let alpha = alpha.as_str().unwrap();
    assert!(
        alpha.contains("0 / 100,000 tokens per day, resets "),
        "{alpha}"
    );
    assert_eq!(
        browser.js(&format!(
            "{} return row.querySelectorAll('button.revoke, button.rotate').length",
            client_row("alpha")
        )),
        0
    );

    // a new client from the form: its key shown once
    create_client(
        &browser,
        &[
            ("client-name", "team-web"),
            ("client-models", "gpt-4o"),
            ("client-rpm", "30"),
            ("client-quota-tokens-day", "5000"),
        ],
    );
    let key = new_key(&browser, "");
    assert!(key.starts_with("sy-") && key.len() > 24, "{key}");
    assert_eq!(
        browser.js("return document.getElementById('client-error').textContent"),
        ""
    );
    let row = browser.until(
        "team-web listed",
        &format!("{} return row && row.querySelector('.state').textContent === 'active' && row.textContent", client_row("team-web")),
    );
    let row = row.as_str().unwrap();
    assert!(
        row.contains("/ 30") && row.contains("/ 5,000 tokens per day"),
        "{row}"
    );
    assert!(!row.contains("config file"), "{row}");
    // the key calls the API, and the call reaches the upstream
    mock.clear();
    assert_eq!(chat_status(&gw, Some(&key), "gpt-4o"), 200);
    assert_eq!(client_calls(&mock).len(), 1);
    let clients = admin_get(&gw, "/admin/clients");
    let web = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "team-web")
        .unwrap_or_else(|| panic!("{clients}"));
    assert_eq!(web["rpm"], 30, "{web}");
    assert_eq!(web["source"], "runtime", "{web}");

    // once dismissed, or on a fresh page, the key is nowhere
    browser.click("#new-key-dismiss");
    let found = format!(
        "return [document.documentElement.outerHTML.includes({key:?}), JSON.stringify(localStorage).includes({key:?}), JSON.stringify(sessionStorage).includes({key:?})]"
    );
    assert_eq!(browser.js(&found), json!([false, false, false]));
    browser.post("/refresh", &json!({}));
    browser.until(
        "team-web listed after a reload",
        &format!("{} return row !== null", client_row("team-web")),
    );
    assert_eq!(browser.js(&found), json!([false, false, false]));
    assert_eq!(
        browser.js("return document.getElementById('new-key').hidden"),
        true
    );

    // the audit lists the creation, by the dashboard
    let audit = browser.until(
        "the audit's create",
        "const r = [...document.querySelectorAll('#audit-table tbody tr')].map((tr) => [...tr.children].map((td) => td.textContent)); return r.some((c) => c[3] === 'create' && c[4] === 'team-web' && c[1] === 'dashboard') && r",
    );
    let first = &audit[0];
    assert_eq!(first[1], "dashboard", "{audit}");
    assert_eq!(first[3], "create", "{audit}");

    // the cost charts: one series per client, per model
    let legend = |id: &str| {
        format!("return [...document.querySelectorAll('#{id} .u-legend .u-label')].slice(1).map((l) => l.textContent)")
    };
    browser.until(
        "cost per client",
        &format!(
            "const s = (() => {{ {} }})(); return s.includes('team-web') && s",
            legend("cost-client-chart")
        ),
    );
    browser.until(
        "cost per model",
        &format!(
            "const s = (() => {{ {} }})(); return s.includes('gpt-4o') && s",
            legend("cost-model-chart")
        ),
    );

    // the same name again: refused, the reason shown
    create_client(&browser, &[("client-name", "team-web")]);
    let error = browser.until(
        "the refusal of a second team-web",
        "return document.getElementById('client-error').textContent",
    );
    let error = error.as_str().unwrap();
    assert!(
        error.contains("team-web") && error.contains("exists"),
        "{error}"
    );
    assert_eq!(
        browser.js("return document.getElementById('new-key').hidden"),
        true
    );

    // revoked from its row: the key stops at once
    browser.js("window.confirm = () => true; return true;");
    browser.click(r#"button.revoke[data-client="team-web"]"#);
    call_until(&gw, &key, 401, Duration::from_secs(2));
    assert_eq!(
        client_calls(&mock).len(),
        1,
        "a revoked key reached the upstream"
    );
    browser.until(
        "team-web revoked",
        &format!("{} return row && row.querySelector('.state').textContent === 'revoked' && row.querySelectorAll('button').length === 0", client_row("team-web")),
    );
    browser.until(
        "the audit's revoke",
        "return [...document.querySelectorAll('#audit-table tbody tr')].some((tr) => tr.children[3].textContent === 'revoke' && tr.children[4].textContent === 'team-web')",
    );

    // a hostile name is refused; hostile notes show as text
    let hostile = "<img src=x onerror=alert(1)>";
    create_client(&browser, &[("client-name", hostile)]);
    browser.until(
        "the refusal of a hostile name",
        "return document.getElementById('client-error').textContent",
    );
    let clients = admin_get(&gw, "/admin/clients");
    assert!(
        !clients.to_string().contains("<img"),
        "a hostile name was kept: {clients}"
    );
    let notes = "<img src=x onerror=alert(1)><script>alert(2)</script><b>bold</b>";
    create_client(
        &browser,
        &[("client-name", "team-notes"), ("client-notes", notes)],
    );
    let notes_key = new_key(&browser, "");
    let shown = browser.until(
        "team-notes listed with its notes",
        &format!("{} return row && row.querySelector('.notes') && row.querySelector('.notes').textContent", client_row("team-notes")),
    );
    assert_eq!(shown, notes);
    assert_eq!(
        browser.js("return document.querySelectorAll('#clients img, #clients script, #clients .notes b').length + document.querySelectorAll('main img').length"),
        0
    );
    assert_eq!(
        browser.js("return document.getElementById('client-error').textContent"),
        ""
    );

    // rotated: the old key stops, the new one works, shown once in the same box
    assert_eq!(chat_status(&gw, Some(&notes_key), "gpt-4o"), 200);
    browser.click(r#"button.rotate[data-client="team-notes"]"#);
    let rotated = new_key(&browser, &notes_key);
    assert!(rotated.starts_with("sy-"), "{rotated}");
    call_until(&gw, &notes_key, 401, Duration::from_secs(2));
    assert_eq!(chat_status(&gw, Some(&rotated), "gpt-4o"), 200);
    browser.click("#new-key-dismiss");
    assert_eq!(
        browser.js(&format!(
            "return document.documentElement.outerHTML.includes({rotated:?})"
        )),
        false
    );

    let errors = unexpected_console_errors(&browser);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
