//! The link commands: `outbox`, `status`, `dlq` and `enable`.

use super::*;

pub(super) async fn show_outbox(config: &Config, mut outbox: Outbox) -> Result<(), CliError> {
    out!(
        "{:<16} {:>8} {:>8} {:>6} {:>10}  last delivered",
        "link",
        "depth",
        "pending",
        "dead",
        "delivered"
    );
    for link in config.links.keys() {
        let s = outbox.status(link).await.map_err(failed)?;
        let last = match (&s.last_id, &s.last_at) {
            (Some(id), Some(at)) => format!("{} at {}", escape(id), escape(&at.to_string())),
            _ => "-".to_owned(),
        };
        out!(
            "{:<16} {:>8} {:>8} {:>6} {:>10}  {last}",
            s.link,
            s.depth,
            s.pending,
            s.dead,
            s.delivered
        );
        out!(
            "  {}",
            lease_line(
                Lease::delivery(link)
                    .holder(&mut outbox.con)
                    .await
                    .map_err(failed)?
            )
        );
        if let Some(reason) = &s.disabled {
            out!("  DISABLED: {} (chatbridge enable {link})", escape(reason));
        }
        if let Some(since) = &s.failing_since {
            let error = s.last_error.as_deref().unwrap_or("-");
            out!(
                "  FAILING since {since}: {} (retrying in order)",
                escape_controls(error, 400)
            );
        }
        if let Some((until, reason)) = crate::ops::status::paused(&s) {
            out!(
                "  PAUSED until {}: rate limited by the target ({})",
                escape(until),
                escape_controls(reason, 400)
            );
        }
        if s.dropped > 0 {
            out!(
                "  DROPPED: {} events unsent, over outbox_max_len / outbox_max_age_secs",
                s.dropped
            );
        }
    }
    Ok(())
}

pub(super) async fn show_status(config: &Config, mut outbox: Outbox) -> Result<(), CliError> {
    let report = crate::ops::status::report(config, &mut outbox)
        .await
        .map_err(failed)?;
    out_raw!("{report}");
    Ok(())
}

/// Which process delivers a link: its host and pid, and until when its lease lasts unless
/// renewed (never its token).
fn lease_line(holder: Option<LeaseHolder>) -> String {
    match holder {
        Some(h) => {
            let until = chrono::Utc::now()
                + chrono::Duration::milliseconds(
                    i64::try_from(h.expires_in.as_millis()).unwrap_or(0),
                );
            format!(
                "delivery: held by {} until {} unless renewed (lease epoch {})",
                escape_controls(&h.holder, 200),
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                h.epoch
            )
        }
        None => "delivery: free (no process holds the lease; the next `chatbridge run` takes it)"
            .to_owned(),
    }
}

fn known_link<'a>(config: &Config, link: &'a str) -> Result<&'a str, CliError> {
    if config.links.contains_key(link) {
        Ok(link)
    } else {
        let known: Vec<&str> = config.links.keys().map(String::as_str).collect();
        Err(failed(format!(
            "no link `{link}` in the configuration (links: {})",
            known.join(", ")
        )))
    }
}

pub(super) async fn dlq(
    config: &Config,
    mut outbox: Outbox,
    action: &DlqAction,
) -> Result<(), CliError> {
    match action {
        DlqAction::List { link, count } => {
            let link = known_link(config, link)?;
            let letters = outbox.dlq_list(link, *count).await.map_err(failed)?;
            if letters.is_empty() {
                out!("no dead letters for {link}");
            }
            for dead in letters {
                let dead = match dead {
                    Ok(dead) => dead,
                    Err(damaged) => {
                        out!("damaged {}", escape(&damaged.to_string()));
                        continue;
                    }
                };
                out!(
                    "{}  {}  {} {}  status={} {}\n  {}",
                    escape(&dead.failed_at.to_string()),
                    escape(&dead.entry.event_id),
                    escape(&dead.entry.scope.to_string()),
                    dead.entry.kind.as_str(),
                    dead.status.map(|s| s.to_string()).unwrap_or("-".into()),
                    escape(&dead.detail),
                    escape(&dead.entry.payload)
                );
            }
        }
        DlqAction::Replay { link } => {
            let link = known_link(config, link)?;
            let (moved, damaged) = outbox.dlq_replay(link).await.map_err(failed)?;
            out!("replayed {moved} dead letter(s) into the outbox of {link}");
            for bad in damaged {
                out!(
                    "left damaged {} (remove with `chatbridge dlq drop {link}`)",
                    escape(&bad.to_string())
                );
            }
        }
        DlqAction::Drop { link } => {
            let link = known_link(config, link)?;
            let dropped = outbox.dlq_drop(link).await.map_err(failed)?;
            out!("dropped {dropped} dead letter(s) of {link}");
        }
    }
    Ok(())
}

pub(super) async fn enable(
    config: &Config,
    mut outbox: Outbox,
    link: &str,
) -> Result<(), CliError> {
    let link = known_link(config, link)?;
    if outbox.enable(link).await.map_err(failed)? {
        out!("{link} enabled: a running daemon resumes delivery within seconds");
    } else {
        out!("{link} was not disabled");
    }
    Ok(())
}
