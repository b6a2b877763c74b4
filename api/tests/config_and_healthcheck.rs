//! Invalid configuration (empty included) exits 2 with one line naming the
//! variable; a command with extra arguments exits 2; `--help` lists every
//! variable and the exit codes; the documented `LOG_LEVEL` examples show the
//! request lines; the healthcheck subcommand's exit codes.
mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run_with(env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    run_args(&[], env)
}

/// The binary with `args` and only `env`: exit code, stderr, time taken. A
/// process still running after 5 s (a bad value wrongly accepted, so the
/// service started) is killed: code `None`.
fn run_args(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
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

/// An empty value (or blanks) is refused like any bad value, for every
/// variable `--help` lists, so an empty ConfigMap entry cannot silently mean
/// the default; the healthcheck's `PORT` too.
#[test]
fn empty_values_exit_2_naming_the_variable() {
    let vars = orion_api::config::vars();
    assert!(vars.len() >= 12, "{vars:?}");
    for var in vars {
        for value in ["", "   "] {
            let port = free_port().to_string();
            let mut env = vec![(var.name, value)];
            if var.name != "PORT" {
                // A value wrongly accepted starts the service on a free port
                // (killed after 5 s: no exit code).
                env.push(("PORT", &port));
            }
            let (code, stderr, took) = run_with(&env);
            assert_eq!(code, Some(2), "{}={value:?}: {stderr}", var.name);
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{stderr}");
            let start = format!(
                "orion-api: configuration error: invalid {}={value:?}: empty; set a value or unset it for the default (expected ",
                var.name
            );
            assert!(lines[0].starts_with(&start), "{stderr}");
            assert!(took < Duration::from_secs(2));
        }
    }
    let (code, stderr, _) = run_args(&["healthcheck"], &[("PORT", "")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("invalid PORT=\"\": empty"), "{stderr}");
}

/// Every command takes no extra argument: `healthcheck extra` is a usage
/// error (exit 2, one line naming it), not a healthcheck.
#[test]
fn commands_with_extra_arguments_exit_2() {
    for args in [
        ["healthcheck", "extra"],
        ["--version", "extra"],
        ["--help", "extra"],
        ["-h", "extra"],
    ] {
        let out = Command::new(BIN).args(args).env_clear().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "orion-api: usage error: unexpected argument \"extra\" after {}; see 'orion-api --help'\n",
                args[0]
            )
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let (code, stderr, _) = run_args(&["--bogus"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown command \"--bogus\""), "{stderr}");
}

/// `--help` lists every variable the configuration reads (the table a unit
/// test compares with what is read) and the exit codes.
#[test]
fn help_lists_every_variable_and_the_exit_codes() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    orion_shared::testing::assert_help_lists(&text, &orion_api::config::vars());
    for name in [
        "HTTP_SEND_TIMEOUT",
        "HTTP_PIPELINE_DEPTH",
        "PORT",
        "LOG_LEVEL",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

/// The request lines of `lines`, parsed, with the raw text of their `duration_ms`.
fn request_lines(lines: &[String]) -> Vec<(serde_json::Value, String)> {
    lines
        .iter()
        .filter(|l| l.contains("\"message\":\"request\""))
        .map(|l| {
            let raw = orion_shared::testing::raw_number(l, "duration_ms").unwrap();
            (serde_json::from_str(l).unwrap(), raw.to_string())
        })
        .collect()
}

/// The configuration reference's `LOG_LEVEL` examples, on the real binary:
/// `warn,orion_api=debug` shows every request line of the API (probes at
/// debug too) and nothing at info from elsewhere; `warn,orion_api::access=info`
/// shows requests but not probes. `duration_ms` has at most three decimals.
#[test]
fn documented_log_level_examples_show_the_request_lines() {
    let mut api = Api::start_unlogged(&[("LOG_LEVEL", "warn,orion_api=debug")]);
    api.get("/");
    api.get("/health");
    let lines = api.stop_and_collect();
    let requests = request_lines(&lines);
    for route in ["/", "/health"] {
        assert!(
            requests
                .iter()
                .any(|(v, _)| v["route"] == route && v["status"] == 200),
            "no request line for {route}:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"message\":\"api listening\"")),
        "info from orion_shared shown:\n{}",
        lines.join("\n")
    );
    for (_, raw) in &requests {
        orion_shared::testing::assert_millis_text(raw);
    }

    let mut api = Api::start_unlogged(&[("LOG_LEVEL", "warn,orion_api::access=info")]);
    api.get("/");
    api.get("/health");
    let lines = api.stop_and_collect();
    let requests = request_lines(&lines);
    assert!(
        requests.iter().any(|(v, _)| v["route"] == "/"),
        "{}",
        lines.join("\n")
    );
    assert!(
        !requests.iter().any(|(v, _)| v["route"] == "/health"),
        "a probe logged at info:\n{}",
        lines.join("\n")
    );
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
