//! Every key and channel name chatbridge builds, in one place: the seed's `chat:` keys it reads
//! and writes the way the seed does (`docs/wire.md`), and its own `chatbridge:` keys. Nothing
//! else builds a key string, so Redis Cluster (the scale-out issue) can give every key its hash
//! tag here and nowhere else.
//!
//! The functions take what the name is made of (a link name, a scope's channel), not model
//! types, so the chat model can name its channels through this file without an import circle.
//!
//! # Redis Cluster: the hash-tag plan
//! Names do not change in this issue (no `{…}` yet): that would orphan every deployment's keys.
//! In Cluster, every key one atomic script or `MULTI` touches must be in one slot. The seed's
//! keys cannot get braces (the seed names them), but a key without braces hashes as a whole,
//! so our keys can join a seed key's slot by using *that whole name* as their tag. The groups:
//!
//! - **Scope** (tag: the scope's history key, e.g. `{chat:room:general:history}`, the slot the
//!   seed's history already has): [`checkpoint`], [`seen`], [`seen_signals`], [`bridged`] and the
//!   inbound de-dup keys ([`hook_dedup`], [`slack_dedup`], the Discord ones), which then name the
//!   scope they write to. Together with [`history`]: the catch-up reads (one history and its
//!   checkpoint), the trim (history and checkpoint: never removing what catch-up has not read),
//!   and the inbound write of a message (de-dup, history, bridged).
//! - **Link** (tag: `{link}`): [`outbox`], [`dlq`], [`link`], [`delivery_lease`] and
//!   [`delivery_lease_epoch`] (acquired together), [`posted`], [`slack_ts`], [`slack_ts_order`]:
//!   acks, dead letters and their replay, the lease, a link's post records.
//! - **Process-wide** (tag: `{chatbridge}`): [`STATS`], [`INBOUND_STATE`], [`DMS_SWEPT_AT`],
//!   [`LEGACY_CHECKPOINTS`], the inbound connection leases ([`inbound_lease`]) and the Discord
//!   session/last-seen keys: small, rarely written.
//!
//! What the plan cannot keep as it is, to be changed with Cluster itself:
//! - the enqueue script (`outbox/enqueue.lua`) spans both groups in one call (a batch's seen
//!   sets and checkpoints by scope, its outboxes and link stats by link): it has to be cut into
//!   a per-scope step (de-dup, checkpoint, bridged look-up) and a per-link step (append),
//!   the seen member (`{link}:{key}`) already being per link;
//! - the trim, `UNSETTLED` and enqueue batches cover many scopes per call: one call per slot;
//! - the seed's `members` and `read_receipts` keys are in slots of their own, so the inbound
//!   write of a join, leave or read and the seed's own join/leave (`MULTI` with `PUBLISH`) are
//!   single-key writes there, de-duplicated in a step before them;
//! - Pub/Sub channels ([`room_channel`], [`dm_channel`], [`barrier`]) have no slot (classic
//!   Pub/Sub reaches every node); sharded Pub/Sub would be a separate decision.
//!
//! Types below: STRING, LIST, SET, ZSET, HASH, STREAM as Redis names them; "channel" is Pub/Sub.

/// The prefix of a room's channel (`chat:room:{room}`).
pub const ROOM_CHANNEL_PREFIX: &str = "chat:room:";
/// The prefix of a DM's channel (`chat:dm:{a}:{b}`).
pub const DM_CHANNEL_PREFIX: &str = "chat:dm:";
/// What follows a channel in its history key.
const HISTORY_SUFFIX: &str = ":history";
/// The pattern of every room channel (chatbridge PSUBSCRIBEs it).
pub const ROOM_CHANNELS: &str = "chat:room:*";
/// The pattern of every DM channel (subscribed only when DMs are mirrored).
pub const DM_CHANNELS: &str = "chat:dm:*";
/// SCAN pattern of every history, rooms and DMs (the trim walks them all).
pub const HISTORY_PATTERN: &str = "chat:*:history";
/// SCAN pattern of the DM histories (catch-up finds the DM scopes by them).
pub const DM_HISTORY_PATTERN: &str = "chat:dm:*:history";

