//! The Redis layer in one place: how connections are built ([`connect`]), every key and
//! channel name and its planned Cluster hash tag ([`keys`]), and the one lease type every
//! leased thing uses ([`lease`]).

pub mod connect;
pub mod keys;
pub mod lease;
