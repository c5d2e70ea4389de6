//! User ids that keep their JSON type, and the DM order of two of them.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::*;

/// A user id exactly as its writer typed it: a JSON number stays a number, a string a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserId {
    Number(serde_json::Number),
    Text(String),
    /// An integer beyond 64 bits typed on a command line, as its exact canonical decimal (with
    /// `-` when negative). Written as a bare JSON number, as Python writes its unbounded ints
    /// (`json.dumps(10**30)`), which `serde_json::Number` cannot hold without losing digits.
    #[serde(skip_deserializing, serialize_with = "raw_integer")]
    Integer(String),
}

impl UserId {
    /// Reads a user id typed on a command line: a canonical decimal integer (`0`, `1001`, `-5`,
    /// digits of any length, no leading zero) becomes a number, as the seed's integer ids;
    /// anything else (`007`, `-0`, `abc`) stays a string.
    pub fn from_cli(s: &str) -> Self {
        if !is_canonical_integer(s) {
            return Self::Text(s.to_owned());
        }
        if let Ok(n) = s.parse::<u64>() {
            return Self::Number(n.into());
        }
        match s.parse::<i64>() {
            Ok(n) => Self::Number(n.into()),
            Err(_) => Self::Integer(s.to_owned()),
        }
    }

    pub(super) fn from_value(value: Value, field: &'static str) -> Result<Self, EventError> {
        match value {
            Value::Number(n) => Ok(Self::Number(n)),
            Value::String(s) => Ok(Self::Text(s)),
            _ => Err(EventError::WrongType(field)),
        }
    }

    /// The integer this id denotes, when it is one (a JSON integer or a string of ASCII digits),
    /// as (sign, digits without leading zeros) so arbitrarily long ids compare correctly.
    pub(super) fn integer(&self) -> Option<(bool, String)> {
        let text = match self {
            Self::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Self::Text(s) if is_ascii_digits(s) => s.clone(),
            Self::Integer(digits) => digits.clone(),
            _ => return None,
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        Some((negative && digits != "0", digits.to_owned()))
    }
}

impl fmt::Display for UserId {
    /// The form the id takes inside key and channel names (Python's `str()` of the id).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) | Self::Integer(s) => f.write_str(s),
        }
    }
}

/// `digits` (a canonical integer, see [`is_canonical_integer`]) as a bare JSON number.
pub(super) fn raw_integer<S: Serializer>(digits: &str, s: S) -> Result<S::Ok, S::Error> {
    let raw = serde_json::value::RawValue::from_string(digits.to_owned())
        .map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// An integer written the one way Python's `str(int)` writes it: optional `-`, then digits
/// without a leading zero (`0` alone; never `-0`).
pub(super) fn is_canonical_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    is_ascii_digits(digits) && (s == "0" || !digits.starts_with('0'))
}

pub(super) fn is_ascii_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn compare_integers(a: &(bool, String), b: &(bool, String)) -> Ordering {
    let magnitude = a.1.len().cmp(&b.1.len()).then_with(|| a.1.cmp(&b.1));
    match (a.0, b.0) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Orders two user ids as `docs/wire.md` says for DM channel names: numerically when both are
/// integers, otherwise bytewise as strings. Ids that are numerically equal but spelled
/// differently (`7` and `007`) are ordered bytewise, so their DM has one channel whichever of
/// them sends.
pub fn dm_order(a: &UserId, b: &UserId) -> Ordering {
    let bytewise = || a.to_string().as_bytes().cmp(b.to_string().as_bytes());
    match (a.integer(), b.integer()) {
        (Some(x), Some(y)) => compare_integers(&x, &y).then_with(bytewise),
        _ => bytewise(),
    }
}
