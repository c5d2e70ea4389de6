//! chatbridge: mirrors a Redis Pub/Sub chat (the seed's wire format, `docs/wire.md`) to external links
//! without losing a message.
//!
//! # Layout
//! The data path reads in file order: `subscription → decode → route → outbox → deliver → platforms`.
//!
//! - [`model`]: the typed chat events of `docs/wire.md` (message, system line, typing, read receipt),
//!   timestamps in every accepted form, user ids that keep their JSON type, room/DM scopes.
//! - [`pyjson`]: serialises JSON byte-for-byte like Python's `json.dumps`, so what we write
//!   matches what the seed writes, and reads what Python writes that strict parsers refuse.
//! - [`store`]: the seed's operations (join, leave, send, DM, typing, read, history, members,
//!   receipts) on Redis, each one atomic.
//! - [`secret`]: URLs and signing secrets that print redacted, never in full.
//! - [`printable`]: untrusted text escaped for terminals and logs (console link, CLI).
//! - [`config`]: `config.toml` + environment overrides + `${VAR}` secrets, validated all at once;
//!   what a reload changes.
//! - [`connect`]: Redis connections with the timeouts each use needs.
//! - [`route`]: the routing table built from the config: scope and event kind → links; on
//!   reload, new routes travel down the data path and switch at one point of the stream.
//! - [`subscription`]: the PSUBSCRIBE session: reconnects with backoff, detects dead connections,
//!   skips what nothing mirrors before copying it, and passes on this process's catch-up barriers.
//! - [`decode`]: turns a raw Pub/Sub payload or history entry into an event once; counts and logs
//!   what it skips.
//! - [`catchup`]: reads each history down to its checkpoint (a fingerprint only history moves)
//!   after every (re)subscribe and every sweep; what it finds is resolved against live events.
//! - [`intake`]: the task between subscription and outboxes: decode, route, enqueue in batches;
//!   runs the catch-up passes in order with live events (barriers, held events).
//! - [`outbox`]: the durable per-link Redis Streams: idempotent enqueue, reads, acks, dead letters.
//! - [`deliver`]: one worker per link: read outbox, render, send, retry, acknowledge; only
//!   while it holds the link's lease (one delivering process per link, the others standby).
//! - [`retry`]: the one place that decides whether a failed send is retried, and how long to wait.
//! - [`platforms`]: one folder per platform (console, webhook, Slack, Discord: config, outbound
//!   sink, inbound sources), the chat-post rendering the chat platforms share, and the one
//!   registry ([`platforms::LinkKind`]) that matches on the kind.
//! - [`trim`]: keeps every history list bounded (limit, age) in bounded rounds, never removing
//!   what catch-up has not read.
//! - [`logging`]: log lines as text or JSON, level from `RUST_LOG` or `[log] level`.
//! - [`metrics`]: every exported metric's name, cheap per-link and per-kind handles, the
//!   Prometheus recorder and the sampler of outbox depth and age.
//! - [`eviction`]: at `run` start, refuses a Redis whose `maxmemory-policy` may evict our keys.
//! - [`notify`]: systemd's notify protocol: READY=1 once subscribed and caught up, STATUS=,
//!   WATCHDOG=1 only while the subscription and the intake show progress, RELOADING=1 … READY=1
//!   around a reload, STOPPING=1.
//! - [`http`]: the HTTP server (`[http]`): `/healthz`, `/readyz`, `/metrics`, and a router
//!   other routes join; bound before Redis is connected; hostile clients bounded (header and
//!   idle timeouts, a connection cap, health routes outside the request limit).
//! - [`fdlimit`]: raises the open-file limit at start and keeps descriptors for Redis and
//!   outbound HTTP beside the HTTP server's connections.
//! - [`inbound`]: what every inbound source shares: `POST /hooks/{link}` (signed generic
//!   webhooks) and the platforms' routes; verify, de-duplicate, then one atomic write into the
//!   chat marked with a trusted `origin`, from where the normal path relays it to every other
//!   link.
//! - [`supervise`]: the daemon's parts as named tasks, each stoppable on its own; the first one
//!   to end or panic unasked stops the daemon, which exits non-zero.
//! - [`daemon`]: wires it all together, one worker per link; `run(config, requests, load)`
//!   reloads on request and returns once drained.
//! - [`status`]: what `chatbridge status` prints, read from Redis.
//! - [`cli`]: the operator commands behind the `chatbridge` binary.
#![forbid(unsafe_code)]

pub mod catchup;
pub mod cli;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod decode;
pub mod deliver;
pub mod eviction;
pub mod fdlimit;
pub mod http;
pub mod inbound;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod platforms;
pub mod printable;
pub mod pyjson;
pub mod retry;
pub mod route;
pub mod secret;
pub mod status;
pub mod store;
pub mod subscription;
pub mod supervise;
pub mod trim;
