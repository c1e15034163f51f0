//! A call's admission against its client's and the gateway's limits
//! (rpm, tpm, concurrency): here, or in a fleet's store (`strict`).

use super::{client_limit_headers, client_name, shared, take_slot, window, within_rpm, within_tpm};
use super::{Caller, TokenCharges};
use crate::error::GatewayError;

/// What a call holds of its client's and the gateway's limits once
/// admitted: a slot here or a lease in the fleet's store, the token charges
/// to settle, and the client's `x-ratelimit-*` headers.
#[derive(Default)]
pub struct Admission {
    pub slot: Option<window::Slot>,
    pub lease: Option<shared::Lease>,
    pub charges: TokenCharges,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Admits a call of `caller` against its client's and the gateway's
/// limits: rpm and concurrency, and tpm when `tokens` (the estimate) is
/// given. In a fleet's `strict` mode the store decides, in one round trip;
/// otherwise (or while the store is down, with `on_store_failure: local`)
/// this instance does, counting what the others hold in `local` mode.
pub async fn admit(
    snap: &crate::state::Snapshot,
    caller: Caller,
    tokens: Option<u64>,
) -> Result<Admission, GatewayError> {
    let limited = is_limited(snap, caller);
    if let Some(e) = store_refusal(limited) {
        return Err(e);
    }
    if limited {
        if let Some(store) = shared::strict_store().filter(|_| !shared::down()) {
            // boxed: inline, its state would size every call's future
            let strict = Box::pin(admit_strict(snap, caller, tokens, store.as_ref()));
            if let Some(a) = strict.await? {
                return Ok(a);
            }
        }
    }
    let slot = take_slot(snap, caller)?;
    let now_ms = crate::clock::coarse_ms();
    let rpm = within_rpm(snap, caller, now_ms)?;
    let headers = client_limit_headers(snap, caller, rpm, now_ms);
    let charges = match tokens {
        Some(t) => within_tpm(snap, caller, now_ms, t)?,
        None => TokenCharges::default(),
    };
    Ok(Admission {
        slot,
        lease: None,
        charges,
        headers,
    })
}

/// With the store down, the refusal `on_store_failure: refuse` asks for:
/// key state's for every call, the limits' for a `limited` one.
fn store_refusal(limited: bool) -> Option<GatewayError> {
    if shared::refuses(false) {
        Some(GatewayError::StoreUnavailable { what: "keys" })
    } else if limited && shared::refuses(true) {
        Some(GatewayError::StoreUnavailable { what: "limits" })
    } else {
        None
    }
}

/// Whether any client or gateway limit applies to `caller`'s calls.
fn is_limited(snap: &crate::state::Snapshot, caller: Caller) -> bool {
    let own = match caller {
        Caller::Client(i) => {
            snap.clients.windows.get(i).is_some_and(Option::is_some)
                || snap.clients.tokens.get(i).is_some_and(Option::is_some)
                || snap.clients.slots.get(i).is_some_and(Option::is_some)
        }
        Caller::Local => false,
    };
    own || snap.gateway_window.is_some() || snap.gateway_tokens.is_some()
}

/// The limits a strict admission asks the store about, each with who it
/// belongs to and its setting (for the refusal's words).
fn strict_dims(
    snap: &crate::state::Snapshot,
    caller: Caller,
    tokens: Option<u64>,
) -> Vec<(shared::Dim, String, &'static str)> {
    use shared::{Dim, Kind};
    let mut dims = Vec::new();
    let mut add = |kind, name: String, limit: u64, amount, who: String, setting| {
        dims.push((
            Dim {
                kind,
                name,
                limit,
                amount,
            },
            who,
            setting,
        ));
    };
    if let Caller::Client(i) = caller {
        let name = client_name(snap, i).to_string();
        let who = format!("Client `{name}`");
        if let Some(w) = snap.clients.windows.get(i).and_then(Option::as_ref) {
            let limit = w.limit().into();
            add(
                Kind::Requests,
                format!("client {name}"),
                limit,
                1,
                who.clone(),
                "clients[].rpm",
            );
        }
        if let (Some(w), Some(t)) = (snap.clients.tokens.get(i).and_then(Option::as_ref), tokens) {
            add(
                Kind::Tokens,
                format!("client {name}"),
                w.limit(),
                t,
                who.clone(),
                "clients[].tpm",
            );
        }
        if let Some(s) = snap.clients.slots.get(i).and_then(Option::as_ref) {
            let limit = s.limit().into();
            add(
                Kind::Concurrency,
                format!("client {name}"),
                limit,
                1,
                name,
                "clients[].max_concurrent",
            );
        }
    }
    let gw = || "The gateway".to_string();
    if let Some(w) = &snap.gateway_window {
        add(
            Kind::Requests,
            "gateway".into(),
            w.limit().into(),
            1,
            gw(),
            "limits.rpm",
        );
    }
    if let (Some(w), Some(t)) = (&snap.gateway_tokens, tokens) {
        add(
            Kind::Tokens,
            "gateway".into(),
            w.limit(),
            t,
            gw(),
            "limits.tpm",
        );
    }
    dims
}

/// A strict admission; `Ok(None)`: the store failed and this instance
/// decides instead (`on_store_failure: local`).
async fn admit_strict(
    snap: &crate::state::Snapshot,
    caller: Caller,
    tokens: Option<u64>,
    store: &dyn shared::Store,
) -> Result<Option<Admission>, GatewayError> {
    use shared::{Kind, Refused};
    let dims = strict_dims(snap, caller, tokens);
    let plain: Vec<shared::Dim> = dims.iter().map(|d| d.0.clone()).collect();
    if plain.is_empty() {
        // only tpm limits, and no tokens to charge: nothing to ask
        return Ok(Some(Admission::default()));
    }
    let lease_id = shared::next_lease();
    // given back if the call is dropped mid-way or its answer is lost (the
    // script may have run); disarmed when refused (it took nothing)
    let mut guard = plain
        .iter()
        .find(|d| d.kind == Kind::Concurrency)
        .map(|d| shared::Lease {
            id: d.id(),
            lease: lease_id.clone(),
        });
    let granted = match store.admit(&plain, &lease_id).await {
        Ok(g) => g,
        Err(Refused::Store(_)) => return store_refusal(true).map_or(Ok(None), Err),
        Err(refused) => {
            if let Some(g) = guard.take() {
                g.disarm();
            }
            return Err(refusal(&dims, refused));
        }
    };
    let mut a = Admission {
        lease: guard,
        ..Admission::default()
    };
    for ((d, _, setting), (left, reset_ms)) in dims.iter().zip(granted.left) {
        match d.kind {
            Kind::Tokens => a.charges.1.push(shared::Reservation {
                id: d.id(),
                second: granted.second,
                tokens: d.amount,
            }),
            // the lease is the guard taken before the call
            Kind::Requests | Kind::Concurrency => {}
        }
        // the client's own rpm and tpm (never the gateway's) as its headers
        if d.kind != Kind::Concurrency && setting.starts_with("clients[]") {
            let unit = if d.kind == Kind::Tokens {
                "tokens"
            } else {
                "requests"
            };
            let mut add = |n: String, v: String| {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::try_from(n),
                    http::HeaderValue::try_from(v),
                ) {
                    a.headers.push((n, v));
                }
            };
            add(format!("x-ratelimit-limit-{unit}"), d.limit.to_string());
            add(format!("x-ratelimit-remaining-{unit}"), left.to_string());
            if d.kind == Kind::Requests {
                add(
                    format!("x-ratelimit-reset-{unit}"),
                    format!("{}s", reset_ms.div_ceil(1000)),
                );
            }
        }
    }
    Ok(Some(a))
}

