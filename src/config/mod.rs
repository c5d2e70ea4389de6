//! `config.toml` + environment overrides + `${VAR}` secrets, validated all at once.
//!
//! Loading never stops at the first mistake: the file is merged with the `CHATBRIDGE__…`
//! overrides into one untyped tree (`source`), then each section is read key by key
//! (`reader`), so `chatbridge check` can list every problem with its key path.
//!
//! The environment is always passed in ([`Env`]), never read here: tests inject their own.
//! On reload, [`Changes`] says what the newly loaded file changes in the running one.

mod diff;
pub(crate) mod error;
pub(crate) mod links;
mod ops;
mod origin;
pub(crate) mod reader;
pub(crate) mod rooms;
mod source;
mod summary;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use redis::IntoConnectionInfo;

pub use crate::platforms::link::{LinkConfig, LinkKind};
pub use diff::Changes;
pub use error::{ConfigError, ConfigErrors};
pub use links::{DeliveryPolicy, LinkCommon};
pub use ops::{HttpConfig, LogConfig, LogFormat};
pub use rooms::{DmsConfig, RoomConfig};
pub use tls::{ClientIdentity, PemFile, RedisTls};

use error::Problems;
use reader::Table;

/// Environment variables: the `CHATBRIDGE__…` overrides and the values of `${NAME}` references.
pub type Env = std::collections::HashMap<String, String>;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The Redis that carries the chat (`[redis]`).
    pub redis: RedisConfig,
    /// How long the chat's history lists are kept when chatbridge writes to them (`[history]`).
    pub history: HistoryConfig,
    /// Retry and shutdown timing shared by all links (`[delivery]`).
    pub delivery: DeliveryConfig,
    /// Where events can go, by link name (`[links.<name>]`). The name appears in Redis key
    /// names, logs and the `origin` field of events a link brings in.
    pub links: BTreeMap<String, LinkConfig>,
    /// Which rooms are mirrored, and to which links (`[[rooms]]`). Rooms not listed are ignored.
    pub rooms: Vec<RoomConfig>,
    /// Which links receive direct messages (`[dms]`). Absent: DMs are not mirrored.
    pub dms: Option<DmsConfig>,
    /// The operations HTTP server: `/healthz`, `/readyz`, `/metrics` (`[http]`). Absent: no
    /// port is opened.
    pub http: Option<HttpConfig>,
    /// Log format and level (`[log]`).
    pub log: LogConfig,
    /// The top-level sections that belong to a platform, not to one link.
    pub sections: crate::platforms::sections::Sections,
}

/// `[redis]`
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where the chat's Redis is: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` (TLS) or `unix:///path/to/redis.sock`. Default: `redis://127.0.0.1:6379`.
    /// May hold a password: it is only ever printed redacted.
    pub url: String,
    /// Whether to run against a Redis whose `maxmemory-policy` may evict keys
    /// (`allow_eviction`). An evicted outbox or checkpoint is silent loss, so chatbridge
    /// refuses such a server unless this is true. Default: false.
    pub allow_eviction: bool,
    /// The CA bundle to trust and the client certificate to present on `rediss://`
    /// connections (`ca_file`, `client_cert_file`, `client_key_file`), read and checked at
    /// load. Empty: the platform's roots and no client certificate.
    pub tls: RedisTls,
}

