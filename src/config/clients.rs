//! `clients:`: who may call the API listener, validated (every problem
//! named by its YAML path).

use super::edge::Nets;
use super::raw::RawClient;
use super::sections::{check_concurrency, check_rate, Problems};
use sha2::{Digest, Sha256};

/// A client allowed to call the API listener.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    /// SHA-256 of the client's key; the plaintext is never kept.
    pub key_sha256: [u8; 32],
    /// Model globs this client may use; empty = all.
    pub models: Vec<String>,
    /// With `models`: path globs outside the understood endpoints it may use.
    pub endpoints: Vec<String>,
    /// Served only from these addresses; empty = all.
    pub allow_ips: Nets,
    /// After this the key is refused (401 saying so); `None`: never.
    pub expires: Option<std::time::SystemTime>,
    /// At most this many requests in any minute; `None`: no limit.
    pub rpm: Option<u32>,
    /// At most this many tokens in any minute; `None`: no limit.
    pub tpm: Option<u64>,
    /// At most this many calls in flight; `None`: no limit.
    pub max_concurrent: Option<u32>,
    /// Tokens and money per day, week or month.
    pub quotas: Vec<super::quota::Quota>,
    /// Made at run time (admin API), not read from the config file.
    pub runtime: bool,
}

/// `clients:` (absent: only loopback callers are served).
#[derive(Debug, Clone, Default)]
pub struct Clients(pub Vec<Client>);

impl TryFrom<Vec<RawClient>> for Clients {
    type Error = Problems;

    fn try_from(list: Vec<RawClient>) -> Result<Self, Problems> {
        let mut e = Vec::new();
        let mut names = std::collections::HashSet::new();
        let clients = list
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let path = format!("clients[{i}]");
                if !names.insert(c.name.clone()) {
                    e.push(format!("{path}.name: duplicate client name {:?}", c.name));
                }
                check_concurrency(&format!("{path}.max_concurrent"), c.max_concurrent, &mut e);
                check_rate(&path, c.rpm, c.tpm, &mut e);
                let allow_ips = Nets::parse(&format!("{path}.allow_ips"), c.allow_ips, &mut e);
                let quotas = super::quota::parse(
                    &format!("{path}.quotas"),
                    c.quotas.as_deref().unwrap_or_default(),
                )
                .unwrap_or_else(|errs| {
                    e.extend(errs);
                    Vec::new()
                });
                if c.endpoints.is_some() && c.models.is_none() {
                    e.push(format!(
                        "{path}.endpoints: only means something with `models` (a client without `models` may use every path)"
                    ));
                }
                let expires = c.expires.as_deref().and_then(|t| {
                    humantime::parse_rfc3339_weak(t.trim())
                        .map_err(|err| {
                            e.push(format!(
                                "{path}.expires: {t:?} is not an RFC 3339 time in UTC such as 2027-06-30T00:00:00Z ({err})"
                            ))
                        })
                        .ok()
                });
                let hash = key_hash(&path, c.key.as_deref(), c.key_sha256.as_deref(), &mut e)?;
                Some(Client {
                    name: c.name,
                    key_sha256: hash,
                    models: c.models.unwrap_or_default(),
                    endpoints: c.endpoints.unwrap_or_default(),
                    allow_ips,
                    expires,
                    rpm: c.rpm,
                    tpm: c.tpm,
                    max_concurrent: c.max_concurrent,
                    quotas,
                    runtime: false,
                })
            })
            .collect();
        if e.is_empty() {
            Ok(Clients(clients))
        } else {
            Err(e)
        }
    }
}

/// A client's key hash from its `key` or `key_sha256` (exactly one, at `path`).
fn key_hash(
    path: &str,
    key: Option<&str>,
    hash: Option<&str>,
    e: &mut Problems,
) -> Option<[u8; 32]> {
    match (key, hash) {
        (Some(k), None) if !k.is_empty() => Some(Sha256::digest(k.as_bytes()).into()),
        (None, Some(h)) => {
            let bytes = hex::decode(h.trim()).ok().filter(|b| b.len() == 32);
            let out = bytes.and_then(|b| <[u8; 32]>::try_from(b).ok());
            if out.is_none() {
                e.push(format!(
                    "{path}.key_sha256: expected 64 hex digits (see `switchyard hash-key`)"
                ));
            }
            out
        }
        (Some(_), Some(_)) => {
            e.push(format!("{path}: give key or key_sha256, not both"));
            None
        }
        _ => {
            e.push(format!(
                "{path}.key: a non-empty key (or key_sha256) is required"
            ));
            None
        }
    }
}
