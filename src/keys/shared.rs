//! What other gateway instances must learn of a key's state: a change made
//! here (a cooldown, a park, an operator's enable or reset) goes to the
//! hook the fleet installs (`crate::fleet`); without a fleet, nowhere.

use super::state::Park;
use std::sync::OnceLock;

/// A change of a key's state, to share.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Cooling (the whole key, or one model) until then (ms since epoch).
    Cool {
        model: Option<String>,
        until_ms: u64,
        reason: String,
    },
    Park(Park),
    /// Back in rotation: cooldowns and parking cleared.
    Reset,
}

/// Receives (upstream, key fingerprint, change); must not block.
pub type Hook = Box<dyn Fn(&str, &str, Change) + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the hook (once per process).
pub fn set_hook(hook: Hook) {
    let _ = HOOK.set(hook);
}

/// Hands a change to the hook, if there is one.
pub(super) fn emit(upstream: &str, fingerprint: &str, change: impl FnOnce() -> Change) {
    if let Some(h) = HOOK.get() {
        h(upstream, fingerprint, change());
    }
}
