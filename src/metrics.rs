//! Every Prometheus metric the gateway exports, defined once. Labels are low
//! cardinality: route class, upstream, key short id (never the key), status class.
//!
//! Registration `expect`s: it fails only for a duplicate metric name, a bug
//! that the first scrape in the tests would show.
#![allow(clippy::expect_used)]

use crate::routes::RouteClass;
use once_cell::sync::Lazy;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::OnceLock;

/// Client requests by route class and status class (`2xx`, `4xx`, …).
pub static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_requests_total",
        "Client requests answered, by route class and status class",
        &["route", "status"]
    )
    .expect("metric registers once")
});

/// Client-visible latency, request start to last byte.
pub static REQUEST_DURATION: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "switchyard_request_duration_seconds",
        "Time from request start to the last byte of the response",
        &["route"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0
        ]
    )
    .expect("metric registers once")
});

/// Upstream calls by upstream, key short id and outcome (`2xx`…`5xx`, `connect_error`, `timeout`).
pub static UPSTREAM_CALLS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_upstream_requests_total",
        "Calls made to upstreams, by upstream, key id and outcome",
        &["upstream", "key", "outcome"]
    )
    .expect("metric registers once")
});

/// Gateway errors by label (see `GatewayError::label`).
pub static ERRORS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_errors_total",
        "Errors answered by the gateway itself, by kind",
        &["kind"]
    )
    .expect("metric registers once")
});

/// Tokens reported by upstreams (`usage`), by upstream and kind (`prompt`, `completion`).
pub static TOKENS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_tokens_total",
        "Tokens reported in upstream usage, by upstream and kind",
        &["upstream", "kind"]
    )
    .expect("metric registers once")
});

/// Streams transformed by the gateway, by mode (`aggregated`, `synthesized`).
pub static TRANSFORMS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_stream_transforms_total",
        "Answers converted between stream and JSON, by mode",
        &["mode"]
    )
    .expect("metric registers once")
});

/// Broken streams the gateway tried to continue, by `mode` (`prefill`,
/// `restart`) and `result` (`continued`, `diverged`).
pub static CONTINUATIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_stream_continuations_total",
        "Broken streams continued on another candidate, by mode and result",
        &["mode", "result"]
    )
    .expect("metric registers once")
});

/// Stream events that were not valid JSON, skipped, by mode (`passthrough`, `aggregated`).
pub static MALFORMED_EVENTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_stream_malformed_events_total",
        "Upstream stream events that were not valid JSON and were skipped, by mode",
        &["mode"]
    )
    .expect("metric registers once")
});

/// Token counters of one upstream, resolved on first use (the hot path skips
/// the label lookup).
#[derive(Default)]
pub struct TokenCounters {
    prompt: OnceLock<IntCounter>,
    completion: OnceLock<IntCounter>,
}

/// Token counts of one answer's `usage` (chat/completions or Responses naming).
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

impl Usage {
    /// Prompt tokens, in either naming.
    pub fn prompt(&self) -> Option<u64> {
        self.prompt_tokens.or(self.input_tokens)
    }

    /// Output tokens, in either naming.
    pub fn completion(&self) -> Option<u64> {
        self.completion_tokens.or(self.output_tokens)
    }

    /// Prompt plus output tokens; `None` when neither is given.
    pub fn total(&self) -> Option<u64> {
        match (self.prompt(), self.completion()) {
            (None, None) => None,
            (p, c) => Some(p.unwrap_or(0).saturating_add(c.unwrap_or(0))),
        }
    }

    pub fn from_value(usage: &serde_json::Value) -> Usage {
        let get = |k: &str| usage.get(k).and_then(|v| v.as_u64());
        Usage {
            prompt_tokens: get("prompt_tokens"),
            completion_tokens: get("completion_tokens"),
            input_tokens: get("input_tokens"),
            output_tokens: get("output_tokens"),
        }
    }
}

impl TokenCounters {
    /// Records a `usage` object (chat/completions or Responses naming).
    pub fn record(&self, upstream: &str, usage: &serde_json::Value) {
        self.add(upstream, Usage::from_value(usage));
    }

    pub fn add(&self, upstream: &str, u: Usage) {
        if let Some(p) = u.prompt() {
            self.prompt
                .get_or_init(|| TOKENS.with_label_values(&[upstream, "prompt"]))
                .inc_by(p);
        }
        if let Some(c) = u.completion() {
            self.completion
                .get_or_init(|| TOKENS.with_label_values(&[upstream, "completion"]))
                .inc_by(c);
        }
    }
}

/// What one upstream call led to: the `outcome` label of
/// `switchyard_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    S1xx,
    S2xx,
    S3xx,
    /// A 4xx other than 429.
    S4xx,
    /// 429: rate limited.
    RateLimited,
    S5xx,
    /// No answer: the connection could not be made or broke before a head.
    ConnectError,
    /// No answer in time.
    Timeout,
    /// A status outside 100..=599.
    Invalid,
}

impl CallOutcome {
    const COUNT: usize = 9;

