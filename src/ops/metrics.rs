//! Every metric chatbridge exports, named in one place, and the handles the hot paths keep so
//! that recording costs an atomic add, never an allocation or a registry lookup.
//!
//! Label values come only from the configuration (link names) or from fixed sets in the code
//! (event kinds, skip kinds, failure reasons): never from chat data, so the number of series
//! stays bounded. Without an installed recorder (no `[http]` section) every handle is a no-op.
//!
//! The recorder is `metrics-exporter-prometheus`'s; `/metrics` renders it on request
//! ([`crate::ops::http`]), and the outbox gauges are sampled from Redis every [`SAMPLE_EVERY`]
//! ([`sample`]).

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::bridge::outbox::Outbox;
use crate::bridge::retry::Verdict;
use crate::chat::model::{EventKind, Outbound};

/// Live events decoded from the subscription, by `kind` (message, join, leave, typing,
/// read_receipt, system: a system line that is neither join nor leave).
pub const EVENTS_RECEIVED: &str = "chatbridge_events_received_total";
/// Events a link's target accepted, by `link`.
pub const DELIVERED: &str = "chatbridge_delivered_total";
/// Failed send attempts that will be retried, by `link`.
pub const DELIVERY_RETRIES: &str = "chatbridge_delivery_retries_total";
/// Failed send attempts, by `link` and `reason` (link, event, rate_limited, refused, gone).
pub const DELIVERY_FAILURES: &str = "chatbridge_delivery_failures_total";
/// Events moved to a link's dead-letter stream by its worker, by `link`.
pub const DEAD_LETTERED: &str = "chatbridge_dead_lettered_total";
/// Seconds from enqueue to the target's acceptance, per event, by `link`.
pub const DELIVERY_LATENCY: &str = "chatbridge_delivery_latency_seconds";
/// Events waiting in a link's outbox (sampled), by `link`.
pub const OUTBOX_DEPTH: &str = "chatbridge_outbox_depth";
/// Age of the oldest event in a link's outbox, 0 when empty (sampled), by `link`.
pub const OUTBOX_OLDEST_AGE: &str = "chatbridge_outbox_oldest_age_seconds";
/// Times the Redis subscription ended unexpectedly and was connected again.
pub const REDIS_RECONNECTS: &str = "chatbridge_redis_reconnects_total";
/// Subscription sessions that ended and were replaced: each a possible gap for signals and
/// publish-only messages, by `reason` (redis_restarted, output_buffer_limit,
/// connection_closed, no_answer, connection_error).
pub const SUBSCRIPTION_GAPS: &str = "chatbridge_subscription_gaps_total";
/// How long each of those gaps lasted, in seconds.
pub const SUBSCRIPTION_GAP_SECONDS: &str = "chatbridge_subscription_gap_seconds";
/// The reasons [`SUBSCRIPTION_GAPS`] counts by.
pub const GAP_REASONS: [&str; 5] = [
    "redis_restarted",
    "output_buffer_limit",
    "connection_closed",
    "no_answer",
    "connection_error",
];
/// Catch-up passes resolved, by `trigger` (subscribe: after a (re)connect; sweep: periodic).
pub const CATCHUP_RUNS: &str = "chatbridge_catchup_runs_total";
/// Messages catch-up found in history that had not arrived live.
pub const CATCHUP_RECOVERED: &str = "chatbridge_catchup_recovered_total";
/// History gaps catch-up found (and announced with a notice).
pub const CATCHUP_GAPS: &str = "chatbridge_catchup_gaps_total";
/// Payloads skipped, by `kind` (not_json, not_utf8, oversized, missing_field, wrong_type, …).
pub const MALFORMED: &str = "chatbridge_malformed_payloads_total";
/// History entries removed by the history trimmer.
pub const HISTORY_TRIMMED: &str = "chatbridge_history_trimmed_total";
/// Requests to the inbound routes (Slack events, signed hooks), by `route` and `result`.
pub const INBOUND_REQUESTS: &str = "chatbridge_inbound_requests_total";
/// Inbound connections this process holds and has connected, by `route` (discord_gateway,
/// slack_socket): 0 while standing by, reconnecting or closed.
pub const INBOUND_CONNECTED: &str = "chatbridge_inbound_connected";
/// Connections the HTTP server holds open.
pub const HTTP_CONNECTIONS_OPEN: &str = "chatbridge_http_connections_open";
/// Connections the HTTP server closed at once because `max_connections` were open and none of
/// them could give way.
pub const HTTP_CONNECTIONS_REFUSED: &str = "chatbridge_http_connections_refused_total";
/// Connections the HTTP server cut off, by `reason` (header_timeout, idle_timeout, evicted: it
/// gave way to a new one while `max_connections` were open).
pub const HTTP_CONNECTIONS_CLOSED: &str = "chatbridge_http_connections_closed_total";

