//! A detached stream's own client connection: the HTTP/1.1 connection a
//! streamed answer is written to after the request left Pingora's session
//! (see `proxy::detach`), so that a stream waiting between events holds the
//! socket and a few words, not Pingora's per-request state.
//!
//! Framing: a head with `Content-Length` frames the body by length; any other
//! body is sent chunked. The connection may carry the client's next request
//! only when the answer was written whole, the client asked for keep-alive
//! and sent nothing meanwhile (this gateway does not pipeline).

use super::headers::Head;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::StatusCode;
use pingora::protocols::Stream;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// The head is not written yet.
    Unsent,
    Chunked,
    /// `Content-Length`: this many bytes are still due.
    Length(u64),
    /// The answer was written whole.
    Done,
    /// A write failed or the body broke off: the connection must close.
    Broken,
}

/// The client's connection, owned by the stream's task.
pub struct OwnConn {
    stream: Stream,
    body: Body,
    /// The client may send another request on this connection afterwards.
    keepalive: bool,
}

impl OwnConn {
    /// Wraps a connection whose request was read whole; `keepalive`: the
    /// client asked for the connection to stay open.
    pub fn new(stream: Stream, keepalive: bool) -> OwnConn {
        OwnConn {
            stream,
            body: Body::Unsent,
            keepalive,
        }
    }

    /// Writes the head (with `Date` and `Connection`); `end`: there is no body.
    /// Fails when the client is gone; a second head is ignored.
    pub async fn write_head(&mut self, head: Head, end: bool) -> io::Result<()> {
        let length = head.headers.get(CONTENT_LENGTH).map(|v| v.as_bytes());
        let mut lines = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let wire = self.head_wire(head.status, length, &mut lines, end);
        self.write_wire(wire, end).await
    }

    /// The head in wire form, and the body's framing decided from it:
    /// `length` is the head's `Content-Length` value (if any) among `lines`.
    /// `None` after the head was written (a second head is ignored).
    pub(super) fn head_wire(
        &mut self,
        status: StatusCode,
        length: Option<&[u8]>,
        lines: &mut dyn Iterator<Item = (&[u8], &[u8])>,
        end: bool,
    ) -> Option<Vec<u8>> {
        if self.body != Body::Unsent {
            return None;
        }
        let length = length
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bodiless = matches!(status.as_u16(), 204 | 304);
        let (body, add_length) = match length {
            _ if end && (bodiless || length.is_none_or(|n| n == 0)) => {
                (Body::Done, !bodiless && length.is_none())
            }
            Some(n) => (Body::Length(n), false),
            None => (Body::Chunked, false),
        };
        self.body = body;
        Some(head_bytes(status, lines, body, add_length, self.keepalive))
    }

    pub(super) async fn write_wire(&mut self, wire: Option<Vec<u8>>, end: bool) -> io::Result<()> {
        let Some(wire) = wire else { return Ok(()) };
        let r = self.stream.write_all(&wire).await;
        if end || r.is_err() {
            return self.flushed(r).await;
        }
        r
    }

    /// Writes a piece of the body and flushes it; `end`: the body is complete
    /// (`data` may then be `None`). A body that ends short of its length
    /// breaks the connection.
    pub async fn write_body(&mut self, data: Option<Bytes>, end: bool) -> io::Result<()> {
        let data = data.unwrap_or_default();
        let r = match self.body {
            Body::Unsent | Body::Done | Body::Broken => {
                return Err(io::Error::other("no body is being written"))
            }
            Body::Chunked => {
                let mut r = Ok(());
                if !data.is_empty() {
                    let size = format!("{:x}\r\n", data.len());
                    r = self.write_parts(&[size.as_bytes(), &data, b"\r\n"]).await;
                }
                if end && r.is_ok() {
                    r = self.stream.write_all(b"0\r\n\r\n").await;
                    self.body = Body::Done;
                }
                r
            }
            Body::Length(left) => {
                let n = data.len() as u64;
                if n > left {
                    self.body = Body::Broken;
                    return Err(io::Error::other("the body is longer than its length"));
                }
                let r = self.stream.write_all(&data).await;
                self.body = match (end, left - n) {
                    (false, rest) => Body::Length(rest),
                    (true, 0) => Body::Done,
                    (true, _) => Body::Broken,
                };
                r
            }
        };
        self.flushed(r).await
    }

