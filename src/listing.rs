//! The concrete models the gateway can name: in `GET /v1/models`, the 404's
//! "Available models", the dashboard's playground and `switchyard probe`.
//! Per upstream, in config order: `model_map` keys and concrete `models`
//! entries; for each glob pattern, the names the upstream announced on its
//! own `GET /models` that match it (fetched once a listing is wanted, see
//! `forward::announced`), else the catalog's.
//! A glob is never a model name.

use crate::config::{glob_match, Config};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

/// At most this many names per upstream (an upstream's own list included).
pub const MAX_PER_UPSTREAM: usize = 1000;

/// How many names the 404's "Available models" spells out.
const MAX_IN_404: usize = 20;

/// How often each upstream's own model list is fetched again.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Someone asked for a listing: the upstreams' own lists are fetched from
/// then on (none before: a gateway nobody asks for models never calls
/// `GET /models`).
static WANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Rounds of fetching finished (see [`crate::forward::announced`]).
static ROUNDS: LazyLock<tokio::sync::watch::Sender<u64>> =
    LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Marks the upstreams' lists as wanted; says whether a first round of
/// fetching has finished.
pub fn want() -> bool {
    WANTED.store(true, std::sync::atomic::Ordering::Relaxed);
    *ROUNDS.borrow() > 0
}

/// Whether anyone asked for a listing yet.
pub fn wanted() -> bool {
    WANTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A round of fetching finished.
pub fn round_done() {
    ROUNDS.send_modify(|n| *n += 1);
}

/// Marks the lists as wanted and waits (at most `limit`) for the first
/// round of fetching, so the first listing already has the upstreams' names.
pub async fn want_and_wait(limit: std::time::Duration) {
    if want() {
        return;
    }
    let mut rx = ROUNDS.subscribe();
    let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n > 0)).await;
}

/// A name made of glob characters matches by pattern; it never names a model.
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// What the gateway lists, built from a config and the upstreams' announced models.
#[derive(Debug, Default)]
pub struct Listing {
    /// (model, first upstream serving it) in config order, without duplicates.
    pub pairs: Vec<(String, String)>,
    /// Each upstream's models, by upstream index.
    pub per_upstream: Vec<Vec<String>>,
    /// The glob patterns routed, for the 404's text.
    pub patterns: Vec<String>,
    /// The `GET /v1/models` body for an unrestricted caller.
    pub body: Bytes,
}

/// (upstream name, base URL) → the ids its `GET /models` answered.
type Announced = HashMap<(String, String), Arc<Vec<String>>>;

static ANNOUNCED: LazyLock<ArcSwap<Announced>> = LazyLock::new(Default::default);

/// Where an upstream is (its base URL), as announced lists are keyed.
pub fn origin(u: &crate::config::UpstreamConf) -> String {
    match &u.kind {
        crate::config::UpstreamKind::Http(base) => base.to_string(),
        crate::config::UpstreamKind::Demo => "demo".into(),
    }
}

/// The names `upstream` (name, base URL) last announced, if it answered.
pub fn announced(name: &str, base: &str) -> Option<Arc<Vec<String>>> {
    ANNOUNCED
        .load()
        .get(&(name.to_string(), base.to_string()))
        .cloned()
}

/// Records what an upstream announced; says whether the list changed.
pub fn set_announced(name: &str, base: &str, ids: Vec<String>) -> bool {
    let key = (name.to_string(), base.to_string());
    let mut changed = false;
    ANNOUNCED.rcu(|cur| {
        let mut next = (**cur).clone();
        changed = next.get(&key).is_none_or(|old| **old != ids);
        next.insert(key.clone(), Arc::new(ids.clone()));
        next
    });
    changed
}

/// The model ids of a `GET /models` answer (`{"data": [{"id": …}]}`), at
/// most [`MAX_PER_UPSTREAM`]; `None` when it is not such a list. Ids that
/// are empty, longer than 256 bytes, hold control characters, spaces or
/// glob characters are left out.
pub fn parse_announced(body: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    let list: List = serde_json::from_slice(body).ok()?;
    let mut seen = HashSet::new();
    let ids = list
        .data
        .into_iter()
        .filter_map(|e| match e.id {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        })
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 256
                && !is_pattern(s)
                && !s.chars().any(|c| c.is_control() || c.is_whitespace())
        })
        .filter(|s| seen.insert(s.clone()))
        .take(MAX_PER_UPSTREAM)
        .collect();
    Some(ids)
}