impl RedisConfig {
    /// The URL with any password replaced, safe to print.
    pub fn redacted_url(&self) -> String {
        summary::redact_redis_url(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("allow_eviction", &self.allow_eviction)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[history]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How many messages a room's history list keeps when chatbridge adds one (an event from
    /// a link), as the seed's `LTRIM 0 999` does. 1 to 10000000. Default: 1000, like the seed.
    pub room_limit: usize,
    /// The same for a DM's history list. 1 to 10000000. Default: 500, like the seed.
    pub dm_limit: usize,
    /// How often catch-up reads every watched history for messages stored but never
    /// published (`sweep_secs`, 1 to 3600). Default: 30 seconds.
    pub sweep: Duration,
    /// How often the daemon trims every history list in Redis to its limit, whoever wrote it
    /// (`trim_interval_secs`, 0 to 86400; 0 turns trimming off). Default: 60 seconds.
    pub trim_interval: Option<Duration>,
    /// Whether rooms that are not mirrored (and DMs, when `[dms]` is absent) are trimmed too
    /// (`trim_unconfigured`). Default: true.
    pub trim_unconfigured: bool,
    /// With trimming on, entries older than this are dropped from the old end of every trimmed
    /// history (`max_age_secs`, 0 or 60 to 315360000; 0 keeps entries whatever their age).
    /// Default: 0.
    pub max_age: Option<Duration>,
    /// Per-room limits that replace `room_limit` when the daemon trims those rooms, mirrored
    /// or not (`[history.room_limits]`, room name = 1 to 10000000).
    pub room_limits: BTreeMap<String, usize>,
}

impl HistoryConfig {
    /// How many entries room `room`'s history keeps.
    pub fn room_limit_of(&self, room: &str) -> usize {
        self.room_limits
            .get(room)
            .copied()
            .unwrap_or(self.room_limit)
    }
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// On SIGTERM/SIGINT, how long in-flight deliveries may finish before chatbridge exits;
    /// what is cut off stays in the outbox and is sent after restart (`shutdown_grace_secs`,
    /// 0 to 3600). Default: 10 seconds.
    pub shutdown_grace: Duration,
    /// The longest wait between two attempts to deliver to a failing link; waits grow up to
    /// this (`retry_max_backoff_secs`, 1 to 86400). Default: 300 seconds.
    pub retry_max_backoff: Duration,
    /// How long one event may keep failing with retryable errors (5xx, timeouts) before it is
    /// moved to the dead-letter stream with its last error, so one poison event cannot block
    /// an ordered link forever (`give_up_after_secs`, 1 to 31536000). Default: 86400 (a day).
    pub give_up_after: Duration,
    /// The most events one link's outbox holds; beyond it the oldest are dropped, counted and
    /// logged (`outbox_max_len`, 1000 to 100000000). Default: 1000000.
    pub outbox_max_len: usize,
    /// The oldest an undelivered event may get in an outbox (a link disabled or failing for
    /// that long); older ones are dropped, counted and logged (`outbox_max_age_secs`, 60 to
    /// 31536000). Default: 604800 (a week).
    pub outbox_max_age: Duration,
    /// The most dead letters one link keeps (`dlq_max_len`, 100 to 100000000); beyond it the
    /// oldest are dropped. Default: 100000.
    pub dlq_max_len: usize,
    /// How long a process's claim to deliver a link lasts without renewal (`lease_secs`, 1 to
    /// 3600). At most one process delivers a link at a time: a second `chatbridge run` on the
    /// same Redis waits as a hot standby and takes over within about this long after the holder
    /// dies (at once when it shuts down cleanly). Default: 10 seconds.
    pub lease: Duration,
}

/// Reads the file at `path`, applies the overrides and `${NAME}` references from `env`, and
/// validates everything. Problems that concern the whole file carry the file's path.
pub fn load(path: &Path, env: &Env) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    load_str(&text, env).map_err(|ConfigErrors(errors)| {
        let file = path.display().to_string();
        ConfigErrors(
            errors
                .into_iter()
                .map(|e| {
                    if e.path.is_empty() {
                        ConfigError {
                            path: file.clone(),
                            ..e
                        }
                    } else {
                        e
                    }
                })
                .collect(),
        )
    })
}

/// [`load`] for configuration text that is not in a file.
pub fn load_str(toml: &str, env: &Env) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();
    let Some(tree) = source::merged_tree(toml, env, &mut problems) else {
        return Err(problems.into_errors());
    };
    let mut root = Table::root(tree, &mut problems);
    let redis = parse_redis(root.table("redis", &mut problems), &mut problems);
    let history = parse_history(root.table("history", &mut problems), &mut problems);
    let delivery = parse_delivery(root.table("delivery", &mut problems), &mut problems);
    let (links, declared) =
        crate::platforms::link::parse_links(root.table("links", &mut problems), &mut problems);
    let rooms = rooms::parse_rooms(&mut root, &declared, &mut problems);
    let dms = rooms::parse_dms(&mut root, &declared, &mut problems);
    let http = ops::parse_http(root.optional_table("http", &mut problems), &mut problems);
    let log = ops::parse_log(root.table("log", &mut problems), &mut problems);
    let sections = crate::platforms::sections::Sections::parse(&mut root, &mut problems);
    crate::platforms::sections::check(&links, &rooms, &sections, &mut problems);
    root.finish(&mut problems);
    problems.into_result(Config {
        redis,
        history,
        delivery,
        links,
        rooms,
        dms,
        http,
        log,
        sections,
    })
}

fn parse_redis(mut section: Table, problems: &mut Problems) -> RedisConfig {
    const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
    let url = match section.string("url", problems) {
        Some(url) => {
            if let Err(problem) = check_redis_url(&url.value) {
                problems.add(&url.path, problem);
            }
            url.value
        }
        None => DEFAULT_URL.to_owned(),
    };
    let allow_eviction = section.boolean("allow_eviction", false, problems);
    let tls_url = url
        .as_str()
        .into_connection_info()
        .is_ok_and(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
    let tls = tls::parse_redis_tls(&mut section, tls_url, problems);
    section.finish(problems);
    RedisConfig {
        url,
        allow_eviction,
        tls,
    }
}

/// Whether redis-rs accepts the URL. The message never quotes the URL (it may hold a password).
fn check_redis_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
        return Err(format!(
            "URL scheme must be redis, rediss or unix, not `{}`",
            parsed.scheme()
        ));
    }
    let info = url.into_connection_info().map_err(|e| {
        let full = e.to_string();
        // redis-rs writes "description - Kind: detail"; the description is a fixed text.
        let description = full.split(" - ").next().unwrap_or("invalid");
        format!("not a usable Redis URL: {description}")
    })?;
    if let redis::ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        return Err(
            "`#insecure` (no certificate verification) is not supported: trust the \
                    server's CA with [redis] ca_file instead"
                .to_owned(),
        );
    }
    Ok(())
}

