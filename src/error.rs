//! The one error type of the request path. Each variant knows its HTTP status,
//! its OpenAI-shaped body, whether another upstream/key may be tried, and the
//! label it is counted under in metrics. Messages never contain a secret.

use bytes::Bytes;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// 400: body is not JSON or not an object.
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// 400: request lacks a usable `model`.
    #[error("you must provide a model parameter (a non-empty string)")]
    MissingModel,
    /// 400: other malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong client key.
    #[error("Incorrect or missing API key. Send `Authorization: Bearer <key>` with a client key configured for this gateway.")]
    Unauthorized,
    /// 401: the client key's `expires` has passed.
    #[error("This API key expired at {at}. Ask the gateway's operator for a new one.")]
    KeyExpired { at: String },
    /// 403: the client may not use this model.
    #[error("This client key is not allowed to use the model `{model}`; it may use {allowed} (GET /v1/models lists them).")]
    ModelNotAllowed { model: String, allowed: String },
    /// 403: a client limited to some models asked for a path that does not
    /// name its model (files, batches, …) and its `endpoints` do not allow.
    #[error("This client key may only use its models; {path} is not among its `endpoints`.")]
    EndpointNotAllowed { path: String },
    /// 403: the caller's address is refused by `server.allow_ips` /
    /// `server.deny_ips` or its client's `allow_ips`.
    #[error("Requests from this address are not allowed.")]
    AddressNotAllowed,
    /// 403: no `clients` configured and the caller is not on loopback.
    #[error("This gateway has no client keys configured, so it only serves callers on loopback. Add a `clients:` section to its config.")]
    LoopbackOnly,
    /// 404: no upstream serves this model.
    #[error("The model `{model}` does not exist or no upstream serves it.{}", available_list(.available))]
    ModelNotFound {
        model: String,
        available: Vec<String>,
    },
    /// 404: unknown path.
    #[error("Unknown path {path}.")]
    NotFound { path: String },
    /// 400: a path that could mean another path (`..`, encoded `/`, …).
    #[error("The path {path:?} is not a valid API path (no `.` or `..` segments, encoded slashes or backslashes).")]
    InvalidPath { path: String },
    /// 403: the old proxy's `/v1/tokens/*` on the API listener, from a caller
    /// that is neither on loopback nor holds the admin token.
    #[error("This endpoint needs the admin token (`Authorization: Bearer <admin.token>`) or a caller on loopback.")]
    AdminOnly,
    /// 405: wrong method for a known path; `allow` lists the methods that work.
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    /// 408: the request body stalled longer than `timeouts.idle`.
    #[error("The request body stalled: nothing arrived for {}.", crate::config::units::fmt_duration(*.after))]
    RequestTimeout { after: Duration },
    /// 413: body above `limits.max_request_body`.
    #[error("Request body is larger than this gateway accepts ({}; limits.max_request_body).", crate::config::units::fmt_size(*.limit))]
    PayloadTooLarge { limit: u64 },
    /// 429: gateway-side limit or every key exhausted.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// 429: a client over its `rpm`/`tpm` (`who` is "Client `name`"), or
    /// the whole gateway over `limits.rpm`/`limits.tpm` ("The gateway").
    #[error("{who} is over its rate limit of {limit} {} per minute ({setting}); retry in {}s.", .unit.as_str(), retry_secs(*.retry_after))]
    ClientRateLimited {
        who: String,
        setting: &'static str,
        unit: Unit,
        limit: u64,
        retry_after: Duration,
    },
    /// 429: a client's quota (`clients[].quotas`) or the gateway's budget
    /// (`limits.budget`) for this period is used; no retry helps before it resets.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        setting: &'static str,
        retry_after: Duration,
    },
    /// 429: a request whose estimated tokens exceed a whole `tpm` limit.
    #[error("Request too large for {who}: about {estimated} tokens (prompt plus max output), more than its rate limit of {limit} tokens per minute ({setting}). Send a smaller request or a lower max_tokens.")]
    TooLargeForLimit {
        who: String,
        setting: &'static str,
        limit: u64,
        estimated: u64,
    },
    /// 429: every queue place (`limits.queue`) is taken.
    #[error("The gateway is at its upstream concurrency limit and its queue is full ({limit} calls waiting; limits.queue); retry shortly.")]
    QueueFull { limit: u32 },
    /// 429: waited `limits.queue_timeout` for a slot or a model's turn.
    #[error("Waited {} in the queue for {what} and gave up (limits.queue_timeout); retry later.", crate::config::units::fmt_duration(*.waited))]
    QueueTimeout { waited: Duration, what: String },
    /// 400: the prompt is larger than the model's context window (no
    /// configured fallback takes it).
    #[error("This model's maximum context length is {context} tokens, and your messages are about {estimated} tokens (model `{model}`; estimated by the gateway, no upstream was called). Shorten the messages or use a model with a larger context.")]
    ContextTooLong {
        model: String,
        estimated: u64,
        context: u64,
    },
    /// 429: a client with `max_concurrent` calls in flight already.
    #[error("Client `{client}` already has {limit} calls in flight (clients[].max_concurrent); retry when one ends.")]
    TooManyInFlight { client: String, limit: u32 },
    /// 503: the fleet's store is down and `state.redis.{what}.on_store_failure`
    /// is `refuse`.
    #[error("The gateway's shared store is not answering, and this gateway refuses calls without it (state.redis.{what}.on_store_failure: refuse); retry shortly.")]
    StoreUnavailable { what: &'static str },
    /// 502: could not connect to / talk to the upstream.
    #[error("Upstream `{upstream}` is unreachable: {detail}")]
    UpstreamUnreachable { upstream: String, detail: String },
    /// 502: the upstream broke the protocol or the stream.
    #[error("Upstream `{upstream}` failed: {detail}")]
    UpstreamProtocol { upstream: String, detail: String },
    /// 504: the upstream did not answer in time.
    #[error("Upstream `{upstream}` timed out: no {what} within {}.", crate::config::units::fmt_duration(*.after))]
    UpstreamTimeout {
        upstream: String,
        what: &'static str,
        after: Duration,
    },
    /// 503: every key for the model is parked/disabled.
    #[error("{message}")]
    NoKeys { message: String },
    /// 503: the gateway is shutting down.
    #[error("The gateway is shutting down; retry shortly.")]
    ShuttingDown,
    /// 500: a bug.
    #[error("Internal gateway error: {0}")]
    Internal(String),
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    pub fn as_str(&self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// Whole seconds until `d` has passed (rounded up: a client that waits that
/// long finds the slot free).
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// ` Available models: a, b.` (empty when there are none).
fn available_list(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!(" Available models: {}.", available.join(", "))
    }
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        use GatewayError::*;
        match self {
            InvalidJson(_)
            | MissingModel
            | BadRequest(_)
            | InvalidPath { .. }
            | ContextTooLong { .. } => 400,
            Unauthorized | KeyExpired { .. } => 401,
            ModelNotAllowed { .. }
            | EndpointNotAllowed { .. }
            | AddressNotAllowed
            | LoopbackOnly
            | AdminOnly => 403,
            RequestTimeout { .. } => 408,
            ModelNotFound { .. } | NotFound { .. } => 404,
            MethodNotAllowed { .. } => 405,
            PayloadTooLarge { .. } => 413,
            RateLimited { .. }
            | ClientRateLimited { .. }
            | TooManyInFlight { .. }
            | TooLargeForLimit { .. }
            | QuotaExceeded { .. }
            | QueueFull { .. }
            | QueueTimeout { .. } => 429,
            UpstreamUnreachable { .. } | UpstreamProtocol { .. } => 502,
            ShuttingDown | NoKeys { .. } | StoreUnavailable { .. } => 503,
            UpstreamTimeout { .. } => 504,
            Internal(_) => 500,
        }
    }

    /// May the same request be tried on another key or upstream?
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::UpstreamUnreachable { .. }
                | GatewayError::UpstreamProtocol { .. }
                | GatewayError::UpstreamTimeout { .. }
        )
    }

    /// The limit that refused the request, for `switchyard_rate_limited_total`
    /// (`None`: not a gateway 429).
    pub fn limit(&self) -> Option<&'static str> {
        use GatewayError::*;
        Some(match self {
            ClientRateLimited { setting, .. } | TooLargeForLimit { setting, .. } => {
                match *setting {
                    "clients[].rpm" => "clients.rpm",
                    "clients[].tpm" => "clients.tpm",
                    other => other,
                }
            }
            TooManyInFlight { .. } => "clients.max_concurrent",
            QuotaExceeded { setting, .. } => setting,
            QueueFull { .. } => "limits.queue",
            QueueTimeout { .. } => "limits.queue_timeout",
            // every key cooling, or every upstream at its own rpm/tpm
            RateLimited { .. } => "upstream",
            _ => return None,
        })
    }

    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidJson(_) => "invalid_json",
            MissingModel => "missing_model",
            BadRequest(_) => "bad_request",
            InvalidPath { .. } => "invalid_path",
            AdminOnly => "admin_only",
            RequestTimeout { .. } => "request_timeout",
            Unauthorized => "unauthorized",
            KeyExpired { .. } => "key_expired",
            ModelNotAllowed { .. } => "model_not_allowed",
            EndpointNotAllowed { .. } => "endpoint_not_allowed",
            AddressNotAllowed => "address_not_allowed",
            LoopbackOnly => "loopback_only",
            ModelNotFound { .. } => "model_not_found",
            NotFound { .. } => "not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            PayloadTooLarge { .. } => "payload_too_large",
            RateLimited { .. } => "rate_limited",
            ClientRateLimited {
                unit: Unit::Requests,
                ..
            } => "rpm_limited",
            ClientRateLimited {
                unit: Unit::Tokens, ..
            }
            | TooLargeForLimit { .. } => "tpm_limited",
            QueueFull { .. } => "queue_full",
            QueueTimeout { .. } => "queue_timeout",
            ContextTooLong { .. } => "context_length_exceeded",
            TooManyInFlight { .. } => "concurrency_limited",
            QuotaExceeded { .. } => "quota_exceeded",
            StoreUnavailable { .. } => "store_unavailable",
            UpstreamUnreachable { .. } => "upstream_unreachable",
            UpstreamProtocol { .. } => "upstream_protocol",
            UpstreamTimeout { .. } => "upstream_timeout",
            ShuttingDown => "shutting_down",
            NoKeys { .. } => "no_available_keys",
            Internal(_) => "internal",
        }
    }

    fn type_and_code(&self) -> (&'static str, &'static str) {
        use GatewayError::*;
        match self {
            InvalidJson(_) => ("invalid_request_error", "invalid_json"),
            MissingModel => ("invalid_request_error", "missing_model"),
            BadRequest(_) => ("invalid_request_error", "bad_request"),
            InvalidPath { .. } => ("invalid_request_error", "invalid_path"),
            AdminOnly => ("invalid_request_error", "forbidden"),
            RequestTimeout { .. } => ("invalid_request_error", "request_timeout"),
            Unauthorized => ("invalid_request_error", "invalid_api_key"),
            KeyExpired { .. } => ("invalid_request_error", "expired_api_key"),
            ModelNotAllowed { .. } => ("invalid_request_error", "model_not_allowed"),
            EndpointNotAllowed { .. } => ("invalid_request_error", "endpoint_not_allowed"),
            AddressNotAllowed => ("invalid_request_error", "address_not_allowed"),
            LoopbackOnly => ("invalid_request_error", "forbidden"),
            ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
            NotFound { .. } => ("invalid_request_error", "not_found"),
            MethodNotAllowed { .. } => ("invalid_request_error", "method_not_allowed"),
            PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            RateLimited { .. }
            | ClientRateLimited { .. }
            | TooManyInFlight { .. }
            | TooLargeForLimit { .. }
            | QueueFull { .. }
            | QueueTimeout { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            ContextTooLong { .. } => ("invalid_request_error", "context_length_exceeded"),
            QuotaExceeded { .. } => ("insufficient_quota", "insufficient_quota"),
            UpstreamUnreachable { .. } => ("upstream_error", "upstream_unreachable"),
            UpstreamProtocol { .. } => ("upstream_error", "upstream_error"),
            UpstreamTimeout { .. } => ("upstream_error", "upstream_timeout"),
            ShuttingDown => ("server_error", "shutting_down"),
            NoKeys { .. } => ("server_error", "no_available_keys"),
            StoreUnavailable { .. } => ("server_error", "store_unavailable"),
            Internal(_) => ("server_error", "internal_error"),
        }
    }

    /// The message of the OpenAI error body (never contains a secret).
    /// The message for the client and the log. Variants that quote an
    /// upstream's words have every configured key scrubbed from them (an
    /// upstream that echoes the key it was sent does not leak it).
    pub fn message(&self) -> String {
        use GatewayError::*;
        let text = self.to_string();
        match self {
            UpstreamProtocol { .. } | UpstreamUnreachable { .. } | Internal(_) => {
                crate::logging::scrub(&text).into_owned()
            }
            _ => text,
        }
    }

    /// How loud the gateway logs this error: client mistakes are routine
    /// (debug), limits and upstream trouble deserve attention (warn), bugs error.
    pub fn log_level(&self) -> log::Level {
        use GatewayError::*;
        match self {
            InvalidJson(_)
            | MissingModel
            | BadRequest(_)
            | InvalidPath { .. }
            | AdminOnly
            | RequestTimeout { .. }
            | Unauthorized
            | KeyExpired { .. }
            | ModelNotAllowed { .. }
            | EndpointNotAllowed { .. }
            | AddressNotAllowed
            | LoopbackOnly
            | ModelNotFound { .. }
            | NotFound { .. }
            | MethodNotAllowed { .. }
            | PayloadTooLarge { .. }
            | ContextTooLong { .. } => log::Level::Debug,
            RateLimited { .. }
            | ClientRateLimited { .. }
            | TooLargeForLimit { .. }
            | QueueFull { .. }
            | QueueTimeout { .. }
            | TooManyInFlight { .. }
            | QuotaExceeded { .. }
            | ShuttingDown => log::Level::Info,
            UpstreamUnreachable { .. }
            | UpstreamProtocol { .. }
            | UpstreamTimeout { .. }
            | NoKeys { .. }
            | StoreUnavailable { .. } => log::Level::Warn,
            Internal(_) => log::Level::Error,
        }
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        let (ty, code) = self.type_and_code();
        let param = match self {
            GatewayError::MissingModel | GatewayError::ModelNotFound { .. } => {
                serde_json::Value::String("model".into())
            }
            GatewayError::ContextTooLong { .. } => serde_json::Value::String("messages".into()),
            _ => serde_json::Value::Null,
        };
        let v = serde_json::json!({
            "error": {"message": self.message(), "type": ty, "param": param, "code": code}
        });
        Bytes::from(v.to_string())
    }

    /// `Allow`, for 405s.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            GatewayError::MethodNotAllowed { allow, .. } => Some(allow),
            _ => None,
        }
    }

    /// `Retry-After` seconds, for 429s.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after, .. }
            | GatewayError::ClientRateLimited { retry_after, .. }
            | GatewayError::QuotaExceeded { retry_after, .. } => Some(retry_secs(*retry_after)),
            GatewayError::TooManyInFlight { .. }
            | GatewayError::QueueFull { .. }
            | GatewayError::QueueTimeout { .. }
            | GatewayError::StoreUnavailable { .. } => Some(1),
            _ => None,
        }
    }

    /// OpenAI's `x-ratelimit-*-requests` (or `-tokens`) headers for a limit
    /// that refused the request: (limit, remaining 0, reset like `41s`).
    pub fn rate_limit_headers(&self) -> Option<[(&'static str, String); 3]> {
        match self {
            GatewayError::ClientRateLimited {
                limit,
                retry_after,
                unit,
                ..
            } => {
                let [l, r, t] = match unit {
                    Unit::Requests => [
                        "x-ratelimit-limit-requests",
                        "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests",
                    ],
                    Unit::Tokens => [
                        "x-ratelimit-limit-tokens",
                        "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens",
                    ],
                };
                Some([
                    (l, limit.to_string()),
                    (r, "0".into()),
                    (t, format!("{}s", retry_secs(*retry_after))),
                ])
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_status() {
        let e = GatewayError::ModelNotFound {
            model: "x".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("a, b"));
        assert!(!e.retryable());
        let t = GatewayError::UpstreamTimeout {
            upstream: "u".into(),
            what: "response",
            after: Duration::from_secs(2),
        };
        assert_eq!(
            (t.status(), t.retryable(), t.label()),
            (504, true, "upstream_timeout")
        );
        let r = GatewayError::RateLimited {
            message: "m".into(),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(r.retry_after(), Some(2));
        assert_eq!(r.log_level(), log::Level::Info);
        assert_eq!(GatewayError::MissingModel.log_level(), log::Level::Debug);
        assert_eq!(t.log_level(), log::Level::Warn);
        let none = GatewayError::ModelNotFound {
            model: "x".into(),
            available: vec![],
        };
        assert_eq!(
            none.message(),
            "The model `x` does not exist or no upstream serves it."
        );
    }
}
