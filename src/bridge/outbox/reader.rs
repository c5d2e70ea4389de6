//! A worker's blocking outbox reads.

use redis::Value;
use redis::aio::ConnectionManager;

use super::entry::{Entry, read_reply};
use super::{CONSUMER, GROUP, Result};
use crate::chat::model::Outbound;
use crate::redis::keys;

/// Where a worker reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries this consumer read earlier and never acknowledged (a crash left them), with
    /// stream ids after this one (`0-0` for all).
    PendingAfter(String),
    /// Entries never read yet.
    New,
}

impl ReadFrom {
    /// Every pending entry, from the first.
    pub fn pending() -> Self {
        Self::PendingAfter("0-0".to_owned())
    }
}

/// A worker's blocking reader: it owns its own connection, because a blocking read would
/// stall every other command queued behind it on a shared one.
pub struct Reader {
    /// This reader's own connection, with a response timeout long enough for `BLOCK`.
    con: ConnectionManager,
    /// The link's outbox stream.
    key: String,
}

impl Reader {
    pub fn new(con: ConnectionManager, link: &str) -> Self {
        Self {
            con,
            key: keys::outbox(link),
        }
    }

    /// Reads up to `count` entries, waiting up to `block_ms` for new ones. Entries that fail
    /// to parse are returned as errors in place, so the caller can dead-letter them.
    pub async fn read(
        &mut self,
        from: &ReadFrom,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<std::result::Result<Outbound, (String, String)>>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(CONSUMER)
            .arg("COUNT")
            .arg(count);
        let start = match from {
            ReadFrom::New => {
                cmd.arg("BLOCK").arg(block_ms);
                ">"
            }
            ReadFrom::PendingAfter(id) => id.as_str(),
        };
        cmd.arg("STREAMS").arg(&self.key).arg(start);
        let reply: Value = cmd.query_async(&mut self.con).await?;
        Ok(read_reply(reply)?
            .into_iter()
            .map(Entry::into_outbound)
            .collect())
    }
}
