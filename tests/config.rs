//! Configuration loading: the shipped file, environment overrides and `${VAR}` references (all
//! from an injected map, never the process environment), broken files reporting every problem
//! with its key path, and secrets never showing up in anything printable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chatbridge::chat::model::EventKind;
use chatbridge::config::{self, Config, ConfigErrors, Env, LinkKind};

const HOOK_URL: &str = "https://hooks.example.com/services/T1/B2/SEKRIT-PATH-TOKEN";
const HOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const REDIS_PASSWORD: &str = "hunter2-redis-pass";

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn fixture(name: &str) -> PathBuf {
    repo_file("tests/configs").join(name)
}

fn errors_of(result: Result<Config, ConfigErrors>) -> ConfigErrors {
    match result {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors,
    }
}

fn path_set(errors: &ConfigErrors) -> BTreeSet<&str> {
    errors.paths().into_iter().collect()
}

fn assert_paths(errors: &ConfigErrors, expected: &[&str]) {
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(path_set(errors), expected, "all errors:\n{errors}");
    assert_eq!(
        errors.0.len(),
        expected.len(),
        "a key was reported twice:\n{errors}"
    );
}

fn message_at<'a>(errors: &'a ConfigErrors, path: &str) -> &'a str {
    errors
        .0
        .iter()
        .find(|e| e.path == path)
        .map(|e| e.message.as_str())
        .unwrap_or_else(|| panic!("no error at {path}:\n{errors}"))
}

/// A valid config with a signed webhook whose URL and secret come from the environment.
const WEBHOOK_CONFIG: &str = r#"
[redis]
url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6390/1"

[links.audit]
kind = "webhook"
url = "${AUDIT_HOOK_URL}"
secret = "${AUDIT_HOOK_SECRET}"

[links.console]
kind = "console"

[[rooms]]
name = "general"
links = ["console", "audit"]

[dms]
links = ["audit"]
"#;

fn webhook_env() -> Env {
    env(&[
        ("AUDIT_HOOK_URL", HOOK_URL),
        ("AUDIT_HOOK_SECRET", HOOK_SECRET),
        ("REDIS_PASSWORD", REDIS_PASSWORD),
    ])
}

#[test]
fn the_shipped_config_loads_with_no_environment() {
    let config = config::load(&repo_file("config.toml"), &Env::new()).unwrap_or_else(|e| {
        panic!("config.toml does not load:\n{e}");
    });
    assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(config.history.room_limit, 1000);
    assert_eq!(config.history.dm_limit, 500);
    assert_eq!(config.history.sweep, Duration::from_secs(30));
    assert_eq!(config.delivery.shutdown_grace, Duration::from_secs(10));
    assert_eq!(config.delivery.retry_max_backoff, Duration::from_secs(300));
    assert_eq!(config.delivery.give_up_after, Duration::from_secs(86_400));
    assert_eq!(config.delivery.outbox_max_len, 1_000_000);
    assert_eq!(config.delivery.outbox_max_age, Duration::from_secs(604_800));
    assert_eq!(config.delivery.lease, Duration::from_secs(10));
    assert!(!config.redis.allow_eviction);
    assert_eq!(config.links.keys().collect::<Vec<_>>(), ["console"]);
    assert_eq!(
        config.links["console"].events(),
        [EventKind::Message, EventKind::Join, EventKind::Leave]
    );
    assert_eq!(config.rooms.len(), 1);
    assert_eq!(config.rooms[0].name, "general");
    assert_eq!(config.links_for_room("general"), ["console"]);
    assert!(config.links_for_room("random").is_empty());
    assert_eq!(config.dms, None);
    assert_eq!(config.warnings(), Vec::<String>::new());
}