/// How often the outbox gauges are read from Redis.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long one sample may wait for Redis.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Histogram buckets of [`DELIVERY_LATENCY`], in seconds: a millisecond to an hour.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// Installs the Prometheus recorder for this process and describes every metric; the handle
/// renders the exposition text. Once per process (a second call fails).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(SUBSCRIPTION_GAP_SECONDS.into()),
            LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    // Registered now, so they show (at 0) before anything happens; the rest are registered
    // by the parts that record them, when they start.
    for counter in [REDIS_RECONNECTS, CATCHUP_GAPS, CATCHUP_RECOVERED] {
        metrics::counter!(counter).absolute(0);
    }
    for reason in GAP_REASONS {
        metrics::counter!(SUBSCRIPTION_GAPS, "reason" => reason).absolute(0);
    }
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        EVENTS_RECEIVED,
        "Live events decoded from the Redis subscription"
    );
    describe_counter!(DELIVERED, "Events the link's target accepted");
    describe_counter!(
        DELIVERY_RETRIES,
        "Failed send attempts that will be retried"
    );
    describe_counter!(DELIVERY_FAILURES, "Failed send attempts, by reason");
    describe_counter!(
        DEAD_LETTERED,
        "Events moved to the link's dead-letter stream"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from enqueue to the target's acceptance, per event"
    );
    describe_gauge!(OUTBOX_DEPTH, "Events waiting in the link's outbox");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest event in the link's outbox (0 when empty)"
    );
    describe_counter!(
        REDIS_RECONNECTS,
        "Redis subscription sessions that ended and reconnected"
    );
    describe_counter!(
        SUBSCRIPTION_GAPS,
        "Subscription sessions that ended and were replaced (possible gaps for signals), by reason"
    );
    describe_histogram!(
        SUBSCRIPTION_GAP_SECONDS,
        Unit::Seconds,
        "How long each subscription gap lasted"
    );
    describe_counter!(CATCHUP_RUNS, "Catch-up passes resolved");
    describe_counter!(
        CATCHUP_RECOVERED,
        "Messages found in history that had not arrived live"
    );
    describe_counter!(CATCHUP_GAPS, "History gaps found by catch-up");
    describe_counter!(
        MALFORMED,
        "Payloads skipped as malformed or unusable, by kind"
    );
    describe_counter!(HISTORY_TRIMMED, "History entries removed by the trimmer");
    describe_counter!(
        INBOUND_REQUESTS,
        "Requests to the inbound routes, by result"
    );
    describe_gauge!(
        INBOUND_CONNECTED,
        "Inbound connections (a platform's gateway or socket) held and connected"
    );
    describe_gauge!(
        HTTP_CONNECTIONS_OPEN,
        "Connections the HTTP server holds open"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Connections closed at once because max_connections were open"
    );
    describe_counter!(
        HTTP_CONNECTIONS_CLOSED,
        "Connections the HTTP server cut off, by reason"
    );
}

/// Counts one inbound connection in [`INBOUND_CONNECTED`] while it is connected; dropping it
/// uncounts it (the connection's future was dropped: lease lost, stop).
pub struct ConnectedGauge {
    route: &'static str,
    on: std::sync::atomic::AtomicBool,
}

impl ConnectedGauge {
    pub fn new(route: &'static str) -> Self {
        metrics::gauge!(INBOUND_CONNECTED, "route" => route).increment(0.0);
        Self {
            route,
            on: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn set(&self, connected: bool) {
        let was = self.on.swap(connected, std::sync::atomic::Ordering::SeqCst);
        let gauge = metrics::gauge!(INBOUND_CONNECTED, "route" => self.route);
        match (was, connected) {
            (false, true) => gauge.increment(1.0),
            (true, false) => gauge.decrement(1.0),
            _ => {}
        }
    }
}

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// One link's delivery metrics, registered once when its worker is made.
pub struct LinkMetrics {
    delivered: Counter,
    retries: Counter,
    /// By [`Reason`], in its order.
    failures: [Counter; Reason::COUNT],
    dead_lettered: Counter,
    latency: Histogram,
}

/// Why a send attempt failed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Link,
    Event,
    RateLimited,
    Refused,
    Gone,
}

impl Reason {
    const COUNT: usize = 5;
    const ALL: [Reason; Self::COUNT] = [
        Self::Link,
        Self::Event,
        Self::RateLimited,
        Self::Refused,
        Self::Gone,
    ];

