//! Headers both ways: which client headers go upstream (never credentials),
//! which upstream headers reach the client, and the gateway's own headers
//! (`X-Upstream-Active`, `X-Upstream-Queue`, `X-Switchyard-Upstream`).

use crate::metrics;
use pingora::http::{RequestHeader, ResponseHeader};

/// Client request headers never forwarded upstream: these (hop-by-hop,
/// framing, encodings the gateway chooses) and [`OPAQUE_DROP_REQUEST_HEADERS`].
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
    "expect",
    "accept-encoding",
];

/// Client headers the opaque lane removes (Pingora drops the hop-by-hop ones
/// itself): credentials, cookies, the client's account and forwarding headers.
pub const OPAQUE_DROP_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "forwarded",
    "x-real-ip",
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

/// Upstream response headers about the gateway's account with the provider
/// (its organization, cookies, the pooled key's rate limits, the provider's
/// edge): a client of the gateway has no business with them.
const ACCOUNT_RESPONSE_HEADERS: &[&str] = &[
    "set-cookie",
    "set-cookie2",
    "openai-organization",
    "openai-project",
    "anthropic-organization-id",
    "server",
    "cf-ray",
    "cf-cache-status",
    "alt-svc",
];

/// Every `x-ratelimit-*` and `anthropic-ratelimit-*` header: the pooled
/// key's limits, not the client's.
const RATE_LIMIT_PREFIXES: [&[u8]; 2] = [b"x-ratelimit-", b"anthropic-ratelimit-"];