    /// The outcome of an answer with this status.
    pub fn from_status(status: u16) -> CallOutcome {
        match status {
            429 => CallOutcome::RateLimited,
            100..=199 => CallOutcome::S1xx,
            200..=299 => CallOutcome::S2xx,
            300..=399 => CallOutcome::S3xx,
            400..=499 => CallOutcome::S4xx,
            500..=599 => CallOutcome::S5xx,
            _ => CallOutcome::Invalid,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::S1xx => "1xx",
            CallOutcome::S2xx => "2xx",
            CallOutcome::S3xx => "3xx",
            CallOutcome::S4xx => "4xx",
            CallOutcome::RateLimited => "429",
            CallOutcome::S5xx => "5xx",
            CallOutcome::ConnectError => "connect_error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Invalid => "none",
        }
    }
}

/// `switchyard_upstream_requests_total` counters of one key (or of an upstream
/// without keys), resolved on first use.
#[derive(Default)]
pub struct CallCounters([OnceLock<IntCounter>; CallOutcome::COUNT]);

impl CallCounters {
    pub fn inc(&self, upstream: &str, key: &str, outcome: CallOutcome) {
        self.0[outcome as usize]
            .get_or_init(|| UPSTREAM_CALLS.with_label_values(&[upstream, key, outcome.as_str()]))
            .inc();
    }
}

/// Status classes as metric labels; [`status_class_index`] maps a code to one.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

#[derive(Default)]
struct RouteCounters {
    duration: OnceLock<Histogram>,
    by_status: [OnceLock<IntCounter>; STATUS_CLASSES.len()],
}

static ROUTE_COUNTERS: Lazy<[RouteCounters; RouteClass::ALL.len()]> = Lazy::new(Default::default);

/// Counts one answered client request and its latency.
pub fn observe_request(route: RouteClass, status: u16, seconds: f64) {
    let s = status_class_index(status);
    let c = &ROUTE_COUNTERS[route.index()];
    c.by_status[s]
        .get_or_init(|| REQUESTS.with_label_values(&[route.as_str(), STATUS_CLASSES[s]]))
        .inc();
    c.duration
        .get_or_init(|| REQUEST_DURATION.with_label_values(&[route.as_str()]))
        .observe(seconds);
}

/// Client requests being handled right now.
pub static IN_FLIGHT: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "switchyard_in_flight_requests",
        "Client requests being handled now"
    )
    .expect("metric registers once")
});

/// 1 while an upstream is in rotation, 0 while its circuit is open.
pub static UPSTREAM_HEALTHY: Lazy<IntGaugeVec> = Lazy::new(|| {
    register_int_gauge_vec!(
        "switchyard_upstream_healthy",
        "1 while the upstream is in rotation, 0 while its circuit is open (failures or a failed health check)",
        &["upstream"]
    )
    .expect("metric registers once")
});

/// Calls to upstreams open right now.
pub static UPSTREAM_ACTIVE: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!("switchyard_upstream_active", "Upstream calls open now")
        .expect("metric registers once")
});

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// Index into [`STATUS_CLASSES`] for a status code.
fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// Forces registration of every metric so `/metrics` lists them from the start.
pub fn init() {
    Lazy::force(&REQUESTS);
    Lazy::force(&REQUEST_DURATION);
    Lazy::force(&UPSTREAM_CALLS);
    Lazy::force(&ERRORS);
    Lazy::force(&TOKENS);
    Lazy::force(&TRANSFORMS);
    Lazy::force(&MALFORMED_EVENTS);
    Lazy::force(&CONTINUATIONS);
    Lazy::force(&UPSTREAM_HEALTHY);
    Lazy::force(&IN_FLIGHT);
    Lazy::force(&UPSTREAM_ACTIVE);
    Lazy::force(&QUEUE_WAITING);
    Lazy::force(&QUEUE_WAIT);
    Lazy::force(&USAGE_DROPPED);
}

/// The Prometheus text exposition of every registered metric (process_* included).
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut buf) {
        log::error!("metrics encoding failed: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Usage records dropped because the store's writer fell far behind.
pub static USAGE_DROPPED: Lazy<prometheus::IntCounter> = Lazy::new(|| {
    prometheus::register_int_counter!(
        "switchyard_usage_dropped_total",
        "Usage records dropped because the usage store's writer fell behind"
    )
    .expect("metric registers once")
});

/// Calls waiting now for a concurrency slot or their model's turn.
pub static QUEUE_WAITING: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "switchyard_queue_waiting",
        "Calls waiting now for an upstream concurrency slot or their model's pacing turn"
    )
    .expect("metric registers once")
});

/// How long calls waited in the queue (those that had to wait).
pub static QUEUE_WAIT: Lazy<prometheus::Histogram> = Lazy::new(|| {
    prometheus::register_histogram!(
        "switchyard_queue_wait_seconds",
        "Time a call waited in the queue for a concurrency slot or its pacing turn",
        vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
    )
    .expect("metric registers once")
});

#[cfg(test)]
mod tests {
    use super::status_class;

    #[test]
    fn status_classes_cover_every_code() {
        let cases = [
            (0, "none"),
            (100, "1xx"),
            (199, "1xx"),
            (200, "2xx"),
            (304, "3xx"),
            (429, "4xx"),
            (500, "5xx"),
            (599, "5xx"),
            (600, "none"),
            (999, "none"),
        ];
        for (code, class) in cases {
            assert_eq!(status_class(code), class, "status {code}");
        }
    }
}
