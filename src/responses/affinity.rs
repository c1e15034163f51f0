//! Which upstream key made a response. A Responses follow-up that names an
//! earlier response (`previous_response_id`) or carries its encrypted
//! reasoning can only be read by the account that made it, so it is sent
//! with that key first (when it is usable). Remembered per instance, for
//! the [`CAPACITY`] latest responses.

use lru::LruCache;
use parking_lot::Mutex;
use serde_json::Value;
use std::num::NonZeroUsize;

/// Responses (and reasoning items) remembered.
pub const CAPACITY: usize = 100_000;

/// Where a response was made (the upstream's name, the key's fingerprint),
/// and for whom (the client's name): only the same client is steered.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub upstream: String,
    pub fingerprint: String,
    pub client: String,
}

static MADE: Mutex<Option<LruCache<String, Made>>> = Mutex::new(None);

/// Remembers that `ids` were made by `made`.
pub fn remember(ids: &[String], made: &Made) {
    let mut m = MADE.lock();
    let cap = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
    let map = m.get_or_insert_with(|| LruCache::new(cap));
    for id in ids {
        map.put(id.clone(), made.clone());
    }
}

/// Remembers that `client`'s answer with `ids` was made by `made_by` (the
/// upstream's name, the key's fingerprint).
pub fn remember_answer(ids: &[String], made_by: (&str, &str), client: &str) {
    if ids.is_empty() {
        return;
    }
    let made = Made {
        upstream: made_by.0.to_string(),
        fingerprint: made_by.1.to_string(),
        client: client.to_string(),
    };
    remember(ids, &made);
}

/// Where the response (or reasoning item) `id` was made, if remembered.
pub fn recall(id: &str) -> Option<Made> {
    MADE.lock().as_mut()?.get(id).cloned()
}

/// What a response answer leaves to remember: its id and its encrypted
/// reasoning items' ids (ids longer than 256 bytes are nobody's).
pub fn ids_of(response: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    let mut keep = |id: &Value| {
        if let Some(id) = id.as_str().filter(|i| !i.is_empty() && i.len() <= 256) {
            ids.push(id.to_string());
        }
    };
    keep(&response["id"]);
    for item in response["output"].as_array().into_iter().flatten() {
        if item["type"] == "reasoning" && item["encrypted_content"].is_string() {
            keep(&item["id"]);
        }
    }
    ids
}

/// Where `client`'s Responses request's context was made, if it names any
/// the gateway remembers for that client: its `previous_response_id`, else
/// the first of its encrypted reasoning items. The body is read only when
/// it holds one.
pub fn wanted(body: &[u8], client: &str) -> Option<Made> {
    let mine = |m: Made| (m.client == client).then_some(m);
    let finder = |n: &[u8]| memchr::memmem::find(body, n).is_some();
    if !finder(b"\"previous_response_id\"") && !finder(b"\"encrypted_content\"") {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(m) = v["previous_response_id"].as_str().and_then(recall) {
        return mine(m);
    }
    v["input"]
        .as_array()?
        .iter()
        .filter(|i| i["type"] == "reasoning" && i["encrypted_content"].is_string())
        .find_map(|i| recall(i["id"].as_str()?))
        .and_then(mine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_follow_up_finds_the_key_that_made_its_context() {
        let made = Made {
            upstream: "openai".into(),
            fingerprint: "fp-a".into(),
            client: "alice".into(),
        };
        let answer = json!({"id": "resp_aff_1", "output": [
            {"type": "reasoning", "id": "rs_aff_1", "encrypted_content": "gAAA"},
            {"type": "reasoning", "id": "rs_aff_plain"},
            {"type": "message", "id": "msg_aff_1"}]});
        let ids = ids_of(&answer);
        assert_eq!(ids, ["resp_aff_1", "rs_aff_1"]);
        remember(&ids, &made);
        let follow = json!({"model": "o3", "previous_response_id": "resp_aff_1", "input": "and?"});
        assert_eq!(
            wanted(follow.to_string().as_bytes(), "alice"),
            Some(made.clone())
        );
        assert_eq!(
            wanted(follow.to_string().as_bytes(), "bob"),
            None,
            "another client's context"
        );
        let carried = json!({"model": "o3", "input": [
            {"type": "reasoning", "id": "rs_aff_1", "encrypted_content": "gAAA", "summary": []},
            {"role": "user", "content": "and?"}]});
        assert_eq!(wanted(carried.to_string().as_bytes(), "alice"), Some(made));
        assert_eq!(
            wanted(br#"{"model": "o3", "input": "fresh"}"#, "alice"),
            None
        );
        assert_eq!(
            wanted(br#"{"previous_response_id": "resp_unknown"}"#, "alice"),
            None
        );
        assert_eq!(
            wanted(br#"{"previous_response_id": "#, "alice"),
            None,
            "broken JSON"
        );
    }
}
