//! How queued events look on a chat platform (Slack, Discord): who said what, joins and leaves
//! as short italic lines, opt-in "seen by …" lines, and a backlog merged into few posts.
//!
//! - One message alone is one post under the sender's name (and picture).
//! - Consecutive messages of one sender in one room become one post under that name.
//! - Consecutive events of one room from several senders become one post under the room's
//!   name, each line starting with its sender's name in bold: names are kept, order is kept.
//! - A post never exceeds the platform's limit; a message too long for one post is split
//!   ([`super::split`]) into parts sent in order, never clipped.
//! - Typing indicators are never shown; read receipts are left to the link's coalescer
//!   ([`readers`], [`seen_post`]: one "seen by …" line per room per interval).
//! - Events that entered through another link say so (`alice (via slack)`); in a DM the text
//!   names the other party.

use serde_json::Value;

use super::split::{Measure, split};
use super::template::{Fields, Template};
use crate::model::{ChatEvent, EventKind, Outbound, OutboundKind, Scope};

/// What differs between platforms.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// The most a post's text may measure.
    pub limit: usize,
    /// How text is measured against `limit` (after `escape`).
    pub measure: Measure,
    /// Makes user text inert (Slack: `&`, `<`, `>`); applied to every piece of user text.
    pub escape: fn(&str) -> String,
    /// Bold markers around a sender's name in a merged post.
    pub bold: &'static str,
    /// Whether the sender's name always goes into the text (Slack incoming webhooks ignore
    /// per-message names).
    pub names_in_text: bool,
}

/// How a link names senders.
#[derive(Debug, Clone)]
pub struct Naming {
    /// `name_format`.
    pub name: Template,
    /// `icon_url` / `avatar_url`, when configured.
    pub picture: Option<Template>,
}

/// One post to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// The name it is posted under; `None`: the app's or webhook's own.
    pub username: Option<String>,
    /// The picture it is posted with; `None`: the app's or webhook's own.
    pub picture: Option<String>,
    /// The text as sent (already escaped).
    pub text: String,
    /// The outbox entries this post carries (a part of a split message carries its entry).
    pub entries: Vec<String>,
    /// The event keys of the messages it carries (for recording where they were posted).
    pub keys: Vec<String>,
    /// For a part of a split message: (part index, how many parts).
    pub part: Option<(usize, usize)>,
}

/// One event as the platform shows it.
#[derive(Debug, Clone)]
struct Item {
    entry_id: String,
    key: String,
    /// Where it happened: posts only merge events of one place.
    place: String,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    /// A message: the sender's name as is (a post's `username` is plain text; it is escaped
    /// where it goes into the text), picture, and the text (escaped).
    Said {
        name: String,
        picture: Option<String>,
        text: String,
    },
    /// A line shown on its own, in italics (join, leave, notice), escaped.
    Line(String),
    /// Nothing to show here: typing; read receipts (the link's coalescer shows those).
    Nothing,
}

/// Renders a batch into posts, in order.
pub fn posts(batch: &[Outbound], style: &Style, naming: &Naming) -> Vec<Post> {
    let items: Vec<Item> = batch.iter().map(|o| item(o, style, naming)).collect();
    let mut out = Vec::new();
    let mut group: Vec<&Item> = Vec::new();
    for item in &items {
        if matches!(item.what, What::Nothing) {
            continue;
        }
        if group.first().is_some_and(|first| first.place != item.place) {
            out.push(layout(&group, style));
            group.clear();
        }
        group.push(item);
        if (style.measure)(&layout(&group, style).text) <= style.limit {
            continue;
        }
        group.pop();
        if !group.is_empty() {
            out.push(layout(&group, style));
            group.clear();
        }
        group.push(item);
        let alone = layout(&group, style);
        if (style.measure)(&alone.text) > style.limit {
            out.extend(split_post(alone, style));
            group.clear();
        }
    }
    if !group.is_empty() {
        out.push(layout(&group, style));
    }
    out
}

