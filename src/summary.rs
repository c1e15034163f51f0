//! The human-readable description `switchyard check` prints. Never shows a key.

use crate::config::units::{fmt_duration, fmt_size};
use crate::config::{Config, UpstreamKind};
use std::fmt::Write;

/// What `serve` prints once at start: where to point a client, where the
/// admin listener is, then the same summary as `check`.
pub fn banner(c: &Config) -> String {
    let mut s = format!("switchyard {} starting\n", env!("CARGO_PKG_VERSION"));
    for l in &c.listen {
        if l.addr.starts_with('/') {
            let _ = writeln!(
                s,
                "point an OpenAI client at unix socket {} (path /v1)",
                l.addr
            );
        } else {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            let _ = writeln!(s, "point an OpenAI client at {scheme}://{}/v1", l.addr);
        }
    }
    if let Some(a) = &c.admin.listen {
        let _ = writeln!(
            s,
            "admin API, /metrics and /health at http://{a}/{}",
            if c.admin.token.is_some() {
                " (admin token required)"
            } else {
                ""
            }
        );
    }
    s.push('\n');
    s.push_str(&describe(c));
    s
}

pub fn describe(c: &Config) -> String {
    let mut s = String::new();
    let src = c
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "from the environment (no file)".into());
    let _ = writeln!(s, "config {src}: OK");
    if let Some(f) = crate::config::dotenv::loaded() {
        let _ = write!(
            s,
            "env file {}: set {}",
            f.path.display(),
            list_or_none(&f.set)
        );
        if !f.kept.is_empty() {
            let _ = write!(s, "; already set, kept: {}", f.kept.join(", "));
        }
        s.push('\n');
    }
    if !c.env_applied.is_empty() {
        let _ = writeln!(s, "environment applied: {}", c.env_applied.join(", "));
    }
    for why in &c.env_ignored {
        let _ = writeln!(s, "environment NOT applied: {why}");
    }
    s.push('\n');
    let _ = writeln!(s, "listeners:");
    for l in &c.listen {
        let _ = writeln!(
            s,
            "  api    {}{}",
            l.addr,
            match (l.tls.is_some(), l.proxy_protocol) {
                (true, true) => " (TLS, PROXY protocol)",
                (true, false) => " (TLS)",
                (false, true) => " (PROXY protocol)",
                (false, false) => "",
            }
        );
    }
    if let Some(a) = &c.admin.listen {
        let _ = writeln!(
            s,
            "  admin  {a} (/health, /metrics, /admin/*; {})",
            if c.admin.token.is_some() {
                "token required"
            } else {
                "no token"
            }
        );
    }
    let _ = writeln!(
        s,
        "\nserver: {} threads, grace period {}",
        c.server.threads,
        fmt_duration(c.server.grace_period)
    );
    let _ = writeln!(
        s,
        "clients: {}",
        match &c.clients {
            None => "none in the config file: only loopback callers are served, until a client is made at run time (switchyard clients create)".to_string(),
            Some(l) => format!(
                "{} ({})",
                l.len(),
                l.iter()
                    .map(|c| {
                        let mut limits = rates(c.rpm, c.tpm, c.max_concurrent, "at once");
                        if c.expires.is_some() {
                            limits.push("expires".into());
                        }
                        for q in &c.quotas {
                            limits.push(quota_text(q));
                        }
                        if !c.models.is_empty() {
                            limits.push(format!("models {}", c.models.join(" ")));
                        }
                        if !c.endpoints.is_empty() {
                            limits.push(format!("endpoints {}", c.endpoints.join(" ")));
                        }
                        if !c.allow_ips.is_empty() {
                            limits.push(format!("from {}", c.allow_ips.describe()));
                        }
                        if limits.is_empty() {
                            c.name.clone()
                        } else {
                            format!("{} [{}]", c.name, limits.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    );
    let edge = &c.server;
    for (what, nets) in [
        (
            "trusted proxies (their X-Forwarded-For names the client)",
            &edge.trusted_proxies,
        ),
        ("only addresses", &edge.allow_ips),
        ("refused addresses", &edge.deny_ips),
    ] {
        if !nets.is_empty() {
            let _ = writeln!(s, "{what}: {}", nets.describe());
        }
    }
    if let Some(cors) = &c.cors {
        let mut origins = cors.origins.clone();
        if cors.any {
            origins.insert(0, "any origin".into());
        }
        let _ = writeln!(
            s,
            "cors: {} (preflights cached {})",
            origins.join(", "),
            fmt_duration(cors.max_age)
        );
    }
    let t = &c.timeouts;
    let _ = writeln!(
        s,
        "limits: max request body {}; timeouts connect {}, first byte {}, idle {}, total {}; retry {} attempts, backoff {}",
        fmt_size(c.limits.max_request_body),
        fmt_duration(t.connect),
        fmt_duration(t.first_byte),
        fmt_duration(t.idle),
        fmt_duration(t.total),
        c.retry.attempts,
        fmt_duration(c.retry.backoff)
    );
    let _ =
        writeln!(
        s,
        "client side: request head {}, request body {}, a stalled write {}, idle keep-alive {}, {}",
        fmt_duration(t.request_head),
        fmt_duration(t.request_body),
        fmt_duration(t.client_write),
        fmt_duration(t.keepalive),
        if t.stream_ping.is_zero() {
            "no stream keepalives".to_string()
        } else {
            format!("a silent stream pinged every {}", fmt_duration(t.stream_ping))
        },
    );
    let l = &c.limits;
    let mut traffic = rates(l.rpm, l.tpm, l.max_concurrent, "calls in flight");
    if let Some(d) = l.model_min_interval {
        traffic.push(format!("calls per model {} apart", fmt_duration(d)));
    }
    for q in &l.budget {
        traffic.push(format!("budget {}", quota_text(q)));
    }
    let _ = writeln!(
        s,
        "traffic: {}; queue {} for up to {}",
        if traffic.is_empty() {
            "no gateway-wide limits".to_string()
        } else {
            traffic.join(", ")
        },
        l.queue,
        fmt_duration(l.queue_timeout)
    );
    if let Some(p) = &c.metrics_path {
        let _ = writeln!(s, "metrics: also on the API listener at {p}");
    }
    if !c.admin.hosts.is_empty() {
        let _ = writeln!(
            s,
            "admin answers to hosts: localhost, IP addresses, {}",
            c.admin.hosts.join(", ")
        );
    }
    let _ = writeln!(s, "{}", state_line(c));
    if let Some(k) = &c.cache {
        let _ = writeln!(
            s,
            "response cache: {} for {}, scope {:?}, {} store (at most {}, answers up to {}), replay {:?}",
            fmt_duration(k.ttl),
            k.models.join(", "),
            k.scope,
            if k.store == crate::config::cache::CacheStore::Redis { "the fleet's Redis" } else { "memory" },
            crate::config::units::fmt_size(k.max_bytes),
            crate::config::units::fmt_size(k.max_entry),
            k.replay,
        );
    }
    let (filter, from) = crate::logging::filter_source(&c.log);
    let _ = writeln!(
        s,
        "log: {} lines, filter {filter:?} ({})",
        match c.log.format {
            crate::config::raw::LogFormat::Text => "text",
            crate::config::raw::LogFormat::Json => "JSON",
        },
        match from {
            "RUST_LOG" if c.log.level.is_some() => "from RUST_LOG, which overrides log.level",
            "RUST_LOG" => "from RUST_LOG",
            "log.level" => "log.level",
            _ => "the default",
        }
    );
    let _ = writeln!(s, "\nupstreams:");
    for u in &c.upstreams {
        let mut target = match &u.kind {
            UpstreamKind::Http(b) => b.to_string(),
            UpstreamKind::Demo => "built-in demo (offline)".into(),
        };
        if let Some(a) = &u.azure {
            target.push_str(match a.deployments.is_empty() {
                true => " (Azure, v1 paths, api-key)",
                false => " (Azure deployments, api-key)",
            });
            if let Some(v) = &a.api_version {
                target.push_str(&format!(" api-version {v}"));
            }
        }
        if u.anthropic {
            target.push_str(" (Anthropic Messages API, x-api-key)");
        }
        let mut limits = rates(u.rpm, u.tpm, u.max_concurrent, "at once");
        if let Some(Some(d)) = u.model_min_interval {
            limits.push(format!("per model {} apart", fmt_duration(d)));
        }
        let _ = writeln!(
            s,
            "  {:<12} {}  keys: {}  strategy: {}{}",
            u.name,
            target,
            u.keys.len(),
            u.key_strategy.as_str(),
            if limits.is_empty() {
                String::new()
            } else {
                format!("  limits: {}", limits.join(", "))
            }
        );
        let _ = writeln!(s, "  {:<12} {}", "", upstream_flags(u));
    }
    let _ = writeln!(
        s,
        "\nmodels (a pattern several upstreams serve: balanced by weight, the others as failover):"
    );
    for u in &c.upstreams {
        for (from, to) in &u.model_map {
            let _ = writeln!(s, "  {from:<24} -> {} (as {to})", u.name);
        }
        for m in &u.models {
            let _ = writeln!(s, "  {m:<24} -> {}", u.name);
        }
    }
    if !c.fallbacks.is_empty() {
        let _ = writeln!(
            s,
            "\nfallbacks (tried in order when a model's upstreams all fail):"
        );
        for (model, then) in &c.fallbacks {
            let _ = writeln!(s, "  {model:<24} -> {}", then.join(", "));
        }
    }
    if let Some(w) = every_model_twice(c) {
        let _ = writeln!(s, "\n{w}");
    }
    let opaque = c
        .upstreams
        .iter()
        .find(|u| !u.paths.is_empty())
        .map(|u| format!("{} for {}", u.name, u.paths.join(", ")));
    let _ = writeln!(
        s,
        "\nother /v1/ paths: {}{}",
        opaque.map(|o| format!("{o}; else ")).unwrap_or_default(),
        c.upstreams.first().map_or("-", |u| u.name.as_str())
    );
    s
}

/// A warning when a config file's upstreams serve every model several times
/// (`*`, also what an upstream without `models` serves): each call goes to
/// one of them by weight, so a model only one of them has fails on the
/// others' turns.
fn every_model_twice(c: &Config) -> Option<String> {
    // (the environment's quick start balances replicas of one server on purpose)
    c.source.as_ref()?;
    let all: Vec<&str> = c
        .upstreams
        .iter()
        .filter(|u| u.models.iter().any(|m| m == "*"))
        .map(|u| u.name.as_str())
        .collect();
    (all.len() > 1).then(|| {
        format!(
            "warning: upstreams {} all serve every model (`*`, the default without `models`): \
             each call goes to one of them by weight, and a model only one of them has fails \
             on the others' turns. Give each upstream its `models`.",
            all.join(", ")
        )
    })
}

/// `rpm N`, `tpm N`, `N <at_once>` for the limits that are set.
pub(crate) fn rates(
    rpm: Option<u32>,
    tpm: Option<u64>,
    max: Option<u32>,
    at_once: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = rpm {
        out.push(format!("rpm {r}"));
    }
    if let Some(t) = tpm {
        out.push(format!("tpm {t}"));
    }
    if let Some(m) = max {
        out.push(format!("{m} {at_once}"));
    }
    out
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// Where key state and usage live, and what a restart keeps.
fn state_line(c: &Config) -> String {
    let shared = c.redis.as_ref().map_or(String::new(), |r| {
        use crate::config::raw::{LimitMode, OnStoreFailure};
        let limits = match r.limits.mode {
            LimitMode::Strict => "strict: one Redis call per admission".to_string(),
            LimitMode::Local => format!(
                "local: counts exchanged every {}; the fleet may pass a limit by about replicas x rate x 2 x {}",
                fmt_duration(r.limits.sync),
                fmt_duration(r.limits.sync)
            ),
        };
        let on_failure = |f| match f {
            OnStoreFailure::Local => "go on alone",
            OnStoreFailure::Refuse => "refuse (503)",
        };
        format!(
            "\nshared: key cooldowns, parks and operator actions with every instance on {} (prefix {}, timeout {})\n\
             shared limits: client and gateway rpm/tpm, client max_concurrent, upstream rpm/tpm and pacing ({limits}); \
             upstream, key and gateway max_concurrent stay per instance\n\
             shared usage: per-minute totals of every instance in /admin/usage\n\
             store down: limits {}, key state {}",
            r.shown(),
            r.prefix,
            fmt_duration(r.timeout),
            on_failure(r.limits.on_failure),
            on_failure(r.keys_on_failure),
        )
    });
    local_state_line(c) + &shared
}

fn local_state_line(c: &Config) -> String {
    let usage = if c.usage_enabled {
        format!(
            "usage log kept {} (at most {} rows)",
            fmt_duration(c.usage_retention),
            c.usage_max_rows
        )
    } else {
        "usage log off".into()
    };
    match &c.state_path {
        Some(p) => format!(
            "state: {} (key cooldowns, parked keys and counters survive restarts; {usage})",
            p.display()
        ),
        None => format!(
            "state: none: cooldowns, parked keys and counters are lost on restart; {usage}, in memory (set state.path)"
        ),
    }
}

/// One upstream's behaviour beyond its keys: streaming, protocol, weight,
/// health checks, continuation and what a 429 cools.
fn upstream_flags(u: &crate::config::UpstreamConf) -> String {
    let mut f = Vec::new();
    if u.stream_only {
        f.push("stream only (JSON calls are streamed and merged)".to_string());
    }
    if u.no_stream {
        f.push("no streams (streamed calls are sent as JSON and replayed)".to_string());
    }
    f.push(if u.http2 { "HTTP/2" } else { "HTTP/1.1" }.to_string());
    if u.weight != 1 {
        f.push(format!("weight {}", u.weight));
    }
    f.push(match &u.health.path {
        Some(p) => format!(
            "health GET {p} every {}, down after {} failure(s)",
            fmt_duration(u.health.interval),
            u.health.failures
        ),
        None => format!(
            "health passive: down {} after {} failure(s)",
            fmt_duration(u.health.interval),
            u.health.failures
        ),
    });
    f.push(format!("continuation {}", u.continuation.as_str()));
    f.push(
        match u.rate_limit_scope {
            crate::config::raw::RateLimitScope::Key => "a 429 cools its key",
            crate::config::raw::RateLimitScope::Upstream => "a 429 cools every key",
        }
        .to_string(),
    );
    if !u.account_headers.is_empty() {
        f.push("organization/project headers".into());
    }
    f.join("; ")
}

/// `100000 tokens/day` or `$25.00/month`.
fn quota_text(q: &crate::config::quota::Quota) -> String {
    let amount = match q.unit {
        crate::config::quota::Unit::Tokens => format!("{} tokens", q.limit),
        crate::config::quota::Unit::Usd => {
            format!("${:.2}", crate::config::quota::dollars(q.limit))
        }
    };
    format!("{amount}/{}", q.per.as_str())
}
