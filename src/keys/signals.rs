//! Reading what a provider says about its limits: rate-limit headers, error
//! codes and "try again in Xs" hints (see AGGREGATION.md's header table), and
//! turning an upstream answer into a verdict for the key that made it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go-style durations as OpenAI sends them: `12ms`, `6m0s`, `23h18m29.1s`, `1.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    crate::config::units::parse_duration(s)
}

/// `retry-after`: seconds (possibly fractional) or an HTTP date.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// "Please try again in 20s" / "try again in 1.5 seconds" / "Please retry after 21 seconds".
pub fn body_retry_hint(body: &str) -> Option<Duration> {
    let lower = body.to_ascii_lowercase();
    for marker in ["try again in ", "retry after ", "retry in "] {
        let Some(pos) = lower.find(marker) else {
            continue;
        };
        let rest = &lower[pos + marker.len()..];
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'h' || c == 'm' || c == 's'))
            .unwrap_or(rest.len());
        let token = &rest[..num_end];
        let after = rest[num_end..].trim_start();
        // "21 seconds", "2 minutes", "500 ms"
        if let Ok(n) = token.parse::<f64>() {
            let unit = after
                .split(|c: char| !c.is_ascii_alphabetic())
                .next()
                .unwrap_or("");
            let secs = match unit {
                "ms" | "millisecond" | "milliseconds" => n / 1000.0,
                "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
                "h" | "hour" | "hours" => n * 3600.0,
                _ => n,
            };
            if secs.is_finite() && secs >= 0.0 {
                return Some(Duration::from_secs_f64(secs));
            }
        }
        if let Some(d) = parse_go_duration(token.trim_end_matches('.')) {
            return Some(d);
        }
    }
    None
}

/// What the headers and body of one answer say about the key's limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Latest time the provider named for recovery, if any.
    pub until_ms: Option<u64>,
    /// Which signal named it (for logs): `retry-after 23141s`.
    pub source: Option<String>,
    /// GitHub Models' `x-ratelimit-type`.
    pub limit_type: Option<String>,
    /// The limit is per model (`UserByModelBy*`): cool only this model.
    pub per_model: bool,
    /// `x-ratelimit-remaining-*: 0`: recovery time for a pre-emptive skip.
    pub exhausted_until_ms: Option<u64>,
}

/// Reads every rate-limit signal. `header` looks a header up by lowercase name.
pub fn read_limits<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    body: &str,
    now: SystemTime,
) -> Limits {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Limits::default();
    let mut consider = |d: Option<Duration>, what: &str, raw: &str| {
        if let Some(d) = d {
            let at = now_ms + d.as_millis() as u64;
            if out.until_ms.is_none_or(|u| at > u) {
                out.until_ms = Some(at);
                out.source = Some(format!("{what} {raw}"));
            }
        }
    };
    if let Some(v) = header("retry-after") {
        consider(parse_retry_after(v, now), "retry-after", v);
    }
    for h in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(v) = header(h) {
            consider(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                h,
                v,
            );
        }
    }
    if let Some(v) = header("x-ratelimit-timeremaining") {
        consider(
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(Duration::from_secs_f64),
            "x-ratelimit-timeremaining",
            v,
        );
    }
    let mut exhausted: Option<u64> = None;
    for (reset_name, remaining_name) in [
        (
            "x-ratelimit-reset-requests",
            "x-ratelimit-remaining-requests",
        ),
        ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ] {
        let remaining_zero = header(remaining_name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|n| n <= 0.0);
        // a reset time counts (for a 429's cooldown and a pre-emptive skip) only for an exhausted bucket
        if !remaining_zero {
            continue;
        }
        if let Some((d, raw)) =
            header(reset_name).and_then(|v| parse_go_duration(v).map(|d| (d, v)))
        {
            let at = now_ms + d.as_millis() as u64;
            exhausted = Some(exhausted.map_or(at, |e| e.max(at)));
            consider(Some(d), reset_name, raw);
        }
    }
    for (d, raw) in anthropic_resets(&header, now) {
        let at_ms = now_ms + d.as_millis() as u64;
        exhausted = Some(exhausted.map_or(at_ms, |e| e.max(at_ms)));
        consider(Some(d), "anthropic-ratelimit-reset", raw);
    }
    out.exhausted_until_ms = exhausted;
    consider(body_retry_hint(body), "hint", "in body");
    if let Some(t) = header("x-ratelimit-type") {
        out.per_model = t.starts_with("UserByModel");
        out.limit_type = Some(t.to_string());
    }
    out
}

/// Anthropic's exhausted buckets (`anthropic-ratelimit-{requests,tokens,
/// input-tokens,output-tokens}-remaining: 0`): how long until each one's
/// `-reset` (an RFC 3339 time), with the header's text.
fn anthropic_resets<'a>(
    header: &impl Fn(&str) -> Option<&'a str>,
    now: SystemTime,
) -> Vec<(Duration, &'a str)> {
    let mut out = Vec::new();
    for bucket in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let name = |part: &str| format!("anthropic-ratelimit-{bucket}-{part}");
        let remaining_zero = header(&name("remaining"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|n| n <= 0.0);
        let reset = header(&name("reset")).filter(|_| remaining_zero);
        let Some(raw) = reset else { continue };
        if let Ok(at) = humantime::parse_rfc3339_weak(raw.trim()) {
            out.push((at.duration_since(now).unwrap_or_default(), raw));
        }
    }
    out
}

