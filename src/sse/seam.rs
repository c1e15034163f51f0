//! The seam of a continued stream. While a chat or completions stream is
//! passed through (or aggregated), [`Seam`] keeps the answer text the client
//! already has, the first chunk's `id` and `created`, and whether the answer
//! can be continued at all (one choice, text only). When the stream breaks,
//! the next candidate is asked for the rest ([`Seam::shape_request`]: prefill
//! or restart) and each of its events goes through [`Seam::join`], which gives
//! it the original `id` and `created`, drops what the client already has, and
//! says when the new text contradicts it.
//!
//! Invariants: the client never gets text twice, and never text that does
//! not extend what it has (restart: the new answer must begin with the text
//! already sent; prefill: a target that ignored the prefill and repeats the
//! text from its start is treated as a restart). Memory is bounded: at most
//! `cap` bytes of text are kept; beyond that the stream is no longer
//! continuable and the text is freed.

use crate::routes::Api;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// How the next candidate is asked to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The text already sent goes along as a trailing assistant message
    /// (completions: appended to the prompt); the answer is its remainder.
    Prefill,
    /// The original request again; only what goes beyond the text already sent is used.
    Restart,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Restart => "restart",
        }
    }
}

/// Prefill events repeating the sent text from its start, held before the
/// target is judged to have ignored the prefill (and treated as a restart).
const MAX_HELD: usize = 64;

/// The fields of a stream chunk the seam needs, read without building a tree.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<serde_json::Number>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    /// Completions put the text here.
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
    #[serde(default)]
    audio: Option<IgnoredAny>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
}

impl Delta<'_> {
    /// What makes this delta more than text (a seam there would be ambiguous).
    fn not_text(&self) -> Option<&'static str> {
        let said = |s: &Option<Cow<str>>| s.as_deref().is_some_and(|s| !s.is_empty());
        if self.tool_calls.is_some() || self.function_call.is_some() {
            Some("the answer calls a tool")
        } else if self.audio.is_some() {
            Some("the answer carries audio")
        } else if said(&self.refusal) {
            Some("the answer is a refusal")
        } else if said(&self.reasoning_content) || said(&self.reasoning) {
            Some("the answer streams reasoning")
        } else {
            None
        }
    }
}

/// One attempt's share of the answer, for the usage estimate.
#[derive(Debug, Clone, Copy)]
struct Spent {
    prefill: bool,
    /// Text the client had when the attempt began (bytes).
    start: usize,
    /// Text the attempt generated (bytes; a restart regenerates the overlap).
    produced: usize,
    /// Its events began (a refused request costs nothing).
    counted: bool,
}

/// How the running continuation joins the text already sent.
#[derive(Debug)]
enum Phase {
    /// The stream's own first attempt: events are observed, not joined.
    First,
    /// The new answer is being matched against the sent text; `held` are
    /// prefill events kept until the echo question is settled; `echo`: too
    /// many matched to be anything but a repeat.
    Matching {
        matched: usize,
        held: Vec<Value>,
        echo: bool,
    },
    /// Past the seam: events are forwarded with the original id.
    Joined,
}

/// What the client has of one continuable answer. See the module docs.
#[derive(Debug)]
pub struct Seam {
    api: Api,
    cap: usize,
    text: String,
    id: Option<Value>,
    created: Option<Value>,
    /// Why the answer cannot be continued; `None`: it can.
    off: Option<&'static str>,
    finished: bool,
    mode: Option<Mode>,
    phase: Phase,
    spent: Vec<Spent>,
    cur: Spent,
}

impl Seam {
    /// For a stream of `api` with `choices` choices, keeping at most `cap`
    /// bytes of text. `None` when such a stream is never continued (not chat
    /// or completions, several choices, or `cap` 0).
    pub fn new(api: Api, choices: u32, cap: usize) -> Option<Seam> {
        if !matches!(api, Api::Chat | Api::Completions) || choices != 1 || cap == 0 {
            return None;
        }
        Some(Seam {
            api,
            cap,
            text: String::new(),
            id: None,
            created: None,
            off: None,
            finished: false,
            mode: None,
            phase: Phase::First,
            spent: Vec::new(),
            cur: Spent {
                prefill: false,
                start: 0,
                produced: 0,
                counted: false,
            },
        })
    }

    /// Whether a break now could be continued.
    pub fn resumable(&self) -> bool {
        self.off.is_none() && !self.finished
    }

