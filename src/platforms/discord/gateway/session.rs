//! The Gateway session: the reader polls the shard and queues each dispatch, the processor
//! writes them in order; the session (id, resume URL, last sequence written) is saved in Redis
//! so the next holder RESUMEs it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;
use twilight_gateway::{Message as GatewayMessage, Shard, ShardId};

use crate::ops::metrics::ConnectedGauge;

use super::events::{DiscordMessage, DiscordUser};
use super::{Gateway, count};

/// How often the session's sequence number is saved while dispatches are written.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// What the reader hands the processor.
#[derive(Debug)]
pub(super) enum Dispatch {
    /// A new session: our bot's user id, and what a later RESUME needs.
    Ready {
        user_id: String,
        session_id: String,
        resume_url: String,
    },
    /// The session resumed after a dropped connection.
    Resumed,
    /// A server and its channels (for member events).
    Guild {
        id: String,
        channels: Vec<String>,
    },
    Message(Box<DiscordMessage>),
    /// A member joined (`join`) or left a server; `dedup` names this dispatch (session, seq).
    Member {
        join: bool,
        guild_id: String,
        user: DiscordUser,
        dedup: String,
    },
}

/// One dispatch frame as queued for the processor: its sequence number, and what it carries
/// when the processor acts on it.
#[derive(Debug)]
pub(super) struct Queued {
    seq: Option<u64>,
    dispatch: Option<Dispatch>,
}

/// The session as saved in Redis (`chatbridge:discord:session:{gateway}`), so the next process
/// RESUMEs it instead of identifying again: `seq` is the last dispatch written, never one
/// still queued (a RESUME replays what follows it; the writes de-duplicate).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub(super) struct SavedSession {
    id: String,
    seq: u64,
    resume_url: String,
    /// Our bot's user id, from the READY that began the session.
    user_id: String,
    /// The intents the session was identified with: a session with others (`inbound_joins`
    /// changed) is not resumed, or it would go on without the events now asked for.
    intents: u64,
}

impl Gateway {
    /// Polls the shard, queueing each dispatch, until it closes for good.
    pub(super) async fn read(
        &self,
        queue: mpsc::UnboundedSender<Queued>,
        gauge: &ConnectedGauge,
        saved: Option<SavedSession>,
    ) {
        let token = self.settings.bot_token.expose().to_owned();
        let mut builder = twilight_gateway::ConfigBuilder::new(token, self.intents());
        if let Some(url) = &self.settings.gateway_url {
            builder = builder.proxy_url(url.clone());
        }
        let mut session = String::new();
        if let Some(saved) = saved {
            // Resumed where the last holder (this process before a restart, or another) was.
            tracing::info!(gateway = %self.settings.key, "Discord Gateway: resuming the saved session");
            builder = builder
                .session(twilight_gateway::Session::new(saved.seq, saved.id.clone()))
                .resume_url(saved.resume_url);
            session = saved.id;
        }
        let mut shard = Shard::with_config(ShardId::ONE, builder.build());
        self.report("connecting").await;
        let mut last_close: Option<u16> = None;
        while let Some(item) = shard.next().await {
            match item {
                Ok(GatewayMessage::Text(text)) => {
                    if let Some(queued) = parse(&text, &mut session)
                        && queue.send(queued).is_err()
                    {
                        return;
                    }
                }
                Ok(GatewayMessage::Close(frame)) => {
                    last_close = frame.as_ref().map(|f| f.code);
                    tracing::info!(
                        code = last_close,
                        "Discord Gateway: connection closed; resuming"
                    );
                    let code =
                        last_close.map_or_else(String::new, |c| format!(" (close code {c})"));
                    gauge.set(false);
                    self.report(&format!("reconnecting{code}")).await;
                }
                Err(e) => match e.kind() {
                    twilight_gateway::error::ReceiveMessageErrorType::Reconnect => {
                        let why = std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        tracing::warn!(error = %why, "Discord Gateway: cannot connect; retrying");
                        gauge.set(false);
                        self.report("reconnecting (cannot connect)").await;
                    }
                    _ => {
                        tracing::warn!("Discord Gateway: an event that could not be read, skipped");
                        count("bad_request");
                    }
                },
            }
        }
        tracing::error!(
            code = last_close,
            why = close_meaning(last_close),
            "Discord Gateway: Discord closed the session for good"
        );
        gauge.set(false);
        let code = last_close.map_or_else(String::new, |c| format!(" (close code {c})"));
        self.report(&format!("CLOSED: {}{code}", close_meaning(last_close)))
            .await;
    }

