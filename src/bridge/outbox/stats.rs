//! Facts about the intake that `chatbridge status` shows, kept in one small hash
//! (`chatbridge:stats`), written once per catch-up pass, never per event: when the last pass
//! was resolved and what it found, and how many payloads were skipped as malformed, by kind
//! (totals over every process that ran on this Redis).

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use redis::AsyncCommands;

use super::{Outbox, Result};
use crate::redis::keys;

/// Fields of the last resolved catch-up pass.
const CATCHUP_AT: &str = "last_catchup_at";
const CATCHUP_TRIGGER: &str = "last_catchup_trigger";
const CATCHUP_SCOPES: &str = "last_catchup_scopes";
const CATCHUP_RECOVERED: &str = "last_catchup_recovered";
const CATCHUP_GAPS: &str = "last_catchup_gaps";
/// Prefix of the skip totals: `malformed:{kind}`.
const MALFORMED: &str = "malformed:";

/// What one resolved catch-up pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassRecord {
    /// After a (re)subscribe (else a periodic sweep).
    pub subscribe: bool,
    /// Rooms and DMs whose history was read.
    pub scopes: usize,
    /// Messages found in history that had not arrived live.
    pub recovered: usize,
    /// History gaps found.
    pub gaps: usize,
}

/// What `chatbridge status` reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeStats {
    /// When the last catch-up pass was resolved (RFC 3339), and how it went.
    pub last_catchup: Option<LastCatchup>,
    /// Payloads skipped, by kind, since the stats began.
    pub malformed: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCatchup {
    pub at: String,
    /// `subscribe` or `sweep`.
    pub trigger: String,
    pub scopes: u64,
    pub recovered: u64,
    pub gaps: u64,
}

impl Outbox {
    /// Records a resolved pass and adds the skips counted since the last record.
    pub async fn record_pass(
        &mut self,
        pass: PassRecord,
        malformed: &HashMap<&'static str, u64>,
    ) -> Result<()> {
        let trigger = if pass.subscribe { "subscribe" } else { "sweep" };
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            keys::STATS,
            &[
                (CATCHUP_AT, Utc::now().to_rfc3339()),
                (CATCHUP_TRIGGER, trigger.to_owned()),
                (CATCHUP_SCOPES, pass.scopes.to_string()),
                (CATCHUP_RECOVERED, pass.recovered.to_string()),
                (CATCHUP_GAPS, pass.gaps.to_string()),
            ],
        )
        .ignore();
        for (kind, count) in malformed {
            pipe.hincr(keys::STATS, format!("{MALFORMED}{kind}"), *count)
                .ignore();
        }
        let () = pipe.query_async(&mut self.con).await?;
        Ok(())
    }

    /// The intake facts as recorded.
    pub async fn intake_stats(&mut self) -> Result<IntakeStats> {
        let fields: HashMap<String, String> = self.con.hgetall(keys::STATS).await?;
        let number = |field: &str| fields.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
        let last_catchup = fields.get(CATCHUP_AT).map(|at| LastCatchup {
            at: at.clone(),
            trigger: fields.get(CATCHUP_TRIGGER).cloned().unwrap_or_default(),
            scopes: number(CATCHUP_SCOPES),
            recovered: number(CATCHUP_RECOVERED),
            gaps: number(CATCHUP_GAPS),
        });
        let malformed = fields
            .iter()
            .filter_map(|(field, value)| {
                Some((
                    field.strip_prefix(MALFORMED)?.to_owned(),
                    value.parse().ok()?,
                ))
            })
            .collect();
        Ok(IntakeStats {
            last_catchup,
            malformed,
        })
    }

    /// The inbound connections' states as last reported, by connection.
    pub async fn inbound_states(&mut self) -> Result<BTreeMap<String, String>> {
        Ok(self.con.hgetall(keys::INBOUND_STATE).await?)
    }
}