/// Channel `chat:room:{room}`: the seed publishes a room's events here; chatbridge too, for
/// events written on behalf of a link. Tag: none (Pub/Sub).
pub fn room_channel(room: &str) -> String {
    format!("{ROOM_CHANNEL_PREFIX}{room}")
}

/// Channel `chat:dm:{a}:{b}` (`a`, `b` already in `docs/wire.md` order): as [`room_channel`].
pub fn dm_channel(a: &str, b: &str) -> String {
    format!("{DM_CHANNEL_PREFIX}{a}:{b}")
}

/// LIST `{channel}:history`, newest first: the seed's (and chatbridge's inbound) writes push,
/// catch-up reads, the trim bounds it. Tag: none (a seed key); it *is* the scope group's tag.
pub fn history(channel: &str) -> String {
    format!("{channel}{HISTORY_SUFFIX}")
}

/// The channel whose history key `key` is (`None` for any other key).
pub fn channel_of_history(key: &str) -> Option<&str> {
    key.strip_suffix(HISTORY_SUFFIX)
}

/// SET `{channel}:members`: a room's user ids, written by the seed's join/leave and by inbound
/// presence events. Tag: none (a seed key, a slot of its own).
pub fn members(channel: &str) -> String {
    format!("{channel}:members")
}

/// HASH `{channel}:read_receipts`: user id → last message read, written by the seed's `read`
/// and by inbound read receipts. Tag: none (a seed key, a slot of its own).
pub fn read_receipts(channel: &str) -> String {
    format!("{channel}:read_receipts")
}

/// STREAM `chatbridge:outbox:{link}`: events waiting for the link; the intake appends, the
/// link's worker reads and acknowledges (deletes). Tag: `{link}`.
pub fn outbox(link: &str) -> String {
    format!("chatbridge:outbox:{link}")
}

/// STREAM `chatbridge:dlq:{link}`: events the link refused for good, with why; written by the
/// worker (and the enqueue, for undecodable history), replayed or dropped by the CLI.
/// Tag: `{link}`.
pub fn dlq(link: &str) -> String {
    format!("chatbridge:dlq:{link}")
}

/// HASH `chatbridge:link:{link}`: delivery stats (`delivered`, `last_id`, `last_at`), the
/// `disabled` reason, the count of events `dropped` over the outbox caps, and the failure state:
/// `failing_since` and `last_error` while the link fails as a whole, `paused_until` and
/// `paused_reason` while its target rate-limits it, `event_failing_since:{entry id}` (Unix ms)
/// while an entry keeps failing. Written by the worker, the enqueue (drops) and the CLI.
/// Tag: `{link}`.
pub fn link(link: &str) -> String {
    format!("chatbridge:link:{link}")
}

/// ZSET `chatbridge:bridged:{channel}`: payload keys of events chatbridge wrote into the scope on
/// behalf of a link (scored by Unix ms, the newest 10,000); written by the inbound write and
/// `store`, read by the enqueue (no echo). Tag: the scope's history key.
pub fn bridged(channel: &str) -> String {
    format!("chatbridge:bridged:{channel}")
}

/// STRING `chatbridge:checkpoint:{channel}`: how far catch-up has read the scope's history (a
/// fingerprint); written by the enqueue, read by catch-up and the trim; DM ones expire when
/// idle. Tag: the scope's history key.
pub fn checkpoint(channel: &str) -> String {
    format!("chatbridge:checkpoint:{channel}")
}

/// ZSET `chatbridge:seen:{channel}`: `{link}:{key}` of the scope's messages enqueued since its
/// last catch-up pass, scored by Redis time (µs); the enqueue's de-dup set. Tag: the scope's
/// history key.
pub fn seen(channel: &str) -> String {
    format!("chatbridge:seen:{channel}")
}

/// ZSET `chatbridge:seen:{channel}:signals`: as [`seen`], for signals (typing, receipts,
/// presence), the most recent only. Tag: the scope's history key.
pub fn seen_signals(channel: &str) -> String {
    format!("chatbridge:seen:{channel}:signals")
}

