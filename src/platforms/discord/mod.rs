//! Discord: the link settings ([`config`]), posting through a channel webhook ([`outbound`]),
//! and channels read through the Gateway ([`gateway`]).

pub mod config;
pub mod gateway;
pub mod outbound;

pub use outbound::*;