#[test]
fn an_empty_file_is_all_defaults_and_warns_that_nothing_is_mirrored() {
    let config = config::load_str("", &Env::new()).unwrap();
    assert_eq!(config.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(config.history.room_limit, 1000);
    assert!(config.links.is_empty() && config.rooms.is_empty());
    assert_eq!(config.warnings().len(), 1, "{:?}", config.warnings());
}

#[test]
fn environment_overrides_come_from_the_injected_map() {
    let env = env(&[
        ("CHATBRIDGE__REDIS__URL", "redis://10.1.2.3:7000/2"),
        ("CHATBRIDGE__HISTORY__ROOM_LIMIT", "50"),
        ("CHATBRIDGE__DELIVERY__SHUTDOWN_GRACE_SECS", "3"),
        ("CHATBRIDGE__DELIVERY__LEASE_SECS", "4"),
        ("CHATBRIDGE__REDIS__ALLOW_EVICTION", "true"),
        ("CHATBRIDGE__LINKS__CONSOLE__KIND", "console"),
        ("UNRELATED", "ignored"),
    ]);
    let toml = "[[rooms]]\nname = \"general\"\nlinks = [\"console\"]\n";
    let config = config::load_str(toml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.redis.url, "redis://10.1.2.3:7000/2");
    assert_eq!(config.history.room_limit, 50);
    assert_eq!(config.history.dm_limit, 500);
    assert_eq!(config.delivery.shutdown_grace, Duration::from_secs(3));
    assert_eq!(config.delivery.lease, Duration::from_secs(4));
    assert!(config.redis.allow_eviction);
    assert_eq!(config.links["console"].kind_name(), "console");

    let shipped = config::load(&repo_file("config.toml"), &env).unwrap();
    assert_eq!(shipped.redis.url, "redis://10.1.2.3:7000/2");
}

#[test]
fn bad_overrides_are_reported_with_the_variable_that_set_them() {
    let env = env(&[
        ("CHATBRIDGE__REDIS__URI", "redis://x"),
        ("CHATBRIDGE__HISTORY__DM_LIMIT", "lots"),
    ]);
    let errors = errors_of(config::load_str("", &env));
    assert_paths(&errors, &["redis.uri", "history.dm_limit"]);
    let unknown = message_at(&errors, "redis.uri");
    assert!(unknown.contains("unknown key"), "{unknown}");
    assert!(unknown.contains("`url`"), "{unknown}");
    assert!(unknown.contains("CHATBRIDGE__REDIS__URI"), "{unknown}");
}

#[test]
fn variables_are_substituted_whole_and_embedded() {
    let config = config::load_str(WEBHOOK_CONFIG, &webhook_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.redis.url,
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:6390/1")
    );
    let audit_common = &config.links["audit"].common;
    let LinkKind::Webhook(audit) = &config.links["audit"].kind else {
        panic!("audit is not a webhook");
    };
    assert_eq!(audit.url.expose().as_str(), HOOK_URL);
    assert_eq!(audit.secret.as_ref().map(|s| s.key().len()), Some(24));
    assert_eq!(audit_common.events, EventKind::ALL);
    assert_eq!(audit_common.delivery.timeout, Duration::from_secs(15));
    assert_eq!(
        (
            audit_common.delivery.batch_max,
            audit_common.delivery.max_in_flight
        ),
        (1, 1)
    );
    assert_eq!(config.links_for_room("general"), ["console", "audit"]);
    assert_eq!(config.links_for_dms(), ["audit"]);

    let embedded = r#"
        [links.hook]
        kind = "webhook"
        url = "https://hooks.example.com/${TOKEN}?v=${VERSION}"
        timeout_secs = "${TIMEOUT}"
        [dms]
        links = ["hook"]
    "#;
    let env = env(&[("TOKEN", "abc"), ("VERSION", "2"), ("TIMEOUT", "30")]);
    let config = config::load_str(embedded, &env).unwrap_or_else(|e| panic!("{e}"));
    let hook_common = &config.links["hook"].common;
    let LinkKind::Webhook(hook) = &config.links["hook"].kind else {
        panic!("hook is not a webhook");
    };
    assert_eq!(
        hook.url.expose().as_str(),
        "https://hooks.example.com/abc?v=2"
    );
    assert_eq!(hook_common.delivery.timeout, Duration::from_secs(30));
}

#[test]
fn unset_variables_are_errors_naming_the_key_and_the_variable() {
    let partial = env(&[("AUDIT_TOKEN", "tok-value-123")]);
    let errors = errors_of(config::load(&fixture("missing_vars.toml"), &partial));
    assert_paths(&errors, &["redis.url", "links.audit.secret"]);
    assert!(message_at(&errors, "redis.url").contains("`REDIS_URL`"));
    assert!(message_at(&errors, "links.audit.secret").contains("`AUDIT_HOOK_SECRET`"));
    assert!(!errors.to_string().contains("tok-value-123"), "{errors}");

    let errors = errors_of(config::load(&fixture("missing_vars.toml"), &Env::new()));
    assert_paths(
        &errors,
        &["redis.url", "links.audit.url", "links.audit.secret"],
    );
    assert!(message_at(&errors, "links.audit.url").contains("`AUDIT_TOKEN`"));
}

#[test]
fn unknown_keys_are_reported_everywhere() {
    let errors = errors_of(config::load(&fixture("unknown_keys.toml"), &Env::new()));
    assert_paths(
        &errors,
        &[
            "colour",
            "redis.uri",
            "history.room_limt",
            "delivery.grace",
            "links.console.colour",
            "links.hook.retries",
            "rooms[0].topic",
            "dms.enabled",
        ],
    );
    assert!(message_at(&errors, "history.room_limt").contains("did you mean `room_limit`?"));
    assert!(
        errors
            .0
            .iter()
            .all(|e| e.message.starts_with("unknown key")),
        "{errors}"
    );
}

#[test]
fn every_link_problem_is_reported_at_once() {
    let errors = errors_of(config::load(&fixture("bad_links.toml"), &Env::new()));
    assert_paths(
        &errors,
        &[
            "links.scalar",
            "links.audit.url",
            "links.audit.secret",
            "links.audit.events[1]",
            "links.audit.timeout_secs",
            "links.audit.batch_max",
            "links.audit.max_in_flight",
            "links.nourl.url",
            "links.pigeon.kind",
            "links.bad name",
            "links.nokind.kind",
            "links.noevents.events",
            "links.typed.kind",
        ],
    );
    assert!(message_at(&errors, "links.pigeon.kind").contains("`carrier-pigeon`"));
    assert!(message_at(&errors, "links.audit.events[1]").contains("`shout`"));
    assert!(message_at(&errors, "links.nourl.url").contains("missing"));
    assert!(message_at(&errors, "links.audit.batch_max").contains("1 to 1000"));
    assert!(message_at(&errors, "links.audit.max_in_flight").contains("1 to 256"));
}

#[test]
fn every_room_and_section_problem_is_reported_at_once() {
    let errors = errors_of(config::load(&fixture("bad_rooms.toml"), &Env::new()));
    assert_paths(
        &errors,
        &[
            "redis.url",
            "redis.allow_eviction",
            "history.room_limit",
            "history.dm_limit",
            "history.sweep_secs",
            "delivery.shutdown_grace_secs",
            "delivery.retry_max_backoff_secs",
            "delivery.give_up_after_secs",
            "delivery.outbox_max_len",
            "delivery.outbox_max_age_secs",
            "delivery.lease_secs",
            "rooms[0].name",
            "rooms[1].links[1]",
            "rooms[2].name",
            "rooms[3].links",
            "rooms[4].links[1]",
            "rooms[5].name",
            "rooms[6].links",
            "rooms[7].name",
            "rooms[7].links",
            "dms.links[0]",
        ],
    );
    assert!(message_at(&errors, "rooms[2].name").contains("rooms[1].name"));
    assert!(message_at(&errors, "rooms[1].links[1]").contains("`ghost`"));
    assert!(message_at(&errors, "rooms[4].links[1]").contains("twice"));
    let display = errors.to_string();
    assert_eq!(display.lines().count(), errors.0.len());
    assert!(
        display
            .lines()
            .any(|l| l.starts_with("history.room_limit: ")),
        "{display}"
    );
}

#[test]
fn whole_file_problems_carry_the_file_path() {
    let missing = fixture("does-not-exist.toml");
    let errors = errors_of(config::load(&missing, &Env::new()));
    assert_eq!(errors.paths(), [missing.display().to_string().as_str()]);

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, format!("[links.a]\nsecret = \"{HOOK_SECRET}\n")).unwrap();
    let errors = errors_of(config::load(&broken, &Env::new()));
    assert_eq!(errors.paths(), [broken.display().to_string().as_str()]);
    assert!(errors.to_string().contains("invalid TOML"), "{errors}");
    assert!(!errors.to_string().contains("C2FVsBQIhrsc"), "{errors}");
}