/// The error for a refusal of the store's (`Full` or `TooLarge`).
fn refusal(dims: &[(shared::Dim, String, &'static str)], refused: shared::Refused) -> GatewayError {
    use shared::{Kind, Refused};
    let at = |index: usize| &dims[index.min(dims.len().saturating_sub(1))];
    match refused {
        Refused::TooLarge { index } => {
            let (d, who, setting) = at(index);
            GatewayError::TooLargeForLimit {
                who: who.clone(),
                setting,
                limit: d.limit,
                estimated: d.amount,
            }
        }
        Refused::Full { index, wait_ms } => {
            let (d, who, setting) = at(index);
            match d.kind {
                Kind::Concurrency => GatewayError::TooManyInFlight {
                    client: who.clone(),
                    limit: u32::try_from(d.limit).unwrap_or(u32::MAX),
                },
                kind => GatewayError::ClientRateLimited {
                    who: who.clone(),
                    setting,
                    unit: if kind == Kind::Tokens {
                        crate::error::Unit::Tokens
                    } else {
                        crate::error::Unit::Requests
                    },
                    limit: d.limit,
                    retry_after: std::time::Duration::from_millis(wait_ms.max(1)),
                },
            }
        }
        Refused::Store(e) => GatewayError::Internal(e),
    }
}
