//! Every Prometheus metric the gateway exports, defined once. Labels are low
//! cardinality: route class, upstream, key short id (never the key), status class.
//!
//! Registration `expect`s: it fails only for a duplicate metric name, a bug
//! that the first scrape in the tests would show.
#![allow(clippy::expect_used)]

use crate::routes::RouteClass;
use once_cell::sync::Lazy;
use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec,
};
use std::sync::OnceLock;

/// Client requests by route class, client name, upstream, model (a
/// configured or catalogued name, else `other`) and status class.
pub static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_requests_total",
        "Client requests answered, by route class, client, upstream, model and status class",
        &["route", "client", "upstream", "model", "status"]
    )
    .expect("metric registers once")
});

/// Client-visible latency, request start to last byte.
pub static REQUEST_DURATION: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "switchyard_request_duration_seconds",
        "Time from request start to the last byte of the response, by route class, client, upstream and model",
        &["route", "client", "upstream", "model"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 120.0
        ]
    )
    .expect("metric registers once")
});

/// Streams: request start to the first event the client received.
pub static TTFT: Lazy<HistogramVec> = Lazy::new(|| {
    register_histogram_vec!(
        "switchyard_time_to_first_token_seconds",
        "Streamed answers: time from request start to the first event sent to the client, by upstream and model",
        &["upstream", "model"],
        vec![0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0]
    )
    .expect("metric registers once")
});

/// Attempts that failed and were followed by another, by the upstream that
/// failed and why (see `Failure::reason` in `forward`).
pub static RETRIES: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_retries_total",
        "Failed upstream attempts the gateway followed with another attempt, by upstream and reason",
        &["upstream", "reason"]
    )
    .expect("metric registers once")
});

/// Retries that went to another upstream than the one that failed.
pub static FAILOVERS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_failovers_total",
        "Retries sent to a different upstream than the one that failed, by the upstream left and reason",
        &["upstream", "reason"]
    )
    .expect("metric registers once")
});

/// Requests refused by a gateway limit, by the setting that refused them.
pub static RATE_LIMITED: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_rate_limited_total",
        "Requests answered 429 by the gateway, by the limit (clients.rpm, limits.queue, upstream, ...)",
        &["limit"]
    )
    .expect("metric registers once")
});

/// Quotas that passed a warning threshold (`limits.quota_warn_at`) this period.
pub static QUOTA_WARNINGS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_quota_warnings_total",
        "Quotas that passed a warning threshold, by owner (client name or gateway), period, unit and threshold",
        &["owner", "per", "unit", "threshold"]
    )
    .expect("metric registers once")
});

/// 1 for each key's current state (`active`, `cooling`, `parked`), 0 for the others.
pub static KEY_STATE: Lazy<IntGaugeVec> = Lazy::new(|| {
    register_int_gauge_vec!(
        "switchyard_key_state",
        "Upstream keys by id: 1 for the state the key is in (active, cooling, parked), 0 for the others",
        &["upstream", "key", "state"]
    )
    .expect("metric registers once")
});

/// Seconds until a cooling or parked key recovers (0: ready; -1: parked until enabled).
pub static KEY_RECOVERY: Lazy<prometheus::GaugeVec> = Lazy::new(|| {
    prometheus::register_gauge_vec!(
        "switchyard_key_recovery_seconds",
        "Seconds until the key is back in rotation (0: in rotation; -1: parked until an operator enables it)",
        &["upstream", "key"]
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

/// Tokens reported by upstreams (`usage`), by upstream, model, client and
/// kind (`prompt`, `completion`). Estimates are not counted.
pub static TOKENS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_tokens_total",
        "Tokens reported in upstream usage, by upstream, model, client and kind (prompt, completion)",
        &["upstream", "model", "client", "kind"]
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
    #[serde(default)]
    pub prompt_tokens_details: Option<TokenDetails>,
    #[serde(default)]
    pub input_tokens_details: Option<TokenDetails>,
}

/// `prompt_tokens_details` / `input_tokens_details`: the prompt tokens read
/// from the provider's cache. Read leniently: details in an odd shape are
/// no details, never a usage that fails to parse.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct TokenDetails {
    pub cached_tokens: Option<u64>,
}

impl<'de> serde::Deserialize<'de> for TokenDetails {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(TokenDetails {
            cached_tokens: v.get("cached_tokens").and_then(serde_json::Value::as_u64),
        })
    }
}

impl Usage {
    /// Prompt tokens read from the provider's cache (priced lower).
    pub fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .or(self.input_tokens_details)
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }

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
            prompt_tokens_details: None,
            input_tokens_details: None,
        }
        .with_cached(
            usage
                .pointer("/prompt_tokens_details/cached_tokens")
                .or_else(|| usage.pointer("/input_tokens_details/cached_tokens"))
                .and_then(|v| v.as_u64()),
        )
    }

    fn with_cached(mut self, cached: Option<u64>) -> Usage {
        self.prompt_tokens_details = cached.map(|c| TokenDetails {
            cached_tokens: Some(c),
        });
        self
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

/// What a request's series are labelled with (see [`REQUESTS`]). `key`
/// identifies the label set within one snapshot `generation` (the strings
/// are the snapshot's own: a client index, upstream and model pointers), so
/// the series are looked up by it without hashing the label strings.
pub struct RequestLabels<'a> {
    pub generation: u64,
    pub key: [usize; 3],
    pub route: RouteClass,
    pub client: &'a str,
    pub upstream: &'a str,
    pub model: &'a str,
}

