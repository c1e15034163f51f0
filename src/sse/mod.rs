//! Incremental Server-Sent Events framing.
//!
//! [`Framer`] takes bytes in any split and yields [`Frame`]s: the raw bytes of
//! everything up to and including each blank line (so pass-through can forward
//! or drop whole events byte-exactly), plus the parsed [`Event`] if the frame
//! carried data. Lines end in LF, CRLF or CR; `:` lines are comments; `data:`
//! may or may not be followed by one space; several `data:` lines join with
//! `\n`. There is no limit on line or event length.
//!
//! Invariant: the concatenation of every frame's `raw` is exactly the input.

pub mod aggregate;
pub mod complete;
pub mod seam;
pub mod synth;

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// `event:` field, if any.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

impl Event {
    /// `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// Raw bytes of one blank-line-terminated block, with its event if it had data.
#[derive(Debug, Clone)]
pub struct Frame {
    pub raw: Bytes,
    pub event: Option<Event>,
}

#[derive(Default)]
pub struct Framer {
    /// Bytes of the frame being built (complete lines + partial line).
    raw: BytesMut,
    /// Where the partial (unterminated) line starts inside `raw`.
    line_start: usize,
    /// The previous chunk ended in CR: a leading LF belongs to that line ending.
    pending_cr: bool,
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
}

/// The longest event the gateway reads from an upstream (a line without an
/// end grows it too); beyond it the answer is broken.
pub const MAX_EVENT: usize = 16 << 20;

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Whether the event being read is longer than [`MAX_EVENT`].
    pub fn overlong(&self) -> bool {
        self.raw.len() > MAX_EVENT
    }

    /// Feeds bytes; complete frames are appended to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<Frame>) {
        if self.pending_cr {
            self.pending_cr = false;
            if input.first() == Some(&b'\n') {
                // The LF completes a CRLF whose line was handled at the CR. If that
                // line ended a frame, the LF starts the next frame's raw bytes
                // (concatenation of raw bytes is still exactly the input).
                self.raw.extend_from_slice(b"\n");
                self.line_start = self.raw.len();
                input = &input[1..];
            }
        }
        let mut i = 0;
        while i < input.len() {
            let Some(pos) = input[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.raw.extend_from_slice(&input[i..]);
                return;
            };
            let end = i + pos;
            self.raw.extend_from_slice(&input[i..end]);
            let line_end = self.raw.len();
            let mut next = end + 1;
            if input[end] == b'\r' {
                if next < input.len() {
                    if input[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.pending_cr = true;
                }
            }
            self.raw.extend_from_slice(&input[end..next]);
            self.line(line_end, out);
            i = next;
        }
    }

    /// End of input: whatever is pending becomes a final frame.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        self.pending_cr = false;
        if self.line_start < self.raw.len() {
            let line_end = self.raw.len();
            self.line(line_end, out);
        }
        if !self.raw.is_empty() || self.data.is_some() {
            self.dispatch(out);
        }
    }

    /// Handles the line `raw[line_start..line_end]` (its terminator follows it in `raw`).
    fn line(&mut self, line_end: usize, out: &mut Vec<Frame>) {
        let line = &self.raw[self.line_start..line_end];
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] != b':' {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(c) => {
                    let v = &line[c + 1..];
                    (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            let value = String::from_utf8_lossy(value);
            match field {
                b"data" => match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => self.data = Some(value.into_owned()),
                },
                b"event" => self.event = Some(value.into_owned()),
                b"id" => self.id = Some(value.into_owned()),
                _ => {} // retry: and unknown fields are ignored
            }
        }
        self.line_start = self.raw.len();
    }

    fn dispatch(&mut self, out: &mut Vec<Frame>) {
        let raw = self.raw.split().freeze();
        self.line_start = 0;
        let event = self.data.take().map(|data| Event {
            event: self.event.take(),
            data,
            id: self.id.take(),
        });
        self.event = None;
        out.push(Frame { raw, event });
    }
}

/// Parses a whole SSE body into its events (test and tooling helper).
pub fn parse_all(input: &[u8]) -> Vec<Event> {
    let mut f = Framer::new();
    let mut frames = Vec::new();
    f.push(input, &mut frames);
    f.finish(&mut frames);
    frames.into_iter().filter_map(|f| f.event).collect()
}

