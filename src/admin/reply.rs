//! The admin listener's answers: JSON bodies, errors in OpenAI's shape,
//! query parameters.

use http::Response;
use serde_json::{json, Value};

pub fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

pub fn json_reply(status: u16, v: &Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

pub fn json_error(status: u16, message: &str, code: &str) -> Response<Vec<u8>> {
    json_reply(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

/// A query parameter's value (`a=1&b=2`), percent-decoded.
pub fn param<'q>(query: &'q str, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    })
}