/// Who read what in `batch`: (place, reader) per read receipt, in order, for the link's
/// [`super::posting::Receipts`] to coalesce. [`posts`] leaves receipts out.
pub fn readers(batch: &[Outbound], style: &Style) -> Vec<(String, String)> {
    batch
        .iter()
        .filter(|o| o.kind == OutboundKind::Event(EventKind::ReadReceipt))
        .filter_map(|o| match ChatEvent::from_slice(o.payload.as_bytes()) {
            Ok(ChatEvent::ReadReceipt(r)) => {
                Some((place(&o.scope), (style.escape)(&r.user_id.to_string())))
            }
            _ => None,
        })
        .collect()
}

/// The "seen by …" line of one place, posted under the place's name.
pub fn seen_post(place: &str, readers: &[String], style: &Style) -> Post {
    let text = format!("_seen by {}_", readers.join(", "));
    let text = match split(&text, style.limit, style.measure).first() {
        Some(first) if first.len() < text.len() => format!("{}…_", first.trim_end_matches('_')),
        _ => text,
    };
    Post {
        username: (!style.names_in_text).then(|| place.to_owned()),
        picture: None,
        text,
        entries: Vec::new(),
        keys: Vec::new(),
        part: None,
    }
}

/// A post too long for the platform, as parts in order under the same name.
fn split_post(post: Post, style: &Style) -> Vec<Post> {
    let parts = split(&post.text, style.limit, style.measure);
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(index, text)| Post {
            text: text.to_owned(),
            part: Some((index, count)),
            ..post.clone()
        })
        .collect()
}

/// One post from consecutive items of one place.
fn layout(group: &[&Item], style: &Style) -> Post {
    let entries = group.iter().map(|i| i.entry_id.clone()).collect();
    let keys = group
        .iter()
        .filter(|i| matches!(i.what, What::Said { .. }))
        .map(|i| i.key.clone())
        .collect();
    let first_sender = match group.first().map(|i| &i.what) {
        Some(What::Said { name, picture, .. }) => Some((name, picture)),
        _ => None,
    };
    let one_sender = !style.names_in_text
        && first_sender.is_some()
        && group.iter().all(|i| match &i.what {
            What::Said { name, picture, .. } => Some((name, picture)) == first_sender,
            _ => false,
        });
    let lines: Vec<String> = group
        .iter()
        .map(|i| match &i.what {
            What::Said { text, .. } if one_sender => text.clone(),
            What::Said { name, text, .. } => {
                format!("{b}{}{b}: {text}", (style.escape)(name), b = style.bold)
            }
            What::Line(line) => format!("_{line}_"),
            What::Nothing => String::new(),
        })
        .collect();
    let (username, picture) = match first_sender {
        Some((name, picture)) if one_sender => (
            Some(plain(name)).filter(|n| !n.trim().is_empty()),
            picture.clone(),
        ),
        _ if style.names_in_text => (None, None),
        _ => (group.first().map(|i| i.place.clone()), None),
    };
    Post {
        username,
        picture,
        text: lines.join("\n"),
        entries,
        keys,
        part: None,
    }
}

/// The place label: the room, or `dm` for direct messages.
fn place(scope: &Scope) -> String {
    match scope {
        Scope::Room(room) => room.clone(),
        Scope::Dm(..) => "dm".into(),
    }
}

fn item(outbound: &Outbound, style: &Style, naming: &Naming) -> Item {
    let place = place(&outbound.scope);
    let escape = style.escape;
    let what = match outbound.kind {
        OutboundKind::Notice => What::Line(escape(&notice_text(&outbound.payload))),
        OutboundKind::Event(EventKind::Typing) => What::Nothing,
        OutboundKind::Event(_) => match ChatEvent::from_slice(outbound.payload.as_bytes()) {
            Ok(event) => event_what(&event, &outbound.scope, &place, style, naming),
            // Relayed as the text it is rather than dropped: the chat published it.
            Err(_) => What::Line(escape(&outbound.payload)),
        },
    };
    Item {
        entry_id: outbound.entry_id.clone(),
        key: outbound.key.clone(),
        place,
        what,
    }
}

