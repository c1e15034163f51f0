//! Headers both ways: which client headers go upstream (never credentials),
//! which upstream headers reach the client, and the gateway's own headers
//! (`X-Upstream-Active`, `X-Upstream-Queue`, `X-Switchyard-Upstream`).

use crate::metrics;
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

/// Upstream response headers never relayed to the client (the framing ones
/// too: the gateway frames what it writes, see [`client_header`]).
const DROP_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "transfer-encoding",
];

/// Headers dropped as well when the gateway rewrites the body.
const BODY_HEADERS: &[&str] = &["content-type", "content-encoding"];

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

/// Client headers passed to an upstream.
pub type Forwarded = Vec<(http::HeaderName, http::HeaderValue)>;

/// The client headers worth passing to an upstream: not those in
/// `DROP_REQUEST_HEADERS`, not those the client's `Connection` header names
/// (hop-by-hop, RFC 9110 §7.6.1), and not `content-type` (the gateway sets it).
pub fn forwardable_headers(req: &RequestHeader) -> Forwarded {
    let nominated = |name: &str| {
        req.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    req.headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !(DROP_REQUEST_HEADERS.contains(&k) || k == "content-type" || nominated(k))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A header's value as text (`None`: absent or not visible ASCII).
pub fn header_text<'a>(head: &'a ResponseHeader, name: &str) -> Option<&'a str> {
    head.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Refuses an upstream answer whose framing is not plain HTTP/1.1 the
/// gateway can read exactly: a `Content-Length` that is not digits (`+5`)
/// or that disagrees with another, a transfer coding other than `chunked`.
/// With both, `Transfer-Encoding` wins (RFC 9112 §6.3); the client's
/// framing is the gateway's own.
pub fn check_framing(
    session: &pingora::protocols::http::client::HttpSession,
    upstream: &str,
) -> Result<(), crate::error::GatewayError> {
    let Some(head) = session.response_header() else {
        return Ok(());
    };
    let refuse = |detail: String| crate::error::GatewayError::UpstreamProtocol {
        upstream: upstream.to_string(),
        detail,
    };
    let codings = head.headers.get_all(http::header::TRANSFER_ENCODING);
    for value in codings.iter() {
        for coding in value.as_bytes().split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if !coding.eq_ignore_ascii_case(b"chunked") {
                return Err(refuse(format!(
                    "the answer uses transfer coding {:?}, which the gateway does not decode",
                    String::from_utf8_lossy(coding)
                )));
            }
        }
    }
    if codings.iter().next().is_some() {
        return Ok(());
    }
    let mut length = None;
    for value in head.headers.get_all(http::header::CONTENT_LENGTH).iter() {
        let v = value.as_bytes();
        let n = (!v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .flatten();
        match (n, length) {
            (Some(n), None) => length = Some(n),
            (Some(n), Some(m)) if n == m => {}
            _ => {
                return Err(refuse(format!(
                    "the answer's Content-Length {:?} is not a length",
                    String::from_utf8_lossy(v)
                )))
            }
        }
    }
    Ok(())
}

/// Whether an upstream response header reaches the client (`new_body`: the
/// gateway rewrites the body, so the body headers do not).
fn relayed(name: &[u8], new_body: bool) -> bool {
    let is = |d: &&str| d.as_bytes().eq_ignore_ascii_case(name);
    !(DROP_RESPONSE_HEADERS.iter().any(is) || (new_body && BODY_HEADERS.iter().any(is)))
}

/// Response header for the client, copied from the upstream's without its
/// framing (the gateway's session frames the body it writes). With
/// `new_body`, the body headers are replaced by the given content type.
pub fn client_header(up: &ResponseHeader, upstream: &str, new_body: Option<&str>) -> Head {
    let mut out = head(up.status, up.headers.len() + 4);
    for (name, value) in up.headers.iter() {
        if relayed(name.as_str().as_bytes(), new_body.is_some()) {
            out.headers.append(name.clone(), value.clone());
        }
    }
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

/// The client's head for an upstream answer relayed as it comes: the
/// upstream's headers ([`client_header`]), framed by the upstream's length
/// when `keep_length` and it had one (no `Transfer-Encoding`: checked by
/// [`check_framing`]), else chunked; CORS headers for a page from `cors`.
pub fn relayed_head(
    up: &ResponseHeader,
    upstream: &str,
    keep_length: bool,
    cors: Option<&http::HeaderValue>,
) -> Head {
    let mut head = client_header(up, upstream, None);
    let length = up
        .headers
        .get(http::header::CONTENT_LENGTH)
        .filter(|_| keep_length && up.headers.get(http::header::TRANSFER_ENCODING).is_none());
    match length {
        Some(length) => head
            .headers
            .insert(http::header::CONTENT_LENGTH, length.clone()),
        None => head.headers.insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        ),
    };
    if let Some(origin) = cors {
        cors_headers(&mut head.headers, origin);
    }
    head
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
        let kept: Vec<_> = forwardable_headers(&req)
            .into_iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(kept, ["x-kept: 3"]);
    }

    #[test]
    fn counts_are_written_alike_from_the_table_and_past_it() {
        for n in [0u64, 7, 255, 256, 100_000, u64::MAX] {
            assert_eq!(count_value(n).to_str().unwrap(), n.to_string());
        }
    }
}
