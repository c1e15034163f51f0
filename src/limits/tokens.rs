//! Tokens per minute: a sliding one-minute window of token amounts
//! ([`TokenWindow`], for `tpm` settings) and the estimate a request is
//! charged before its answer says what it really used ([`estimate`]).
//!
//! A request is charged its estimate when admitted; once its answer's usage
//! is known, [`TokenWindow::correct`] replaces the estimate with it (while the
//! charge is still inside the window). Memory is one entry per request of the
//! last minute.

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::VecDeque;

use super::window::{shared, Registry, WINDOW_MS};
use std::sync::{Arc, LazyLock};

static WINDOWS: Registry<TokenWindow> = LazyLock::new(Default::default);

/// Every tpm window in use: (name, limit, window).
pub fn each_window(mut f: impl FnMut(&str, u64, Arc<TokenWindow>)) {
    super::window::each_in(&WINDOWS, |n, l, w| f(n, l, w));
}

impl super::shared::Shareable for TokenWindow {
    fn mine(&self, now_ms: u64) -> u64 {
        self.used(now_ms)
    }
    fn set_others(&self, n: u64) {
        self.others.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The tpm window registered as `name` (kept across reloads that keep the limit).
pub fn named(name: &str, limit: u64) -> Arc<TokenWindow> {
    shared(&WINDOWS, name, limit, || TokenWindow::new(limit))
}

/// Bodies up to this size are estimated from their length alone (cheap; a
/// small overestimate, corrected after the call). Larger ones are walked so
/// that images and other non-text parts are not charged as text.
const WALK_ABOVE: usize = 16 * 1024;

/// Tokens charged for one image part (OpenAI's high-detail tile cost, roughly).
const IMAGE_TOKENS: u64 = 765;

/// Text bytes per token, on average for English prose and code.
const BYTES_PER_TOKEN: u64 = 4;

/// What a request is expected to use, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The prompt (messages, prompt or input).
    pub prompt: u64,
    /// The output it asks for at most (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`); 0 when it does not say.
    pub max_output: u64,
}

impl Estimate {
    /// What a rate limit charges before the answer: prompt plus asked output.
    pub fn charge(&self) -> u64 {
        self.prompt.saturating_add(self.max_output).max(1)
    }
}

/// Estimates a request body's tokens; `max_output` is the output limit the
/// request sets (read with its routing fields), charged only when `output`
/// (a `tpm` limit will charge it). `json` parses the body (called only for
/// bodies above 16 KiB, to count their text).
pub fn estimate<'a>(
    body: &[u8],
    output: bool,
    max_output: u64,
    json: impl FnOnce() -> &'a Value,
) -> Estimate {
    let max_output = if output { max_output } else { 0 };
    if body.len() <= WALK_ABOVE {
        // every text byte is a body byte: an upper bound, close for small bodies
        return Estimate {
            prompt: (body.len() as u64).div_ceil(BYTES_PER_TOKEN),
            max_output,
        };
    }
    let v = json();
    let mut text = 0u64;
    let mut images = 0u64;
    for field in [
        "system",
        "messages",
        "prompt",
        "input",
        "instructions",
        "tools",
    ] {
        if let Some(x) = v.get(field) {
            walk(x, &mut text, &mut images, 0);
        }
    }
    Estimate {
        prompt: text.div_ceil(BYTES_PER_TOKEN) + images * IMAGE_TOKENS,
        max_output,
    }
}