    /// Why the answer cannot be continued, if it cannot.
    pub fn why_not(&self) -> Option<&'static str> {
        if self.finished {
            Some("the answer had finished")
        } else {
            self.off
        }
    }

    /// The text the client has (bytes).
    pub fn sent_len(&self) -> usize {
        self.text.len()
    }

    /// The running continuation's mode; `None` during the first attempt.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// Takes one event of the first attempt, forwarded as it is. A chunk that
    /// is not JSON is ignored.
    pub fn observe(&mut self, data: &str) {
        if self.off.is_some() {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            return;
        };
        self.take_first(&chunk);
    }

    /// The same for an event already parsed (aggregation).
    pub fn observe_value(&mut self, v: &Value) {
        if self.off.is_some() {
            return;
        }
        if let Ok(chunk) = Chunk::deserialize(v) {
            self.take_first(&chunk);
        }
    }

    fn take_first(&mut self, chunk: &Chunk) {
        self.cur.counted = true;
        if self.id.is_none() {
            if let Some(id) = &chunk.id {
                self.id = Some(Value::String(id.to_string()));
                self.created = chunk.created.clone().map(Value::Number);
            }
        }
        for c in &chunk.choices {
            if c.index != 0 {
                return self.turn_off("the answer has several choices");
            }
            if c.finish_reason.is_some() {
                self.finished = true;
            }
            if let Some(d) = &c.delta {
                if let Some(why) = d.not_text() {
                    return self.turn_off(why);
                }
            }
            if let Some(t) = self.piece(c) {
                let t = t.to_string();
                self.push_text(&t);
            }
        }
    }

    fn piece<'c>(&self, c: &'c Choice) -> Option<&'c str> {
        match self.api {
            Api::Completions => c.text.as_deref(),
            _ => c.delta.as_ref().and_then(|d| d.content.as_deref()),
        }
    }

    fn push_text(&mut self, t: &str) {
        self.cur.produced += t.len();
        self.append(t);
    }

    fn append(&mut self, t: &str) {
        if self.text.len() + t.len() > self.cap {
            self.turn_off("the answer outgrew the continuation buffer");
        } else {
            self.text.push_str(t);
        }
    }

    fn turn_off(&mut self, why: &'static str) {
        self.off = Some(why);
        self.text = String::new();
    }

    /// Starts a continuation attempt in `mode` (a refused attempt may be
    /// followed by another on the same target).
    pub fn begin(&mut self, mode: Mode) {
        if self.cur.counted {
            self.spent.push(self.cur);
        }
        self.cur = Spent {
            prefill: mode == Mode::Prefill,
            start: self.text.len(),
            produced: 0,
            counted: false,
        };
        self.mode = Some(mode);
        self.phase = Phase::Matching {
            matched: 0,
            held: Vec::new(),
            echo: false,
        };
    }

    /// Whether the request `body` can carry a prefill (chat messages as a
    /// list; a completions prompt as one string).
    pub fn can_prefill(&self, body: &Value) -> bool {
        match self.api {
            Api::Completions => body.get("prompt").is_some_and(Value::is_string),
            _ => body.get("messages").is_some_and(Value::is_array),
        }
    }

    /// Edits the request `body` (the JSON sent to the target) to continue in
    /// `mode`: always streamed with usage; prefill adds the text sent and
    /// lowers a token limit by its estimate. `false` when `mode` cannot be
    /// used with this body (a prefill of a non-string prompt).
    pub fn shape_request(&self, body: &mut Value, mode: Mode) -> bool {
        let Some(obj) = body.as_object_mut() else {
            return false;
        };
        if mode == Mode::Prefill {
            match self.api {
                Api::Completions => match obj.get_mut("prompt") {
                    Some(Value::String(p)) => p.push_str(&self.text),
                    _ => return false,
                },
                _ => match obj.get_mut("messages") {
                    Some(Value::Array(m)) => {
                        m.push(json!({"role": "assistant", "content": self.text}))
                    }
                    _ => return false,
                },
            }
            let used = estimate_tokens(self.text.len());
            for limit in ["max_tokens", "max_completion_tokens"] {
                if let Some(n) = obj.get(limit).and_then(Value::as_u64) {
                    obj.insert(limit.into(), json!(n.saturating_sub(used).max(1)));
                }
            }
        }
        obj.insert("stream".into(), json!(true));
        let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
        match opts.as_object_mut() {
            Some(o) => {
                o.insert("include_usage".into(), json!(true));
            }
            None => *opts = json!({"include_usage": true}),
        }
        true
    }

    /// Takes one event of a continuation (parsed) and appends what the client
    /// should get to `out`: nothing while the new text repeats what was sent,
    /// the event with the original `id`/`created` and only new text after.
    /// `Err` names why the new answer cannot join the old one (the stream
    /// must end with an error).
    pub fn join(&mut self, mut v: Value, out: &mut Vec<Value>) -> Result<(), &'static str> {
        self.cur.counted = true;
        if let Some(obj) = v.as_object_mut() {
            if let Some(id) = &self.id {
                obj.insert("id".into(), id.clone());
            }
            if let Some(c) = &self.created {
                obj.insert("created".into(), c.clone());
            }
        }
        let (piece, finish, not_text) = match Chunk::deserialize(&v) {
            Ok(chunk) => match chunk.choices.first() {
                Some(c) if chunk.choices.len() > 1 || c.index != 0 => {
                    return Err("the continuation has several choices")
                }
                Some(c) => (
                    self.piece(c).map(str::to_string),
                    c.finish_reason.is_some(),
                    c.delta.as_ref().and_then(Delta::not_text),
                ),
                // a usage chunk or an empty one
                None => (None, false, None),
            },
            Err(_) => (None, false, None),
        };
        if let Some(why) = not_text {
            return Err(why);
        }
        let mode = self.mode.unwrap_or(Mode::Restart);
        let piece = piece.unwrap_or_default();
        if let Phase::Matching {
            matched,
            held,
            echo,
        } = &mut self.phase
        {
            let rest = &self.text[*matched..];
            if rest.is_empty() {
                // the seam is reached: what follows is new
                self.phase = Phase::Joined;
            } else if rest.starts_with(piece.as_str()) && !finish {
                // repeats what was sent: held (prefill, until settled) or dropped
                *matched += piece.len();
                self.cur.produced += piece.len();
                if mode == Mode::Prefill && !piece.is_empty() && !*echo {
                    held.push(v);
                    if held.len() > MAX_HELD {
                        *echo = true;
                        held.clear();
                    }
                }
                if *matched == self.text.len() {
                    self.phase = Phase::Joined;
                }
                return Ok(());
            } else if let Some(new) = piece.strip_prefix(rest) {
                // crosses the seam: keep only the new part
                let new = new.to_string();
                self.cur.produced += rest.len();
                self.phase = Phase::Joined;
                set_piece(&mut v, self.api, &new);
                return self.forward(v, &new, finish, out);
            } else if mode == Mode::Prefill && !*echo {
                // not an echo: a real continuation, held events first (their
                // text is the first `matched` bytes sent, counted as produced when held)
                let held = std::mem::take(held);
                let repeated = self.text[..*matched].to_string();
                self.phase = Phase::Joined;
                self.append(&repeated);
                out.extend(held);
            } else {
                return Err(if finish {
                    "the new answer ends before the text already sent"
                } else {
                    "the new answer differs from the text already sent"
                });
            }
        }
        self.forward(v, &piece, finish, out)
    }

    fn forward(
        &mut self,
        v: Value,
        piece: &str,
        finish: bool,
        out: &mut Vec<Value>,
    ) -> Result<(), &'static str> {
        if finish {
            self.finished = true;
        }
        let carries = finish
            || !piece.is_empty()
            || v.get("usage").is_some_and(|u| !u.is_null())
            || v.get("choices")
                .and_then(Value::as_array)
                .is_some_and(|c| c.is_empty());
        if !piece.is_empty() {
            self.push_text(piece);
        }
        if carries {
            out.push(v);
        }
        Ok(())
    }

    /// Adds the earlier attempts' estimated usage to the final `usage`
    /// object, so the count matches what every attempt cost: each broken
    /// attempt's prompt (the final prompt, less the prefill) and the text it
    /// generated (about four bytes a token).
    pub fn add_earlier_usage(&self, usage: &mut Value) {
        let earlier: Vec<&Spent> = self.spent.iter().filter(|s| s.counted).collect();
        if earlier.is_empty() {
            return;
        }
        let Some(u) = usage.as_object_mut() else {
            return;
        };
        let get = |u: &serde_json::Map<String, Value>, k: &str| u.get(k).and_then(Value::as_u64);
        let final_prompt = get(u, "prompt_tokens").unwrap_or(0);
        let base = if self.cur.prefill {
            final_prompt.saturating_sub(estimate_tokens(self.cur.start))
        } else {
            final_prompt
        };
        let (mut prompt, mut completion) = (0u64, 0u64);
        for s in earlier {
            prompt += base
                + if s.prefill {
                    estimate_tokens(s.start)
                } else {
                    0
                };
            completion += estimate_tokens(s.produced);
        }
        for (k, add) in [
            ("prompt_tokens", prompt),
            ("completion_tokens", completion),
            ("total_tokens", prompt + completion),
        ] {
            let n = get(u, k).unwrap_or(0) + add;
            u.insert(k.into(), json!(n));
        }
    }
}

/// Tokens in `bytes` of text, estimated (about four bytes a token).
pub fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

/// Replaces the text of choice 0 in a chunk.
fn set_piece(v: &mut Value, api: Api, text: &str) {
    let Some(c) = v
        .get_mut("choices")
        .and_then(|c| c.get_mut(0))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    match api {
        Api::Completions => {
            c.insert("text".into(), json!(text));
        }
        _ => {
            if let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) {
                d.insert("content".into(), json!(text));
            }
        }
    }
}

#[cfg(test)]
#[path = "seam_tests.rs"]
mod tests;
