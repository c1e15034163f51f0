//! The understood lane's HTTP/1.1 response reader for upstream connections.
//!
//! The request goes out as one pre-built write (see `Forwarder::attempt`); this
//! reads the answer: the head (1xx answers skipped), then the body by its framing
//! (`Content-Length`, chunked, or until close). Body chunks are handed out as
//! zero-copy slices of the read buffer.
//!
//! Invariants: a connection is [`Conn::reusable`] only when the whole body was
//! read, the framing was explicit, the upstream did not ask to close, and no
//! stray bytes follow the body. Malformed framing is an error, never a guess.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Most headers in one response head.
const MAX_HEADERS: usize = 128;
/// First read size (a typical answer head and body fit); later reads adapt.
const READ_FIRST: usize = 4 << 10;
/// Smallest and largest adapted read size: reads that fill the space double
/// it, small ones (a stream's events) halve it, so a slow stream waits with a
/// buffer of about one event and a large body is read in large pieces.
const READ_MIN: usize = 1 << 10;
const READ_MAX: usize = 64 << 10;
/// Longest chunk-size line (size, extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Why reading an answer failed.
#[derive(Debug)]
pub enum ReadError {
    /// The upstream closed the connection before the answer was complete
    /// (`at_start`: before a single byte of it arrived).
    Closed {
        at_start: bool,
    },
    Io(std::io::Error),
    /// The bytes are not a valid HTTP/1.x answer.
    Invalid(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed { at_start: true } => write!(f, "connection closed"),
            ReadError::Closed { at_start: false } => write!(f, "connection closed mid-answer"),
            ReadError::Io(e) => write!(f, "read error: {e}"),
            ReadError::Invalid(what) => write!(f, "invalid HTTP answer: {what}"),
        }
    }
}

/// A parsed response head: the status and the header lines as the upstream
/// sent them (a copy of the head's bytes and where each name and value lies
/// in it). httparse admits only token names and values without control
/// characters but tab, the same rules as `http`'s header types, so every
/// line can be passed on as is.
#[derive(Debug, Default)]
pub struct Head {
    pub status: StatusCode,
    raw: Bytes,
    /// Name start, name length, value start, value length, within `raw`.
    spans: Vec<[u32; 4]>,
}

impl Head {
    /// A header's first value as text (`None` when absent or not visible ASCII).
    pub fn get(&self, name: &str) -> Option<&str> {
        let (_, v) = self
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        value_text(v)
    }

    /// The header lines in order: names as sent (any case; tokens, so ASCII)
    /// and values.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|[ns, nl, vs, vl]| {
            let name = &self.raw[*ns as usize..(*ns + *nl) as usize];
            let value = &self.raw[*vs as usize..(*vs + *vl) as usize];
            (name, value)
        })
    }

    /// The header lines whose names `keep` as a map, with room for `more`
    /// (values share the head's bytes).
    pub fn to_map(&self, keep: impl Fn(&[u8]) -> bool, more: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.spans.len() + more);
        for &[ns, nl, vs, vl] in &self.spans {
            let name = &self.raw[ns as usize..(ns + nl) as usize];
            if !keep(name) {
                continue;
            }
            let value = self.raw.slice(vs as usize..(vs + vl) as usize);
            let (name, value) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            );
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        map
    }

    /// Drops the header lines (the status stays): a stream whose client head is
    /// written does not hold them for the rest of its life.
    pub fn release(&mut self) {
        self.raw = Bytes::new();
        self.spans = Vec::new();
    }
}

