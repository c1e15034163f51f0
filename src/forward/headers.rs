//! Headers both ways: which client headers go upstream (never credentials),
//! which upstream headers reach the client, and the gateway's own headers
//! (`X-Upstream-Active`, `X-Upstream-Queue`, `X-Switchyard-Upstream`).

use crate::metrics;
use crate::upstream::h1;
use pingora::http::{RequestHeader, ResponseHeader};

/// Client request headers never forwarded upstream.
const DROP_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "expect",
    "accept-encoding",
];

/// Upstream response headers never relayed to the client.
const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Headers dropped as well when the gateway rewrites the body.
const BODY_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
];

/// A response head built straight on `http`'s header map: the gateway's own
/// answers skip Pingora's case-preserving map (and its header-name re-parsing);
/// `.into()` makes the `ResponseHeader` to write.
pub type Head = http::response::Parts;

const X_SWITCHYARD_UPSTREAM: http::HeaderName =
    http::HeaderName::from_static("x-switchyard-upstream");
const X_UPSTREAM_ACTIVE: http::HeaderName = http::HeaderName::from_static("x-upstream-active");
const X_UPSTREAM_QUEUE: http::HeaderName = http::HeaderName::from_static("x-upstream-queue");

/// An empty response head with room for `headers` headers.
pub fn head(status: http::StatusCode, headers: usize) -> Head {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = http::HeaderMap::with_capacity(headers);
    parts
}

/// A count as a header value; the small ones (most answers') come from a
/// table made once, without an allocation each.
fn count_value(n: u64) -> http::HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<http::HeaderValue>> =
        std::sync::LazyLock::new(|| (0..256u64).map(http::HeaderValue::from).collect());
    match usize::try_from(n).ok().and_then(|i| SMALL.get(i)) {
        Some(v) => v.clone(),
        None => http::HeaderValue::from(n),
    }
}

/// `X-Upstream-Active` / `X-Upstream-Queue`: set on every API response.
fn gateway_header_values() -> [(http::HeaderName, http::HeaderValue); 2] {
    let active = u64::try_from(metrics::UPSTREAM_ACTIVE.get()).unwrap_or(0);
    [
        (X_UPSTREAM_ACTIVE, count_value(active)),
        (
            X_UPSTREAM_QUEUE,
            count_value(u64::from(crate::limits::gate::waiting())),
        ),
    ]
}

/// The gateway's headers on a head it builds itself.
pub fn gateway_headers(h: &mut http::HeaderMap) {
    for (name, value) in gateway_header_values() {
        h.insert(name, value);
    }
}

/// The gateway's headers on a header Pingora built (keeps its case map in step).
pub fn add_gateway_headers(h: &mut ResponseHeader) {
    for (name, value) in gateway_header_values() {
        let _ = h.insert_header(name, value);
    }
}

/// The client headers worth passing to an upstream, in wire form: not those
/// in `DROP_REQUEST_HEADERS`, not those the client's `Connection` header
/// names (hop-by-hop, RFC 9110 §7.6.1), and not `content-type` (the gateway
/// sets it).
pub fn forwardable_headers(req: &RequestHeader) -> Vec<u8> {
    let nominated = |name: &str| {
        req.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut out = Vec::with_capacity(req.headers.len() * 32);
    for (k, v) in req.headers.iter() {
        let k = k.as_str();
        let dropped = |d: &&str| d.eq_ignore_ascii_case(k);
        if DROP_REQUEST_HEADERS.iter().any(dropped) || k == "content-type" || nominated(k) {
            continue;
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether an upstream response header reaches the client (`new_body`: the
/// gateway rewrites the body, so the body headers do not).
fn relayed(name: &[u8], new_body: bool) -> bool {
    let is = |d: &&str| d.as_bytes().eq_ignore_ascii_case(name);
    !(DROP_RESPONSE_HEADERS.iter().any(is) || (new_body && BODY_HEADERS.iter().any(is)))
}

/// Response header for the client, copied from the upstream's. With
/// `new_body`, the body headers are replaced by the given content type.
pub fn client_header(up: &h1::Head, upstream: &str, new_body: Option<&str>) -> Head {
    let mut out = head(up.status, 0);
    out.headers = up.to_map(|n| relayed(n, new_body.is_some()), 4);
    if let Some(ct) = new_body {
        if let Ok(v) = http::HeaderValue::from_str(ct) {
            out.headers.insert(http::header::CONTENT_TYPE, v);
        }
    }
    gateway_headers(&mut out.headers);
    if let Ok(v) = http::HeaderValue::from_str(upstream) {
        out.headers.insert(X_SWITCHYARD_UPSTREAM, v);
    }
    out
}

/// Headers a browser page may read from a cross-origin answer.
const CORS_EXPOSE: &str = "x-upstream-active, x-upstream-queue, x-switchyard-upstream, retry-after, \
     x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, \
     x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-request-id";

/// CORS headers on an answer to a page from `origin` (already allowed by `cors`).
pub fn cors_headers(h: &mut http::HeaderMap, origin: &http::HeaderValue) {
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.append(http::header::VARY, http::HeaderValue::from_static("Origin"));
    h.insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        http::HeaderValue::from_static(CORS_EXPOSE),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_the_connection_header_names_are_not_forwarded() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.append_header("Connection", "keep-alive, X-Secret-Hop")
            .unwrap();
        req.append_header("connection", "x-other").unwrap();
        req.append_header("X-Secret-Hop", "1").unwrap();
        req.append_header("x-other", "2").unwrap();
        req.append_header("x-kept", "3").unwrap();
        req.append_header("content-type", "application/json")
            .unwrap();
        let wire = String::from_utf8(forwardable_headers(&req)).unwrap();
        assert_eq!(wire, "x-kept: 3\r\n");
    }

    #[test]
    fn counts_are_written_alike_from_the_table_and_past_it() {
        for n in [0u64, 7, 255, 256, 100_000, u64::MAX] {
            assert_eq!(count_value(n).to_str().unwrap(), n.to_string());
        }
    }
}
