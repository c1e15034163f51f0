//! What a snapshot holds per client: its windows, slots, quota counters
//! and last-seen time, by client index (`config.clients[i]`).

use crate::config::Config;
use std::sync::Arc;

/// What a snapshot holds per client, by client index (`config.clients[i]`):
/// windows and counters are shared by name, so they outlive snapshots.
#[derive(Default)]
pub struct ClientParts {
    /// Each client's name number (`store::names`) for usage records.
    pub ids: Vec<u32>,
    /// `rpm` windows.
    pub windows: Vec<Option<Arc<crate::limits::window::RequestWindow>>>,
    /// `max_concurrent` slots.
    pub slots: Vec<Option<Arc<crate::limits::window::Slots>>>,
    /// `tpm` windows.
    pub tokens: Vec<Option<Arc<crate::limits::tokens::TokenWindow>>>,
    /// Quota counters (`quotas`).
    pub quotas: Vec<Vec<Arc<crate::tenants::quota::Counter>>>,
    /// When each was last seen (ms).
    pub seen: Vec<Arc<std::sync::atomic::AtomicU64>>,
}

impl ClientParts {
    pub fn of(config: &Config) -> ClientParts {
        let list = config.clients.as_deref().unwrap_or_default();
        let each = |f: &dyn Fn(&crate::config::Client) -> _| list.iter().map(f).collect();
        ClientParts {
            ids: list
                .iter()
                .map(|c| crate::store::names::id(&c.name))
                .collect(),
            windows: each(&|c| c.rpm.map(|r| crate::limits::window::for_client(&c.name, r))),
            slots: list
                .iter()
                .map(|c| {
                    c.max_concurrent
                        .map(|m| crate::limits::window::slots_for_client(&c.name, m))
                })
                .collect(),
            tokens: list
                .iter()
                .map(|c| {
                    c.tpm
                        .map(|t| crate::limits::tokens::named(&format!("client {}", c.name), t))
                })
                .collect(),
            quotas: list
                .iter()
                .map(|c| {
                    let owner = format!("client {}", c.name);
                    c.quotas
                        .iter()
                        .map(|q| crate::tenants::quota::counter(&owner, q))
                        .collect()
                })
                .collect(),
            seen: list
                .iter()
                .map(|c| crate::tenants::seen::seen(&c.name))
                .collect(),
        }
    }
}

/// Whether requests' output limits are read (some `tpm` or quota is set).
pub fn meters_tokens(config: &Config) -> bool {
    let clients = config.clients.as_deref().unwrap_or_default();
    config.limits.tpm.is_some()
        || !config.limits.budget.is_empty()
        || clients
            .iter()
            .any(|c| c.tpm.is_some() || !c.quotas.is_empty())
        || config.upstreams.iter().any(|u| u.tpm.is_some())
}
