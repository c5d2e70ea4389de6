//! Slack: the `[slack]` app and link settings ([`config`]), posting to a channel through the Web
//! API or an incoming webhook ([`outbound`]), and events coming in through the Events API
//! ([`events`]) or Socket Mode ([`socket`]), both reading the app and channel map of
//! [`state`] and naming their senders through [`names`] (`users.info`, cached).

pub(crate) mod channels;
pub mod config;
pub(crate) mod events;
pub(crate) mod names;
pub mod outbound;
pub mod socket;
pub(crate) mod state;

pub use outbound::*;
