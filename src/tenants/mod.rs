//! Client keys made at run time (admin API, CLI, dashboard), next to the
//! config file's `clients:`. A run-time client is a [`Tenant`] record: its
//! key's SHA-256 (the key itself is shown once, never stored), limits,
//! quotas, expiry and notes. Records live in the tenant store ([`db`]:
//! SQLite under `state.path`, or Redis with a fleet) and every change is
//! an [`Audit`] record. The snapshot's client list is the config's clients
//! followed by the active tenants ([`State::set_tenants`]), so a request
//! finds a run-time key by the same one hashed lookup.
//!
//! [`State::set_tenants`]: crate::state::State::set_tenants

pub mod admit;
pub mod db;
pub mod input;
pub mod quota;
pub mod record;
pub mod seen;
pub mod view;

pub use db::Registry;
pub use record::{hint, merged, new_key, Audit, Tenant, MAX_TENANTS};
