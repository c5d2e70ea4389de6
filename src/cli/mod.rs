//! The operator commands behind the `chatbridge` binary. Each returns an exit code; errors
//! are one clear line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::Map;

use crate::bridge::outbox::Outbox;

use crate::chat::model::{ChatEvent, Outbound, OutboundKind, Scope, UserId};
use crate::chat::store::{HistoryLimits, Store};
use crate::config::{self, Config};
use crate::platforms::console;
use crate::printable::{escape, escape_controls, json_line};
use crate::redis::keys;
use crate::redis::lease::{Lease, LeaseHolder};

/// `println!` for the operator commands, except that a closed stdout (`chatbridge tail | head`)
/// ends the command quietly with success instead of a panic, as Unix tools do.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*), true)
    };
}

/// [`out!`] without the line end.
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*), false)
    };
}

mod chat;
mod links;

use chat::{chat_command, tail};
use links::{dlq, enable, show_outbox, show_status};

/// Writes to stdout; exits with success when the reader went away (broken pipe), and with
/// failure on any other write error, instead of panicking.
pub(crate) fn emit(text: std::fmt::Arguments, line: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(text)
        .and_then(|()| {
            if line {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("chatbridge: cannot write to stdout: {e}");
            std::process::exit(1)
        }
    }
}

/// sysexits.h EX_CONFIG: the configuration is invalid.
pub const EX_CONFIG: u8 = 78;
/// sysexits.h EX_UNAVAILABLE: Redis could not be reached.
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h EX_SOFTWARE: a part of the running daemon failed (for `Restart=on-failure`).
pub const EX_SOFTWARE: u8 = 70;

/// chatbridge: mirrors a Redis Pub/Sub chat to Slack, Discord, webhooks and the console,
/// without losing a message.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "CHATBRIDGE_CONFIG",
        default_value = "config.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge until SIGTERM, SIGINT or SIGQUIT (SIGHUP, SIGUSR1, SIGUSR2 are logged and
    /// ignored).
    Run,
    /// Validate the configuration, report every problem, print the routing table.
    Check,
    /// Send a message to a room, as a seed client does.
    Send {
        room: String,
        text: String,
        #[command(flatten)]
        user: User,
    },
    /// Send a direct message from one user id to another.
    Dm {
        /// The sender's user id (digits, with `-` when negative, are sent as a number).
        #[arg(allow_negative_numbers = true)]
        from: String,
        /// The recipient's user id.
        #[arg(allow_negative_numbers = true)]
        to: String,
        text: String,
        /// The sender's display name.
        #[arg(long)]
        username: String,
    },
    /// Join a room (adds to members, publishes the join line).
    Join {
        room: String,
        #[command(flatten)]
        user: User,
    },
    /// Leave a room (removes from members, publishes the leave line).
    Leave {
        room: String,
        #[command(flatten)]
        user: User,
    },
    /// Publish a typing indicator.
    Typing {
        room: String,
        /// The user id (digits are sent as a number, like the seed's ids).
        #[arg(long, allow_hyphen_values = true)]
        user_id: String,
    },
    /// Mark a room read up to a message id (stores and publishes a read receipt).
    Read {
        room: String,
        /// The id of the last message read.
        message_id: String,
        /// The user id (digits are sent as a number, like the seed's ids).
        #[arg(long, allow_hyphen_values = true)]
        user_id: String,
    },
    /// Show a room's (or a DM's) history, newest first.
    History {
        /// The room (omit with --dm).
        #[arg(required_unless_present = "dm")]
        room: Option<String>,
        /// Show the DM history between two user ids instead.
        #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "room",
              allow_negative_numbers = true)]
        dm: Option<Vec<String>>,
        /// How many messages.
        #[arg(short = 'n', long, default_value_t = 50)]
        count: usize,
        /// Print the stored JSON instead of text lines.
        #[arg(long)]
        json: bool,
    },
    /// List a room's members.
    Members { room: String },
    /// Print live events of some rooms (all rooms and DMs if none given) until Ctrl-C.
    Tail { rooms: Vec<String> },
    /// Per-link outbox depth, pending, dead letters and checkpoint; which process delivers
    /// the link (host and pid) or that none does; whether a link is failing (since when, last
    /// error) or disabled.
    Outbox,
    /// Each link's state (ok, failing since when, disabled and why), queue depth and oldest
    /// event's age, dead letters, which process delivers it; the last catch-up pass and the
    /// malformed payloads skipped, by kind.
    Status,
    /// Inspect, replay or drop a link's dead letters.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Re-enable a link that was disabled because its target said it is gone (HTTP 410, a
    /// deleted Discord webhook, a revoked Slack token or archived channel).
    Enable { link: String },
    /// A platform's own commands.
    #[command(flatten)]
    Platform(crate::platforms::commands::PlatformCommand),
}