/// A header value as text: visible ASCII, spaces and tabs (what
/// `HeaderValue::to_str` accepts); `None` otherwise.
pub fn value_text(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// Head not read yet.
    Unknown,
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

/// One upstream connection and its read buffer.
pub struct Conn<S> {
    stream: S,
    buf: BytesMut,
    /// The next read's size (see [`READ_MIN`]).
    read_size: usize,
    framing: Framing,
    keepalive: bool,
}

impl<S: AsyncRead + Unpin> Conn<S> {
    pub fn new(stream: S) -> Conn<S> {
        Conn::with_buf(stream, BytesMut::new())
    }

    /// A connection with a read buffer kept from its previous answer (emptied here).
    pub fn with_buf(stream: S, mut buf: BytesMut) -> Conn<S> {
        buf.clear();
        Conn {
            stream,
            buf,
            read_size: READ_FIRST,
            framing: Framing::Unknown,
            keepalive: false,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. An empty
    /// buffer much larger than the next read is released first, so a
    /// connection waiting between events holds about one event's room.
    async fn fill(&mut self) -> Result<usize, ReadError> {
        let want = self.read_size;
        if self.buf.is_empty() && self.buf.capacity() > want * 2 {
            self.buf = BytesMut::new();
        }
        if self.buf.capacity() - self.buf.len() < want / 4 {
            self.buf.reserve(want);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(ReadError::Io)?;
        self.read_size = if n >= room {
            (want * 2).min(READ_MAX)
        } else if n < want / 8 {
            (want / 2).max(READ_MIN)
        } else {
            want
        };
        Ok(n)
    }

    /// Reads the answer's head, skipping informational (1xx) heads.
    pub async fn read_head(&mut self) -> Result<Head, ReadError> {
        let mut got_any = !self.buf.is_empty();
        loop {
            if let Some(head) = self.parse_head()? {
                if head.status.is_informational() {
                    got_any = true;
                    continue;
                }
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Invalid(format!(
                    "response head larger than {MAX_HEAD} bytes"
                )));
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Closed { at_start: !got_any });
            }
            got_any = true;
        }
    }

    /// Parses a complete head from the buffer (consuming it), if there is one.
    fn parse_head(&mut self) -> Result<Option<Head>, ReadError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ReadError::Invalid(e.to_string())),
        };
        let code = resp.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| ReadError::Invalid(format!("status {code}")))?;
        let http11 = resp.version == Some(1);
        // the head gets its own small copy: sliced out of the read buffer, its
        // header values would pin the whole buffer for as long as the answer
        // lives (a stream's whole life), and the buffer could not shrink
        let raw = Bytes::copy_from_slice(&self.buf[..len]);
        let base = self.buf.as_ptr() as usize;
        // positions within the head (shorter than 4 GiB: it is a read buffer's prefix)
        let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let mut spans = Vec::with_capacity(resp.headers.len());
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut other_coding = false;
        let mut close = !http11;
        for h in resp.headers.iter() {
            let ((ns, nl), (vs, vl)) = (at(h.name.as_bytes()), at(h.value));
            spans.push([ns, nl, vs, vl]);
            let value = std::str::from_utf8(h.value).unwrap_or("");
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| ReadError::Invalid("content-length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ReadError::Invalid("conflicting content-length".into()));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // chunked only counts as the final coding
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                other_coding = !chunked;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                        close = false;
                    }
                }
            }
        }
        self.buf.advance(len);
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        self.framing = if bodiless {
            Framing::Done
        } else if chunked {
            if length.is_some() {
                // both framings: chunked wins (RFC 9112 §6.3), but do not reuse
                close = true;
            }
            Framing::Chunked(Chunk::Size)
        } else if let (Some(n), false) = (length, other_coding) {
            if n == 0 {
                Framing::Done
            } else {
                Framing::Length(n)
            }
        } else {
            close = true;
            Framing::Close
        };
        self.keepalive = !close;
        Ok(Some(Head { status, raw, spans }))
    }

    /// The next piece of the body; `Ok(None)` once the body is complete.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            match self.framing {
                Framing::Unknown => return Err(ReadError::Invalid("no head read".into())),
                Framing::Done => return Ok(None),
                Framing::Length(left) => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err(ReadError::Closed { at_start: false });
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    let left = left - take as u64;
                    self.framing = if left == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(left)
                    };
                    return Ok(Some(self.buf.split_to(take).freeze()));
                }
                Framing::Close => {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::Chunked(state) => {
                    if let Some(first) = self.step_chunked(state)? {
                        // hand out every chunk already buffered in one piece, so one
                        // upstream read makes one client write
                        let mut more: Option<BytesMut> = None;
                        while let Framing::Chunked(next) = self.framing {
                            if self.buf.is_empty() {
                                break;
                            }
                            let Some(data) = self.step_chunked(next)? else {
                                break;
                            };
                            more.get_or_insert_with(|| {
                                let mut m = BytesMut::with_capacity(first.len() * 4);
                                m.extend_from_slice(&first);
                                m
                            })
                            .extend_from_slice(&data);
                        }
                        return Ok(Some(more.map_or(first, BytesMut::freeze)));
                    }
                    if matches!(self.framing, Framing::Done) {
                        return Ok(None);
                    }
                    if self.fill().await? == 0 {
                        return Err(ReadError::Closed { at_start: false });
                    }
                }
            }
        }
    }

    /// Advances the chunked decoder over the buffered bytes. Returns data when
    /// some is available; `Ok(None)` means "need more bytes" or "done" (then
    /// the framing is `Done`).
    fn step_chunked(&mut self, mut state: Chunk) -> Result<Option<Bytes>, ReadError> {
        loop {
            match state {
                Chunk::Size => {
                    let Some(line) = take_line(&mut self.buf, MAX_CHUNK_LINE)? else {
                        self.framing = Framing::Chunked(state);
                        return Ok(None);
                    };
                    let size = line.split(|b| *b == b';').next().unwrap_or(&[]);
                    let size = std::str::from_utf8(size)
                        .ok()
                        .map(|s| s.trim_matches(|c| c == ' ' || c == '\t'))
                        .filter(|s| !s.is_empty() && s.len() <= 16)
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| {
                            ReadError::Invalid(format!(
                                "chunk size line {:?}",
                                String::from_utf8_lossy(&line)
                            ))
                        })?;
                    state = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if self.buf.is_empty() {
                        self.framing = Framing::Chunked(state);
                        return Ok(None);
                    }
                    let take = (self.buf.len() as u64).min(left) as usize;
                    let left = left - take as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(self.buf.split_to(take).freeze()));
                }
                Chunk::DataEnd => {
                    if self.buf.len() < 2 {
                        if self.buf.first().is_some_and(|b| *b != b'\r' && *b != b'\n') {
                            return Err(ReadError::Invalid("chunk not followed by CRLF".into()));
                        }
                        // a lone LF is accepted as the line end
                        if self.buf.first() == Some(&b'\n') {
                            self.buf.advance(1);
                            state = Chunk::Size;
                            continue;
                        }
                        self.framing = Framing::Chunked(state);
                        return Ok(None);
                    }
                    match &self.buf[..2] {
                        b"\r\n" => self.buf.advance(2),
                        [b'\n', _] => self.buf.advance(1),
                        _ => return Err(ReadError::Invalid("chunk not followed by CRLF".into())),
                    }
                    state = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(line) = take_line(&mut self.buf, MAX_HEAD)? else {
                        self.framing = Framing::Chunked(state);
                        return Ok(None);
                    };
                    if line.is_empty() {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Whether the whole body has been handed out (the next `read_body` is `None`).
    pub fn body_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Whether the connection can carry another request: the body was read to
    /// its end, its framing was explicit, and nothing unexpected follows it.
    pub fn reusable(&self) -> bool {
        self.keepalive && self.framing == Framing::Done && self.buf.is_empty()
    }

    /// The connection and its read buffer, for the pool (check
    /// [`Conn::reusable`] first); a buffer grown past twice the first read's
    /// size is not kept.
    pub fn into_parts(self) -> (S, BytesMut) {
        let buf = if self.buf.capacity() > READ_FIRST * 2 {
            BytesMut::new()
        } else {
            self.buf
        };
        (self.stream, buf)
    }
}

/// Takes one line (without its CRLF or LF) off the front of `buf`; `None` when
/// no full line is buffered yet.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, ReadError> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line.freeze()))
        }
        None if buf.len() > max => Err(ReadError::Invalid("line too long".into())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::Parts;
    use proptest::prelude::*;

    fn split(bytes: &[u8], cuts: &[usize]) -> Parts {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut parts = std::collections::VecDeque::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            if c > at {
                parts.push_back(bytes[at..c].to_vec());
                at = c;
            }
        }
        Parts(parts)
    }

    /// Reads a whole answer: status, body, whether reusable.
    fn read(parts: Parts) -> Result<(u16, HeaderMap, Vec<u8>, bool), ReadError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Conn::new(parts);
            let head = c.read_head().await?;
            let mut body = Vec::new();
            while let Some(b) = c.read_body().await? {
                body.extend_from_slice(&b);
            }
            Ok((
                head.status.as_u16(),
                head.to_map(|_| true, 0),
                body,
                c.reusable(),
            ))
        })
    }

    fn whole(bytes: &[u8]) -> Result<(u16, HeaderMap, Vec<u8>, bool), ReadError> {
        read(split(bytes, &[]))
    }

    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
