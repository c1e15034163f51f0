//! What the answer writers that change an answer's API share: an answer
//! held whole to be rewritten at its end (bounded), the head of a rewritten
//! whole answer, and whether a head starts a stream.

use super::headers::{Head, Reshaped};
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
