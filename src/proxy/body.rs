//! Reading request bodies the gateway must see whole (bounded in size and in
//! silence), and finding the `model` of the bodies that name one: a JSON
//! object's field, or a multipart form's `model` part.

use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use std::time::Duration;

/// Most bytes read (and thrown away) after refusing a body, so the client can
/// read the error instead of a broken pipe.
const DRAIN_LIMIT: u64 = 256 << 20;

/// How long a refused body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The declared `Content-Length`, if any.
pub fn declared_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Room reserved before a body's first bytes arrive: the buffer grows with
/// what comes, never with what `Content-Length` only promises.
const FIRST_ROOM: u64 = 16 << 10;

/// Reads the whole body: at most `limit` bytes (else 413, after draining what
/// the client sends), each piece within `idle` of the last and the whole
/// within `total` (else 408). On any error the rest of the body is unread:
/// the caller must not reuse the connection.
pub async fn read(
    session: &mut Session,
    limit: u64,
    idle: Duration,
    total: Duration,
) -> Result<Bytes, GatewayError> {
    let too_large = GatewayError::PayloadTooLarge { limit };
    let declared = declared_length(session);
    if declared.is_some_and(|n| n > limit) {
        drain(session).await;
        return Err(too_large);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        let _ = session.as_downstream_mut().write_continue_response().await;
    }
    let room = declared.unwrap_or(FIRST_ROOM).min(FIRST_ROOM).min(limit);
    let mut buf = BytesMut::with_capacity(usize::try_from(room).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + total;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, session.read_request_body()).await {
            Err(_) if wait < idle => return Err(GatewayError::RequestTimeout { after: total }),
            Err(_) => return Err(GatewayError::RequestTimeout { after: idle }),
            Ok(Ok(Some(chunk))) => {
                if buf.len() as u64 + chunk.len() as u64 > limit {
                    drain(session).await;
                    return Err(too_large);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            // the session's own read timeout may win the race with `wait`
            Ok(Err(e)) if *e.etype() == pingora::ErrorType::ReadTimedout => {
                return Err(GatewayError::RequestTimeout { after: idle })
            }
            Ok(Err(e)) => {
                return Err(GatewayError::BadRequest(format!(
                    "could not read the request body: {}",
                    e.etype().as_str()
                )))
            }
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards the rest of a refused body (bounded in bytes and time).
pub async fn drain(session: &mut Session) {
    discard(session, DRAIN_LIMIT, DRAIN_TIME).await
}

/// Most bytes of an unread body read (and thrown away) before an early
/// refusal, and for how long: a body the client already sent is taken, so
/// its connection can serve its next request.
const SENT_BODY_LIMIT: u64 = 64 << 10;
const SENT_BODY_TIME: Duration = Duration::from_millis(50);

/// Before answering a refusal: reads away the rest of a small body that has
/// already arrived. The connection stays open only when the whole body was
/// read (see `request_filter`).
pub async fn discard_sent(session: &mut Session) {
    discard(session, SENT_BODY_LIMIT, SENT_BODY_TIME).await
}

/// Reads and discards the body's rest: at most `limit` bytes, for at most `within`.
async fn discard(session: &mut Session, limit: u64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut left = limit;
    while let Ok(Ok(Some(chunk))) =
        tokio::time::timeout_at(deadline, session.read_request_body()).await
    {
        left = left.saturating_sub(chunk.len() as u64);
        if left == 0 {
            break;
        }
    }
}

/// What kind of body a content type announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// `multipart/form-data` (its boundary is read from the same header).
    Multipart,
    Other,
}

impl BodyKind {
    pub fn of(content_type: &str) -> BodyKind {
        let ct = content_type.trim_start().as_bytes();
        let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
        if starts(b"application/json") {
            BodyKind::Json
        } else if starts(b"multipart/form-data") {
            BodyKind::Multipart
        } else {
            BodyKind::Other
        }
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// The value of the form field `name` in a multipart body (text up to 1 KiB),
/// if the body has one.
pub fn multipart_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delim = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delim.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).collect();
    for w in starts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let head_end = memchr::memmem::find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..head_end]).ok()?;
        let named = head.lines().any(|l| {
            let (k, v) = l.split_once(':').unwrap_or(("", ""));
            k.trim().eq_ignore_ascii_case("content-disposition")
                && v.split(';').any(|p| {
                    p.trim()
                        .strip_prefix("name=")
                        .is_some_and(|n| n.trim_matches('"') == name)
                })
        });
        if named {
            let value = &part[head_end + 4..];
            let value = value.strip_suffix(b"\r\n").unwrap_or(value);
            if value.len() > 1024 {
                return None;
            }
            return std::str::from_utf8(value)
                .ok()
                .map(|v| v.trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, parts: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, value) in parts {
            b.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    }

    #[test]
    fn finds_the_model_part() {
        let ct = "multipart/form-data; boundary=XyZ123";
        assert_eq!(BodyKind::of(ct), BodyKind::Multipart);
        assert_eq!(
            BodyKind::of("application/json; charset=utf-8"),
            BodyKind::Json
        );
        assert_eq!(BodyKind::of("text/plain"), BodyKind::Other);
        let b = boundary(ct).unwrap();
        let body = form(
            b,
            &[
                ("file", "RIFF....WAVE"),
                ("model", "whisper-1"),
                ("language", "en"),
            ],
        );
        assert_eq!(
            multipart_field(&body, b, "model").as_deref(),
            Some("whisper-1")
        );
        assert_eq!(multipart_field(&body, b, "prompt"), None);
        assert_eq!(
            boundary("multipart/form-data; boundary=\"q q\"").unwrap(),
            "q q"
        );
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn hostile_forms_do_not_panic() {
        for body in [
            &b""[..],
            b"--B",
            b"--B\r\n--B",
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n--B--",
            b"--B\r\nContent-Disposition: form-data; name=model\r\n\r\nx\r\n--B--",
        ] {
            let _ = multipart_field(body, "B", "model");
        }
        let unquoted = b"--B\r\nContent-Disposition: form-data; name=model\r\n\r\ngpt\r\n--B--";
        assert_eq!(
            multipart_field(unquoted, "B", "model").as_deref(),
            Some("gpt")
        );
    }
}
