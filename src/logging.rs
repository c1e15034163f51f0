//! The process logger: `env_logger` (level from `RUST_LOG`, default `info`)
//! behind a filter that keeps secrets out of every line at every level.
//! Pingora's own debug and trace lines print request headers (the upstream
//! `Authorization` the gateway sets, the client's key): any `Bearer` token,
//! `api-key`/`x-api-key` value and any configured upstream key or admin token
//! is replaced by `[redacted]` (a configured key by its id) before a line is
//! written. The gateway's own info lines name keys only by id and pass as
//! they are, so the per-request access line costs nothing extra.

use arc_swap::ArcSwap;
use log::{Level, Log, Metadata, Record};
use once_cell::sync::Lazy;
use std::sync::Arc;

/// Known secrets and what to print instead (`github#2 (…Xq9f)`, `admin token`).
static SECRETS: Lazy<ArcSwap<Vec<(String, String)>>> =
    Lazy::new(|| ArcSwap::from_pointee(Vec::new()));

/// What replaces a secret that has no id.
const REDACTED: &str = "[redacted]";

/// Sets the secrets to redact by value (on start and on every reload).
pub fn set_secrets(secrets: Vec<(String, String)>) {
    SECRETS.store(Arc::new(
        secrets.into_iter().filter(|(s, _)| s.len() >= 4).collect(),
    ));
}

