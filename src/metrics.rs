//! Every Prometheus metric the gateway exports, defined once. Labels are low
//! cardinality: route class, upstream, key short id (never the key), status class.

use once_cell::sync::Lazy;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, HistogramVec,
    IntCounterVec, IntGauge,
};

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

/// Records a `usage` object (chat/completions or Responses naming).
pub fn record_usage(upstream: &str, usage: &serde_json::Value) {
    let get = |a: &str, b: &str| {
        usage
            .get(a)
            .or_else(|| usage.get(b))
            .and_then(|v| v.as_u64())
    };
    if let Some(p) = get("prompt_tokens", "input_tokens") {
        TOKENS.with_label_values(&[upstream, "prompt"]).inc_by(p);
    }
    if let Some(c) = get("completion_tokens", "output_tokens") {
        TOKENS
            .with_label_values(&[upstream, "completion"])
            .inc_by(c);
    }
}

/// Client requests being handled right now.
pub static IN_FLIGHT: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "switchyard_in_flight_requests",
        "Client requests being handled now"
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
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
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
    Lazy::force(&IN_FLIGHT);
    Lazy::force(&UPSTREAM_ACTIVE);
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
