//! Upstream concurrency caps with one FIFO queue: [`Gate`] is a cap
//! (`limits.max_concurrent`, an upstream's or a key's `max_concurrent`);
//! a call that finds it full waits its turn in order, as one of at most
//! `limits.queue` waiting calls gateway-wide, until `limits.queue_timeout`
//! from the request's arrival. Pacing waits ([`super::pace`]) take a queue
//! place too, so `X-Upstream-Queue` counts every waiting call.
//!
//! Failure behaviour: a full queue answers at once ([`GatewayError::QueueFull`]);
//! a wait past the patience gives [`GatewayError::QueueTimeout`]. Dropping a
//! waiting future (the client left) gives its place up at once and takes no
//! slot. A [`Permit`] frees its slot when dropped (a stream keeps it until
//! it ends).

use super::window::{shared, Registry};
use crate::error::GatewayError;
use crate::metrics;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

static GATES: Registry<Gate> = LazyLock::new(Default::default);

/// The gate registered as `id` for setting `what` (kept across reloads that
/// keep the limit: calls in flight through the old config still count).
pub fn named(id: &str, what: &str, limit: u32) -> Arc<Gate> {
    shared(&GATES, id, limit.into(), || {
        Gate::new(what.to_string(), limit)
    })
}

/// Calls waiting now, gateway-wide (the `X-Upstream-Queue` header).
static WAITING: AtomicU32 = AtomicU32::new(0);

/// Calls waiting now for a slot or a model's turn.
pub fn waiting() -> u32 {
    WAITING.load(Ordering::Relaxed)
}

/// A queue place, given back when dropped.
pub struct Place(());

impl Place {
    /// Takes one of `limit` places; `None` when all are taken.
    pub fn join(limit: u32) -> Option<Place> {
        WAITING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        metrics::QUEUE_WAITING.inc();
        Some(Place(()))
    }
}

/// Runs `wait` holding one of `queue` places (timed in
/// `switchyard_queue_wait_seconds`); all places taken → `QueueFull` at once.
pub async fn queued<T>(
    queue: u32,
    wait: impl std::future::Future<Output = T>,
) -> Result<T, GatewayError> {
    let _place = Place::join(queue).ok_or(GatewayError::QueueFull { limit: queue })?;
    let start = Instant::now();
    let out = wait.await;
    metrics::QUEUE_WAIT.observe(start.elapsed().as_secs_f64());
    Ok(out)
}

impl Drop for Place {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
        metrics::QUEUE_WAITING.dec();
    }
}

/// At most `limit` calls at once through this gate.
#[derive(Debug)]
pub struct Gate {
    /// The setting, for messages: `limits.max_concurrent`, `upstreams[github].max_concurrent`.
    what: String,
    limit: u32,
    slots: Arc<Semaphore>,
}

/// A slot of a [`Gate`], held until dropped.
pub type Permit = OwnedSemaphorePermit;

impl Gate {
    pub fn new(what: String, limit: u32) -> Gate {
        Gate {
            what,
            limit: limit.max(1),
            slots: Arc::new(Semaphore::new(limit.max(1) as usize)),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Slots in use now.
    pub fn in_use(&self) -> u32 {
        self.limit
            .saturating_sub(self.slots.available_permits() as u32)
    }

    /// A slot now, or after waiting in the queue (`queue` places, until
    /// `patience`). Slots go in arrival order: nobody overtakes a waiting call.
    pub async fn enter(&self, queue: u32, patience: Instant) -> Result<Permit, GatewayError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let start = Instant::now();
        let slot = tokio::time::timeout_at(patience.into(), self.slots.clone().acquire_owned());
        match queued(queue, slot).await? {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(GatewayError::Internal(format!("{} closed", self.what))),
            Err(_) => Err(GatewayError::QueueTimeout {
                waited: start.elapsed(),
                what: format!("a free slot ({} {} in use)", self.what, self.limit),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fifo_full_queue_timeout_and_leaving() {
        let gate = Arc::new(Gate::new("limits.max_concurrent".into(), 1));
        let far = Instant::now() + Duration::from_secs(5);
        let first = gate.enter(2, far).await.unwrap();
        assert_eq!(gate.in_use(), 1);
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..2 {
            let (gate, order) = (gate.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let p = gate.enter(2, far).await.unwrap();
                order.lock().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(waiting() >= 2);
        // both places taken: the next is refused at once
        assert!(matches!(
            gate.enter(2, far).await,
            Err(GatewayError::QueueFull { limit: 2 })
        ));
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1], "slots go in arrival order");

        let held = gate.enter(2, far).await.unwrap();
        let soon = Instant::now() + Duration::from_millis(30);
        let e = gate.enter(2, soon).await.unwrap_err();
        assert!(matches!(e, GatewayError::QueueTimeout { .. }), "{e:?}");
        assert!(
            e.message().contains("limits.max_concurrent 1 in use"),
            "{e}"
        );
        // a waiter that is dropped leaves the queue and takes no slot
        let before = waiting();
        let w = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter(2, far).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(waiting(), before + 1);
        w.abort();
        let _ = w.await;
        assert_eq!(waiting(), before);
        drop(held);
        assert_eq!(gate.in_use(), 0);
    }
}
