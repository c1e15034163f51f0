//! Limits a hostile or careless client cannot outlast, through the real
//! binary: a stream it stops reading, an idle kept-alive connection, a head
//! or body sent a byte at a time, bodies announced but never sent, and
//! headers its `Connection` header names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::wire::*;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "client-limits-key-0123456789";

/// Reads until the gateway closes the connection (`true`) or `limit` passes
/// with it still open (`false`). Whatever the gateway sends first is read
/// and dropped.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 8192];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The gateway's resident memory (KiB).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_stream_whose_client_stops_reading_frees_its_slot() {
    // 4,000 events of 8 KB: far more than the socket buffers hold
    let text = "x".repeat(8000);
    let mock = MockUpstream::start(move |req| {
        if req.json()["stream"] != serde_json::json!(true) {
            return ok_script(req);
        }
        let event = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        let mut events = vec![format!("data: {event}\n\n"); 4000];
        events.push("data: [DONE]\n\n".into());
        Reply::sse(events, Duration::ZERO)
    });
    let gw = Gw::start(&format!(
        "timeouts: {{client_write: 1s}}\nclients: [{{name: c, key: {KEY}, max_concurrent: 1}}]\n\
         upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let mut stalled = connect(gw.port);
    stalled
        .write_all(&request(
            STREAM,
            &format!("authorization: Bearer {KEY}\r\n"),
        ))
        .unwrap();
    // the stalled stream holds the client's one slot until its write times
    // out: first it is seen holding it (a 429), then letting it go
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    let mut held = false;
    while Instant::now() < end {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat("m"))
            .send()
            .unwrap();
        last = r.status().as_u16();
        if last == 200 && held {
            break;
        }
        // a call that came before the stream took the slot is no evidence
        held |= last == 429;
        assert!(matches!(last, 200 | 429), "{}", r.text().unwrap());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        held && last == 200,
        "the stalled stream never let its slot go"
    );
    // its access line follows its slot's release
    let logged = Instant::now() + Duration::from_secs(5);
    while !gw.logs().contains("error=client_gone") && Instant::now() < logged {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = gw.logs();
    assert!(logs.contains("error=client_gone"), "{logs}");
    drop(stalled);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_time() {
    let gw = Gw::start("timeouts: {keepalive: 1s}\nupstreams: [{name: demo, kind: demo}]\n");
    let mut s = connect(gw.port);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .unwrap();
    let (head, _) = response(&mut s);
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert!(
        closed_within(&mut s, Duration::from_secs(15)),
        "an idle connection was kept past timeouts.keepalive"
    );
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline() {
    let gw = Gw::start("timeouts: {request_head: 1s}\nupstreams: [{name: demo, kind: demo}]\n");
    let mut s = connect(gw.port);
    let mut writer = s.try_clone().unwrap();
    // a byte every 200 ms: each read is quick, the head never ends in time
    let dribble = std::thread::spawn(move || {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert!(
        closed_within(&mut s, Duration::from_secs(15)),
        "a head dribbled byte by byte was waited on past timeouts.request_head"
    );
    drop(s);
    dribble.join().unwrap();
    // the gateway serves on
    let r = client().get(gw.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_body_sent_a_byte_at_a_time_gets_408_at_its_deadline() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "timeouts: {{request_body: 1s, idle: 30s}}\n\
         upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{",
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    let dribble = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let (head, body) = response(&mut s);
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(body.contains("\"error\""), "OpenAI-shaped: {body}");
    drop(s);
    dribble.join().unwrap();
    assert!(
        mock.requests().is_empty(),
        "a partial body reached the upstream"
    );
}

#[test]
fn announced_bodies_that_never_come_take_no_memory_for_their_length() {
    let gw = Gw::start("upstreams: [{name: demo, kind: demo}]\n");
    let before = rss_kib(gw.pid());
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 33000000\r\n\r\n{";
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = connect(gw.port);
        s.write_all(head).unwrap();
        held.push(s);
    }
    // every connection's body read has begun once the gateway answers on
    let r = client().get(gw.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "200 announced 33 MB bodies grew the gateway by {grown} KiB"
    );
    drop(held);
}

#[test]
fn headers_the_connection_header_names_do_not_reach_the_upstream() {
    let mock = MockUpstream::start(ok_script);
    let gw = Gw::start(&format!(
        "upstreams: [{{name: mock, base_url: '{}', keys: [sk-a]}}]\n",
        mock.url()
    ));
    let mut s = connect(gw.port);
    s.write_all(&request(
        JSON,
        "connection: keep-alive, X-Hop-Secret\r\nx-hop-secret: s3cret\r\nx-kept: yes\r\n",
    ))
    .unwrap();
    let (head, _) = response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-hop-secret"),
        None,
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].header("x-kept"), Some("yes"));
}
