//! Matrix: chatbridge as an application service on a homeserver, each chat user a ghost
//! Matrix user of their own. This version reads the link's settings ([`config`]), maps chat
//! users to ghost user ids ([`ghost`]), checks the room mapping ([`rooms`]) and prints the
//! registration the homeserver loads ([`registration`]), and makes the homeserver calls an
//! outbound message needs ([`client`]: register a ghost, name it, join, send); the sink that
//! uses them, and everything inbound, are still to come,
//! so `run` and a reload refuse a configuration with a Matrix link
//! ([`crate::platforms::LinkKind::not_runnable`]).

pub mod cli;
pub mod client;
pub mod config;
pub mod ghost;
pub mod registration;
pub(crate) mod rooms;

use std::time::Duration;

use crate::bridge::retry::Verdict;
use crate::chat::model::Outbound;
use crate::platforms::{SendOutcome, Sending, Sink};

/// The sink a Matrix link has until delivery is built. It is never started (the daemon
/// refuses such a link first); should it be, it delivers nothing and reports the link as
/// failing, so every event stays in the outbox.
pub(crate) struct NotDelivered {
    name: String,
}

impl NotDelivered {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }
}

impl Sink for NotDelivered {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_max(&self) -> usize {
        1
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(15)
    }

    fn send<'a>(&'a self, _batch: &'a [Outbound]) -> Sending<'a> {
        Box::pin(async {
            SendOutcome {
                verdict: Verdict::LinkFailure {
                    after: Some(Duration::from_secs(60)),
                },
                status: None,
                detail: "Matrix delivery is not built in this version".into(),
            }
        })
    }
}
