//! The old Node proxies' environment variables: a zero-file quick start
//! ([`quick_start`]: `GITHUB_TOKEN=… switchyard serve`) and overrides of a
//! file's values ([`overlay`]). Both edit the YAML tree after `${VAR}`
//! expansion and before validation, so a value from the environment is
//! checked like one written in the file; a malformed variable is an error
//! that names it.
//!
//! Overrides: `PORT` (the port of every API listener, unless the file
//! sets `listen`: then it is reported as ignored), `RATE_LIMIT_*`
//! (`limits.rpm`), `UPSTREAM_CONCURRENCY_ENABLED`, `UPSTREAM_MAX_CONCURRENT`,
//! `UPSTREAM_QUEUE_MAX`, `UPSTREAM_QUEUE_TIMEOUT_MS` (`limits.max_concurrent`,
//! `queue`, `queue_timeout`), `ENABLE_MODEL_THROTTLING`,
//! `MODEL_MIN_INTERVAL_MS` (`limits.model_min_interval`), `METRICS_ENABLED`,
//! `METRICS_PATH` (`metrics.path`); `OPENAI_API_KEY(S)` give the keys of an
//! upstream named `openai` and `GITHUB_TOKEN`, `GITHUB_TOKEN2..N` those of
//! one named `github` when the file lists none for it (keys the file lists
//! win, and the variable is reported as ignored); `OPENAI_BASE_URL` replaces
//! the `openai` upstream's base_url. An upstream the file does not have is
//! never added. A `*_ENABLED` variable
//! set to false turns its feature off; a value variable turns it on.
//! The quick start also reads `SWITCHYARD_ADMIN_LISTEN` (the admin
//! listener; default `127.0.0.1:4001`).

use serde_yaml::{Mapping, Value};

/// Every variable read here, for `--help`, the README and test hygiene.
pub const VARS: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENAI_API_KEYS",
    "OPENAI_BASE_URL",
    "GITHUB_TOKEN",
    "GITHUB_TOKEN2..N",
    "UPSTREAM_API_URL",
    "PORT",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_PER_MINUTE",
    "UPSTREAM_CONCURRENCY_ENABLED",
    "UPSTREAM_MAX_CONCURRENT",
    "UPSTREAM_QUEUE_MAX",
    "UPSTREAM_QUEUE_TIMEOUT_MS",
    "ENABLE_MODEL_THROTTLING",
    "MODEL_MIN_INTERVAL_MS",
    "METRICS_ENABLED",
    "METRICS_PATH",
];

/// Most `GITHUB_TOKEN<n>` variables read.
const MAX_GITHUB_TOKENS: usize = 100;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The variables that are set (non-empty), read once.
struct Vars<'a> {
    env: Env<'a>,
    used: Vec<String>,
    errors: Vec<String>,
}

