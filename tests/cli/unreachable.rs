//! An unreachable Redis, and a reader that stops early.

use super::*;

#[test]
fn an_unreachable_redis_exits_69_with_one_redacted_line() {
    let port = dead_port();
    let config = ConfigDir::new(&format!(
        "[redis]\nurl = \"redis://:pw-TOKEN-U1@127.0.0.1:{port}/\"\n"
    ));
    let path = config.path();
    let commands: [&[&str]; 4] = [
        &send_args("hi", "1001", "alice"),
        &["history", "general"],
        &["outbox"],
        &["tail"],
    ];
    for command in commands {
        let out = run_cli(&path, command);
        assert_eq!(out.code, 69, "EX_UNAVAILABLE: {command:?}: {out:#?}");
        assert!(
            out.elapsed < Duration::from_secs(10),
            "{command:?}: {out:#?}"
        );
        assert!(out.stdout.is_empty(), "{command:?}: {out:#?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one clear line: {command:?}: {out:#?}");
        assert!(
            lines[0].contains(&format!("redis://:redacted@127.0.0.1:{port}")),
            "{command:?}: {out:#?}"
        );
        assert!(!out.all().contains("pw-TOKEN-U1"), "{command:?}: {out:#?}");
    }
}

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    // `chatbridge check | head -1`: far more output than a pipe holds, read one line, close.
    let mut toml = String::from(
        "[redis]\nurl = \"redis://127.0.0.1:9\"\n[links.console]\nkind = \"console\"\n",
    );
    for i in 0..3000 {
        toml += &format!("[[rooms]]\nname = \"room{i}\"\nlinks = [\"console\"]\n");
    }
    let dir = ConfigDir::new(&toml);
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(dir.path())
        .arg("check")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chatbridge");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read the first line");
    let out = child.wait_with_output().expect("wait for chatbridge");
    assert!(!first.trim().is_empty(), "a first line was printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