/// Target of the per-request access line; in JSON format its message (a
/// JSON object) becomes the line's fields.
pub const ACCESS: &str = "switchyard::access";

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`):
/// a field from outside cannot forge a log line. Borrowed when clean.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .flat_map(char::escape_debug)
            .collect::<String>(),
    )
}

/// `text` (an upstream's words the gateway will log or relay) with every
/// configured secret replaced by its id and every credential-shaped value
/// by `[redacted]`. Borrowed when it had none.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    match redact(text, &SECRETS.load()) {
        Some(clean) => std::borrow::Cow::Owned(clean),
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// `text` (an upstream's answer the gateway relays) with every configured
/// secret replaced by its id; nothing else is touched (a model may well
/// write `Authorization: Bearer …` in its answer). Borrowed when clean.
pub fn scrub_known(text: &str) -> std::borrow::Cow<'_, str> {
    replace_known(text, &SECRETS.load())
}

/// `text` with each of `secrets` replaced by its id (borrowed when none is in it).
fn replace_known<'t>(text: &'t str, secrets: &[(String, String)]) -> std::borrow::Cow<'t, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for (secret, id) in secrets {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(secret.as_str(), id));
        }
    }
    out
}

/// Logs `text` at `level` under `target` with structured `fields`: JSON
/// lines carry each as a member (secrets replaced), text lines only `text`.
pub fn event(level: Level, target: &str, text: &str, fields: &[(&str, &str)]) {
    if level > log::max_level() {
        return;
    }
    log::logger().log(
        &Record::builder()
            .args(format_args!("{text}"))
            .level(level)
            .target(target)
            .key_values(&fields)
            .build(),
    );
}

/// Whether lines are JSON (`log.format: json`); read on the hot path.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the access line should be built as JSON fields.
pub fn json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// The log filter in force and where it comes from: a non-empty `RUST_LOG`
/// (which overrides `log.level`), else `log.level`, else `info`.
pub fn filter_source(settings: &crate::config::raw::RawLog) -> (String, &'static str) {
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => (f.trim().to_string(), "RUST_LOG"),
        _ => match &settings.level {
            Some(l) => (l.clone(), "log.level"),
            None => ("info".into(), "default"),
        },
    }
}

/// Installs the logger (once per process): the filter of [`filter_source`];
/// `log.format` picks text or JSON lines.
pub fn init(settings: &crate::config::raw::RawLog) {
    use crate::config::raw::LogFormat;
    let (filter, from) = filter_source(settings);
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter);
    if settings.format == LogFormat::Json {
        JSON.store(true, std::sync::atomic::Ordering::Relaxed);
        builder.format(|buf, record| {
            use std::io::Write;
            let mut line = serde_json::Map::new();
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            line.insert("ts".into(), ts.to_string().into());
            line.insert("level".into(), record.level().as_str().into());
            line.insert("target".into(), record.target().into());
            let message = record.args().to_string();
            // only the access line's message is parsed: it is built as a JSON object
            let fields = (record.target() == ACCESS)
                .then(|| serde_json::from_str::<serde_json::Value>(&message).ok())
                .flatten();
            match fields {
                Some(serde_json::Value::Object(fields)) => line.extend(fields),
                _ => {
                    line.insert("message".into(), message.into());
                }
            }
            // an event's fields (see `event`): ids, times and reasons
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            writeln!(buf, "{}", serde_json::Value::Object(line))
        });
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Redacting { inner })).is_ok() {
        log::set_max_level(max);
        if from == "RUST_LOG" && settings.level.is_some() {
            log::warn!("log filter {filter:?} from RUST_LOG overrides log.level");
        }
    }
}

/// Pingora's routine lines, at the level an operator wants them: its start
/// sequence is debug detail, and the two "errors" it logs on a normal
/// upgrade and on a lost race for a pooled connection are not failures.
fn pingora_level(target: &str, text: &str) -> Option<Level> {
    if !target.starts_with("pingora") {
        return None;
    }
    const ROUTINE: [&str; 5] = [
        "Bootstrap starting",
        "Bootstrap done",
        "Server starting",
        "Starting services in dependency order",
        "Starting service:",
    ];
    if ROUTINE.iter().any(|r| text.starts_with(r)) {
        return Some(Level::Debug);
    }
    if text.starts_with("No incoming socket transfer") {
        return Some(Level::Info); // `serve -u` waits for the old process's sockets
    }
    if text.starts_with("failed to acquire reusable stream") {
        return Some(Level::Debug); // the call goes on a new connection
    }
    None
}

/// Copies a record's key-values into a JSON line, secrets replaced.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let text = value.to_string();
        let clean = redact(&text, &SECRETS.load()).unwrap_or(text);
        let key = key.as_str();
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), clean.into());
        }
        Ok(())
    }
}

struct Redacting {
    inner: env_logger::Logger,
}

impl Log for Redacting {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        // the access line carries ids only and escapes what came from
        // outside: it passes as it is (the inner logger applies the level
        // filter itself); every other line may quote an upstream's text
        if record.level() <= Level::Info && record.target() == ACCESS {
            self.inner.log(record);
            return;
        }
        if !self.inner.matches(record) {
            return; // filtered out: not worth formatting
        }
        let text = record.args().to_string();
        let level = pingora_level(record.target(), &text);
        if let Some(l) = level {
            let moved = Metadata::builder().level(l).target(record.target()).build();
            if !self.inner.enabled(&moved) {
                return;
            }
        }
        match (redact(&text, &SECRETS.load()), level) {
            (None, None) => self.inner.log(record),
            (clean, level) => self.inner.log(
                &Record::builder()
                    .args(format_args!("{}", clean.as_deref().unwrap_or(&text)))
                    .level(level.unwrap_or(record.level()))
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .key_values(record.key_values())
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Whether `c` can be part of a token value (anything but separators and quotes).
fn token_char(c: u8) -> bool {
    !(c.is_ascii_whitespace()
        || matches!(c, b'"' | b'\'' | b',' | b'\\' | b';' | b')' | b']' | b'}'))
}

/// Where the token starting at `start` ends.
fn token_end(bytes: &[u8], start: usize) -> usize {
    start
        + bytes[start..]
            .iter()
            .take_while(|c| token_char(**c))
            .count()
}

/// Finds `needle` in `hay` ignoring ASCII case, from `from`.
fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// `text` without secrets, or `None` when it had none.
pub fn redact(text: &str, secrets: &[(String, String)]) -> Option<String> {
    let known = replace_known(text, secrets);
    let changed = matches!(known, std::borrow::Cow::Owned(_));
    let out = known.into_owned();
    // `Bearer <token>`, and the value after an `api-key` header name
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let bytes = out.as_bytes();
    let mut at = 0;
    while let Some(i) = find_ci(bytes, b"bearer ", at) {
        let mut start = i + b"bearer ".len();
        // `Bearer  <key>`: the extra spaces are no shield
        while bytes.get(start).is_some_and(|c| *c == b' ' || *c == b'\t') {
            start += 1;
        }
        let end = token_end(bytes, start);
        if end > start {
            spans.push((start, end));
        }
        at = end.max(start);
    }
    // the value after a credential header's name: `api-key: v`,
    // `"x-api-key": "v"`, `api-key=v`, `authorization: v` (no `Bearer`)
    for name in [&b"api-key"[..], b"authorization"] {
        at = 0;
        while let Some(i) = find_ci(bytes, name, at) {
            let mut start = i + name.len();
            while start < bytes.len() && matches!(bytes[start], b'"' | b':' | b' ' | b'=' | b'\'') {
                start += 1;
            }
            let end = token_end(bytes, start);
            let value = &bytes[start..end];
            // a separator, not prose ("authorization failed")
            let separated = bytes[i + name.len()..start]
                .iter()
                .any(|c| matches!(c, b':' | b'=' | b'"'));
            if end > start && separated && !value.eq_ignore_ascii_case(b"bearer") {
                spans.push((start, end));
            }
            at = end.max(i + 1);
        }
    }
    if spans.is_empty() {
        return changed.then_some(out);
    }
    spans.sort_unstable();
    let mut clean = String::with_capacity(out.len());
    let mut last = 0;
    for (s, e) in spans {
        if s < last {
            continue;
        }
        let token = &out[s..e];
        // a key already replaced by its id stays readable
        if secrets.iter().any(|(_, id)| id.starts_with(token)) {
            continue;
        }
        clean.push_str(&out[last..s]);
        clean.push_str(REDACTED);
        last = e;
    }
    clean.push_str(&out[last..]);
    (clean != text).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_in_every_form_lose_their_secrets() {
        let secrets = vec![(
            "sk-live-aaaaaaaaaaaaXq9f".to_string(),
            "github#2 (…Xq9f)".to_string(),
        )];
        let cases = [
            (
                r#"Sending header to upstream {"authorization": "Bearer sk-zzzz-1234"}"#,
                "sk-zzzz-1234",
            ),
            (
                "authorization: bearer client-key-777\r\nhost: x",
                "client-key-777",
            ),
            (
                r#"headers: {"api-key": "azure-key-99", "x-api-key": "other-1"}"#,
                "azure-key-99",
            ),
            (r#"headers: {"x-api-key": "other-1"}"#, "other-1"),
            (
                "b\"POST /v1 HTTP/1.1\\r\\nAuthorization: Bearer raw-secret\\r\\n\"",
                "raw-secret",
            ),
            (
                "the key sk-live-aaaaaaaaaaaaXq9f leaked",
                "sk-live-aaaaaaaaaaaaXq9f",
            ),
            ("authorization: Bearer  two-spaces-key", "two-spaces-key"),
            (r#"{"authorization": "no-scheme-key"}"#, "no-scheme-key"),
            ("Authorization: bare-key-123\r\n", "bare-key-123"),
        ];
        for (line, secret) in cases {
            let clean = redact(line, &secrets).unwrap_or_else(|| panic!("{line} was not redacted"));
            assert!(!clean.contains(secret), "{clean}");
        }
        assert_eq!(
            redact("the key sk-live-aaaaaaaaaaaaXq9f leaked", &secrets).unwrap(),
            "the key github#2 (…Xq9f) leaked"
        );
        assert_eq!(
            redact("nothing secret here: api-keys rotate", &secrets),
            None
        );
        assert_eq!(redact("", &secrets), None);
        assert_eq!(redact("authorization failed for a client", &secrets), None);
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        assert_eq!(escaped("gpt-4o"), "gpt-4o");
        assert_eq!(
            escaped("m\n2026-12-06 INFO forged\r\u{1b}[31m"),
            "m\\n2026-12-06 INFO forged\\r\\u{1b}[31m"
        );
    }
}
