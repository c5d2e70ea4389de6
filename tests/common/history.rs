//! A room's history as a seed client's `get_history` reads it, for assertions.

use std::time::Duration;

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;
use serde_json::Value;

use super::wait::eventually;

/// The events of `chat:room:{room}:history`, oldest first.
pub async fn events(con: &mut MultiplexedConnection, room: &str) -> Vec<Value> {
    let stored: Vec<String> = con
        .lrange(format!("chat:room:{room}:history"), 0, -1)
        .await
        .expect("LRANGE");
    stored
        .iter()
        .rev()
        .map(|raw| serde_json::from_str(raw).expect("stored JSON"))
        .collect()
}

/// The `content` of each event.
pub fn contents_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The contents of the room's history, oldest first.
pub async fn contents(con: &mut MultiplexedConnection, room: &str) -> Vec<String> {
    contents_of(&events(con, room).await)
}

/// Waits until the room's history holds at least `n` events, then returns their contents.
pub async fn wait_contents(
    con: &MultiplexedConnection,
    room: &str,
    n: usize,
    timeout: Duration,
) -> Vec<String> {
    let mut con = con.clone();
    eventually(&format!("{n} events in history"), timeout, async || {
        let contents = contents(&mut con, room).await;
        (contents.len() >= n).then_some(contents)
    })
    .await
}