#[test]
fn secrets_never_appear_in_errors() {
    // Every secret-bearing key is wrong in some other way, with its secret in the value.
    let toml = r#"
        [redis]
        url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/notanumber"
        [links.audit]
        kind = "webhook"
        url = "ftp://hooks.example.com/services/${AUDIT_HOOK_SECRET}"
        secret = "${AUDIT_HOOK_URL}"
        events = ["${AUDIT_HOOK_SECRET}"]
        [links.second]
        kind = "${AUDIT_HOOK_SECRET}"
        [[rooms]]
        name = "general"
        links = ["${AUDIT_HOOK_SECRET}", "audit", "second"]
    "#;
    let errors = errors_of(config::load_str(toml, &webhook_env()));
    assert_paths(
        &errors,
        &[
            "redis.url",
            "links.audit.url",
            "links.audit.secret",
            "links.audit.events[0]",
            "links.second.kind",
            "rooms[0].links[0]",
        ],
    );
    let text = format!("{errors}\n{errors:?}");
    for secret in [
        REDIS_PASSWORD,
        "C2FVsBQIhrsc",
        "SEKRIT",
        "hooks.example.com/services",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
    }
}

#[test]
fn the_routing_table_shows_routes_but_no_secrets() {
    let config = config::load_str(WEBHOOK_CONFIG, &webhook_env()).unwrap();
    let table = config.routing_table();
    let debug = format!("{config:?}");
    for text in [&table, &debug] {
        for secret in [REDIS_PASSWORD, "C2FVsBQIhrsc", "SEKRIT", "/services/"] {
            assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
        }
    }
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.contains(&"redis: redis://:redacted@127.0.0.1:6390/1"),
        "{table}"
    );
    assert!(lines.contains(&"links:"), "{table}");
    assert!(
        lines.contains(
            &"  audit    webhook  https://hooks.example.com/…  signed  events: message, join, leave, typing, read_receipt"
        ),
        "{table}"
    );
    assert!(
        lines.contains(&"  console  console  events: message, join, leave"),
        "{table}"
    );
    assert!(lines.contains(&"  general  → console, audit"), "{table}");
    assert!(lines.contains(&"dms        → audit"), "{table}");
}

