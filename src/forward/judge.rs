//! What an upstream's error answer means: delivered to the client, or a
//! verdict for the plan (rotate, retry elsewhere, next model), with what it
//! means for the key recorded on the key (cooled, parked only on evidence).

use super::attempt::{Answer, Connector};
use super::call::Downstream;
use super::plan::{Candidate, Verdict};
use super::step::{Failure, Step};
use super::{deliver, probe};
use crate::config::raw::RateLimitScope;
use crate::keys::signals::{self, AnswerKind};

/// Judges an upstream's error answer (read whole: it is small): passed on,
/// or a verdict for the plan, with what it means for the key recorded.
pub(super) async fn judge_error_answer(
    connector: &Connector,
    down: &mut Downstream<'_>,
    cand: &Candidate<'_>,
    mut answer: Answer,
) -> Step {
    let (up, key) = (cand.upstream, cand.key.as_deref());
    let body = match answer.read_all(down.deadline, &down.timeouts).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(k) = key {
                k.record_failure();
            }
            return Step::Go(Verdict::Transient(Failure::Error(e)));
        }
    };
    let status = answer.status();
    let text = String::from_utf8_lossy(&body);
    let kind = signals::classify(status, &text);
    let now = std::time::SystemTime::now();
    let limits = signals::read_limits(|n| answer.header_value(n), &text, now);
    // an upstream may quote the key it was sent: never relay it
    let relayed = match crate::logging::scrub_known(&text) {
        std::borrow::Cow::Owned(clean) => bytes::Bytes::from(clean),
        std::borrow::Cow::Borrowed(_) => body.clone(),
    };
    let buffered = answer.buffer(relayed);
    answer.release().await;
    match kind {
        // the client has part of a stream: an answer of its own cannot go there
        AnswerKind::Deliver | AnswerKind::Return if down.resume.is_some() => {
            Step::Go(Verdict::Transient(Failure::Answer(buffered)))
        }
        AnswerKind::Park { .. } if down.resume.is_some() && key.is_none() => {
            Step::Go(Verdict::Transient(Failure::Answer(buffered)))
        }
        AnswerKind::Deliver | AnswerKind::Return => {
            Step::Done(deliver::send_buffered(down, buffered).await)
        }
        AnswerKind::ContextTooLong => Step::Go(Verdict::NextModel(Failure::Answer(buffered))),
        AnswerKind::RetryElsewhere => {
            if let Some(k) = key {
                k.record_failure();
            }
            Step::Go(Verdict::Transient(Failure::Answer(buffered)))
        }
        AnswerKind::CoolDown => {
            let note = key.map(|k| {
                let cooled = k.record_rate_limit(&limits, &text, cand.route.upstream_model);
                if up.conf.rate_limit_scope == RateLimitScope::Upstream {
                    // the keys share one account's limit: none of them is worth a try
                    for other in up.keys.keys().iter().filter(|o| o.id != k.id) {
                        other.share_cooldown(&cooled);
                    }
                    let mut note = cooled.note;
                    note.text
                        .push_str(&format!(" (and every key of {}: one account)", up.name()));
                    note.fields.push(("scope", "upstream".into()));
                    note
                } else {
                    cooled.note
                }
            });
            Step::Go(Verdict::Rotate {
                note,
                failure: Failure::Answer(buffered),
            })
        }
        AnswerKind::Park { reason } => match key {
            Some(k) => Step::Go(Verdict::Rotate {
                note: Some(k.record_park(&reason)),
                failure: Failure::Answer(buffered),
            }),
            None => Step::Done(deliver::send_buffered(down, buffered).await),
        },
        AnswerKind::AuthRejected { reason, key_named } => {
            let refused = match key {
                Some(k) if !down.auth_parked => key_at_fault(connector, down, cand, key_named)
                    .await
                    .then_some(k),
                _ => None,
            };
            match refused {
                Some(k) => {
                    down.auth_parked = true;
                    Step::Go(Verdict::Rotate {
                        note: Some(k.record_park(&reason)),
                        failure: Failure::Answer(buffered),
                    })
                }
                // the client has part of a stream: try elsewhere, park nothing
                None if down.resume.is_some() => {
                    Step::Go(Verdict::Transient(Failure::Answer(buffered)))
                }
                // the request's doing (or no evidence): its answer, no key parked
                None => Step::Done(deliver::send_buffered(down, buffered).await),
            }
        }
    }
}

/// Whether a 401/403 was the key's fault: the upstream refuses the key on
/// its own (`GET /models` with it; a verdict is reused for a minute and one
/// check runs at a time), or, when that cannot tell, the error named the
/// key. Logged when checked.
async fn key_at_fault(
    connector: &Connector,
    down: &Downstream<'_>,
    cand: &Candidate<'_>,
    key_named: bool,
) -> bool {
    use crate::keys::auth_check::Next;
    let Some(key) = cand.key.as_deref() else {
        return false;
    };
    let checked = match key.auth_check.start(crate::clock::now_ms()) {
        Next::Known(v) => v,
        Next::Busy => None,
        Next::Run => {
            let v = Box::pin(probe::key_refused(connector, cand, &down.timeouts)).await;
            key.auth_check.finish(crate::clock::now_ms(), v);
            log::info!(
                "upstream {} refused a request with key {}; GET /models with the key alone: {}",
                cand.upstream.name(),
                key.id,
                match v {
                    Some(true) => "refused too (the key is at fault)",
                    Some(false) => "answered (the request is at fault: nothing parked)",
                    None => "no evidence",
                }
            );
            v
        }
    };
    checked.unwrap_or(key_named)
}
