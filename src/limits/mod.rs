//! Who may call the API listener. With a `clients:` section, a request needs a
//! configured client key (`Authorization: Bearer`, `api-key` or `x-api-key`)
//! and may use only that client's models; without it, only loopback callers are
//! served. Keys are compared by SHA-256, never stored in plaintext.

pub mod addr;
pub mod admit;
pub mod gate;
pub mod pace;
pub mod parts;
pub mod shared;
pub mod tokens;
pub mod window;

use crate::config::{glob_match, Client, Config};
use crate::error::GatewayError;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// No clients configured; a loopback caller.
    Local,
    /// Index into `config.clients`.
    Client(usize),
}

/// The client key a request carries, if any.
pub fn presented_key<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = get("authorization") {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
            .trim();
        if !token.is_empty() {
            return Some(token);
        }
    }
    get("api-key")
        .or_else(|| get("x-api-key"))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Decides who the caller is, from the key it presents and its address
/// (see [`addr::client_addr`]); a client's `allow_ips` are checked here.
pub fn authenticate(
    cfg: &Config,
    key: Option<&str>,
    addr: &addr::ClientAddr,
) -> Result<Caller, GatewayError> {
    let Some(clients) = &cfg.clients else {
        return if addr.local {
            Ok(Caller::Local)
        } else {
            Err(GatewayError::LoopbackOnly)
        };
    };
    let key = key.ok_or(GatewayError::Unauthorized)?;
    // a lookup by the key's SHA-256: its timing says nothing about the key
    // (finding a digest's neighbours means breaking SHA-256)
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let i = *cfg
        .client_index
        .get(&digest)
        .ok_or(GatewayError::Unauthorized)?;
    let client = clients.get(i).ok_or(GatewayError::Unauthorized)?;
    if let Some(at) = client.expires {
        if std::time::SystemTime::now() >= at {
            return Err(GatewayError::KeyExpired {
                at: humantime::format_rfc3339_seconds(at).to_string(),
            });
        }
    }
    if !client.allow_ips.is_empty()
        && !addr::permitted(addr.ip, &client.allow_ips, &Default::default())
    {
        return Err(GatewayError::AddressNotAllowed);
    }
    Ok(Caller::Client(i))
}

/// Counts a call of `caller` against its `clients[].rpm`, then against the
/// gateway's `limits.rpm`; over either, a 429 with the exact wait (a call the
/// gateway refuses still counted for its client). Without limits, no cost.
pub fn within_rpm(
    snap: &crate::state::Snapshot,
    caller: Caller,
    now_ms: u64,
) -> Result<Option<window::Admitted>, GatewayError> {
    let over = |w: &window::RequestWindow, who: &dyn Fn() -> String, setting| {
        w.admit(now_ms)
            .map_err(|wait_ms| GatewayError::ClientRateLimited {
                who: who(),
                setting,
                unit: crate::error::Unit::Requests,
                limit: w.limit().into(),
                retry_after: std::time::Duration::from_millis(wait_ms),
            })
    };
    let mut admitted = None;
    if let Caller::Client(i) = caller {
        if let Some(w) = snap.clients.windows.get(i).and_then(Option::as_ref) {
            let who = || format!("Client `{}`", client_name(snap, i));
            admitted = Some(over(w, &who, "clients[].rpm")?);
        }
    }
    if let Some(w) = &snap.gateway_window {
        over(w, &|| "The gateway".into(), "limits.rpm")?;
    }
    Ok(admitted)
}

