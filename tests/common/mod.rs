//! Test harness shared by the end-to-end tests: real redis-server per test, real HTTP receivers.
#![allow(dead_code)]

pub mod daemon;
pub mod fake_discord;
pub mod fake_gateway;
pub mod fake_slack;
pub mod fake_socket_mode;
pub mod notify;
pub mod outbox;
pub mod receiver;
pub mod redis;
pub mod seed;
pub mod tls;
pub mod wait;
