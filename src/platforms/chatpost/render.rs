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
//!
//! A post's text never lets a message pass for another sender's. Where names go into the text
//! (a merged post of several senders, a Slack incoming webhook), a line that does not start
//! with `> ` is one chatbridge wrote: a header `*alice*: text` (a message of one line, on the
//! header's line) or an event line. A message of several lines, or one split over several
//! posts, goes under its header with every line of it quoted (`> `), so no line of content can
//! read as a header. Names are cleaned ([`super::names`]: no line breaks, controls or invisible
//! characters; blank becomes `user {user_id}`), and bidi controls (embeddings, overrides,
//! isolates, marks) are removed from all text, so content cannot reorder the header before it.
//! Code blocks stay whole across the parts of a split message ([`super::split::split_fenced`]).

use serde_json::Value;

use super::names;
use super::split::{Measure, split, split_fenced};
use super::template::{Fields, Template};
use crate::chat::model::{ChatEvent, EventKind, Outbound, OutboundKind, Scope};
use crate::printable::is_bidi_control;

/// What starts each quoted line: a message line that can never read as a header.
const QUOTE: &str = "> ";

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
    /// The platform's own rules for a name (Discord's username rules), after
    /// [`names::clean`]; an empty result falls back to `user {user_id}`.
    pub name_rules: fn(&str) -> String,
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
    /// A message: the sender's name cleaned (a post's `username` is plain text; it is escaped
    /// where it goes into the text), picture, and the text (made inert).
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
            out.extend(split_post(item, alone, style));
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
                let reader = names::clean(&r.user_id.to_string());
                Some((place(&o.scope), inert(&reader, style)))
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
        username: (!style.names_in_text).then(|| place_name(place, style)),
        picture: None,
        text,
        entries: Vec::new(),
        keys: Vec::new(),
        part: None,
    }
}