impl Vars<'_> {
    fn get(&mut self, name: &str) -> Option<String> {
        let v = (self.env)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())?;
        self.used.push(name.to_string());
        Some(v)
    }

    /// Whether `name` is set, without counting it as applied.
    fn peek(&self, name: &str) -> bool {
        (self.env)(name).is_some_and(|v| !v.trim().is_empty())
    }

    fn number(&mut self, name: &str, max: u64) -> Option<u64> {
        let v = self.get(name)?;
        match v.parse::<u64>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                self.errors.push(format!(
                    "environment {name}: {v:?} is not a whole number between 0 and {max}"
                ));
                None
            }
        }
    }

    /// `Some(true/false)` for a set switch.
    fn switch(&mut self, name: &str) -> Option<bool> {
        let v = self.get(name)?;
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.errors
                    .push(format!("environment {name}: {v:?} is not true or false"));
                None
            }
        }
    }

    /// `OPENAI_API_KEYS` (comma list or `[{"key":..,"weight":2}]`) then `OPENAI_API_KEY`.
    fn openai_keys(&mut self) -> Vec<Value> {
        let mut keys: Vec<Value> = Vec::new();
        if let Some(list) = self.get("OPENAI_API_KEYS") {
            if list.starts_with('[') {
                match serde_json::from_str::<serde_json::Value>(&list) {
                    Ok(serde_json::Value::Array(items)) => {
                        for item in items {
                            match serde_yaml::to_value(&item) {
                                Ok(v) if item.is_string() || item.get("key").is_some() => {
                                    keys.push(v)
                                }
                                _ => self.errors.push(
                                    "environment OPENAI_API_KEYS: each item must be a key or {\"key\": …, \"weight\": n}".into(),
                                ),
                            }
                        }
                    }
                    _ => self.errors.push(
                        "environment OPENAI_API_KEYS: not a JSON array (give a comma list or [{\"key\": …}])".into(),
                    ),
                }
            } else {
                keys.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(|k| Value::String(k.into())),
                );
            }
        }
        if let Some(k) = self.get("OPENAI_API_KEY") {
            let present = keys.iter().any(|x| {
                x.as_str() == Some(k.as_str())
                    || x.get("key").and_then(Value::as_str) == Some(k.as_str())
            });
            if !present {
                keys.insert(0, Value::String(k));
            }
        }
        keys
    }

    /// `GITHUB_TOKEN`, `GITHUB_TOKEN2`, … (gaps allowed).
    fn github_tokens(&mut self) -> Vec<Value> {
        let mut keys: Vec<Value> = self
            .get("GITHUB_TOKEN")
            .map(Value::String)
            .into_iter()
            .collect();
        for n in 1..=MAX_GITHUB_TOKENS {
            if let Some(t) = self.get(&format!("GITHUB_TOKEN{n}")) {
                if !keys.iter().any(|k| k.as_str() == Some(t.as_str())) {
                    keys.push(Value::String(t));
                }
            }
        }
        keys
    }
}

fn map(v: &mut Value) -> &mut Mapping {
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    match v {
        Value::Mapping(m) => m,
        _ => unreachable!("made a mapping just above"),
    }
}

fn section<'a>(tree: &'a mut Value, name: &str) -> &'a mut Mapping {
    let m = map(tree);
    let entry = m
        .entry(Value::String(name.into()))
        .or_insert(Value::Mapping(Mapping::new()));
    map(entry)
}

fn set(m: &mut Mapping, key: &str, v: Value) {
    m.insert(Value::String(key.into()), v);
}

/// A feature behind a `*_ENABLED` switch (`on`) and a value variable:
/// switched off removes `key`; a value sets it; switched on without a value
/// sets `default` unless `key` is already set.
fn switched(m: &mut Mapping, key: &str, on: Option<bool>, value: Option<Value>, default: Value) {
    let k = Value::String(key.into());
    match (on, value) {
        (Some(false), _) => {
            m.remove(&k);
        }
        (_, Some(v)) => {
            m.insert(k, v);
        }
        (Some(true), None) if !m.contains_key(&k) => {
            m.insert(k, default);
        }
        _ => {}
    }
}

/// Whether the environment names an upstream (then `serve` and `check`
/// without a config file build their config from it).
pub fn names_an_upstream(env: Env<'_>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    [
        "OPENAI_API_KEY",
        "OPENAI_API_KEYS",
        "GITHUB_TOKEN",
        "UPSTREAM_API_URL",
    ]
    .iter()
    .any(|k| set(k))
        || (1..=MAX_GITHUB_TOKENS).any(|n| set(&format!("GITHUB_TOKEN{n}")))
}