    /// Writes the queued dispatches in order.
    pub(super) async fn process(
        &self,
        mut queue: mpsc::UnboundedReceiver<Queued>,
        gauge: &ConnectedGauge,
        saved: Option<SavedSession>,
    ) {
        let mut me: Option<String> = saved.as_ref().map(|s| s.user_id.clone());
        let mut current = saved;
        let mut last_saved = Instant::now();
        let mut guilds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut warned_empty = false;
        while let Some(Queued { seq, dispatch }) = queue.recv().await {
            let inbound = self.inbound().await;
            let mut save_now = false;
            match dispatch {
                None => {}
                Some(Dispatch::Ready {
                    user_id,
                    session_id,
                    resume_url,
                }) => {
                    tracing::info!(gateway = %self.settings.key, "Discord Gateway: session ready");
                    me = Some(user_id.clone());
                    current = Some(SavedSession {
                        id: session_id,
                        seq: seq.unwrap_or_default(),
                        resume_url,
                        user_id,
                        intents: self.intents().bits(),
                    });
                    self.backfill(&inbound, me.as_deref()).await;
                    gauge.set(true);
                    self.report("connected").await;
                    save_now = true;
                }
                Some(Dispatch::Resumed) => {
                    gauge.set(true);
                    self.report("connected (resumed)").await;
                    save_now = true;
                }
                Some(Dispatch::Guild { id, channels }) => {
                    guilds.entry(id).or_default().extend(channels);
                }
                Some(Dispatch::Message(message)) => {
                    if let Some(guild) = &message.guild_id {
                        guilds
                            .entry(guild.clone())
                            .or_default()
                            .insert(message.channel_id.clone());
                    }
                    if message.content.is_empty()
                        && message.attachments.is_empty()
                        && message.kind == 0
                        && !message.author.bot
                        && !warned_empty
                        && inbound
                            .platforms
                            .discord
                            .channels
                            .contains_key(&message.channel_id)
                    {
                        warned_empty = true;
                        tracing::warn!(
                            "Discord Gateway: a message came without content: enable the Message \
                             Content intent of the bot (Developer Portal → Bot → Privileged Gateway Intents)"
                        );
                    }
                    self.message(&inbound, me.as_deref(), &message).await;
                }
                Some(Dispatch::Member {
                    join,
                    guild_id,
                    user,
                    dedup,
                }) => {
                    let channels = guilds.get(&guild_id).cloned().unwrap_or_default();
                    self.member(&inbound, me.as_deref(), join, &channels, &user, &dedup)
                        .await;
                }
            }
            // Written: from now on a RESUME may start after it.
            if let (Some(seq), Some(current)) = (seq, current.as_mut()) {
                current.seq = current.seq.max(seq);
            }
            if (save_now || last_saved.elapsed() >= SAVE_EVERY)
                && let Some(current) = &current
            {
                self.save_session(current).await;
                last_saved = Instant::now();
            }
        }
    }

    /// `chatbridge:discord:session:{gateway}`.
    pub(super) fn session_key(&self) -> String {
        crate::redis::keys::discord_session(&self.settings.key)
    }

    /// The session the last holder saved, if any (a RESUME is tried; Discord refusing it means
    /// a new IDENTIFY and the catch-up over REST).
    pub(super) async fn load_session(&self) -> Option<SavedSession> {
        let mut con = self.con.clone();
        let raw: Option<String> =
            tokio::time::timeout(Duration::from_secs(2), con.get(self.session_key()))
                .await
                .ok()?
                .ok()?;
        let saved: SavedSession = serde_json::from_str(&raw?).ok()?;
        (saved.intents == self.intents().bits()).then_some(saved)
    }

    /// Saves the session (at most [`SAVE_EVERY`] apart, and at READY and RESUMED); bounded
    /// and best effort: a stale save only makes a RESUME replay more.
    pub(super) async fn save_session(&self, session: &SavedSession) {
        let Ok(value) = serde_json::to_string(session) else {
            return;
        };
        let mut con = self.con.clone();
        let saved = tokio::time::timeout(
            Duration::from_secs(1),
            con.set::<_, _, ()>(self.session_key(), value),
        )
        .await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::debug!("Discord Gateway: cannot save the session now");
        }
    }
}

