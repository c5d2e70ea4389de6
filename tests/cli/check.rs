//! `check` and `--help`: exit codes, every problem with its key path, no secret printed.

use super::*;

#[test]
fn check_accepts_the_shipped_config_and_prints_the_routing_table() {
    let out = run_cli(&repo_file("config.toml"), &["check"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("redis: redis://127.0.0.1:6379"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("links:\n"), "{out:#?}");
    assert!(out.stdout.contains(", lease 10s\n"), "{out:#?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "console", "console", "events:", "message,", "join,", "leave"
                ]),
        "no console link row:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["general", "→", "console"]),
        "no general room row:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("dms: not mirrored"), "{out:#?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with("config.toml: OK"), "last line: {last:?}");
    assert!(!out.all().contains("warning"), "{out:#?}");
}

#[test]
fn check_resolves_variables_and_never_prints_secrets() {
    let config = ConfigDir::new(
        r#"
[redis]
url = "${CB_REDIS_URL}"

[links.audit]
kind = "webhook"
url = "${CB_HOOK_URL}"
secret = "${CB_HOOK_SECRET}"

[links.spare]
kind = "console"

[[rooms]]
name = "general"
links = ["audit"]
"#,
    );
    let out = run_cli_env(
        &config.path(),
        &["check"],
        &[
            ("CB_REDIS_URL", "redis://:hunter2-PASS@127.0.0.1:1/0"),
            (
                "CB_HOOK_URL",
                "https://hooks.example.com/services/PATHTOKEN-X9?key=QUERYTOKEN-Q9",
            ),
            ("CB_HOOK_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
        ],
    );
    out.assert_ok();
    for secret in [
        "hunter2-PASS",
        "PATHTOKEN-X9",
        "QUERYTOKEN-Q9",
        "C2FVsBQIhrscChlQIMV",
    ] {
        assert!(!out.all().contains(secret), "{secret} printed:\n{out:#?}");
    }
    assert!(out.stdout.contains("hooks.example.com"), "{out:#?}");
    assert!(out.stdout.contains("signed"), "{out:#?}");
    assert!(out.stdout.contains("redacted"), "{out:#?}");
    assert!(
        out.stdout.contains("warning: links.spare"),
        "an unused link should be warned about:\n{out:#?}"
    );
    assert!(out.stdout.trim_end().ends_with(": OK"), "{out:#?}");
}

#[test]
fn help_works_for_every_command() {
    let config = repo_file("config.toml");
    let top = run_cli(&config, &["--help"]);
    top.assert_ok();
    let subcommands = [
        "run", "check", "send", "dm", "join", "leave", "typing", "read", "history", "members",
        "tail", "outbox", "dlq", "enable",
    ];
    for sub in subcommands {
        assert!(
            top.stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "top-level help does not list `{sub}`:\n{}",
            top.stdout
        );
        let out = run_cli(&config, &[sub, "--help"]);
        out.assert_ok();
        assert!(
            out.stdout.contains(&format!("chatbridge {sub}")),
            "`{sub} --help` does not show its usage:\n{}",
            out.stdout
        );
    }
    for action in ["list", "replay", "drop"] {
        let out = run_cli(&config, &["dlq", action, "--help"]);
        out.assert_ok();
        assert!(
            out.stdout.contains(&format!("chatbridge dlq {action}")),
            "`dlq {action} --help`:\n{}",
            out.stdout
        );
    }
    let version = run_cli(&config, &["--version"]);
    version.assert_ok();
    assert!(version.stdout.starts_with("chatbridge "), "{version:#?}");
}

#[test]
fn usage_errors_are_not_config_errors() {
    let out = run_cli(&repo_file("config.toml"), &["send", "general"]);
    assert_eq!(out.code, 2, "clap's usage error code: {out:#?}");
    assert!(out.stderr.contains("Usage"), "{out:#?}");
    let out = run_cli(&repo_file("config.toml"), &["frobnicate"]);
    assert_eq!(out.code, 2, "{out:#?}");
}

/// Every problem planted in `broken.toml`, by key path.
const BROKEN_PATHS: [&str; 11] = [
    "colour",
    "redis.url",
    "links.audit.url",
    "links.audit.secret",
    "links.audit.events[1]",
    "links.legacy.url",
    "links.ops.url",
    "links.ops.retries",
    "rooms[0].links[1]",
    "rooms[1].name",
    "rooms[2].name",
];

fn assert_reports_every_problem(out: &Outcome) {
    assert_eq!(out.code, 78, "EX_CONFIG expected: {out:#?}");
    for path in BROKEN_PATHS {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{path}: "))),
            "no line for `{path}` in:\n{}",
            out.stderr
        );
    }
    for token in PLANTED_TOKENS {
        assert!(
            !out.all().contains(token),
            "`{token}` leaked into the output:\n{out:#?}"
        );
    }
}

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let out = run_cli(&fixture("broken.toml"), &["check"]);
    assert_reports_every_problem(&out);
    assert!(
        out.stdout.is_empty(),
        "no routing table for a broken config: {out:#?}"
    );
    // What each line says, not just where.
    let line = |path: &str| {
        out.stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{path}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("rooms[0].links[1]").contains("ghost"),
        "{}",
        out.stderr
    );
    assert!(line("rooms[1].name").contains("rooms[0]"), "{}", out.stderr);
    assert!(line("rooms[2].name").contains(':'), "{}", out.stderr);
    assert!(
        line("links.audit.events[1]").contains("shout"),
        "{}",
        out.stderr
    );
    assert!(
        line("links.ops.url").contains("CB_CLI_TEST_UNSET_VAR"),
        "{}",
        out.stderr
    );
    assert!(
        line("links.ops.retries").contains("unknown"),
        "{}",
        out.stderr
    );
    assert!(line("colour").contains("unknown"), "{}", out.stderr);
}

#[test]
fn run_on_a_broken_config_exits_78_without_starting() {
    let out = run_cli(&fixture("broken.toml"), &["run"]);
    assert_reports_every_problem(&out);
    assert!(out.elapsed < Duration::from_secs(10), "{out:#?}");
}

#[test]
fn chat_commands_on_a_broken_config_exit_78() {
    let out = run_cli(
        &fixture("broken.toml"),
        &["send", "general", "hi", "--user-id", "1", "--username", "a"],
    );
    assert_reports_every_problem(&out);
}

#[test]
fn a_missing_config_file_is_a_clear_config_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    for command in [&["check"][..], &["run"], &["outbox"]] {
        let out = run_cli(&missing, command);
        assert_eq!(out.code, 78, "{command:?}: {out:#?}");
        assert!(
            out.stderr.contains(&missing.display().to_string()),
            "{out:#?}"
        );
        assert!(
            out.stderr.contains("cannot read the configuration file"),
            "{out:#?}"
        );
        assert!(out.stdout.is_empty(), "{out:#?}");
    }
}

#[test]
fn the_config_path_can_come_from_the_environment() {
    let shipped = repo_file("config.toml");
    let out = Command::new(binary())
        .arg("check")
        .env_clear()
        .env("CHATBRIDGE_CONFIG", &shipped)
        .output()
        .expect("run chatbridge");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
}
