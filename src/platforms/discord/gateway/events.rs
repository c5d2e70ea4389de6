//! Discord messages and member events mapped to chat events: which are mirrored (not our own
//! webhooks, bot or, unless `inbound_bots`, other bots), how their text reads in the chat.

use std::collections::BTreeSet;

use redis::Script;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::model::{ChatEvent, Message, Presence, Scope, SystemLine, Timestamp, UserId};
use crate::inbound::{Inbound, Write, Written};
use crate::platforms::discord::config::{DiscordTarget, is_snowflake};

use super::{Gateway, count, last_key};

/// How long a message id (or a member event) is remembered against a second write.
const DEDUP_SECS: u64 = 86_400;
/// Sets the channel's last seen id only when the new one is newer.
const SET_NEWER: &str = include_str!("../../../redis/scripts/discord_last_seen.lua");

/// The fields of a Discord message object that are mirrored.
#[derive(Debug, Deserialize)]
pub(super) struct DiscordMessage {
    pub(super) id: String,
    pub(super) channel_id: String,
    #[serde(default)]
    pub(super) guild_id: Option<String>,
    pub(super) author: DiscordUser,
    #[serde(default)]
    pub(super) content: String,
    #[serde(default)]
    pub(super) timestamp: Option<String>,
    #[serde(default)]
    pub(super) webhook_id: Option<String>,
    /// 0 (default) and 19 (reply) are what people write; the rest are system messages.
    #[serde(default, rename = "type")]
    pub(super) kind: u8,
    #[serde(default)]
    pub(super) attachments: Vec<Attachment>,
    #[serde(default)]
    pub(super) mentions: Vec<DiscordUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct DiscordUser {
    pub(super) id: String,
    #[serde(default)]
    pub(super) username: String,
    #[serde(default)]
    pub(super) global_name: Option<String>,
    #[serde(default)]
    pub(super) bot: bool,
}

impl DiscordUser {
    /// The name shown: the global (display) name, else the username, else the id.
    pub(super) fn name(&self) -> String {
        [self.global_name.as_deref(), Some(self.username.as_str())]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|n| !n.is_empty())
            .unwrap_or(&self.id)
            .to_owned()
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Attachment {
    url: String,
}

/// Whether a message goes into the chat, and why not.
pub(super) enum Verdict {
    Write(Box<Write>),
    Skip(&'static str),
}

impl Gateway {
    /// One message, live or fetched: written (or skipped) and recorded as seen.
    pub(super) async fn message(
        &self,
        inbound: &Inbound,
        me: Option<&str>,
        message: &DiscordMessage,
    ) {
        if !well_formed(message) {
            // Its ids go into key names and the catch-up's `after=`: only Discord's digits.
            tracing::warn!("Discord Gateway: a message whose ids are not snowflakes, skipped");
            count("bad_request");
            return;
        }
        let Some(target) = inbound
            .platforms
            .discord
            .channels
            .get(&message.channel_id)
            .filter(|t| t.gateway == self.settings.key)
        else {
            count("ignored");
            return;
        };
        let result = match verdict(inbound, target, me, message) {
            Verdict::Write(write) => match self.write(inbound, &write).await {
                Written::New(_) => "accepted",
                Written::Duplicate(_) => "duplicate",
            },
            Verdict::Skip(why) => {
                tracing::debug!(why, "Discord message not mirrored");
                if why == "ours" { "echo" } else { "ignored" }
            }
        };
        count(result);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let newest = seen.entry(message.channel_id.clone()).or_default();
            if (newest.len(), newest.as_str()) < (message.id.len(), message.id.as_str()) {
                newest.clone_from(&message.id);
            }
        }
        let key = last_key(&message.channel_id);
        self.retrying("record the last seen message", |mut con| {
            let (key, id) = (key.clone(), message.id.clone());
            async move {
                Script::new(SET_NEWER)
                    .key(key)
                    .arg(id)
                    .invoke_async::<i64>(&mut con)
                    .await
                    .map(drop)
            }
        })
        .await;
    }

