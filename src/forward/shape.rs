//! How one request is sent to one upstream and how its answer is delivered:
//! pass-through, stream→JSON aggregation (`stream_only` upstreams), JSON→stream
//! synthesis (`no_stream` upstreams), and usage metering for streams. Pure
//! functions, so the decisions are unit-tested apart from the network.

use super::edit::Edits;
use crate::config::UpstreamConf;
use serde_json::{json, Value};

pub use crate::routes::Api;

/// How the answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Relay as received. For an SSE reply: `strip_usage` drops the usage the
    /// gateway asked for on the client's behalf.
    Pass { strip_usage: bool },
    /// The client wants JSON; the upstream streams: merge the stream.
    Aggregate(Api),
    /// The client wants a stream; the upstream cannot: replay the JSON as SSE.
    Synthesize { api: Api, include_usage: bool },
}

/// The few request fields the gateway decides on, read without building the
/// whole JSON tree (other fields are skipped, but the body must still be valid JSON).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Peek {
    #[serde(default)]
    pub model: Option<Value>,
    #[serde(default)]
    pub stream: Option<Value>,
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Choices asked for (chat, completions).
    #[serde(default)]
    pub n: Option<Value>,
    /// The output limits the request sets (any API's name for them).
    #[serde(default)]
    pub max_tokens: Option<Value>,
    #[serde(default)]
    pub max_completion_tokens: Option<Value>,
    #[serde(default)]
    pub max_output_tokens: Option<Value>,
}

impl Peek {
    pub fn client_stream(&self) -> bool {
        self.stream == Some(Value::Bool(true))
    }

    /// How many choices the answer has (`n`, default 1).
    pub fn choices(&self) -> u32 {
        self.n
            .as_ref()
            .and_then(|n| n.as_u64())
            .map_or(1, |n| n.clamp(1, 128) as u32)
    }

    /// The largest output limit the request sets (0: none).
    pub fn max_output(&self) -> u64 {
        [
            &self.max_tokens,
            &self.max_completion_tokens,
            &self.max_output_tokens,
        ]
        .into_iter()
        .filter_map(|v| v.as_ref()?.as_u64())
        .max()
        .unwrap_or(0)
    }

    pub fn client_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            == Some(&Value::Bool(true))
    }
}

/// Works out the edits to the client's body for `up` (as `upstream_model`)
/// and the delivery. `None`: the client's bytes are sent unchanged.
pub fn plan(
    peek: &Peek,
    api: Api,
    up: &UpstreamConf,
    client_model: &str,
    upstream_model: &str,
) -> (Option<Edits>, Delivery) {
    let pass = Delivery::Pass { strip_usage: false };
    if api == Api::Form {
        return (None, pass);
    }
    let client_stream = peek.client_stream();
    let client_usage = peek.client_usage();
    let mut edits = Edits::default();
    if upstream_model != client_model && !upstream_model.is_empty() {
        edits.set("model", json!(upstream_model));
    }
    let delivery = if api == Api::Generic {
        pass
    } else if up.stream_only && !client_stream && api != Api::Other {
        edits.set("stream", json!(true));
        if api.has_stream_options() {
            edits.set("stream_options", json!({"include_usage": true}));
        }
        Delivery::Aggregate(api)
    } else if up.no_stream && client_stream {
        edits.remove("stream");
        edits.remove("stream_options");
        Delivery::Synthesize {
            api,
            include_usage: client_usage,
        }
    } else if client_stream && api.has_stream_options() && !client_usage && !up.no_stream {
        // ask for usage to meter tokens; the client will not see it
        let mut opts = match &peek.stream_options {
            Some(Value::Object(o)) => o.clone(),
            _ => serde_json::Map::new(),
        };
        opts.insert("include_usage".into(), json!(true));
        edits.set("stream_options", Value::Object(opts));
        Delivery::Pass { strip_usage: true }
    } else {
        pass
    };
    ((!edits.is_empty()).then_some(edits), delivery)
}

/// What to do with one pass-through stream event that carries `usage`.
#[derive(Debug, PartialEq)]
pub enum UsageEvent {
    /// Forward as is.
    Keep,
    /// Drop the whole event (a usage-only chunk the client did not ask for).
    Drop,
    /// Forward this re-serialized event instead (usage removed).
    Rewrite(String),
}

/// Decides how to forward a stream event whose data is `v`; meters usage.
pub fn usage_event(v: &Value, strip: bool) -> UsageEvent {
    let has_usage = v.get("usage").is_some_and(|u| !u.is_null());
    if !strip || !has_usage {
        return UsageEvent::Keep;
    }
    let no_choices = match v.get("choices") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if no_choices {
        UsageEvent::Drop
    } else {
        let mut c = v.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("usage");
        }
        UsageEvent::Rewrite(format!("data: {c}\n\n"))
    }
}

