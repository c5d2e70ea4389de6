//! The outbox against a real redis-server: idempotent enqueue, the de-dup sets and their caps,
//! checkpoints committed with a batch, outbox caps, pending re-delivery after a crash, dead
//! letters and their replay.

mod common;

use std::time::Duration;

use chatbridge::bridge::outbox::{Caps, Commit, Enqueue, Outbox, ReadFrom, Reader};
use chatbridge::chat::model::{EventKind, Outbound, OutboundKind, Scope};
use common::redis::RedisServer;
use redis::AsyncCommands;

async fn outbox(redis: &RedisServer) -> Outbox {
    let con = chatbridge::redis::connect::manager(&redis.client(), Duration::ZERO)
        .await
        .unwrap();
    Outbox::new(con)
}

async fn reader(redis: &RedisServer, link: &str) -> Reader {
    let con = chatbridge::redis::connect::manager(&redis.client(), Duration::from_secs(2))
        .await
        .unwrap();
    Reader::new(con, link)
}

fn message(id: &str, links: &[&str]) -> Enqueue {
    Enqueue {
        scope: Scope::Room("general".into()),
        key: id.into(),
        event_id: id.into(),
        kind: OutboundKind::Event(EventKind::Message),
        payload: format!(r#"{{"id": "{id}"}}"#),
        links: links.iter().map(|l| l.to_string()).collect(),
        dead: None,
        origin: None,
    }
}

async fn read_all(reader: &mut Reader, from: ReadFrom) -> Vec<Outbound> {
    reader
        .read(&from, 100, 10)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Which of `keys` are in the de-dup set of room `general`.
async fn seen(redis: &RedisServer, keys: &[&str]) -> Vec<bool> {
    let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
        .arg("chatbridge:seen:chat:room:general")
        .arg(keys)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    scores.into_iter().map(|s| s.is_some()).collect()
}

/// The event ids a fresh reader of `link`'s outbox gets, in order.
async fn new_event_ids(redis: &RedisServer, link: &str) -> Vec<String> {
    let mut reader = reader(redis, link).await;
    read_all(&mut reader, ReadFrom::New)
        .await
        .into_iter()
        .map(|o| o.event_id)
        .collect()
}

#[tokio::test]
async fn enqueue_is_idempotent_per_event_and_fans_out_in_order() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    for link in ["a", "b"] {
        outbox.ensure_group(link).await.unwrap();
    }
    let batch = [message("m1", &["a", "b"]), message("m2", &["a"])];
    let done = outbox.enqueue(&batch).await.unwrap();
    assert_eq!((done.added, done.duplicates), (2, 0));
    let again = outbox
        .enqueue(&[message("m2", &["a"]), message("m3", &["a"])])
        .await
        .unwrap();
    assert_eq!((again.added, again.duplicates), (1, 1));

    let got = new_event_ids(&redis, "a").await;
    assert_eq!(got, ["m1", "m2", "m3"]);
    let mut b = reader(&redis, "b").await;
    let got = read_all(&mut b, ReadFrom::New).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, r#"{"id": "m1"}"#);
    assert_eq!(got[0].scope, Scope::Room("general".into()));

    let scope = Scope::Room("general".into());
    assert_eq!(
        outbox.checkpoint(&scope).await.unwrap(),
        None,
        "live events never move the history checkpoint"
    );
    assert_eq!(
        seen(&redis, &["a:m1", "b:m1", "a:m3", "b:m3", "a:zz"]).await,
        [true, true, true, false, false],
        "each link records what it was given"
    );
}

/// Two processes with different links on one Redis (a deploy that adds a link while the old
/// process still runs): whichever enqueues an event first, each link gets it exactly once.
#[tokio::test]
async fn de_duplication_is_per_link_whichever_process_enqueues_first() {
    let redis = RedisServer::start();
    let mut old = outbox(&redis).await;
    let mut new = outbox(&redis).await;
    for link in ["a", "b"] {
        old.ensure_group(link).await.unwrap();
    }
    for n in 0..40 {
        let id = format!("m{n}");
        // The old process mirrors to `a`; the new one to `a` and the added `b`.
        let (first, second) = if n % 2 == 0 {
            (
                old.enqueue(&[message(&id, &["a"])]).await.unwrap(),
                new.enqueue(&[message(&id, &["a", "b"])]).await.unwrap(),
            )
        } else {
            let second = new.enqueue(&[message(&id, &["a", "b"])]).await.unwrap();
            (old.enqueue(&[message(&id, &["a"])]).await.unwrap(), second)
        };
        if n % 2 == 0 {
            assert_eq!(
                (first.added, second.added),
                (1, 1),
                "b is new to the second"
            );
        } else {
            assert_eq!((first.duplicates, second.added), (1, 1), "a had it already");
        }
    }
    let expected: Vec<String> = (0..40).map(|n| format!("m{n}")).collect();
    for link in ["a", "b"] {
        let mut reader = reader(&redis, link).await;
        let got: Vec<String> = read_all(&mut reader, ReadFrom::New)
            .await
            .into_iter()
            .map(|o| o.event_id)
            .collect();
        assert_eq!(got, expected, "link {link}: every message once, in order");
    }
}

/// The bare key an earlier version recorded (seen for every link) still counts after an
/// upgrade, so nothing it enqueued is enqueued again.
#[tokio::test]
async fn keys_recorded_per_scope_by_an_earlier_version_still_count_for_every_link() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    outbox.ensure_group("a").await.unwrap();
    let _: () = redis
        .connection()
        .await
        .zadd("chatbridge:seen:chat:room:general", "m1", 1)
        .await
        .unwrap();
    let done = outbox
        .enqueue(&[message("m1", &["a"]), message("m2", &["a"])])
        .await
        .unwrap();
    assert_eq!((done.added, done.duplicates), (1, 1));
    let got = new_event_ids(&redis, "a").await;
    assert_eq!(got, ["m2"]);
}

