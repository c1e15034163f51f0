//! Arbitrary bytes into every parser of the gateway's own that reads outside
//! input (HTTP itself is Pingora's): the SSE framer, the request peek, the rate-limit signals, the
//! path check and canonicalizer, the multipart reader, the stream-completion
//! check, the log redactor, the units parser (durations and sizes, alone and
//! through a whole config), the body splicer and the PROXY protocol preamble. None may panic or hang, and each keeps its promise. Bounded:
//! `FUZZ_CASES` cases per target (default 2000; about a minute in all on CI).
//! Failures proptest finds are kept under `proptest-regressions/` and replayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};
use switchyard::sse::{Event, Framer};

fn cases() -> ProptestConfig {
    let n = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig::with_cases(n)
}

/// Bytes that look like protocol text often enough to go deep.
fn texty() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => prop::sample::select(b"\r\n:; =\"{}[],-0123456789abcdefHTTP/1.chunkedContent-Length".to_vec()),
        ],
        0..600,
    )
}

/// `body` cut short: a splice of it must fail cleanly.
fn input_bytes(body: &[u8]) -> Vec<u8> {
    body[..body.len() / 2].to_vec()
}

fn cut(bytes: &[u8], at: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = at.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut parts = Vec::new();
    let mut from = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        if c > from {
            parts.push(bytes[from..c].to_vec());
            from = c;
        }
    }
    parts
}

