//! Running the bridge as a service: what an operator and a service manager see and control.
//!
//! - [`supervise`]: the daemon's parts as named tasks, each stoppable on its own; the first one
//!   to end or panic unasked stops the daemon, which exits non-zero.
//! - [`notify`]: systemd's notify protocol (READY=1 once subscribed and caught up, STATUS=,
//!   WATCHDOG=1 only while the subscription and the intake show progress, RELOADING=1 … READY=1
//!   around a reload, STOPPING=1).
//! - [`health`]: the record the subscription, the intake and the workers' parts update, which
//!   the watchdog and `/readyz` read.
//! - [`http`]: the HTTP server (`[http]`): `/healthz`, `/readyz`, `/metrics`, and the router the
//!   inbound routes join; header and idle timeouts and a connection cap against hostile clients.
//! - [`metrics`]: every exported metric's name, cheap per-link and per-kind handles, the
//!   Prometheus recorder and the sampler of outbox depth and age.
//! - [`logging`]: log lines as text or JSON, level from `RUST_LOG` or `[log] level`.
//! - [`status`]: what `chatbridge status` prints, read from Redis.
//! - [`eviction`]: at `run` start, refuses a Redis whose `maxmemory-policy` may evict our keys.
//! - [`fdlimit`]: raises the open-file limit at start and keeps a reserve for Redis and outbound
//!   HTTP below the HTTP server's connection cap.

pub mod eviction;
pub mod fdlimit;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod status;
pub mod supervise;