    fn of(verdict: Verdict) -> Option<Self> {
        match verdict {
            Verdict::Delivered => None,
            Verdict::LinkFailure { .. } => Some(Self::Link),
            Verdict::EventFailure { .. } => Some(Self::Event),
            Verdict::RateLimited { .. } => Some(Self::RateLimited),
            Verdict::Reject => Some(Self::Refused),
            Verdict::Disable => Some(Self::Gone),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Event => "event",
            Self::RateLimited => "rate_limited",
            Self::Refused => "refused",
            Self::Gone => "gone",
        }
    }
}

impl LinkMetrics {
    /// Registers the link's series (shown at 0 until something happens).
    pub fn new(link: &str) -> Self {
        let failures = Reason::ALL.map(|reason| {
            metrics::counter!(
                DELIVERY_FAILURES,
                "link" => link.to_owned(),
                "reason" => reason.as_str()
            )
        });
        Self {
            delivered: metrics::counter!(DELIVERED, "link" => link.to_owned()),
            retries: metrics::counter!(DELIVERY_RETRIES, "link" => link.to_owned()),
            failures,
            dead_lettered: metrics::counter!(DEAD_LETTERED, "link" => link.to_owned()),
            latency: metrics::histogram!(DELIVERY_LATENCY, "link" => link.to_owned()),
        }
    }

    /// A batch the target accepted: counted, and each event's time since it was enqueued.
    pub fn delivered(&self, batch: &[Outbound]) {
        self.delivered.increment(batch.len() as u64);
        let now = chrono::Utc::now();
        for event in batch {
            let waited = (now - event.enqueued_at).num_microseconds().unwrap_or(0);
            self.latency.record(waited.max(0) as f64 / 1e6);
        }
    }

    /// A send attempt that did not deliver (nothing for one that did).
    pub fn attempt_failed(&self, verdict: Verdict) {
        if let Some(reason) = Reason::of(verdict) {
            self.failures[reason as usize].increment(1);
        }
    }

    /// A failed attempt that will be retried.
    pub fn retried(&self) {
        self.retries.increment(1);
    }

    /// Events moved to the dead-letter stream.
    pub fn dead_lettered(&self, events: usize) {
        self.dead_lettered.increment(events as u64);
    }
}

/// Counters of live events by kind, kept by the decoder.
pub struct Received {
    /// In [`EventKind::ALL`] order.
    by_kind: [Counter; EventKind::ALL.len()],
    /// System lines that are neither join nor leave.
    system: Counter,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            by_kind: EventKind::ALL
                .map(|kind| metrics::counter!(EVENTS_RECEIVED, "kind" => kind.as_str())),
            system: metrics::counter!(EVENTS_RECEIVED, "kind" => "system"),
        }
    }
}

impl Received {
    /// One live event of `kind` (`None`: a system line that is neither join nor leave).
    pub fn count(&self, kind: Option<EventKind>) {
        let counter = kind
            .and_then(|kind| EventKind::ALL.iter().position(|k| *k == kind))
            .map_or(&self.system, |index| &self.by_kind[index]);
        counter.increment(1);
    }
}

/// Handles on [`MALFORMED`] by skip kind, registered the first time each kind is seen.
#[derive(Default)]
pub struct Malformed {
    by_kind: HashMap<&'static str, Counter>,
}

impl Malformed {
    pub fn count(&mut self, kind: &'static str) {
        self.by_kind
            .entry(kind)
            .or_insert_with(|| metrics::counter!(MALFORMED, "kind" => kind))
            .increment(1);
    }
}

/// A catch-up pass was resolved: `subscribe` says whether it followed a (re)subscribe.
pub fn catchup_resolved(subscribe: bool, recovered: usize, gaps: usize) {
    let trigger = if subscribe { "subscribe" } else { "sweep" };
    metrics::counter!(CATCHUP_RUNS, "trigger" => trigger).increment(1);
    metrics::counter!(CATCHUP_RECOVERED).increment(recovered as u64);
    metrics::counter!(CATCHUP_GAPS).increment(gaps as u64);
}

