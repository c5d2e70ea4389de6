//! The outbound side every platform implements: a [`Sink`] sends a batch once and reports a
//! [`SendOutcome`] (the facts and the verdict [`crate::bridge::retry`] reached on them).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;

/// A boxed send, so that every kind's `send` fits one trait object.
pub type Sending<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// An outbound link: sends a batch once, in outbox order, and reports what came of it.
pub trait Sink: Send + Sync {
    /// The link's configured name: the outbox key, the `origin` of events it relays back.
    fn name(&self) -> &str;
    /// The most outbox entries one `send` may carry.
    fn batch_max(&self) -> usize;
    /// One request's deadline (`timeout_secs`); zero for a link that makes none.
    fn request_timeout(&self) -> Duration;
    /// How many sends may be outstanding at once (1 keeps delivery in order).
    fn max_in_flight(&self) -> usize {
        1
    }
    /// Sends one batch (at most [`Self::batch_max`] entries, in outbox order) once.
    fn send<'a>(&'a self, batch: &'a [Outbound]) -> Sending<'a>;
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// What the delivery worker does next: acknowledge, retry, dead-letter or disable.
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived at all (metrics, logs).
    pub status: Option<u16>,
    /// A short description for logs and alerts, e.g. `HTTP 400: invalid_payload` or
    /// `connect error: Connection refused (os error 111)`. Never holds the URL or a secret.
    pub detail: String,
}
