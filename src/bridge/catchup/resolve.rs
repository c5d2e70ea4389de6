//! Resolving a pass: its history entries merged with the live events held meanwhile, in
//! publish order, then enqueued in bounded script calls before checkpoints move.

use std::collections::{HashMap, HashSet};

use super::{Found, Pass, SEEN_SLACK, Summary};
use crate::bridge::outbox::{Commit, Enqueue, Outbox, OutboxError};
use crate::bridge::route::{Routes, origin_among};
use crate::chat::model::{
    ChatEvent, EventKind, OutboundKind, Scope, SystemLine, Timestamp, content_id,
};
use crate::redis::keys;

impl Pass {
    /// The events to enqueue for this pass, merged with `held` (live events that arrived
    /// during the pass, in arrival order), and what to commit with them: checkpoints, the DM
    /// watermark, and the de-dup sets of the walked and `touched` scopes pruned to what may
    /// still matter.
    ///
    /// History order is publish order, so the merge keeps it. What history holds below its
    /// first held message was missed before the subscription began: it comes first. A held
    /// message that history also holds comes after every history entry below it (entries
    /// missed while the subscription was down again, even after an earlier held event) and
    /// before those above it; signals and held messages history does not hold yet keep their
    /// place among the held events. What history holds above the last held message comes last.
    pub fn resolve(
        self,
        held: Vec<Enqueue>,
        routes: &Routes,
        touched: impl IntoIterator<Item = Scope>,
    ) -> (Vec<Enqueue>, Commit, Summary) {
        let mut commit = Commit::default();
        let mut summary = Summary::default();
        let below = self.started_us - SEEN_SLACK.as_micros() as i64;
        let mut pruned: HashSet<Scope> = HashSet::new();
        let mut walks: Vec<Vec<Enqueue>> = Vec::with_capacity(self.walks.len());
        let mut notices = Vec::new();
        for walk in self.walks {
            summary.scopes += 1;
            if walk.gap {
                summary.gaps += 1;
                tracing::warn!(scope = %walk.scope, "history was trimmed past the checkpoint: messages may have been missed");
                notices.push(gap_notice(&walk.scope, routes));
            }
            commit
                .checkpoints
                .push((walk.scope.clone(), walk.checkpoint));
            pruned.insert(walk.scope.clone());
            let scope = walk.scope;
            walks.push(
                walk.found
                    .into_iter()
                    .map(|found| found_event(&scope, found, routes))
                    .collect(),
            );
        }
        pruned.extend(touched);
        commit.prune = pruned.into_iter().map(|scope| (scope, below)).collect();
        if self.dms {
            commit
                .marks
                .push((keys::DMS_SWEPT_AT.to_owned(), self.started_at));
        }
        let events = merge(notices, walks, held, &mut summary);
        (events, commit, summary)
    }
}

/// A history entry as an event to enqueue.
fn found_event(scope: &Scope, found: Found, routes: &Routes) -> Enqueue {
    let message = OutboundKind::Event(EventKind::Message);
    let links = routes.links_for(scope, message);
    Enqueue {
        origin: origin_among(&links, found.origin.as_deref()),
        links,
        scope: scope.clone(),
        key: found.key,
        event_id: found.event_id,
        kind: message,
        payload: found.payload,
        dead: found.dead,
    }
}

/// The history entries of a pass being merged with held events.
struct History {
    /// Each scope's entries, oldest first, not yet emitted.
    walks: Vec<std::vec::IntoIter<Enqueue>>,
    /// How many entries of each walk have been taken.
    emitted: Vec<usize>,
    /// Positions of entries that also arrived live: emitted as held events, not here.
    held: HashSet<(usize, usize)>,
}

impl History {
    /// Emits walk `w`'s entries before position `end`, skipping those that were held.
    fn take_until(&mut self, out: &mut Vec<Enqueue>, w: usize, end: usize, summary: &mut Summary) {
        while self.emitted[w] < end {
            let Some(event) = self.walks[w].next() else {
                return;
            };
            let p = self.emitted[w];
            self.emitted[w] += 1;
            if !self.held.contains(&(w, p)) {
                summary.enqueued += 1;
                summary.dead += usize::from(event.dead.is_some());
                out.push(event);
            }
        }
    }
}

