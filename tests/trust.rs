//! Trust boundaries through the real binary: idempotency keys a chat user cannot collide, and
//! `origin` honoured only for what chatbridge itself wrote (see also `faults.rs`).

mod common;

use std::time::Duration;

use chatbridge::chat::pyjson;
use common::daemon::{Daemon, wait_ready};
use common::receiver::{Receiver, Recorded, content_of};
use common::redis::RedisServer;
use common::seed;
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// (id, content) of every event a request carried.
fn items(request: &Recorded) -> Vec<(String, String)> {
    request
        .items()
        .iter()
        .map(|item| {
            (
                item["id"].as_str().unwrap_or_default().to_owned(),
                content_of(item),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_reused_across_rooms_gets_two_keys_and_batches_keep_each_events_key() {
    let redis = RedisServer::start();
    let single = Receiver::start().await;
    let batched = Receiver::start().await;
    let toml = format!(
        "[redis]\nurl = \"{}\"\n\n[links.single]\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [links.batched]\nkind = \"webhook\"\nurl = \"{}\"\nbatch_max = 10\n\n\
         [[rooms]]\nname = \"general\"\nlinks = [\"single\", \"batched\"]\n\n\
         [[rooms]]\nname = \"random\"\nlinks = [\"single\", \"batched\"]\n",
        redis.url(),
        single.url("/single"),
        batched.url("/batched")
    );
    let daemon = Daemon::start(&toml);
    wait_ready(&daemon);
    let mut con = redis.connection().await;
    seed::send_message(&mut con, "general", json!(1), "a", "before").await;
    single.wait_for(1, WAIT).await;
    batched.wait_for(1, WAIT).await;
    // Acknowledged before the crash, so it is not sent again after it.
    common::outbox::wait_drained(&mut con, "single").await;
    common::outbox::wait_drained(&mut con, "batched").await;
    // Written while the bridge is down: caught up together, so they go out as one batch.
    let dir = daemon.crash();
    let mut message = seed::create_message(json!(1), "a", "", Some("general"));
    message["id"] = json!("chosen-by-a-client");
    for (room, content) in [("general", "in general"), ("random", "in random")] {
        message["room"] = json!(room);
        message["content"] = json!(content);
        let text = pyjson::to_string(&message);
        let _: () = con
            .lpush(format!("chat:room:{room}:history"), &text)
            .await
            .unwrap();
    }
    let daemon = Daemon::start_in(dir);
    wait_ready(&daemon);
    let alone = single.wait_for(3, WAIT).await;
    let ids: Vec<(String, String)> = alone.iter().flat_map(items).collect();
    let header = |r: &Recorded| r.header("webhook-id").unwrap_or_default().to_owned();
    assert_eq!(ids.len(), 3);
    assert_ne!(
        ids[1].0, ids[2].0,
        "the same message id in two rooms: two keys"
    );
    for (request, (id, _)) in alone.iter().zip(&ids) {
        assert_eq!(
            header(request),
            *id,
            "a single event's webhook-id is its key"
        );
        assert!(id.starts_with("msg_h-"), "{id}");
    }
    let deadline = std::time::Instant::now() + WAIT;
    let in_batches = loop {
        let got: Vec<(String, String)> = batched.requests().iter().flat_map(items).collect();
        if got.len() >= 3 {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "batched link got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        in_batches, ids,
        "an event keeps its key alone or in a batch"
    );
    let batch = batched
        .requests()
        .into_iter()
        .find(|r| r.json()["type"] == "chat.batch")
        .expect("the queued events went out as one batch");
    assert!(header(&batch).starts_with("msg_batch_"));
    assert_eq!(batch.json()["id"], header(&batch));
}