/// The subscription ended unexpectedly and will connect again.
pub fn redis_reconnect() {
    metrics::counter!(REDIS_RECONNECTS).increment(1);
}

/// A subscription gap of `lasted` closed: a new session is subscribed.
pub fn subscription_gap(reason: &'static str, lasted: Duration) {
    metrics::counter!(SUBSCRIPTION_GAPS, "reason" => reason).increment(1);
    metrics::histogram!(SUBSCRIPTION_GAP_SECONDS).record(lasted.as_secs_f64());
}

/// Samples each link's outbox depth and oldest-entry age every [`SAMPLE_EVERY`] into gauges,
/// and runs the recorder's upkeep, until `stop`. A Redis that does not answer leaves the
/// gauges at their last values (logged at debug level).
pub async fn sample(
    con: ConnectionManager,
    status: crate::ops::notify::Status,
    handle: PrometheusHandle,
    stop: CancellationToken,
) {
    let mut outbox = Outbox::new(con);
    // Each link's gauges, registered the first time it is sampled (links come and go on reload).
    let mut gauges: HashMap<String, (Gauge, Gauge)> = HashMap::new();
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        handle.run_upkeep();
        for link in status.links() {
            let (depth, age) = gauges.entry(link.clone()).or_insert_with(|| {
                let depth = metrics::gauge!(OUTBOX_DEPTH, "link" => link.clone());
                let age = metrics::gauge!(OUTBOX_OLDEST_AGE, "link" => link.clone());
                (depth, age)
            });
            match tokio::time::timeout(SAMPLE_TIMEOUT, outbox.queue(&link)).await {
                Ok(Ok(queue)) => {
                    depth.set(queue.depth as f64);
                    age.set(queue.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
                }
                Ok(Err(e)) => tracing::debug!(link, error = %e, "cannot sample the outbox"),
                Err(_) => tracing::debug!(link, "cannot sample the outbox: redis timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::chat::model::{OutboundKind, Scope};

    fn event(waited_ms: i64) -> Outbound {
        Outbound {
            entry_id: "1-0".into(),
            event_id: "e".into(),
            key: "k".into(),
            scope: Scope::Room("general".into()),
            kind: OutboundKind::Event(EventKind::Message),
            payload: "{}".into(),
            enqueued_at: Utc::now() - chrono::Duration::milliseconds(waited_ms),
        }
    }

    /// Records through `record` into a private recorder and returns its exposition text.
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DELIVERY_LATENCY.into()), LATENCY_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    #[test]
    fn a_link_counts_deliveries_latency_failures_and_dead_letters() {
        let text = rendered(|| {
            let link = LinkMetrics::new("audit");
            link.delivered(&[event(20), event(3_000)]);
            link.attempt_failed(Verdict::Delivered);
            link.attempt_failed(Verdict::RateLimited { after: None });
            link.retried();
            link.attempt_failed(Verdict::Reject);
            link.dead_lettered(1);
        });
        for line in [
            r#"chatbridge_delivered_total{link="audit"} 2"#,
            r#"chatbridge_delivery_retries_total{link="audit"} 1"#,
            r#"chatbridge_delivery_failures_total{link="audit",reason="rate_limited"} 1"#,
            r#"chatbridge_delivery_failures_total{link="audit",reason="refused"} 1"#,
            r#"chatbridge_delivery_failures_total{link="audit",reason="gone"} 0"#,
            r#"chatbridge_dead_lettered_total{link="audit"} 1"#,
            r#"chatbridge_delivery_latency_seconds_bucket{link="audit",le="0.025"} 1"#,
            r#"chatbridge_delivery_latency_seconds_bucket{link="audit",le="5"} 2"#,
            r#"chatbridge_delivery_latency_seconds_count{link="audit"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn received_events_are_counted_by_kind_and_skips_by_skip_kind() {
        let text = rendered(|| {
            let received = Received::default();
            received.count(Some(EventKind::Message));
            received.count(Some(EventKind::Message));
            received.count(Some(EventKind::ReadReceipt));
            received.count(None);
            let mut malformed = Malformed::default();
            malformed.count("not_json");
            malformed.count("not_json");
        });
        for line in [
            r#"chatbridge_events_received_total{kind="message"} 2"#,
            r#"chatbridge_events_received_total{kind="read_receipt"} 1"#,
            r#"chatbridge_events_received_total{kind="system"} 1"#,
            r#"chatbridge_events_received_total{kind="join"} 0"#,
            r#"chatbridge_malformed_payloads_total{kind="not_json"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
