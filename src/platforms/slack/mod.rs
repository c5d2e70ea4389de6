//! Slack: the `[slack]` app and link settings ([`config`]), posting to a channel through the Web
//! API or an incoming webhook ([`outbound`]), and events coming in through the Events API
//! ([`events`]) or Socket Mode ([`socket`]).

pub mod config;
pub(crate) mod events;
pub mod outbound;
pub mod socket;

pub use outbound::*;
