//! `kind: azure`: Azure OpenAI. Two URL forms:
//! - the deployment form: `base_url: https://R.openai.azure.com/openai` with
//!   `deployments` (model → deployment) and `api_version`; a call goes to
//!   `…/openai/deployments/D/chat/completions?api-version=V`;
//! - the v1 form: `base_url: https://R.openai.azure.com/openai/v1`, OpenAI's
//!   own paths (`api_version` optional).
//!
//! Either way the key goes in the `api-key` header.

use super::raw::RawUpstream;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Azure {
    /// Added to every call as `?api-version=`.
    pub api_version: Option<String>,
    /// Client-facing model → deployment name; empty in the v1 form.
    pub deployments: BTreeMap<String, String>,
}

impl Azure {
    /// The deployment a call for `model` (known upstream as
    /// `upstream_model`) goes to, in the deployment form: its entry, or the
    /// model's own name. `None` in the v1 form.
    pub fn deployment<'a>(&'a self, model: &'a str, upstream_model: &'a str) -> Option<&'a str> {
        if self.deployments.is_empty() {
            return None;
        }
        Some(
            self.deployments
                .get(model)
                .map_or(upstream_model, String::as_str),
        )
    }

    /// The path and query a call goes to: `base`, the deployment (for the
    /// per-deployment endpoints only), `suffix`, the call's `query` with
    /// the gateway's `api-version` in place of any the client sent. `Err`:
    /// the model cannot name a deployment (it would change the URL).
    pub fn path(
        &self,
        base: &str,
        (suffix, query): (&str, Option<&str>),
        (model, upstream_model): (&str, &str),
    ) -> Result<String, String> {
        let mut path = String::with_capacity(base.len() + suffix.len() + 64);
        path.push_str(base);
        let per_deployment = ["/chat/completions", "/completions", "/embeddings"].contains(&suffix)
            || ["/audio/", "/images/"]
                .iter()
                .any(|p| suffix.starts_with(p));
        if let Some(d) = self
            .deployment(model, upstream_model)
            .filter(|_| per_deployment)
        {
            if !url_safe(d) || d.chars().all(|c| c == '.') {
                return Err(format!("{d:?} cannot name an Azure deployment"));
            }
            path.push_str("/deployments/");
            path.push_str(d);
        }
        path.push_str(suffix);
        let version = self.api_version.as_deref();
        let ours = |p: &&str| {
            let name = p.split('=').next().unwrap_or("");
            version.is_none() || !name.eq_ignore_ascii_case("api-version")
        };
        let mut sep = '?';
        for p in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|p| !p.is_empty())
            .filter(ours)
        {
            path.push(sep);
            path.push_str(p);
            sep = '&';
        }
        if let Some(v) = version {
            path.push(sep);
            path.push_str("api-version=");
            path.push_str(v);
        }
        Ok(path)
    }
}

/// Characters a deployment name or an api-version may hold (they go into
/// the URL as they are).
fn url_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The `azure` settings of `u` (`Some` only for `kind: azure`); problems
/// go to `e`. `base_path`: the base_url's path.
pub fn validate(
    path: &str,
    u: &RawUpstream,
    base_path: &str,
    e: &mut Vec<String>,
) -> Option<Azure> {
    let azure = u.kind == super::raw::RawKind::Azure;
    if !azure {
        if u.api_version.is_some() {
            e.push(format!("{path}.api_version: only for kind: azure"));
        }
        if !u.deployments.is_empty() {
            e.push(format!("{path}.deployments: only for kind: azure"));
        }
        return None;
    }
    if let Some(v) = u.api_version.as_deref().filter(|v| !url_safe(v)) {
        e.push(format!(
            "{path}.api_version: {v:?} is not an API version (e.g. 2024-10-21)"
        ));
    }
    for (model, d) in &u.deployments {
        if !url_safe(d) {
            e.push(format!(
                "{path}.deployments.{model}: {d:?} must use only letters, digits, '-', '_' or '.'"
            ));
        }
    }
    let v1 = base_path.ends_with("/v1");
    if u.deployments.is_empty() && !v1 {
        e.push(format!(
            "{path}.deployments: required (model → deployment) unless base_url is the \
             /openai/v1 form (e.g. https://R.openai.azure.com/openai/v1)"
        ));
    }
    if !u.deployments.is_empty() {
        if v1 {
            e.push(format!(
                "{path}.base_url: the deployment form ends in /openai, not /v1 \
                 (e.g. https://R.openai.azure.com/openai)"
            ));
        }
        if u.api_version.is_none() {
            e.push(format!(
                "{path}.api_version: required with deployments (e.g. 2024-10-21)"
            ));
        }
    }
    Some(Azure {
        api_version: u.api_version.clone(),
        deployments: u.deployments.clone(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(upstream: &str) -> Result<Config, String> {
        fn env(_: &str) -> Option<String> {
            None
        }
        Config::from_yaml(&format!("upstreams: [{upstream}]"), &env).map_err(|e| e.0.join("\n"))
    }

    #[test]
    fn both_forms_and_errors_naming_the_field() {
        let c = load(
            "{name: az, kind: azure, base_url: 'https://r.openai.azure.com/openai', \
             api_version: 2024-10-21, deployments: {gpt-4o: prod-4o}}",
        )
        .unwrap();
        let a = c.upstreams[0].azure.clone().unwrap();
        assert_eq!(
            c.upstreams[0].models,
            ["gpt-4o"],
            "models default to the deployments"
        );
        assert_eq!(a.deployment("gpt-4o", "gpt-4o"), Some("prod-4o"));
        assert_eq!(
            a.deployment("o3", "o3"),
            Some("o3"),
            "a model names its own deployment"
        );
        let v1 = load("{name: az, kind: azure, base_url: 'https://r.openai.azure.com/openai/v1'}")
            .unwrap();
        let a = v1.upstreams[0].azure.clone().unwrap();
        assert_eq!(a.deployment("gpt-4o", "gpt-4o"), None);
        assert_eq!(a.api_version, None);
        assert_eq!(v1.upstreams[0].models, ["*"]);
        for (yaml, want) in [
            ("{name: az, kind: azure, base_url: 'https://r/openai'}", "upstreams[0].deployments: required"),
            ("{name: az, kind: azure, base_url: 'https://r/openai', deployments: {m: d}}", "upstreams[0].api_version: required"),
            ("{name: az, kind: azure, base_url: 'https://r/openai', api_version: '2024/../x', deployments: {m: d}}", "upstreams[0].api_version: \"2024/../x\""),
            ("{name: az, kind: azure, base_url: 'https://r/openai', api_version: v, deployments: {m: 'a/b?c'}}", "upstreams[0].deployments.m:"),
            ("{name: az, kind: azure, base_url: 'https://r/openai/v1', api_version: v, deployments: {m: d}}", "upstreams[0].base_url: the deployment form"),
            ("{name: az, kind: azure}", "upstreams[0].base_url: required"),
            ("{name: o, base_url: 'https://x/v1', api_version: v}", "upstreams[0].api_version: only for kind: azure"),
            ("{name: o, base_url: 'https://x/v1', deployments: {m: d}}", "upstreams[0].deployments: only for kind: azure"),
        ] {
            let err = load(yaml).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}