/// STRING `chatbridge:lease:{link}` with a `PX` expiry: which process delivers the link
/// (`{token} {epoch} {place} {pid} {host}`); written by the lease script. Tag: `{link}`.
pub fn delivery_lease(link: &str) -> String {
    format!("chatbridge:lease:{link}")
}

/// STRING `chatbridge:lease:{link}:epoch`: how many times the link's lease was taken (INCR in
/// the same script). Tag: `{link}`.
pub fn delivery_lease_epoch(link: &str) -> String {
    format!("chatbridge:lease:{link}:epoch")
}

/// STRING `chatbridge:lease:{what}:{id}` with a `PX` expiry: which process holds an inbound
/// connection (`slack-socket` by app, `discord-gateway` by bot token fingerprint). Tag:
/// `{chatbridge}`.
pub fn inbound_lease(what: &str, id: &str) -> String {
    format!("chatbridge:lease:{what}:{id}")
}

/// HASH `chatbridge:stats`: the last resolved catch-up pass and skipped payloads by kind; written
/// once per pass, read by `chatbridge status`. Tag: `{chatbridge}`.
pub const STATS: &str = "chatbridge:stats";

/// HASH `chatbridge:inbound:state`: per inbound connection (`discord-gateway:{token hash}`),
/// what its holder last reported (`{state} since {RFC 3339}` and, when it matters, why); read by
/// `chatbridge status`. Tag: `{chatbridge}`.
pub const INBOUND_STATE: &str = "chatbridge:inbound:state";

/// STRING `chatbridge:dms:swept_at`: when DM mirroring began, then when a pass last completed;
/// written and read by catch-up. Tag: `{chatbridge}`.
pub const DMS_SWEPT_AT: &str = "chatbridge:dms:swept_at";

/// HASH `chatbridge:checkpoints`: channel → id of the last message enqueued, from before
/// checkpoints had their own keys; only read (once, after an upgrade). Tag: `{chatbridge}`.
pub const LEGACY_CHECKPOINTS: &str = "chatbridge:checkpoints";

/// Channel `chatbridge:barrier:{id}`: this process's catch-up barriers (published by the intake,
/// subscribed by the subscription). Tag: none (Pub/Sub).
pub fn barrier(id: &str) -> String {
    format!("chatbridge:barrier:{id}")
}

/// STRING `chatbridge:inbound:hook:{link}:{id}` with an expiry: a signed webhook's `webhook-id`
/// already written (holds the event's id). Tag: the target scope's history key.
pub fn hook_dedup(link: &str, id: &str) -> String {
    format!("chatbridge:inbound:hook:{link}:{id}")
}

/// STRING `chatbridge:inbound:slack:{event_id}`: a Slack event already written. Tag: the target
/// scope's history key.
pub fn slack_dedup(event_id: &str) -> String {
    format!("chatbridge:inbound:slack:{event_id}")
}

/// STRING `chatbridge:inbound:discord:{message id}`: a Discord message already written. Tag:
/// the target scope's history key.
pub fn discord_dedup(message_id: &str) -> String {
    format!("chatbridge:inbound:discord:{message_id}")
}

/// STRING `chatbridge:inbound:discord:member:{id}:{channel}`: a Discord member event already
/// written. Tag: the target scope's history key.
pub fn discord_member_dedup(id: &str, channel: &str) -> String {
    format!("chatbridge:inbound:discord:member:{id}:{channel}")
}

/// STRING `chatbridge:discord:session:{gateway}`: the Gateway session the last holder saved (for
/// a RESUME). Tag: `{chatbridge}`.
pub fn discord_session(gateway: &str) -> String {
    format!("chatbridge:discord:session:{gateway}")
}

/// STRING `chatbridge:discord:last:{channel}`: the newest Discord message id seen in a channel.
/// Tag: `{chatbridge}`.
pub fn discord_last(channel: &str) -> String {
    format!("chatbridge:discord:last:{channel}")
}

