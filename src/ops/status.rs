//! `chatbridge status`: the daemon's state for a terminal, read from Redis (so it works from
//! any machine and whether or not a daemon runs): per link its state (ok, FAILING since when
//! and why, PAUSED by the target's rate limit until when, DISABLED and why), its queue (depth and the oldest event's age), dead letters,
//! deliveries, which process delivers it; then each inbound connection's state (Discord
//! Gateway: connected, reconnecting, CLOSED and why), the last catch-up pass and the malformed
//! payloads skipped, by kind.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bridge::outbox::{IntakeStats, LinkStatus, Outbox, OutboxError, Queue};
use crate::config::Config;
use crate::printable::{escape, escape_controls};
use crate::redis::lease::{Lease, LeaseHolder};

/// What `status` read for one link.
struct LinkReport {
    status: LinkStatus,
    queue: Queue,
    lease: Option<LeaseHolder>,
}

/// Reads everything, then renders it: the report is one consistent text or an error.
pub async fn report(config: &Config, outbox: &mut Outbox) -> Result<String, OutboxError> {
    let mut links = Vec::with_capacity(config.links.len());
    for link in config.links.keys() {
        links.push(LinkReport {
            status: outbox.status(link).await?,
            queue: outbox.queue(link).await?,
            lease: Lease::delivery(link).holder(&mut outbox.con).await?,
        });
    }
    let intake = outbox.intake_stats().await?;
    // Only the connections this configuration holds: a state left by an old bot token is not
    // news about this one.
    let current = crate::platforms::connections(config);
    let mut inbound = outbox.inbound_states().await?;
    inbound.retain(|connection, _| current.contains(connection));
    Ok(render(&links, &intake, &inbound))
}

fn render(
    links: &[LinkReport],
    intake: &IntakeStats,
    inbound: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    for link in links {
        render_link(&mut out, link);
    }
    for (connection, state) in inbound {
        let _ = writeln!(out, "inbound {}: {}", escape(connection), escape(state));
    }
    let _ = match &intake.last_catchup {
        Some(pass) => writeln!(
            out,
            "last catch-up: {} (after {}): {} rooms/DMs read, {} recovered from history, {} gaps",
            escape(&pass.at),
            escape(&pass.trigger),
            pass.scopes,
            pass.recovered,
            pass.gaps
        ),
        None => writeln!(out, "last catch-up: never"),
    };
    if intake.malformed.is_empty() {
        let _ = writeln!(out, "malformed payloads: none");
    } else {
        let kinds: Vec<String> = intake
            .malformed
            .iter()
            .map(|(kind, count)| format!("{} {count}", escape(kind)))
            .collect();
        let total: u64 = intake.malformed.values().sum();
        let _ = writeln!(out, "malformed payloads: {total} ({})", kinds.join(", "));
    }
    out
}

fn render_link(out: &mut String, link: &LinkReport) {
    let s = &link.status;
    let state = match (&s.disabled, &s.failing_since) {
        (Some(reason), _) => format!(
            "DISABLED: {} (chatbridge enable {})",
            escape(reason),
            s.link
        ),
        (None, Some(since)) => format!(
            "FAILING since {}: {}",
            escape(since),
            escape_controls(s.last_error.as_deref().unwrap_or("-"), 400)
        ),
        (None, None) => match paused(s) {
            Some((until, reason)) => format!(
                "PAUSED until {}: rate limited by the target ({})",
                escape(until),
                escape_controls(reason, 400)
            ),
            None => "ok".to_owned(),
        },
    };
    let _ = writeln!(out, "{}: {state}", s.link);
    let queue = match link.queue.oldest_age {
        Some(age) => format!("{} queued, oldest {} old", link.queue.depth, human(age)),
        None => format!("{} queued", link.queue.depth),
    };
    let last = match (&s.last_id, &s.last_at) {
        (Some(id), Some(at)) => format!(", last {} at {}", escape(id), escape(at)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "  queue: {queue} ({} in flight); dead letters: {}; delivered: {}{last}",
        s.pending, s.dead, s.delivered
    );
    if s.dropped > 0 {
        let _ = writeln!(
            out,
            "  DROPPED: {} events unsent, over outbox_max_len / outbox_max_age_secs",
            s.dropped
        );
    }
    let delivery = match &link.lease {
        Some(holder) => format!(
            "held by {} (lease epoch {}, expires in {} unless renewed)",
            escape_controls(&holder.holder, 200),
            holder.epoch,
            human(holder.expires_in)
        ),
        None => "no process delivers it (no chatbridge run holds its lease)".to_owned(),
    };
    let _ = writeln!(out, "  delivery: {delivery}");
}

/// Until when and why the target rate-limits the link, while that is still ahead (a mark
/// whose time has passed is stale: the next answer clears it).
pub fn paused(s: &LinkStatus) -> Option<(&str, &str)> {
    let until = s.paused_until.as_deref()?;
    let ahead =
        chrono::DateTime::parse_from_rfc3339(until).is_ok_and(|until| until > chrono::Utc::now());
    ahead.then(|| (until, s.paused_reason.as_deref().unwrap_or("-")))
}

/// `45 s`, `12 min 5 s`, `3 h 20 min`, `2 d 4 h`.
fn human(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(human(Duration::from_millis(45_900)), "45 s");
        assert_eq!(human(Duration::from_secs(725)), "12 min 5 s");
        assert_eq!(human(Duration::from_secs(12_000)), "3 h 20 min");
        assert_eq!(human(Duration::from_secs(187_200)), "2 d 4 h");
    }
}
