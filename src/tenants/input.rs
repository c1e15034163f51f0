//! What the admin API accepts to make or change a run-time client, checked
//! field by field: every refusal names its field (`quotas[0].tokens: …`).

use super::record::Tenant;
use crate::config::quota::{self, RawQuota};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Shortest key a caller may choose (a generated one has 64 hex digits).
pub const MIN_KEY: usize = 24;
const MAX_KEY: usize = 256;
const MAX_NAME: usize = 64;
const MAX_MODELS: usize = 100;
const MAX_NOTES: usize = 2000;

/// A refused field: `field` and the whole message (which starts with it).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn refuse<T>(field: &str, what: impl std::fmt::Display) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.to_string(),
        message: format!("{field}: {what}"),
    })
}

/// The body of `POST /admin/clients` (and, merged, of `PATCH`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    pub name: Option<String>,
    pub key: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub expires: Option<String>,
    pub quotas: Option<Vec<RawQuota>>,
    pub notes: Option<String>,
}

/// Reads a JSON body as [`ClientInput`] (errors name the field).
fn read(body: &Value) -> Result<ClientInput, FieldError> {
    serde_path_to_error::deserialize(body).or_else(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(body)".to_string()
        } else {
            path
        };
        refuse(&field, e.inner())
    })
}

/// What the checks need to know of the other clients.
pub trait Taken {
    /// Where a client named `name` already is (`the config file`, `run time`).
    fn name(&self, name: &str) -> Option<&'static str>;
    /// Whether some client has this key hash.
    fn key(&self, hash: &[u8; 32]) -> bool;
}

/// Checks a create request: the new tenant and its key (shown once).
pub fn create(body: &[u8], taken: &dyn Taken, now_ms: u64) -> Result<(Tenant, String), FieldError> {
    let v: Value =
        serde_json::from_slice(body).or_else(|e| refuse("(body)", format!("not JSON: {e}")))?;
    if !v.is_object() {
        return refuse("(body)", "expected a JSON object");
    }
    let input = read(&v)?;
    let Some(name) = input.name.clone() else {
        return refuse("name", "required");
    };
    check_name(&name)?;
    if let Some(at) = taken.name(&name) {
        return refuse("name", format!("a client named {name:?} exists ({at})"));
    }
    let key = match &input.key {
        Some(k) => {
            check_key(k)?;
            k.clone()
        }
        None => super::record::new_key(),
    };
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    if taken.key(&hash) {
        return refuse(
            "key",
            "another client has this key; every client needs its own",
        );
    }
    let mut t = Tenant {
        name,
        key_sha256: hex::encode(hash),
        key_hint: super::record::hint(&key),
        models: Vec::new(),
        rpm: None,
        tpm: None,
        max_concurrent: None,
        expires_ms: None,
        quotas: Vec::new(),
        notes: String::new(),
        created_ms: now_ms,
        updated_ms: now_ms,
        revoked_ms: None,
    };
    apply(&mut t, input, now_ms, true)?;
    Ok((t, key))
}

/// Checks a change (`PATCH`): `body` names the fields to change (`null`
/// clears one). Gives the changed tenant and what changed, in words.
pub fn update(old: &Tenant, body: &[u8], now_ms: u64) -> Result<(Tenant, String), FieldError> {
    let v: Value =
        serde_json::from_slice(body).or_else(|e| refuse("(body)", format!("not JSON: {e}")))?;
    let Value::Object(patch) = v else {
        return refuse("(body)", "expected a JSON object");
    };
    for f in ["name", "key"] {
        if patch.contains_key(f) {
            let why = if f == "key" {
                "cannot be changed: rotate the key (POST /admin/clients/{name}/rotate)"
            } else {
                "cannot be changed: make a new client"
            };
            return refuse(f, why);
        }
    }
    let mut merged = current(old);
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let input = read(&Value::Object(merged))?;
    let mut t = old.clone();
    t.models.clear();
    t.rpm = None;
    t.tpm = None;
    t.max_concurrent = None;
    t.expires_ms = None;
    t.quotas.clear();
    t.notes.clear();
    apply(&mut t, input, now_ms, false)?;
    t.updated_ms = now_ms;
    Ok((t.clone(), changes(old, &t)))
}