/// A message too long for one post, as parts in order under the same name, code blocks kept
/// whole. Where names go into the text, the header leads the first part and every line of the
/// message is quoted, in every part; an event line too long is quoted the same way.
fn split_post(item: &Item, post: Post, style: &Style) -> Vec<Post> {
    let measure = style.measure;
    let parts = match &item.what {
        What::Said { text, .. } if !headed(&[item], style) => {
            split_fenced(text, |_| style.limit, measure)
        }
        what => {
            let (header, text) = match what {
                What::Said { name, text, .. } => (Some(header(name, style)), text),
                What::Line(line) => (None, line),
                What::Nothing => (None, &post.text),
            };
            let lines = lines_of(text).join("\n");
            let lead = header.as_ref().map_or(0, |h| measure(h) + 1);
            let prefix = measure(QUOTE);
            let quoted = |s: &str| measure(s) + prefix * s.matches('\n').count();
            let room = |index: usize| {
                let lead = if index == 0 { lead } else { 0 };
                style.limit.saturating_sub(lead + prefix)
            };
            split_fenced(&lines, room, quoted)
                .into_iter()
                .enumerate()
                .map(|(index, part)| match (&header, index) {
                    (Some(header), 0) => format!("{header}\n{}", quote(&part)),
                    _ => quote(&part),
                })
                .collect()
        }
    };
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(index, text)| Post {
            text,
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
    let first_sender = first_sender(group);
    let headed = headed(group, style);
    let lines: Vec<String> = group
        .iter()
        .map(|i| match &i.what {
            What::Said { text, .. } if !headed => text.clone(),
            What::Said { name, text, .. } => said_block(&header(name, style), text),
            What::Line(line) => line_block(line),
            What::Nothing => String::new(),
        })
        .collect();
    let (username, picture) = match first_sender {
        Some((name, picture)) if !headed => (Some(name.clone()), picture.clone()),
        _ if style.names_in_text => (None, None),
        _ => (group.first().map(|i| place_name(&i.place, style)), None),
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

/// The name and picture of a group's first item, when it is a message.
fn first_sender<'a>(group: &[&'a Item]) -> Option<(&'a String, &'a Option<String>)> {
    match group.first().map(|i| &i.what) {
        Some(What::Said { name, picture, .. }) => Some((name, picture)),
        _ => None,
    }
}

/// Whether a post of `group` names its senders in the text: on a platform that always does,
/// or when it is not one sender's run (posted under their name).
fn headed(group: &[&Item], style: &Style) -> bool {
    let first = first_sender(group);
    let one_sender = first.is_some()
        && group.iter().all(|i| match &i.what {
            What::Said { name, picture, .. } => Some((name, picture)) == first,
            _ => false,
        });
    style.names_in_text || !one_sender
}

/// A sender's header in the text: the name in bold, then a colon.
fn header(name: &str, style: &Style) -> String {
    format!("{b}{}{b}:", (style.escape)(name), b = style.bold)
}

/// A message under its header: one line on the header's line, several quoted below it.
fn said_block(header: &str, text: &str) -> String {
    match lines_of(text).as_slice() {
        [line] => format!("{header} {line}"),
        lines => format!("{header}\n{}", quote(&lines.join("\n"))),
    }
}

/// An event line in italics; one of several lines (which it should not have) is quoted.
fn line_block(line: &str) -> String {
    match lines_of(line).as_slice() {
        [line] => format!("_{line}_"),
        lines => quote(&lines.join("\n")),
    }
}

/// `text` with every line quoted.
fn quote(text: &str) -> String {
    text.split('\n')
        .map(|line| format!("{QUOTE}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of `text`, at every line break some viewer shows (`\r\n` is one).
fn lines_of(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if !names::is_line_break(c) {
            continue;
        }
        lines.push(&text[start..at]);
        start = at + c.len_utf8();
        if c == '\r' && chars.peek().is_some_and(|&(_, next)| next == '\n') {
            chars.next();
            start += 1;
        }
    }
    lines.push(&text[start..]);
    lines
}

/// User text made inert for the platform: bidi controls removed, then escaped.
fn inert(text: &str, style: &Style) -> String {
    let text: String = text.chars().filter(|&c| !is_bidi_control(c)).collect();
    (style.escape)(&text)
}

/// A place's name as a post's `username` (cleaned like a sender's; `room` if nothing is left).
fn place_name(place: &str, style: &Style) -> String {
    let name = (style.name_rules)(&names::clean(place));
    if name.is_empty() { "room".into() } else { name }
}

/// A sender's name as the platform shows it, cleaned and cut; `user {user_id}` when nothing
/// is left.
fn sender_name(name: &str, user_id: &str, style: &Style) -> String {
    let name = names::cut(&(style.name_rules)(&names::clean(name)));
    if name.is_empty() {
        names::cut(&(style.name_rules)(&names::fallback(user_id)))
    } else {
        name
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
    let what = match outbound.kind {
        OutboundKind::Notice => What::Line(inert(&notice_text(&outbound.payload), style)),
        OutboundKind::Event(EventKind::Typing) => What::Nothing,
        OutboundKind::Event(_) => match ChatEvent::from_slice(outbound.payload.as_bytes()) {
            Ok(event) => event_what(&event, &outbound.scope, &place, style, naming),
            // Relayed as the text it is rather than dropped: the chat published it.
            Err(_) => What::Line(inert(&outbound.payload, style)),
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
    let origin = event.origin().unwrap_or_default();
    match event {
        ChatEvent::Message(m) => {
            let user_id = m.user_id.to_string();
            let username = sender_name(&m.username, &user_id, style);
            let fields = Fields {
                username: &username,
                user_id: &user_id,
                room: place,
                origin,
            };
            let mut name = naming.name.render(&fields);
            if !origin.is_empty() && !naming.name.uses_origin() {
                name.push_str(&format!(" (via {origin})"));
            }
            let mut text = inert(&m.content, style);
            if let Scope::Dm(a, b) = scope {
                let other = if *a == user_id { b } else { a };
                text = format!("(DM to {}) {text}", inert(&names::clean(other), style));
            }
            What::Said {
                name: sender_name(&name, &user_id, style),
                picture: naming.picture.as_ref().map(|p| p.render(&fields)),
                text,
            }
        }
        ChatEvent::System(line) => {
            let mut text = line.content.clone();
            if !origin.is_empty() {
                text.push_str(&format!(" (via {origin})"));
            }
            What::Line(inert(&text, style))
        }
        ChatEvent::ReadReceipt(_) | ChatEvent::Typing(_) => What::Nothing,
    }
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
    use crate::platforms::chatpost::split::utf16_units;

    fn plain(s: &str) -> String {
        s.to_owned()
    }

    const STYLE: Style = Style {
        limit: 100,
        measure: utf16_units,
        escape: plain,
        bold: "**",
        names_in_text: false,
        name_rules: plain,
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
            escape: crate::platforms::slack::escape,
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

    /// The lines of `text` that read as written by chatbridge: not quoted.
    fn unquoted(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with(QUOTE)).collect()
    }

    #[test]
    fn content_and_names_never_forge_a_header_line() {
        let batch = [
            said(1, "general", "alice", "hi\n**bob**: send me your password"),
            said(
                2,
                "general",
                "eve\n**bob**",
                "x\r**bob**: y\u{2028}**bob**: z",
            ),
            said(3, "general", "bob", "ok"),
        ];
        let roomy = Style {
            limit: 1000,
            ..STYLE
        };
        let posts = posts(&batch, &roomy, &naming());
        assert_eq!(posts.len(), 1);
        assert_eq!(
            posts[0].text,
            "**alice**:\n> hi\n> **bob**: send me your password\n\
             **eve **bob****:\n> x\n> **bob**: y\n> **bob**: z\n**bob**: ok"
        );
        assert_eq!(
            unquoted(&posts[0].text),
            ["**alice**:", "**eve **bob****:", "**bob**: ok"]
        );
        let webhook = Style {
            names_in_text: true,
            ..STYLE
        };
        let alone = super::posts(&batch[..1], &webhook, &naming());
        assert_eq!(alone[0].username, None);
        assert_eq!(unquoted(&alone[0].text), ["**alice**:"]);
        let origin = r#"{"id": "o", "user_id": 7, "username": "al", "content": "a\nb",
            "room": "general", "timestamp": "2026-11-27T20:12:21", "type": "message",
            "origin": "slack\n**bob**: hi"}"#;
        let origin = outbound(
            4,
            Scope::Room("general".into()),
            EventKind::Message,
            origin.into(),
        );
        let via = super::posts(&[origin], &webhook, &naming());
        assert_eq!(unquoted(&via[0].text), ["**al (via slack **bob**: hi)**:"]);
    }

    #[test]
    fn blank_names_post_as_user_and_id_never_as_the_app() {
        for blank in ["", "   ", "\u{200b}\u{3164}", "\n"] {
            let alone = posts(&[said(1, "general", blank, "x")], &STYLE, &naming());
            let id = 1000 + blank.len();
            assert_eq!(alone[0].username, Some(format!("user {id}")), "{blank:?}");
            let webhook = Style {
                names_in_text: true,
                ..STYLE
            };
            let text = posts(&[said(1, "general", blank, "x")], &webhook, &naming());
            assert_eq!(text[0].text, format!("**user {id}**: x"));
        }
        let blank_format = Naming {
            name: Template::text("{origin}").unwrap(),
            picture: None,
        };
        let alone = posts(&[said(1, "general", "al", "x")], &STYLE, &blank_format);
        assert_eq!(alone[0].username.as_deref(), Some("user 1002"));
    }

    #[test]
    fn names_lose_invisible_characters_and_text_its_bidi_controls() {
        let batch = [
            said(
                1,
                "general",
                "a\u{202e}l\u{200b}i\u{2066}ce\u{feff}",
                "\u{202e}drowssap ym",
            ),
            said(2, "general", "bob", "\u{2067}x\u{2069}\u{200f}y\u{061c}"),
        ];
        let posts = posts(&batch, &STYLE, &naming());
        assert_eq!(posts[0].text, "**alice**: drowssap ym\n**bob**: xy");
        let alone = super::posts(&batch[..1], &STYLE, &naming());
        assert_eq!(alone[0].username.as_deref(), Some("alice"));
        assert_eq!(alone[0].text, "drowssap ym");
    }

    #[test]
    fn a_split_message_keeps_its_code_blocks_and_every_line_quoted() {
        let code = format!("see:\n```rust\n{}```\nbye", "let x = 1;\n".repeat(30));
        let webhook = Style {
            names_in_text: true,
            ..STYLE
        };
        let parts = posts(&[said(1, "general", "al", &code)], &webhook, &naming());
        assert!(parts.len() > 2);
        let mut content = String::new();
        for (index, part) in parts.iter().enumerate() {
            assert!(utf16_units(&part.text) <= 100, "{}", part.text);
            assert_eq!(part.part, Some((index, parts.len())));
            assert_eq!(part.text.matches("```").count() % 2, 0, "{}", part.text);
            let lines: Vec<&str> = part.text.split('\n').collect();
            let body = if index == 0 {
                assert_eq!(lines[0], "**al**:");
                &lines[1..]
            } else {
                &lines[..]
            };
            assert!(body.iter().all(|l| l.starts_with(QUOTE)), "{}", part.text);
            let body: Vec<&str> = body.iter().map(|l| &l[QUOTE.len()..]).collect();
            let mut body = body.join("\n");
            if index > 0 && body.starts_with("```rust\n") && !content.ends_with("```") {
                body.drain(.."```rust\n".len());
            }
            if let Some(open) = body.strip_suffix(crate::platforms::chatpost::split::CLOSE_FENCE)
                && index + 1 < parts.len()
            {
                body = open.to_owned();
            }
            content.push_str(&body);
        }
        assert_eq!(content, code, "every character once, markers aside");
    }

    #[test]
    fn ids_in_seen_and_dm_lines_cannot_break_the_line() {
        let receipt = outbound(
            1,
            Scope::Room("general".into()),
            EventKind::ReadReceipt,
            r#"{"type": "read_receipt", "user_id": "u\n*bob*: hi", "last_read": "x"}"#.into(),
        );
        let who = readers(&[receipt], &STYLE);
        assert_eq!(who, [("general".into(), "u *bob*: hi".into())]);
        let dm = r#"{"id": "d", "user_id": 1001, "username": "al", "content": "psst",
            "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message"}"#;
        let dm = outbound(
            2,
            Scope::Dm("9\n**bob**: x".into(), "1001".into()),
            EventKind::Message,
            dm.into(),
        );
        let posts = super::posts(&[dm], &STYLE, &naming());
        assert_eq!(posts[0].text, "(DM to 9 **bob**: x) psst");
    }

    #[test]
    fn every_line_break_a_viewer_shows_starts_a_quoted_line() {
        let text = "a\r\nb\u{0b}c\u{0c}d\u{85}e\u{2028}f\u{2029}g\rh\ni";
        let webhook = Style {
            names_in_text: true,
            ..STYLE
        };
        let posts = posts(&[said(1, "general", "al", text)], &webhook, &naming());
        assert_eq!(
            posts[0].text,
            "**al**:\n> a\n> b\n> c\n> d\n> e\n> f\n> g\n> h\n> i"
        );
    }

    #[test]
    fn bidi_controls_leave_event_lines_and_dm_lines_too() {
        let join = outbound(
            1,
            Scope::Room("general".into()),
            EventKind::Join,
            r#"{"type": "system", "content": "\u202eevil\u2066 joined", "timestamp": "2026-11-27T20:12:21"}"#.into(),
        );
        assert_eq!(posts(&[join], &STYLE, &naming())[0].text, "_evil joined_");
        let dm = r#"{"id": "d", "user_id": 1001, "username": "al", "content": "\u200fpsst",
            "room": null, "timestamp": "2026-11-27T20:12:21", "type": "message"}"#;
        let dm = outbound(
            2,
            Scope::Dm("9\u{202e}9".into(), "1001".into()),
            EventKind::Message,
            dm.into(),
        );
        assert_eq!(posts(&[dm], &STYLE, &naming())[0].text, "(DM to 99) psst");
    }

    #[test]
    fn a_huge_name_never_pushes_a_post_over_the_limit() {
        let webhook = Style {
            names_in_text: true,
            ..STYLE
        };
        let name = "n".repeat(5000);
        let posts = posts(
            &[said(1, "general", &name, &"word ".repeat(40))],
            &webhook,
            &naming(),
        );
        assert!(
            posts.iter().all(|p| utf16_units(&p.text) <= 100),
            "{posts:?}"
        );
        assert!(
            posts[0]
                .text
                .starts_with(&format!("**{}**:", "n".repeat(80)))
        );
    }
}
