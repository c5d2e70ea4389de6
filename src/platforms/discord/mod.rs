//! Discord: the link settings ([`config`]), posting through a channel webhook ([`outbound`]),
//! and channels read through the Gateway ([`gateway`]), which [`state`] maps to rooms.

pub(crate) mod channels;
pub mod config;
pub mod gateway;
pub mod outbound;
pub(crate) mod state;

pub use outbound::*;