fn frame(parts: &[Vec<u8>]) -> Vec<(Option<Event>, Vec<u8>)> {
    let mut f = Framer::new();
    let mut out = Vec::new();
    for p in parts {
        f.push(p, &mut out);
    }
    f.finish(&mut out);
    out.into_iter()
        .map(|fr| (fr.event, fr.raw.to_vec()))
        .collect()
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn sse_framer_any_bytes_any_split(input in texty(), at in proptest::collection::vec(0usize..700, 0..8)) {
        let whole = frame(std::slice::from_ref(&input));
        let split = frame(&cut(&input, &at));
        prop_assert_eq!(whole.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(), split.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        // nothing is lost or invented: the raw frames are the input
        let raw: Vec<u8> = split.iter().flat_map(|(_, r)| r.clone()).collect();
        prop_assert_eq!(raw, input);
    }

    #[test]
    fn request_peek_any_bytes(input in texty()) {
        let _ = serde_json::from_slice::<switchyard::forward::shape::Peek>(&input);
        let mut json = b"{\"model\":".to_vec();
        json.extend_from_slice(&input);
        if let Ok(p) = serde_json::from_slice::<switchyard::forward::shape::Peek>(&json) {
            let _ = (p.client_stream(), p.client_usage(), p.choices());
        }
    }

    #[test]
    fn rate_limit_signals_any_values(values in proptest::collection::vec(".{0,40}", 8), body in ".{0,200}") {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let names = ["retry-after", "retry-after-ms", "x-ms-retry-after-ms", "x-ratelimit-timeremaining",
            "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens", "x-ratelimit-type"];
        let l = switchyard::keys::signals::read_limits(
            |n| names.iter().position(|x| *x == n).map(|i| values[i].as_str()),
            &body,
            now,
        );
        if let Some(u) = l.until_ms {
            prop_assert!(u >= 1_700_000_000_000, "a recovery time is never in the past");
        }
        let _ = switchyard::keys::signals::classify(429, &body);
        let _ = switchyard::keys::signals::body_retry_hint(&body);
    }

    #[test]
    fn path_check_any_path(path in "/v1/[a-zA-Z0-9%./\\\\_-]{0,40}") {
        if switchyard::routes::safe_path(&path) {
            for seg in path.split('/') {
                let lower = seg.to_ascii_lowercase();
                prop_assert!(seg != "." && seg != ".." && !lower.contains("%2f") && !lower.contains("%5c") && !seg.contains('\\'), "{path}");
                prop_assert!(lower.replace("%2e", ".") != ".." && lower.replace("%2e", ".") != ".", "{path}");
            }
        }
    }

    #[test]
    fn path_canonicalizer_any_path(path in "/v1/([a-zA-Z0-9./_~-]|%[0-9a-fA-F]{2}|%.?){0,40}") {
        use switchyard::routes::{canonical_path, safe_path, understood};
        if let Some(c) = canonical_path(&path) {
            prop_assert!(safe_path(&c), "{path} -> {c}");
            let again = canonical_path(&c);
            prop_assert_eq!(again.as_deref(), Some(c.as_ref()), "stable");
            // no escape of an unreserved character is left to hide a route
            for esc in c.split('%').skip(1) {
                let byte = u8::from_str_radix(&esc[..2], 16).unwrap();
                prop_assert!(!byte.is_ascii_alphanumeric() && !b"-._~".contains(&byte), "{c}");
            }
            let _ = understood(&c);
        }
    }

    #[test]
    fn units_any_text(text in ".{0,30}", number in any::<f64>(), unit in "(ns|us|ms|s|m|h|d|B|KiB|MiB|GiB|KB|MB|GB|x)?") {
        use switchyard::config::units::{parse_duration, parse_size, MAX_DURATION, MAX_SIZE};
        for input in [text.clone(), format!("{number}{unit}"), format!("{}{unit}", number.abs())] {
            if let Some(d) = parse_duration(&input) {
                prop_assert!(d <= MAX_DURATION, "{input}");
            }
            if let Some(n) = parse_size(&input) {
                prop_assert!(n <= MAX_SIZE, "{input}");
            }
            // through a whole config: an error or a config, never a panic
            let yaml = format!("timeouts: {{total: '{0}', idle: '{0}'}}\nlimits: {{max_request_body: '{0}'}}\nupstreams: [{{name: d, kind: demo}}]", input.replace('\'', ""));
            let _ = switchyard::config::Config::from_yaml(&yaml, &|_| None);
        }
    }

    #[test]
    fn body_splice_any_object(members in proptest::collection::vec(("[a-z\\\"é]{0,6}", texty()), 0..6)) {
        use switchyard::forward::edit::Edits;
        let mut obj = serde_json::Map::new();
        for (k, v) in members {
            obj.insert(k, serde_json::Value::String(String::from_utf8_lossy(&v).into_owned()));
        }
        let body = serde_json::to_vec(&obj).unwrap();
        let mut e = Edits::default();
        e.set("model", serde_json::json!("x"));
        e.remove("stream");
        let out = e.apply(&body).unwrap();
        let mut want = serde_json::Value::Object(obj);
        e.apply_value(&mut want);
        prop_assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), want);
        let _ = e.apply(&input_bytes(&body));
    }

    #[test]
    fn proxy_protocol_preamble_any_bytes(input in texty(), v2 in any::<bool>()) {
        use switchyard::proxy::preamble::{judge, Preamble};
        let mut bytes = if v2 { b"\r\n\r\n\0\r\nQUIT\n".to_vec() } else { b"PROXY ".to_vec() };
        bytes.extend_from_slice(&input);
        for b in [&input[..], &bytes[..]] {
            if let Preamble::Found { len, .. } = judge(b) {
                prop_assert!(len <= b.len());
            }
        }
    }

    #[test]
    fn multipart_any_bytes(input in texty()) {
        let _ = switchyard::proxy::body::multipart_field(&input, "B", "model");
        let mut form = b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n".to_vec();
        form.extend_from_slice(&input);
        form.extend_from_slice(b"\r\n--B--\r\n");
        let _ = switchyard::proxy::body::multipart_field(&form, "B", "model");
    }

    #[test]
    fn stream_completion_any_events(datas in proptest::collection::vec(".{0,120}", 0..12)) {
        for api in [switchyard::routes::Api::Chat, switchyard::routes::Api::Responses] {
            let mut c = switchyard::sse::complete::Completion::new(api, 2);
            for d in &datas {
                c.observe(&Event { event: None, data: d.clone(), id: None });
            }
            let _ = c.complete();
        }
    }

    #[test]
    fn redacted_lines_never_hold_the_token(prefix in ".{0,40}", token in "[A-Za-z0-9_-]{6,30}", suffix in ".{0,40}") {
        for line in [format!("{prefix}Bearer {token}{suffix}"), format!("{prefix}\"api-key\": \"{token}\"{suffix}")] {
            let clean = switchyard::logging::redact(&line, &[]).unwrap_or(line.clone());
            // the token may survive only where it is also part of the surrounding text
            if !prefix.contains(&token) && !suffix.contains(&token) {
                prop_assert!(!clean.contains(&token), "{clean}");
            }
        }
    }
}
