//! What a reload changes: the running configuration against the one just loaded.
//!
//! Rooms, `[dms]` and links change while running; so do the worker settings of `[delivery]`
//! (`retry_max_backoff_secs`, `give_up_after_secs`: every link's worker restarts with them) and
//! `shutdown_grace_secs`. The rest is read once at start (`[redis]`, `[history]`,
//! `outbox_max_len`, `outbox_max_age_secs`, `lease_secs`, and `[http]`: whether the server runs
//! and its settings): a reload keeps the running value and says that a restart is needed.
//! Inbound settings (`[slack]`, webhook links' `inbound`) apply at once, except the Socket
//! Mode client (`[slack] app_token`, `api_base`, and `app_id`, which names its lease): it
//! keeps running as started until a restart, and the Discord Gateway connections (Discord
//! links' `bot_token`, `api_base`, `gateway_url`, `inbound_joins`); which channel goes to
//! which room applies at once.

use super::Config;

/// The difference a reload applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The configuration to run from now on: the loaded one, with the restart-only settings
    /// kept as they run.
    pub config: Config,
    /// Restart-only settings the file changed, as key paths; not applied.
    pub need_restart: Vec<&'static str>,
    /// Links to start.
    pub added: Vec<String>,
    /// Links to stop (their outboxes stay in Redis).
    pub removed: Vec<String>,
    /// Links whose worker restarts: their settings changed.
    pub changed: Vec<String>,
    /// Whether rooms or `[dms]` route differently.
    pub routes: bool,
    /// Whether `shutdown_grace_secs` changed.
    pub grace: bool,
}

impl Changes {
    /// What running `loaded` instead of `running` changes.
    pub fn between(running: &Config, loaded: Config) -> Self {
        let mut config = loaded;
        let mut need_restart = Vec::new();
        let mut keep = |key: &'static str, differs: bool| {
            if differs {
                need_restart.push(key);
            }
        };
        let (old, new) = (running, &config);
        keep("redis.url", old.redis.url != new.redis.url);
        keep(
            "redis.allow_eviction",
            old.redis.allow_eviction != new.redis.allow_eviction,
        );
        // Contents too: a certificate replaced at the same path is still a change.
        keep(
            "redis.ca_file / client_cert_file / client_key_file",
            old.redis.tls != new.redis.tls,
        );
        keep(
            "history.room_limit",
            old.history.room_limit != new.history.room_limit,
        );
        keep(
            "history.dm_limit",
            old.history.dm_limit != new.history.dm_limit,
        );
        keep("history.sweep_secs", old.history.sweep != new.history.sweep);
        keep(
            "history.trim_interval_secs",
            old.history.trim_interval != new.history.trim_interval,
        );
        keep(
            "history.trim_unconfigured",
            old.history.trim_unconfigured != new.history.trim_unconfigured,
        );
        keep(
            "history.max_age_secs",
            old.history.max_age != new.history.max_age,
        );
        keep(
            "history.room_limits",
            old.history.room_limits != new.history.room_limits,
        );
        keep(
            "delivery.dlq_max_len",
            old.delivery.dlq_max_len != new.delivery.dlq_max_len,
        );
        keep(
            "delivery.outbox_max_len",
            old.delivery.outbox_max_len != new.delivery.outbox_max_len,
        );
        keep(
            "delivery.outbox_max_age_secs",
            old.delivery.outbox_max_age != new.delivery.outbox_max_age,
        );
        keep(
            "delivery.lease_secs",
            old.delivery.lease != new.delivery.lease,
        );
        // The server is bound once, at start: whether it runs and its limits.
        keep("http", old.http_server() != new.http_server());
        // The connection-holding sources are opened once, at start.
        for key in crate::platforms::sections::fixed_at_start(
            (&old.links, &old.sections),
            (&new.links, &new.sections),
        ) {
            keep(key, true);
        }
        config.http = running.http.clone();
        config.redis = running.redis.clone();
        config.history = running.history.clone();
        config.delivery.outbox_max_len = running.delivery.outbox_max_len;
        config.delivery.outbox_max_age = running.delivery.outbox_max_age;
        config.delivery.dlq_max_len = running.delivery.dlq_max_len;
        config.delivery.lease = running.delivery.lease;

        let workers_differ = running.delivery.retry_max_backoff
            != config.delivery.retry_max_backoff
            || running.delivery.give_up_after != config.delivery.give_up_after;
        let added = names(&config, |name| !running.links.contains_key(name));
        let removed = names(running, |name| !config.links.contains_key(name));
        let changed = names(&config, |name| {
            running
                .links
                .get(name)
                .is_some_and(|link| workers_differ || *link != config.links[name])
        });
        Self {
            routes: running.rooms != config.rooms || running.dms != config.dms,
            grace: running.delivery.shutdown_grace != config.delivery.shutdown_grace,
            config,
            need_restart,
            added,
            removed,
            changed,
        }
    }

    /// Whether the reload changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.routes
            && !self.grace
    }
}