/// Merges each scope's history entries (oldest first) with the held live events, as
/// [`Pass::resolve`] describes; counts the history entries that were not also held.
fn merge(
    notices: Vec<Enqueue>,
    walks: Vec<Vec<Enqueue>>,
    held: Vec<Enqueue>,
    summary: &mut Summary,
) -> Vec<Enqueue> {
    // Where each history entry stands: its walk and position there.
    let mut position: HashMap<(&Scope, &str), (usize, usize)> = HashMap::new();
    for (w, walk) in walks.iter().enumerate() {
        for (p, event) in walk.iter().enumerate() {
            position.insert((&event.scope, event.key.as_str()), (w, p));
        }
    }
    let held_at: Vec<Option<(usize, usize)>> = held
        .iter()
        .map(|event| position.get(&(&event.scope, event.key.as_str())).copied())
        .collect();
    let mut history = History {
        walks: walks.into_iter().map(Vec::into_iter).collect(),
        emitted: Vec::new(),
        held: held_at.iter().flatten().copied().collect(),
    };
    history.emitted = vec![0; history.walks.len()];
    let mut out = notices;
    // What history holds below its first held message was missed before the subscription
    // began: older than anything held.
    for w in 0..history.walks.len() {
        let first_held = held_at
            .iter()
            .flatten()
            .filter(|(held_w, _)| *held_w == w)
            .map(|(_, p)| *p)
            .min()
            .unwrap_or(usize::MAX);
        history.take_until(&mut out, w, first_held, summary);
    }
    for (event, at) in held.into_iter().zip(held_at) {
        if let Some((w, p)) = at {
            history.take_until(&mut out, w, p, summary);
        }
        out.push(event);
    }
    for w in 0..history.walks.len() {
        history.take_until(&mut out, w, usize::MAX, summary);
    }
    out
}

fn gap_notice(scope: &Scope, routes: &Routes) -> Enqueue {
    let line = SystemLine {
        content: format!(
            "chatbridge: messages in {scope} may have been missed while the bridge was away \
             (history was trimmed past its last checkpoint)"
        ),
        timestamp: Timestamp::now(),
        event: None,
        user_id: None,
        username: None,
        extra: [("notice".to_owned(), "gap".into())].into_iter().collect(),
    };
    let payload = crate::chat::pyjson::to_string(&ChatEvent::System(line));
    let key = content_id(&scope.channel(), &payload);
    Enqueue {
        event_id: key.clone(),
        key,
        links: routes.links_for(scope, OutboundKind::Notice),
        scope: scope.clone(),
        kind: OutboundKind::Notice,
        payload,
        dead: None,
        origin: None,
    }
}

/// Enqueues a resolved pass in script calls of bounded size, then commits its checkpoints and
/// prunes in calls of bounded size too (a scope's checkpoint only ever moves after its events
/// are enqueued; a crash in between means a scope is read again, and its entries de-duplicated).
pub async fn enqueue_pass(
    outbox: &mut Outbox,
    events: &[Enqueue],
    commit: &Commit,
) -> Result<usize, OutboxError> {
    const EVENTS_PER_CALL: usize = 500;
    const SCOPES_PER_CALL: usize = 500;
    let mut added = 0;
    for chunk in events.chunks(EVENTS_PER_CALL) {
        added += outbox
            .enqueue_and_commit(chunk, &Commit::default())
            .await?
            .added;
    }
    let checkpoints = commit.checkpoints.chunks(SCOPES_PER_CALL);
    let prunes = commit.prune.chunks(SCOPES_PER_CALL);
    let calls = checkpoints.len().max(prunes.len()).max(1);
    let (mut checkpoints, mut prunes) = (checkpoints, prunes);
    for call in 0..calls {
        let part = Commit {
            checkpoints: checkpoints.next().map(<[_]>::to_vec).unwrap_or_default(),
            prune: prunes.next().map(<[_]>::to_vec).unwrap_or_default(),
            // The DM watermark moves once every scope of the pass is committed.
            marks: if call + 1 == calls {
                commit.marks.clone()
            } else {
                Vec::new()
            },
        };
        outbox.enqueue_and_commit(&[], &part).await?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(scope: &str, key: &str) -> Enqueue {
        Enqueue {
            scope: Scope::Room(scope.into()),
            key: key.into(),
            event_id: key.into(),
            kind: OutboundKind::Event(EventKind::Message),
            payload: String::new(),
            links: Vec::new(),
            dead: None,
            origin: None,
        }
    }

    fn keys(events: &[Enqueue]) -> Vec<&str> {
        events.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn history_and_held_events_merge_in_publish_order() {
        // History: a b missed before the subscription; c held; d e missed while it was down
        // again; f held; g after. Held: signal x, c, signal y, f, z not in history yet.
        let walk: Vec<Enqueue> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|k| event("general", k))
            .collect();
        let other = vec![event("random", "r1")];
        let held: Vec<Enqueue> = ["x", "c", "y", "f", "z"]
            .iter()
            .map(|k| event("general", k))
            .collect();
        let mut summary = Summary::default();
        let merged = merge(
            vec![event("general", "notice")],
            vec![walk, other],
            held,
            &mut summary,
        );
        assert_eq!(
            keys(&merged),
            [
                "notice", "a", "b", "r1", "x", "c", "y", "d", "e", "f", "z", "g"
            ]
        );
        assert_eq!(summary.enqueued, 6, "history entries not also held");
    }
}
