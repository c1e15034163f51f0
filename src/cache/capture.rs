//! What a call's answer leaves for the cache: the whole JSON answer, or a
//! relayed stream merged as it passes (with its content events' timing).
//! Anything doubtful spoils it: a continuation, an event that does not
//! parse or merge, more than `cache.max_entry` bytes.

use super::entry::finished;
use crate::routes::Api;
use crate::sse::aggregate::Aggregator;
use bytes::Bytes;
use serde_json::Value;
use std::time::Instant;

/// Most content events whose timing is kept (later ones join the last).
const MAX_PACE: usize = 4096;
/// The longest pause between two events a paced replay keeps (ms).
const MAX_GAP_MS: u32 = 1_000;

pub struct Capture {
    api: Api,
    max: u64,
    json: Option<Bytes>,
    agg: Option<Aggregator>,
    seen: u64,
    pace: Vec<(u32, u32)>,
    last: Option<Instant>,
    spoiled: bool,
}

impl Capture {
    /// The largest answer it keeps.
    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn new(api: Api, max: u64) -> Capture {
        Capture {
            api,
            max,
            json: None,
            agg: None,
            seen: 0,
            pace: Vec::new(),
            last: None,
            spoiled: false,
        }
    }

    /// A new attempt's answer starts (a failed one's leftovers go).
    pub fn restart(&mut self) {
        if !self.spoiled {
            *self = Capture::new(self.api, self.max);
        }
    }

    /// Never keep this call's answer.
    pub fn spoil(&mut self) {
        self.spoiled = true;
        self.json = None;
        self.agg = None;
        self.pace = Vec::new();
    }

    /// The whole JSON answer.
    pub fn whole(&mut self, body: &[u8]) {
        if body.len() as u64 > self.max {
            return self.spoil();
        }
        if !self.spoiled {
            self.json = Some(Bytes::copy_from_slice(body));
        }
    }

    /// One event of a relayed stream, as the client gets it.
    pub fn event(&mut self, name: Option<&str>, data: &str) {
        if self.spoiled || data.trim() == "[DONE]" {
            return;
        }
        self.seen += data.len() as u64;
        if self.seen > self.max {
            return self.spoil();
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return self.spoil();
        };
        self.time(&v);
        let agg = self.agg.get_or_insert_with(|| Aggregator::new(self.api));
        if agg.push(name, &v).is_err() {
            self.spoil();
        }
    }

    /// Keeps a content event's length and the pause before it.
    fn time(&mut self, v: &Value) {
        let text = v["choices"][0]["delta"]["content"]
            .as_str()
            .or_else(|| v["choices"][0]["text"].as_str());
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return;
        };
        let now = Instant::now();
        let gap = self.last.map_or(0, |l| {
            now.duration_since(l)
                .as_millis()
                .min(u128::from(MAX_GAP_MS)) as u32
        });
        self.last = Some(now);
        let chars = text.chars().count() as u32;
        if self.pace.len() < MAX_PACE {
            self.pace.push((chars, gap));
        } else if let Some(last) = self.pace.last_mut() {
            last.0 = last.0.saturating_add(chars);
        }
    }

    /// The answer to keep: JSON that finished (see [`super::finished`]).
    pub fn finish(self) -> Option<(Bytes, Vec<(u32, u32)>)> {
        if self.spoiled {
            return None;
        }
        let body = match (self.json, self.agg) {
            // read only as far as the finish reasons (no tree built)
            (Some(j), _) => super::entry::finished_json(self.api, &j).then_some(j)?,
            (None, Some(a)) => {
                let v = a.finish().ok()?;
                if !finished(self.api, &v) {
                    return None;
                }
                let mut body = serde_json::to_vec(&v).ok()?;
                body.shrink_to_fit();
                Bytes::from(body)
            }
            (None, None) => return None,
        };
        (body.len() as u64 <= self.max).then_some((body, self.pace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_merged_a_spoiled_one_and_a_whole_answer() {
        let ev = |content: &str, finish: Value| {
            serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
            .to_string()
        };
        let mut c = Capture::new(Api::Chat, 1 << 20);
        c.event(None, &ev("Hel", Value::Null));
        c.event(None, &ev("lo", "stop".into()));
        c.event(None, "[DONE]");
        let (body, pace) = c.finish().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(pace.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 2]);

        let mut cut = Capture::new(Api::Chat, 1 << 20);
        cut.event(None, &ev("Hel", Value::Null));
        cut.event(None, &ev("lo", "length".into()));
        assert!(cut.finish().is_none(), "truncated: not kept");
        let mut bad = Capture::new(Api::Chat, 1 << 20);
        bad.event(None, "{not json");
        bad.event(None, &ev("lo", "stop".into()));
        assert!(bad.finish().is_none());
        let mut big = Capture::new(Api::Chat, 10);
        big.whole(br#"{"choices":[{"finish_reason":"stop"}]}"#);
        assert!(big.finish().is_none(), "over max_entry");
        let mut whole = Capture::new(Api::Chat, 1 << 20);
        whole.whole(br#"{"choices":[{"finish_reason":"stop"}]}"#);
        assert!(whole.finish().is_some());
        let mut spoiled = Capture::new(Api::Chat, 1 << 20);
        spoiled.spoil();
        spoiled.restart();
        spoiled.whole(br#"{"choices":[{"finish_reason":"stop"}]}"#);
        assert!(spoiled.finish().is_none(), "a spoiled call stays spoiled");
    }
}
