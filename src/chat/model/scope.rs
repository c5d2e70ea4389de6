//! Where an event lives: a room or a DM, and which room names are allowed.

use std::cmp::Ordering;
use std::fmt;

use super::*;
use crate::redis::keys;

/// Where an event lives: a room or the DM between two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Room(String),
    /// The two user ids as they appear in the channel name, already in `docs/wire.md` order.
    Dm(String, String),
}

impl Scope {
    /// The DM scope between two users, ids ordered as `docs/wire.md` requires.
    pub fn dm(a: &UserId, b: &UserId) -> Self {
        let (first, second) = match dm_order(a, b) {
            Ordering::Greater => (b, a),
            _ => (a, b),
        };
        Self::Dm(first.to_string(), second.to_string())
    }

    /// Parses `chat:room:{room}` or `chat:dm:{a}:{b}`; `None` for anything else (including
    /// room names with `:` and the seed's `…:history`-style key names).
    pub fn from_channel(channel: &str) -> Option<Self> {
        if let Some(room) = channel.strip_prefix(keys::ROOM_CHANNEL_PREFIX) {
            return valid_name(room).then(|| Self::Room(room.to_owned()));
        }
        let pair = channel.strip_prefix(keys::DM_CHANNEL_PREFIX)?;
        let (a, b) = pair.split_once(':')?;
        (valid_name(a) && valid_name(b)).then(|| Self::Dm(a.to_owned(), b.to_owned()))
    }

    /// The Pub/Sub channel.
    pub fn channel(&self) -> String {
        match self {
            Self::Room(room) => keys::room_channel(room),
            Self::Dm(a, b) => keys::dm_channel(a, b),
        }
    }

    /// The history list (newest first).
    pub fn history_key(&self) -> String {
        keys::history(&self.channel())
    }

    pub fn room(&self) -> Option<&str> {
        match self {
            Self::Room(room) => Some(room),
            Self::Dm(..) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Room(room) => write!(f, "{room}"),
            Self::Dm(a, b) => write!(f, "dm:{a}:{b}"),
        }
    }
}

/// Why a room name is refused (`docs/wire.md`: `:` makes key names ambiguous), or `None` if fine.
pub fn room_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("room name is empty")
    } else if name.contains(':') {
        Some("room name contains `:`, which makes Redis key names ambiguous")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("room name contains whitespace or control characters")
    } else if name.len() > 200 {
        Some("room name is longer than 200 bytes")
    } else {
        None
    }
}

pub(super) fn valid_name(name: &str) -> bool {
    room_name_problem(name).is_none()
}