/// The enqueue script asks each seen set once per batch and writes it once: an event twice in
/// one batch still goes out once per link, a bare key of an earlier version still hides its
/// event, and the set records the events in batch order, also past the script's chunk size.
#[tokio::test]
async fn one_batch_de_duplicates_within_itself_and_records_in_order() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    for link in ["a", "b"] {
        outbox.ensure_group(link).await.unwrap();
    }
    let _: () = redis
        .connection()
        .await
        .zadd("chatbridge:seen:chat:room:general", "old", 1)
        .await
        .unwrap();
    let mut batch = vec![
        message("m1", &["a", "b"]),
        message("old", &["a", "b"]),
        message("m1", &["a", "b"]),
        message("m2", &["b"]),
        message("m2", &["a", "b"]),
    ];
    batch.extend((0..1200).map(|n| message(&format!("n{n}"), &["a", "b"])));
    let done = outbox.enqueue(&batch).await.unwrap();
    assert_eq!((done.added, done.duplicates), (1203, 2));
    let mut expected_a = vec!["m1".to_owned(), "m2".to_owned()];
    expected_a.extend((0..1200).map(|n| format!("n{n}")));
    let mut expected_b = vec!["m1".to_owned(), "m2".to_owned()];
    expected_b.extend((0..1200).map(|n| format!("n{n}")));
    for (link, expected) in [("a", expected_a), ("b", expected_b)] {
        let mut reader = reader(&redis, link).await;
        let mut got = Vec::new();
        loop {
            let read = read_all(&mut reader, ReadFrom::New).await;
            if read.is_empty() {
                break;
            }
            got.extend(read.into_iter().map(|o| o.event_id));
        }
        assert_eq!(
            got, expected,
            "link {link}: each event once, in batch order"
        );
    }
    let ranked: Vec<String> = redis
        .connection()
        .await
        .zrange("chatbridge:seen:chat:room:general", 0, 6)
        .await
        .unwrap();
    assert_eq!(
        ranked,
        ["old", "a:m1", "b:m1", "a:old", "b:old", "b:m2", "a:m2"],
        "recorded in batch order, each once"
    );
    let again = outbox.enqueue(&batch[..5]).await.unwrap();
    assert_eq!((again.added, again.duplicates), (0, 5));
}

