//! A call's quotas: what it reserves at admission and what it cost.

use super::quota::{self, Hold, OUTPUT_RESERVE};
use crate::error::GatewayError;
use crate::limits::tokens::Estimate;
use crate::limits::Caller;
use crate::state::Snapshot;

/// Reserves a call's estimate on its client's quotas and the gateway's
/// budget (`None`: none apply): the prompt's estimate plus its
/// `max_tokens` (or [`OUTPUT_RESERVE`]), priced at `model`'s prices.
pub fn admit(
    snap: &Snapshot,
    caller: Caller,
    estimate: &Estimate,
    model: &str,
) -> Result<Option<Hold>, GatewayError> {
    let own = own_quotas(snap, caller);
    if own.is_empty() && snap.gateway_budget.is_empty() {
        return Ok(None);
    }
    let output = if estimate.max_output > 0 {
        estimate.max_output
    } else {
        OUTPUT_RESERVE
    };
    let tokens = estimate.prompt.saturating_add(output);
    let cost = snap.config.prices.cost(model, estimate.prompt, 0, output);
    let who = || who(snap, caller);
    quota::reserve(
        (own, &snap.gateway_budget),
        &who,
        tokens,
        cost,
        &snap.warn_at,
    )
}

/// The caller's own quotas (none for a loopback caller).
fn own_quotas(snap: &Snapshot, caller: Caller) -> &[std::sync::Arc<quota::Counter>] {
    match caller {
        Caller::Client(i) => snap.clients.quotas.get(i).map_or(&[][..], Vec::as_slice),
        Caller::Local => &[],
    }
}

/// The caller as a refusal names it (made only for a refusal).
fn who(snap: &Snapshot, caller: Caller) -> String {
    match caller {
        Caller::Client(_) => format!(
            "Client `{}`",
            crate::limits::caller_name(&snap.config, &caller)
        ),
        Caller::Local => "This caller".to_string(),
    }
}

/// Refuses a call outside the understood endpoints (files, batches, …)
/// of a caller whose quota, or the gateway's budget, is used up. Such a
/// call's use is not metered, so it reserves nothing.
pub fn check_left(snap: &Snapshot, caller: Caller) -> Result<(), GatewayError> {
    let own = own_quotas(snap, caller);
    if own.is_empty() && snap.gateway_budget.is_empty() {
        return Ok(());
    }
    let who = || who(snap, caller);
    // a hold of nothing: dropped at once
    quota::reserve((own, &snap.gateway_budget), &who, 0, 0, &snap.warn_at).map(drop)
}

/// What a call's usage cost (picodollars), at the prices of the model
/// that served it.
pub fn cost(snap: &Snapshot, outcome: &crate::forward::Outcome, asked: &str) -> u64 {
    let model = outcome.served_model.as_deref().unwrap_or(asked);
    snap.config.prices.cost(
        model,
        outcome.tokens_in,
        outcome.tokens_cached,
        outcome.tokens_out,
    )
}
