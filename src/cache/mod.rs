//! The response cache (`cache:`): a complete answer kept for an identical
//! call, in memory (LRU bounded by bytes) or in the fleet's Redis.
//!
//! - The key is a SHA-256 over the endpoint, the model and where it routes
//!   (first upstream and its upstream model), the caller's client under
//!   `scope: client`, and the canonical body ([`canon`]: `stream`,
//!   `stream_options` and `user` removed, keys sorted, no whitespace). So
//!   field order and spacing do not split entries, and every field that
//!   changes the answer (messages, tools, temperature, seed, n…) does.
//! - Only answers that finished are kept: every choice ended with `stop`,
//!   `tool_calls` or `function_call` (not `length`, not filtered), or an
//!   embeddings list; never an error, a continued stream or a body over
//!   `max_entry` ([`capture`]).
//! - One entry serves both forms: a JSON answer, or a stream synthesized
//!   from it ([`replay`]).
//! - A store that fails is a miss, never a failed request.

pub mod canon;
pub mod capture;
pub mod entry;
pub mod memory;
pub mod replay;

use crate::config::cache::{CacheScope, CacheSettings, CacheStore};
use crate::limits::Caller;
use crate::routes::Api;
use crate::state::Snapshot;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};

pub use capture::Capture;
pub use entry::{finished, Entry};

/// `switchyard_cache_total`'s series, resolved once.
static HIT: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| crate::metrics::CACHE.with_label_values(&["hit"]));
static MISS: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| crate::metrics::CACHE.with_label_values(&["miss"]));
static STORED: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| crate::metrics::CACHE.with_label_values(&["stored"]));

/// One call's place in the cache.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub key: [u8; 32],
    /// Look for a kept answer (`Cache-Control: no-cache` says no).
    pub read: bool,
    /// Keep this call's answer (`Cache-Control: no-store` says no).
    pub write: bool,
    /// The client's name (purge by client; empty with `scope: shared`).
    pub client: String,
    pub model: String,
    /// The upstream the key's route names: only its answers are kept.
    pub upstream: String,
}

impl Lookup {
    /// The `x-switchyard-cache` a miss answers with.
    pub fn miss_header(&self) -> &'static str {
        if self.read {
            "miss"
        } else {
            "bypass"
        }
    }
}

/// Whether the cache applies to a call, and its key: the endpoint caches
/// (chat, completions, embeddings), the model matches `cache.models`, the
/// call has no query string and its body is a JSON object. `headers`: what
/// is forwarded upstream (in the key but for [`VOLATILE_HEADERS`]);
/// `cache_control`: the request's header.
pub fn lookup(
    snap: &Snapshot,
    caller: Caller,
    (api, path, query): (Api, &str, Option<&str>),
    model: &str,
    (body, headers): (&[u8], &crate::forward::headers::Forwarded),
    cache_control: Option<&str>,
) -> Option<Lookup> {
    let settings = snap.config.cache.as_ref()?;
    let (no_cache, no_store) = directives(cache_control);
    let caches = match api {
        Api::Chat | Api::Completions => true,
        Api::Other => path == "/embeddings",
        _ => false,
    };
    let listed = settings
        .models
        .iter()
        .any(|p| crate::config::glob_match(p, model));
    // a query string goes upstream (an api-version…): never cached
    if !caches || !listed || query.is_some() || (no_cache && no_store) {
        return None;
    }
    let (client, identity) = identity(snap, settings.scope, caller);
    // where the model routes now: a changed model_map is a different answer
    let (upstream, upstream_model) =
        snap.first_upstream_for(model)
            .map_or((String::new(), model), |u| {
                (
                    u.conf.name.clone(),
                    u.conf.upstream_model(model).unwrap_or(model),
                )
            });
    let mut h = Sha256::new();
    let mut part = |p: &[u8]| {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    };
    for p in [path, &upstream, upstream_model, &identity, model] {
        part(p.as_bytes());
    }
    for (name, value) in headers {
        let n = name.as_str();
        if !VOLATILE_HEADERS.contains(&n) && !n.starts_with("x-stainless-") {
            part(n.as_bytes());
            part(value.as_bytes());
        }
    }
    // a body that is not a JSON object is not cached
    canon::with_canonical(body, &["stream", "stream_options", "user"], part)?;
    Some(Lookup {
        key: h.finalize().into(),
        read: !no_cache,
        write: !no_store,
        client,
        model: model.to_string(),
        upstream,
    })
}

