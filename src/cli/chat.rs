//! The chat commands (`send`, `dm`, `join`, `leave`, `typing`, `read`, `history`) and `tail`:
//! the seed's operations, as a chat client would do them.

use super::*;

pub(super) async fn chat_command(store: &Store, command: &Command) -> Result<(), CliError> {
    match command {
        Command::Send { room, text, user } => {
            let id = UserId::from_cli(&user.user_id);
            let sent = store
                .send(room, &id, &user.username, text, Map::new())
                .await;
            out!("{}", escape(&sent.map_err(failed)?.id));
        }
        Command::Dm {
            from,
            to,
            text,
            username,
        } => {
            let (from, to) = (UserId::from_cli(from), UserId::from_cli(to));
            let sent = store.send_dm(&from, &to, username, text, Map::new()).await;
            out!("{}", escape(&sent.map_err(failed)?.id));
        }
        Command::Join { room, user } => {
            let id = UserId::from_cli(&user.user_id);
            let line = store.join(room, &id, &user.username).await;
            out!("{}", escape(&line.map_err(failed)?.content));
        }
        Command::Leave { room, user } => {
            let id = UserId::from_cli(&user.user_id);
            let line = store.leave(room, &id, &user.username).await;
            out!("{}", escape(&line.map_err(failed)?.content));
        }
        Command::Typing { room, user_id } => {
            store
                .typing(room, &UserId::from_cli(user_id))
                .await
                .map_err(failed)?;
        }
        Command::Read {
            room,
            message_id,
            user_id,
        } => {
            let id = UserId::from_cli(user_id);
            store
                .mark_read(room, &id, message_id)
                .await
                .map_err(failed)?;
        }
        Command::History {
            room,
            dm,
            count,
            json,
        } => history(store, room.as_deref(), dm.as_deref(), *count, *json).await?,
        Command::Members { room } => {
            for member in store.members(room).await.map_err(failed)? {
                out!("{}", escape(&member));
            }
        }
        _ => {}
    }
    Ok(())
}

async fn history(
    store: &Store,
    room: Option<&str>,
    dm: Option<&[String]>,
    count: usize,
    json: bool,
) -> Result<(), CliError> {
    let scope = match (room, dm) {
        (_, Some([a, b])) => Scope::dm(&UserId::from_cli(a), &UserId::from_cli(b)),
        (Some(room), _) => Scope::Room(room.to_owned()),
        _ => return Err(failed("give a ROOM or --dm A B")),
    };
    for entry in store.history(&scope, count).await.map_err(failed)? {
        if json {
            out!("{}", json_line(&entry.raw));
            continue;
        }
        match entry.event {
            Ok(ChatEvent::Message(m)) => out!(
                "{}  {}: {}",
                m.timestamp,
                escape_controls(&m.username, 200),
                escape_controls(&m.content, 4000)
            ),
            Ok(_) | Err(_) => out!("(not a message) {}", escape_controls(&entry.raw, 4000)),
        }
    }
    Ok(())
}

fn as_outbound(scope: &Scope, payload: String) -> Outbound {
    let kind = ChatEvent::from_slice(payload.as_bytes())
        .ok()
        .and_then(|e| e.kind())
        .map(OutboundKind::Event)
        .unwrap_or(OutboundKind::Notice);
    Outbound {
        entry_id: String::new(),
        event_id: String::new(),
        key: String::new(),
        scope: scope.clone(),
        kind,
        payload,
        enqueued_at: chrono::Utc::now(),
    }
}

/// Prints live events as console lines until interrupted.
pub(super) async fn tail(client: &redis::Client, rooms: &[String]) -> Result<(), CliError> {
    let mut pubsub = client.get_async_pubsub().await.map_err(failed)?;
    if rooms.is_empty() {
        for pattern in [
            crate::bridge::subscription::ROOMS,
            crate::bridge::subscription::DMS,
        ] {
            pubsub.psubscribe(pattern).await.map_err(failed)?;
        }
    }
    for room in rooms {
        pubsub
            .subscribe(keys::room_channel(room))
            .await
            .map_err(failed)?;
    }
    let mut messages = pubsub.on_message();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(failed("redis closed the connection"));
                };
                let Some(scope) = Scope::from_channel(message.get_channel_name()) else {
                    continue;
                };
                let payload = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                out!("{}", console::line(&as_outbound(&scope, payload)));
            }
            _ = &mut interrupted => return Ok(()),
        }
    }
}
