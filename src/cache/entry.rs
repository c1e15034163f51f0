//! A kept answer, its Redis form, and which answers may be kept.

use crate::routes::Api;
use bytes::Bytes;
use serde_json::Value;

/// A kept answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The answer as JSON.
    pub body: Bytes,
    pub created_ms: u64,
    pub model: String,
    pub client: String,
    /// The usage the answer reported (prompt, completion): tokens a hit saves.
    pub tokens: (u64, u64),
    /// A streamed answer's content events: (characters, ms since the one
    /// before), for `replay: paced`.
    pub pace: Vec<(u32, u32)>,
}

impl Entry {
    /// What it costs the memory store: body, names and pacing.
    pub fn size(&self) -> u64 {
        (self.body.len() + self.model.len() + self.client.len() + self.pace.len() * 8 + 96) as u64
    }

    /// Its form in Redis: JSON with the answer inline.
    pub fn to_text(&self) -> Option<String> {
        let body: &serde_json::value::RawValue = serde_json::from_slice(&self.body).ok()?;
        serde_json::to_string(&serde_json::json!({
            "v": 1, "created_ms": self.created_ms, "model": self.model, "client": self.client,
            "tokens": [self.tokens.0, self.tokens.1], "pace": self.pace, "body": body,
        }))
        .ok()
    }

    /// What [`Self::to_text`] wrote (bounded by `max`); anything else is `None`.
    pub fn from_text(s: &str, max: u64) -> Option<Entry> {
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            v: u32,
            created_ms: u64,
            model: String,
            client: String,
            tokens: (u64, u64),
            pace: Vec<(u32, u32)>,
            #[serde(borrow)]
            body: &'a serde_json::value::RawValue,
        }
        if s.len() as u64 > max.saturating_mul(2).saturating_add(64 << 10) {
            return None;
        }
        let st: Stored = serde_json::from_str(s).ok()?;
        let fits = st.body.get().len() as u64 <= max;
        (fits
            && st.v == 1
            && st.model.len() <= 256
            && st.client.len() <= 256
            && st.pace.len() <= 4096)
            .then(|| Entry {
                body: Bytes::copy_from_slice(st.body.get().as_bytes()),
                created_ms: st.created_ms,
                model: st.model,
                client: st.client,
                tokens: st.tokens,
                pace: st.pace,
            })
    }
}

/// [`finished`] for an answer's JSON text, read only as far as it needs.
pub fn finished_json(api: Api, body: &[u8]) -> bool {
    use serde::de::IgnoredAny;
    #[derive(serde::Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        finish_reason: Option<&'a str>,
    }
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        choices: Option<Vec<Choice<'a>>>,
        #[serde(default)]
        data: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        error: Option<Value>,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(body) else {
        return false;
    };
    if a.error.is_some_and(|e| !e.is_null()) {
        return false;
    }
    match api {
        Api::Other => a.data.is_some_and(|d| !d.is_empty()),
        _ => a.choices.is_some_and(|c| {
            !c.is_empty()
                && c.iter().all(|c| {
                    matches!(
                        c.finish_reason,
                        Some("stop" | "tool_calls" | "function_call")
                    )
                })
        }),
    }
}

/// Whether a JSON answer of `api` finished (see the module docs).
pub fn finished(api: Api, v: &Value) -> bool {
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return false;
    }
    match api {
        // embeddings (the only other API the cache takes)
        Api::Other => v["data"].as_array().is_some_and(|d| !d.is_empty()),
        _ => v["choices"].as_array().is_some_and(|c| {
            !c.is_empty()
                && c.iter().all(|c| {
                    matches!(
                        c["finish_reason"].as_str(),
                        Some("stop" | "tool_calls" | "function_call")
                    )
                })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_their_text_form_and_hostile_text_is_nothing() {
        let e = Entry {
            body: Bytes::from_static(br#"{"choices":[{"finish_reason":"stop"}]}"#),
            created_ms: 1_765_000_000_000,
            model: "gpt-4o".into(),
            client: "team".into(),
            tokens: (12, 5),
            pace: vec![(3, 0), (4, 20)],
        };
        let text = e.to_text().unwrap();
        assert_eq!(Entry::from_text(&text, 1 << 20), Some(e));
        for bad in ["", "[]", "{\"v\":2}", &text.replace("\"v\":1", "\"v\":9")] {
            assert_eq!(Entry::from_text(bad, 1 << 20), None, "{bad}");
        }
        assert_eq!(Entry::from_text(&text, 1), None, "over the bound");
    }

    #[test]
    fn the_light_check_agrees_with_the_full_one() {
        for (api, body) in [
            (
                Api::Chat,
                r#"{"choices":[{"finish_reason":"stop","message":{"content":"x"}}]}"#,
            ),
            (Api::Chat, r#"{"choices":[{"finish_reason":"length"}]}"#),
            (Api::Chat, r#"{"choices":[]}"#),
            (
                Api::Chat,
                r#"{"choices":[{"finish_reason":"stop"}],"error":{"message":"x"}}"#,
            ),
            (
                Api::Chat,
                r#"{"choices":[{"finish_reason":"tool_calls"},{"finish_reason":null}]}"#,
            ),
            (Api::Other, r#"{"data":[{"embedding":[0.1]}]}"#),
            (Api::Other, r#"{"data":[]}"#),
            (Api::Chat, "not json"),
        ] {
            let full = serde_json::from_str::<Value>(body).is_ok_and(|v| finished(api, &v));
            assert_eq!(finished_json(api, body.as_bytes()), full, "{body}");
        }
    }
}
