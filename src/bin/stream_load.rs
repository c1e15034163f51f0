//! `stream-load`: the stream benchmark's client (bench/streams.sh).
//!
//! `stream-load ADDR STREAMS EVENTS [RAMP_PER_S]` opens STREAMS connections to
//! ADDR (loopback only), each sending one streaming chat request, and reads
//! every answer to its `data: [DONE]`. It prints `open N` once every stream
//! has its first event, then one summary line: streams complete, events
//! received, whether every stream got EVENTS content events, and events/s.
//! Bounded: a stream silent for 30 s counts as failed; the run ends when
//! every stream ended.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;

#[derive(Default)]
struct Tally {
    opened: AtomicUsize,
    complete: AtomicUsize,
    full: AtomicUsize,
    failed: AtomicUsize,
    events: AtomicU64,
}

/// One stream: the number of `data: {` events it received, and whether `[DONE]` came.
async fn one(addr: SocketAddr, tally: &Tally) -> std::io::Result<(u64, bool)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nAuthorization: Bearer bench-client\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    // the last bytes of the previous read: a marker may straddle two reads
    let mut carry: Vec<u8> = Vec::with_capacity(16);
    let (mut events, mut first) = (0u64, true);
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok((events, false)),
        };
        if n == 0 {
            return Ok((events, false));
        }
        let mut hay = std::mem::take(&mut carry);
        hay.extend_from_slice(&buf[..n]);
        let found = memchr::memmem::find_iter(&hay, b"data: {").count() as u64;
        if found > 0 && first {
            first = false;
            tally.opened.fetch_add(1, Ordering::Relaxed);
        }
        events += found;
        tally.events.fetch_add(found, Ordering::Relaxed);
        if memchr::memmem::find(&hay, b"data: [DONE]").is_some() {
            return Ok((events, true));
        }
        let keep = hay.len().min(12);
        carry.extend_from_slice(&hay[hay.len() - keep..]);
        // a marker fully inside the carry was already counted: drop its start
        if let Some(at) = memchr::memmem::rfind(&carry, b"data: {") {
            carry.drain(..=at);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = match args.next().and_then(|a| a.parse().ok()) {
        Some(a) => a,
        None => {
            eprintln!("usage: stream-load ADDR STREAMS EVENTS [RAMP_PER_S]");
            std::process::exit(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("stream-load sends traffic to loopback addresses only");
        std::process::exit(2);
    }
    let streams: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let expect: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);
    let ramp: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        if i > 0 && i % (ramp / 10).max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = tally.clone();
        tasks.push(tokio::spawn(async move {
            match one(addr, &t).await {
                Ok((events, done)) => {
                    if done {
                        t.complete.fetch_add(1, Ordering::Relaxed);
                    } else {
                        t.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    // content events plus the role, finish and usage events
                    if done && events >= expect {
                        t.full.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    t.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let watcher = {
        let t = tally.clone();
        tokio::spawn(async move {
            loop {
                let open = t.opened.load(Ordering::Relaxed);
                let ended = t.complete.load(Ordering::Relaxed) + t.failed.load(Ordering::Relaxed);
                if open + t.failed.load(Ordering::Relaxed) >= streams || ended >= streams {
                    println!("open {open}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let _ = watcher.await;
    let secs = start.elapsed().as_secs_f64();
    let events = tally.events.load(Ordering::Relaxed);
    println!(
        "streams {streams} complete {} failed {} every_event {} events {events} seconds {secs:.1} events_per_s {:.0}",
        tally.complete.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.full.load(Ordering::Relaxed) == streams,
        events as f64 / secs
    );
}