/// Whether a successful answer's headers report an exhausted bucket
/// (`x-ratelimit-remaining-*: 0`): a cheap pass over the headers that lets the
/// hot path skip [`read_limits`] for the usual answer.
pub fn reports_exhausted<'a>(mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    const REMAINING: &[u8] = b"x-ratelimit-remaining";
    const ANTHROPIC: &[u8] = b"anthropic-ratelimit-";
    let starts = |name: &[u8], with: &[u8]| {
        name.get(..with.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(with))
    };
    let ends = |name: &[u8], with: &[u8]| {
        name.len() >= with.len() && name[name.len() - with.len()..].eq_ignore_ascii_case(with)
    };
    headers.any(|(name, value)| {
        (starts(name, REMAINING) || (starts(name, ANTHROPIC) && ends(name, b"-remaining")))
            && std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|n| n <= 0.0)
    })
}

/// What an upstream answer means for the key and for the request.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerKind {
    /// Deliver it.
    Deliver,
    /// Rate limited: cool the key (or key+model) and try the next candidate.
    CoolDown,
    /// The key is unusable (no credit): park it, try the next candidate.
    Park { reason: String },
    /// 401/403: the key, or only this request (a model or file it may not
    /// use, an organization header, a region), was refused. Parked only once
    /// the key is shown to be refused on its own (see `probe::key_refused`).
    AuthRejected {
        reason: String,
        /// The error code says the key itself is bad (`invalid_api_key`).
        key_named: bool,
    },
    /// Transient upstream failure: try the next candidate (counts as an attempt).
    RetryElsewhere,
    /// The request itself is too big for this model: a fallback model may take it.
    ContextTooLong,
    /// A client error: return it as is, never retry it.
    Return,
}

/// The `error.code` / `error.type` of an OpenAI-style error body, if any.
pub fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error").unwrap_or(&v);
    let e = if let serde_json::Value::Array(a) = e {
        a.first()?
    } else {
        e
    };
    e.get("code")
        .and_then(|c| {
            c.as_str()
                .map(str::to_string)
                .or_else(|| c.as_i64().map(|n| n.to_string()))
        })
        .or_else(|| e.get("type").and_then(|t| t.as_str()).map(str::to_string))
}

