//! What one attempt led to ([`Step`]) and what a request ends with when no
//! attempt delivers ([`Failure`]).

use super::attempt::Buffered;
use super::call::RelayEnd;
use super::plan::Verdict;
use crate::error::GatewayError;

/// What a request ends with when no attempt delivers: the upstream's own
/// answer (passed on as it is) or the gateway's error.
pub enum Failure {
    Answer(Box<Buffered>),
    Error(GatewayError),
}

impl Failure {
    /// Why an attempt failed, as the `reason` label of
    /// `switchyard_retries_total` / `switchyard_failovers_total`.
    pub(super) fn reason(v: &Verdict<Failure>) -> &'static str {
        let of = |f: &Failure| match f {
            Failure::Answer(b) if b.header.status.as_u16() == 429 => "rate_limited",
            Failure::Answer(b) if b.header.status.as_u16() >= 500 => "upstream_5xx",
            Failure::Answer(_) => "upstream_4xx",
            Failure::Error(e) => e.label(),
        };
        match v {
            Verdict::Rotate { failure, .. } => match of(failure) {
                "rate_limited" => "rate_limited",
                _ => "key_rejected",
            },
            Verdict::Transient(f) => of(f),
            Verdict::UpstreamDown(_) => "upstream_down",
            Verdict::NextModel(_) => "context_length",
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Failure::Answer(b) => format!("upstream answered {}", b.header.status.as_u16()),
            Failure::Error(e) => e.message(),
        }
    }
}

/// What one candidate's try led to.
pub(super) enum Step {
    /// The request is answered.
    Done(RelayEnd),
    /// An error no other candidate would change.
    Fatal(GatewayError),
    /// Not answered: the plan decides what next.
    Go(Verdict<Failure>),
}