/// Who acts.
#[derive(Debug, Args)]
pub struct User {
    /// The user id (digits are sent as a number, like the seed's ids; `-5` too).
    #[arg(long, allow_hyphen_values = true)]
    pub user_id: String,
    /// The display name.
    #[arg(long)]
    pub username: String,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show the oldest dead letters.
    List {
        link: String,
        #[arg(short = 'n', long, default_value_t = 20)]
        count: usize,
    },
    /// Put every dead letter back at the end of the link's outbox.
    Replay { link: String },
    /// Delete every dead letter.
    Drop { link: String },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("configuration rejected, {}:\n{}", plural(.0.0.len(), "problem"), indent(.0))]
    Config(config::ConfigErrors),
    #[error("cannot reach redis at {url}: {error}")]
    Unavailable { url: String, error: String },
    #[error("{0}")]
    Failed(String),
    /// `run` refused to start on a setting of the Redis server (an evicting policy).
    #[error("{0}")]
    Refused(String),
    /// Redis refused the credentials or permissions (exit 69, like an unreachable Redis).
    #[error("{0}")]
    Denied(String),
    /// A part of the running daemon failed, and the daemon stopped.
    #[error("{0}")]
    PartFailed(String),
}

impl From<crate::daemon::DaemonError> for CliError {
    fn from(e: crate::daemon::DaemonError) -> Self {
        use crate::daemon::DaemonError;
        match e {
            DaemonError::Evicting(_) => Self::Refused(e.to_string()),
            DaemonError::PartFailed(_) => Self::PartFailed(e.to_string()),
            DaemonError::RedisUrl(_) | DaemonError::Http(_) => Self::Failed(e.to_string()),
            DaemonError::NotRunnable(_) => Self::Refused(e.to_string()),
            DaemonError::Denied(_) => Self::Denied(e.to_string()),
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Refused(_) => ExitCode::from(EX_CONFIG),
            Self::Unavailable { .. } | Self::Denied(_) => ExitCode::from(EX_UNAVAILABLE),
            Self::PartFailed(_) => ExitCode::from(EX_SOFTWARE),
            Self::Failed(_) => ExitCode::FAILURE,
        }
    }
}

fn indent(errors: &config::ConfigErrors) -> String {
    errors
        .0
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Loads the configuration with the process environment.
pub fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let env: config::Env = std::env::vars().collect();
    config::load(&cli.config, &env).map_err(CliError::Config)
}

/// `chatbridge check`: prints the routing table or every problem.
pub fn check(cli: &Cli) -> Result<(), CliError> {
    let config = load_config(cli)?;
    out_raw!("{}", config.routing_table());
    for warning in config.warnings() {
        out!("warning: {warning}");
    }
    out!("{}: OK", cli.config.display());
    Ok(())
}

/// A platform's own command (none needs Redis).
pub fn platform(
    cli: &Cli,
    command: &crate::platforms::commands::PlatformCommand,
) -> Result<(), CliError> {
    let config = load_config(cli)?;
    let shown = command.run(&config).map_err(CliError::Failed)?;
    out_raw!("{shown}");
    Ok(())
}

/// Runs every command but `run`, `check` and the platforms' own.
pub async fn execute(cli: &Cli) -> Result<(), CliError> {
    let config = load_config(cli)?;
    if let Command::Tail { rooms } = &cli.command {
        for room in rooms {
            crate::chat::store::room_scope(room).map_err(failed)?;
        }
    }
    let url = config.redis.redacted_url();
    let client = crate::redis::connect::client(&config.redis).map_err(failed)?;
    let unavailable = |e: &dyn std::fmt::Display| CliError::Unavailable {
        url: url.clone(),
        error: e.to_string(),
    };
    let con = tokio::time::timeout(
        crate::redis::connect::CONNECT_TIMEOUT * 2,
        crate::redis::connect::manager(&client, Duration::ZERO),
    )
    .await
    .map_err(|_| unavailable(&"timed out"))?
    .map_err(|e| match crate::redis::connect::denial(&e) {
        // Said the way `run` says it: what went wrong and what to fix (exit 69 too).
        Some((reason, fix)) => CliError::Denied(
            crate::redis::connect::Denied {
                url: url.clone(),
                reason,
                fix,
            }
            .to_string(),
        ),
        None => unavailable(&e),
    })?;
    let limits = HistoryLimits {
        room: config.history.room_limit,
        dm: config.history.dm_limit,
    };
    let store = Store::new(con.clone(), limits);
    let outbox = Outbox::new(con);
    match &cli.command {
        Command::Run | Command::Check => Ok(()),
        Command::Platform(command) => platform(cli, command),
        Command::Tail { rooms } => tail(&client, rooms).await.map_err(|e| match e {
            CliError::Failed(error) => CliError::Unavailable { url, error },
            other => other,
        }),
        Command::Outbox => show_outbox(&config, outbox).await,
        Command::Status => show_status(&config, outbox).await,
        Command::Dlq { action } => dlq(&config, outbox, action).await,
        Command::Enable { link } => enable(&config, outbox, link).await,
        chat => chat_command(&store, chat).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::DaemonError;
    use crate::ops::supervise::Failure;

    #[test]
    fn a_failed_part_exits_70_for_the_service_manager_to_restart() {
        let failure = Failure::Panicked {
            part: "worker audit".into(),
            message: "boom".into(),
        };
        let e = CliError::from(DaemonError::PartFailed(failure));
        assert_eq!(e.exit_code(), ExitCode::from(70));
        assert_eq!(e.to_string(), "worker audit panicked: boom; stopped");
    }
}
