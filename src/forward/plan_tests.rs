//! The attempt plan driven by scripted verdicts: no sockets. Keys get their
//! verdicts through the same `Key::record_*` calls the attempt loop makes.

use super::*;
use crate::clock::now_ms;
use crate::config::Config;
use crate::keys::signals::Limits;

/// A snapshot of `yaml` (upstreams on 127.0.0.1:1, never connected).
fn snap(yaml: &str) -> Snapshot {
    let cfg = Config::from_yaml(yaml, &|_| None).unwrap();
    Snapshot::build(cfg, None).unwrap()
}

const TWO_KEYS: &str = "upstreams:
  - {name: a, base_url: 'http://127.0.0.1:1/v1', keys: [key-a-1-xxxxxxxxxxxxxxxx, key-a-2-xxxxxxxxxxxxxxxx], models: ['gpt-*']}
";

const WITH_FALLBACK: &str = "upstreams:
  - {name: a, base_url: 'http://127.0.0.1:1/v1', keys: [key-a-1-xxxxxxxxxxxxxxxx], models: ['gpt-4o']}
  - {name: b, base_url: 'http://127.0.0.1:2/v1', keys: [key-b-1-xxxxxxxxxxxxxxxx], models: ['gpt-4o', 'big']}
models: {fallbacks: {gpt-4o: [big]}}
";

fn budget(failures: u32, total: Duration, patience: Duration) -> Budget {
    let now = Instant::now();
    Budget {
        max_failures: failures,
        backoff: Duration::from_millis(100),
        deadline: now + total,
        patience: now + patience,
        max_wait: Duration::from_secs(5),
    }
}

fn roomy() -> Budget {
    budget(3, Duration::from_secs(600), Duration::from_secs(30))
}

/// What the plan chose: (model, upstream, key short id).
fn attempt<'s>(p: &mut Plan<'s, &'static str>) -> (Candidate<'s>, Duration) {
    match p.next(now_ms(), Instant::now) {
        Next::Attempt { candidate, backoff } => (candidate, backoff),
        Next::Wait { wait } => panic!("expected an attempt, got a wait of {wait:?}"),
        Next::GiveUp(g) => panic!("expected an attempt, got {g:?}"),
    }
}

fn who(c: &Candidate) -> (String, String, String) {
    (
        c.model.to_string(),
        c.upstream.name().to_string(),
        c.key.as_ref().map_or("-".into(), |k| k.short_id.clone()),
    )
}

fn ids(c: &Candidate) -> String {
    format!(
        "{}/{}",
        c.upstream.name(),
        c.key.as_ref().map_or("-", |k| k.short_id.as_str())
    )
}

fn limits_per_model(until_ms: u64) -> Limits {
    Limits {
        until_ms: Some(until_ms),
        source: Some("retry-after 60".into()),
        limit_type: Some("UserByModelByDay".into()),
        per_model: true,
        exhausted_until_ms: None,
    }
}

fn limits_per_key(until_ms: u64) -> Limits {
    Limits {
        until_ms: Some(until_ms),
        source: Some("retry-after 60".into()),
        ..Default::default()
    }
}

#[test]
fn first_candidate_then_next_key_on_429_not_counted() {
    let s = snap(TWO_KEYS);
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    let (c, backoff) = attempt(&mut p);
    assert_eq!(ids(&c), "a/a#1");
    assert_eq!(backoff, Duration::ZERO);
    let key = c.key.clone().unwrap();
    let note = key
        .record_rate_limit(
            &limits_per_key(now_ms() + 60_000),
            "",
            c.route.upstream_model,
        )
        .note;
    p.record(Verdict::Rotate {
        failure: "429 a#1",
        note: Some(note),
    });
    let (c, backoff) = attempt(&mut p);
    assert_eq!(ids(&c), "a/a#2");
    assert_eq!(
        backoff,
        Duration::ZERO,
        "a rotation is not a failure: no backoff"
    );
    assert_eq!(p.failures(), 0);
    let note = p.take_note().unwrap();
    let text = &note.text;
    assert!(
        text.starts_with("key a#1 (…xxxx) cooling until ") && text.ends_with("; next: a#2 (…xxxx)"),
        "{text}"
    );
    // the same, as fields for JSON lines
    let field = |k: &str| {
        note.fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("event"), Some("key_cooldown"));
    assert_eq!(field("key"), Some("a#1 (…xxxx)"));
    assert_eq!(field("upstream"), Some("a"));
    assert_eq!(field("next"), Some("a#2 (…xxxx)"));
    assert!(
        field("until").is_some_and(|u| u.ends_with('Z')),
        "{:?}",
        field("until")
    );
}