/// With `packed_entries` an outbox entry holds two fields (`m` and `payload`); a reader gets
/// the same events from packed entries as from the five named fields, also both mixed in one
/// stream (entries an earlier version wrote, then packed ones), pending ones included.
#[tokio::test]
async fn packed_entries_read_back_as_the_same_events_beside_named_ones() {
    let redis = RedisServer::start();
    let con = chatbridge::redis::connect::manager(&redis.client(), Duration::ZERO)
        .await
        .unwrap();
    let mut named = outbox(&redis).await;
    let mut packed = Outbox::with_caps(
        con,
        Caps {
            packed_entries: true,
            ..Caps::default()
        },
    );
    for link in ["a", "b"] {
        named.ensure_group(link).await.unwrap();
    }
    let mut odd = message("m2", &["a"]);
    odd.event_id = "an id\nwith a newline, ünïcödé".into();
    odd.scope = Scope::Room("ünï".into());
    odd.kind = OutboundKind::Event(EventKind::Typing);
    named.enqueue(&[message("m1", &["a"])]).await.unwrap();
    packed
        .enqueue(&[odd.clone(), message("m3", &["a"])])
        .await
        .unwrap();
    named.enqueue(&[message("m4", &["b"])]).await.unwrap();
    packed.enqueue(&[message("m5", &["b"])]).await.unwrap();

    let fields: Vec<Vec<String>> = {
        let reply: redis::streams::StreamRangeReply = redis
            .connection()
            .await
            .xrange_all("chatbridge:outbox:a")
            .await
            .unwrap();
        reply
            .ids
            .iter()
            .map(|e| {
                let mut names: Vec<String> = e.map.keys().cloned().collect();
                names.sort();
                names
            })
            .collect()
    };
    assert_eq!(
        fields,
        [
            vec!["id", "key", "kind", "payload", "scope"],
            vec!["m", "payload"],
            vec!["m", "payload"],
        ]
    );
    let mut a = reader(&redis, "a").await;
    let got = read_all(&mut a, ReadFrom::New).await;
    let again = read_all(&mut a, ReadFrom::pending()).await;
    assert_eq!(got, again, "pending entries read back the same");
    let ids: Vec<&str> = got.iter().map(|o| o.event_id.as_str()).collect();
    assert_eq!(ids, ["m1", odd.event_id.as_str(), "m3"]);
    let second = &got[1];
    assert_eq!(
        (&second.key, &second.scope, second.kind, &second.payload),
        (&odd.key, &odd.scope, odd.kind, &odd.payload)
    );
    let stamped: i64 = second.entry_id.split('-').next().unwrap().parse().unwrap();
    assert_eq!(second.enqueued_at.timestamp_millis(), stamped);
    let mut b = reader(&redis, "b").await;
    let got: Vec<String> = read_all(&mut b, ReadFrom::New)
        .await
        .into_iter()
        .map(|o| o.event_id)
        .collect();
    assert_eq!(got, ["m4", "m5"]);
}

#[tokio::test]
async fn seen_sets_are_capped_and_pruned_by_a_commit() {
    let redis = RedisServer::start();
    let con = chatbridge::redis::connect::manager(&redis.client(), Duration::ZERO)
        .await
        .unwrap();
    let caps = Caps {
        seen_cap: 10,
        ..Caps::default()
    };
    let mut outbox = Outbox::with_caps(con, caps);
    let batch: Vec<Enqueue> = (0..30).map(|i| message(&format!("m{i}"), &["a"])).collect();
    outbox.enqueue(&batch).await.unwrap();
    let mut con = redis.connection().await;
    let key = "chatbridge:seen:chat:room:general";
    let kept: Vec<String> = con.zrange(key, 0, -1).await.unwrap();
    let expected: Vec<String> = (20..30).map(|i| format!("a:m{i}")).collect();
    assert_eq!(kept, expected);

    // A commit moves the checkpoint and forgets keys enqueued before the given time.
    let (_, score): (String, f64) = con
        .zrange_withscores::<_, Vec<(String, f64)>>(key, 5, 5)
        .await
        .unwrap()
        .remove(0);
    let scope = Scope::Room("general".into());
    let commit = Commit {
        checkpoints: vec![(scope.clone(), "v2:abc".into())],
        prune: vec![(scope.clone(), score as i64)],
        marks: Vec::new(),
    };
    outbox.enqueue_and_commit(&[], &commit).await.unwrap();
    let kept: Vec<String> = con.zrange(key, 0, -1).await.unwrap();
    let expected: Vec<String> = (25..30).map(|i| format!("a:m{i}")).collect();
    assert_eq!(kept, expected);
    assert_eq!(
        outbox.checkpoint(&scope).await.unwrap().as_deref(),
        Some("v2:abc")
    );
}

