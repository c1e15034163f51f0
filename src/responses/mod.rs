//! The Responses API (`POST /v1/responses`) for an upstream that has only
//! chat completions (`no_responses: true`): the request is translated to
//! chat at the door ([`request`]) and runs through the one pipeline as a
//! chat call; its answer is told back as a response on its way out
//! ([`writer`], [`answer`]).
//!
//! For upstreams that have the Responses API, [`affinity`] keeps a
//! follow-up on the key whose account holds its context.

pub mod affinity;
pub mod answer;
pub mod request;
pub mod writer;
