//! The canonical form of a request body, written for hashing without
//! building a JSON tree: object members sorted by key, whitespace and
//! escapes gone, some top-level fields left out. It is a compact binary
//! form (a tag, then a length where one is needed), so two bodies share it
//! exactly when they hold the same values.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

/// What one thread keeps between calls (given back past this size).
const KEEP_BYTES: usize = 64 * 1024;

/// A member written at `member` whose key's bytes are at `key`.
struct Member {
    key: Range<usize>,
    member: Range<usize>,
}

#[derive(Default)]
struct Canon {
    out: Vec<u8>,
    /// Members of the objects being written, innermost last.
    members: Vec<Member>,
    scratch: Vec<u8>,
}

thread_local! {
    static CANON: RefCell<Canon> = RefCell::new(Canon::default());
}

/// Calls `with` on the canonical form of the JSON object `body` without
/// its top-level `skip` fields; `None` when `body` is not one.
pub fn with_canonical<T>(body: &[u8], skip: &[&str], with: impl FnOnce(&[u8]) -> T) -> Option<T> {
    CANON.with(|cell| {
        let Ok(mut c) = cell.try_borrow_mut() else {
            return None; // not re-entered in practice; a miss if it were
        };
        c.out.clear();
        c.members.clear();
        let mut de = serde_json::Deserializer::from_slice(body);
        let top = Node {
            c: &mut c,
            skip: Some(skip),
        };
        let ok = de.deserialize_map(top).is_ok() && de.end().is_ok();
        let out = ok.then(|| with(&c.out));
        if c.out.capacity() > KEEP_BYTES {
            *c = Canon::default();
        }
        out
    })
}

/// One value to write; `skip` only at the top.
struct Node<'c> {
    c: &'c mut Canon,
    skip: Option<&'c [&'c str]>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A string written as a tag, its length and its bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b's');
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.c.out.push(b'n');
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.c.out.push(if v { b't' } else { b'f' });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.c.out.push(b'u');
        self.c.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.c.out.push(b'i');
        self.c.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.c.out.push(b'd');
        self.c.out.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        string(&mut self.c.out, v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.c.out.push(b'[');
        while seq
            .next_element_seed(Node {
                c: &mut *self.c,
                skip: None,
            })?
            .is_some()
        {}
        self.c.out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let c = self.c;
        c.out.push(b'{');
        let (start, base) = (c.out.len(), c.members.len());
        loop {
            let at = c.out.len();
            if map.next_key_seed(Key(&mut c.out))?.is_none() {
                break;
            }
            let key = at + 9..c.out.len();
            if self
                .skip
                .is_some_and(|s| s.iter().any(|k| k.as_bytes() == &c.out[key.clone()]))
            {
                c.out.truncate(at);
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            map.next_value_seed(Node {
                c: &mut *c,
                skip: None,
            })?;
            c.members.push(Member {
                key,
                member: at..c.out.len(),
            });
        }
        sort_members(c, start, base);
        c.out.push(b'}');
        Ok(())
    }
}

/// A member's key, written as a string.
struct Key<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        string(self.0, v);
        Ok(())
    }
}

/// Rewrites the members written since `start` (recorded from `base`) in
/// key order.
fn sort_members(c: &mut Canon, start: usize, base: usize) {
    let Canon {
        out,
        members,
        scratch,
    } = c;
    let mine = &mut members[base..];
    let key = |m: &Member| &out[m.key.clone()];
    if !mine.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
        // stable: duplicate keys keep their order
        mine.sort_by(|a, b| out[a.key.clone()].cmp(&out[b.key.clone()]));
        scratch.clear();
        for m in mine.iter() {
            scratch.extend_from_slice(&out[m.member.clone()]);
        }
        out.truncate(start);
        out.extend_from_slice(scratch);
    }
    members.truncate(base);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> Option<Vec<u8>> {
        with_canonical(body.as_bytes(), &["stream", "user"], <[u8]>::to_vec)
    }

    #[test]
    fn order_spacing_and_escapes_do_not_matter_values_do() {
        let a = canon(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1}"#);
        let b = canon(
            "{ \"n\" : 1, \"messages\": [ {\"content\": \"h\\u0069\", \"role\": \"user\"} ],\n \"model\": \"m\", \"stream\": true, \"user\": \"u1\" }",
        );
        assert!(a.is_some());
        assert_eq!(a, b);
        for other in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"n":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1.0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1,"seed":null}"#,
            r#"{"model":"m","messages":[{"content":"hi","role":"user"},{}],"n":1}"#,
        ] {
            assert_ne!(a, canon(other), "{other}");
        }
    }

    #[test]
    fn lengths_keep_neighbours_apart_and_nesting_sorts_too() {
        // a key's end and a value's start cannot trade bytes
        assert_ne!(canon(r#"{"ab":"c"}"#), canon(r#"{"a":"bc"}"#));
        assert_ne!(canon(r#"{"a":["b","c"]}"#), canon(r#"{"a":["bc"]}"#));
        assert_eq!(
            canon(r#"{"t":[{"b":{"y":1,"x":2},"a":0}]}"#),
            canon(r#"{"t":[{"a":0,"b":{"x":2,"y":1}}]}"#)
        );
    }

    #[test]
    fn only_whole_objects() {
        for bad in ["[1]", "\"x\"", "{\"a\":1", "{\"a\":1} x", "", "{\"a\":tru}"] {
            assert_eq!(canon(bad), None, "{bad}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(canon(&deep), None, "nesting past serde_json's limit");
        assert_eq!(canon("{}"), Some(b"{}".to_vec()));
    }
}
