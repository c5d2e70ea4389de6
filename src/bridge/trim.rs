//! History trimming: keeps every chat history list in Redis bounded, even when clients never
//! trim (the seed's `LTRIM` is a separate command a client may never send).
//!
//! Every `[history] trim_interval_secs` a round SCANs `chat:*:history` and, for each room and
//! DM history (mirrored or not, unless `trim_unconfigured = false`), removes from the old end
//! (the tail: lists are `LPUSH`ed, newest first) what is beyond the room's limit, and with
//! `max_age_secs` the entries older than that. One script call handles up to
//! [`KEYS_PER_CALL`] lists atomically, and removes or looks at no more than [`BUDGET`] entries,
//! so Redis never stalls on it; the round pauses between calls as long as the last call took.
//!
//! **Catch-up comes first.** A mirrored room (or a DM, when `[dms]` is set) has a catch-up
//! checkpoint: the SHA-1s of the newest entries the last catch-up pass read
//! ([`crate::bridge::catchup`]). Everything above it has not been read yet; trimming it away would
//! lose a message stored but never published, and make the next pass miss its checkpoint (a
//! gap notice, a replay). So for those lists only entries *below* the checkpoint sequence are
//! ever removed; a list whose checkpoint is missing (not read yet), empty, or not within the
//! newest [`SEARCH_CAP`] entries is left alone this round ("held back") and trimmed once
//! catch-up has read it, at most a `sweep_secs` later.
//!
//! **Age.** An entry's age is its JSON `timestamp` (every form [`crate::chat::model::Timestamp`]
//! reads: seed form with or without fraction, `Z`, or a `±HH:MM` offset). Walking from the
//! oldest entry up, the cut goes just above the newest *readable* entry older than
//! `max_age`, and the walk stops at the first readable entry that is not. An entry whose
//! timestamp cannot be read (not JSON, no timestamp) is therefore dropped only when a
//! readable, expired entry was pushed after it; otherwise it is kept.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use tokio_util::sync::CancellationToken;

use crate::bridge::route::Routes;
use crate::chat::model::Scope;
use crate::config::HistoryConfig;
use crate::redis::keys;

/// Keys asked for per SCAN call.
const SCAN_COUNT: usize = 1000;
/// History lists handled per script call.
pub const KEYS_PER_CALL: usize = 100;
/// Entries one script call may remove, examine or hash (across all its lists; the last list
/// it starts may go over by one checkpoint search); a list with more to do is handled again
/// in a later call.
pub const BUDGET: usize = 10_000;
/// How deep a mirrored list is searched for its checkpoint (entries hashed).
pub const SEARCH_CAP: usize = 10_000;
/// Entries examined from the old end per list and call for `max_age`.
const AGE_CHUNK: usize = 1000;
/// Calls one list may take in one round; the rest waits for the next round.
const CALLS_PER_KEY: usize = 200;

/// Trims a batch of histories as the module docs say (contract: the top of the file).
const TRIM: &str = include_str!("../redis/scripts/trim.lua");

static TRIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TRIM));

/// What a round did, for the log and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// History lists looked at.
    pub keys: usize,
    /// Room history entries removed (over the limit, then by age).
    pub room: usize,
    /// DM history entries removed.
    pub dm: usize,
    /// Of those, removed for being older than `max_age`.
    pub by_age: usize,
    /// Mirrored lists left alone because catch-up had not read them (checkpoint not found).
    pub held: usize,
    /// Lists with more to do when their share of the round ran out.
    pub unfinished: usize,
}

/// One list to trim.
#[derive(Debug, Clone)]
struct Target {
    /// The room or DM whose history it is.
    scope: Scope,
    /// How many entries it keeps (`room_limit`, the room's override, or `dm_limit`).
    limit: usize,
    /// Whether catch-up reads it (its checkpoint protects what is above it).
    watched: bool,
    /// Script calls spent on it this round.
    calls: usize,
}

/// What the trimmer needs to know.
pub struct Trimmer {
    /// Limits, interval, `max_age`, and whether unmirrored scopes are trimmed.
    pub history: HistoryConfig,
    /// Which scopes catch-up reads: the routes in force (the subscription's, a superset of
    /// the old and new ones while a reload switches), read at the start of each round.
    pub routes: Arc<ArcSwap<Routes>>,
}

