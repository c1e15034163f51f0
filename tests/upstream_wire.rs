//! What a buggy or hostile upstream sends, byte for byte, against the real
//! binary: framing that is not plain HTTP/1.1 (`Content-Length: +5`, both
//! `Transfer-Encoding` and `Content-Length`, an unknown transfer coding), an
//! SSE line without an end, and a connection closed after the request was
//! read (never billed twice).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::raw::{RawUpstream, Script};
use common::wire::*;
use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A raw upstream answering every request with `script`: its port and how
/// many requests it read.
fn raw_upstream(script: Arc<Script>) -> (u16, Arc<AtomicUsize>) {
    let up = RawUpstream::start(0, script);
    (up.port, up.seen.clone())
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn completion() -> String {
    switchyard::mock::chat_completion("m", "hi from raw").to_string()
}

fn json_answer(extra: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}\r\n{body}").into_bytes()
}

fn gateway_on(port: u16, extra: &str) -> Gw {
    Gw::start(&format!(
        "{extra}upstreams: [{{name: raw, base_url: 'http://127.0.0.1:{port}/v1', keys: [sk-raw-0123456789]}}]\n"
    ))
}

fn call(gw: &Gw, body: &str) -> (String, String) {
    let mut s = connect(gw.port);
    s.write_all(&request(body, "")).unwrap();
    response(&mut s)
}

#[test]
fn a_content_length_that_is_not_digits_is_refused() {
    let body = completion();
    let answer = json_answer(&format!("content-length: +{}\r\n", body.len()), &body);
    let (port, _) = raw_upstream(Arc::new(move |_| Some(answer.clone())));
    let gw = gateway_on(port, "retry: {attempts: 1}\n");
    let (head, body) = call(&gw, JSON);
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(body.contains("not valid HTTP"), "{body}");
    assert!(!head.contains("content-length: +"), "{head}");
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let body = completion();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let answer = json_answer(
        "content-length: 3\r\ntransfer-encoding: chunked\r\n",
        &chunked,
    );
    let (port, _) = raw_upstream(Arc::new(move |_| Some(answer.clone())));
    let gw = gateway_on(port, "");
    let (head, got) = call(&gw, JSON);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-length: 3"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let got = dechunk(&got);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(v["choices"][0]["message"]["content"], "hi from raw");
}

#[test]
fn an_unknown_transfer_coding_is_refused_not_mislabelled() {
    let body = completion();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let answer = json_answer("transfer-encoding: gzip, chunked\r\n", &chunked);
    let (port, _) = raw_upstream(Arc::new(move |_| Some(answer.clone())));
    let gw = gateway_on(port, "retry: {attempts: 1}\n");
    let (head, body) = call(&gw, JSON);
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(body.contains("gzip"), "{body}");
}

#[test]
fn an_sse_line_without_an_end_is_cut_with_an_error_event() {
    // a first event, then 64 MiB of one line that never ends
    let script: Arc<Script> = Arc::new(|_| {
        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\ndata: ";
        out.extend_from_slice(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes());
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(&piece);
            out.extend_from_slice(b"\r\n");
        }
        Some(out)
    });
    let (port, _) = raw_upstream(script);
    let gw = gateway_on(port, "");
    let mut s = connect(gw.port);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&request(STREAM, "")).unwrap();
    let (head, body) = response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        body.contains("\"hi\""),
        "the first event came through: {body:.300}"
    );
    assert!(
        body.contains("16MiB"),
        "an error event says why: {body:.2000}"
    );
    assert!(
        !body.contains("xxxxxxxx"),
        "no part of the endless line reached the client"
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
    let kib: u64 = rss
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(kib < 256 << 10, "the gateway grew to {kib} KiB");
}

#[test]
fn a_request_read_whole_then_closed_on_is_not_sent_again() {
    let body = completion();
    let ok = json_answer(&format!("content-length: {}\r\n", body.len()), &body);
    // the first request on a connection is answered; the second is read, then the connection closes
    let (port, seen) = raw_upstream(Arc::new(move |n| (n == 0).then(|| ok.clone())));
    let gw = gateway_on(port, "retry: {attempts: 1}\n");
    let mut s = connect(gw.port);
    s.write_all(&request(JSON, "")).unwrap();
    let (head, _) = response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // the pooled connection carries the next call, and the upstream closes it
    s.write_all(&request(JSON, "")).unwrap();
    let (head, body) = response(&mut s);
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(body.contains("\"error\""), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "a request the upstream read whole was sent again"
    );
    let logs = gw.logs();
    assert!(logs.contains("status=502 attempts=1"), "{logs}");
}

/// `n` chat calls from 4 clients at once (each on its own kept-alive
/// connection): every client's statuses in order.
fn sweep(gw: &Gw, n: usize) -> Vec<Vec<u16>> {
    let url = gw.url("/v1/chat/completions");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                (0..n / 4)
                    .map(|_| {
                        c.post(&url)
                            .json(&chat("m"))
                            .send()
                            .map_or(0, |r| r.status().as_u16())
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

#[test]
fn an_upstream_restarted_between_sweeps_costs_a_handful_of_answers_at_most() {
    let ok: Arc<Script> = Arc::new(|_| Some(common::raw::completion_answer("hi")));
    let first = RawUpstream::start(0, ok.clone());
    let gw = gateway_on(first.port, "");
    let before = sweep(&gw, 200);
    assert!(before.iter().flatten().all(|s| *s == 200), "{before:?}");
    // the upstream restarts: its connections (pooled in the gateway) close
    let port = first.stop();
    let second = RawUpstream::start(port, ok);
    let after = sweep(&gw, 400);
    let failed = after.iter().flatten().filter(|s| **s != 200).count();
    assert!(
        failed <= 4,
        "{failed} failed answers after the restart: {after:?}"
    );
    for statuses in &after {
        assert!(
            statuses[10..].iter().all(|s| *s == 200),
            "failures went on after the upstream listened: {statuses:?}"
        );
    }
    assert!(second.seen.load(Ordering::SeqCst) >= 396);
}
