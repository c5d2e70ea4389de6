//! The one place that decides whether a failed send is retried, and how long to wait.
//!
//! Links report what happened (an HTTP status, a transport error); this module turns that into a
//! [`Verdict`], and [`Backoff`] turns repeated failures into waits. Nothing else in the crate
//! interprets status codes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;

/// The longest wait a `Retry-After` header may ask for; anything beyond is treated as this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// What to do with a batch after one attempt to send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver accepted it: acknowledge and move on.
    Delivered,
    /// A transient failure: send the same batch again later, not before `after` when given.
    Retry { after: Option<Duration> },
    /// The receiver refused this content for good: set it aside (dead letter), keep the link.
    Reject,
    /// The endpoint is gone or unusable: stop the link, keep its messages, alert the operator.
    Disable,
}

/// Classifies an HTTP response (Standard Webhooks sender rules): 2xx delivered; 408, 429 and 5xx
/// retried, honouring `Retry-After`; 410 disables the link; 3xx (redirects are never followed)
/// and other 4xx reject. Anything outside 200–599 is retried: it says nothing about the content.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
        },
        410 => Verdict::Disable,
        300..=499 => Verdict::Reject,
        _ => Verdict::Retry { after: None },
    }
}

/// Classifies a request that produced no response. A request that cannot even be built (a bad
/// URL or header in the link's own settings) will never succeed: the link is disabled. Every
/// other failure (connect, DNS, timeout, body, protocol) is transient.
pub fn classify_error(err: &reqwest::Error) -> Verdict {
    if err.is_builder() {
        Verdict::Disable
    } else {
        Verdict::Retry { after: None }
    }
}

/// Reads `Retry-After`: seconds (integer or decimal) or an HTTP-date, relative to `now`.
/// A date in the past means "now"; values above an hour are capped; garbage is ignored.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::from_secs_f64(secs.min(RETRY_AFTER_CAP.as_secs_f64()))
        }
        Ok(_) => return None,
        Err(_) => {
            let date = DateTime::parse_from_rfc2822(value).ok()?;
            (date.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// Exponential backoff with jitter: each wait is drawn from the upper half of `base · 2ⁿ`
/// (capped at `max`), and never shorter than the receiver's own `Retry-After`.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first wait's upper bound.
    base: Duration,
    /// The ceiling of the exponential part, so a long outage is still probed regularly.
    max: Duration,
    /// Consecutive failures so far: the exponent.
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The wait before the next attempt. `hint` (a `Retry-After`) is a floor: the result is never
    /// shorter, even when it exceeds `max`.
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        jittered.max(hint.unwrap_or(Duration::ZERO))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// 0.5 s doubling up to 5 minutes.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(after: Option<u64>) -> Verdict {
        Verdict::Retry {
            after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn statuses_classify_like_the_standard_webhooks_sender_rules() {
        let table = [
            (200, None, Verdict::Delivered),
            (204, None, Verdict::Delivered),
            (299, None, Verdict::Delivered),
            (301, None, Verdict::Reject),
            (307, None, Verdict::Reject),
            (400, None, Verdict::Reject),
            (401, None, Verdict::Reject),
            (403, None, Verdict::Reject),
            (404, None, Verdict::Reject),
            (408, None, retry(None)),
            (410, None, Verdict::Disable),
            (413, None, Verdict::Reject),
            (429, None, retry(None)),
            (429, Some("2"), retry(Some(2))),
            (500, None, retry(None)),
            (502, Some("7"), retry(Some(7))),
            (503, Some("nonsense"), retry(None)),
            (504, None, retry(None)),
            (101, None, retry(None)),
        ];
        for (status, header, expected) in table {
            assert_eq!(classify_status(status, header), expected, "status {status}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_caps() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T20:12:21Z")
            .unwrap()
            .with_timezone(&Utc);
        let parse = |v| parse_retry_after(v, now);
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("999999999"), Some(RETRY_AFTER_CAP));
        assert_eq!(parse("1e300"), Some(RETRY_AFTER_CAP));
        assert_eq!(parse("-3"), None);
        assert_eq!(parse("NaN"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(
            parse("Fri, 27 Nov 2026 20:12:51 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Fri, 27 Nov 2026 20:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("Sat, 28 Nov 2026 20:12:21 GMT"),
            Some(RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(300);
        for _ in 0..50 {
            let mut backoff = Backoff::new(base, max);
            for attempt in 0..20u32 {
                let ceiling = base.saturating_mul(2u32.pow(attempt)).min(max);
                let wait = backoff.next(None);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "attempt {attempt}: {wait:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn backoff_jitter_actually_varies() {
        let draws: std::collections::HashSet<Duration> =
            (0..20).map(|_| Backoff::default().next(None)).collect();
        assert!(draws.len() > 1, "20 draws were all {draws:?}");
    }

    #[test]
    fn retry_after_is_a_floor_even_above_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(1));
        assert_eq!(
            backoff.next(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        let small_hint = backoff.next(Some(Duration::from_millis(1)));
        assert!(small_hint >= Duration::from_millis(500));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for _ in 0..10 {
            backoff.next(None);
        }
        assert!(backoff.next(None) >= Duration::from_secs(150));
        backoff.reset();
        assert!(backoff.next(None) <= Duration::from_secs(1));
    }
}
