//! `[http]` (the operations HTTP server: health, readiness, metrics) and `[log]` (format and
//! level of the daemon's log lines).

use std::net::SocketAddr;
use std::time::Duration;

use super::error::Problems;
use super::reader::Table;

/// `[http]`: present only when the section is; without it no port is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the server listens (`listen`, an IP address and port). Default: `127.0.0.1:8700`,
    /// loopback only: `/metrics` tells anyone who can reach it about the links and queues.
    pub listen: SocketAddr,
    /// Largest request body accepted; a larger one gets 413 (`max_body_bytes`, 1024 to
    /// 16777216). Default: 65536.
    pub max_body_bytes: usize,
    /// How long one request may take before it gets 408 (`request_timeout_secs`, 1 to 300).
    /// Default: 10 seconds.
    pub request_timeout: Duration,
    /// Requests to the inbound routes handled at once; more wait (`max_concurrent_requests`,
    /// 1 to 10000). Default: 64. The health routes do not count.
    pub max_concurrent_requests: usize,
    /// How long a connection may take to send a request's head: counted from the connection's
    /// start for its first request, from the first byte of each later one
    /// (`header_timeout_secs`, 1 to 300). Default: 5 seconds. A client that sends nothing, or
    /// its headers a byte at a time, holds a connection no longer than this.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait, idle, for its next request
    /// (`idle_timeout_secs`, 1 to 3600). Default: 60 seconds.
    pub idle_timeout: Duration,
    /// Connections open at once (`max_connections`, 1 to 100000). Default: 512, lowered at
    /// start when the open-file limit cannot hold it beside [`crate::ops::fdlimit::RESERVE`].
    pub max_connections: usize,
}

impl Default for HttpConfig {
    /// What an empty `[http]` section means.
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: 65_536,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One line per event: `text` (human readable, coloured on a terminal) or `json` (one
    /// JSON object per line, for log shippers). Default: `text`.
    pub format: LogFormat,
    /// Which events are logged, as a `tracing` filter (`info`, `debug`,
    /// `warn,chatbridge::bridge::deliver=debug`). `RUST_LOG`, when set, wins. Default: `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: DEFAULT_LEVEL.to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8700";
const DEFAULT_LEVEL: &str = "info";

pub(super) fn parse_http(section: Option<Table>, problems: &mut Problems) -> Option<HttpConfig> {
    let mut section = section?;
    let listen = match section.string("listen", problems) {
        Some(text) => match text.value.trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                problems.add(
                    &text.path,
                    format!(
                        "{} is not an IP address and port (such as `127.0.0.1:8700` or `[::1]:8700`)",
                        text.shown()
                    ),
                );
                default_listen()
            }
        },
        None => default_listen(),
    };
    let max_body_bytes = section.integer("max_body_bytes", 1024..=16_777_216, 65_536, problems);
    let timeout = section.integer("request_timeout_secs", 1..=300, 10, problems);
    let concurrent = section.integer("max_concurrent_requests", 1..=10_000, 64, problems);
    let header_timeout = section.integer("header_timeout_secs", 1..=300, 5, problems);
    let idle_timeout = section.integer("idle_timeout_secs", 1..=3600, 60, problems);
    let connections = section.integer("max_connections", 1..=100_000, 512, problems);
    section.finish(problems);
    Some(HttpConfig {
        listen,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(65_536),
        request_timeout: Duration::from_secs(timeout),
        max_concurrent_requests: usize::try_from(concurrent).unwrap_or(64),
        header_timeout: Duration::from_secs(header_timeout),
        idle_timeout: Duration::from_secs(idle_timeout),
        max_connections: usize::try_from(connections).unwrap_or(512),
    })
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8700)))
}

pub(super) fn parse_log(mut section: Table, problems: &mut Problems) -> LogConfig {
    let format = match section.string("format", problems) {
        None => LogFormat::Text,
        Some(text) => match text.value.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                problems.add(
                    &text.path,
                    format!(
                        "{} is not a log format: use \"text\" or \"json\"",
                        text.shown()
                    ),
                );
                LogFormat::Text
            }
        },
    };
    let level = match section.string("level", problems) {
        None => DEFAULT_LEVEL.to_owned(),
        Some(text) => {
            if let Err(e) = text.value.parse::<tracing_subscriber::EnvFilter>() {
                problems.add(
                    &text.path,
                    format!(
                        "{} is not a log filter ({e}); use a level such as \"info\" or \"debug\", \
                         optionally with per-module levels (\"warn,chatbridge=debug\")",
                        text.shown()
                    ),
                );
            }
            text.value
        }
    };
    section.finish(problems);
    LogConfig { format, level }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, load_str};

    const BASE: &str = "[links.console]\nkind = \"console\"\n";

    fn load(extra: &str) -> Result<crate::config::Config, crate::config::ConfigErrors> {
        load_str(&format!("{BASE}{extra}"), &Env::new())
    }

    #[test]
    fn without_http_no_server_and_text_logs_at_info() {
        let config = load("").expect("valid");
        assert_eq!(config.http, None);
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn an_empty_http_section_takes_every_default() {
        let http = load("[http]\n").expect("valid").http.expect("[http] set");
        assert_eq!(http.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(http.max_body_bytes, 65_536);
        assert_eq!(http.request_timeout, Duration::from_secs(10));
        assert_eq!(http.max_concurrent_requests, 64);
        assert_eq!(http.header_timeout, Duration::from_secs(5));
        assert_eq!(http.idle_timeout, Duration::from_secs(60));
        assert_eq!(http.max_connections, 512);
        assert_eq!(http, HttpConfig::default());
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let http = load(
            "[http]\nheader_timeout_secs = 2\nidle_timeout_secs = 30\nmax_connections = 100\n",
        )
        .expect("valid")
        .http
        .expect("[http] set");
        assert_eq!(http.header_timeout, Duration::from_secs(2));
        assert_eq!(http.idle_timeout, Duration::from_secs(30));
        assert_eq!(http.max_connections, 100);
        let errors = load(
            "[http]\nheader_timeout_secs = 0\nidle_timeout_secs = 3601\nmax_connections = 0\n",
        )
        .expect_err("invalid");
        assert_eq!(
            errors.paths(),
            [
                "http.header_timeout_secs",
                "http.idle_timeout_secs",
                "http.max_connections"
            ],
            "{errors}"
        );
    }

    #[test]
    fn settings_are_read_and_json_logs_chosen() {
        let config = load(
            "[http]\nlisten = \"[::1]:9000\"\nmax_body_bytes = 2048\n\
             [log]\nformat = \"json\"\nlevel = \"warn,chatbridge::bridge::deliver=debug\"\n",
        )
        .expect("valid");
        assert_eq!(config.http.unwrap().listen, "[::1]:9000".parse().unwrap());
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "warn,chatbridge::bridge::deliver=debug");
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let errors = load(
            "[http]\nlisten = \"localhost\"\nmax_body_bytes = 10\nport = 1\n\
             [log]\nformat = \"xml\"\nlevel = \"info,[\"\n",
        )
        .expect_err("invalid");
        assert_eq!(
            errors.paths(),
            [
                "http.listen",
                "http.max_body_bytes",
                "http.port",
                "log.format",
                "log.level"
            ],
            "{errors}"
        );
    }
}