/// Classifies an answer by status and body.
pub fn classify(status: u16, body: &str) -> AnswerKind {
    let code = error_code(body).unwrap_or_default();
    let lower = body.to_ascii_lowercase();
    match status {
        200..=399 => AnswerKind::Deliver,
        401 | 403 => AnswerKind::AuthRejected {
            key_named: matches!(
                code.as_str(),
                "invalid_api_key"
                    | "incorrect_api_key"
                    | "invalid_x_api_key"
                    | "authentication_error"
            ) || lower.contains("incorrect api key")
                || lower.contains("invalid api key"),
            reason: format!(
                "{status} {}",
                if code.is_empty() {
                    "rejected the key".to_string()
                } else {
                    code
                }
            ),
        },
        402 => AnswerKind::Park {
            reason: format!(
                "402 {}",
                if code.is_empty() {
                    "payment required".into()
                } else {
                    code
                }
            ),
        },
        429 if code == "insufficient_quota" || lower.contains("insufficient_quota") => {
            AnswerKind::Park {
                reason: "429 insufficient_quota".into(),
            }
        }
        429 => AnswerKind::CoolDown,
        400 | 413 | 422
            if code == "context_length_exceeded"
                || lower.contains("context_length_exceeded")
                || lower.contains("maximum context length")
                || lower.contains("prompt is too long") =>
        {
            AnswerKind::ContextTooLong
        }
        408 | 409 | 425 | 500..=599 => AnswerKind::RetryElsewhere,
        _ => AnswerKind::Return,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_ratelimit_headers_name_the_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let reset = humantime::format_rfc3339(now + Duration::from_secs(42)).to_string();
        let headers = [
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", reset.as_str()),
            ("anthropic-ratelimit-requests-remaining", "7"),
            ("anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z"),
        ];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let l = read_limits(get, "", now);
        let want = 1_765_000_042_000;
        assert_eq!((l.until_ms, l.exhausted_until_ms), (Some(want), Some(want)));
        let h = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        assert!(reports_exhausted(h));
        let h = headers[2..]
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        assert!(!reports_exhausted(h), "requests left: not exhausted");
        let bad = [
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "soon"),
        ];
        let get = |n: &str| bad.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(
            read_limits(get, "", now).until_ms,
            None,
            "a reset that is no time is ignored"
        );
    }

    #[test]
    fn exhaustion_precheck_matches_remaining_zero_only() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        };
        assert!(reports_exhausted(h(&[
            ("content-type", "application/json"),
            ("x-ratelimit-remaining-requests", " 0 "),
        ])));
        assert!(reports_exhausted(h(&[(
            "X-RateLimit-Remaining-Tokens",
            "0"
        )])));
        assert!(reports_exhausted(h(&[(
            "x-ratelimit-remaining-tokens",
            "0.0"
        )])));
        assert!(!reports_exhausted(h(&[(
            "x-ratelimit-remaining-requests",
            "12"
        )])));
        assert!(!reports_exhausted(h(&[(
            "x-ratelimit-reset-requests",
            "0"
        )])));
        assert!(!reports_exhausted(h(&[(
            "x-ratelimit-remaining-requests",
            "n/a"
        )])));
        assert!(!reports_exhausted(h(&[])));
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_go_duration("23h18m29.1s"),
            Some(Duration::from_millis(83_909_100))
        );
        assert_eq!(parse_go_duration("12ms"), Some(Duration::from_millis(12)));
        assert_eq!(parse_go_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = at(1_700_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("1.25", now),
            Some(Duration::from_millis(1250))
        );
        let date = httpdate::fmt_http_date(at(1_700_000_090));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("garbage", now), None);
    }

    #[test]
    fn body_hints() {
        assert_eq!(
            body_retry_hint("Rate limit reached. Please try again in 20s."),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            body_retry_hint("Please try again in 1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            body_retry_hint("Please try again in 6m0s."),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            body_retry_hint("Please retry after 21 seconds."),
            Some(Duration::from_secs(21))
        );
        assert_eq!(
            body_retry_hint("try again in 2 minutes"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            body_retry_hint("try again in 500ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(body_retry_hint("no hint here"), None);
    }

    #[test]
    fn latest_signal_wins_and_scope() {
        let now = at(1_000);
        let h = |name: &str| -> Option<&str> {
            match name {
                "retry-after" => Some("10"),
                "retry-after-ms" => Some("30000"),
                "x-ratelimit-type" => Some("UserByModelByDay"),
                "x-ratelimit-timeremaining" => Some("20"),
                _ => None,
            }
        };
        let l = read_limits(h, "{}", now);
        assert_eq!(l.until_ms, Some(1_000_000 + 30_000));
        assert_eq!(l.source.as_deref(), Some("retry-after-ms 30000"));
        assert!(l.per_model);
        let h = |name: &str| -> Option<&str> {
            match name {
                "x-ratelimit-type" => Some("UserByMinute"),
                "x-ms-retry-after-ms" => Some("1500"),
                _ => None,
            }
        };
        let l = read_limits(h, "Please try again in 3s", now);
        assert_eq!(l.until_ms, Some(1_003_000));
        assert!(!l.per_model);
    }

    #[test]
    fn remaining_zero_is_exhaustion() {
        let h = |name: &str| -> Option<&str> {
            match name {
                "x-ratelimit-remaining-requests" => Some("0"),
                "x-ratelimit-reset-requests" => Some("6m0s"),
                "x-ratelimit-remaining-tokens" => Some("1000"),
                "x-ratelimit-reset-tokens" => Some("1s"),
                _ => None,
            }
        };
        let l = read_limits(h, "", at(0));
        assert_eq!(l.exhausted_until_ms, Some(360_000));
        assert_eq!(
            l.until_ms,
            Some(360_000),
            "a non-exhausted bucket's reset does not count"
        );
        let none = read_limits(|_| None, "", at(0));
        assert_eq!(none, Limits::default());
    }

    #[test]
    fn verdicts() {
        assert_eq!(classify(200, ""), AnswerKind::Deliver);
        assert_eq!(
            classify(429, r#"{"error":{"code":"rate_limit_exceeded"}}"#),
            AnswerKind::CoolDown
        );
        assert!(matches!(
            classify(
                429,
                r#"{"error":{"code":"insufficient_quota","type":"insufficient_quota"}}"#
            ),
            AnswerKind::Park { .. }
        ));
        assert!(matches!(
            classify(401, r#"{"error":{"code":"invalid_api_key"}}"#),
            AnswerKind::AuthRejected {
                key_named: true,
                ..
            }
        ));
        assert!(matches!(
            classify(403, ""),
            AnswerKind::AuthRejected {
                key_named: false,
                ..
            }
        ));
        assert!(matches!(
            classify(401, r#"{"error":{"code":"mismatched_organization"}}"#),
            AnswerKind::AuthRejected {
                key_named: false,
                ..
            }
        ));
        assert_eq!(
            classify(400, r#"{"error":{"code":"context_length_exceeded"}}"#),
            AnswerKind::ContextTooLong
        );
        assert_eq!(
            classify(400, r#"{"error":{"code":"content_filter"}}"#),
            AnswerKind::Return
        );
        assert_eq!(classify(404, ""), AnswerKind::Return);
        assert_eq!(classify(503, ""), AnswerKind::RetryElsewhere);
        assert_eq!(
            error_code(r#"{"error":{"code":"RateLimitReached","message":"x"}}"#).as_deref(),
            Some("RateLimitReached")
        );
    }
}