impl Listing {
    /// The listing of `config` with what its upstreams announced so far.
    pub fn build(config: &Config) -> Listing {
        let mut per_upstream = Vec::with_capacity(config.upstreams.len());
        let mut patterns = Vec::new();
        for u in &config.upstreams {
            let own = announced(&u.name, &origin(u));
            let mut names: Vec<String> = Vec::new();
            let mut seen = HashSet::new();
            let mut add = |n: &str, names: &mut Vec<String>| {
                if names.len() < MAX_PER_UPSTREAM && seen.insert(n.to_string()) {
                    names.push(n.to_string());
                }
            };
            for m in u.model_map.keys() {
                add(m, &mut names);
            }
            for p in &u.models {
                if !is_pattern(p) {
                    add(p, &mut names);
                    continue;
                }
                if !patterns.contains(p) {
                    patterns.push(p.clone());
                }
                match &own {
                    Some(ids) => ids
                        .iter()
                        .filter(|n| glob_match(p, n))
                        .for_each(|n| add(n, &mut names)),
                    None => config
                        .catalog
                        .names()
                        .filter(|n| glob_match(p, n))
                        .for_each(|n| add(n, &mut names)),
                }
            }
            per_upstream.push(names);
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        for (u, names) in config.upstreams.iter().zip(&per_upstream) {
            for n in names {
                if seen.insert(n.as_str()) {
                    pairs.push((n.clone(), u.name.clone()));
                }
            }
        }
        let body = models_list(config, pairs.iter());
        Listing {
            pairs,
            per_upstream,
            patterns,
            body,
        }
    }

    /// The names for a 404's "Available models": the first few, how many
    /// more, and the patterns any other name may match.
    pub fn available(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .pairs
            .iter()
            .take(MAX_IN_404)
            .map(|(m, _)| m.clone())
            .collect();
        if self.pairs.len() > MAX_IN_404 {
            out.push(format!(
                "and {} more (GET /v1/models)",
                self.pairs.len() - MAX_IN_404
            ));
        }
        for p in &self.patterns {
            out.push(format!("any name matching {p}"));
        }
        out
    }

    /// The model a probe of upstream `u` uses when none is named: the first
    /// of its models the catalog knows (a chat or embedding model), else its first.
    pub fn probe_model<'a>(&'a self, config: &Config, u: usize) -> Option<&'a str> {
        let names = self.per_upstream.get(u)?;
        names
            .iter()
            .find(|n| config.catalog.get(n).is_some())
            .or_else(|| names.first())
            .map(String::as_str)
    }
}

/// A `GET /v1/models` body of (model, owning upstream) pairs.
pub fn models_list<'a>(
    config: &Config,
    models: impl Iterator<Item = &'a (String, String)>,
) -> Bytes {
    let data: Vec<serde_json::Value> = models.map(|(id, up)| model_entry(config, id, up)).collect();
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}

/// One model of `GET /v1/models`, with its context window and output limit
/// when the catalog knows them (by its name, or the name its upstream uses).
pub fn model_entry(config: &Config, id: &str, owner: &str) -> serde_json::Value {
    let mut v = serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
    let upstream_name = config
        .upstreams
        .iter()
        .find(|u| u.name == owner)
        .and_then(|u| u.upstream_model(id));
    let known = config
        .catalog
        .first_known([Some(id), upstream_name].into_iter().flatten());
    if let (Some((_, l)), Some(o)) = (known, v.as_object_mut()) {
        o.insert("context_window".into(), l.context.into());
        if let Some(m) = l.max_output {
            o.insert("max_output_tokens".into(), m.into());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, &|_| None).unwrap()
    }

    #[test]
    fn announced_lists_keep_only_plausible_ids() {
        let body = br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":"gpt-*"},{"id":""},
            {"id":"a b"},{"id":42},{"id":"gpt-4o"},{"id":"llama3:8b"},{}]}"#;
        assert_eq!(
            parse_announced(body).unwrap(),
            vec!["gpt-4o".to_string(), "llama3:8b".to_string()]
        );
        assert!(parse_announced(b"<html>").is_none());
        assert!(parse_announced(br#"{"data":{}}"#).is_none());
        let many: Vec<String> = (0..5000).map(|i| format!(r#"{{"id":"m{i}"}}"#)).collect();
        let big = format!(r#"{{"data":[{}]}}"#, many.join(","));
        assert_eq!(
            parse_announced(big.as_bytes()).unwrap().len(),
            MAX_PER_UPSTREAM
        );
    }

    #[test]
    fn globs_list_catalog_names_until_the_upstream_announces_its_own() {
        let yaml = r#"
upstreams:
  - name: local
    base_url: http://127.0.0.1:9/v1
    models: ["fixed-model", "gpt-4o*"]
  - name: other
    base_url: http://127.0.0.1:8/v1
    models: ["*"]
    model_map: {alias: real}
"#;
        let cfg = config(yaml);
        let l = Listing::build(&cfg);
        assert_eq!(
            l.per_upstream[0],
            vec!["fixed-model", "gpt-4o", "gpt-4o-mini"]
        );
        assert_eq!(l.per_upstream[1][0], "alias");
        assert!(l.per_upstream[1].len() > 50, "the whole catalog for *");
        assert!(l.pairs.iter().all(|(m, _)| !is_pattern(m)));
        assert_eq!(l.pairs.iter().filter(|(m, _)| m == "gpt-4o").count(), 1);
        assert_eq!(l.patterns, vec!["gpt-4o*", "*"]);
        assert_eq!(l.probe_model(&cfg, 0), Some("gpt-4o"));
        let avail = l.available();
        assert!(avail.iter().any(|a| a.starts_with("and ")), "{avail:?}");
        assert!(avail.contains(&"any name matching gpt-4o*".to_string()));

        assert!(set_announced(
            "other",
            "http://127.0.0.1:8/v1",
            vec!["llama-3-8b".into(), "qwen2".into()]
        ));
        assert!(!set_announced(
            "other",
            "http://127.0.0.1:8/v1",
            vec!["llama-3-8b".into(), "qwen2".into()]
        ));
        let l = Listing::build(&cfg);
        assert_eq!(l.per_upstream[1], vec!["alias", "llama-3-8b", "qwen2"]);
        assert_eq!(l.probe_model(&cfg, 1), Some("alias"));
        let body: serde_json::Value = serde_json::from_slice(&l.body).unwrap();
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![
                "fixed-model",
                "gpt-4o",
                "gpt-4o-mini",
                "alias",
                "llama-3-8b",
                "qwen2"
            ]
        );
    }
}
