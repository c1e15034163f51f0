//! Switchyard: a self-hosted gateway for OpenAI-compatible LLM APIs, on Pingora.
//!
//! Layout: `config` (YAML → validated `Config`), `state` (ArcSwap snapshot),
//! `proxy` (the thin `ProxyHttp` impl), `routes` (the API paths), `forward`
//! (the understood lane: attempt plan, attempts, delivery), `upstream`
//! (upstreams, connection pool, HTTP/1 reader), `keys` (key pools), `limits`
//! (client auth), `store` (persistence), `metrics`, `series` (the last minutes
//! of traffic for the dashboard), `admin` (admin listener, dashboard),
//! `demo` (built-in offline upstream), `server` (Pingora wiring), `clock`.

pub mod admin;
#[cfg(feature = "alloc-stats")]
pub mod alloc_stats;
pub mod anthropic;
pub mod cache;
pub mod cli;
pub mod clients_cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod forward;
pub mod keys;
pub mod limits;
pub mod listing;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod minihttp;
#[cfg(feature = "test-support")]
pub mod mock;
pub mod proxy;
pub mod responses;
pub mod routes;
pub mod series;
pub mod server;
pub mod sse;
pub mod state;
pub mod store;
pub mod summary;
pub mod tenants;
pub mod tls;
pub mod upstream;
