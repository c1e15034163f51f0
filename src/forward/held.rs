//! What the answer writers that change an answer's API share: an answer
//! held whole to be rewritten at its end (bounded), a stream retold event
//! by event ([`Retell`]), the head of a rewritten answer, and the way an
//! answer takes ([`Way`]).

use super::headers::{Head, Reshaped};
use crate::sse::{Event, Frame, Framer};
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};

/// The largest whole answer held for translation (a chat completion is far
/// smaller; the gateway's own limit on converted bodies is the same).
pub const MAX_HELD: usize = 64 << 20;

/// An answer held whole until its end.
#[derive(Debug)]
pub struct Held {
    pub head: Head,
    body: BytesMut,
    /// More than [`MAX_HELD`] came: the body is gone.
    overflow: bool,
}

impl Held {
    pub fn new(head: Head) -> Held {
        Held {
            head,
            body: BytesMut::new(),
            overflow: false,
        }
    }

    /// Adds a piece of the body (past [`MAX_HELD`], drops it all).
    pub fn push(&mut self, data: Option<Bytes>) {
        let Some(d) = data else { return };
        if self.overflow || self.body.len() + d.len() > MAX_HELD {
            self.overflow = true;
            self.body = BytesMut::new();
        } else {
            self.body.extend_from_slice(&d);
        }
    }

    /// The whole body, or `None` when it was too large to hold.
    pub fn body(&self) -> Option<&[u8]> {
        (!self.overflow).then_some(&self.body[..])
    }
}

/// `head` (status `status`) with `body`, a rewritten JSON answer, whole.
pub fn whole_json(mut head: Head, status: u16, body: Bytes) -> Reshaped {
    head.status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = &mut head.headers;
    h.remove(TRANSFER_ENCODING);
    h.remove(CONTENT_ENCODING);
    h.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    Reshaped::Whole(head, body)
}

/// Whether `head` starts an SSE stream.
pub fn is_sse(head: &Head) -> bool {
    head.headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// `head` made ready for a stream rewritten on its way: chunked, its
/// length and encoding gone.
pub fn rewritten_stream(head: &mut Head) {
    let h = &mut head.headers;
    h.remove(CONTENT_LENGTH);
    h.remove(CONTENT_ENCODING);
    // chunked keeps the connection reusable (no framing header = close-delimited)
    h.insert(TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
}

/// A stream told in another API, one event at a time.
pub trait Retell {
    /// One event of the stream being read.
    fn event(&mut self, ev: &Event, out: &mut String);
    /// A comment (the gateway's keepalive): what the client gets for it.
    fn keepalive(&mut self, out: &mut String);
    /// The body ended: close the stream (or end it with an error).
    fn end(&mut self, out: &mut String);
}

/// A stream being retold: bytes in (framed across any split), text out.
pub struct Retold<R> {
    framer: Framer,
    frames: Vec<Frame>,
    pub teller: R,
}

impl<R> std::fmt::Debug for Retold<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Retold")
    }
}

impl<R: Retell> Retold<R> {
    pub fn new(teller: R) -> Retold<R> {
        Retold {
            framer: Framer::new(),
            frames: Vec::new(),
            teller,
        }
    }

    /// What the client gets for a piece of the stream (`end`: the last).
    pub fn body(&mut self, data: Option<&Bytes>, end: bool) -> Bytes {
        let mut out = String::new();
        if let Some(d) = data {
            self.framer.push(d, &mut self.frames);
        }
        if end {
            self.framer.finish(&mut self.frames);
        }
        for f in std::mem::take(&mut self.frames) {
            match &f.event {
                Some(ev) => self.teller.event(ev, &mut out),
                None if f.raw.starts_with(b":") => self.teller.keepalive(&mut out),
                None => {}
            }
        }
        if end {
            self.teller.end(&mut out);
        }
        Bytes::from(out)
    }
}

/// The way an answer takes through a writer: passed as it is, retold as
/// a stream, or held whole to be rewritten at its end.
#[derive(Debug, Default)]
pub enum Way<R> {
    #[default]
    Pass,
    Stream(Box<Retold<R>>),
    Held(Box<Held>),
}

impl<R: Retell> Way<R> {
    /// Holds `head`'s answer (`end`: it has no body; `finish` rewrites it).
    pub fn hold(
        &mut self,
        head: Head,
        end: bool,
        finish: impl FnOnce(Held) -> Reshaped,
    ) -> Reshaped {
        *self = Way::Held(Box::new(Held::new(head)));
        match end {
            true => self.body(None, true, finish),
            false => Reshaped::Nothing,
        }
    }

    /// A piece of the body (`end`: the last); `finish` rewrites a held
    /// answer at its end.
    pub fn body(
        &mut self,
        data: Option<Bytes>,
        end: bool,
        finish: impl FnOnce(Held) -> Reshaped,
    ) -> Reshaped {
        match self {
            Way::Pass => Reshaped::Body(data.unwrap_or_default(), end),
            Way::Stream(s) => Reshaped::Body(s.body(data.as_ref(), end), end),
            Way::Held(h) => {
                h.push(data);
                if !end {
                    return Reshaped::Nothing;
                }
                match std::mem::take(self) {
                    Way::Held(h) => finish(*h),
                    _ => Reshaped::Nothing,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_its_bound_and_makes_whole_heads() {
        let mut h = Held::new(super::super::headers::head(http::StatusCode::OK, 2));
        h.push(Some(Bytes::from_static(b"{\"a\":")));
        h.push(None);
        h.push(Some(Bytes::from_static(b"1}")));
        assert_eq!(h.body(), Some(&b"{\"a\":1}"[..]));
        h.push(Some(Bytes::from(vec![b' '; MAX_HELD])));
        assert_eq!(h.body(), None, "past the bound");
        h.push(Some(Bytes::from_static(b"x")));
        assert_eq!(h.body(), None, "and stays gone");
        let mut head = h.head;
        head.headers
            .insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        match whole_json(head, 502, Bytes::from_static(b"{}")) {
            Reshaped::Whole(h, b) => {
                assert_eq!(h.status, 502);
                assert!(h.headers.get(CONTENT_ENCODING).is_none());
                assert_eq!(h.headers[CONTENT_LENGTH], "2");
                assert_eq!(&b[..], b"{}");
            }
            _ => panic!("not whole"),
        }
    }
}