/// The usage one event of an Anthropic Messages stream adds: the prompt
/// (cache reads and writes included) from `message_start`, the output from `message_delta` (its running
/// total; the `input_tokens` some send there repeat the start's). `None`
/// for any other event.
pub fn messages_usage(v: &Value) -> Option<crate::metrics::Usage> {
    let count = |u: &Value, k: &str| u.get(k).and_then(Value::as_u64);
    match v.get("type").and_then(Value::as_str)? {
        "message_start" => {
            // every prompt token: those read from and written to the cache too
            let u = &v["message"]["usage"];
            let input = [
                "input_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ]
            .iter()
            .filter_map(|k| count(u, k))
            .reduce(u64::saturating_add);
            Some(crate::metrics::Usage {
                input_tokens: input,
                input_tokens_details: count(u, "cache_read_input_tokens").map(|c| {
                    crate::metrics::TokenDetails {
                        cached_tokens: Some(c),
                    }
                }),
                ..Default::default()
            })
        }
        "message_delta" => Some(crate::metrics::Usage {
            output_tokens: count(&v["usage"], "output_tokens"),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Finds `"usage"` in a byte string (shared: building a finder costs more than a search).
pub fn find_usage_key(hay: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    FINDER.find(hay)
}

/// The top-level `usage` object of a JSON answer, read without parsing the rest.
///
/// Looks at the last `"usage"` followed by `:` (OpenAI puts it last; inside a
/// string the quotes would be escaped, so only a key matches) and parses just the
/// value after it. `None` when there is none or it is `null`; never fails loudly:
/// metering is best effort and the answer was already relayed as is.
pub fn usage_in_json(body: &[u8]) -> Option<crate::metrics::Usage> {
    static FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(b"\"usage\""));
    let mut end = body.len();
    while let Some(at) = FINDER.rfind(&body[..end]) {
        end = at;
        let rest = &body[at + 7..];
        let skip = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let Some(rest) = rest[skip..].strip_prefix(b":") else {
            continue;
        };
        let skip = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let rest = &rest[skip..];
        if let Some(obj) = flat_object(rest) {
            let [prompt, completion, input, output, cached] = &*COUNT_KEYS;
            // the prompt's cached tokens (in `prompt_tokens_details` or
            // `input_tokens_details`: the only count of that name)
            let cached =
                count_in(obj, cached)
                    .filter(|n| *n > 0)
                    .map(|n| crate::metrics::TokenDetails {
                        cached_tokens: Some(n),
                    });
            return Some(crate::metrics::Usage {
                prompt_tokens: count_in(obj, prompt),
                completion_tokens: count_in(obj, completion),
                input_tokens: count_in(obj, input),
                output_tokens: count_in(obj, output),
                prompt_tokens_details: cached,
                input_tokens_details: None,
            });
        }
        // anything unusual (escapes, odd nesting): let serde read it
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<Option<crate::metrics::Usage>>();
        return values.next().and_then(Result::ok).flatten();
    }
    None
}

/// The JSON object at the start of `s` (through its closing brace) when it has
/// no escaped characters, so keys can be found by their bytes; `None` otherwise.
fn flat_object(s: &[u8]) -> Option<&[u8]> {
    if s.first() != Some(&b'{') {
        return None;
    }
    let (mut depth, mut in_str) = (0usize, false);
    for (i, &b) in s.iter().enumerate() {
        match (in_str, b) {
            (_, b'\\') => return None,
            (true, b'"') => in_str = false,
            (true, _) => {}
            (false, b'"') => in_str = true,
            (false, b'{' | b'[') => depth += 1,
            (false, b'}' | b']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Finders for the usage counts' keys (with their quotes), built once.
static COUNT_KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 5]> =
    std::sync::LazyLock::new(|| {
        [
            "\"prompt_tokens\"",
            "\"completion_tokens\"",
            "\"input_tokens\"",
            "\"output_tokens\"",
            "\"cached_tokens\"",
        ]
        .map(memchr::memmem::Finder::new)
    });

/// The unsigned integer after the key `key` finds (the first) and a colon in
/// `obj`. A key name is never followed by `:` inside a string of an
/// escape-free object.
fn count_in(obj: &[u8], key: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let at = key.find(obj)?;
    let rest = &obj[at + key.needle().len()..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn usage_is_read_from_the_last_usage_key_only() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 99}"}}],"usage" : {"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
        let usage = |p, c| crate::metrics::Usage {
            prompt_tokens: p,
            completion_tokens: c,
            ..Default::default()
        };
        assert_eq!(usage_in_json(body), Some(usage(Some(5), Some(3))));
        // the word as a string value (not a key) is skipped
        let body = br#"{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":0}},"tags":["usage"]}"#;
        assert_eq!(usage_in_json(body), Some(usage(Some(1), None)));
        let body = br#"{"usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert_eq!(
            usage_in_json(body).map(|u| (u.input_tokens, u.output_tokens)),
            Some((Some(4), Some(2)))
        );
        assert_eq!(usage_in_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_in_json(br#"{"choices":[]}"#), None);
        assert_eq!(usage_in_json(br#"{"usage":{"prompt_tok"#), None);
        assert_eq!(usage_in_json(b""), None);
        // escapes take the serde path; both paths agree
        let odd = br#"{"usage":{"note":"a "b"","prompt_tokens":7,"completion_tokens":1}}"#;
        assert_eq!(usage_in_json(odd), Some(usage(Some(7), Some(1))));
        let nested = br#"{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        // the prompt's cached tokens are read too (they are priced lower)
        let mut with_cached = usage(Some(10), Some(2));
        with_cached.prompt_tokens_details = Some(crate::metrics::TokenDetails {
            cached_tokens: Some(4),
        });
        assert_eq!(usage_in_json(nested), Some(with_cached));
        let spaced = b"{\"usage\" :\n {\"prompt_tokens\" : 3 ,\"completion_tokens\":\t4}}";
        assert_eq!(usage_in_json(spaced), Some(usage(Some(3), Some(4))));
        assert_eq!(find_usage_key(br#"{"a":1,"usage":2}"#), Some(7));
    }

    fn plan(
        j: &Value,
        api: Api,
        up: &UpstreamConf,
        cm: &str,
        um: &str,
    ) -> (Option<Value>, Delivery) {
        let peek: Peek = serde_json::from_value(j.clone()).unwrap();
        let (edits, d) = super::plan(&peek, api, up, cm, um);
        let body = edits.map(|e| {
            let bytes = e.apply(&serde_json::to_vec(j).unwrap()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        });
        (body, d)
    }

    fn up(extra: &str) -> UpstreamConf {
        let text = format!("upstreams: [{{name: u, base_url: 'http://127.0.0.1:1', {extra}}}]");
        // stream_only / no_stream are validated features now
        Config::from_yaml(&text, &|_| None)
            .unwrap()
            .upstreams
            .remove(0)
    }

    #[test]
    fn unchanged_request_keeps_client_bytes() {
        let j = json!({"model": "m", "messages": []});
        let (b, d) = plan(&j, Api::Chat, &up(""), "m", "m");
        assert!(b.is_none());
        assert_eq!(d, Delivery::Pass { strip_usage: false });
    }

    #[test]
    fn stream_only_aggregates() {
        let j = json!({"model": "m", "messages": []});
        let (b, d) = plan(&j, Api::Chat, &up("stream_only: true"), "m", "x");
        let b = b.unwrap();
        assert_eq!(
            (
                b["stream"].clone(),
                b["stream_options"]["include_usage"].clone(),
                b["model"].clone()
            ),
            (json!(true), json!(true), json!("x"))
        );
        assert_eq!(d, Delivery::Aggregate(Api::Chat));
        let (b, _) = plan(&j, Api::Responses, &up("stream_only: true"), "m", "m");
        assert!(
            b.unwrap().get("stream_options").is_none(),
            "responses take no stream_options"
        );
        let (_, d) = plan(
            &json!({"model": "m", "stream": true}),
            Api::Chat,
            &up("stream_only: true"),
            "m",
            "m",
        );
        assert_eq!(d, Delivery::Pass { strip_usage: true });
    }

    #[test]
    fn no_stream_synthesizes_and_strips_stream_fields() {
        let j = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let (b, d) = plan(&j, Api::Chat, &up("no_stream: true"), "m", "m");
        let b = b.unwrap();
        assert!(b.get("stream").is_none() && b.get("stream_options").is_none());
        assert_eq!(
            d,
            Delivery::Synthesize {
                api: Api::Chat,
                include_usage: true
            }
        );
    }

    #[test]
    fn streams_get_usage_added_and_stripped() {
        let j = json!({"model": "m", "stream": true});
        let (b, d) = plan(&j, Api::Chat, &up(""), "m", "m");
        assert_eq!(b.unwrap()["stream_options"], json!({"include_usage": true}));
        assert_eq!(d, Delivery::Pass { strip_usage: true });
        let j = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        assert_eq!(
            plan(&j, Api::Chat, &up(""), "m", "m"),
            (None, Delivery::Pass { strip_usage: false })
        );
    }

    #[test]
    fn usage_events() {
        let usage_only = json!({"choices": [], "usage": {"total_tokens": 3}});
        assert_eq!(usage_event(&usage_only, true), UsageEvent::Drop);
        assert_eq!(usage_event(&usage_only, false), UsageEvent::Keep);
        assert_eq!(
            usage_event(
                &json!({"choices": null, "usage": {"total_tokens": 1}}),
                true
            ),
            UsageEvent::Drop
        );
        let both = json!({"choices": [{"index": 0}], "usage": {"total_tokens": 3}});
        match usage_event(&both, true) {
            UsageEvent::Rewrite(s) => assert!(!s.contains("usage") && s.starts_with("data: ")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            usage_event(&json!({"choices": [], "usage": null}), true),
            UsageEvent::Keep
        );
    }
}
