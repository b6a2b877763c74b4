//! Invalid configuration exits 2 with one line naming the variable; the
//! healthcheck subcommand's exit codes.
mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// `orion-api healthcheck` against `port` (the only setting it reads).
fn healthcheck(port: &str) -> std::process::Output {
    Command::new(BIN)
        .arg("healthcheck")
        .env("PORT", port)
        .output()
        .unwrap()
}

#[test]
fn invalid_env_exits_2_with_one_line_naming_the_variable() {
    for (var, value) in [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("LOG_LEVEL", "loud"),
        ("HTTP_THREADS", "0"),
        ("HTTP_HEADER_TIMEOUT", "soon"),
        ("HTTP_IDLE_TIMEOUT", "10ms"),
        ("HTTP_MAX_CONNECTIONS", "-5"),
        ("HTTP_SEND_TIMEOUT", "never"),
        ("HTTP_SEND_TIMEOUT", "50ms"),
        ("HTTP_SEND_TIMEOUT", "2h"),
        ("HTTP_PIPELINE_DEPTH", "0"),
        ("HTTP_PIPELINE_DEPTH", "1025"),
        ("SHUTDOWN_TIMEOUT", "forever"),
        ("SHUTDOWN_DELAY", "-1"),
        ("NODE_ENV", "prod uction"),
    ] {
        let (code, stderr, took) = run_with(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: {stderr}");
        assert!(
            lines[0].contains(&format!("{var}=\"{value}\"")),
            "{var}={value}: {stderr}"
        );
        assert!(lines[0].contains("expected"), "{stderr}");
        assert!(took < Duration::from_secs(2));
    }
}

/// Runs the binary under a hard open-files limit of `nofile` (so the result
/// does not depend on the machine's limit) until it exits or logs "api
/// listening" (then it is killed: code None); fails after 10 s. Returns the
/// exit code and stderr.
fn run_with_nofile(nofile: u64, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PORT", free_port().to_string())
        .envs(env.iter().copied());
    limit_child_open_files(&mut cmd, nofile, nofile);
    let mut p = ServiceProcess::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some((status, _)) = p.wait_exit(Duration::ZERO) {
            break status.code();
        }
        if p.stdout_lines()
            .iter()
            .any(|l| l.contains("\"message\":\"api listening\""))
        {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "neither exited nor listened within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = p.child.kill();
    let _ = p.child.wait();
    p.wait_output_closed(Duration::from_secs(10));
    let stderr = p.stderr_lines().join("\n");
    (code, stderr)
}

#[test]
fn max_connections_must_fit_the_open_files_limit() {
    // A hard limit of 4,096 descriptors cannot hold 100,000 connections.
    let (code, stderr) = run_with_nofile(4096, &[("HTTP_MAX_CONNECTIONS", "100000")]);
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("HTTP_MAX_CONNECTIONS=\"100000\""),
        "{stderr}"
    );
    assert!(lines[0].contains("open-files limit"), "{stderr}");
    // The same limit with the default cap starts (and is killed: code None).
    let (code, stderr) = run_with_nofile(4096, &[]);
    assert_eq!(code, None, "did not keep running: {stderr}");
}

#[test]
fn healthcheck_exit_codes() {
    let api = Api::start(&[]);
    let port = api.port.to_string();
    let out = healthcheck(&port);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing listening.
    let closed = free_port().to_string();
    let out = healthcheck(&closed);
    assert_eq!(out.status.code(), Some(1));

    // Something that accepts and never answers: fail within the 2 s budget.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = silent.local_addr().unwrap().port().to_string();
    let start = Instant::now();
    let out = healthcheck(&sport);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    drop(silent);

    // Bad PORT for the healthcheck itself is a config error.
    let out = healthcheck("nope");
    assert_eq!(out.status.code(), Some(2));
}
