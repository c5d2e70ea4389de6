//! chatbridge: mirrors a Redis Pub/Sub chat (the seed's wire format, `docs/wire.md`) to external links
//! without losing a message.
//!
//! # Layout
//! The data path reads in file order: `subscription → decode → route → outbox → deliver → links`.
//!
//! - [`chat`]: the seed's world: the typed chat events of `docs/wire.md`, scopes and ids,
//!   JSON byte for byte as Python writes it, and the seed's operations on Redis.
//! - [`secret`]: URLs and signing secrets that print redacted, never in full.
//! - [`printable`]: untrusted text escaped for terminals and logs (console link, CLI).
//! - [`config`]: `config.toml` + environment overrides + `${VAR}` secrets, validated all at once;
//!   what a reload changes.
//! - [`redis`]: the Redis layer: connections with the timeouts each use needs, every key name
//!   and its planned Cluster hash tag, the Lua scripts, the one lease type.
//! - [`bridge`]: the data path as it reads: subscription → decode → route → intake (with
//!   catch-up) → outbox → deliver (with retry), and history trimming beside it.
//! - [`links`]: the link kinds (console, webhook, Slack, Discord) behind one [`links::Target`],
//!   and the chat-post rendering Slack and Discord share (merging, splitting, names).
//! - [`inbound`]: `POST /hooks/{link}` (signed generic webhooks) and `POST /slack/events`
//!   (Slack Events API): verify, de-duplicate, then one atomic write into the chat marked with
//!   a trusted `origin`, from where the normal path relays it to every other link.
//! - [`daemon`]: wires it all together, one worker per link; `run(config, requests, load)`
//!   reloads on request and returns once drained.
//! - [`ops`]: running as a service: supervision, systemd notify and watchdog, the HTTP server
//!   (health, readiness, metrics; hostile-client limits), metrics, logging, `status`, the eviction
//!   check and the open-file limit.
//! - [`cli`]: the operator commands behind the `chatbridge` binary.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod chat;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod inbound;
pub mod links;
pub mod ops;
pub mod printable;
pub mod redis;
pub mod secret;
