//! Anthropic's Messages API for clients: `POST /v1/messages` (plain and
//! streamed) and `/v1/messages/count_tokens`, served onto any
//! OpenAI-compatible chat upstream. The request is translated to a chat
//! request at the door ([`request`]) and runs through the one pipeline
//! (limits, routing, key pools, failover, continuation, cache) as a chat
//! call; its answer is reshaped on its way out ([`writer`]): messages,
//! Messages streams ([`stream`]) and Messages errors ([`answer`]).

pub mod answer;
pub mod request;
pub mod stream;
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
    let mut with_max = v.clone();
    if with_max.get("max_tokens").is_none() {
        with_max["max_tokens"] = 1.into(); // count_tokens takes no max_tokens
    }
    let chat = request::to_chat(&with_max)?;
    let body = serde_json::to_vec(&chat).map_err(|e| e.to_string())?;
    let estimate = crate::limits::tokens::estimate(&body, false, 0, || &chat);
    Ok(serde_json::json!({"input_tokens": estimate.prompt}))
}
