//! Edits to the top level of a client's JSON body (`model`, `stream`,
//! `stream_options`), applied by splicing: every member the gateway does not
//! change is copied as the client sent it, byte for byte, so a 128 KB
//! conversation is scanned once and never rebuilt as a tree. Nesting depth is
//! not limited here (the scan keeps no recursion), so a deep body is sent on
//! as it came.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Top-level members to set (`Some`) or remove (`None`), in order; the last
/// edit of a key wins. Members set that the body lacks are appended.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Edits(Vec<(&'static str, Option<Value>)>);

impl Edits {
    pub fn set(&mut self, key: &'static str, value: Value) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, Some(value)));
    }

    pub fn remove(&mut self, key: &'static str) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The edit for `key`, if any (`Some(None)`: removed).
    pub fn get(&self, key: &str) -> Option<Option<&Value>> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// `body` (a JSON object) with the edits spliced in. Duplicate members of
    /// an edited key are all replaced by the one edit.
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        let members = top_level(body)?;
        let mut out = Vec::with_capacity(body.len() + 64);
        out.push(b'{');
        let mut done: Vec<&str> = Vec::new();
        for (key, raw) in &members {
            let value = match self.get(key) {
                None => Some(raw.get().as_bytes()),
                Some(_) if done.contains(&key.as_ref()) => continue,
                Some(edit) => {
                    done.push(key);
                    let Some(v) = edit else { continue };
                    push_member(&mut out, key, None, Some(v))?;
                    continue;
                }
            };
            push_member(&mut out, key, value, None)?;
        }
        for (key, edit) in &self.0 {
            if let (Some(v), false) = (edit, done.contains(key)) {
                push_member(&mut out, key, None, Some(v))?;
            }
        }
        out.push(b'}');
        Ok(out)
    }

    /// The same edits on a parsed body (an object; anything else is left).
    pub fn apply_value(&self, v: &mut Value) {
        let Some(map) = v.as_object_mut() else { return };
        for (key, edit) in &self.0 {
            match edit {
                Some(value) => {
                    map.insert((*key).into(), value.clone());
                }
                None => {
                    map.remove(*key);
                }
            }
        }
    }
}

/// Appends `,"key":value` (no comma first) with `raw` bytes or `value` serialized.
fn push_member(
    out: &mut Vec<u8>,
    key: &str,
    raw: Option<&[u8]>,
    value: Option<&Value>,
) -> Result<(), serde_json::Error> {
    if out.len() > 1 {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    match (raw, value) {
        (Some(raw), _) => out.extend_from_slice(raw),
        (None, Some(v)) => serde_json::to_writer(&mut *out, v)?,
        (None, None) => out.extend_from_slice(b"null"),
    }
    Ok(())
}

type Members<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A member's name: borrowed from the body unless it has escapes (serde's
/// own `Cow<str>` always copies).
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// The members of a JSON object, values as raw slices of `body`.
fn top_level(body: &[u8]) -> Result<Members<'_>, serde_json::Error> {
    struct Top;
    impl<'de> Visitor<'de> for Top {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                members.push((key, map.next_value::<&'de RawValue>()?));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let members = de.deserialize_map(Top)?;
    de.end()?;
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edited(body: &str, e: &Edits) -> String {
        String::from_utf8(e.apply(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn untouched_members_keep_their_bytes() {
        let mut e = Edits::default();
        e.set("model", json!("up-model"));
        let body = r#"{ "model" : "m", "messages":[ {"role":"user","content":"h\u00e9 \"x\""} ],"n":1.50}"#;
        assert_eq!(
            edited(body, &e),
            r#"{"model":"up-model","messages":[ {"role":"user","content":"h\u00e9 \"x\""} ],"n":1.50}"#
        );
    }

    #[test]
    fn removes_sets_appends_and_merges_duplicates() {
        let mut e = Edits::default();
        e.remove("stream");
        e.set("stream_options", json!({"include_usage": true}));
        e.set("model", json!("x"));
        e.set("model", json!("y"));
        let out = edited(r#"{"model":"a","stream":true,"model":"b","k":[]}"#, &e);
        assert_eq!(
            out,
            r#"{"model":"y","k":[],"stream_options":{"include_usage":true}}"#
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut w = json!({"model": "a", "stream": true, "k": []});
        e.apply_value(&mut w);
        assert_eq!(v, w, "the splice and the tree edit agree");
        assert_eq!(
            edited("{}", &e),
            r#"{"stream_options":{"include_usage":true},"model":"y"}"#
        );
    }

    #[test]
    fn deep_bodies_pass_whole_and_bad_ones_are_errors() {
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}1{}}}",
            "[".repeat(500),
            "]".repeat(500)
        );
        let mut e = Edits::default();
        e.set("stream", json!(true));
        let out = edited(&deep, &e);
        assert!(out.starts_with(&deep[..deep.len() - 1]) && out.ends_with(",\"stream\":true}"));
        for bad in ["[]", "{", r#"{"a":1} x"#, r#"{"a":}"#, ""] {
            assert!(e.apply(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
