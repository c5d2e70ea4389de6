//! chatbridge: mirrors a Redis Pub/Sub chat (the seed's wire format, `docs/wire.md`) to external
//! links without losing a message.
//!
//! # Layout
//! One folder per concern; the data path reads `bridge/` in order, and a platform is one
//! folder under `platforms/` (`docs/architecture.md` has the whole map and how to add one).
//!
//! - [`chat`]: the seed's world: the typed chat events of `docs/wire.md`, scopes and ids,
//!   JSON byte for byte as Python writes it, and the seed's operations on Redis.
//! - [`redis`]: the Redis layer: connections with the timeouts each use needs, every key name
//!   and its planned Cluster hash tag, the Lua scripts, the one lease type.
//! - [`config`]: `config.toml` + environment overrides + `${VAR}` secrets, validated all at once;
//!   what a reload changes. It names no platform: links and platform sections are read by the
//!   platforms' registry.
//! - [`bridge`]: the data path as it reads: subscription → decode → route → intake (with
//!   catch-up) → outbox → deliver (with retry), and history trimming beside it.
//! - [`platforms`]: one folder per platform (console, webhook, Slack, Discord, Matrix: config, outbound
//!   sink, inbound sources and their state), the chat-post rendering the chat platforms share,
//!   and the one registry that matches on the kind ([`platforms::link`] for configuration,
//!   [`platforms`] itself for sinks, sources and routes).
//! - [`inbound`]: what every inbound source shares: `POST /hooks/{link}` (signed generic
//!   webhooks), the settings in force; verify, de-duplicate, then one atomic write into the
//!   chat marked with a trusted `origin`, from where the normal path relays it to every other
//!   link.
//! - [`ops`]: running as a service: supervision, systemd notify and watchdog, the HTTP server
//!   (health, readiness, metrics; hostile-client limits), the health record, metrics, logging, `status`, the
//!   eviction check and the open-file limit.
//! - [`secret`]: URLs and signing secrets that print redacted, never in full.
//! - [`printable`]: untrusted text escaped for terminals and logs (console link, CLI).
//! - [`daemon`]: wires it all together, one worker per link; `run(config, requests, load)`
//!   reloads on request and returns once drained.
//! - [`cli`]: the operator commands behind the `chatbridge` binary, one file per command group.
#![forbid(unsafe_code)]
pub mod bridge;
pub mod chat;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod inbound;
pub mod ops;
pub mod platforms;
pub mod printable;
pub mod redis;
pub mod secret;
