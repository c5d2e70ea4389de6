//! Turns what the sink recorded into one scenario's numbers.

use serde_json::{Map, Value, json};

use crate::sink::Arrival;

/// What a scenario measured besides the arrivals.
pub struct Run<'a> {
    /// The scenario's name, first field of its line.
    pub name: &'a str,
    /// Messages the generator sent.
    pub sent: u64,
    /// Every arrival, in arrival order.
    pub arrivals: &'a [Arrival],
    /// The start of the rate's time span (first send; for the drain, the sink's start).
    pub rate_from_ns: u64,
    /// Whether the link promises order (`max_in_flight = 1`); `out_of_order` is null otherwise.
    pub ordered: bool,
    /// The daemon's peak resident memory.
    pub rss_mb: f64,
    /// The daemon's CPU time over the scenario.
    pub cpu_s: f64,
}

/// The scenario's JSON object, fields in the documented order.
pub fn summarise(run: &Run) -> Map<String, Value> {
    let counts = Counts::of(run.arrivals);
    let mut latencies: Vec<u64> = counts
        .first
        .iter()
        .map(|a| a.received_ns.saturating_sub(a.sent_ns))
        .collect();
    latencies.sort_unstable();
    let last_ns = run.arrivals.iter().map(|a| a.received_ns).max();
    let rate = last_ns
        .map(|last| last.saturating_sub(run.rate_from_ns) as f64 / 1e9)
        .filter(|span| *span > 0.0)
        .map(|span| round(counts.first.len() as f64 / span, 1));
    let delivered = counts.first.len() as u64;
    let line = json!({
        "scenario": run.name,
        "sent": run.sent,
        "delivered": delivered,
        "lost": run.sent.saturating_sub(delivered),
        "duplicates": counts.duplicates,
        "out_of_order": run.ordered.then_some(counts.out_of_order),
        "msgs_per_sec": rate,
        "p50_ms": percentile_ms(&latencies, 50.0),
        "p99_ms": percentile_ms(&latencies, 99.0),
        "max_ms": latencies.last().map(|ns| round(*ns as f64 / 1e6, 3)),
        "rss_mb": round(run.rss_mb, 1),
        "cpu_s": round(run.cpu_s, 2),
    });
    match line {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// Distinct arrivals, duplicates and order violations.
struct Counts {
    /// The first arrival of each sequence number, in arrival order.
    first: Vec<Arrival>,
    /// Sequence numbers that arrived more than once.
    duplicates: u64,
    /// First arrivals whose seq is below the highest seq that arrived before them.
    out_of_order: u64,
}

impl Counts {
    fn of(arrivals: &[Arrival]) -> Self {
        let mut times = std::collections::HashMap::<u64, u32>::with_capacity(arrivals.len());
        let mut first = Vec::with_capacity(arrivals.len());
        let mut highest: Option<u64> = None;
        let mut out_of_order = 0;
        for arrival in arrivals {
            let seen = times.entry(arrival.seq).or_insert(0);
            *seen += 1;
            if *seen > 1 {
                continue;
            }
            if highest.is_some_and(|h| arrival.seq < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(arrival.seq));
            first.push(*arrival);
        }
        let duplicates = times.values().filter(|n| **n > 1).count() as u64;
        Self {
            first,
            duplicates,
            out_of_order,
        }
    }
}

/// The nearest-rank percentile of sorted nanoseconds, in milliseconds.
fn percentile_ms(sorted_ns: &[u64], pct: f64) -> Option<f64> {
    let rank = ((pct / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_ns.len().max(1)) - 1;
    sorted_ns.get(index).map(|ns| round(*ns as f64 / 1e6, 3))
}

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}