#[test]
fn per_key_429_cools_every_model_per_model_429_only_that_model() {
    let s = snap(TWO_KEYS);
    let k1 = s.upstreams[0].keys.keys()[0].clone();
    // per model: the same key still serves another model
    k1.record_rate_limit(&limits_per_model(now_ms() + 60_000), "", "gpt-4o");
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    assert_eq!(ids(&attempt(&mut p).0), "a/a#2");
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o-mini", roomy());
    let first = ids(&attempt(&mut p).0);
    let mut p2: Plan<&str> = Plan::new(&s, "gpt-4o-mini", roomy());
    let second = ids(&attempt(&mut p2).0);
    assert!(
        [first.as_str(), second.as_str()].contains(&"a/a#1"),
        "{first} {second}"
    );
    // per key: every model skips it
    let k2 = s.upstreams[0].keys.keys()[1].clone();
    k2.record_rate_limit(&limits_per_key(now_ms() + 60_000), "", "gpt-4o");
    for _ in 0..4 {
        let mut p: Plan<&str> = Plan::new(&s, "gpt-4o-mini", roomy());
        assert_eq!(ids(&attempt(&mut p).0), "a/a#1");
    }
}

#[test]
fn a_parked_key_is_skipped_and_never_retried() {
    let s = snap(TWO_KEYS);
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    let (c, _) = attempt(&mut p);
    let k = c.key.clone().unwrap();
    let note = k.record_park("401 invalid_api_key");
    assert!(note.text.contains("parked (401 invalid_api_key)"), "{note}");
    p.record(Verdict::Rotate {
        failure: "401",
        note: Some(note),
    });
    let (c2, _) = attempt(&mut p);
    assert_ne!(ids(&c), ids(&c2));
    k.record_failure();
    p.record(Verdict::Rotate {
        failure: "401 again",
        note: None,
    });
    // both tried, one parked, the other just tried: nothing recovers by itself
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "401 again"),
        _ => panic!("expected the last answer"),
    }
    // a new request never picks the parked key
    for _ in 0..4 {
        let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
        assert_ne!(ids(&attempt(&mut p).0), ids(&c));
    }
}

#[test]
fn transient_failures_retry_the_only_key_once_then_move_on_with_backoff() {
    let s = snap(WITH_FALLBACK);
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    let (c, b0) = attempt(&mut p);
    assert_eq!((ids(&c), b0), ("a/a#1".to_string(), Duration::ZERO));
    p.record(Verdict::Transient("502 a"));
    let (c, b1) = attempt(&mut p);
    assert_eq!(
        ids(&c),
        "a/a#1",
        "a one-key upstream: the same key once more"
    );
    assert!(
        b1 >= Duration::from_millis(75) && b1 <= Duration::from_millis(125),
        "{b1:?}"
    );
    p.record(Verdict::Transient("502 a again"));
    let (c, b2) = attempt(&mut p);
    assert_eq!(ids(&c), "b/b#1", "then the next upstream serving the model");
    assert!(
        b2 >= Duration::from_millis(150) && b2 <= Duration::from_millis(250),
        "{b2:?}"
    );
    p.record(Verdict::Transient("502 b"));
    // three failures spend gpt-4o's budget: the fallback has its own, and no backoff
    let (c, b3) = attempt(&mut p);
    assert_eq!(who(&c).0, "big");
    assert_eq!(b3, Duration::ZERO);
    assert_eq!(p.failures(), 0, "a fresh budget for the fallback");
}

