//! Usage accounting through the real binary: one record per request with the
//! tokens the mock's usage reported (JSON, streamed and aggregated answers),
//! estimated when it reported none; `/admin/usage` totals and
//! `/admin/requests`; the store survives a restart and keeps at most
//! `state.max_rows` records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use serde_json::{json, Value};

/// JSON answers report 5 + 3 tokens; streams 5 + 4 (with their usage chunk).
fn script(req: &Request) -> Reply {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("m").to_string();
    if model == "silent" {
        let mut v = switchyard::mock::chat_completion(&model, "no usage");
        v.as_object_mut().unwrap().remove("usage");
        return Reply::json(200, &v);
    }
    if body["stream"] == json!(true) {
        Reply::sse(
            switchyard::mock::chat_stream_events(&model, 4, true),
            std::time::Duration::ZERO,
        )
    } else {
        ok_script(req)
    }
}

fn config(mock: &MockUpstream, state: &std::path::Path, extra: &str) -> String {
    format!(
        "state: {{path: '{}'{extra}}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-usage-aaaaaaaaaaaa], models: [m, silent]}}\n  - {{name: agg, base_url: '{}/v1', keys: [sk-agg-bbbbbbbbbbbbbb], models: [agg-m], stream_only: true}}\n",
        state.display(),
        mock.url(),
        mock.url()
    )
}

fn total(usage: &Value, field: &str) -> i64 {
    usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_i64().unwrap())
        .sum()
}

#[test]
fn usage_totals_match_the_upstreams_usage_and_survive_a_restart() {
    let mock = MockUpstream::start(script);
    let state = tempfile::tempdir().unwrap();
    let gw = Gw::start(&config(&mock, state.path(), ""));
    for _ in 0..2 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let streamed =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &streamed);
    assert!(r.text().unwrap().contains("[DONE]"));
    // a JSON client over a streaming-only upstream: aggregated
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("agg-m")).status(),
        200
    );
    assert_eq!(gw.post("/v1/chat/completions", &chat("nope")).status(), 404);
    let usage = gw.admin_json("/admin/usage?by=model&since=1h");
    assert_eq!(total(&usage, "requests"), 5, "{usage}");
    assert_eq!(total(&usage, "tokens_in"), 5 * 4, "{usage}");
    assert_eq!(total(&usage, "tokens_out"), 3 + 3 + 4 + 4, "{usage}");
    assert_eq!(total(&usage, "errors"), 1, "{usage}");
    let by_upstream = gw.admin_json("/admin/usage?by=upstream");
    let agg = by_upstream["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["upstream"] == "agg")
        .cloned()
        .unwrap();
    assert_eq!(
        (agg["tokens_in"].as_i64(), agg["tokens_out"].as_i64()),
        (Some(5), Some(4))
    );

    let recent = gw.admin_json("/admin/requests?limit=2");
    let rows = recent["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["status"], 404, "newest first");
    assert_eq!(rows[0]["error"], "model_not_found");
    assert_eq!(rows[1]["served_model"], "agg-m");
    assert_eq!(rows[1]["key"].as_str().unwrap(), "agg#1 (…bbbb)");
    let only_404 = gw.admin_json("/admin/requests?status=404");
    assert_eq!(only_404["requests"].as_array().unwrap().len(), 1);
    // no key, body or prompt is ever stored
    let db = std::fs::read(state.path().join("usage.db")).unwrap_or_default();
    let text = String::from_utf8_lossy(&db);
    assert!(!text.contains("sk-usage-aaaa") && !text.contains("\"hi\""));

    // an answer without usage: the estimate, marked so
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("silent")).status(),
        200
    );
    let recent = gw.admin_json("/admin/requests?limit=1");
    let row = &recent["requests"][0];
    assert_eq!(row["estimated"], true, "{row}");
    assert!(row["tokens_in"].as_i64().unwrap() > 0, "{row}");

    // bad queries are 400s that say what works; unknown admin paths are 404
    let r = client()
        .get(gw.admin("/admin/usage?by=color"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .unwrap()
        .contains("client, model, key, upstream or day"));
    let r = client()
        .get(gw.admin("/admin/usage?since=yesterdayish"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(gw.admin("/admin/requests?limit=lots"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        client()
            .get(gw.admin("/admin/nothing"))
            .send()
            .unwrap()
            .status(),
        404
    );
    drop(gw);

    let gw = Gw::start(&config(&mock, state.path(), ""));
    let usage = gw.admin_json("/admin/usage?by=day");
    assert_eq!(
        total(&usage, "requests"),
        6,
        "kept across the restart: {usage}"
    );
    assert_eq!(total(&usage, "tokens_out"), 14, "{usage}");
}

#[test]
fn the_store_keeps_at_most_max_rows() {
    let mock = MockUpstream::start(script);
    let state = tempfile::tempdir().unwrap();
    let gw = Gw::start(&config(&mock, state.path(), ", max_rows: 3"));
    for _ in 0..5 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let recent = gw.admin_json("/admin/requests?limit=100");
    assert_eq!(recent["requests"].as_array().unwrap().len(), 3, "{recent}");
    for _ in 0..4 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let usage = gw.admin_json("/admin/usage?by=client");
    assert_eq!(total(&usage, "requests"), 3, "{usage}");
    assert_eq!(usage["rows"][0]["client"], "-");
}