/// Forwarded headers that never change an answer (clients' own details,
/// tracing): left out of the key. Every other one is in it.
const VOLATILE_HEADERS: &[&str] = &[
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "pragma",
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "x-request-id",
    "anthropic-version",
];

/// The caller as the key knows it (a tag no client name can take), and
/// its name for purges: `shared`, `local`, or the client's name and key.
fn identity(snap: &Snapshot, scope: CacheScope, caller: Caller) -> (String, String) {
    match (scope, caller) {
        (CacheScope::Shared, _) => (String::new(), "shared".into()),
        (CacheScope::Client, Caller::Local) => ("-".into(), "local".into()),
        (CacheScope::Client, Caller::Client(i)) => {
            let c = snap.config.clients.as_ref().and_then(|c| c.get(i));
            let name = c.map_or("", |c| c.name.as_str());
            let key = c.map_or(String::new(), |c| hex::encode(&c.key_sha256[..8]));
            (name.to_string(), format!("client\n{name}\n{key}"))
        }
    }
}

/// `Cache-Control`'s `no-cache` and `no-store`.
fn directives(header: Option<&str>) -> (bool, bool) {
    let mut out = (false, false);
    for d in header.unwrap_or("").split(',') {
        match d.trim().to_ascii_lowercase().as_str() {
            "no-cache" => out.0 = true,
            "no-store" => out.1 = true,
            _ => {}
        }
    }
    out
}

/// The kept answer for `l`, if any and still fresh.
pub async fn get(settings: &CacheSettings, l: &Lookup) -> Option<Arc<Entry>> {
    let now = crate::clock::now_ms();
    let fresh = |e: &Entry| now < e.created_ms.saturating_add(settings.ttl.as_millis() as u64);
    let found = match settings.store {
        CacheStore::Memory => memory::get(&l.key, fresh),
        CacheStore::Redis => crate::fleet::cache_get(&redis_name(l))
            .await
            .and_then(|t| Entry::from_text(&t, settings.max_entry))
            .filter(fresh)
            .map(Arc::new),
    };
    let result = if found.is_some() { &HIT } else { &MISS };
    result.inc();
    found
}

/// Keeps `entry` under `l` (Redis: written in the background).
pub fn put(settings: &CacheSettings, l: &Lookup, entry: Entry) {
    let stored = match settings.store {
        CacheStore::Memory => memory::put(l.key, entry, settings.max_bytes),
        CacheStore::Redis => entry
            .to_text()
            .is_some_and(|text| crate::fleet::cache_put(redis_name(l), text, settings.ttl)),
    };
    if stored {
        STORED.inc();
    }
}

/// `client:model:key`, hex-encoded (no glob characters for `SCAN MATCH`).
fn redis_name(l: &Lookup) -> String {
    format!(
        "{}:{}:{}",
        hex::encode(&l.client),
        hex::encode(&l.model),
        hex::encode(l.key)
    )
}

/// Drops kept answers: all, or those of `model` and/or `client`; how many.
pub async fn purge(
    settings: &CacheSettings,
    model: Option<&str>,
    client: Option<&str>,
) -> Result<u64, String> {
    match settings.store {
        CacheStore::Memory => Ok(memory::purge(model, client)),
        CacheStore::Redis => {
            let part = |x: Option<&str>| x.map_or("*".to_string(), hex::encode);
            crate::fleet::cache_purge(&format!("{}:{}:*", part(client), part(model))).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn directives_and_finished_answers() {
        assert_eq!(directives(Some("No-Cache, max-age=0")), (true, false));
        assert_eq!(directives(Some("no-store")), (false, true));
        assert_eq!(directives(None), (false, false));
        let chat =
            |f: &str| json!({"choices": [{"finish_reason": f, "message": {"content": "x"}}]});
        assert!(finished(Api::Chat, &chat("stop")));
        assert!(finished(Api::Chat, &chat("tool_calls")));
        assert!(!finished(Api::Chat, &chat("length")));
        assert!(!finished(Api::Chat, &chat("content_filter")));
        assert!(!finished(Api::Chat, &json!({"choices": []})));
        assert!(!finished(Api::Chat, &json!({"error": {"message": "x"}})));
        assert!(finished(
            Api::Other,
            &json!({"data": [{"embedding": [0.1]}]})
        ));
        assert!(!finished(Api::Other, &json!({"data": []})));
    }
}