/// Whether an upstream response header (its lower-case name, as
/// `http::HeaderName` keeps it) is about the gateway's account.
pub fn account_header(name: &[u8]) -> bool {
    RATE_LIMIT_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || ACCOUNT_RESPONSE_HEADERS
            .iter()
            .any(|d| d.as_bytes() == name)
}
/// Removes the account headers from an answer the opaque lane relays.
pub fn drop_account_headers(h: &mut ResponseHeader) {
    let names: Vec<http::HeaderName> = h
        .headers
        .keys()
        .filter(|n| account_header(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in names {
        h.remove_header(&name);
    }
}

/// Headers dropped as well when the gateway rewrites the body.
const BODY_HEADERS: &[&str] = &["content-type", "content-encoding"];

/// A response head built straight on `http`'s header map: the gateway's own
/// answers skip Pingora's case-preserving map (and its header-name re-parsing);
/// `.into()` makes the `ResponseHeader` to write.
pub type Head = http::response::Parts;

pub const X_SWITCHYARD_UPSTREAM: http::HeaderName =
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

pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// What the gateway adds to every answer of one request: an `x-request-id`
/// (the gateway's, unless the upstream's answer carries its own) and, for a
/// client with `rpm` / `tpm` limits, that client's `x-ratelimit-*`.
#[derive(Debug, Default, Clone)]
pub struct AnswerHeaders {
    pub request_id: Option<http::HeaderValue>,
    pub limits: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Reshapes every head and body written for a client of another API
    /// (the Messages API's: `anthropic::writer`).
    pub reshape: Option<std::sync::Arc<parking_lot::Mutex<dyn Reshape>>>,
}

/// What a client of another API gets written instead of what the pipeline
/// writes (see [`AnswerHeaders::reshape`]).
pub trait Reshape: Send + std::fmt::Debug {
    fn head(&mut self, head: Head, end: bool) -> Reshaped;
    fn body(&mut self, data: Option<bytes::Bytes>, end: bool) -> Reshaped;
}

/// What to write now, reshaped.
pub enum Reshaped {
    /// Nothing yet (held).
    Nothing,
    Head(Head, bool),
    Body(bytes::Bytes, bool),
    /// A head, then its whole body.
    Whole(Head, bytes::Bytes),
}

impl AnswerHeaders {
    /// Every head and body of the answer passes `r` from now on.
    pub fn reshape_with(&mut self, r: impl Reshape + 'static) {
        self.reshape = Some(std::sync::Arc::new(parking_lot::Mutex::new(r)));
    }

    /// For a new request: a fresh gateway id.
    pub fn new() -> AnswerHeaders {
        AnswerHeaders {
            request_id: Some(new_request_id()),
            limits: Vec::new(),
            reshape: None,
        }
    }

    /// The same on a head Pingora built (the opaque lane's).
    pub fn apply_to(&self, h: &mut ResponseHeader) -> pingora::Result<()> {
        if let (Some(id), false) = (&self.request_id, h.headers.contains_key(X_REQUEST_ID)) {
            h.insert_header(X_REQUEST_ID, id.clone())?;
        }
        for (name, value) in &self.limits {
            if !h.headers.contains_key(name) {
                h.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    /// Adds them to an answer's head (an `x-request-id` already there stays).
    pub fn apply(&self, h: &mut http::HeaderMap) {
        if let (Some(id), false) = (&self.request_id, h.contains_key(X_REQUEST_ID)) {
            h.insert(X_REQUEST_ID, id.clone());
        }
        // an answer that states the limit it hit (a 429) keeps its values
        for (name, value) in &self.limits {
            if !h.contains_key(name) {
                h.insert(name.clone(), value.clone());
            }
        }
    }
}

/// A gateway request id: `req_sy` then 16 hex digits, this process's random
/// 24-bit tag and a 40-bit counter (unique per process, distinct across
/// restarts and fleet nodes but for a one in 16 million chance).
pub fn new_request_id() -> http::HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static TAG: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // written by hand: `format!` cost more than the rest of the header
    let mut id = *b"req_sy0000000000000000";
    let digits = request_id_number(*TAG, n);
    for (i, slot) in id[6..].iter_mut().rev().enumerate() {
        *slot = b"0123456789abcdef"[((digits >> (4 * i)) & 0xf) as usize];
    }
    http::HeaderValue::from_bytes(&id).unwrap_or_else(|_| http::HeaderValue::from_static("req_sy"))
}

/// The process tag and counter of a gateway request id of this process
/// (`None`: another process's, or an upstream's): what the usage store
/// keeps of it.
pub fn own_request_id(id: &str) -> Option<(u32, u64)> {
    let hex = id.strip_prefix("req_sy").filter(|h| h.len() == 16)?;
    let digits = u64::from_str_radix(hex, 16).ok()?;
    Some(((digits >> 40) as u32, digits & COUNTER_MASK))
}

/// A gateway request id from its parts (see [`own_request_id`]).
pub fn format_request_id(tag: u32, n: u64) -> String {
    format!("req_sy{:016x}", request_id_number(tag, n))
}

/// The 40 bits of a request id's counter.
const COUNTER_MASK: u64 = (1 << 40) - 1;

/// The number a request id's 16 hex digits write: a 24-bit tag, a 40-bit counter.
fn request_id_number(tag: u32, n: u64) -> u64 {
    (u64::from(tag & 0xff_ffff) << 40) | (n & COUNTER_MASK)
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
            !(DROP_REQUEST_HEADERS.contains(&k)
                || OPAQUE_DROP_REQUEST_HEADERS.contains(&k)
                || k == "content-type"
                || nominated(k))
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
    !(DROP_RESPONSE_HEADERS.iter().any(is)
        || account_header(name)
        || (new_body && BODY_HEADERS.iter().any(is)))
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
     x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, x-request-id, \
     x-switchyard-cache, age";

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
        req.append_header("OpenAI-Organization", "org-client")
            .unwrap();
        req.append_header("OpenAI-Project", "proj_client").unwrap();
        req.append_header("X-Forwarded-For", "127.0.0.1").unwrap();
        req.append_header("Forwarded", "for=127.0.0.1").unwrap();
        req.append_header("content-type", "application/json")
            .unwrap();
        let kept: Vec<_> = forwardable_headers(&req)
            .into_iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(kept, ["x-kept: 3"]);
    }

    #[test]
    fn account_headers_stay_with_the_gateway() {
        let mut up = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("Set-Cookie", "__cf_bm=x"),
            ("openai-organization", "org-secret"),
            ("OpenAI-Project", "proj_x"),
            ("server", "cloudflare"),
            ("cf-ray", "1"),
            ("x-ratelimit-limit-requests", "5000"),
            ("X-RateLimit-Remaining-Tokens", "1"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("x-request-id", "req_up"),
            ("openai-processing-ms", "7"),
        ] {
            up.append_header(n, v).unwrap();
        }
        let head = client_header(&up, "u", None);
        let mut names: Vec<_> = head.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "openai-processing-ms",
                "x-request-id",
                "x-switchyard-upstream",
                "x-upstream-active",
                "x-upstream-queue"
            ]
        );
        let mut own = AnswerHeaders::new();
        let mut h = head.headers.clone();
        own.apply(&mut h);
        assert_eq!(h["x-request-id"], "req_up", "the upstream's id is kept");
        own.limits.push((
            http::HeaderName::from_static("x-ratelimit-limit-requests"),
            3.into(),
        ));
        let mut fresh = http::HeaderMap::new();
        own.apply(&mut fresh);
        assert!(fresh["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_sy"));
        assert_eq!(fresh["x-ratelimit-limit-requests"], "3");
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        let (tag, n) = own_request_id(b.to_str().unwrap()).unwrap();
        assert_eq!(format_request_id(tag, n), b.to_str().unwrap());
        assert_eq!(own_request_id("req_upstream_1"), None);
    }

    #[test]
    fn counts_are_written_alike_from_the_table_and_past_it() {
        for n in [0u64, 7, 255, 256, 100_000, u64::MAX] {
            assert_eq!(count_value(n).to_str().unwrap(), n.to_string());
        }
    }
}
