//! The durable per-link outbox: one Redis Stream per link under `chatbridge:`, written before
//! anything is sent, read by that link's worker through a consumer group, acknowledged (and
//! deleted) only after the target accepted.
//!
//! Keys (all ours; names, types and writers in [`crate::redis::keys`]): per link its outbox
//! STREAM, dead-letter STREAM and stats HASH; per scope its seen sets, checkpoint and bridged
//! set; the intake facts HASH. The delivery lease is [`crate::redis::lease`].
//!
//! Files, each a few methods of [`Outbox`]: [`enqueue`] (the idempotent enqueue, checkpoints),
//! [`reader`] (a worker's blocking reads), [`entry`] (stream entries back into events, a
//! damaged one in place), [`acks`] (consumer groups, acknowledgements), [`dlq`] (dead letters
//! and their admin), [`status`] (per-link stats, the disabled flag), [`failure`] (the failure
//! state a worker resumes from), [`stats`] (intake facts).

mod acks;
mod dlq;
mod enqueue;
mod entry;
mod failure;
mod reader;
mod stats;
mod status;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::chat::model::{OutboundKind, Scope};
use crate::redis::keys;

/// The inbound connections' state hash, under the name its writers outside the Redis layer use.
pub use crate::redis::keys::INBOUND_STATE as INBOUND_STATE_KEY;
pub use dlq::{Damaged, DeadLetter};
pub use enqueue::{Caps, Commit, Enqueue, Enqueued};
pub use failure::FailureState;
pub use reader::{ReadFrom, Reader};
pub use stats::{IntakeStats, LastCatchup, PassRecord};
pub use status::{LinkStatus, Queue};

/// The consumer group (and consumer) every worker reads through. Only the holder of a link's
/// lease reads it: the consumer name is fixed so a restarted process, or a standby taking
/// over, finds what its predecessor left pending.
pub(crate) const GROUP: &str = "chatbridge";
pub(crate) const CONSUMER: &str = "chatbridge";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

pub type Result<T> = std::result::Result<T, OutboxError>;

/// What a scope's seen set records when `link` has been given the event with de-dup `key`:
/// link names have no `:`, keys start with `h-` or `x-`, so members never collide.
pub fn seen_member(link: &str, key: &str) -> String {
    format!("{link}:{key}")
}

/// The seen set a scope's events of `kind` are de-duplicated in: messages in one, signals in
/// another (the most recent only).
pub(crate) fn kind_seen_key(scope: &Scope, kind: OutboundKind) -> String {
    match kind {
        OutboundKind::Event(crate::chat::model::EventKind::Message) => keys::seen(&scope.channel()),
        _ => keys::seen_signals(&scope.channel()),
    }
}

/// Handle on the outbox keys; cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub struct Outbox {
    /// Self-healing connection shared by everything that is not a blocking read.
    pub(crate) con: ConnectionManager,
    /// The enqueue script (EVALSHA, loaded again automatically after a Redis restart).
    pub(crate) script: std::sync::Arc<Script>,
    /// Bounds on the de-dup sets and outboxes.
    pub(crate) caps: Caps,
}

impl Outbox {
    /// An outbox handle with the default [`Caps`].
    pub fn new(con: ConnectionManager) -> Self {
        Self::with_caps(con, Caps::default())
    }

    pub fn with_caps(con: ConnectionManager, caps: Caps) -> Self {
        Self {
            con,
            script: std::sync::Arc::new(Script::new(enqueue::ENQUEUE)),
            caps,
        }
    }
}