/// The link names of `config` that `pick` picks, in name order.
fn names(config: &Config, pick: impl Fn(&str) -> bool) -> Vec<String> {
    config
        .links
        .keys()
        .filter(|name| pick(name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const BASE: &str = r#"
        [redis]
        url = "redis://127.0.0.1:7000"
        [links.keep]
        kind = "console"
        [links.gone]
        kind = "console"
        [links.hook]
        kind = "webhook"
        url = "http://127.0.0.1:9/a"
        [[rooms]]
        name = "general"
        links = ["keep", "gone", "hook"]
    "#;

    fn load(toml: &str) -> Config {
        load_str(toml, &Default::default()).expect("valid config")
    }

    /// A CA certificate replaced at the same path is a change a reload cannot apply: the
    /// running connections keep trusting the old one until a restart.
    #[test]
    fn a_tls_file_whose_contents_changed_needs_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        let write_ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("self-sign");
            std::fs::write(&ca, cert.pem()).expect("write the CA");
        };
        let toml = format!(
            "[redis]\nurl = \"rediss://127.0.0.1:7000/\"\nca_file = \"{}\"\n",
            ca.display()
        );
        write_ca("first CA");
        let running = load(&toml);
        assert!(
            Changes::between(&running, load(&toml))
                .need_restart
                .is_empty()
        );
        write_ca("second CA");
        let changes = Changes::between(&running, load(&toml));
        assert_eq!(
            changes.need_restart,
            ["redis.ca_file / client_cert_file / client_key_file"]
        );
        assert_eq!(
            changes.config.redis, running.redis,
            "the running value is kept"
        );
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let changes = Changes::between(&load(BASE), load(BASE));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(changes.need_restart.is_empty());
    }

    #[test]
    fn links_are_added_removed_and_changed_and_routes_follow_rooms() {
        let edited = BASE
            .replace(
                "[links.gone]\n        kind = \"console\"",
                "[links.new]\n        kind = \"console\"",
            )
            .replace(
                "\"keep\", \"gone\", \"hook\"",
                "\"keep\", \"new\", \"hook\"",
            )
            .replace("9/a", "9/b");
        let changes = Changes::between(&load(BASE), load(&edited));
        assert_eq!(changes.added, ["new"]);
        assert_eq!(changes.removed, ["gone"]);
        assert_eq!(changes.changed, ["hook"]);
        assert!(changes.routes);
        assert!(!changes.is_empty());
    }

    #[test]
    fn a_worker_setting_restarts_every_link() {
        let edited = format!("{BASE}\n[delivery]\nretry_max_backoff_secs = 5\n");
        let changes = Changes::between(&load(BASE), load(&edited));
        assert_eq!(changes.changed, ["gone", "hook", "keep"]);
        assert!(!changes.routes);
    }

    #[test]
    fn restart_only_settings_are_named_and_kept() {
        let edited = BASE.replace("7000", "7001")
            + "\n[history]\nsweep_secs = 5\n[delivery]\nlease_secs = 3\nshutdown_grace_secs = 1\n";
        let running = load(BASE);
        let changes = Changes::between(&running, load(&edited));
        assert_eq!(
            changes.need_restart,
            ["redis.url", "history.sweep_secs", "delivery.lease_secs"]
        );
        assert_eq!(changes.config.redis, running.redis);
        assert_eq!(changes.config.history, running.history);
        assert_eq!(changes.config.delivery.lease, running.delivery.lease);
        assert!(changes.grace, "shutdown_grace_secs applies at once");
        assert!(changes.added.is_empty() && changes.changed.is_empty());
    }

    #[test]
    fn the_socket_mode_token_is_restart_only_but_its_bot_id_applies() {
        let with = |token: &str, bot: &str| {
            format!(
                "{BASE}\n[http]\nlisten = \"127.0.0.1:1\"\n\
                 [slack]\napp_token = \"{token}\"\nbot_id = \"{bot}\"\n"
            )
        };
        let running = load(&with("xapp-1", "B1"));
        let changes = Changes::between(&running, load(&with("xapp-2", "B1")));
        assert_eq!(
            changes.need_restart,
            ["slack.app_token / slack.api_base (Socket Mode)"]
        );
        let changes = Changes::between(&running, load(&with("xapp-1", "B2")));
        assert!(changes.need_restart.is_empty());
    }

    #[test]
    fn the_http_server_is_restart_only_and_inbound_settings_apply() {
        let hook = "[links.h]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n\
                    secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"\n";
        let running = load(hook);
        let changes = Changes::between(&running, load(&format!("{hook}inbound = true\n")));
        assert_eq!(
            changes.need_restart,
            ["http"],
            "the server would have to start"
        );
        assert_eq!(changes.config.http, None);
        assert!(
            changes.config.has_inbound(),
            "the link's inbound setting is applied"
        );
        let serving = load(&format!("{hook}inbound = true\n[http]\n"));
        let changes = Changes::between(&serving, load(&format!("{hook}[http]\n")));
        assert!(changes.need_restart.is_empty());
        assert!(!changes.config.has_inbound());
    }

    #[test]
    fn a_discord_gateway_token_is_restart_only_but_its_channel_mapping_applies() {
        let with = |token: &str, channel: &str| {
            format!(
                "{BASE}\n[links.d]\nkind = \"discord\"\n\
                 webhook_url = \"https://discord.com/api/webhooks/1/t\"\n\
                 bot_token = \"{token}\"\nchannel_id = \"{channel}\"\n"
            )
        };
        let running = load(&with("tok-1", "11"));
        let changes = Changes::between(&running, load(&with("tok-2", "11")));
        assert_eq!(
            changes.need_restart,
            ["links.*.bot_token / api_base / gateway_url / inbound_joins (Discord Gateway)"]
        );
        let changes = Changes::between(&running, load(&with("tok-1", "12")));
        assert!(changes.need_restart.is_empty());
    }
}
