//! An upstream written byte for byte on 127.0.0.1: each request is read
//! whole (head and `Content-Length` body), then answered as a script says.
//! It can be stopped (every connection closed) and started again on its port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::wire::find;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the raw upstream does with the `n`th request (from 0) it read on a
/// connection: write these bytes (`None`: close the connection instead).
pub type Script = dyn Fn(usize) -> Option<Vec<u8>> + Send + Sync;

pub struct RawUpstream {
    pub port: u16,
    /// Requests read, in all.
    pub seen: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl RawUpstream {
    /// Listens on `port` (0: any) and serves `script`.
    pub fn start(port: u16, script: Arc<Script>) -> RawUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = RawUpstream {
            port,
            seen: Arc::default(),
            stopped: Arc::default(),
            open: Arc::default(),
        };
        let (seen, stopped, open) = (up.seen.clone(), up.stopped.clone(), up.open.clone());
        std::thread::spawn(move || {
            // bounded: at most 512 connections, and only until stopped
            let mut accepted = 0;
            while !stopped.load(Ordering::SeqCst) && accepted < 512 {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                accepted += 1;
                conn.set_nonblocking(false).unwrap();
                open.lock().unwrap().push(conn.try_clone().unwrap());
                let (script, seen) = (script.clone(), seen.clone());
                std::thread::spawn(move || serve(conn, &*script, &seen));
            }
        });
        up
    }

    /// Stops listening and closes every connection it has.
    pub fn stop(self) -> u16 {
        self.stopped.store(true, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        // the accept loop notices within its 5 ms sleep and drops the listener
        std::thread::sleep(Duration::from_millis(50));
        self.port
    }
}

fn serve(mut conn: TcpStream, script: &Script, seen: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for n in 0.. {
        if read_request(&mut conn).is_none() {
            break;
        }
        seen.fetch_add(1, Ordering::SeqCst);
        match script(n) {
            // a peer gone mid-answer ends the connection
            Some(bytes) if conn.write_all(&bytes).is_ok() => {}
            _ => break,
        }
    }
    // closed now, though `stop` holds a handle to it
    let _ = conn.shutdown(Shutdown::Both);
}

/// Reads one request (head, then its `Content-Length` body).
fn read_request(conn: &mut TcpStream) -> Option<()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while got.len() < head_end + length {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(())
}

/// A `200` JSON answer with a chat completion saying `text`.
pub fn completion_answer(text: &str) -> Vec<u8> {
    let body = switchyard::mock::chat_completion("m", text).to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