/// A client's own `x-ratelimit-*` for its answers: its `rpm` (as admitted
/// just now) and its `tpm` (what is left now); none without limits. The
/// pooled keys' limits are never shown to clients.
pub fn client_limit_headers(
    snap: &crate::state::Snapshot,
    caller: Caller,
    rpm: Option<window::Admitted>,
    now_ms: u64,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let Caller::Client(i) = caller else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut add = |name: &'static str, value: http::HeaderValue| {
        out.push((http::HeaderName::from_static(name), value));
    };
    if let (Some(a), Some(w)) = (rpm, snap.clients.windows.get(i).and_then(Option::as_ref)) {
        add("x-ratelimit-limit-requests", w.limit().into());
        add("x-ratelimit-remaining-requests", a.remaining.into());
        let reset = format!("{}s", a.reset_ms.div_ceil(1000));
        if let Ok(v) = http::HeaderValue::from_str(&reset) {
            add("x-ratelimit-reset-requests", v);
        }
    }
    if let Some(w) = snap.clients.tokens.get(i).and_then(Option::as_ref) {
        add("x-ratelimit-limit-tokens", w.limit().into());
        add(
            "x-ratelimit-remaining-tokens",
            w.limit().saturating_sub(w.used(now_ms)).into(),
        );
    }
    out
}

/// A request's charges on token windows (its client's `tpm`, the gateway's),
/// settled when its usage is known.
#[derive(Default)]
pub struct TokenCharges(
    Vec<(Arc<tokens::TokenWindow>, tokens::Charge)>,
    Vec<shared::Reservation>,
    Option<crate::tenants::quota::Hold>,
);

impl TokenCharges {
    /// Keeps what the call reserved of its quotas, to settle with the rest.
    pub fn hold_quota(&mut self, hold: Option<crate::tenants::quota::Hold>) {
        self.2 = hold;
    }

    /// Charges the call's quotas what it used: `tokens`, and `cost` in picodollars.
    pub fn settle_quota(&self, tokens: u64, cost: u64) {
        if let Some(h) = &self.2 {
            h.settle(tokens, cost);
        }
    }

    /// Replaces the estimates with what the request used: the usage its
    /// answers reported, or nothing at all when no upstream answered it
    /// (`delivered` false). A delivered answer without usage keeps the estimate.
    pub fn settle(&self, used: Option<u64>, delivered: bool) {
        let actual = match (used, delivered) {
            (Some(n), _) => n,
            (None, false) => 0,
            (None, true) => return,
        };
        for (w, c) in &self.0 {
            w.correct(*c, actual);
        }
        for r in &self.1 {
            r.settle(actual);
        }
    }
}

/// Charges `tokens` (the request's estimate) on `caller`'s `clients[].tpm`
/// and the gateway's `limits.tpm`, if both have room; over either, 429 with
/// the exact wait (nothing charged), or [`GatewayError::TooLargeForLimit`]
/// when the estimate exceeds the whole limit.
pub fn within_tpm(
    snap: &crate::state::Snapshot,
    caller: Caller,
    now_ms: u64,
    tokens: u64,
) -> Result<TokenCharges, GatewayError> {
    let client = match caller {
        Caller::Client(i) => snap
            .clients
            .tokens
            .get(i)
            .and_then(Option::as_ref)
            .map(|w| {
                (
                    w,
                    format!("Client `{}`", client_name(snap, i)),
                    "clients[].tpm",
                )
            }),
        Caller::Local => None,
    };
    let gateway = snap
        .gateway_tokens
        .as_ref()
        .map(|w| (w, "The gateway".to_string(), "limits.tpm"));
    let windows: Vec<_> = client.into_iter().chain(gateway).collect();
    for (w, who, setting) in &windows {
        match w.check(now_ms, tokens) {
            Ok(()) => {}
            Err(tokens::Refusal::TooLarge) => {
                return Err(GatewayError::TooLargeForLimit {
                    who: who.clone(),
                    setting,
                    limit: w.limit(),
                    estimated: tokens,
                })
            }
            Err(tokens::Refusal::Wait(ms)) => {
                return Err(GatewayError::ClientRateLimited {
                    who: who.clone(),
                    setting,
                    unit: crate::error::Unit::Tokens,
                    limit: w.limit(),
                    retry_after: std::time::Duration::from_millis(ms),
                })
            }
        }
    }
    let mut charges = TokenCharges::default();
    for (w, _, _) in windows {
        // checked just now (a request racing this one may overfill by one estimate)
        charges.0.push((w.clone(), w.force(now_ms, tokens)));
    }
    Ok(charges)
}

