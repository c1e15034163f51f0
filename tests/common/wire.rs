//! Raw HTTP/1.1 on a client connection: requests written byte for byte,
//! answers read to their framed end, and whether the gateway closed.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

pub fn request(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub const STREAM: &str =
    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
pub const JSON: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response: its head, and a chunked body to its last chunk or a
/// length-framed body to its length. Panics on a close before that.
pub fn response(s: &mut impl Read) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // one more read onto `got`; a close `inside` the answer fails the test
    let mut more = |got: &mut Vec<u8>, inside: &str| {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed inside the {inside}: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head_end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i + 4;
        }
        more(&mut got, "head");
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    loop {
        let body = &got[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if complete {
            break;
        }
        more(&mut got, "body");
    }
    (head, String::from_utf8_lossy(&got[head_end..]).into_owned())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the gateway closed the connection (read end, nothing more sent).
pub fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}