fn parse_history(mut section: Table, problems: &mut Problems) -> HistoryConfig {
    let limits = 1..=10_000_000;
    let room_limit = section.integer("room_limit", limits.clone(), 1000, problems);
    let dm_limit = section.integer("dm_limit", limits, 500, problems);
    let sweep = section.integer("sweep_secs", 1..=3600, 30, problems);
    let trim_interval = section.integer("trim_interval_secs", 0..=86_400, 60, problems);
    let trim_unconfigured = section.boolean("trim_unconfigured", true, problems);
    let max_age_path = section.path_of("max_age_secs");
    let max_age = section.integer("max_age_secs", 0..=315_360_000, 0, problems);
    if (1..60).contains(&max_age) {
        problems.add(
            &max_age_path,
            "must be 0 (no age limit) or an integer from 60 to 315360000",
        );
    }
    let room_limits = parse_room_limits(section.optional_table("room_limits", problems), problems);
    section.finish(problems);
    HistoryConfig {
        room_limit: usize::try_from(room_limit).unwrap_or(1000),
        dm_limit: usize::try_from(dm_limit).unwrap_or(500),
        sweep: Duration::from_secs(sweep),
        trim_interval: (trim_interval > 0).then(|| Duration::from_secs(trim_interval)),
        trim_unconfigured,
        max_age: (max_age > 0).then(|| Duration::from_secs(max_age)),
        room_limits,
    }
}

/// `[history.room_limits]`: room name = limit.
fn parse_room_limits(section: Option<Table>, problems: &mut Problems) -> BTreeMap<String, usize> {
    let Some(mut section) = section else {
        return BTreeMap::new();
    };
    let mut limits = BTreeMap::new();
    for (room, value) in section.drain() {
        let path = section.path_of(&room);
        if let Some(problem) = crate::chat::model::room_name_problem(&room) {
            problems.add(&path, problem);
        }
        let limit = reader::integer_at(&path, value, 1..=10_000_000, 1000, problems);
        limits.insert(room, usize::try_from(limit).unwrap_or(1000));
    }
    section.finish(problems);
    limits
}

fn parse_delivery(mut section: Table, problems: &mut Problems) -> DeliveryConfig {
    let shutdown_grace = section.integer("shutdown_grace_secs", 0..=3600, 10, problems);
    let retry_max_backoff = section.integer("retry_max_backoff_secs", 1..=86_400, 300, problems);
    let give_up_after = section.integer("give_up_after_secs", 1..=31_536_000, 86_400, problems);
    let outbox_max_len = section.integer("outbox_max_len", 1000..=100_000_000, 1_000_000, problems);
    let outbox_max_age = section.integer("outbox_max_age_secs", 60..=31_536_000, 604_800, problems);
    let lease = section.integer("lease_secs", 1..=3600, 10, problems);
    let dlq_max_len = section.integer("dlq_max_len", 100..=100_000_000, 100_000, problems);
    section.finish(problems);
    DeliveryConfig {
        shutdown_grace: Duration::from_secs(shutdown_grace),
        retry_max_backoff: Duration::from_secs(retry_max_backoff),
        give_up_after: Duration::from_secs(give_up_after),
        outbox_max_len: usize::try_from(outbox_max_len).unwrap_or(1_000_000),
        outbox_max_age: Duration::from_secs(outbox_max_age),
        lease: Duration::from_secs(lease),
        dlq_max_len: usize::try_from(dlq_max_len).unwrap_or(100_000),
    }
}

impl Config {
    /// A readable table of where every event goes, secrets redacted: what `chatbridge check`
    /// prints.
    pub fn routing_table(&self) -> String {
        summary::routing_table(self)
    }

    /// Things that are allowed but probably not meant, such as a link nothing routes to.
    pub fn warnings(&self) -> Vec<String> {
        summary::warnings(self)
    }

    /// The names of the links that room `room` is mirrored to; empty when it is not mirrored.
    pub fn links_for_room(&self, room: &str) -> &[String] {
        self.rooms
            .iter()
            .find(|r| r.name == room)
            .map_or(&[], |r| r.links.as_slice())
    }

    /// Whether anything inbound is configured (a platform section with a route, or a webhook
    /// link with `inbound`).
    pub fn has_inbound(&self) -> bool {
        self.sections.has_inbound() || self.links.values().any(|link| link.kind.accepts_hooks())
    }

    /// The HTTP server's settings: `[http]`, or its defaults when only inbound routes need it;
    /// `None` when nothing needs a server.
    pub fn http_server(&self) -> Option<HttpConfig> {
        match &self.http {
            Some(http) => Some(http.clone()),
            None if self.has_inbound() => Some(HttpConfig::default()),
            None => None,
        }
    }

    /// The names of the links that direct messages are mirrored to; empty when `[dms]` is absent.
    pub fn links_for_dms(&self) -> &[String] {
        self.dms.as_ref().map_or(&[], |d| d.links.as_slice())
    }
}
