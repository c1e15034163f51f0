//! Calls as they come in at the door: an understood endpoint's body read
//! into a [`Call`], the calls turned into another API before they run
//! (chat for a `kind: anthropic` upstream, Responses for a chat-only one,
//! Messages onto chat), and Responses follow-ups steered to the key that
//! holds their context.

use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::forward::shape::Peek;
use crate::forward::Call;
use crate::routes;
use crate::state::Snapshot;
use bytes::Bytes;
use std::borrow::Cow;

/// The call for a `POST` to an understood endpoint: its body must be a JSON
/// object naming a model (else the error to answer).
pub fn understood_call(
    endpoint: &'static routes::Endpoint,
    query: Option<String>,
    headers: crate::forward::headers::Forwarded,
    body: Bytes,
) -> Result<Call, GatewayError> {
    let (peek, model) = json_model(&body)?;
    let stream_options = peek.stream_options.as_ref().is_some_and(|o| !o.is_null());
    if stream_options && !peek.client_stream() && endpoint.api.has_stream_options() {
        // as OpenAI answers it (an upstream told otherwise would differ)
        return Err(GatewayError::BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
        ));
    }
    Ok(Call {
        method: http::Method::POST,
        suffix: Cow::Borrowed(endpoint.suffix()),
        api: endpoint.api,
        content_type: Cow::Borrowed("application/json"),
        pinned: None,
        query,
        headers,
        body,
        peek,
        model: model.ok_or(GatewayError::MissingModel)?,
        estimate: Default::default(),
        anthropic: false,
        affinity: None,
    })
}

/// An understood call as the upstream that serves its model first takes
/// it: chat for a `kind: anthropic` one as Messages, Responses for a
/// `no_responses` one as chat; any other call as it is. A model the caller
/// may not use is refused first (it learns nothing of its upstream).
pub fn translate(
    snap: &Snapshot,
    ctx: &mut Ctx,
    caller: crate::limits::Caller,
    call: Call,
) -> Result<Call, GatewayError> {
    // looked up only when some upstream speaks another API (admission
    // looks the model up anyway)
    let dialects = snap
        .upstreams
        .iter()
        .any(|u| u.conf.anthropic || u.conf.no_responses);
    let first = dialects
        .then(|| snap.first_upstream_for(&call.model))
        .flatten()
        .map(|u| &u.conf);
    let to_messages = call.api == routes::Api::Chat && first.is_some_and(|u| u.anthropic);
    let to_chat = call.api == routes::Api::Responses && first.is_some_and(|u| u.no_responses);
    if !(to_messages || to_chat) {
        return Ok(call);
    }
    if let Err(e) = crate::limits::check_model(&snap.config, &caller, &call.model) {
        ctx.model = Some(call.model);
        return Err(e);
    }
    match to_messages {
        true => chat_to_messages(snap, ctx, call),
        false => responses_to_chat(ctx, call),
    }
}

/// A Responses call for a model whose upstream has no Responses API, as a
/// chat call whose answer is told back as a response on its way out.
fn responses_to_chat(ctx: &mut Ctx, call: Call) -> Result<Call, GatewayError> {
    let chat =
        crate::responses::request::to_chat(&call.parse_json()).map_err(GatewayError::BadRequest)?;
    let endpoint = &routes::CHAT;
    let body = Bytes::from(chat.to_string());
    let bridged = understood_call(endpoint, None, call.headers, body)?;
    let writer = crate::responses::writer::ResponsesWriter::default();
    ctx.answer.reshape_with(writer);
    Ok(bridged)
}

/// A Messages call's chat request fitted to the chat model that serves
/// `model`: `max_tokens` at most its catalog `max_output` (Claude Code asks
/// for Claude's 32000 and more), and `thinking` as `reasoning_effort` for a
/// model that reasons (by its budget: low, medium, high; others refuse it).
pub fn fit_to_model(
    snap: &Snapshot,
    model: &str,
    messages: &serde_json::Value,
    chat: &mut serde_json::Value,
) {
    let served = snap
        .first_upstream_for(model)
        .and_then(|u| u.conf.upstream_model(model))
        .unwrap_or(model);
    let limit = snap.config.catalog.get(served).and_then(|l| l.max_output);
    if let (Some(limit), Some(asked)) = (limit.filter(|l| *l > 0), chat["max_tokens"].as_u64()) {
        chat["max_tokens"] = asked.min(limit).into();
    }
    let thinking = &messages["thinking"];
    if thinking["type"] == "enabled" && crate::config::catalog::reasons(served) {
        let effort = match thinking["budget_tokens"].as_u64().unwrap_or(0) {
            0..4096 => "low",
            4096..16384 => "medium",
            _ => "high",
        };
        chat["reasoning_effort"] = effort.into();
    }
}

/// A chat call for a model a `kind: anthropic` upstream serves, as a
/// Messages call whose answer is reshaped back into chat on its way out.
fn chat_to_messages(snap: &Snapshot, ctx: &mut Ctx, call: Call) -> Result<Call, GatewayError> {
    let chat = call.parse_json();
    let served = snap
        .first_upstream_for(&call.model)
        .and_then(|u| u.conf.upstream_model(&call.model))
        .unwrap_or(&call.model);
    let default_max = snap
        .config
        .catalog
        .get(served)
        .and_then(|l| l.max_output)
        .filter(|m| *m > 0)
        .unwrap_or(4096);
    let include_usage = call.peek.client_usage();
    let body = crate::anthropic::from_chat::to_messages(&chat, default_max)
        .map_err(GatewayError::BadRequest)?;
    let body = Bytes::from(body.to_string());
    let mut messages = understood_call(&routes::MESSAGES, None, call.headers, body)?;
    messages.anthropic = true;
    let writer = crate::anthropic::chat_writer::ChatWriter::new(include_usage);
    ctx.answer.reshape_with(writer);
    Ok(messages)
}

/// A JSON object body's routing fields and its `model` (a non-empty string).
pub fn json_model(body: &[u8]) -> Result<(Peek, Option<String>), GatewayError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(GatewayError::InvalidJson(if first.is_none() {
            "the body is empty; send a JSON object".into()
        } else {
            "the body must be a JSON object".into()
        }));
    }
    let mut peek: Peek =
        serde_json::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
    let model = match peek.model.take() {
        Some(serde_json::Value::String(m)) if !m.is_empty() => Some(m),
        None => None,
        Some(_) => return Err(GatewayError::MissingModel),
    };
    Ok((peek, model))
}

/// Steers a Responses follow-up to the upstream key that made its context
/// (for the same caller; see `responses::affinity`).
pub fn steer_follow_up(snap: &Snapshot, caller: crate::limits::Caller, call: &mut Call) {
    if call.api == routes::Api::Responses {
        let client = crate::limits::caller_name(&snap.config, &caller);
        call.affinity = crate::responses::affinity::wanted(&call.body, client);
    }
}

/// Remembers which upstream key made a Responses answer, for follow-ups.
pub fn remember_answer(
    snap: &Snapshot,
    caller: crate::limits::Caller,
    o: &crate::forward::Outcome,
) {
    if let (200, Some(up), Some(key)) = (o.status, &o.upstream, &o.key) {
        let client = crate::limits::caller_name(&snap.config, &caller);
        let by = (up.name(), key.fingerprint.as_str());
        crate::responses::affinity::remember_answer(&o.response_ids, by, client);
    }
}
