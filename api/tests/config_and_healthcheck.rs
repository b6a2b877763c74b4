//! Invalid configuration exits 2 with one line naming the variable; the
//! healthcheck subcommand's exit codes.
mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
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
/// listening" (then it is killed: code None); fails after 10 s.
fn run_with_nofile(nofile: u64, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PORT", free_port().to_string())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let listening = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("\"message\":\"api listening\""));
        let _ = tx.send(listening);
    });
    // true: it serves; false: stdout closed (it exited); timeout: neither.
    let outcome = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(outcome.is_ok(), "neither exited nor listened within 10 s");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
