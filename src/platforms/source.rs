//! The inbound side a platform may implement: a [`Source`] holds a connection of its own
//! (Slack Socket Mode, the Discord Gateway) while the daemon runs.

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

/// An inbound source: runs until `stop`, writing what it receives through the shared inbound
/// writer ([`crate::inbound::Writer`]), reading the inbound settings in force from
/// [`crate::inbound::Shared`] (so reloads apply at once).
pub trait Source: Send {
    /// The daemon's name for its task (logs, the supervisor).
    fn task(&self) -> &'static str;
    /// Runs until `stop` is cancelled.
    fn run(self: Box<Self>, stop: CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
