//! Key selection and key state, without the network.
use super::*;

fn pool(strategy: KeyStrategy, weights: &[u32]) -> KeyPool {
    let keys = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Arc::new(Key::new(
                "u",
                i + 1,
                format!("secret-number-{i}-xxxxxxxx"),
                *w,
            ))
        })
        .collect();
    KeyPool::new(strategy, keys)
}

fn seq(p: &KeyPool, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| match p.pick("m", &[], 1000) {
            Pick::Key(i, _) => i,
            Pick::None { .. } => 99,
        })
        .collect()
}

#[test]
fn ids_never_show_the_secret() {
    let k = Key::new("github", 2, "ghp_aaaaaaaaaaaaaaaaXq9f".into(), 1);
    assert_eq!(k.id, "github#2 (…Xq9f)");
    assert_eq!(format!("{k:?} {k}"), "github#2 (…Xq9f) github#2 (…Xq9f)");
    assert!(!k.fingerprint.contains("Xq9f"));
    assert_eq!(Key::new("x", 1, "short".into(), 1).id, "x#1");
}

#[test]
fn round_robin_skips_tried_and_cooling() {
    let p = pool(KeyStrategy::RoundRobin, &[1, 1, 1]);
    assert_eq!(seq(&p, 6), vec![0, 1, 2, 0, 1, 2]);
    assert!(matches!(p.pick("m", &[0, 1], 1000), Pick::Key(2, _)));
    assert!(matches!(p.pick("m", &[0, 1, 2], 1000), Pick::None { .. }));
    p.keys()[1].cool_until(None, 5000, "429");
    assert!(!seq(&p, 6).contains(&1));
    assert!(seq(&p, 6).iter().all(|&i| i != 1));
    // after the deadline the key is back
    assert!(matches!(p.pick("m", &[0, 2], 6000), Pick::Key(1, _)));
}

#[test]
fn per_model_cooldown_only_blocks_that_model() {
    let p = pool(KeyStrategy::RoundRobin, &[1]);
    let k = &p.keys()[0];
    let far = now_ms() + 60_000;
    k.cool_until(Some("gpt-4o"), far, "429 UserByModelByDay");
    assert_eq!(
        k.availability("gpt-4o", now_ms()),
        Availability::CoolingUntil(far)
    );
    assert_eq!(k.availability("gpt-4o-mini", now_ms()), Availability::Ready);
    match p.pick("gpt-4o", &[], now_ms()) {
        Pick::None {
            earliest_ms,
            all_parked,
        } => assert_eq!((earliest_ms, all_parked), (Some(far), false)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deadlines_only_move_later() {
    let k = Key::new("u", 1, "s".into(), 1);
    assert_eq!(k.cool_until(None, 10_000, "a"), 10_000);
    assert_eq!(k.cool_until(None, 5_000, "b"), 10_000);
    assert_eq!(k.cool_until(None, 20_000, "c"), 20_000);
    assert_eq!(
        k.cool_until(Some("m"), 9_000_000_000_000, "d"),
        9_000_000_000_000
    );
    assert_eq!(
        k.cool_until(Some("m"), 8_000_000_000_000, "e"),
        9_000_000_000_000
    );
}

#[test]
fn parking() {
    let p = pool(KeyStrategy::RoundRobin, &[1, 1]);
    p.keys()[0].park(Park {
        reason: "401".into(),
        until_ms: None,
    });
    assert_eq!(seq(&p, 4), vec![1, 1, 1, 1]);
    p.keys()[1].park(Park {
        reason: "quota".into(),
        until_ms: Some(5000),
    });
    match p.pick("m", &[], 1000) {
        Pick::None {
            earliest_ms,
            all_parked,
        } => assert_eq!((earliest_ms, all_parked), (Some(5000), true)),
        other => panic!("{other:?}"),
    }
    // a quota park ends by itself at its reset
    assert!(matches!(p.pick("m", &[], 6000), Pick::Key(1, _)));
    p.keys()[0].unpark();
    assert!(matches!(p.pick("m", &[1], 6000), Pick::Key(0, _)));
}

#[test]
fn sticky_stays_until_the_key_cools() {
    let p = pool(KeyStrategy::Sticky, &[1, 1, 1]);
    assert_eq!(seq(&p, 3), vec![0, 0, 0]);
    p.keys()[0].cool_until(None, 5000, "429");
    assert_eq!(seq(&p, 3), vec![1, 1, 1]);
    p.rotate();
    assert_eq!(seq(&p, 2), vec![2, 2]);
}

#[test]
fn weighted_follows_weights() {
    let p = pool(KeyStrategy::Weighted, &[3, 1]);
    let s = seq(&p, 400);
    let zeros = s.iter().filter(|&&i| i == 0).count();
    assert_eq!(zeros, 300);
}

#[test]
fn random_and_least_busy() {
    let p = pool(KeyStrategy::Random, &[1, 1, 1]);
    let s = seq(&p, 300);
    for i in 0..3 {
        assert!(s.iter().filter(|&&x| x == i).count() > 50);
    }
    let p = pool(KeyStrategy::LeastBusy, &[1, 1, 1]);
    let _a = InFlight::new(p.keys()[0].clone());
    let _b = InFlight::new(p.keys()[2].clone());
    assert!(matches!(p.pick("m", &[], 1000), Pick::Key(1, _)));
}

#[test]
fn state_roundtrip() {
    let a = Key::new("u", 1, "s".into(), 1);
    a.cool_until(Some("m"), u64::MAX / 2, "429");
    a.park(Park {
        reason: "401".into(),
        until_ms: None,
    });
    a.requests.store(5, Ordering::Relaxed);
    let b = Key::new("u", 1, "s".into(), 1);
    b.restore(&a.state());
    assert_eq!(b.state(), a.state());
}