/// Reads one Gateway frame: every dispatch is queued with its sequence number, with what the
/// processor needs from it; `None` for the rest (heartbeat ACKs, HELLO, frames that are not
/// JSON). `session` follows READY's `session_id`.
pub(super) fn parse(text: &str, session: &mut String) -> Option<Queued> {
    #[derive(Deserialize)]
    struct Frame {
        op: u8,
        #[serde(default)]
        s: Option<u64>,
        #[serde(default)]
        t: Option<String>,
        #[serde(default)]
        d: Option<Box<RawValue>>,
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    if frame.op != 0 {
        return None;
    }
    let dispatch = dispatch(frame.t.as_deref(), frame.s, frame.d.as_deref(), session);
    Some(Queued {
        seq: frame.s,
        dispatch,
    })
}

/// What the processor needs from one dispatch (`t`, `s`, `d`), if anything.
pub(super) fn dispatch(
    kind: Option<&str>,
    seq: Option<u64>,
    data: Option<&RawValue>,
    session: &mut String,
) -> Option<Dispatch> {
    #[derive(Deserialize)]
    struct Ready {
        session_id: String,
        resume_gateway_url: String,
        user: DiscordUser,
    }
    #[derive(Deserialize)]
    struct Channel {
        id: String,
    }
    #[derive(Deserialize)]
    struct Guild {
        id: String,
        #[serde(default)]
        channels: Vec<Channel>,
    }
    #[derive(Deserialize)]
    struct Member {
        guild_id: String,
        user: DiscordUser,
    }
    if kind == Some("RESUMED") {
        return Some(Dispatch::Resumed);
    }
    let data = data?;
    let read = |what: &str| {
        tracing::warn!(
            event = what,
            "Discord Gateway: an event that could not be read, skipped"
        );
        count("bad_request");
    };
    match kind? {
        "READY" => match serde_json::from_str::<Ready>(data.get()) {
            Ok(ready) => {
                session.clone_from(&ready.session_id);
                Some(Dispatch::Ready {
                    user_id: ready.user.id,
                    session_id: ready.session_id,
                    resume_url: ready.resume_gateway_url,
                })
            }
            Err(_) => {
                read("READY");
                None
            }
        },
        "GUILD_CREATE" => {
            serde_json::from_str::<Guild>(data.get())
                .ok()
                .map(|guild| Dispatch::Guild {
                    id: guild.id,
                    channels: guild.channels.into_iter().map(|c| c.id).collect(),
                })
        }
        "MESSAGE_CREATE" => match serde_json::from_str::<DiscordMessage>(data.get()) {
            Ok(message) => Some(Dispatch::Message(Box::new(message))),
            Err(_) => {
                read("MESSAGE_CREATE");
                None
            }
        },
        kind @ ("GUILD_MEMBER_ADD" | "GUILD_MEMBER_REMOVE") => {
            match serde_json::from_str::<Member>(data.get()) {
                Ok(member) => Some(Dispatch::Member {
                    join: kind == "GUILD_MEMBER_ADD",
                    guild_id: member.guild_id,
                    user: member.user,
                    dedup: format!("{session}:{}", seq.unwrap_or_default()),
                }),
                Err(_) => {
                    read(kind);
                    None
                }
            }
        }
        _ => None,
    }
}

/// What a close code Discord does not let us retry means for the operator.
pub(super) fn close_meaning(code: Option<u16>) -> &'static str {
    match code {
        Some(4004) => "authentication failed: check the link's bot_token",
        Some(4013) => "invalid intents",
        Some(4014) => {
            "disallowed intents: enable Message Content (and Server Members for inbound_joins) \
             under Developer Portal → Bot → Privileged Gateway Intents"
        }
        Some(4010 | 4011) => "the bot needs sharding (too many servers for one connection)",
        Some(4012) => "invalid API version",
        _ => "see Discord's Gateway close codes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn every_dispatch_is_queued_with_its_sequence_and_only_the_mirrored_ones_carry_data()
    {
        let mut session = String::new();
        assert!(parse(r#"{"op":11}"#, &mut session).is_none());
        assert!(parse("not json", &mut session).is_none());
        let ready = r#"{"op":0,"s":1,"t":"READY","d":{"session_id":"abc",
            "resume_gateway_url":"wss://r.example","user":{"id":"9","username":"b","bot":true}}}"#;
        assert!(matches!(
            parse(ready, &mut session),
            Some(Queued { seq: Some(1), dispatch: Some(Dispatch::Ready { user_id, resume_url, .. }) })
                if user_id == "9" && resume_url == "wss://r.example"
        ));
        assert_eq!(session, "abc");
        let member = r#"{"op":0,"s":7,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"3","user":{"id":"4","username":"d"}}}"#;
        assert!(matches!(
            parse(member, &mut session),
            Some(Queued { dispatch: Some(Dispatch::Member { dedup, join: true, .. }), .. })
                if dedup == "abc:7"
        ));
        // Not mirrored, or not readable: still queued, so the saved sequence moves past it.
        let typing = r#"{"op":0,"s":8,"t":"TYPING_START","d":{}}"#;
        assert!(matches!(
            parse(typing, &mut session),
            Some(Queued {
                seq: Some(8),
                dispatch: None
            })
        ));
        let broken = r#"{"op":0,"s":9,"t":"MESSAGE_CREATE","d":{"id":1}}"#;
        assert!(matches!(
            parse(broken, &mut session),
            Some(Queued {
                seq: Some(9),
                dispatch: None
            })
        ));
    }
}