#[tokio::test]
async fn an_outbox_over_its_cap_drops_the_oldest_and_counts_them() {
    let redis = RedisServer::start();
    let con = chatbridge::redis::connect::manager(&redis.client(), Duration::ZERO)
        .await
        .unwrap();
    let caps = Caps {
        outbox_max_len: 5,
        ..Caps::default()
    };
    let mut outbox = Outbox::with_caps(con, caps);
    outbox.ensure_group("a").await.unwrap();
    let batch: Vec<Enqueue> = (0..8).map(|i| message(&format!("m{i}"), &["a"])).collect();
    let done = outbox.enqueue(&batch).await.unwrap();
    assert_eq!(done.dropped, [("a".to_owned(), 3)]);
    let mut a = reader(&redis, "a").await;
    let ids: Vec<String> = read_all(&mut a, ReadFrom::New)
        .await
        .into_iter()
        .map(|o| o.event_id)
        .collect();
    assert_eq!(ids, ["m3", "m4", "m5", "m6", "m7"]);
    let status = outbox.status("a").await.unwrap();
    assert_eq!(status.dropped, 3);
}

#[tokio::test]
async fn unacknowledged_entries_are_read_again_as_pending_and_acks_delete_them() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    outbox.ensure_group("a").await.unwrap();
    let batch = [message("m1", &["a"]), message("m2", &["a"])];
    outbox.enqueue(&batch).await.unwrap();
    let mut first = reader(&redis, "a").await;
    let read = read_all(&mut first, ReadFrom::New).await;
    assert_eq!(read.len(), 2);
    drop(first);

    // A new process (crash before ack): the entries are pending, in order.
    let mut second = reader(&redis, "a").await;
    assert!(read_all(&mut second, ReadFrom::New).await.is_empty());
    let pending = read_all(&mut second, ReadFrom::pending()).await;
    let ids: Vec<&str> = pending.iter().map(|o| o.event_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);

    // Reading on past what was handed out: the pending list is walked once, not re-read.
    let after_first = ReadFrom::PendingAfter(pending[0].entry_id.clone());
    let rest = read_all(&mut second, after_first).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event_id, "m2");
    let after_last = ReadFrom::PendingAfter(pending[1].entry_id.clone());
    assert!(read_all(&mut second, after_last).await.is_empty());

    outbox.ack("a", &pending[..1]).await.unwrap();
    let status = outbox.status("a").await.unwrap();
    assert_eq!((status.depth, status.pending, status.delivered), (1, 1, 1));
    assert_eq!(status.last_id.as_deref(), Some("m1"));
    let left = read_all(&mut second, ReadFrom::pending()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_id, "m2");
}

#[tokio::test]
async fn dead_letters_keep_why_and_replay_into_the_outbox() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    outbox.ensure_group("a").await.unwrap();
    outbox.enqueue(&[message("bad", &["a"])]).await.unwrap();
    let mut r = reader(&redis, "a").await;
    let read = read_all(&mut r, ReadFrom::New).await;
    outbox
        .dead_letter("a", &read, Some(400), "HTTP 400: invalid_payload")
        .await
        .unwrap();
    let status = outbox.status("a").await.unwrap();
    assert_eq!((status.depth, status.pending, status.dead), (0, 0, 1));
    let letters: Vec<_> = outbox
        .dlq_list("a", 10)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].status, Some(400));
    assert_eq!(letters[0].detail, "HTTP 400: invalid_payload");
    assert_eq!(letters[0].entry.event_id, "bad");
    assert_eq!(letters[0].entry.payload, r#"{"id": "bad"}"#);

    assert_eq!(outbox.dlq_replay("a").await.unwrap(), (1, vec![]));
    assert_eq!(outbox.status("a").await.unwrap().dead, 0);
    let replayed = read_all(&mut r, ReadFrom::New).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event_id, "bad");
    assert_eq!(replayed[0].payload, r#"{"id": "bad"}"#);

    outbox
        .dead_letter("a", &replayed, Some(400), "again")
        .await
        .unwrap();
    assert_eq!(outbox.dlq_drop("a").await.unwrap(), 1);
    assert_eq!(outbox.status("a").await.unwrap().dead, 0);
}