/// Every limit counted here that a live config still uses: (store name, limit).
pub fn registered() -> Vec<(String, Arc<dyn shared::Shareable>)> {
    let mut out: Vec<(String, Arc<dyn shared::Shareable>)> = Vec::new();
    window::each_window(|name, limit, w| {
        out.push((format!("rpm:{name}:{limit}"), w));
    });
    tokens::each_window(|name, limit, w| {
        out.push((format!("tpm:{name}:{limit}"), w));
    });
    window::each_slots(|name, limit, s| {
        out.push((format!("conc:client {name}:{limit}"), s));
    });
    out
}

/// Takes one of `caller`'s `clients[].max_concurrent` slots (`None` without a
/// limit); all taken → 429 at once.
pub fn take_slot(
    snap: &crate::state::Snapshot,
    caller: Caller,
) -> Result<Option<window::Slot>, GatewayError> {
    let Caller::Client(i) = caller else {
        return Ok(None);
    };
    let Some(slots) = snap.clients.slots.get(i).and_then(Option::as_ref) else {
        return Ok(None);
    };
    slots
        .take()
        .map(Some)
        .ok_or_else(|| GatewayError::TooManyInFlight {
            client: client_name(snap, i).to_string(),
            limit: slots.limit(),
        })
}

/// The configured name of client `i` (`-` if there is none).
fn client_name(snap: &crate::state::Snapshot, i: usize) -> &str {
    let client = snap.config.clients.as_ref().and_then(|c| c.get(i));
    client.map_or("-", |c| c.name.as_str())
}

/// Whether a presented secret equals the expected one, in constant time
/// (both are hashed first, so their lengths do not show either).
pub fn secrets_equal(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let a: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    a.ct_eq(&b).into()
}

/// Whether the caller may use only some models (a client with `models`).
pub fn restricted(cfg: &Config, caller: &Caller) -> bool {
    match caller {
        Caller::Local => false,
        Caller::Client(i) => cfg
            .clients
            .as_ref()
            .and_then(|c| c.get(*i))
            .is_some_and(|c| !c.models.is_empty()),
    }
}

/// The client's name for logs (`-` for local callers).
pub fn caller_name<'a>(cfg: &'a Config, caller: &Caller) -> &'a str {
    match caller {
        Caller::Local => "-",
        Caller::Client(i) => cfg
            .clients
            .as_ref()
            .and_then(|c| c.get(*i))
            .map_or("-", |c: &Client| c.name.as_str()),
    }
}

/// The caller's client when it is limited to some `models`.
fn limited_client<'c>(cfg: &'c Config, caller: &Caller) -> Option<&'c Client> {
    let Caller::Client(i) = caller else {
        return None;
    };
    cfg.clients
        .as_ref()
        .and_then(|c| c.get(*i))
        .filter(|c| !c.models.is_empty())
}