/// HASH `chatbridge:slack_ts:{link}`: event key → Slack `ts` of the post. Tag: `{link}`.
pub fn slack_ts(link: &str) -> String {
    format!("chatbridge:slack_ts:{link}")
}

/// ZSET `chatbridge:slack_ts:{link}:order`: the same event keys by when recorded, for trimming.
/// Tag: `{link}`.
pub fn slack_ts_order(link: &str) -> String {
    format!("chatbridge:slack_ts:{link}:order")
}

/// ZSET `chatbridge:posted:{link}`: the posts of each message already made (by event key).
/// Tag: `{link}`.
pub fn posted(link: &str) -> String {
    format!("chatbridge:posted:{link}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Files that still build key names themselves, to move here: the platform files another
    /// part of issue 18 restructures, and the subscription's patterns and the routing table's
    /// channel parsing.
    const NOT_YET: &[&str] = &[];

    /// The lines of `text` before its tests that hold a key-name literal: `"chat:…` or
    /// `"chatbridge:…` (not `"chatbridge: ` as log and error messages begin).
    fn key_literals(text: &str) -> Vec<String> {
        text.lines()
            .take_while(|line| !line.starts_with("#[cfg(test)]"))
            .filter(|line| !line.trim_start().starts_with("//"))
            .filter(|line| {
                line.contains("\"chat:")
                    || line
                        .match_indices("\"chatbridge:")
                        .any(|(at, m)| !line[at + m.len()..].starts_with(' '))
            })
            .map(str::to_owned)
            .collect()
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_other_file_builds_a_key_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        let mut found = Vec::new();
        for file in files {
            let name = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name == "src/redis/keys.rs" || NOT_YET.contains(&name.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            found.extend(
                key_literals(&text)
                    .into_iter()
                    .map(|l| format!("{name}: {l}")),
            );
        }
        assert!(
            found.is_empty(),
            "key names built outside redis::keys: {found:#?}"
        );
    }

    #[test]
    fn the_check_sees_a_key_literal_but_not_a_log_line() {
        assert_eq!(key_literals("let k = \"chatbridge:x\";").len(), 1);
        assert_eq!(key_literals("let k = \"chat:room:x\";").len(), 1);
        assert!(key_literals("eprintln!(\"chatbridge: oops\");").is_empty());
        assert!(key_literals("#[cfg(test)]\nlet k = \"chat:room:x\";").is_empty());
    }

    #[test]
    fn names_are_the_ones_deployments_already_hold() {
        let room = room_channel("general");
        assert_eq!(room, "chat:room:general");
        assert_eq!(dm_channel("1", "2"), "chat:dm:1:2");
        assert_eq!(history(&room), "chat:room:general:history");
        assert_eq!(
            channel_of_history("chat:dm:1:2:history"),
            Some("chat:dm:1:2")
        );
        assert_eq!(channel_of_history("chat:dm:1:2:members"), None);
        assert_eq!(members(&room), "chat:room:general:members");
        assert_eq!(read_receipts(&room), "chat:room:general:read_receipts");
        assert_eq!(seen(&room), "chatbridge:seen:chat:room:general");
        assert_eq!(
            seen_signals(&room),
            "chatbridge:seen:chat:room:general:signals"
        );
        assert_eq!(checkpoint(&room), "chatbridge:checkpoint:chat:room:general");
        assert_eq!(bridged(&room), "chatbridge:bridged:chat:room:general");
        assert_eq!(outbox("a"), "chatbridge:outbox:a");
        assert_eq!(dlq("a"), "chatbridge:dlq:a");
        assert_eq!(link("a"), "chatbridge:link:a");
        assert_eq!(delivery_lease("a"), "chatbridge:lease:a");
        assert_eq!(delivery_lease_epoch("a"), "chatbridge:lease:a:epoch");
        assert_eq!(
            inbound_lease("slack-socket", "A1"),
            "chatbridge:lease:slack-socket:A1"
        );
        assert_eq!(hook_dedup("a", "x"), "chatbridge:inbound:hook:a:x");
        assert_eq!(barrier("b"), "chatbridge:barrier:b");
    }
}
