//! Helpers for the services' integration tests (feature `testing`, enabled
//! only through the api's and worker's dev-dependencies; never shipped).

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `promtool check metrics` on an exposition and panics on any finding.
/// Without promtool the check is skipped loudly, except under `CI=true`,
/// where a missing tool is a failure.
pub fn assert_promtool_accepts(metrics: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI=true (Debian package prometheus; make deps installs it)"
            );
            eprintln!("SKIPPED: promtool not installed; `make deps` installs it");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}
