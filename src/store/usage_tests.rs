//! The usage store's queue, packing, trimming and queries, on an in-memory
//! database.

use super::*;
use crate::store::queue::{MAX_MODEL, MAX_REQUEST_ID};

fn log_with(max_rows: u64) -> UsageLog {
    UsageLog {
        db: Mutex::new(Db::open(Connection::open_in_memory().unwrap()).unwrap()),
        pending: Mutex::new(Queue::default()),
        spare: Mutex::new(Queue::default()),
        stages: Mutex::new(Vec::new()),
        retention: Duration::from_secs(3600),
        max_rows,
    }
}

/// A queue of one record per `(ts_ms, client, model, status)`.
fn queue(recs: &[(u64, &str, &str, u16)]) -> Queue {
    let mut q = Queue::default();
    for &(ts_ms, client, model, status) in recs {
        let r = Record {
            ts_us: ts_ms * 1000,
            client: crate::store::names::id(client),
            route: crate::store::names::static_id("chat"),
            status,
            tokens_in: 5,
            tokens_out: 3,
            latency_us: 2500,
            cost: 1_000_000,
            ..Default::default()
        };
        q.push(
            r,
            &RecordNames {
                model,
                served: None,
                request_id: "",
            },
        );
    }
    q
}

#[test]
fn batches_keep_every_record_and_at_most_max_rows() {
    let now = crate::clock::now_ms();
    let l = log_with(5);
    for batch in [3, 4] {
        let recs: Vec<(u64, &str, &str, u16)> = (0..batch)
            .map(|i| (now - 1000 + i, if i % 2 == 0 { "a" } else { "b" }, "m", 200))
            .collect();
        l.write(&queue(&recs)).unwrap();
    }
    // 7 written, 5 kept: the oldest batch lost its two oldest records
    let recent = l.recent(100, &RequestFilter::default()).unwrap();
    assert_eq!(recent["requests"].as_array().unwrap().len(), 5, "{recent}");
    let usage = l.usage("client", 0).unwrap();
    let total: u64 = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5, "{usage}");
    assert_eq!(usage["rows"][0]["tokens_in"], 15, "{usage}");
    assert_eq!(usage["rows"][0]["avg_latency_ms"], 2.5, "{usage}");
    // each record cost a microdollar, trimmed records included in none
    assert_eq!(usage["rows"][0]["cost_usd"], 3e-6, "{usage}");
    assert_eq!(recent["requests"][0]["cost_usd"], 1e-6, "{recent}");
    let only_b = l
        .recent(
            100,
            &RequestFilter {
                client: Some("b".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(only_b["requests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["client"] == "b"));
    assert!(l.usage("colour", 0).is_err());
}

#[test]
fn a_batch_that_does_not_decode_is_skipped() {
    let l = log_with(100);
    l.write(&queue(&[(crate::clock::now_ms(), "a", "m", 200)]))
        .unwrap();
    l.db.lock()
        .conn
        .execute(
            "INSERT INTO batches (first_ts_ms, last_ts_ms, count, records) VALUES (0, ?1, 1, x'ffffffff')",
            params![crate::clock::now_ms() as i64],
        )
        .unwrap();
    assert_eq!(
        l.recent(10, &RequestFilter::default()).unwrap()["requests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(l.usage("model", 0).unwrap()["rows"][0]["requests"], 1);
}

#[test]
fn a_store_of_the_first_packed_layout_is_read_and_extended() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         INSERT INTO names VALUES (1, 'old-client');
         CREATE TABLE batches (id INTEGER PRIMARY KEY, first_ts_ms INTEGER NOT NULL,
             last_ts_ms INTEGER NOT NULL, count INTEGER NOT NULL, records BLOB NOT NULL);",
    )
    .unwrap();
    let now = crate::clock::now_ms();
    let old: Stored = Stored {
        ts_ms: now,
        client: 1,
        model: "gpt-old".into(),
        served_model: None,
        upstream: 0,
        key: 0,
        route: 0,
        status: 200,
        attempts: 1,
        latency_us: 1000,
        ttft_us: None,
        tokens_in: 1,
        tokens_out: 2,
        estimated: false,
        error: 0,
        cost: 0,
    };
    let v1 = postcard::to_allocvec(&vec![old]).unwrap();
    conn.execute(
        "INSERT INTO batches (first_ts_ms, last_ts_ms, count, records) VALUES (?1, ?1, 1, ?2)",
        params![now as i64, v1],
    )
    .unwrap();
    let l = UsageLog {
        db: Mutex::new(Db::open(conn).unwrap()),
        ..log_with(2)
    };
    l.write(&queue(&[
        (now + 1, "new", "gpt-new", 200),
        (now + 2, "new", "gpt-new", 200),
    ]))
    .unwrap();
    // max_rows 2: the old record is trimmed away first, without decoding its batch
    let rows = l.recent(10, &RequestFilter::default()).unwrap()["requests"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["client"] == "new"));
    let l = UsageLog { max_rows: 10, ..l };
    l.write(&queue(&[(now + 3, "new", "gpt-new", 200)]))
        .unwrap();
    assert_eq!(l.usage("model", 0).unwrap()["rows"][0]["requests"], 3);
}

#[test]
fn model_names_are_kept_whole_up_to_a_bound() {
    let l = log_with(100);
    let now = crate::clock::now_ms();
    let long = "é".repeat(200); // 400 bytes
    let mut q = queue(&[(now, "a", "gpt-4o", 200)]);
    let mut r = q.records.pop().unwrap().r;
    q.text.clear();
    q.push(
        r,
        &RecordNames {
            model: "gpt-4o",
            served: Some("gpt-4o-2024-08-06"),
            request_id: "req_sy1",
        },
    );
    r.ts_us += 1000;
    q.push(
        r,
        &RecordNames {
            model: &long,
            served: None,
            request_id: &long,
        },
    );
    r.ts_us += 1000;
    q.push(
        r,
        &RecordNames {
            model: &long,
            served: Some(&long),
            request_id: "",
        },
    );
    l.write(&q).unwrap();
    let recent = l.recent(10, &RequestFilter::default()).unwrap();
    let rows = recent["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{recent}");
    // newest first: both long, then the plain long one, then the fallback
    assert_eq!(rows[2]["model"], "gpt-4o");
    assert_eq!(rows[2]["served_model"], "gpt-4o-2024-08-06");
    assert_eq!(rows[2]["client"], "a");
    assert_eq!(rows[2]["route"], "chat");
    let cut = "é".repeat(MAX_MODEL / 2);
    for row in &rows[..2] {
        assert_eq!(row["model"], cut.as_str(), "cut at a character boundary");
        assert_eq!(row["served_model"], cut.as_str());
    }
    assert_eq!(rows[2]["request_id"], "req_sy1");
    assert_eq!(
        rows[1]["request_id"],
        "é".repeat(MAX_REQUEST_ID / 2).as_str()
    );
    assert_eq!(rows[0]["request_id"], Value::Null, "none recorded");
}

#[test]
fn a_stage_moves_whole_with_its_names_and_what_does_not_fit_is_counted() {
    let mut shared = queue(&[(1, "a", "first-model", 200)]);
    let mut stage = queue(&[(2, "b", "gpt-4o", 200), (3, "b", "o3", 200)]);
    let r = stage.records[0].r;
    stage.push(
        r,
        &RecordNames {
            model: "gpt-4o",
            served: Some("gpt-4o-2024-08-06"),
            request_id: "req_sy2",
        },
    );
    assert_eq!(shared.append(&mut stage, 10), 0);
    assert!(stage.records.is_empty() && stage.text.is_empty());
    let models: Vec<_> = shared.records.iter().map(|q| shared.models(q)).collect();
    assert_eq!(
        models,
        [
            ("first-model", None),
            ("gpt-4o", None),
            ("o3", None),
            ("gpt-4o", Some("gpt-4o-2024-08-06"))
        ]
    );
    let mut more = queue(&[(4, "c", "m", 200), (5, "c", "m", 200)]);
    assert_eq!(shared.append(&mut more, 5), 1, "one fits under the bound");
    assert_eq!(shared.records.len(), 5);
    assert_eq!(shared.models(&shared.records[4]), ("m", None));
    assert_eq!(shared.request_id(&shared.records[3]), "req_sy2");
}

#[test]
fn a_flush_takes_every_stage_and_stores_the_batch_oldest_first() {
    let l = log_with(100);
    let now = crate::clock::now_ms();
    // thread B's stage holds the oldest record, the shared queue a newer one
    let b = Arc::new(Mutex::new(queue(&[(now, "b", "m", 200)])));
    let a = Arc::new(Mutex::new(queue(&[(now + 2, "a", "m", 200)])));
    l.stages.lock().extend([a.clone(), b.clone()]);
    *l.pending.lock() = queue(&[(now + 1, "shared", "m", 200)]);
    l.flush();
    assert!(a.lock().records.is_empty() && b.lock().records.is_empty());
    let recent = l.recent(10, &RequestFilter::default()).unwrap();
    let clients: Vec<_> = recent["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["client"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clients, ["a", "shared", "b"], "newest first");
    // a stage whose thread ended is forgotten once emptied
    drop(a);
    l.flush();
    assert_eq!(l.stages.lock().len(), 1);
}

#[test]
fn filters_and_series_by_hour() {
    use crate::store::filter::StatusFilter;
    let now = crate::clock::now_ms();
    let hour = 3_600_000;
    let base = now - now % hour - hour; // the start of the previous hour
    let mut l = log_with(100);
    l.retention = Duration::from_secs(86_400);
    l.write(&queue(&[
        (base + 10, "a", "gpt-4o", 200),
        (base + 20, "a", "gpt-4o-mini", 429),
        (base + hour + 5, "b", "o3", 502),
        (base + hour + 6, "b", "gpt-4o", 404),
    ]))
    .unwrap();
    let ids = |f: &RequestFilter| -> Vec<(String, u64)> {
        l.recent(100, f).unwrap()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["model"].as_str().unwrap().to_string(),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let errors = RequestFilter {
        status: Some(StatusFilter::Errors),
        ..Default::default()
    };
    assert_eq!(ids(&errors).len(), 3);
    let fives = RequestFilter {
        status: StatusFilter::parse("5xx"),
        ..Default::default()
    };
    assert_eq!(ids(&fives), vec![("o3".to_string(), 502)]);
    let gpt4o_a = RequestFilter {
        model: Some("gpt-4o*".into()),
        client: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(ids(&gpt4o_a).len(), 2);
    let this_hour = RequestFilter {
        since_ms: base + hour,
        ..Default::default()
    };
    assert_eq!(ids(&this_hour).len(), 2);
    let before = RequestFilter {
        until_ms: Some(base + 15),
        ..Default::default()
    };
    assert_eq!(ids(&before), vec![("gpt-4o".to_string(), 200)]);

    let s = l.usage_series("model", base, hour).unwrap();
    let points = s["points"].as_array().unwrap();
    let t0 = base / 1000;
    let got: Vec<(u64, &str, u64, u64)> = points
        .iter()
        .map(|p| {
            (
                p["t"].as_u64().unwrap(),
                p["name"].as_str().unwrap(),
                p["requests"].as_u64().unwrap(),
                p["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (t0, "gpt-4o", 1, 0),
            (t0, "gpt-4o-mini", 1, 1),
            (t0 + 3600, "gpt-4o", 1, 1),
            (t0 + 3600, "o3", 1, 1)
        ]
    );
    assert_eq!(s["bucket_seconds"], 3600);
    assert!(l.usage_series("day", 0, hour).is_err());
}
