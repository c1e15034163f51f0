//! Whether a passed-through stream has finished its answer. A stream whose
//! body ends cleanly is complete only if it said so: `data: [DONE]`, a
//! `finish_reason` for every choice asked for (chat and completions), or a
//! final `response.completed` / `response.incomplete` / `response.failed`
//! event (Responses API). Anything else is a truncated answer.
//!
//! A stream that never looked like its API (no event with `choices`, or no
//! `response.*` event) is not judged: its framing is trusted.
//!
//! Cheap on the hot path: each event costs a substring search or two; only an
//! event that carries a non-null `finish_reason` is parsed.

use super::Event;
use crate::routes::Api;
use memchr::memmem::Finder;
use once_cell::sync::Lazy;
use smallvec::SmallVec;

/// The searchers, built once (a search per event must not build its own).
static FINISH_REASON: Lazy<Finder<'static>> = Lazy::new(|| Finder::new(b"\"finish_reason\""));
static CHOICES: Lazy<Finder<'static>> = Lazy::new(|| Finder::new(b"\"choices\""));
static RESPONSE: Lazy<Finder<'static>> = Lazy::new(|| Finder::new(b"\"response."));
static FINAL_RESPONSE: Lazy<[Finder<'static>; 3]> = Lazy::new(|| {
    [
        Finder::new(b"\"response.completed\""),
        Finder::new(b"\"response.incomplete\""),
        Finder::new(b"\"response.failed\""),
    ]
});

/// What a stream has shown of its ending so far.
#[derive(Debug, Clone)]
pub struct Completion {
    api: Api,
    /// Choices the client asked for (`n`).
    expected: u32,
    done: bool,
    /// An event looked like the API's (so its ending can be judged).
    shaped: bool,
    finished: SmallVec<[u32; 4]>,
}

impl Completion {
    /// For a stream of `api` with `n` choices.
    pub fn new(api: Api, n: u32) -> Completion {
        Completion {
            api,
            expected: n.max(1),
            done: false,
            shaped: false,
            finished: SmallVec::new(),
        }
    }

    /// Takes one event into account.
    pub fn observe(&mut self, ev: &Event) {
        if self.done {
            return;
        }
        if ev.is_done() {
            self.done = true;
            return;
        }
        match self.api {
            Api::Chat | Api::Completions => self.observe_choices(ev),
            Api::Responses => {
                if !self.shaped && RESPONSE.find(ev.data.as_bytes()).is_some() {
                    self.shaped = true;
                }
                let final_event = |t: &str| {
                    matches!(
                        t,
                        "response.completed" | "response.incomplete" | "response.failed"
                    )
                };
                if ev.event.as_deref().is_some_and(final_event)
                    || FINAL_RESPONSE
                        .iter()
                        .any(|f| f.find(ev.data.as_bytes()).is_some())
                {
                    self.done = true;
                }
            }
            // streams of other APIs have no known ending: trust the framing
            Api::Other | Api::Generic | Api::Form => self.done = true,
        }
    }

    fn observe_choices(&mut self, ev: &Event) {
        let data = ev.data.as_bytes();
        if !self.shaped && CHOICES.find(data).is_some() {
            self.shaped = true;
        }
        let Some(at) = FINISH_REASON.find(data) else {
            return;
        };
        let rest = &data[at + b"\"finish_reason\"".len()..];
        let value = rest
            .iter()
            .skip_while(|c| c.is_ascii_whitespace() || **c == b':')
            .copied()
            .next();
        if value == Some(b'n') && FINISH_REASON.find(rest).is_none() {
            return; // `null`, and no other choice in this event
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&ev.data) else {
            return;
        };
        for c in v
            .get("choices")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
            let index = c.get("index").and_then(|i| i.as_u64()).unwrap_or(0) as u32;
            if finished && !self.finished.contains(&index) {
                self.finished.push(index);
            }
        }
    }

    /// Did the stream finish its answer?
    pub fn complete(&self) -> bool {
        self.done || !self.shaped || self.finished.len() as u32 >= self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Event {
        Event {
            event: None,
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn chat_needs_done_or_every_finish_reason() {
        let mut c = Completion::new(Api::Chat, 1);
        c.observe(&ev(
            r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        ));
        assert!(!c.complete(), "text without a finish is truncated");
        c.observe(&ev(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        ));
        assert!(
            c.complete(),
            "every choice finished: complete without [DONE]"
        );

        let mut c = Completion::new(Api::Chat, 2);
        c.observe(&ev(
            r#"{"choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
        ));
        assert!(!c.complete(), "one of two choices finished");
        c.observe(&ev(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason": "length"}]}"#,
        ));
        assert!(c.complete());

        let mut c = Completion::new(Api::Chat, 1);
        c.observe(&ev("[DONE]"));
        assert!(c.complete());

        let mut c = Completion::new(Api::Chat, 1);
        c.observe(&ev(r#"{"n":0}"#));
        assert!(c.complete(), "not a chat stream: its framing is trusted");
    }

    #[test]
    fn responses_need_a_final_event() {
        let mut c = Completion::new(Api::Responses, 1);
        c.observe(&ev(r#"{"type":"response.output_text.delta","delta":"hi"}"#));
        assert!(!c.complete());
        c.observe(&Event {
            event: Some("response.completed".into()),
            data: r#"{"type":"response.completed","response":{}}"#.into(),
            id: None,
        });
        assert!(c.complete());
    }

    #[test]
    fn recorded_streams_are_complete_and_their_prefixes_are_not() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/openai-chat-streams");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "sse") {
                continue;
            }
            let events = crate::sse::parse_all(&std::fs::read(&path).unwrap());
            let n = events
                .iter()
                .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
                .flat_map(|v| v["choices"].as_array().cloned().unwrap_or_default())
                .filter_map(|c| c["index"].as_u64())
                .max()
                .map_or(1, |m| m as u32 + 1);
            let mut whole = Completion::new(Api::Chat, n);
            events.iter().for_each(|e| whole.observe(e));
            assert!(whole.complete(), "{}", path.display());
            // without [DONE] and the finishing chunks: truncated
            let first_finish = events
                .iter()
                .position(|e| e.data.contains("\"finish_reason\":\"") || e.is_done())
                .unwrap();
            let mut cut = Completion::new(Api::Chat, n);
            events[..first_finish].iter().for_each(|e| cut.observe(e));
            assert!(!cut.complete(), "{}", path.display());
        }
    }
}
