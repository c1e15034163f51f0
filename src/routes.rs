//! The API listener's paths, defined once: which route class (metrics label)
//! and which OpenAI API each understood path is. Everything else under `/v1/`
//! is the opaque lane.

/// A request's route class: the `route` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    Opaque,
    Health,
    Other,
    /// Anthropic's Messages API (`/v1/messages`), served as chat.
    Messages,
}

impl RouteClass {
    /// Every class, in label order (metrics pre-resolve one series set each).
    pub const ALL: [RouteClass; 9] = [
        RouteClass::Chat,
        RouteClass::Completions,
        RouteClass::Embeddings,
        RouteClass::Responses,
        RouteClass::Models,
        RouteClass::Opaque,
        RouteClass::Health,
        RouteClass::Other,
        RouteClass::Messages,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Chat => "chat",
            RouteClass::Completions => "completions",
            RouteClass::Embeddings => "embeddings",
            RouteClass::Responses => "responses",
            RouteClass::Models => "models",
            RouteClass::Opaque => "opaque",
            RouteClass::Health => "health",
            RouteClass::Other => "other",
            RouteClass::Messages => "messages",
        }
    }

    /// Position in [`RouteClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// `GET /v1/me`: what a client may know of itself (answered by the gateway).
pub const ME: &str = "/v1/me";

/// Which OpenAI API an understood path is (decides stream edits and merging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Responses,
    /// Understood (routed by model, sent whole) but never converted: embeddings.
    Other,
    /// Any other JSON body that names a model (`/v1/images/generations`, …):
    /// routed by model, only the model renamed.
    Generic,
    /// A multipart form (`/v1/audio/transcriptions`): routed by its `model`
    /// part, sent exactly as received.
    Form,
}

impl Api {
    /// Whether the API takes `stream_options` (chat and completions do).
    pub fn has_stream_options(self) -> bool {
        matches!(self, Api::Chat | Api::Completions)
    }
}

/// One JSON endpoint the gateway understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The client-facing path, `/v1/chat/completions`.
    pub path: &'static str,
    pub class: RouteClass,
    pub api: Api,
}

impl Endpoint {
    /// The path after `/v1` (what is appended to an upstream's base path).
    pub fn suffix(&self) -> &'static str {
        &self.path["/v1".len()..]
    }
}

/// The understood lane: POST only, read whole, routed by `model`.
pub const UNDERSTOOD: &[Endpoint] = &[
    Endpoint {
        path: "/v1/chat/completions",
        class: RouteClass::Chat,
        api: Api::Chat,
    },
    Endpoint {
        path: "/v1/completions",
        class: RouteClass::Completions,
        api: Api::Completions,
    },
    Endpoint {
        path: "/v1/embeddings",
        class: RouteClass::Embeddings,
        api: Api::Other,
    },
    Endpoint {
        path: "/v1/responses",
        class: RouteClass::Responses,
        api: Api::Responses,
    },
];

/// Chat completions (a translated call's endpoint).
pub const CHAT: Endpoint = UNDERSTOOD[0];

/// Anthropic's Messages API as a `kind: anthropic` upstream takes it: the
/// client's body sent on (only the model renamed), its answer relayed.
pub const MESSAGES: Endpoint = Endpoint {
    path: "/v1/messages",
    class: RouteClass::Messages,
    api: Api::Generic,
};

/// The understood endpoint `path` names, if any. `path` is canonical (see
/// [`canonical_path`]); ASCII case and one trailing slash are ignored, as
/// many web frameworks ignore them, so no spelling reaches an upstream's chat
/// route past the gateway's checks.
pub fn understood(path: &str) -> Option<&'static Endpoint> {
    let path = path.strip_suffix('/').unwrap_or(path);
    UNDERSTOOD
        .iter()
        .find(|e| e.path.eq_ignore_ascii_case(path))
}

/// Endpoints outside the understood ones whose body's `model` is the model
/// that runs (images, audio, moderations): a client limited to some models
/// may use them with one of its models. Every other path that is not
/// understood (files, batches, fine-tuning, assistants, stored responses)
/// needs the client's `endpoints`.
const RUNS_NAMED_MODEL: &[&str] = &[
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/moderations",
];

/// Whether `path` (canonical) runs the model its body names (see
/// [`RUNS_NAMED_MODEL`]); case and one trailing slash ignored.
pub fn runs_named_model(path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    RUNS_NAMED_MODEL
        .iter()
        .any(|p| p.eq_ignore_ascii_case(path))
}

/// `/v1/models` (`Some(None)`) or `/v1/models/{id}` (`Some(Some(id))`),
/// the prefix matched ignoring case and a trailing slash; `None`: neither.
pub fn models_path(path: &str) -> Option<Option<&str>> {
    const PREFIX: &str = "/v1/models";
    let head = path.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    match &path[PREFIX.len()..] {
        "" | "/" => Some(None),
        rest => rest.strip_prefix('/').map(Some),
    }
}

