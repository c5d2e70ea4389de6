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
    /// The link itself does not work right now (credentials, a moved or wrong URL, nothing
    /// listening, DNS, TLS): the failure says nothing about the event. Retried, in place, for
    /// as long as it lasts, never before `after`; the link shows as failing meanwhile.
    LinkFailure { after: Option<Duration> },
    /// This attempt failed in a way that may pass (5xx, 408, a timeout or broken connection
    /// once the request was on its way): retried in place, never before `after`. Counts toward
    /// the give-up rule, so one event that keeps failing cannot block the link forever.
    EventFailure { after: Option<Duration> },
    /// The receiver asks to slow down (429): retried after the wait it asks for; never given up.
    RateLimited { after: Option<Duration> },
    /// The receiver refused this content for good: set it aside (dead letter), keep the link.
    Reject,
    /// The endpoint is gone or unusable: stop the link, keep its messages, alert the operator.
    Disable,
}

impl Verdict {
    /// The earliest a retry may come, when the verdict is to retry at all: `Some(None)` means
    /// "retry, no floor", `None` means "do not retry".
    pub fn retry_after(self) -> Option<Option<Duration>> {
        match self {
            Self::LinkFailure { after }
            | Self::EventFailure { after }
            | Self::RateLimited { after } => Some(after),
            Self::Delivered | Self::Reject | Self::Disable => None,
        }
    }

    /// Whether the time this failure lasts counts toward `give_up_after`: only failures that
    /// may be the event's own fault do; a failing link or a rate limit never does.
    pub fn counts_toward_give_up(self) -> bool {
        matches!(self, Self::EventFailure { .. })
    }
}

/// Statuses that say the link (its URL, its credentials, a proxy in front of it) is wrong for
/// every event alike: 401, 403, 404, 405, 407, 421, 426. 3xx joins them (redirects are never
/// followed: a moved URL is the link's problem).
const LINK_FAILURE_STATUSES: [u16; 7] = [401, 403, 404, 405, 407, 421, 426];

/// Classifies an HTTP response: 2xx delivered; 3xx and the statuses of
/// [`LINK_FAILURE_STATUSES`] are link failures; 408 and 5xx event failures; 429 a rate limit;
/// 410 disables the link; any other 4xx (400, 409, 413, 415, 422, …) rejects the event.
/// `Retry-After` is honoured on every retry. A status outside 200–599 says nothing about the
/// event and is treated as a link failure.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Verdict {
    let after = || retry_after.and_then(|value| parse_retry_after(value, Utc::now()));
    match status {
        200..=299 => Verdict::Delivered,
        408 | 500..=599 => Verdict::EventFailure { after: after() },
        429 => Verdict::RateLimited { after: after() },
        410 => Verdict::Disable,
        300..=399 => Verdict::LinkFailure { after: after() },
        _ if LINK_FAILURE_STATUSES.contains(&status) => Verdict::LinkFailure { after: after() },
        400..=499 => Verdict::Reject,
        _ => Verdict::LinkFailure { after: after() },
    }
}

/// Classifies a request that produced no response. A request that cannot even be built (a bad
/// URL or header in the link's own settings) will never succeed: the link is disabled. Failing
/// to connect (refused, DNS, TLS, connect timeout) is a link failure: the request never left.
/// Anything after that (a timeout waiting for the answer, a connection broken mid-request) may
/// be this event's doing: an event failure.
pub fn classify_error(err: &reqwest::Error) -> Verdict {
    if err.is_builder() {
        Verdict::Disable
    } else if err.is_connect() {
        Verdict::LinkFailure { after: None }
    } else {
        Verdict::EventFailure { after: None }
    }
}

/// The give-up rule's view of one send's failed attempts: only event failures count, and a
/// run of failures that do not (the link failing, a rate limit) is left out of the time an
/// event has been failing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GiveUpClock {
    /// When the current run of failures that do not count began (Unix ms), while one lasts.
    uncounted_since: Option<i64>,
}

impl GiveUpClock {
    /// Notes a failed attempt at `now` (Unix ms). For a failure that counts, returns how many
    /// milliseconds before it to leave out (the run of uncounted failures it ends; 0 if none);
    /// for one that does not count, `None`.
    pub fn failed(&mut self, verdict: Verdict, now: i64) -> Option<i64> {
        if verdict.counts_toward_give_up() {
            Some(
                self.uncounted_since
                    .take()
                    .map_or(0, |since| (now - since).max(0)),
            )
        } else {
            self.uncounted_since.get_or_insert(now);
            None
        }
    }
}