#[test]
fn a_silent_upstream_is_left_at_once_for_the_next() {
    let s = snap(
        "upstreams:
  - {name: slow, base_url: 'http://127.0.0.1:1/v1', keys: [key-s-1-xxxxxxxxxxxxxxxx, key-s-2-xxxxxxxxxxxxxxxx, key-s-3-xxxxxxxxxxxxxxxx]}
  - {name: fast, base_url: 'http://127.0.0.1:2/v1', keys: [key-f-1-xxxxxxxxxxxxxxxx]}
",
    );
    let mut p: Plan<&str> = Plan::new(&s, "m", roomy());
    let (c, _) = attempt(&mut p);
    assert_eq!(c.upstream.name(), "slow");
    p.record(Verdict::UpstreamDown("504 slow"));
    let (c, backoff) = attempt(&mut p);
    assert_eq!(c.upstream.name(), "fast", "none of slow's other keys");
    assert_eq!(backoff, Duration::ZERO, "at once");
    assert_eq!(p.attempts(), 2);
}

#[test]
fn a_short_recovery_is_waited_for_on_the_requested_model() {
    let s = snap(WITH_FALLBACK);
    let soon = now_ms() + 2_000;
    for u in &s.upstreams[..2] {
        u.keys.keys()[0].cool_until(Some("gpt-4o"), soon, "429");
    }
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    match p.next(now_ms(), Instant::now) {
        Next::Wait { wait } => assert!(wait <= Duration::from_secs(2), "{wait:?}"),
        _ => panic!("2 s is within retry.max_wait: wait, not the fallback"),
    }
    match p.next(soon + 10, Instant::now) {
        Next::Attempt { candidate, .. } => assert_eq!(candidate.model, "gpt-4o"),
        _ => panic!("the requested model after the wait"),
    }
    // a recovery beyond max_wait: the fallback answers at once
    let s = snap(WITH_FALLBACK);
    let later = now_ms() + 20_000;
    for u in &s.upstreams[..2] {
        u.keys.keys()[0].cool_until(Some("gpt-4o"), later, "429");
    }
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    assert_eq!(who(&attempt(&mut p).0).0, "big");
}

#[test]
fn the_attempts_budget_counts_failures_per_model() {
    let s = snap(WITH_FALLBACK);
    let mut p: Plan<&str> = Plan::new(
        &s,
        "gpt-4o",
        budget(2, Duration::from_secs(600), Duration::from_secs(30)),
    );
    attempt(&mut p);
    p.record(Verdict::Transient("first"));
    attempt(&mut p);
    p.record(Verdict::Transient("second"));
    let (c, _) = attempt(&mut p);
    assert_eq!(
        who(&c).0,
        "big",
        "gpt-4o spent its two; the fallback has its own"
    );
    p.record(Verdict::Transient("third"));
    attempt(&mut p); // big's only key, once more
    p.record(Verdict::Transient("fourth"));
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "fourth"),
        _ => panic!("every model spent its budget"),
    }
    assert_eq!(p.attempts(), 4);
}

#[test]
fn context_too_long_goes_to_the_fallback_model_only() {
    let s = snap(WITH_FALLBACK);
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    let (c, _) = attempt(&mut p);
    assert_eq!(who(&c), ("gpt-4o".into(), "a".into(), "a#1".into()));
    p.record(Verdict::NextModel("400 context_length_exceeded"));
    let (c, backoff) = attempt(&mut p);
    // upstream b also serves gpt-4o, but the model is skipped: straight to `big`
    assert_eq!(who(&c), ("big".into(), "b".into(), "b#1".into()));
    assert_eq!(backoff, Duration::ZERO);
    p.record(Verdict::NextModel("400 again"));
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "400 again"),
        _ => panic!("no model left: the last answer"),
    }
}

#[test]
fn exhaustion_falls_back_to_the_next_model() {
    let s = snap(WITH_FALLBACK);
    let far = now_ms() + 3_600_000;
    for u in &s.upstreams[..2] {
        u.keys.keys()[0].cool_until(Some("gpt-4o"), far, "429");
    }
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    let (c, _) = attempt(&mut p);
    assert_eq!(who(&c), ("big".into(), "b".into(), "b#1".into()));
}

