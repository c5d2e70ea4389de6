//! The durable per-link outbox: one Redis Stream per link under `chatbridge:`, written before
//! anything is sent, read by that link's worker through a consumer group, acknowledged (and
//! deleted) only after the target accepted.
//!
//! Keys (all ours, `WIRE.md`):
//! - `chatbridge:outbox:{link}`: STREAM of events waiting for the link (depth = XLEN);
//! - `chatbridge:dlq:{link}`: STREAM of events the link refused permanently, with why;
//! - `chatbridge:seen:{channel}`: ZSET of recently enqueued message ids (the de-dup window);
//! - `chatbridge:seen:{channel}:signals`: the same for events without an id (content hashes);
//! - `chatbridge:checkpoints`: HASH channel → id of the last message enqueued from it;
//! - `chatbridge:link:{link}`: HASH of delivery stats and the `disabled` reason, if any.
//!
//! Files: [`enqueue`] (the idempotent enqueue script), [`reader`] (a worker's blocking reads),
//! [`entry`] (stream entries back into events, a damaged one in place),
//! [`acks`] (consumer groups, acknowledgements), [`dlq`] (dead letters and their admin),
//! [`status`] (per-link stats, the disabled flag).

mod acks;
mod dlq;
mod enqueue;
mod entry;
mod reader;
mod status;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::model::{OutboundKind, Scope};

pub use dlq::{Damaged, DeadLetter};
pub use enqueue::{Enqueue, Enqueued};
pub use reader::{ReadFrom, Reader};
pub use status::LinkStatus;

/// The consumer group (and consumer) every worker reads through. One daemon per Redis: the
/// consumer name is fixed so a restarted process finds what its predecessor left pending.
pub(crate) const GROUP: &str = "chatbridge";
pub(crate) const CONSUMER: &str = "chatbridge";
pub const CHECKPOINTS: &str = "chatbridge:checkpoints";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, OutboxError>;

pub fn outbox_key(link: &str) -> String {
    format!("chatbridge:outbox:{link}")
}

pub fn dlq_key(link: &str) -> String {
    format!("chatbridge:dlq:{link}")
}

pub(crate) fn link_key(link: &str) -> String {
    format!("chatbridge:link:{link}")
}

/// The seen set of a scope's messages.
pub fn seen_key(scope: &Scope) -> String {
    kind_seen_key(scope, OutboundKind::Event(crate::model::EventKind::Message))
}

pub(crate) fn kind_seen_key(scope: &Scope, kind: OutboundKind) -> String {
    match kind {
        OutboundKind::Event(crate::model::EventKind::Message) => {
            format!("chatbridge:seen:{}", scope.channel())
        }
        _ => format!("chatbridge:seen:{}:signals", scope.channel()),
    }
}

/// Handle on the outbox keys; cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Outbox {
    /// Self-healing connection shared by everything that is not a blocking read.
    pub(crate) con: ConnectionManager,
    /// The enqueue script (EVALSHA, loaded again automatically after a Redis restart).
    pub(crate) script: std::sync::Arc<Script>,
}

impl Outbox {
    pub fn new(con: ConnectionManager) -> Self {
        Self {
            con,
            script: std::sync::Arc::new(Script::new(enqueue::ENQUEUE)),
        }
    }
}
