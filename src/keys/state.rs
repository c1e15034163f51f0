//! A key's state as it is shown and stored: parked, cooling or active.

use std::collections::HashMap;

/// Why and until when a key is parked (out of rotation until an operator or its reset).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Park {
    pub reason: String,
    /// Automatic return to service (ms since epoch), e.g. a quota reset.
    pub until_ms: Option<u64>,
}

/// A key's state as the admin API and the CLI show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Cooling,
    Parked,
}

impl KeyStatus {
    pub const ALL: [KeyStatus; 3] = [KeyStatus::Active, KeyStatus::Cooling, KeyStatus::Parked];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Cooling => "cooling",
            KeyStatus::Parked => "parked",
        }
    }
}

/// A key's state for display and persistence.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default, PartialEq)]
pub struct KeyState {
    pub cool_until_ms: u64,
    pub model_cool: HashMap<String, u64>,
    pub park: Option<Park>,
    pub reason: Option<String>,
    pub requests: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub last_used_ms: u64,
}

impl KeyState {
    /// What the admin API shows at `now`: the status, until when, the reason
    /// and the model a cooldown is scoped to.
    pub fn status(&self, now: u64) -> (KeyStatus, Option<u64>, Option<String>, Option<String>) {
        let s = self;
        if let Some(Park { reason, until_ms }) = &s.park {
            (KeyStatus::Parked, *until_ms, Some(reason.clone()), None)
        } else if s.cool_until_ms > now {
            (
                KeyStatus::Cooling,
                Some(s.cool_until_ms),
                s.reason.clone(),
                None,
            )
        } else if let Some((m, u)) = s
            .model_cool
            .iter()
            .filter(|(_, u)| **u > now)
            .max_by_key(|(_, u)| **u)
        {
            (
                KeyStatus::Cooling,
                Some(*u),
                s.reason.clone(),
                Some(m.clone()),
            )
        } else {
            (KeyStatus::Active, None, None, None)
        }
    }
}
