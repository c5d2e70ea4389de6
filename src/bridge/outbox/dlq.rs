//! Dead letters: events a link refused for good, with why; listed, replayed or dropped by
//! the operator.

use chrono::Utc;
use redis::{AsyncCommands, Value};

use super::acks::remove_entries;
use super::entry::{Fields, outbound_from_fields, range_reply};
use super::failure::event_failing_field;
use super::{Outbox, Result};
use crate::chat::model::Outbound;
use crate::redis::keys;

impl Outbox {
    /// Moves events to the link's dead-letter stream with the status and an excerpt of why,
    /// atomically with removing them from the outbox and forgetting their failure clocks. The
    /// stream keeps at most `dlq_max_len` entries: older dead letters beyond that are dropped,
    /// counted (`dlq_dropped` in the link's stats) and logged.
    pub async fn dead_letter(
        &mut self,
        link: &str,
        refused: &[Outbound],
        status: Option<u16>,
        detail: &str,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let failed_at = Utc::now().to_rfc3339();
        let status = status.map(|s| s.to_string()).unwrap_or_default();
        for entry in refused {
            pipe.cmd("XADD")
                .arg(keys::dlq(link))
                .arg("*")
                .arg(entry_fields(entry))
                .arg(&[
                    ("status", status.as_str()),
                    ("detail", detail),
                    ("failed_at", failed_at.as_str()),
                ])
                .ignore();
            remove_entries(&mut pipe, link, &[&entry.entry_id]);
            pipe.hdel(keys::link(link), event_failing_field(&entry.entry_id))
                .ignore();
        }
        pipe.cmd("XTRIM")
            .arg(keys::dlq(link))
            .arg("MAXLEN")
            .arg(self.caps.dlq_max_len);
        let (dropped,): (u64,) = pipe.query_async(&mut self.con).await?;
        if dropped > 0 {
            let () = self
                .con
                .hincr(keys::link(link), "dlq_dropped", dropped)
                .await?;
            tracing::warn!(
                link,
                dropped,
                max = self.caps.dlq_max_len,
                "dead-letter stream over dlq_max_len: dropped the oldest dead letters"
            );
        }
        Ok(())
    }

    /// The oldest `count` dead letters of a link. A damaged entry comes back as an error
    /// naming it, in place, so one bad entry does not hide the others.
    pub async fn dlq_list(
        &mut self,
        link: &str,
        count: usize,
    ) -> Result<Vec<std::result::Result<DeadLetter, Damaged>>> {
        self.dlq_page(link, "-", count).await
    }

    async fn dlq_page(
        &mut self,
        link: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<std::result::Result<DeadLetter, Damaged>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let reply: Value = redis::cmd("XRANGE")
            .arg(keys::dlq(link))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.con)
            .await?;
        Ok(range_reply(reply)?
            .into_iter()
            .map(|entry| {
                let read = entry.fields.and_then(|fields| {
                    DeadLetter::from_fields(entry.id.clone(), fields).map_err(|e| e.to_string())
                });
                read.map_err(|why| Damaged { id: entry.id, why })
            })
            .collect())
    }

    /// Puts every readable dead letter of a link back at the end of its outbox, oldest first;
    /// returns how many moved and the damaged entries left where they are.
    pub async fn dlq_replay(&mut self, link: &str) -> Result<(usize, Vec<Damaged>)> {
        let (mut moved, mut damaged) = (0, Vec::new());
        let mut start = "-".to_owned();
        loop {
            let page = self.dlq_page(link, &start, 500).await?;
            let Some(last) = page.last() else {
                return Ok((moved, damaged));
            };
            start = match last {
                Ok(dead) => format!("({}", dead.dlq_id),
                Err(damaged) => format!("({}", damaged.id),
            };
            let mut pipe = redis::pipe();
            pipe.atomic();
            for dead in page {
                let dead = match dead {
                    Ok(dead) => dead,
                    Err(bad) => {
                        damaged.push(bad);
                        continue;
                    }
                };
                pipe.cmd("XADD")
                    .arg(keys::outbox(link))
                    .arg("*")
                    .arg(entry_fields(&dead.entry))
                    .ignore();
                pipe.cmd("XDEL")
                    .arg(keys::dlq(link))
                    .arg(&dead.dlq_id)
                    .ignore();
                moved += 1;
            }
            pipe.query_async::<()>(&mut self.con).await?;
        }
    }

    /// Deletes every dead letter of a link; returns how many.
    pub async fn dlq_drop(&mut self, link: &str) -> Result<usize> {
        let key = keys::dlq(link);
        let (count, _): (usize, ()) = redis::pipe()
            .atomic()
            .xlen(&key)
            .del(&key)
            .query_async(&mut self.con)
            .await?;
        Ok(count)
    }
}

/// A stream entry that cannot be read back as an event (only chatbridge writes these streams,
/// so this means someone else damaged it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The stream entry id.
    pub id: String,
    /// What is wrong with it, for the operator.
    pub why: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.id, self.why)
    }
}

/// One dead letter: the event and why the target refused it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The entry id in the dead-letter stream.
    pub dlq_id: String,
    /// The event as it was in the outbox, to list or put back.
    pub entry: Outbound,
    /// The HTTP status the target refused it with, if it answered at all.
    pub status: Option<u16>,
    /// An excerpt of the target's answer: why it refused.
    pub detail: String,
    /// When it was refused (RFC 3339).
    pub failed_at: String,
}

impl DeadLetter {
    fn from_fields(dlq_id: String, mut fields: Fields) -> Result<Self> {
        let status = fields.get("status").and_then(|s| s.parse().ok());
        let detail = fields.remove("detail").unwrap_or_default();
        let failed_at = fields.remove("failed_at").unwrap_or_default();
        let entry = outbound_from_fields(dlq_id.clone(), fields)?;
        Ok(Self {
            dlq_id,
            entry,
            status,
            detail,
            failed_at,
        })
    }
}

fn entry_fields(entry: &Outbound) -> Vec<(&'static str, String)> {
    vec![
        ("id", entry.event_id.clone()),
        ("key", entry.key.clone()),
        ("scope", entry.scope.channel()),
        ("kind", entry.kind.as_str().to_owned()),
        ("at", entry.enqueued_at.timestamp_millis().to_string()),
        ("payload", entry.payload.clone()),
    ]
}