/// A tenant's changeable fields as a create body would give them.
fn current(t: &Tenant) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    };
    if !t.models.is_empty() {
        put("models", serde_json::json!(t.models));
    }
    put("rpm", serde_json::json!(t.rpm));
    put("tpm", serde_json::json!(t.tpm));
    put("max_concurrent", serde_json::json!(t.max_concurrent));
    put(
        "expires",
        serde_json::json!(t.expires_ms.map(crate::clock::fmt_iso)),
    );
    if !t.quotas.is_empty() {
        put("quotas", serde_json::json!(t.quotas));
    }
    if !t.notes.is_empty() {
        put("notes", Value::String(t.notes.clone()));
    }
    m
}

/// Checks and sets every field but name and key.
fn apply(t: &mut Tenant, input: ClientInput, now_ms: u64, new: bool) -> Result<(), FieldError> {
    if let Some(models) = input.models {
        if models.len() > MAX_MODELS {
            return refuse("models", format!("at most {MAX_MODELS} models"));
        }
        for (i, m) in models.iter().enumerate() {
            if m.trim().is_empty() || m.len() > 200 || m.chars().any(char::is_control) {
                return refuse(
                    &format!("models[{i}]"),
                    "a model name or glob of 1 to 200 printable characters",
                );
            }
        }
        t.models = models;
    }
    let mut e = Vec::new();
    crate::config::sections::check_rate("", input.rpm, input.tpm, &mut e);
    crate::config::sections::check_concurrency(".max_concurrent", input.max_concurrent, &mut e);
    if let Some(first) = e.first() {
        let msg = first.trim_start_matches('.');
        let field = msg.split(':').next().unwrap_or("limits");
        return refuse(field, msg.split_once(": ").map_or(msg, |(_, w)| w));
    }
    (t.rpm, t.tpm, t.max_concurrent) = (input.rpm, input.tpm, input.max_concurrent);
    if let Some(x) = input.expires {
        let at = humantime::parse_rfc3339_weak(x.trim()).or_else(|err| {
            refuse(
                "expires",
                format!(
                    "{x:?} is not an RFC 3339 time in UTC such as 2027-06-30T00:00:00Z ({err})"
                ),
            )
        })?;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if new && ms <= now_ms {
            return refuse("expires", format!("{x} is in the past"));
        }
        t.expires_ms = Some(ms);
    }
    if let Some(q) = input.quotas {
        if let Err(errs) = quota::parse("quotas", &q) {
            let first = errs.into_iter().next().unwrap_or_default();
            let field = first.split(':').next().unwrap_or("quotas").to_string();
            let what = first
                .split_once(": ")
                .map_or(first.as_str(), |(_, w)| w)
                .to_string();
            return refuse(&field, what);
        }
        t.quotas = q;
    }
    if let Some(n) = input.notes {
        if n.chars().count() > MAX_NOTES {
            return refuse("notes", format!("at most {MAX_NOTES} characters"));
        }
        t.notes = n;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if name.starts_with('.') {
        return refuse(
            "name",
            "must not start with `.` (a path segment such as `..` would not reach it)",
        );
    }
    if name == "audit" {
        return refuse("name", "\"audit\" is reserved (GET /admin/clients/audit)");
    }
    if ok {
        Ok(())
    } else {
        refuse(
            "name",
            format!("1 to {MAX_NAME} letters, digits, `.`, `_`, `-` or `@`"),
        )
    }
}

fn check_key(key: &str) -> Result<(), FieldError> {
    if key.len() < MIN_KEY {
        return refuse(
            "key",
            format!(
                "too short: at least {MIN_KEY} characters (leave it out to get a generated one)"
            ),
        );
    }
    if key.len() > MAX_KEY || !key.chars().all(|c| c.is_ascii_graphic()) {
        return refuse(
            "key",
            format!("at most {MAX_KEY} printable ASCII characters, no spaces"),
        );
    }
    Ok(())
}

/// What changed from `a` to `b`, in words (`rpm 60 → 120; notes changed`).
fn changes(a: &Tenant, b: &Tenant) -> String {
    fn opt<T: std::fmt::Display>(x: &Option<T>) -> String {
        x.as_ref().map_or("none".into(), |v| v.to_string())
    }
    let mut out = Vec::new();
    let mut diff = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} {x} → {y}"));
        }
    };
    diff(
        "models",
        format!("{:?}", a.models),
        format!("{:?}", b.models),
    );
    diff("rpm", opt(&a.rpm), opt(&b.rpm));
    diff("tpm", opt(&a.tpm), opt(&b.tpm));
    diff(
        "max_concurrent",
        opt(&a.max_concurrent),
        opt(&b.max_concurrent),
    );
    let exp = |t: &Tenant| t.expires_ms.map(crate::clock::fmt_iso);
    diff("expires", opt(&exp(a)), opt(&exp(b)));
    diff(
        "quotas",
        serde_json::to_string(&a.quotas).unwrap_or_default(),
        serde_json::to_string(&b.quotas).unwrap_or_default(),
    );
    if a.notes != b.notes {
        out.push("notes changed".into());
    }
    if out.is_empty() {
        "nothing changed".into()
    } else {
        out.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct None_;
    impl Taken for None_ {
        fn name(&self, n: &str) -> Option<&'static str> {
            (n == "alpha").then_some("the config file")
        }
        fn key(&self, _: &[u8; 32]) -> bool {
            false
        }
    }

    fn err(body: &str) -> FieldError {
        create(body.as_bytes(), &None_, 1_790_000_000_000).unwrap_err()
    }

    #[test]
    fn create_checks_every_field() {
        let (t, key) = create(
            br#"{"name": "team-a", "rpm": 60, "quotas": [{"per": "day", "tokens": 5000}], "notes": "n"}"#,
            &None_,
            1000,
        )
        .unwrap();
        assert!(key.starts_with("sy-"));
        assert_eq!(t.key_sha256, crate::config::hash_key(&key));
        assert_eq!((t.rpm, t.notes.as_str()), (Some(60), "n"));
        assert!(!serde_json::to_string(&t).unwrap().contains(&key));
        for (body, field, words) in [
            (r#"{"name": "alpha"}"#, "name", "exists (the config file)"),
            (r#"{"rpm": 5}"#, "name", "required"),
            (r#"{"name": "a b"}"#, "name", "letters"),
            (r#"{"name": ".."}"#, "name", "must not start with `.`"),
            (r#"{"name": "x", "key": "short"}"#, "key", "too short"),
            (r#"{"name": "x", "rpm": -1}"#, "rpm", "invalid value"),
            (r#"{"name": "x", "rpm": 0}"#, "rpm", "between 1"),
            (
                r#"{"name": "x", "max_concurrent": 0}"#,
                "max_concurrent",
                "between 1",
            ),
            (
                r#"{"name": "x", "quotas": [{"per": "day", "tokens": -5}]}"#,
                "quotas[0].tokens",
                "whole number",
            ),
            (
                r#"{"name": "x", "quotas": [{"per": "day", "usd": 1e12}]}"#,
                "quotas[0].usd",
                "amount",
            ),
            (
                r#"{"name": "x", "expires": "2001-01-01T00:00:00Z"}"#,
                "expires",
                "in the past",
            ),
            (
                r#"{"name": "x", "colour": "red"}"#,
                "colour",
                "unknown field",
            ),
            ("[1]", "(body)", "object"),
        ] {
            let e = err(body);
            assert_eq!(e.field, field, "{body}: {e:?}");
            assert!(
                e.message.starts_with(field) && e.message.contains(words),
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn update_merges_clears_and_says_what_changed() {
        let (t, _) = create(br#"{"name": "t", "rpm": 60, "notes": "x"}"#, &None_, 1000).unwrap();
        let (u, said) = update(&t, br#"{"rpm": 120, "tpm": 5000}"#, 2000).unwrap();
        assert_eq!(
            (u.rpm, u.tpm, u.notes.as_str()),
            (Some(120), Some(5000), "x")
        );
        assert_eq!(said, "rpm 60 → 120; tpm none → 5000");
        let (v, _) = update(&u, br#"{"rpm": null}"#, 3000).unwrap();
        assert_eq!((v.rpm, v.tpm), (None, Some(5000)));
        assert_eq!(update(&t, br#"{"key": "k"}"#, 1).unwrap_err().field, "key");
        assert_eq!(
            update(&t, br#"{"quotas": [{"per": "year", "tokens": 1}]}"#, 1)
                .unwrap_err()
                .field,
            "quotas[0].per"
        );
    }
}
