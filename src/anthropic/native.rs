//! A `kind: anthropic` upstream's stream on its way to a Messages client:
//! its events pass byte for byte; what the gateway adds is put in the
//! Messages shape (its keepalive comments as `ping` events once the
//! message started, its own `data: {"error": …}` frame as `event:
//! error`), and a stream that ends without `message_stop` ends with an
//! `error` event, never as a whole answer.

use super::answer::error_body;
use crate::sse::{Frame, Framer};
use bytes::{Bytes, BytesMut};

#[derive(Default)]
pub struct NativeStream {
    framer: Framer,
    frames: Vec<Frame>,
    /// `message_start` passed (a ping may follow).
    started: bool,
    /// `message_stop` or `error` passed: the stream is over.
    ended: bool,
}

impl std::fmt::Debug for NativeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeStream")
    }
}

impl NativeStream {
    /// What the client gets of `data` (`end`: the stream's last piece).
    pub fn push(&mut self, data: Option<&Bytes>, end: bool) -> Bytes {
        if let Some(d) = data {
            self.framer.push(d, &mut self.frames);
        }
        if end {
            self.framer.finish(&mut self.frames);
        }
        let mut out = BytesMut::new();
        for f in std::mem::take(&mut self.frames) {
            self.frame(f, &mut out);
        }
        if end && !self.ended {
            let why =
                br#"{"error": {"message": "The stream ended before the answer was complete."}}"#;
            error_event(&mut out, why);
            self.ended = true;
        }
        out.freeze()
    }

    fn frame(&mut self, f: Frame, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        let Some(ev) = &f.event else {
            // a comment: the gateway's keepalive (or the upstream's own)
            if self.started && f.raw.starts_with(b":") {
                out.extend_from_slice(b"event: ping\ndata: {\"type\": \"ping\"}\n\n");
            }
            return;
        };
        match ev.event.as_deref() {
            Some("message_start") => self.started = true,
            Some("message_stop" | "error") => self.ended = true,
            // an unnamed frame is not Anthropic's: the gateway's own error
            None => {
                error_event(out, ev.data.as_bytes());
                self.ended = true;
                return;
            }
            _ => {}
        }
        out.extend_from_slice(&f.raw);
    }
}

/// An `error` event in the Messages shape for an OpenAI-shaped error body.
fn error_event(out: &mut BytesMut, body: &[u8]) {
    let v = error_body(502, body);
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> String {
        let mut s = NativeStream::default();
        let mut out = String::new();
        for (i, p) in pieces.iter().enumerate() {
            let b = Bytes::copy_from_slice(p.as_bytes());
            let end = i + 1 == pieces.len();
            out.push_str(std::str::from_utf8(&s.push(Some(&b), end)).unwrap());
        }
        out
    }

    #[test]
    fn passes_events_shapes_what_the_gateway_adds_and_never_ends_silently() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}   \n\n";
        let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        // byte for byte, cut anywhere
        let whole = format!(": early\n\n{start}{delta}: keepalive\n\n{stop}");
        let cut: Vec<String> = whole
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into())
            .collect();
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        let out = run(&cut);
        let ping = "event: ping\ndata: {\"type\": \"ping\"}\n\n";
        assert_eq!(
            out,
            format!("{start}{delta}{ping}{stop}"),
            "no ping before message_start"
        );
        // the gateway's own error frame after a break
        let out = run(&[
            start,
            "data: {\"error\": {\"message\": \"upstream broke\"}}\n\n",
        ]);
        assert!(
            out.ends_with("\n\n")
                && out.contains("event: error\ndata: {\"error\":{\"message\":\"upstream broke\""),
            "{out}"
        );
        assert_eq!(out.matches("event: error").count(), 1);
        // a clean end of the body before message_stop
        let out = run(&[start, delta]);
        assert!(
            out.contains("event: error") && out.contains("ended before"),
            "{out}"
        );
    }
}