fn event_what(
    event: &ChatEvent,
    scope: &Scope,
    place: &str,
    style: &Style,
    naming: &Naming,
) -> What {
    let escape = style.escape;
    let origin = event.origin().unwrap_or_default();
    match event {
        ChatEvent::Message(m) => {
            let user_id = m.user_id.to_string();
            let fields = Fields {
                username: &m.username,
                user_id: &user_id,
                room: place,
                origin,
            };
            let mut name = naming.name.render(&fields);
            if !origin.is_empty() && !naming.name.uses_origin() {
                name.push_str(&format!(" (via {origin})"));
            }
            let mut text = escape(&m.content);
            if let Scope::Dm(a, b) = scope {
                let other = if *a == user_id { b } else { a };
                text = format!("(DM to {}) {text}", escape(other));
            }
            What::Said {
                name,
                picture: naming.picture.as_ref().map(|p| p.render(&fields)),
                text,
            }
        }
        ChatEvent::System(line) => {
            let mut text = line.content.clone();
            if !origin.is_empty() {
                text.push_str(&format!(" (via {origin})"));
            }
            What::Line(escape(&text))
        }
        ChatEvent::ReadReceipt(_) | ChatEvent::Typing(_) => What::Nothing,
    }
}

/// A name for a post's `username` field: plain text, control characters dropped.
fn plain(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).collect()
}

