//! Chat timestamps in every accepted form, written the way the seed writes them.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use serde::{Serialize, Serializer};

use super::*;

/// A chat timestamp: naive UTC with microsecond precision, written the way Python's
/// `datetime.utcnow().isoformat()` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(NaiveDateTime);

impl Timestamp {
    /// Now, truncated to microseconds like Python's clock.
    pub fn now() -> Self {
        Self::from_naive(Utc::now().naive_utc())
    }

    pub fn from_naive(t: NaiveDateTime) -> Self {
        let micros = t.nanosecond() / 1_000 * 1_000;
        Self(t.with_nanosecond(micros).unwrap_or(t))
    }

    /// Reads the seed's form with or without a fraction, and RFC 3339 forms with an offset
    /// (`Z`, `+00:00`, or any other offset, converted to UTC).
    pub fn parse(s: &str) -> Result<Self, EventError> {
        let bad = || EventError::BadTimestamp(s.chars().take(64).collect());
        // `FromStr` reads the seed's form without interpreting a format string each time
        // (this runs for every event); the explicit format is the fallback.
        if let Ok(t) = s.parse::<NaiveDateTime>() {
            return Ok(Self::from_naive(t));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            return Ok(Self::from_naive(t));
        }
        let with_offset = DateTime::parse_from_rfc3339(s).map_err(|_| bad())?;
        Ok(Self::from_naive(with_offset.naive_utc()))
    }

    pub fn naive(&self) -> NaiveDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    /// `2026-11-27T20:12:21.123456`, or `2026-11-27T20:12:21` when the microsecond is zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S"))?;
        match self.0.nanosecond() / 1_000 {
            0 => Ok(()),
            micros => write!(f, ".{micros:06}"),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