19\r\ndata: {\"a\":1}\n\ndata: [DON\r\n3;ext=1\r\nE]\n\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[test]
    fn header_lines_keep_their_case_and_are_found_in_any() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let head = rt
            .block_on(async {
                let raw = b"HTTP/1.1 200 OK\r\nX-RateLimit-Remaining-Tokens: 0\r\nContent-Type: text/plain\r\nx-bin: \xff\r\nContent-Length: 0\r\n\r\n";
                Conn::new(split(raw, &[])).read_head().await
            })
            .unwrap();
        let names: Vec<&[u8]> = head.iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], b"X-RateLimit-Remaining-Tokens");
        assert_eq!(head.get("content-type"), Some("text/plain"));
        assert_eq!(head.get("CONTENT-LENGTH"), Some("0"));
        assert_eq!(head.get("x-bin"), None, "not visible ASCII");
        assert!(crate::keys::signals::reports_exhausted(head.iter()));
        let map = head.to_map(|n| !n.eq_ignore_ascii_case(b"content-length"), 0);
        assert_eq!(map.len(), 3);
        assert_eq!(map["x-bin"].as_bytes(), b"\xff");
    }

    #[test]
    fn chunked_body_is_decoded_and_reusable() {
        let (status, headers, body, reuse) = whole(CHUNKED).unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(body, b"data: {\"a\":1}\n\ndata: [DONE]\n");
        assert!(reuse);
    }

    #[test]
    fn buffered_chunks_come_out_as_one_piece() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = Conn::new(split(CHUNKED, &[]));
            c.read_head().await.unwrap();
            let piece = c.read_body().await.unwrap().unwrap();
            assert_eq!(&piece[..], b"data: {\"a\":1}\n\ndata: [DONE]\n");
            assert!(c.read_body().await.unwrap().is_none());
            assert!(c.reusable());
        });
    }

    #[test]
    fn content_length_framing_and_informational_heads() {
        let r = whole(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 5\r\nx-a: 1\r\nx-a: 2\r\n\r\nhello")
            .unwrap();
        assert_eq!((r.0, r.2.as_slice(), r.3), (201, &b"hello"[..], true));
        assert_eq!(r.1.get_all("x-a").iter().count(), 2);
        // bytes after the body: not reusable
        let r = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((r.2.as_slice(), r.3), (&b"ok"[..], false));
        let r = whole(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.0, r.2.len(), r.3), (204, 0, true));
    }

    #[test]
    fn close_delimited_and_connection_close_are_not_reused() {
        let r = whole(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").unwrap();
        assert_eq!((r.2.as_slice(), r.3), (&b"until the end"[..], false));
        let r =
            whole(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx").unwrap();
        assert!(!r.3);
        let r = whole(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx").unwrap();
        assert!(!r.3);
        // a coding other than chunked: read until close
        let r =
            whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nxyz")
                .unwrap();
        assert_eq!((r.2.as_slice(), r.3), (&b"xyz"[..], false));
        let r = whole(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx")
            .unwrap();
        assert!(r.3);
        // both framings: chunked is used, the connection is not reused
        let r = whole(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.2.as_slice(), r.3), (&b"ok"[..], false));
    }

    #[test]
    fn broken_answers_are_errors() {
        assert!(matches!(
            whole(b""),
            Err(ReadError::Closed { at_start: true })
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nContent-"),
            Err(ReadError::Closed { at_start: false })
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            Err(ReadError::Closed { at_start: false })
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            Err(ReadError::Closed { at_start: false })
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(ReadError::Invalid(_))
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n"),
            Err(ReadError::Invalid(_))
        ));
        assert!(matches!(
            whole(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(ReadError::Invalid(_))
        ));
        assert!(matches!(
            whole(b"garbage\r\n\r\n"),
            Err(ReadError::Invalid(_))
        ));
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b"x-h: 0123456789\r\n", 6000).flatten());
        assert!(matches!(whole(&huge), Err(ReadError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn any_split_reads_the_same(cuts in proptest::collection::vec(0usize..400, 0..40)) {
            let (status, _, body, reuse) = read(split(CHUNKED, &cuts)).unwrap();
            prop_assert_eq!(status, 200);
            prop_assert_eq!(body, b"data: {\"a\":1}\n\ndata: [DONE]\n".to_vec());
            prop_assert!(reuse);
            let lf = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n";
            let (_, _, body, reuse) = read(split(lf, &cuts)).unwrap();
            prop_assert_eq!(body, b"ok".to_vec());
            prop_assert!(reuse);
        }
    }
}
