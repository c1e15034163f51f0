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
        "state: {{path: '{}'{extra}}}\nupstreams:\n  - {{name: up, base_url: '{}/v1', keys: [sk-usage-aaaaaaaaaaaa], models: [m, silent]}}\n  - {{name: agg, base_url: '{}/v1', keys: [sk-agg-bbbbbbbbbbbbbb], models: [agg-m], stream_only: true}}\n  - {{name: syn, base_url: '{}/v1', keys: [sk-syn-cccccccccccccc], models: [syn-m], no_stream: true}}\n",
        state.display(),
        mock.url(),
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
    // a streaming client over a JSON-only upstream: synthesized
    let synthesized =
        json!({"model": "syn-m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &synthesized);
    assert!(r.text().unwrap().contains("[DONE]"));
    assert_eq!(
        mock.requests().last().unwrap().json()["stream"],
        json!(null)
    );
    assert_eq!(gw.post("/v1/chat/completions", &chat("nope")).status(), 404);
    let usage = gw.admin_json("/admin/usage?by=model&since=1h");
    assert_eq!(total(&usage, "requests"), 6, "{usage}");
    assert_eq!(total(&usage, "tokens_in"), 5 * 5, "{usage}");
    assert_eq!(total(&usage, "tokens_out"), 3 + 3 + 4 + 4 + 3, "{usage}");
    // the metrics count the same tokens, by client, model and upstream
    let tokens = |t: &str, kind| series(t, "switchyard_tokens_total", &[("kind", kind)]);
    let m = gw.metrics_when(|t| tokens(t, "completion") == 17.0);
    assert_eq!(
        (tokens(&m, "prompt"), tokens(&m, "completion")),
        (25.0, 17.0),
        "{m}"
    );
    assert_eq!(
        series(
            &m,
            "switchyard_tokens_total",
            &[
                ("kind", "completion"),
                ("model", "syn-m"),
                ("upstream", "syn"),
                ("client", "-")
            ]
        ),
        3.0,
        "{m}"
    );
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

    let recent = gw.admin_json("/admin/requests?limit=5");
    let rows = recent["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["status"], 404, "newest first");
    assert_eq!(rows[0]["error"], "model_not_found");
    assert_eq!(rows[2]["served_model"], "agg-m");
    assert_eq!(rows[2]["key"].as_str().unwrap(), "agg#1 (…bbbb)");
    // time to first token: for the stream the client got event by event
    assert!(rows[3]["ttft_ms"].as_f64().unwrap() > 0.0, "{}", rows[3]);
    assert!(
        rows[2]["ttft_ms"].is_null(),
        "an aggregated answer has none"
    );
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
        7,
        "kept across the restart: {usage}"
    );
    assert_eq!(total(&usage, "tokens_out"), 17, "{usage}");
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

/// `/admin/requests` once it lists `n` requests (a request's record is
/// queued as it ends, just after its client has the answer), or after 2 s.
fn requests_when(gw: &Gw, n: usize) -> serde_json::Value {
    let mut recent = gw.admin_json("/admin/requests?limit=100");
    for _ in 0..40 {
        if recent["requests"].as_array().map_or(0, Vec::len) == n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        recent = gw.admin_json("/admin/requests?limit=100");
    }
    recent
}

#[test]
fn retention_deletes_rows_older_than_state_retention() {
    let mock = MockUpstream::start(script);
    let state = tempfile::tempdir().unwrap();
    // long enough that a loaded CI machine reads the rows before they age out
    let gw = Gw::start(&config(&mock, state.path(), ", retention: 4s"));
    for _ in 0..3 {
        assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    }
    let recent = requests_when(&gw, 3);
    assert_eq!(recent["requests"].as_array().unwrap().len(), 3, "{recent}");
    std::thread::sleep(std::time::Duration::from_millis(4600));
    // the next write applies the retention: only the new row is left
    assert_eq!(gw.post("/v1/chat/completions", &chat("m")).status(), 200);
    let recent = requests_when(&gw, 1);
    assert_eq!(recent["requests"].as_array().unwrap().len(), 1, "{recent}");
}