/// The path to route and forward, or `None` when it is unsafe: every
/// percent-escape of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is
/// decoded and the others are written in upper case (RFC 3986 §6.2.2), so
/// `/v1/chat/%63ompletions` is `/v1/chat/completions`; then [`safe_path`]
/// must hold. A path with nothing to normalize is borrowed.
pub fn canonical_path(path: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !safe_path(path) {
        return None;
    }
    if !path.contains('%') {
        return Some(std::borrow::Cow::Borrowed(path));
    }
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(char::from(b[i]));
            i += 1;
            continue;
        }
        // safe_path checked every escape has two hex digits
        let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
        let c = u8::from_str_radix(hex, 16).ok()?;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push_str(&hex.to_ascii_uppercase());
        }
        i += 3;
    }
    // decoding may have made a `.` or `..` segment: check again
    safe_path(&out).then_some(std::borrow::Cow::Owned(out))
}

/// Whether an API path is safe to forward: no `.` or `..` segment (raw or
/// percent-encoded), no encoded `/` or `\` inside a segment, no backslash, no
/// empty segment, no control or non-ASCII byte, no bad percent escape. An
/// upstream (or a proxy in front of it) may normalize what the gateway did not,
/// so anything it could read as a different path is refused.
pub fn safe_path(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.iter().any(|&c| c == b'\\' || c <= b' ' || c >= 0x7f) {
        return false;
    }
    // every segment after the leading slash (a trailing slash leaves an empty last one)
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            if segments.peek().is_some() {
                return false;
            }
            continue;
        }
        let Some(decoded) = percent_decode(seg) else {
            return false;
        };
        if *decoded == *b"."
            || *decoded == *b".."
            || decoded.contains(&b'/')
            || decoded.contains(&b'\\')
        {
            return false;
        }
    }
    true
}

/// `%XX`-decodes one path segment (borrowed when it has no escape); `None`
/// for a bad escape.
fn percent_decode(seg: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
    let b = seg.as_bytes();
    if !b.contains(&b'%') {
        return Some(std::borrow::Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_mean_another_path_are_refused() {
        for bad in [
            "/v1/../../etc/passwd",
            "/v1/..",
            "/v1/./x/../y",
            "/v1/%2e%2e/secret",
            "/v1/%2E%2e/secret",
            "/v1/.%2e/x",
            "/v1/%2e/x",
            "/v1/files%2f..%2fx",
            "/v1/files%2Fx",
            "/v1/a%5cb",
            "/v1/a\\b",
            "/v1//files",
            "/v1/files/%zz",
            "/v1/files/%2",
            "/v1/files\u{7f}",
            "v1/files",
            "",
        ] {
            assert!(!safe_path(bad), "{bad:?} must be refused");
        }
        for good in [
            "/v1/files",
            "/v1/files/",
            "/v1/files/file-abc.jsonl",
            "/v1/files/a%20b",
            "/v1/threads/thread_1/messages",
            "/v1/models/gpt-4o...x",
        ] {
            assert!(safe_path(good), "{good:?} is fine");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_routing() {
        for (raw, canon) in [
            ("/v1/chat/%63ompletions", "/v1/chat/completions"),
            ("/v1/chat/completion%73", "/v1/chat/completions"),
            ("/v1/%65mbeddings", "/v1/embeddings"),
            ("/v1/files/a%20b", "/v1/files/a%20b"),
            ("/v1/files/a%3fb%7E", "/v1/files/a%3Fb~"),
            ("/v1/files", "/v1/files"),
        ] {
            assert_eq!(canonical_path(raw).as_deref(), Some(canon), "{raw}");
        }
        for bad in ["/v1/%2e%2e/x", "/v1/files/%zz", "/v1/a%2fb", "/v1/%2E/x"] {
            assert_eq!(canonical_path(bad), None, "{bad}");
        }
        for spelled in [
            "/v1/chat/completions/",
            "/v1/Chat/Completions",
            "/V1/CHAT/COMPLETIONS",
        ] {
            assert_eq!(understood(spelled).map(|e| e.class), Some(RouteClass::Chat));
        }
        assert!(understood("/v1/chat/completions//").is_none());
        assert!(runs_named_model("/v1/Images/Generations/"));
        assert_eq!(models_path("/v1/Models/"), Some(None));
        assert_eq!(models_path("/v1/MODELS/gpt-4o"), Some(Some("gpt-4o")));
        assert_eq!(models_path("/v1/modelsx"), None);
        assert_eq!(models_path("/v1/mod"), None);
        assert!(!runs_named_model("/v1/batches"));
    }

    proptest::proptest! {
        #[test]
        fn every_escape_spelling_of_chat_routes_to_chat(mask in proptest::collection::vec(proptest::bool::ANY, 20)) {
            let path = "/v1/chat/completions";
            let spelled: String = path
                .chars()
                .zip(mask.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &esc)| if esc && c != '/' { format!("%{:02x}", c as u8) } else { c.to_string() })
                .collect();
            let c = canonical_path(&spelled);
            proptest::prop_assert_eq!(c.as_deref(), Some(path));
        }
    }

    #[test]
    fn table() {
        let e = understood("/v1/chat/completions").unwrap();
        assert_eq!(
            (e.suffix(), e.class, e.api),
            ("/chat/completions", RouteClass::Chat, Api::Chat)
        );
        assert_eq!(understood("/v1/embeddings").unwrap().api, Api::Other);
        for (i, c) in RouteClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
