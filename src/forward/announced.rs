//! Each glob-routed upstream's own model list (`GET {base}/models`, with a
//! ready key), for [`crate::listing`]: fetched once a listing is first
//! wanted, then after each reload and every [`REFRESH_EVERY`]. An upstream that does not answer keeps its
//! last list (or the catalog's names).

use super::attempt::Connector;
use super::plan::Candidate;
use crate::keys::Availability;
use crate::listing::{self, Listing, REFRESH_EVERY};
use crate::state::{Route, Snapshot, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts the refresher thread.
pub fn spawn(state: Arc<State>) {
    crate::state::spawn_background("switchyard-models", "model lists", run(state));
}

async fn run(state: Arc<State>) {
    let connector = Connector::new(None);
    let mut fetched: Option<(u64, Instant)> = None;
    loop {
        let snap = state.load();
        let due = listing::wanted()
            && fetched.is_none_or(|(generation, at)| {
                generation != snap.generation || at.elapsed() >= REFRESH_EVERY
            });
        if due {
            fetched = Some((snap.generation, Instant::now()));
            refresh(&connector, &state, &snap).await;
            listing::round_done();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fetches every glob-routed upstream's list; rebuilds the listing of the
/// snapshot current then.
async fn refresh(connector: &Connector, state: &State, snap: &Snapshot) {
    for (u, up) in snap.upstreams.iter().enumerate() {
        let conf = &up.conf;
        if conf.kind == crate::config::UpstreamKind::Demo
            || !conf.models.iter().any(|p| listing::is_pattern(p))
        {
            continue;
        }
        let Some(ids) = fetch(connector, snap, u).await else {
            continue;
        };
        let n = ids.len();
        if listing::set_announced(&conf.name, &listing::origin(conf), ids) {
            log::info!(
                "upstream {} lists {n} model(s) on its GET /models",
                conf.name
            );
        }
    }
    // rebuilt whatever changed: a reload may have built the snapshot now
    // current from lists older than this round's
    let now = state.load();
    now.listing.store(Arc::new(Listing::build(&now.config)));
}

/// One upstream's `GET /models` ids, with its first ready key.
async fn fetch(connector: &Connector, snap: &Snapshot, u: usize) -> Option<Vec<String>> {
    let up = &snap.upstreams[u];
    let now = crate::clock::now_ms();
    let key = if up.keys.is_empty() {
        None
    } else {
        let ready = up
            .keys
            .keys()
            .iter()
            .find(|k| matches!(k.availability("", now), Availability::Ready));
        Some(ready?.clone())
    };
    let cand = Candidate {
        model: "",
        route: Route {
            upstream: u,
            upstream_model: "",
        },
        upstream: up,
        key,
        charge: None,
    };
    let (status, body) = super::probe::get_models(connector, &cand, &snap.config.timeouts).await?;
    if status != 200 {
        log::debug!("upstream {}: GET /models answered {status}", up.name());
        return None;
    }
    listing::parse_announced(&body)
}
