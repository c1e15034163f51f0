//! The last check of whether a key is refused on its own (a `GET /models`
//! with it alone, after a 401/403): reused for [`FRESH_MS`], and never run
//! twice at once, so a client that provokes 403s cannot make the gateway
//! check a key on every request.

use parking_lot::Mutex;

/// How long a check's verdict stands.
pub const FRESH_MS: u64 = 60_000;

/// How long a check may be in flight before another may start.
const RUNNING_MS: u64 = 15_000;

#[derive(Debug, Default)]
pub struct AuthCheck(Mutex<Option<State>>);

#[derive(Debug, Clone, Copy)]
struct State {
    at_ms: u64,
    /// `None` while it runs; then the verdict (`Some(None)`: no evidence).
    verdict: Option<Option<bool>>,
}

/// What a request that got a 401/403 does about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A recent verdict: `Some(true)` refused, `Some(false)` works, `None`
    /// no evidence.
    Known(Option<bool>),
    /// Another request is checking now: no evidence for this one.
    Busy,
    /// Run the check, then [`AuthCheck::finish`].
    Run,
}

impl AuthCheck {
    /// Starts a check at `now_ms` unless a fresh verdict or a running check exists.
    pub fn start(&self, now_ms: u64) -> Next {
        let mut s = self.0.lock();
        match *s {
            Some(State {
                at_ms,
                verdict: Some(v),
            }) if now_ms.saturating_sub(at_ms) < FRESH_MS => return Next::Known(v),
            Some(State {
                at_ms,
                verdict: None,
            }) if now_ms.saturating_sub(at_ms) < RUNNING_MS => return Next::Busy,
            _ => {}
        }
        *s = Some(State {
            at_ms: now_ms,
            verdict: None,
        });
        Next::Run
    }

    /// Records a check's verdict.
    pub fn finish(&self, now_ms: u64, verdict: Option<bool>) {
        *self.0.lock() = Some(State {
            at_ms: now_ms,
            verdict: Some(verdict),
        });
    }

    /// Forgets the verdict (the key was enabled or reset by an operator).
    pub fn clear(&self) {
        *self.0.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_check_at_a_time_and_its_verdict_reused_for_a_minute() {
        let c = AuthCheck::default();
        assert_eq!(c.start(1_000), Next::Run);
        assert_eq!(c.start(2_000), Next::Busy);
        c.finish(3_000, Some(false));
        assert_eq!(c.start(3_000 + FRESH_MS - 1), Next::Known(Some(false)));
        assert_eq!(c.start(3_000 + FRESH_MS), Next::Run);
        // a check that never finished does not block forever
        assert_eq!(c.start(3_000 + FRESH_MS + RUNNING_MS), Next::Run);
        c.finish(100_000, None);
        assert_eq!(c.start(100_001), Next::Known(None));
        c.clear();
        assert_eq!(c.start(100_002), Next::Run);
    }
}
