//! The Redis layer in one place: how connections are built ([`connect`]), every key and
//! channel name and its planned Cluster hash tag ([`keys`]), and the one lease type every
//! leased thing uses ([`lease`]), with who this process is to the others ([`identity`]). The Lua scripts are in `scripts/*.lua`, each with its KEYS/ARGV
//! contract on top, loaded with `include_str!` by the module that calls it.

pub mod connect;
pub mod identity;
pub mod keys;
pub mod lease;