/// If this event reports an error inside a 200 stream, the error object.
///
/// Recognises `data: {"error": {...}}`, `event: error` (nested or flat body),
/// vLLM's `{"object": "error", ...}` and Responses `error` / `response.failed`-less
/// `type: "error"` events.
pub fn stream_error(ev: &Event, json: Option<&serde_json::Value>) -> Option<serde_json::Value> {
    let is_error_event = ev.event.as_deref() == Some("error");
    let parsed;
    let v = match json {
        Some(v) => Some(v),
        None if is_error_event || ev.data.contains("error") => {
            parsed = serde_json::from_str::<serde_json::Value>(&ev.data).ok();
            parsed.as_ref()
        }
        None => None,
    };
    match v {
        Some(v) => {
            if let Some(e) = v.get("error").filter(|e| e.is_object() || e.is_string()) {
                return Some(if e.is_string() {
                    serde_json::json!({"message": e})
                } else {
                    e.clone()
                });
            }
            if v.get("object").and_then(|o| o.as_str()) == Some("error")
                || v.get("type").and_then(|t| t.as_str()) == Some("error")
                || is_error_event
            {
                return Some(v.clone());
            }
            None
        }
        None if is_error_event => Some(serde_json::json!({"message": ev.data})),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_line_without_an_end_is_overlong_past_the_cap() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push(b"data: {\"a\":1}\n\n", &mut out);
        assert_eq!(out.len(), 1);
        let piece = vec![b'x'; 1 << 20];
        f.push(b"data: ", &mut out);
        for _ in 0..15 {
            f.push(&piece, &mut out);
        }
        assert!(!f.overlong(), "15 MiB and a prefix is within the cap");
        f.push(&piece, &mut out);
        f.push(&piece, &mut out);
        assert!(f.overlong());
        assert_eq!(out.len(), 1, "no frame came of it");
    }

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/openai-chat-streams");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sse"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn basic_fields_and_line_endings() {
        let evs = parse_all(b": keep-alive\n\ndata: a\ndata:b\n\nevent: error\r\ndata: {\"x\":1}\r\n\r\nid: 7\rdata: z\r\r");
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].data, "a\nb");
        assert_eq!(evs[1].event.as_deref(), Some("error"));
        assert_eq!(evs[1].data, "{\"x\":1}");
        assert_eq!(
            (evs[2].id.as_deref(), evs[2].data.as_str()),
            (Some("7"), "z")
        );
    }

    #[test]
    fn no_trailing_blank_line_still_yields_the_event() {
        let evs = parse_all(b"data: {\"a\":1}\n\ndata: last");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].data, "last");
    }

    #[test]
    fn raw_frames_reassemble_the_input() {
        let input = b": c\n\ndata: 1\r\n\r\ndata: 2\n\ntrailing";
        let mut f = Framer::new();
        let mut frames = Vec::new();
        for b in input.chunks(3) {
            f.push(b, &mut frames);
        }
        f.finish(&mut frames);
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(joined, input);
        assert!(frames[0].event.is_none(), "comment-only frame has no event");
    }

    #[test]
    fn long_lines_are_fine() {
        let big = "x".repeat(300_000);
        let evs = parse_all(format!("data: {big}\n\n").as_bytes());
        assert_eq!(evs[0].data.len(), 300_000);
    }

    #[test]
    fn errors_in_streams_are_recognised() {
        let e = |s: &str| parse_all(s.as_bytes()).pop().unwrap();
        assert!(stream_error(&e("data: {\"error\":{\"message\":\"boom\"}}\n\n"), None).is_some());
        assert!(stream_error(&e("event: error\ndata: {\"message\":\"flat\"}\n\n"), None).is_some());
        assert!(stream_error(
            &e("data: {\"object\":\"error\",\"message\":\"vllm\"}\n\n"),
            None
        )
        .is_some());
        assert!(stream_error(
            &e("data: {\"type\":\"error\",\"code\":\"insufficient_quota\"}\n\n"),
            None
        )
        .is_some());
        assert!(stream_error(
            &e("data: {\"choices\":[{\"delta\":{\"content\":\"error\"}}]}\n\n"),
            None
        )
        .is_none());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..5000, 0..12), which in 0usize..12) {
            let fx = fixtures();
            let (_, data) = &fx[which % fx.len()];
            let whole = parse_all(data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.sort();
            let mut f = Framer::new();
            let mut frames = Vec::new();
            let mut prev = 0;
            for c in cuts {
                f.push(&data[prev..c], &mut frames);
                prev = c;
            }
            f.push(&data[prev..], &mut frames);
            f.finish(&mut frames);
            let joined: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
            prop_assert_eq!(&joined, data);
            let events: Vec<Event> = frames.into_iter().filter_map(|f| f.event).collect();
            prop_assert_eq!(events, whole);
        }

        #[test]
        fn arbitrary_bytes_any_split(input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(b'd'), Just(b'a'), Just(b't'), any::<u8>()], 0..200), cut in 0usize..200) {
            let whole = parse_all(&input);
            let cut = cut.min(input.len());
            let mut f = Framer::new();
            let mut frames = Vec::new();
            f.push(&input[..cut], &mut frames);
            f.push(&input[cut..], &mut frames);
            f.finish(&mut frames);
            let joined: Vec<u8> = frames.iter().flat_map(|f| f.raw.to_vec()).collect();
            prop_assert_eq!(&joined, &input);
            let events: Vec<Event> = frames.into_iter().filter_map(|f| f.event).collect();
            prop_assert_eq!(events, whole);
        }
    }
}
