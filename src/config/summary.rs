//! What `chatbridge check` shows about a valid configuration: the routing table (secrets
//! redacted) and warnings about things that are allowed but probably not meant.

use std::fmt::Write;

use super::Config;
use crate::chat::model::EventKind;

/// Replaces the password of a Redis URL (user info, or `pass=` in a unix socket URL's query).
pub(super) fn redact_redis_url(raw: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(raw) else {
        return "(invalid URL)".into();
    };
    if url.password().is_some() && url.set_password(Some("redacted")).is_err() {
        return format!("{}://(redacted)", url.scheme());
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" || k == "password" {
                    "redacted".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn event_list(events: &[EventKind]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the daemon trims history, in a few words.
fn trimming(history: &super::HistoryConfig) -> String {
    let Some(every) = history.trim_interval else {
        return "not trimmed by chatbridge".to_owned();
    };
    let mut text = format!("trimmed every {}s", every.as_secs());
    if !history.trim_unconfigured {
        text.push_str(" (mirrored only)");
    }
    if let Some(age) = history.max_age {
        text.push_str(&format!(", entries older than {}s dropped", age.as_secs()));
    }
    if !history.room_limits.is_empty() {
        let rooms: Vec<String> = history
            .room_limits
            .iter()
            .map(|(room, limit)| format!("{room} keeps {limit}"))
            .collect();
        text.push_str(&format!("; {}", rooms.join(", ")));
    }
    text
}

pub(super) fn routing_table(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "redis: {}", config.redis.redacted_url());
    let _ = writeln!(
        out,
        "history: rooms keep {}, DMs keep {}; {}",
        config.history.room_limit,
        config.history.dm_limit,
        trimming(&config.history)
    );
    let _ = writeln!(
        out,
        "delivery: shutdown grace {}s, retry backoff up to {}s, lease {}s",
        config.delivery.shutdown_grace.as_secs(),
        config.delivery.retry_max_backoff.as_secs(),
        config.delivery.lease.as_secs()
    );
    write_links(&mut out, config);
    write_rooms(&mut out, config);
    write_inbound(&mut out, config);
    out
}

/// What comes in: the hook routes and what each platform brings in, and where.
fn write_inbound(out: &mut String, config: &Config) {
    let platforms = crate::platforms::sections::describe_inbound(
        &config.links,
        &config.rooms,
        &config.sections,
    );
    if !config.has_inbound() && platforms.is_empty() {
        return;
    }
    out.push_str("inbound:\n");
    for (name, link) in &config.links {
        if link.kind.accepts_hooks() {
            let rooms: Vec<&str> = config
                .rooms
                .iter()
                .filter(|r| r.links.contains(name))
                .map(|r| r.name.as_str())
                .collect();
            let dms = if config.links_for_dms().contains(name) {
                " + DMs"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  POST /hooks/{name}  → {}{dms}",
                if rooms.is_empty() {
                    "(no room)".to_owned()
                } else {
                    rooms.join(", ")
                }
            );
        }
    }
    for line in platforms {
        let _ = writeln!(out, "  {line}");
    }
}

fn write_links(out: &mut String, config: &Config) {
    if config.links.is_empty() {
        out.push_str("links: (none)\n");
        return;
    }
    out.push_str("links:\n");
    let name_width = config.links.keys().map(String::len).max().unwrap_or(0);
    let kind_width = config
        .links
        .values()
        .map(|l| l.kind_name().len())
        .max()
        .unwrap_or(0);
    for (name, link) in &config.links {
        let target = link.describe_target();
        let target = if target.is_empty() {
            String::new()
        } else {
            format!("{target}  ")
        };
        let _ = writeln!(
            out,
            "  {name:<name_width$}  {:<kind_width$}  {target}events: {}",
            link.kind_name(),
            event_list(link.events()),
        );
    }
}

fn write_rooms(out: &mut String, config: &Config) {
    let width = config.rooms.iter().map(|r| r.name.len()).max().unwrap_or(0);
    if config.rooms.is_empty() {
        out.push_str("rooms: (none)\n");
    } else {
        out.push_str("rooms:\n");
        for room in &config.rooms {
            let _ = writeln!(out, "  {:<width$}  → {}", room.name, room.links.join(", "));
        }
    }
    match &config.dms {
        Some(dms) => {
            let label_width = (width + 4).max(4);
            let _ = writeln!(out, "{:<label_width$}→ {}", "dms", dms.links.join(", "));
        }
        None => out.push_str("dms: not mirrored\n"),
    }
}

pub(super) fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let used = |name: &String| {
        config.rooms.iter().any(|r| r.links.contains(name))
            || config.dms.as_ref().is_some_and(|d| d.links.contains(name))
    };
    for name in config.links.keys().filter(|n| !used(n)) {
        warnings.push(format!(
            "links.{name}: no room and not [dms] routes to this link; it will receive nothing"
        ));
    }
    for why in crate::platforms::link::not_runnable(&config.links) {
        warnings.push(format!(
            "{why}; `chatbridge run` refuses this configuration"
        ));
    }
    if config.rooms.is_empty() && config.dms.is_none() {
        warnings.push("no [[rooms]] and no [dms]: nothing will be mirrored".into());
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(
            redact_redis_url("redis://:hunter2@db.internal:6380/2"),
            "redis://:redacted@db.internal:6380/2"
        );
        assert_eq!(
            redact_redis_url("redis://app:hunter2@db"),
            "redis://app:redacted@db"
        );
        let unix = redact_redis_url("unix:///run/redis.sock?db=1&pass=hunter2");
        assert!(!unix.contains("hunter2"), "{unix}");
        assert!(
            unix.starts_with("unix:///run/redis.sock?db=1&pass=redacted"),
            "{unix}"
        );
        assert_eq!(
            redact_redis_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