    /// A member joining or leaving a server: a line in the room of each of its mapped channels
    /// whose link mirrors joins.
    pub(super) async fn member(
        &self,
        inbound: &Inbound,
        me: Option<&str>,
        join: bool,
        channels: &BTreeSet<String>,
        user: &DiscordUser,
        dedup: &str,
    ) {
        if me == Some(user.id.as_str()) {
            count("echo");
            return;
        }
        let presence = if join {
            Presence::Join
        } else {
            Presence::Leave
        };
        let targets: Vec<(&String, &DiscordTarget)> = self
            .channels(inbound)
            .filter(|(channel, target)| {
                target.joins && channels.contains(*channel) && (target.bots || !user.bot)
            })
            .collect();
        if targets.is_empty() {
            count("ignored");
        }
        for (channel, target) in targets {
            let mut line =
                SystemLine::presence(presence, UserId::Text(user.id.clone()), &user.name());
            line.extra = origin(&target.link, dedup);
            let write = Write {
                scope: Scope::Room(target.room.clone()),
                event: ChatEvent::System(line),
                dedup_key: crate::redis::keys::discord_member_dedup(dedup, &channel.to_string()),
                dedup_secs: DEDUP_SECS,
                history_limit: inbound.history.room_limit_of(&target.room),
            };
            let result = match self.write(inbound, &write).await {
                Written::New(_) => "accepted",
                Written::Duplicate(_) => "duplicate",
            };
            count(result);
        }
    }
}

/// What to do with a message in a mapped channel.
pub(super) fn verdict(
    inbound: &Inbound,
    target: &DiscordTarget,
    me: Option<&str>,
    message: &DiscordMessage,
) -> Verdict {
    let ours = message
        .webhook_id
        .as_ref()
        .is_some_and(|id| inbound.platforms.discord.webhooks.contains(id))
        || me == Some(message.author.id.as_str());
    if ours {
        return Verdict::Skip("ours");
    }
    if (message.author.bot || message.webhook_id.is_some()) && !target.bots {
        return Verdict::Skip("a bot or webhook post (inbound_bots = false)");
    }
    if !matches!(message.kind, 0 | 19) {
        return Verdict::Skip("a system message");
    }
    let content = content(message);
    if content.is_empty() {
        return Verdict::Skip("no content");
    }
    let timestamp = message
        .timestamp
        .as_deref()
        .and_then(|t| Timestamp::parse(t).ok())
        .unwrap_or_else(Timestamp::now);
    let chat = Message {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: UserId::Text(message.author.id.clone()),
        username: message.author.name(),
        content,
        room: Some(target.room.clone()),
        timestamp,
        extra: origin(&target.link, &message.id),
    };
    Verdict::Write(Box::new(Write {
        scope: Scope::Room(target.room.clone()),
        event: ChatEvent::Message(chat),
        dedup_key: crate::redis::keys::discord_dedup(&message.id.to_string()),
        dedup_secs: DEDUP_SECS,
        history_limit: inbound.history.room_limit_of(&target.room),
    }))
}

/// Whether the message's own, channel and author ids are Discord ids (digits).
pub(super) fn well_formed(message: &DiscordMessage) -> bool {
    [&message.id, &message.channel_id, &message.author.id]
        .into_iter()
        .all(|id| is_snowflake(id))
}

/// `origin` and `external_id`, the fields every inbound event carries.
pub(super) fn origin(link: &str, external_id: &str) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("origin".into(), Value::String(link.to_owned()));
    extra.insert("external_id".into(), Value::String(external_id.to_owned()));
    extra
}

/// The text as the chat shows it: user mentions (`<@id>`, `<@!id>`) as `@name`, and each
/// attachment's URL on a line of its own.
pub(super) fn content(message: &DiscordMessage) -> String {
    let mut text = message.content.clone();
    for user in &message.mentions {
        let name = format!("@{}", user.name());
        for form in [format!("<@{}>", user.id), format!("<@!{}>", user.id)] {
            text = text.replace(&form, &name);
        }
    }
    for attachment in &message.attachments {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&attachment.url);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn message(json: Value) -> DiscordMessage {
        serde_json::from_value(json).expect("message")
    }

    #[test]
    pub(super) fn mentions_become_names_and_attachments_urls() {
        let m = message(serde_json::json!({
            "id": "2", "channel_id": "1", "type": 0,
            "author": {"id": "5", "username": "ann", "global_name": null},
            "content": "hi <@7> and <@!8>",
            "mentions": [{"id": "7", "username": "bob", "global_name": "Bob B"},
                         {"id": "8", "username": "cy"}],
            "attachments": [{"url": "https://cdn.example/a.png", "filename": "a.png"}]
        }));
        assert_eq!(content(&m), "hi @Bob B and @cy\nhttps://cdn.example/a.png");
        assert_eq!(m.author.name(), "ann");
    }

    #[test]
    pub(super) fn ids_that_are_not_snowflakes_are_refused() {
        let with = |id: &str, channel: &str, author: &str| {
            well_formed(&message(serde_json::json!({
                "id": id, "channel_id": channel, "author": {"id": author, "username": "a"}
            })))
        };
        assert!(with("1", "22", "333"));
        assert!(!with("1:2", "22", "333"));
        assert!(!with("1", "*", "333"));
        assert!(!with("1", "22", ""));
    }
}