    async fn write_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for p in parts {
            self.stream.write_all(p).await?;
        }
        Ok(())
    }

    /// Flushes after `r` succeeded; any failure breaks the connection.
    async fn flushed(&mut self, r: io::Result<()>) -> io::Result<()> {
        let r = match r {
            Ok(()) => self.stream.flush().await,
            e => e,
        };
        if r.is_err() {
            self.body = Body::Broken;
        }
        r
    }

    /// Resolves when the client closes the connection. Bytes the client
    /// sends meanwhile (a pipelined request) are not served: the connection
    /// then closes after this answer.
    pub async fn closed(&mut self) {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    self.keepalive = false;
                    std::future::pending::<()>().await
                }
            }
        }
    }

    /// The connection for the client's next request, when it may carry one;
    /// otherwise it is shut down.
    pub async fn finish(mut self) -> Option<Stream> {
        if self.body == Body::Done && self.keepalive {
            return Some(self.stream);
        }
        pingora::protocols::Shutdown::shutdown(&mut *self.stream).await;
        None
    }
}

/// The head in HTTP/1.1 wire form, framed as `body` says (`add_length`: a
/// `Content-Length: 0` the head lacks), with `Date` and `Connection` of its
/// own: the lines' own framing, date and connection headers are replaced.
fn head_bytes(
    status: StatusCode,
    lines: &mut dyn Iterator<Item = (&[u8], &[u8])>,
    body: Body,
    add_length: bool,
    keepalive: bool,
) -> Vec<u8> {
    let mut w = Vec::with_capacity(512);
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
    // the headers written below, the gateway's own way
    const OWN: [&[u8]; 3] = [b"transfer-encoding", b"date", b"connection"];
    for (name, value) in lines {
        if OWN.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            continue;
        }
        w.extend_from_slice(name);
        w.extend_from_slice(b": ");
        w.extend_from_slice(value);
        w.extend_from_slice(b"\r\n");
    }
    if add_length {
        w.extend_from_slice(b"content-length: 0\r\n");
    }
    if body == Body::Chunked {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    w.extend_from_slice(b"date: ");
    crate::clock::with_http_date(|d| w.extend_from_slice(d.as_bytes()));
    w.extend_from_slice(if keepalive {
        b"\r\nconnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nconnection: close\r\n\r\n"
    });
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    fn pair(keepalive: bool) -> (OwnConn, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 16);
        (OwnConn::new(Box::new(a), keepalive), b)
    }

    fn head(status: u16) -> Head {
        super::super::headers::head(http::StatusCode::from_u16(status).unwrap(), 4)
    }

    async fn written(mut peer: DuplexStream) -> String {
        let mut s = String::new();
        peer.read_to_string(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn a_stream_is_chunked_and_the_connection_kept() {
        let (mut c, peer) = pair(true);
        c.write_head(head(200), false).await.unwrap();
        c.write_body(Some(Bytes::from_static(b"data: 1\n\n")), false)
            .await
            .unwrap();
        c.write_body(Some(Bytes::new()), false).await.unwrap();
        c.write_body(None, true).await.unwrap();
        let stream = c.finish().await.expect("reusable");
        drop(stream);
        let out = written(peer).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(out.contains("connection: keep-alive\r\n"), "{out}");
        assert!(out.contains("date: "), "{out}");
        assert!(
            out.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn a_length_body_that_ends_short_closes_the_connection() {
        let (mut c, peer) = pair(true);
        let mut h = head(200);
        h.headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from_static("10"));
        c.write_head(h, false).await.unwrap();
        c.write_body(Some(Bytes::from_static(b"12345")), true)
            .await
            .unwrap();
        assert!(c.finish().await.is_none());
        let out = written(peer).await;
        assert!(out.contains("content-length: 10\r\n") && out.ends_with("\r\n\r\n12345"));
        assert!(!out.contains("transfer-encoding"));
    }

    #[tokio::test]
    async fn a_longer_body_than_its_length_is_refused() {
        let (mut c, _peer) = pair(true);
        let mut h = head(200);
        h.headers
            .insert(CONTENT_LENGTH, http::HeaderValue::from_static("2"));
        c.write_head(h, false).await.unwrap();
        assert!(c
            .write_body(Some(Bytes::from_static(b"123")), true)
            .await
            .is_err());
        assert!(c.finish().await.is_none());
    }

    #[tokio::test]
    async fn a_bodiless_answer_without_keepalive_says_close() {
        let (mut c, peer) = pair(false);
        c.write_head(head(429), true).await.unwrap();
        assert!(c.finish().await.is_none());
        let out = written(peer).await;
        assert!(
            out.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{out}"
        );
        assert!(out.contains("connection: close\r\n") && out.contains("content-length: 0\r\n"));
    }

    #[tokio::test]
    async fn a_client_that_leaves_or_pipelines_is_noticed() {
        let (mut c, peer) = pair(true);
        drop(peer);
        c.closed().await;
        let (mut c, mut peer) = pair(true);
        peer.write_all(b"G").await.unwrap();
        let watched = tokio::time::timeout(std::time::Duration::from_millis(50), c.closed()).await;
        assert!(watched.is_err(), "bytes are not a close");
        c.write_head(head(204), true).await.unwrap();
        assert!(
            c.finish().await.is_none(),
            "a pipelined request closes the connection"
        );
    }
}