/// Adds the text bytes and image parts under `v` (bounded depth: a hostile
/// body cannot make this recurse without end; serde_json limits it too).
fn walk(v: &Value, text: &mut u64, images: &mut u64, depth: u32) {
    if depth > 32 {
        return;
    }
    match v {
        Value::String(s) => *text += s.len() as u64,
        Value::Array(a) => a.iter().for_each(|x| walk(x, text, images, depth + 1)),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
            if kind.contains("image") || kind.contains("audio") || kind == "file" {
                *images += 1;
                return;
            }
            for (k, x) in o {
                if k != "type" {
                    walk(x, text, images, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The tokens charged in the last minute, at most `limit`.
#[derive(Debug)]
pub struct TokenWindow {
    limit: u64,
    inner: Mutex<Inner>,
    /// What the fleet's other instances charged (their last sync).
    others: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (charge number, time ms, tokens), oldest first.
    entries: VecDeque<(u64, u64, u64)>,
    sum: u64,
    next: u64,
}

impl Inner {
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(_, t, n)) = self.entries.front() {
            if t + WINDOW_MS > now_ms {
                break;
            }
            self.sum -= n;
            self.entries.pop_front();
        }
    }

    fn push(&mut self, now_ms: u64, tokens: u64) -> Charge {
        let id = self.next;
        self.next += 1;
        self.entries.push_back((id, now_ms, tokens));
        self.sum += tokens;
        Charge { id, tokens }
    }

    /// Ms until `tokens` more fit (0: now).
    fn wait_for(&self, limit: u64, tokens: u64, now_ms: u64) -> u64 {
        let mut sum = self.sum;
        for &(_, t, n) in &self.entries {
            if sum + tokens <= limit {
                break;
            }
            sum -= n;
            if sum + tokens <= limit {
                return (t + WINDOW_MS).saturating_sub(now_ms).max(1);
            }
        }
        0
    }
}

/// A charge made on a window, to correct when the real usage is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    id: u64,
    pub tokens: u64,
}

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Fits in this many ms.
    Wait(u64),
    /// Larger than the whole limit: never fits.
    TooLarge,
}

impl TokenWindow {
    pub fn new(limit: u64) -> TokenWindow {
        TokenWindow {
            limit: limit.max(1),
            inner: Mutex::new(Inner::default()),
            others: Default::default(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Tokens charged in the minute before `now_ms`.
    pub fn used(&self, now_ms: u64) -> u64 {
        let mut i = self.inner.lock();
        i.expire(now_ms);
        i.sum
    }

    /// Whether `tokens` fit now (nothing charged).
    pub fn check(&self, now_ms: u64, tokens: u64) -> Result<(), Refusal> {
        if tokens > self.limit {
            return Err(Refusal::TooLarge);
        }
        let mut i = self.inner.lock();
        i.expire(now_ms);
        match self.wait(&i, tokens, now_ms) {
            0 => Ok(()),
            ms => Err(Refusal::Wait(ms)),
        }
    }

    /// Charges `tokens` at `now_ms` if they fit.
    pub fn charge(&self, now_ms: u64, tokens: u64) -> Result<Charge, Refusal> {
        if tokens > self.limit {
            return Err(Refusal::TooLarge);
        }
        let mut i = self.inner.lock();
        i.expire(now_ms);
        match self.wait(&i, tokens, now_ms) {
            0 => Ok(i.push(now_ms, tokens)),
            ms => Err(Refusal::Wait(ms)),
        }
    }

    /// Ms until `tokens` more fit (0: now), the others' share taken off the
    /// limit (when only theirs is in the way, the wait is a guess: 1 s).
    fn wait(&self, i: &Inner, tokens: u64, now_ms: u64) -> u64 {
        let others = self.others.load(std::sync::atomic::Ordering::Relaxed);
        let limit = self.limit.saturating_sub(others);
        if tokens > limit {
            return 1_000;
        }
        i.wait_for(limit, tokens, now_ms)
    }

    /// Charges `tokens` at `now_ms` whether or not they fit (after a [`check`](Self::check)).
    pub fn force(&self, now_ms: u64, tokens: u64) -> Charge {
        let mut i = self.inner.lock();
        i.expire(now_ms);
        i.push(now_ms, tokens)
    }

    /// Replaces `charge`'s estimate with the `actual` tokens used (nothing if
    /// the charge already left the window).
    pub fn correct(&self, charge: Charge, actual: u64) {
        let mut i = self.inner.lock();
        let Some(first) = i.entries.front().map(|e| e.0) else {
            return;
        };
        let Some(at) = charge.id.checked_sub(first) else {
            return;
        };
        if let Some(e) = i.entries.get_mut(at as usize) {
            debug_assert_eq!(e.0, charge.id);
            let old = e.2;
            e.2 = actual;
            i.sum = i.sum - old + actual;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn charges_wait_and_corrections() {
        let w = TokenWindow::new(1000);
        let a = w.charge(0, 600).unwrap();
        assert_eq!(w.charge(10_000, 500), Err(Refusal::Wait(50_000)));
        assert_eq!(w.check(10_000, 400), Ok(()));
        // the answer used less than estimated: room again
        w.correct(a, 100);
        assert_eq!(w.used(10_000), 100);
        let b = w.charge(10_000, 900).unwrap();
        assert_eq!(w.charge(20_000, 1), Err(Refusal::Wait(40_000)));
        // more than estimated: the window shows it
        w.correct(b, 950);
        assert_eq!(w.used(20_000), 1050);
        assert_eq!(w.charge(60_000, 51), Err(Refusal::Wait(10_000)));
        assert_eq!(w.used(60_000), 950);
        assert_eq!(w.charge(70_000, 1000).map(|c| c.tokens), Ok(1000));
        assert_eq!(w.charge(70_000, 1001), Err(Refusal::TooLarge));
        // a charge that left the window is not corrected
        w.correct(a, 5000);
        assert_eq!(w.used(70_000), 1000);
    }

    #[test]
    fn estimates() {
        let peek = |b: &[u8]| {
            serde_json::from_slice::<crate::forward::shape::Peek>(b)
                .unwrap()
                .max_output()
        };
        let small = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;
        let e = estimate(small, true, peek(small), || unreachable!());
        let unmetered = estimate(small, false, peek(small), || unreachable!());
        assert_eq!(unmetered.max_output, 0);
        assert_eq!(e.prompt, (small.len() as u64).div_ceil(4));
        assert_eq!(e.max_output, 50);
        assert_eq!(e.charge(), e.prompt + 50);
        let no_max = br#"{"model":"m","messages":[]}"#;
        assert_eq!(
            estimate(no_max, true, peek(no_max), || unreachable!()).max_output,
            0
        );
        let hostile = br#"{"model":"m","max_tokens":"lots","max_output_tokens":-3}"#;
        assert_eq!(peek(hostile), 0);
        // a big body with an image: the image is not charged as text
        let image = format!("data:image/png;base64,{}", "A".repeat(200_000));
        let v = json!({"model": "m", "max_completion_tokens": 7, "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "x".repeat(40_000)},
                {"type": "image_url", "image_url": {"url": image}}
            ]}
        ]});
        let body = serde_json::to_vec(&v).unwrap();
        let e = estimate(&body, true, peek(&body), || &v);
        assert_eq!(e.prompt, 10_001 + IMAGE_TOKENS, "{e:?}");
        assert_eq!(e.max_output, 7);
    }
}