/// Whether an event that has kept failing since `since` (Unix ms, with the uncounted time
/// already left out) is given up at `now`: it has failed for longer than `limit`.
pub fn gives_up(since: i64, now: i64, limit: Duration) -> bool {
    let limit = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(since) > limit
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

    fn secs(after: Option<u64>) -> Option<Duration> {
        after.map(Duration::from_secs)
    }

    fn link(after: Option<u64>) -> Verdict {
        Verdict::LinkFailure { after: secs(after) }
    }

    fn event(after: Option<u64>) -> Verdict {
        Verdict::EventFailure { after: secs(after) }
    }

    fn rate(after: Option<u64>) -> Verdict {
        Verdict::RateLimited { after: secs(after) }
    }

    #[test]
    fn statuses_classify_into_link_event_and_rate_limit_failures() {
        let table = [
            (200, None, Verdict::Delivered),
            (204, None, Verdict::Delivered),
            (299, None, Verdict::Delivered),
            (301, None, link(None)),
            (307, None, link(None)),
            (308, Some("3"), link(Some(3))),
            (400, None, Verdict::Reject),
            (401, None, link(None)),
            (401, Some("5"), link(Some(5))),
            (402, None, Verdict::Reject),
            (403, None, link(None)),
            (404, None, link(None)),
            (405, None, link(None)),
            (406, None, Verdict::Reject),
            (407, None, link(None)),
            (408, None, event(None)),
            (409, None, Verdict::Reject),
            (410, None, Verdict::Disable),
            (413, None, Verdict::Reject),
            (415, None, Verdict::Reject),
            (421, None, link(None)),
            (422, None, Verdict::Reject),
            (426, None, link(None)),
            (429, None, rate(None)),
            (429, Some("2"), rate(Some(2))),
            (451, None, Verdict::Reject),
            (499, None, Verdict::Reject),
            (500, None, event(None)),
            (502, Some("7"), event(Some(7))),
            (503, Some("nonsense"), event(None)),
            (504, None, event(None)),
            (599, None, event(None)),
            (101, None, link(None)),
            (600, None, link(None)),
        ];
        for (status, header, expected) in table {
            assert_eq!(classify_status(status, header), expected, "status {status}");
        }
    }

    #[test]
    fn only_event_failures_count_toward_giving_up() {
        assert!(event(None).counts_toward_give_up());
        for verdict in [
            link(None),
            rate(Some(1)),
            Verdict::Delivered,
            Verdict::Reject,
        ] {
            assert!(!verdict.counts_toward_give_up(), "{verdict:?}");
        }
        assert_eq!(rate(Some(2)).retry_after(), Some(secs(Some(2))));
        assert_eq!(link(None).retry_after(), Some(None));
        assert_eq!(Verdict::Reject.retry_after(), None);
        assert_eq!(Verdict::Disable.retry_after(), None);
    }

    #[test]
    fn the_give_up_clock_leaves_out_link_failures_and_rate_limits() {
        let mut clock = GiveUpClock::default();
        assert_eq!(clock.failed(event(None), 1_000), Some(0));
        assert_eq!(clock.failed(event(None), 2_000), Some(0));
        assert_eq!(clock.failed(link(None), 3_000), None);
        assert_eq!(clock.failed(rate(None), 5_000), None);
        assert_eq!(clock.failed(link(None), 8_000), None);
        assert_eq!(
            clock.failed(event(None), 10_000),
            Some(7_000),
            "from the first uncounted failure to the event failure that ends the run"
        );
        assert_eq!(clock.failed(event(None), 11_000), Some(0));
    }

    #[test]
    fn an_event_gives_up_once_it_failed_for_longer_than_the_limit() {
        let limit = Duration::from_secs(2);
        assert!(!gives_up(10_000, 10_000, limit));
        assert!(!gives_up(10_000, 12_000, limit));
        assert!(gives_up(10_000, 12_001, limit));
        assert!(!gives_up(10_000, 9_000, limit), "a clock that went back");
        assert!(
            !gives_up(0, i64::MAX, Duration::MAX),
            "no overflow on huge limits"
        );
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
