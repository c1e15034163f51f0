//! Anthropic's Messages API for clients: `POST /v1/messages` (plain and
//! streamed) and `/v1/messages/count_tokens`, served onto any
//! OpenAI-compatible chat upstream. The request is translated to a chat
//! request at the door ([`request`]) and runs through the one pipeline
//! (limits, routing, key pools, failover, continuation, cache) as a chat
//! call; its answer is reshaped on its way out ([`writer`]): messages,
//! Messages streams ([`stream`]) and Messages errors ([`answer`]).
//!
//! A `kind: anthropic` upstream takes Messages calls as they are (the
//! client's body sent on, its answer relayed); an OpenAI chat call for a
//! model it serves is translated the other way ([`from_chat`]) and its
//! answer reshaped back into chat ([`chat_writer`], [`chat_answer`]).

pub mod answer;
pub mod chat_answer;
pub mod chat_writer;
pub mod from_chat;
pub mod native;
pub mod request;
pub mod stream;
pub mod typed;
pub mod writer;

use serde_json::Value;

/// Which Messages endpoint a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

/// The Messages endpoint `path` (canonical) names, if any.
pub fn endpoint(path: &str) -> Option<Endpoint> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.eq_ignore_ascii_case("/v1/messages") {
        Some(Endpoint::Messages)
    } else if path.eq_ignore_ascii_case("/v1/messages/count_tokens") {
        Some(Endpoint::CountTokens)
    } else {
        None
    }
}

/// `count_tokens`' answer for Messages request `v`: the gateway's estimate
/// of the translated prompt (as its `tpm` limits count it), not a
/// tokenizer's count.
pub fn count_tokens(v: &Value) -> Result<Value, request::Invalid> {
    let mut with_max = v
        .as_object()
        .ok_or("the body must be a JSON object")?
        .clone();
    // count_tokens takes no max_tokens
    with_max.entry("max_tokens").or_insert(1.into());
    let with_max = Value::Object(with_max);
    let chat = request::to_chat(&with_max)?;
    let body = serde_json::to_vec(&chat).map_err(|e| e.to_string())?;
    let estimate = crate::limits::tokens::estimate(&body, false, 0, || &chat);
    Ok(serde_json::json!({"input_tokens": estimate.prompt}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_tokens_refuses_what_is_not_a_request() {
        assert!(count_tokens(&serde_json::json!([])).is_err());
        assert!(count_tokens(&serde_json::json!({"model": "m"})).is_err());
        let n = count_tokens(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]})).unwrap();
        assert!(n["input_tokens"].as_u64().unwrap() > 0);
    }
}

#[cfg(test)]
mod round_trip_tests;