impl Trimmer {
    /// Trims until `stop`, one round every `trim_interval` (the first at once); a round that
    /// fails (Redis away) is logged and the next one tries again. With trimming off it only
    /// waits for `stop`: a daemon part must not end while the daemon runs.
    pub async fn run(self, client: redis::Client, stop: CancellationToken) {
        let Some(every) = self.history.trim_interval else {
            return stop.cancelled().await;
        };
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut con: Option<ConnectionManager> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            let ready = match con.as_mut() {
                Some(ready) => ready,
                None => match crate::redis::connect::manager(&client, Duration::ZERO).await {
                    Ok(fresh) => con.insert(fresh),
                    Err(e) => {
                        tracing::warn!(error = %e, "history trim: redis unavailable; next round later");
                        continue;
                    }
                },
            };
            let started = Instant::now();
            tokio::select! {
                round = self.round(ready) => match round {
                    Ok(summary) => record(&summary, started.elapsed()),
                    Err(e) => tracing::warn!(error = %e, "history trim round failed; next round later"),
                },
                () = stop.cancelled() => return,
            }
        }
    }

    /// One round over every history list in Redis.
    pub async fn round(&self, con: &mut ConnectionManager) -> Result<Summary, RedisError> {
        let routes = self.routes.load_full();
        let rooms: HashSet<&str> = routes.rooms().collect();
        let mut summary = Summary::default();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys::HISTORY_PATTERN)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(con)
                .await?;
            let targets: VecDeque<Target> = keys
                .iter()
                .filter_map(|key| self.target(key, &routes, &rooms))
                .collect();
            summary.keys += targets.len();
            self.trim(con, targets, &mut summary).await?;
            if next == 0 {
                return Ok(summary);
            }
            cursor = next;
        }
    }

    /// What to do with history key `key`, if anything.
    fn target(&self, key: &str, routes: &Routes, rooms: &HashSet<&str>) -> Option<Target> {
        let scope = keys::channel_of_history(key).and_then(Scope::from_channel)?;
        let (watched, limit) = match &scope {
            Scope::Room(room) => (
                rooms.contains(room.as_str()),
                self.history.room_limit_of(room),
            ),
            Scope::Dm(..) => (routes.mirrors_dms(), self.history.dm_limit),
        };
        (watched || self.history.trim_unconfigured).then_some(Target {
            scope,
            limit,
            watched,
            calls: 0,
        })
    }

    /// Trims `targets` in script calls of [`KEYS_PER_CALL`] lists, pausing after each call as
    /// long as it took.
    async fn trim(
        &self,
        con: &mut ConnectionManager,
        mut targets: VecDeque<Target>,
        summary: &mut Summary,
    ) -> Result<(), RedisError> {
        let cutoff = self.cutoff();
        while !targets.is_empty() {
            let call: Vec<Target> = targets.drain(..targets.len().min(KEYS_PER_CALL)).collect();
            let mut invocation = TRIM_SCRIPT.prepare_invoke();
            invocation
                .arg(BUDGET)
                .arg(cutoff.as_deref().unwrap_or(""))
                .arg(SEARCH_CAP)
                .arg(AGE_CHUNK);
            for target in &call {
                invocation
                    .key(target.scope.history_key())
                    .key(keys::checkpoint(&target.scope.channel()))
                    .arg(target.limit)
                    .arg(u8::from(target.watched));
            }
            let started = Instant::now();
            let reply: Vec<(usize, usize, u8)> = invocation.invoke_async(con).await?;
            let took = started.elapsed();
            for (mut target, (by_limit, by_age, state)) in call.into_iter().zip(reply) {
                let removed = by_limit + by_age;
                match target.scope {
                    Scope::Room(_) => summary.room += removed,
                    Scope::Dm(..) => summary.dm += removed,
                }
                summary.by_age += by_age;
                target.calls += 1;
                match state {
                    1 if target.calls < CALLS_PER_KEY => targets.push_back(target),
                    1 => summary.unfinished += 1,
                    2 => summary.held += 1,
                    _ => {}
                }
            }
            tokio::time::sleep(took).await;
        }
        Ok(())
    }

    /// Unix seconds before which an entry is too old, with `max_age`.
    fn cutoff(&self) -> Option<String> {
        let max_age = chrono::TimeDelta::from_std(self.history.max_age?).ok()?;
        let cutoff = chrono::Utc::now() - max_age;
        Some(format!(
            "{}.{:06}",
            cutoff.timestamp(),
            cutoff.timestamp_subsec_micros()
        ))
    }
}

/// Counts a round in the metrics and logs it: at info when it removed something.
fn record(summary: &Summary, took: Duration) {
    metrics::counter!("chatbridge_history_trimmed_total", "kind" => "room")
        .increment(summary.room as u64);
    metrics::counter!("chatbridge_history_trimmed_total", "kind" => "dm")
        .increment(summary.dm as u64);
    let Summary {
        keys,
        room,
        dm,
        by_age,
        held,
        unfinished,
    } = *summary;
    let took_ms = took.as_millis() as u64;
    if room + dm > 0 {
        tracing::info!(
            keys,
            room,
            dm,
            by_age,
            held,
            unfinished,
            took_ms,
            "history trim round done: trimmed {} entries",
            room + dm
        );
    } else {
        tracing::debug!(
            keys,
            held,
            unfinished,
            took_ms,
            "history trim round done: nothing to trim"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;

    /// Keeps counters by their `kind` label.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let kind = key
                .labels()
                .find(|l| l.key() == "kind")
                .map_or("", |l| l.value());
            let name = format!("{}{{kind={kind}}}", key.name());
            let mut counters = self.0.lock().expect("lock");
            Counter::from_arc(counters.entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn trimmed_entries_are_counted_by_kind() {
        let counters = Counters::default();
        let summary = Summary {
            keys: 3,
            room: 40,
            dm: 2,
            ..Summary::default()
        };
        metrics::with_local_recorder(&counters, || {
            record(&summary, Duration::from_millis(5));
            record(&summary, Duration::from_millis(5));
        });
        let counters = counters.0.lock().expect("lock");
        let value = |name: &str| counters.get(name).map(|c| c.load(Ordering::Relaxed));
        assert_eq!(
            value("chatbridge_history_trimmed_total{kind=room}"),
            Some(80)
        );
        assert_eq!(value("chatbridge_history_trimmed_total{kind=dm}"), Some(4));
    }
}