#[test]
fn a_link_nothing_routes_to_is_a_warning_not_an_error() {
    let toml = r#"
        [links.console]
        kind = "console"
        [links.spare]
        kind = "console"
        events = ["typing"]
        [[rooms]]
        name = "general"
        links = ["console"]
    "#;
    let config = config::load_str(toml, &Env::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.links["spare"].events(), [EventKind::Typing]);
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("links.spare: "), "{warnings:?}");
}

#[test]
fn webhook_settings_are_read() {
    let toml = r#"
        [links.fast]
        kind = "webhook"
        url = "http://127.0.0.1:9000/hook"
        events = ["message", "message", "read_receipt"]
        timeout_secs = 5
        batch_max = 100
        max_in_flight = 8
        [dms]
        links = ["fast"]
    "#;
    let config = config::load_str(toml, &Env::new()).unwrap_or_else(|e| panic!("{e}"));
    let fast_common = &config.links["fast"].common;
    let LinkKind::Webhook(fast) = &config.links["fast"].kind else {
        panic!("fast is not a webhook");
    };
    assert_eq!(
        fast_common.events,
        [EventKind::Message, EventKind::ReadReceipt]
    );
    assert_eq!(fast_common.delivery.timeout, Duration::from_secs(5));
    assert_eq!(
        (
            fast_common.delivery.batch_max,
            fast_common.delivery.max_in_flight
        ),
        (100, 8)
    );
    assert_eq!(fast.secret, None);
    assert!(config.routing_table().contains("unsigned"));
}

#[test]
fn wrongly_shaped_sections_are_reported_once_each() {
    let toml = r#"
        redis = "redis://127.0.0.1:6379"
        dms = ["console"]
        [history]
        room_limit = 1.5
        [rooms]
        name = "general"
        [[links]]
        kind = "console"
    "#;
    let errors = errors_of(config::load_str(toml, &Env::new()));
    assert_paths(
        &errors,
        &["redis", "history.room_limit", "links", "rooms", "dms"],
    );
    assert_eq!(
        message_at(&errors, "rooms"),
        "expected a list, found a table"
    );
    assert_eq!(
        message_at(&errors, "links"),
        "expected a table, found a list"
    );
    assert_eq!(
        message_at(&errors, "history.room_limit"),
        "expected an integer, found a float"
    );
}