/// A notice's `content`, or its whole payload when it has none.
fn notice_text(payload: &str) -> String {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(map)) => match map.get("content") {
            Some(Value::String(content)) => format!("⚠ {content}"),
            _ => payload.to_owned(),
        },
        _ => payload.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::split::utf16_units;

    fn plain(s: &str) -> String {
        s.to_owned()
    }

    const STYLE: Style = Style {
        limit: 100,
        measure: utf16_units,
        escape: plain,
        bold: "**",
        names_in_text: false,
    };

    fn naming() -> Naming {
        Naming {
            name: Template::text("{username}").unwrap(),
            picture: Some(Template::url("https://a.example/{user_id}.png").unwrap()),
        }
    }

    fn outbound(n: usize, scope: Scope, kind: EventKind, payload: String) -> Outbound {
        Outbound {
            entry_id: format!("{n}-0"),
            event_id: format!("e{n}"),
            key: Outbound::key_of(&scope, &payload),
            scope,
            kind: OutboundKind::Event(kind),
            payload,
            enqueued_at: chrono::Utc::now(),
        }
    }

    fn said(n: usize, room: &str, user: &str, text: &str) -> Outbound {
        let payload = serde_json::json!({"id": format!("m{n}"), "user_id": 1000 + user.len(),
            "username": user, "content": text, "room": room,
            "timestamp": "2026-11-27T20:12:21", "type": "message"});
        outbound(
            n,
            Scope::Room(room.into()),
            EventKind::Message,
            payload.to_string(),
        )
    }

    #[test]
    fn one_message_is_one_post_under_the_sender() {
        let posts = posts(&[said(1, "general", "alice", "hi")], &STYLE, &naming());
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].username.as_deref(), Some("alice"));
        assert_eq!(
            posts[0].picture.as_deref(),
            Some("https://a.example/1005.png")
        );
        assert_eq!(posts[0].text, "hi");
        assert_eq!(posts[0].entries, ["1-0"]);
    }

    #[test]
    fn a_backlog_merges_per_room_keeping_names_and_order() {
        let batch = [
            said(1, "general", "alice", "one"),
            said(2, "general", "alice", "two"),
            said(3, "general", "bob", "three"),
            said(4, "random", "bob", "four"),
        ];
        let posts = posts(&batch, &STYLE, &naming());
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[0].username.as_deref(), Some("general"));
        assert_eq!(
            posts[0].text,
            "**alice**: one\n**alice**: two\n**bob**: three"
        );
        assert_eq!(posts[0].entries, ["1-0", "2-0", "3-0"]);
        assert_eq!(posts[1].username.as_deref(), Some("bob"));
        assert_eq!(posts[1].text, "four");
    }

    #[test]
    fn names_are_escaped_in_text_and_plain_in_the_username() {
        let slack = Style {
            escape: crate::links::slack::escape,
            bold: "*",
            ..STYLE
        };
        let alone = posts(
            &[said(1, "general", "<!here>\u{7}", "x")],
            &slack,
            &naming(),
        );
        assert_eq!(alone[0].username.as_deref(), Some("<!here>"));
        let merged = [
            said(1, "general", "<!here>", "a"),
            said(2, "general", "bob", "b&"),
        ];
        let merged = posts(&merged, &slack, &naming());
        assert_eq!(merged[0].text, "*&lt;!here&gt;*: a\n*bob*: b&amp;");
    }

    #[test]
    fn posts_stay_within_the_limit_and_long_messages_split() {
        let batch: Vec<Outbound> = (0..20)
            .map(|n| said(n, "general", "al", "0123456789"))
            .collect();
        let merged = posts(&batch, &STYLE, &naming());
        assert!(merged.len() > 1);
        assert!(merged.iter().all(|p| utf16_units(&p.text) <= 100));
        let all: Vec<String> = merged.iter().flat_map(|p| p.entries.clone()).collect();
        assert_eq!(all.len(), 20, "every entry once, in order");

        let long = "word ".repeat(50);
        let split = posts(&[said(1, "general", "al", &long)], &STYLE, &naming());
        assert_eq!(split.len(), 3);
        assert_eq!(
            split.iter().map(|p| p.text.as_str()).collect::<String>(),
            long
        );
        assert_eq!(split[2].part, Some((2, 3)));
        assert!(split.iter().all(|p| p.username.as_deref() == Some("al")));
    }

    #[test]
    fn joins_receipts_typing_dms_and_origins() {
        let join = outbound(
            1,
            Scope::Room("general".into()),
            EventKind::Join,
            r#"{"type": "system", "content": "alice joined the room", "timestamp": "2026-11-27T20:12:21"}"#.into(),
        );
        let typing = outbound(
            2,
            Scope::Room("general".into()),
            EventKind::Typing,
            r#"{"type": "typing", "user_id": 1, "timestamp": "2026-11-27T20:12:21"}"#.into(),
        );
        let seen = |n, user| {
            outbound(
                n,
                Scope::Room("general".into()),
                EventKind::ReadReceipt,
                format!(r#"{{"type": "read_receipt", "user_id": {user}, "last_read": "x"}}"#),
            )
        };
        let batch = [join, typing, seen(3, 7), seen(4, 8), seen(5, 7)];
        let posts = posts(&batch, &STYLE, &naming());
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].text, "_alice joined the room_");
        let who = readers(&batch, &STYLE);
        assert_eq!(
            who,
            [
                ("general".into(), "7".into()),
                ("general".into(), "8".into()),
                ("general".into(), "7".into())
            ]
        );
        let line = seen_post("general", &["7".into(), "8".into()], &STYLE);
        assert_eq!(line.text, "_seen by 7, 8_");
        assert_eq!(line.username.as_deref(), Some("general"));

        let dm = r#"{"id": "d", "user_id": 1001, "username": "alice", "content": "psst", "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message", "origin": "slack"}"#;
        let dm = outbound(
            6,
            Scope::Dm("999".into(), "1001".into()),
            EventKind::Message,
            dm.into(),
        );
        let posts = super::posts(&[dm], &STYLE, &naming());
        assert_eq!(posts[0].username.as_deref(), Some("alice (via slack)"));
        assert_eq!(posts[0].text, "(DM to 999) psst");
    }
}
