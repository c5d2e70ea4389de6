//! The data path, in the order an event travels it:
//! [`subscription`] → [`decode`] → [`route`] → [`intake`] (with [`catchup`]) → [`outbox`] →
//! [`deliver`] (with [`retry`]) → a platform's sink; and [`trim`] beside it.
//!
//! - [`subscription`]: the PSUBSCRIBE session: reconnects (at once after a healthy session),
//!   detects dead connections, counts every gap, skips what nothing mirrors before copying it,
//!   and passes on this process's catch-up barriers.
//! - [`decode`]: turns a raw Pub/Sub payload or history entry into an event once; counts and logs
//!   what it skips.
//! - [`route`]: the routing table built from the config: scope and event kind → links; on
//!   reload, new routes travel down the data path and switch at one point of the stream.
//! - [`intake`]: the task between subscription and outboxes: decode, route, enqueue in batches;
//!   runs the catch-up passes in order with live events (barriers, held events).
//! - [`catchup`]: reads each history down to its checkpoint (a fingerprint only history moves)
//!   after every (re)subscribe and every sweep; what it finds is resolved against live events.
//! - [`outbox`]: the durable per-link Redis Streams: idempotent per-link enqueue, reads, acks,
//!   dead letters, stats and failure state.
//! - [`deliver`]: one worker per link: read outbox, render, send, retry, acknowledge; only
//!   while it holds the link's lease (one delivering process per link, the others standby).
//! - [`retry`]: the one place that decides whether a failed send is retried, and how long to wait.
//! - [`trim`]: keeps every history list bounded (limit, age) in bounded rounds, never removing
//!   what catch-up has not read.

pub mod catchup;
pub mod decode;
pub mod deliver;
pub mod intake;
pub mod outbox;
pub mod retry;
pub mod route;
pub mod subscription;
pub mod trim;
