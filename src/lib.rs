//! Switchyard: a self-hosted gateway for OpenAI-compatible LLM APIs, on Pingora.
//!
//! Layout: `config` (YAML → validated `Config`), `state` (ArcSwap snapshot),
//! `proxy` (the thin `ProxyHttp` impl), `forward` (the understood lane's upstream
//! leg), `keys` (key pools), `limits` (client auth), `metrics`, `admin`
//! (admin listener), `demo` (built-in offline upstream), `server` (Pingora wiring).

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod minihttp;
pub mod mock;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod state;
pub mod store;
pub mod summary;