/// The YAML of a config built from the environment alone: its upstreams
/// (`UPSTREAM_API_URL`'s, else `openai` from `OPENAI_*`, and `github` from
/// `GITHUB_TOKEN*`; the demo when none) and the seeds' defaults: 30 rpm,
/// 5 calls in flight with a queue of 50 and 30 s, pacing off.
pub fn quick_start(env: Env<'_>) -> Result<(Value, Vec<String>), Vec<String>> {
    let mut v = Vars {
        env,
        used: Vec::new(),
        errors: Vec::new(),
    };
    let mut tree = Value::Mapping(Mapping::new());
    if let Some(a) = v.get("SWITCHYARD_ADMIN_LISTEN") {
        set(section(&mut tree, "admin"), "listen", a.into());
    }
    let limits = section(&mut tree, "limits");
    set(limits, "rpm", 30.into());
    set(limits, "max_concurrent", 5.into());
    set(limits, "queue", 50.into());
    set(limits, "queue_timeout", "30s".into());
    let openai = v.openai_keys();
    let github = v.github_tokens();
    let mut upstreams: Vec<Value> = Vec::new();
    if let Some(urls) = v.get("UPSTREAM_API_URL") {
        let keys = if openai.is_empty() { &github } else { &openai };
        for (i, url) in urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .enumerate()
        {
            let base = ["/chat/completions", "/completions", "/responses"]
                .iter()
                .find_map(|s| url.trim_end_matches('/').strip_suffix(s))
                .unwrap_or(url.trim_end_matches('/'));
            let mut u = Mapping::new();
            set(&mut u, "name", format!("upstream-{}", i + 1).into());
            set(&mut u, "base_url", base.into());
            set(&mut u, "keys", Value::Sequence(keys.clone()));
            upstreams.push(Value::Mapping(u));
        }
    } else {
        if !openai.is_empty() {
            let mut u = Mapping::new();
            set(&mut u, "name", "openai".into());
            let base = v
                .get("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into());
            set(&mut u, "base_url", base.into());
            if openai.iter().any(|k| k.get("weight").is_some()) {
                set(&mut u, "key_strategy", "weighted".into());
            }
            set(&mut u, "keys", Value::Sequence(openai));
            upstreams.push(Value::Mapping(u));
        }
        if !github.is_empty() {
            let mut u = Mapping::new();
            set(&mut u, "name", "github".into());
            set(
                &mut u,
                "base_url",
                "https://models.github.ai/inference".into(),
            );
            set(&mut u, "key_strategy", "sticky".into());
            set(&mut u, "continuation", "restart".into());
            set(&mut u, "keys", Value::Sequence(github));
            upstreams.push(Value::Mapping(u));
        }
    }
    if upstreams.is_empty() {
        let mut u = Mapping::new();
        set(&mut u, "name", "demo".into());
        set(&mut u, "kind", "demo".into());
        upstreams.push(Value::Mapping(u));
    }
    set(map(&mut tree), "upstreams", Value::Sequence(upstreams));
    let used = std::mem::take(&mut v.used);
    let mut errors = std::mem::take(&mut v.errors);
    match overlay(&mut tree, env) {
        Ok(more) => {
            // the overlay reads the upstream variables again: each name once
            let mut all = used;
            for name in more.applied {
                if !all.contains(&name) {
                    all.push(name);
                }
            }
            if errors.is_empty() {
                Ok((tree, all))
            } else {
                Err(errors)
            }
        }
        Err(e) => {
            errors.extend(e);
            Err(errors)
        }
    }
}

/// The key variables, as `check` names them.
const OPENAI_KEYS: &str = "OPENAI_API_KEY(S)";
const GITHUB_KEYS: &str = "GITHUB_TOKEN*";

/// Applies the variables that are set to `tree` (see the module doc);
/// returns the names applied and those left unapplied, with why.
pub fn overlay(tree: &mut Value, env: Env<'_>) -> Result<Overlay, Vec<String>> {
    let mut v = Vars {
        env,
        used: Vec::new(),
        errors: Vec::new(),
    };
    let mut ignored = Vec::new();
    let file_listens = map(tree).contains_key(Value::String("listen".into()));
    if file_listens && v.peek("PORT") {
        ignored.push("PORT (the file sets listen: change the port there)".to_string());
    } else if let Some(port) = v.number("PORT", 65535) {
        let m = map(tree);
        let listen = m
            .get(Value::String("listen".into()))
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:4000".into());
        let with_port = |addr: &str| -> String {
            match addr.rsplit_once(':') {
                Some((host, _)) if !addr.starts_with('/') => format!("{host}:{port}"),
                _ => addr.to_string(),
            }
        };
        let edit = |l: &Value| -> Value {
            match l {
                Value::String(s) => with_port(s).into(),
                Value::Mapping(full) => {
                    let mut full = full.clone();
                    if let Some(Value::String(a)) = full.get(Value::String("addr".into())) {
                        let a = with_port(a);
                        set(&mut full, "addr", a.into());
                    }
                    Value::Mapping(full)
                }
                other => other.clone(),
            }
        };
        let listen = match &listen {
            Value::Sequence(items) => Value::Sequence(items.iter().map(edit).collect()),
            one => edit(one),
        };
        set(m, "listen", listen);
    }
    let rate = v.switch("RATE_LIMIT_ENABLED");
    let rpm = v.number("RATE_LIMIT_PER_MINUTE", 1_000_000_000);
    let conc = v.switch("UPSTREAM_CONCURRENCY_ENABLED");
    let max = v.number("UPSTREAM_MAX_CONCURRENT", 100_000);
    let queue = v.number("UPSTREAM_QUEUE_MAX", 100_000);
    let queue_ms = v.number("UPSTREAM_QUEUE_TIMEOUT_MS", 24 * 3_600_000);
    let pace = v.switch("ENABLE_MODEL_THROTTLING");
    let pace_ms = v.number("MODEL_MIN_INTERVAL_MS", 3_600_000);
    let metrics_on = v.switch("METRICS_ENABLED");
    let metrics_path = v.get("METRICS_PATH");
    let limits = section(tree, "limits");
    switched(limits, "rpm", rate, rpm.map(Value::from), 30.into());
    switched(
        limits,
        "max_concurrent",
        conc,
        max.map(Value::from),
        5.into(),
    );
    if let Some(q) = queue {
        set(limits, "queue", q.into());
    }
    if let Some(ms) = queue_ms {
        set(limits, "queue_timeout", format!("{ms}ms").into());
    }
    let pace_ms = pace_ms.map(|ms| Value::from(format!("{ms}ms")));
    switched(limits, "model_min_interval", pace, pace_ms, "2000ms".into());
    let metrics = section(tree, "metrics");
    let path = metrics_path.map(Value::from);
    switched(metrics, "path", metrics_on, path, "/metrics".into());
    // keys and base URLs of the upstreams the file names `openai` / `github`
    let openai = v.openai_keys();
    let base = v.get("OPENAI_BASE_URL");
    let github = v.github_tokens();
    let mut keys_applied: Vec<&str> = Vec::new();
    if let Some(Value::Sequence(ups)) = map(tree).get_mut(Value::String("upstreams".into())) {
        for u in ups.iter_mut().filter_map(|u| match u {
            Value::Mapping(m) => Some(m),
            _ => None,
        }) {
            let name = u
                .get(Value::String("name".into()))
                .and_then(Value::as_str)
                .map(str::to_string);
            let (vars, keys) = match name.as_deref() {
                Some("openai") => {
                    if let Some(b) = &base {
                        set(u, "base_url", b.clone().into());
                    }
                    (OPENAI_KEYS, &openai)
                }
                Some("github") => (GITHUB_KEYS, &github),
                _ => continue,
            };
            if keys.is_empty() {
                continue;
            }
            // the environment's keys fill an upstream without keys of its own
            match u.get(Value::String("keys".into())) {
                None | Some(Value::Null) => {
                    set(u, "keys", Value::Sequence(keys.clone()));
                    keys_applied.push(vars);
                }
                Some(Value::Sequence(own)) if own.is_empty() => {
                    set(u, "keys", Value::Sequence(keys.clone()));
                    keys_applied.push(vars);
                }
                Some(Value::Sequence(own)) if own == keys => keys_applied.push(vars),
                Some(_) => ignored.push(format!(
                    "{vars} (upstream {} lists its own keys)",
                    name.as_deref().unwrap_or("?")
                )),
            }
        }
    }
    for (vars, keys, name) in [
        (OPENAI_KEYS, &openai, "openai"),
        (GITHUB_KEYS, &github, "github"),
    ] {
        let decided = keys_applied.contains(&vars) || ignored.iter().any(|i| i.starts_with(vars));
        if !keys.is_empty() && !decided {
            ignored.push(format!("{vars} (the file has no upstream named {name})"));
        }
    }
    // key variables count as applied only where they gave an upstream its keys
    v.used.retain(|n| {
        let group = if n.starts_with("OPENAI_API_KEY") {
            OPENAI_KEYS
        } else if n.starts_with("GITHUB_TOKEN") {
            GITHUB_KEYS
        } else {
            return true;
        };
        keys_applied.contains(&group)
    });
    if v.errors.is_empty() {
        Ok(Overlay {
            applied: v.used,
            ignored,
        })
    } else {
        Err(v.errors)
    }
}

/// What [`overlay`] did: the variables it applied, and those it left
/// unapplied (with why) because the file says otherwise.
#[derive(Debug, Default)]
pub struct Overlay {
    pub applied: Vec<String>,
    pub ignored: Vec<String>,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn github_tokens_alone_make_a_github_gateway_with_the_seeds_defaults() {
        let env = env_of(&[
            ("GITHUB_TOKEN", "ghp_aaaaaaaaaaaaaaaaaaaa1"),
            ("GITHUB_TOKEN2", "ghp_aaaaaaaaaaaaaaaaaaaa2"),
            ("GITHUB_TOKEN4", "ghp_aaaaaaaaaaaaaaaaaaaa4"),
        ]);
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.upstreams.len(), 1);
        let u = &c.upstreams[0];
        assert_eq!(u.name, "github");
        assert_eq!(u.keys.len(), 3);
        assert_eq!(u.key_strategy.as_str(), "sticky");
        assert_eq!(c.limits.rpm, Some(30));
        assert_eq!(c.limits.max_concurrent, Some(5));
        assert_eq!(c.limits.queue, 50);
        assert_eq!(c.limits.queue_timeout.as_secs(), 30);
        assert_eq!(c.limits.model_min_interval, None);
    }

    #[test]
    fn openai_keys_in_both_forms_and_the_switches() {
        let env = env_of(&[
            (
                "OPENAI_API_KEYS",
                r#"[{"key":"sk-one-aaaaaaaaaaaa","weight":2},"sk-two-bbbbbbbbbbbb"]"#,
            ),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
            ("RATE_LIMIT_ENABLED", "false"),
            ("UPSTREAM_MAX_CONCURRENT", "2"),
            ("UPSTREAM_QUEUE_TIMEOUT_MS", "1500"),
            ("ENABLE_MODEL_THROTTLING", "true"),
            ("PORT", "4555"),
            ("METRICS_ENABLED", "true"),
        ]);
        let c = Config::from_env(&env).unwrap();
        let u = &c.upstreams[0];
        assert_eq!((u.name.as_str(), u.keys.len()), ("openai", 2));
        assert_eq!(u.keys[0].weight, 2);
        assert_eq!(c.limits.rpm, None);
        assert_eq!(c.limits.max_concurrent, Some(2));
        assert_eq!(c.limits.queue_timeout.as_millis(), 1500);
        assert_eq!(
            c.limits.model_min_interval.map(|d| d.as_millis()),
            Some(2000)
        );
        assert_eq!(c.listen[0].addr, "127.0.0.1:4555");
        assert_eq!(c.metrics_path.as_deref(), Some("/metrics"));
        let comma = env_of(&[(
            "OPENAI_API_KEYS",
            "sk-a-aaaaaaaaaaaaaa, sk-b-bbbbbbbbbbbbbb,",
        )]);
        assert_eq!(Config::from_env(&comma).unwrap().upstreams[0].keys.len(), 2);
    }

    #[test]
    fn upstream_api_url_makes_one_upstream_per_url() {
        let env = env_of(&[
            (
                "UPSTREAM_API_URL",
                "http://127.0.0.1:1/v1/chat/completions, http://127.0.0.1:2/v1/",
            ),
            ("GITHUB_TOKEN", "ghp_aaaaaaaaaaaaaaaaaaaa1"),
        ]);
        let c = Config::from_env(&env).unwrap();
        let bases: Vec<String> = c
            .upstreams
            .iter()
            .map(|u| match &u.kind {
                crate::config::UpstreamKind::Http(b) => b.to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(bases, ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]);
        assert!(c.upstreams.iter().all(|u| u.keys.len() == 1));
    }

    #[test]
    fn hostile_values_are_errors_naming_the_variable() {
        for (k, v) in [
            ("RATE_LIMIT_PER_MINUTE", "thirty"),
            ("PORT", "70000"),
            ("UPSTREAM_QUEUE_MAX", "-1"),
            ("ENABLE_MODEL_THROTTLING", "maybe"),
            ("OPENAI_API_KEYS", "[1, 2"),
        ] {
            let env = env_of(&[("GITHUB_TOKEN", "ghp_aaaaaaaaaaaaaaaaaaaa1"), (k, v)]);
            let e = Config::from_env(&env).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
        // a value the config rejects names its YAML path
        let env = env_of(&[("GITHUB_TOKEN", "ghp_x"), ("RATE_LIMIT_PER_MINUTE", "0")]);
        let e = Config::from_env(&env).unwrap_err();
        assert!(e.to_string().contains("limits.rpm"), "{e}");
    }

    #[test]
    fn overrides_change_a_files_values_but_add_no_upstream() {
        let env = env_of(&[
            ("RATE_LIMIT_PER_MINUTE", "12"),
            ("OPENAI_API_KEY", "sk-env-aaaaaaaaaaaaaaaa"),
            ("GITHUB_TOKEN", "ghp_not_used_aaaaaaaaaa"),
            ("PORT", "4999"),
        ]);
        let c = Config::from_yaml(
            "listen: [0.0.0.0:4000, {addr: '127.0.0.1:4002'}]\nlimits: {rpm: 100}\nupstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1', keys: [sk-file-bbbbbbbbbbbbbbb]}\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.limits.rpm, Some(12));
        assert_eq!(c.upstreams.len(), 1, "no github upstream was added");
        // the file's own keys and listeners win; the variables are reported
        assert_eq!(c.upstreams[0].keys[0].secret, "sk-file-bbbbbbbbbbbbbbb");
        let addrs: Vec<&str> = c.listen.iter().map(|l| l.addr.as_str()).collect();
        assert_eq!(addrs, ["0.0.0.0:4000", "127.0.0.1:4002"]);
        assert!(c.env_applied.contains(&"RATE_LIMIT_PER_MINUTE".to_string()));
        assert!(!c.env_applied.contains(&"PORT".to_string()));
        let ignored = c.env_ignored.join("; ");
        assert!(
            ignored.contains("PORT") && ignored.contains("OPENAI_API_KEY"),
            "{ignored}"
        );

        // a file without listen or keys takes them from the environment
        let c = Config::from_yaml(
            "upstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1'}\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.upstreams[0].keys[0].secret, "sk-env-aaaaaaaaaaaaaaaa");
        assert_eq!(c.listen[0].addr, "127.0.0.1:4999");
        assert_eq!(
            c.env_ignored,
            vec!["GITHUB_TOKEN* (the file has no upstream named github)"]
        );
        // keys the file took from the same variable are not a conflict
        let c = Config::from_yaml(
            "listen: 127.0.0.1:4000\nupstreams:\n  - {name: openai, base_url: 'https://api.openai.com/v1', keys: ['${OPENAI_API_KEY}']}\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.env_ignored,
            vec![
                "PORT (the file sets listen: change the port there)",
                "GITHUB_TOKEN* (the file has no upstream named github)"
            ]
        );
    }
}