#[test]
fn waits_for_a_recovery_within_patience_else_429() {
    let s = snap(TWO_KEYS);
    let soon = now_ms() + 2_000;
    for k in s.upstreams[0].keys.keys() {
        k.cool_until(None, soon, "429");
    }
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    match p.next(now_ms(), Instant::now) {
        Next::Wait { wait } => assert!(
            wait <= Duration::from_secs(2) && wait > Duration::from_millis(1500),
            "{wait:?}"
        ),
        _ => panic!("a recovery 2 s away is within 30 s of patience"),
    }
    // after the wait the plan starts over and finds the recovered key
    match p.next(soon + 10, Instant::now) {
        Next::Attempt { candidate, .. } => assert!(ids(&candidate).starts_with("a/a#")),
        _ => panic!("expected the recovered key"),
    }
    // beyond the patience: 429 with the recovery time, no wait
    let mut p: Plan<&str> = Plan::new(
        &s,
        "gpt-4o",
        budget(3, Duration::from_secs(600), Duration::from_secs(1)),
    );
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::RateLimited { retry_after }) => {
            assert!(
                retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_secs(2)
            )
        }
        _ => panic!("expected 429"),
    }
}

#[test]
fn waits_are_bounded_and_a_transient_last_failure_is_not_a_429() {
    let s = snap(TWO_KEYS);
    let soon = now_ms() + 1_000;
    let keys = s.upstreams[0].keys.keys();
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    attempt(&mut p);
    p.record(Verdict::Transient("503"));
    for k in keys {
        k.cool_until(None, soon, "429");
    }
    for _ in 0..MAX_WAITS {
        assert!(matches!(p.next(now_ms(), Instant::now), Next::Wait { .. }));
    }
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "503", "the real failure, not a 429"),
        _ => panic!("waits are bounded"),
    }
}

#[test]
fn nothing_after_the_total_deadline_but_the_first_attempt_goes() {
    let s = snap(TWO_KEYS);
    let mut b = roomy();
    b.deadline = Instant::now() - Duration::from_millis(1);
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", b);
    attempt(&mut p);
    p.record(Verdict::Rotate {
        failure: "429",
        note: None,
    });
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "429"),
        _ => panic!("the deadline passed: no second attempt"),
    }
}

#[test]
fn parked_everywhere_is_unavailable() {
    let s = snap(TWO_KEYS);
    for k in s.upstreams[0].keys.keys() {
        k.record_park("401");
    }
    let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
    assert!(matches!(
        p.next(now_ms(), Instant::now),
        Next::GiveUp(GiveUp::Unavailable)
    ));
}

#[test]
fn an_upstream_without_keys_is_retried_once_like_a_single_key() {
    let s = snap("upstreams:\n  - {name: open, base_url: 'http://127.0.0.1:1/v1'}\n");
    let mut p: Plan<&str> = Plan::new(&s, "m", roomy());
    let (c, _) = attempt(&mut p);
    assert_eq!(ids(&c), "open/-");
    p.record(Verdict::Transient("502"));
    let (c, backoff) = attempt(&mut p);
    assert_eq!(ids(&c), "open/-");
    assert!(backoff > Duration::ZERO);
    p.record(Verdict::Transient("502 again"));
    match p.next(now_ms(), Instant::now) {
        Next::GiveUp(GiveUp::Last(f)) => assert_eq!(f, "502 again"),
        _ => panic!("once more, not forever"),
    }
}

#[test]
fn remaining_zero_skips_the_key_before_it_fails() {
    let s = snap(TWO_KEYS);
    let k1 = s.upstreams[0].keys.keys()[0].clone();
    let limits = Limits {
        exhausted_until_ms: Some(now_ms() + 60_000),
        ..Default::default()
    };
    assert!(k1.record_exhausted(&limits, "gpt-4o").is_some());
    assert!(k1.record_exhausted(&Limits::default(), "gpt-4o").is_none());
    for _ in 0..4 {
        let mut p: Plan<&str> = Plan::new(&s, "gpt-4o", roomy());
        assert_eq!(ids(&attempt(&mut p).0), "a/a#2");
    }
}
