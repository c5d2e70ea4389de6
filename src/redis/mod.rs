//! The Redis layer in one place: how connections are built, the one lease type every leased
//! thing uses, (later) every key name and the Lua scripts.

pub mod connect;
pub mod lease;
