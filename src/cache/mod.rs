//! The response cache (`cache:`): a complete answer kept for an identical
//! call, in memory (LRU bounded by bytes) or in the fleet's Redis.
//!
//! - The key is a SHA-256 over the endpoint, the model and where it routes
//!   (first upstream and its upstream model), the caller's client under
//!   `scope: client`, and the canonical body: parsed, `stream`,
//!   `stream_options` and `user` removed, keys sorted, no whitespace. So
//!   field order and spacing do not split entries, and every field that
//!   changes the answer (messages, tools, temperature, seed, n…) does.
//! - Only answers that finished are kept: every choice ended with `stop`,
//!   `tool_calls` or `function_call` (not `length`, not filtered), or an
//!   embeddings list; never an error, a continued stream or a body over
//!   `max_entry` ([`capture`]).
//! - One entry serves both forms: a JSON answer, or a stream synthesized
//!   from it ([`replay`]).
//! - A store that fails is a miss, never a failed request.

pub mod capture;
pub mod entry;
pub mod memory;
pub mod replay;

use crate::config::cache::{CacheScope, CacheSettings, CacheStore};
use crate::limits::Caller;
use crate::routes::Api;
use crate::state::Snapshot;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub use capture::Capture;
pub use entry::{finished, Entry};

/// One call's place in the cache.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub key: [u8; 32],
    /// Look for a kept answer (`Cache-Control: no-cache` says no).
    pub read: bool,
    /// Keep this call's answer (`Cache-Control: no-store` says no).
    pub write: bool,
    pub client: String,
    pub model: String,
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

/// Whether the cache applies to `call`, and its key: the call's endpoint
/// caches (chat, completions, embeddings), its model matches `cache.models`
/// and its body is a JSON object. `cache_control`: the request's header.
pub fn lookup(
    snap: &Snapshot,
    caller: Caller,
    (api, path): (Api, &str),
    model: &str,
    body: &[u8],
    cache_control: Option<&str>,
) -> Option<Lookup> {
    let settings = snap.config.cache.as_ref()?;
    let caches = match api {
        Api::Chat | Api::Completions => true,
        Api::Other => path == "/embeddings",
        _ => false,
    };
    if !caches
        || !settings
            .models
            .iter()
            .any(|p| crate::config::glob_match(p, model))
    {
        return None;
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    for f in ["stream", "stream_options", "user"] {
        fields.remove(f);
    }
    let client = match (settings.scope, caller) {
        (CacheScope::Client, _) => crate::limits::caller_name(&snap.config, &caller).to_string(),
        (CacheScope::Shared, _) => String::new(),
    };
    // where the model routes now: a changed model_map is a different answer
    let route = snap.first_upstream_for(model).map_or(String::new(), |u| {
        let up = &u.conf;
        format!("{}\n{}", up.name, up.upstream_model(model).unwrap_or(model))
    });
    let mut h = Sha256::new();
    for part in [
        path.as_bytes(),
        route.as_bytes(),
        client.as_bytes(),
        model.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    // serde_json's maps are sorted: this is the canonical form
    h.update(Value::Object(fields).to_string().as_bytes());
    let (no_cache, no_store) = directives(cache_control);
    Some(Lookup {
        key: h.finalize().into(),
        read: !no_cache,
        write: !no_store,
        client,
        model: model.to_string(),
    })
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
        CacheStore::Memory => memory::get(&l.key).filter(|e| fresh(e)),
        CacheStore::Redis => crate::fleet::cache_get(&redis_name(l))
            .await
            .and_then(|t| Entry::from_text(&t, settings.max_entry))
            .filter(fresh)
            .map(Arc::new),
    };
    let result = if found.is_some() { "hit" } else { "miss" };
    crate::metrics::CACHE.with_label_values(&[result]).inc();
    found
}

/// Keeps `entry` under `l` (Redis: written in the background).
pub fn put(settings: &CacheSettings, l: &Lookup, entry: Entry) {
    crate::metrics::CACHE.with_label_values(&["stored"]).inc();
    match settings.store {
        CacheStore::Memory => memory::put(l.key, entry, settings.max_bytes),
        CacheStore::Redis => {
            if let Some(text) = entry.to_text() {
                crate::fleet::cache_put(redis_name(l), text, settings.ttl);
            }
        }
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
