//! The seed's world, as every chat client sees it (`docs/wire.md`).
//!
//! - [`model`]: the typed chat events (message, system line, typing, read receipt), timestamps
//!   in every accepted form, user ids that keep their JSON type, room/DM scopes.
//! - [`pyjson`]: serialises JSON byte-for-byte like Python's `json.dumps`, so what we write
//!   matches what the seed writes, and reads what Python writes that strict parsers refuse.
//! - [`store`]: the seed's operations (join, leave, send, DM, typing, read, history, members,
//!   receipts) on Redis, each one atomic.

pub mod model;
pub mod pyjson;
pub mod store;
