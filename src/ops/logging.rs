//! The daemon's log lines, through `tracing`: human-readable text (coloured on a terminal) or
//! one JSON object per line (`[log] format = "json"`), on standard error. Which events are
//! logged comes from `RUST_LOG` when it is set (and not empty), else from `[log] level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; `None` (commands other than `run`, or a configuration that
/// does not load) means text at `info`. Call once, before anything logs.
pub fn init(config: Option<&LogConfig>) {
    let default = LogConfig::default();
    let config = config.unwrap_or(&default);
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = from_env
        .and_then(|value| EnvFilter::try_new(value).ok())
        .or_else(|| EnvFilter::try_new(&config.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
