//! Consumer groups and acknowledgements.

use chrono::Utc;

use super::{GROUP, Outbox, Result};
use crate::chat::model::Outbound;
use crate::redis::keys;

impl Outbox {
    /// Creates the link's consumer group (and stream) if missing.
    pub async fn ensure_group(&mut self, link: &str) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::outbox(link))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.con)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Acknowledges delivered entries, deletes them from the outbox and records the progress.
    pub async fn ack(&mut self, link: &str, delivered: &[Outbound]) -> Result<()> {
        let Some(last) = delivered.last() else {
            return Ok(());
        };
        let ids: Vec<&str> = delivered.iter().map(|o| o.entry_id.as_str()).collect();
        let mut pipe = redis::pipe();
        remove_entries(pipe.atomic(), link, &ids)
            .hincr(keys::link(link), "delivered", delivered.len())
            .ignore()
            .hset(keys::link(link), "last_id", &last.event_id)
            .ignore()
            .hset(keys::link(link), "last_at", Utc::now().to_rfc3339())
            .ignore()
            .query_async::<()>(&mut self.con)
            .await?;
        Ok(())
    }

    /// Removes entries without delivering them (only for entries that cannot be parsed).
    pub async fn discard(&mut self, link: &str, entry_ids: &[String]) -> Result<()> {
        let mut pipe = redis::pipe();
        remove_entries(pipe.atomic(), link, entry_ids)
            .query_async::<()>(&mut self.con)
            .await?;
        Ok(())
    }
}

/// Adds to `pipe` the acknowledgement and deletion of outbox entries: once settled, an entry
/// leaves both the pending list and the stream.
pub(super) fn remove_entries<'p, I: redis::ToRedisArgs>(
    pipe: &'p mut redis::Pipeline,
    link: &str,
    entry_ids: &[I],
) -> &'p mut redis::Pipeline {
    let key = keys::outbox(link);
    pipe.cmd("XACK")
        .arg(&key)
        .arg(GROUP)
        .arg(entry_ids)
        .ignore()
        .cmd("XDEL")
        .arg(&key)
        .arg(entry_ids)
        .ignore()
}