/// One label set's series, resolved once per worker thread.
struct Resolved {
    requests: [OnceLock<IntCounter>; STATUS_CLASSES.len()],
    duration: Histogram,
    ttft: OnceLock<Histogram>,
    prompt: OnceLock<IntCounter>,
    completion: OnceLock<IntCounter>,
}

type SeriesKey = (u8, [usize; 3]);

thread_local! {
    /// This thread's resolved series of the current snapshot generation
    /// (cleared when the generation changes: a reload may rename labels).
    static RESOLVED: std::cell::RefCell<(u64, foldhash::HashMap<SeriesKey, std::rc::Rc<Resolved>>)> =
        std::cell::RefCell::new((0, foldhash::HashMap::default()));
}

/// Counts one answered client request, its latency and (streams) its time to
/// first token; `tokens` = reported (prompt, completion), if any.
pub fn observe_request(
    l: &RequestLabels<'_>,
    status: u16,
    seconds: f64,
    ttft: Option<f64>,
    tokens: Option<(u64, u64)>,
) {
    let route = l.route.as_str();
    let r = RESOLVED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != l.generation {
            *c = (l.generation, foldhash::HashMap::default());
        }
        c.1.entry((l.route.index() as u8, l.key))
            .or_insert_with(|| {
                std::rc::Rc::new(Resolved {
                    requests: Default::default(),
                    duration: REQUEST_DURATION
                        .with_label_values(&[route, l.client, l.upstream, l.model]),
                    ttft: OnceLock::new(),
                    prompt: OnceLock::new(),
                    completion: OnceLock::new(),
                })
            })
            .clone()
    });
    let s = status_class_index(status);
    r.requests[s]
        .get_or_init(|| {
            REQUESTS.with_label_values(&[route, l.client, l.upstream, l.model, STATUS_CLASSES[s]])
        })
        .inc();
    r.duration.observe(seconds);
    if let Some(t) = ttft {
        r.ttft
            .get_or_init(|| TTFT.with_label_values(&[l.upstream, l.model]))
            .observe(t);
    }
    if let Some((p, c)) = tokens {
        let tokens = |kind| TOKENS.with_label_values(&[l.upstream, l.model, l.client, kind]);
        if p > 0 {
            r.prompt.get_or_init(|| tokens("prompt")).inc_by(p);
        }
        if c > 0 {
            r.completion.get_or_init(|| tokens("completion")).inc_by(c);
        }
    }
}

/// One key's state for [`KEY_STATE`] / [`KEY_RECOVERY`]: `recovery_s` is
/// `None` for a key parked until enabled.
pub fn observe_key(upstream: &str, key: &str, state: &str, recovery_s: Option<f64>) {
    for st in ["active", "cooling", "parked"] {
        KEY_STATE
            .with_label_values(&[upstream, key, st])
            .set(i64::from(st == state));
    }
    KEY_RECOVERY
        .with_label_values(&[upstream, key])
        .set(recovery_s.unwrap_or(-1.0));
}

/// Forgets every key series (before [`observe_key`] for the keys of now: a
/// reload may have removed some).
pub fn clear_keys() {
    KEY_STATE.reset();
    KEY_RECOVERY.reset();
}

/// 1 while the shared store (`state.redis`) answers; registered with a fleet only.
pub static STORE_UP: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "switchyard_store_up",
        "1 while the shared store (state.redis) answers, 0 while it does not"
    )
    .expect("metric registers once")
});

/// Shared-store calls that failed or timed out; registered with a fleet only.
pub static STORE_FAILURES: Lazy<IntCounter> = Lazy::new(|| {
    register_int_counter!(
        "switchyard_store_failures_total",
        "Shared-store (state.redis) calls that failed or timed out, and changes not shared; the gateway went on with its own key state"
    )
    .expect("metric registers once")
});

/// Response cache lookups and writes (`cache:`), by result: hit, miss, stored.
pub static CACHE: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "switchyard_cache_total",
        "Response cache lookups by result (hit, miss) and answers stored",
        &["result"]
    )
    .expect("metric registers once")
});

/// Bytes the memory cache holds.
pub static CACHE_BYTES: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!(
        "switchyard_cache_bytes",
        "Bytes of answers the memory cache holds (cache.max_bytes bounds it)"
    )
    .expect("metric registers once")
});

/// Answers the memory cache holds.
pub static CACHE_ENTRIES: Lazy<IntGauge> = Lazy::new(|| {
    register_int_gauge!("switchyard_cache_entries", "Answers the memory cache holds")
        .expect("metric registers once")
});

/// Upstream tokens cached answers saved.
pub static CACHE_TOKENS_SAVED: Lazy<IntCounter> = Lazy::new(|| {
    register_int_counter!(
        "switchyard_cache_tokens_saved_total",
        "Tokens (prompt and completion) the answers served from the cache had cost upstream"
    )
    .expect("metric registers once")
});

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
    Lazy::force(&TTFT);
    Lazy::force(&RETRIES);
    Lazy::force(&FAILOVERS);
    Lazy::force(&RATE_LIMITED);
    Lazy::force(&QUOTA_WARNINGS);
    Lazy::force(&KEY_STATE);
    Lazy::force(&KEY_RECOVERY);
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
