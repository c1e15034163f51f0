//! A forwarded call's end: its tokens, cost and charges settled on `ctx`.

use super::ctx::Ctx;
use crate::error::GatewayError;
use crate::forward::{Call, RelayEnd};
use crate::limits;

/// Records on `ctx` how the call went once `Forwarder::run` (writing
/// `ctx.outcome`) returned `result` (the call's model moves there); `Err`:
/// nothing reached the client (the caller answers with the error).
///
/// Each caller awaits `Forwarder::run` itself: a wrapping `async fn` would be
/// one more level of a large future, copied whole into place per request.
pub fn settle_call(
    call: &mut Call,
    charges: &limits::TokenCharges,
    ctx: &mut Ctx,
    result: Result<RelayEnd, GatewayError>,
) -> Result<RelayEnd, GatewayError> {
    let model = std::mem::take(&mut call.model);
    ctx.model = (!model.is_empty()).then_some(model);
    let outcome = &mut ctx.outcome;
    let delivered = (200..300).contains(&outcome.status);
    charges.settle(outcome.tokens(), delivered);
    if !outcome.metered {
        // no usage reported: the prompt's estimate for a delivered answer
        outcome.tokens_in = if delivered { call.estimate.prompt } else { 0 };
        // a stream the client left: what it got, about a token an event
        outcome.tokens_out = if delivered { outcome.events_out } else { 0 };
        ctx.estimated = delivered;
    }
    if let Some(snap) = &ctx.snap {
        let asked = ctx.model.as_deref().unwrap_or_default();
        ctx.cost = crate::tenants::admit::cost(snap, &ctx.outcome, asked);
    }
    let used = ctx.outcome.tokens_in.saturating_add(ctx.outcome.tokens_out);
    charges.settle_quota(used, ctx.cost);
    let end = result?;
    match &end {
        // the status line said 200; the access line says how it really ended
        RelayEnd::ErrorEvent(kind) => ctx.error = Some(kind),
        RelayEnd::ClientGone => ctx.error = Some("client_gone"),
        RelayEnd::Broken(_) => ctx.error = Some("upstream_broken"),
        RelayEnd::Complete => {}
    }
    Ok(end)
}