#[tokio::test]
async fn a_damaged_dead_letter_is_named_and_does_not_block_the_others() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    let mut con = redis.connection().await;
    let damaged: String = redis::cmd("XADD")
        .arg("chatbridge:dlq:a")
        .arg("*")
        .arg("id")
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    outbox.ensure_group("a").await.unwrap();
    outbox.enqueue(&[message("ok", &["a"])]).await.unwrap();
    let mut r = reader(&redis, "a").await;
    let read = read_all(&mut r, ReadFrom::New).await;
    outbox
        .dead_letter("a", &read, Some(400), "no")
        .await
        .unwrap();

    let listed = outbox.dlq_list("a", 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].as_ref().unwrap_err().id, damaged);
    assert_eq!(listed[1].as_ref().unwrap().entry.event_id, "ok");
    let (moved, left) = outbox.dlq_replay("a").await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, damaged);
    assert!(outbox.dlq_list("a", 0).await.unwrap().is_empty());
}

/// Appends an entry chatbridge did not write to link `a`'s outbox; returns its id.
async fn add_raw(con: &mut redis::aio::MultiplexedConnection, fields: &[(&[u8], &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("chatbridge:outbox:a").arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    cmd.query_async(con).await.unwrap()
}

#[tokio::test]
async fn damaged_outbox_entries_are_errors_in_place_and_deleted_pending_ones_are_skipped() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    let mut con = redis.connection().await;
    outbox.ensure_group("a").await.unwrap();
    outbox.enqueue(&[message("m1", &["a"])]).await.unwrap();
    let lacking = add_raw(&mut con, &[(b"id", b"x")]).await;
    let binary_payload: [(&[u8], &[u8]); 5] = [
        (b"id", b"y"),
        (b"scope", b"chat:room:general"),
        (b"kind", b"message"),
        (b"at", b"0"),
        (b"payload", b"\xff\xfe"),
    ];
    let binary = add_raw(&mut con, &binary_payload).await;
    let binary_name = add_raw(&mut con, &[(b"\xff", b"z")]).await;
    outbox.enqueue(&[message("m2", &["a"])]).await.unwrap();

    let mut r = reader(&redis, "a").await;
    let read = r.read(&ReadFrom::New, 100, 10).await.unwrap();
    let shape = |read: &[Result<Outbound, (String, String)>]| -> Vec<String> {
        read.iter()
            .map(|entry| match entry {
                Ok(outbound) => outbound.event_id.clone(),
                Err((id, _)) => id.clone(),
            })
            .collect()
    };
    let ids = shape(&read);
    assert_eq!(
        ids,
        ["m1", &lacking, &binary, &binary_name, "m2"],
        "{read:?}"
    );
    assert!(
        matches!(&read[1], Err((_, why)) if why.contains("lacks `scope`")),
        "{read:?}"
    );
    assert!(
        matches!(&read[2], Err((_, why)) if why.contains("`payload` is not UTF-8")),
        "{read:?}"
    );
    assert!(
        matches!(&read[3], Err((_, why)) if why.contains("not UTF-8")),
        "{read:?}"
    );

    // Deleted while pending: the pending read answers it with nil fields; it is skipped.
    let m1 = read[0].as_ref().unwrap().entry_id.clone();
    let _: usize = con.xdel("chatbridge:outbox:a", &[&m1]).await.unwrap();
    let pending = r.read(&ReadFrom::pending(), 100, 10).await.unwrap();
    assert_eq!(
        shape(&pending),
        [&lacking, &binary, &binary_name, "m2"],
        "{pending:?}"
    );
}

#[tokio::test]
async fn a_disabled_link_stays_disabled_until_enabled() {
    let redis = RedisServer::start();
    let mut outbox = outbox(&redis).await;
    assert_eq!(outbox.disabled("a").await.unwrap(), None);
    outbox.disable("a", "HTTP 410: gone").await.unwrap();
    assert_eq!(
        outbox.disabled("a").await.unwrap().as_deref(),
        Some("HTTP 410: gone")
    );
    assert!(outbox.enable("a").await.unwrap());
    assert!(!outbox.enable("a").await.unwrap());
    assert_eq!(outbox.disabled("a").await.unwrap(), None);
}