/// May this caller use `path`, outside the understood endpoints (and those
/// that run the model their body names)? A client limited to some `models`
/// only through its `endpoints`; every other caller may.
pub fn check_endpoint(cfg: &Config, caller: &Caller, path: &str) -> Result<(), GatewayError> {
    match limited_client(cfg, caller) {
        Some(c) if !c.endpoints.iter().any(|p| glob_match(p, path)) => {
            Err(GatewayError::EndpointNotAllowed {
                path: path.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// May this caller use `model`?
pub fn check_model(cfg: &Config, caller: &Caller, model: &str) -> Result<(), GatewayError> {
    match limited_client(cfg, caller) {
        Some(c) if !c.models.iter().any(|p| glob_match(p, model)) => {
            Err(GatewayError::ModelNotAllowed {
                model: model.to_string(),
                allowed: c
                    .models
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_loopback_addresses_and_endpoints() {
        let cfg = Config::from_yaml(
            "clients: [{name: a, key: sekrit, models: ['gpt-*'], endpoints: ['/v1/files*'], allow_ips: ['10.0.0.0/8']}, {name: b, key: open}]\nupstreams: [{name: d, kind: demo}]",
            &|_| None,
        )
        .unwrap();
        let at = |ip: &str| addr::ClientAddr {
            ip: ip.parse().ok(),
            local: ip.starts_with("127."),
        };
        assert!(matches!(
            authenticate(&cfg, Some("sekrit"), &at("10.0.0.1")),
            Ok(Caller::Client(0))
        ));
        assert!(matches!(
            authenticate(&cfg, Some("sekrit"), &at("11.0.0.1")),
            Err(GatewayError::AddressNotAllowed)
        ));
        assert!(matches!(
            authenticate(&cfg, Some("nope"), &at("10.0.0.1")),
            Err(GatewayError::Unauthorized)
        ));
        assert!(matches!(
            authenticate(&cfg, None, &at("127.0.0.1")),
            Err(GatewayError::Unauthorized)
        ));
        let caller = Caller::Client(0);
        assert!(check_model(&cfg, &caller, "gpt-4o").is_ok());
        assert!(check_model(&cfg, &caller, "llama").is_err());
        assert!(check_endpoint(&cfg, &caller, "/v1/files/f-1").is_ok());
        assert!(check_endpoint(&cfg, &caller, "/v1/batches").is_err());
        assert!(check_endpoint(&cfg, &Caller::Client(1), "/v1/batches").is_ok());

        let open = Config::from_yaml("upstreams: [{name: d, kind: demo}]", &|_| None).unwrap();
        assert!(authenticate(&open, None, &at("127.0.0.1")).is_ok());
        assert!(matches!(
            authenticate(&open, None, &at("10.0.0.1")),
            Err(GatewayError::LoopbackOnly)
        ));
    }

    #[test]
    fn secrets_compare_in_constant_time_and_by_value() {
        assert!(secrets_equal("t0ken", "t0ken"));
        assert!(!secrets_equal("t0ken", "t0kex"));
        assert!(!secrets_equal("t0ke", "t0ken"));
        assert!(!secrets_equal("", "t0ken"));
    }

    #[test]
    fn a_hundred_clients_one_lookup() {
        let clients: String = (0..100)
            .map(|i| format!("  - {{name: c{i}, key: client-key-{i:03}-xxxxxxxx}}\n"))
            .collect();
        let cfg = Config::from_yaml(
            &format!("clients:\n{clients}upstreams: [{{name: d, kind: demo}}]"),
            &|_| None,
        )
        .unwrap();
        let unix = addr::ClientAddr {
            ip: None,
            local: true,
        };
        assert!(matches!(
            authenticate(&cfg, Some("client-key-077-xxxxxxxx"), &unix),
            Ok(Caller::Client(77))
        ));
        assert!(matches!(
            authenticate(&cfg, Some("client-key-100-xxxxxxxx"), &unix),
            Err(GatewayError::Unauthorized)
        ));
        let dup = Config::from_yaml(
            "clients: [{name: a, key: same-key}, {name: b, key: same-key}]\nupstreams: [{name: d, kind: demo}]",
            &|_| None,
        )
        .unwrap_err();
        assert!(
            dup.0[0].starts_with("clients[1]:") && dup.0[0].contains("same key"),
            "{dup}"
        );
    }

    #[test]
    fn presented_key_forms() {
        let h = |name: &str| -> Option<&str> {
            if name == "authorization" {
                Some("Bearer abc")
            } else {
                None
            }
        };
        assert_eq!(presented_key(h), Some("abc"));
        let h = |name: &str| -> Option<&str> {
            if name == "x-api-key" {
                Some("k")
            } else {
                None
            }
        };
        assert_eq!(presented_key(h), Some("k"));
    }
}
