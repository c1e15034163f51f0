//! What a candidate must pass before its upstream call starts: the model's
//! context window (from the catalog), the upstream's and the key's
//! `max_concurrent` (waiting in the FIFO queue), and the model's pacing turn
//! (`model_min_interval`). Waits end when the client leaves (nothing is
//! sent upstream) or at `limits.queue_timeout` from the request's arrival.

use super::client::{unless_client_gone, Client};
use super::plan::Candidate;
use crate::error::GatewayError;
use crate::limits::gate::{queued, Permit};
use crate::limits::tokens::Estimate;
use crate::state::Snapshot;
use std::time::{Duration, Instant};

/// The slots a call holds while it runs (its stream included).
pub struct Admitted {
    _upstream: Option<Permit>,
    _key: Option<Permit>,
}

/// Why a candidate's call did not start.
pub enum Refused {
    /// The client left while the call waited.
    ClientGone,
    Error(GatewayError),
}

impl From<GatewayError> for Refused {
    fn from(e: GatewayError) -> Refused {
        Refused::Error(e)
    }
}

/// The error for a prompt larger than the candidate model's context window
/// (looked up by the upstream's model name, then the client's), if it is.
pub fn too_long(snap: &Snapshot, cand: &Candidate<'_>, est: Estimate) -> Option<GatewayError> {
    let (name, limits) = snap
        .config
        .catalog
        .first_known([cand.route.upstream_model, cand.model])?;
    (est.prompt > limits.context).then(|| GatewayError::ContextTooLong {
        model: name.to_string(),
        estimated: est.prompt,
        context: limits.context,
    })
}

/// Waits for `fut` unless the client leaves first.
async fn waiting<T>(
    client: &mut Client<'_>,
    fut: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, Refused> {
    match unless_client_gone(client, fut).await {
        None => Err(Refused::ClientGone),
        Some(r) => r.map_err(Refused::Error),
    }
}

/// Takes the candidate's concurrency slots, then its pacing turn (waiting
/// for each in the queue, at most `queue` waiting gateway-wide, until `patience`).
pub async fn admit(
    client: &mut Client<'_>,
    snap: &Snapshot,
    cand: &Candidate<'_>,
    patience: Instant,
) -> Result<Admitted, Refused> {
    let up = &cand.upstream.limits;
    if up.gate.is_none() && up.pacer.is_none() && cand.key.as_ref().is_none_or(|k| k.gate.is_none())
    {
        return Ok(Admitted {
            _upstream: None,
            _key: None,
        });
    }
    // boxed: its waits would otherwise size the future of every call
    Box::pin(admit_waiting(client, snap, cand, patience)).await
}

/// [`admit`] for a candidate with something to wait for.
async fn admit_waiting(
    client: &mut Client<'_>,
    snap: &Snapshot,
    cand: &Candidate<'_>,
    patience: Instant,
) -> Result<Admitted, Refused> {
    let queue = snap.config.limits.queue;
    let up = &cand.upstream.limits;
    let upstream = match &up.gate {
        Some(g) => Some(waiting(client, g.enter(queue, patience)).await?),
        None => None,
    };
    let key = match cand.key.as_ref().and_then(|k| k.gate.as_ref()) {
        Some(g) => Some(waiting(client, g.enter(queue, patience)).await?),
        None => None,
    };
    if let Some(pacer) = &up.pacer {
        let model = cand.route.upstream_model;
        let now = crate::clock::now_ms();
        let left = patience
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let (wait, booked_here) = match shared_turn(cand, pacer, model, left).await {
            Some(Ok(w)) => (Ok(w), false),
            Some(Err(ms)) => (Err(ms), false),
            None => (pacer.book(model, now, left), true),
        };
        let wait = wait.map_err(|ms| {
            GatewayError::RateLimited {
                message: format!(
                    "Calls for model `{model}` on upstream `{}` start {} apart (model_min_interval); its next turn is {} away, past limits.queue_timeout.",
                    cand.upstream.name(),
                    crate::config::units::fmt_duration(pacer.interval()),
                    crate::clock::fmt_wait(Duration::from_millis(ms)),
                ),
                retry_after: Duration::from_millis(ms),
            }
        })?;
        if wait > 0 {
            let turn = tokio::time::sleep(Duration::from_millis(wait));
            let refused = match queued(queue, unless_client_gone(client, turn)).await {
                Ok(Some(())) => None,
                Ok(None) => Some(Refused::ClientGone),
                Err(full) => Some(Refused::Error(full)),
            };
            if let Some(r) = refused {
                // the booked start goes unused: give it back (the fleet's
                // booking stays: a turn lost, never one too many)
                if booked_here {
                    pacer.unbook(model, now + wait);
                }
                return Err(r);
            }
        }
    }
    Ok(Admitted {
        _upstream: upstream,
        _key: key,
    })
}

/// In a fleet, the model's next turn booked in the store (every instance
/// paces the same model together); `None` without a fleet or while the
/// store fails (this instance paces alone).
async fn shared_turn(
    cand: &Candidate<'_>,
    pacer: &crate::limits::pace::Pacer,
    model: &str,
    max_wait_ms: u64,
) -> Option<Result<u64, u64>> {
    let store = crate::limits::shared::store().filter(|_| !crate::limits::shared::down())?;
    let interval = pacer.interval().as_millis() as u64;
    store
        .pace(cand.upstream.name(), model, interval, max_wait_ms)
        .await
        .ok()
}
