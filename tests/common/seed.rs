//! The seed's Python chat client ported to Rust for generating traffic in tests: the same keys,
//! the same JSON bytes (via `chatbridge::chat::pyjson`), and the same NON-atomic separate commands
//! (PUBLISH, then LPUSH, then LTRIM), so tests see exactly what real seed clients do.

use ::redis::aio::ConnectionLike;
use chatbridge::chat::model::{Scope, Timestamp, UserId};
use chatbridge::chat::pyjson;
use serde_json::{Value, json};

/// The fields of the seed's messages, in the seed's dict order (`create_message`).
pub const MESSAGE_FIELDS: [&str; 7] = [
    "id",
    "user_id",
    "username",
    "content",
    "room",
    "timestamp",
    "type",
];

/// The seed's `create_message`: fields in the seed's dict order.
pub fn create_message(user_id: Value, username: &str, content: &str, room: Option<&str>) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "user_id": user_id,
        "username": username,
        "content": content,
        "room": room,
        "timestamp": Timestamp::now().to_string(),
        "type": "message",
    })
}

/// `ChatRoom(r, room).send_message(...)`; returns the message as written.
pub async fn send_message<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    user_id: Value,
    username: &str,
    content: &str,
) -> Value {
    let message = create_message(user_id, username, content, Some(room));
    let channel = format!("chat:room:{room}");
    publish_and_store(con, &channel, &message, 999).await;
    message
}

/// Many `send_message` calls of seed clients at once, each still PUBLISH, LPUSH, LTRIM with
/// the same bytes, in one pipeline: a burst that reaches Redis (and the bridge) together.
pub async fn send_burst<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    messages: &[(Value, &str, &str)],
) {
    let channel = format!("chat:room:{room}");
    let history = format!("chat:room:{room}:history");
    let mut pipe = ::redis::pipe();
    for (user_id, username, content) in messages {
        let message = create_message(user_id.clone(), username, content, Some(room));
        let bytes = pyjson::to_string(&message);
        pipe.cmd("PUBLISH").arg(&channel).arg(&bytes).ignore();
        pipe.cmd("LPUSH").arg(&history).arg(&bytes).ignore();
        pipe.cmd("LTRIM").arg(&history).arg(0).arg(999).ignore();
    }
    let () = pipe.query_async(con).await.expect("burst");
}

/// `DirectMessage(r, from, to).send(from, ...)`; returns the message as written.
pub async fn send_dm<C: ConnectionLike + Send>(
    con: &mut C,
    from: Value,
    to: Value,
    username: &str,
    content: &str,
) -> Value {
    let channel = Scope::dm(&user_id(&from), &user_id(&to)).channel();
    let message = create_message(from, username, content, None);
    publish_and_store(con, &channel, &message, 499).await;
    message
}

/// `ChatRoom.join`: SADD, then PUBLISH a system line; returns the line.
pub async fn join<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    user_id: Value,
    username: &str,
) -> Value {
    presence(con, room, user_id, Presence::Join(username)).await
}

/// `ChatRoom.leave`: SREM, then PUBLISH a system line; returns the line.
pub async fn leave<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    user_id: Value,
    username: &str,
) -> Value {
    presence(con, room, user_id, Presence::Leave(username)).await
}

/// `send_typing_indicator(user_id, room)`; returns the event.
pub async fn typing<C: ConnectionLike + Send>(con: &mut C, room: &str, user_id: Value) -> Value {
    let event = json!({
        "type": "typing",
        "user_id": user_id,
        "timestamp": Timestamp::now().to_string(),
    });
    publish(con, &format!("chat:room:{room}"), &event).await;
    event
}

/// `mark_messages_read(user_id, room, last_read_id)`: HSET, then PUBLISH; returns the event.
pub async fn mark_read<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    user_id: Value,
    last_read: &str,
) -> Value {
    let key = format!("chat:room:{room}:read_receipts");
    run(
        con,
        ::redis::cmd("HSET")
            .arg(key)
            .arg(id_arg(&user_id))
            .arg(last_read),
    )
    .await;
    let event = read_receipt(&user_id, last_read);
    publish(con, &format!("chat:room:{room}"), &event).await;
    event
}

/// `mark_messages_read` of several readers at once (HSET, then PUBLISH, each), in one
/// pipeline: receipts that reach the bridge together.
pub async fn mark_read_burst<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    readers: &[Value],
    last_read: &str,
) {
    let key = format!("chat:room:{room}:read_receipts");
    let mut pipe = ::redis::pipe();
    for user_id in readers {
        let event = pyjson::to_string(&read_receipt(user_id, last_read));
        pipe.cmd("HSET")
            .arg(&key)
            .arg(id_arg(user_id))
            .arg(last_read)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(format!("chat:room:{room}"))
            .arg(event)
            .ignore();
    }
    let () = pipe.query_async(con).await.expect("receipts");
}

/// The seed's read-receipt event.
fn read_receipt(user_id: &Value, last_read: &str) -> Value {
    json!({"type": "read_receipt", "user_id": user_id, "last_read": last_read})
}

/// A user joining or leaving a room, by name.
enum Presence<'a> {
    Join(&'a str),
    Leave(&'a str),
}

/// SADD or SREM the user in the room's members, then PUBLISH the system line saying so.
async fn presence<C: ConnectionLike + Send>(
    con: &mut C,
    room: &str,
    user_id: Value,
    change: Presence<'_>,
) -> Value {
    let (command, content) = match change {
        Presence::Join(username) => ("SADD", format!("{username} joined the room")),
        Presence::Leave(username) => ("SREM", format!("{username} left the room")),
    };
    let members = format!("chat:room:{room}:members");
    run(
        con,
        ::redis::cmd(command).arg(members).arg(id_arg(&user_id)),
    )
    .await;
    let line = json!({
        "type": "system",
        "content": content,
        "timestamp": Timestamp::now().to_string(),
    });
    publish(con, &format!("chat:room:{room}"), &line).await;
    line
}

async fn publish_and_store<C: ConnectionLike + Send>(
    con: &mut C,
    channel: &str,
    message: &Value,
    last_index: isize,
) {
    publish(con, channel, message).await;
    let history = format!("{channel}:history");
    run(
        con,
        ::redis::cmd("LPUSH")
            .arg(&history)
            .arg(pyjson::to_string(message)),
    )
    .await;
    run(
        con,
        ::redis::cmd("LTRIM").arg(&history).arg(0).arg(last_index),
    )
    .await;
}

async fn publish<C: ConnectionLike + Send>(con: &mut C, channel: &str, event: &Value) {
    run(
        con,
        ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(pyjson::to_string(event)),
    )
    .await;
}

async fn run<C: ConnectionLike + Send>(con: &mut C, cmd: &::redis::Cmd) {
    cmd.query_async::<()>(con)
        .await
        .unwrap_or_else(|e| panic!("seed command failed: {e}"));
}

fn user_id(value: &Value) -> UserId {
    serde_json::from_value(value.clone()).expect("a seed user id is a JSON number or string")
}

/// How redis-py puts an id into a command: a string as is, a number in its decimal form.
fn id_arg(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
