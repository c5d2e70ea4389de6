//! Waiting on the daemon's outbox from a test, and reading its streams.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamRangeReply;

/// Waits until a link's outbox is empty: every event delivered and its acknowledgement written
/// (acknowledgements trail the sends slightly). Panics after 20 s.
pub async fn wait_drained(con: &mut MultiplexedConnection, link: &str) {
    let key = format!("chatbridge:outbox:{link}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let depth: usize = con.xlen(&key).await.expect("XLEN of the outbox");
        if depth == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox of {link} never drained ({depth} left)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Each entry of an `XRANGE` reply (an outbox or a dead-letter stream) as its fields, every
/// value as text, oldest first.
pub fn text_fields(reply: &StreamRangeReply) -> Vec<HashMap<String, String>> {
    reply
        .ids
        .iter()
        .map(|entry| {
            entry
                .map
                .iter()
                .map(|(field, value)| {
                    let text: String = ::redis::from_redis_value(value.clone()).expect("text");
                    (field.clone(), text)
                })
                .collect()
        })
        .collect()
}
