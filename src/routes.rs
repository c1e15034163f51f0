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
}

impl RouteClass {
    /// Every class, in label order (metrics pre-resolve one series set each).
    pub const ALL: [RouteClass; 8] = [
        RouteClass::Chat,
        RouteClass::Completions,
        RouteClass::Embeddings,
        RouteClass::Responses,
        RouteClass::Models,
        RouteClass::Opaque,
        RouteClass::Health,
        RouteClass::Other,
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
        }
    }

    /// Position in [`RouteClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which OpenAI API an understood path is (decides stream edits and merging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Responses,
    /// Understood (routed by model, sent whole) but never converted: embeddings.
    Other,
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

/// The understood endpoint at exactly `path`, if any.
pub fn understood(path: &str) -> Option<&'static Endpoint> {
    UNDERSTOOD.iter().find(|e| e.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let e = understood("/v1/chat/completions").unwrap();
        assert_eq!(
            (e.suffix(), e.class, e.api),
            ("/chat/completions", RouteClass::Chat, Api::Chat)
        );
        assert_eq!(understood("/v1/embeddings").unwrap().api, Api::Other);
        assert!(understood("/v1/chat/completions/").is_none());
        for (i, c) in RouteClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
