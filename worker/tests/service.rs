//! The real binary as a service: run at start, the metrics port, JSON logs, signals, config errors.

mod common;

use std::time::Duration;

use common::{run, sample, Worker};

const WORKER_METRICS: &[&str] = &[
    "worker_jobs_success_total",
    "worker_jobs_failure_total",
    "worker_job_duration_seconds_bucket",
    "worker_job_duration_seconds_sum",
    "worker_job_duration_seconds_count",
    "worker_jobs_skipped_total",
    "worker_job_running",
    "worker_last_success_timestamp_seconds",
    "worker_next_run_timestamp_seconds",
];

const SHARED_METRICS: &[&str] = &[
    "http_connections_open",
    "http_connections_max",
    "http_connections_closed_total",
    "orion_build_info",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

#[test]
fn runs_at_start_serves_health_ready_metrics_and_stops_on_sigterm_within_a_second() {
    let mut w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "20"),
        ("NODE_ENV", "uat"),
    ]);
    let started = w.wait_log("worker started", Duration::from_secs(5));
    assert_eq!(started["schedule"], "@yearly");
    assert_eq!(started["zone"], "UTC");
    assert_eq!(started["saffron"], "0 0 1 1 *");
    assert!(started["next_run"]
        .as_str()
        .unwrap()
        .contains("-01-01T00:00:00"));
    let done = w.wait_log("job completed", Duration::from_secs(5));
    assert!(done["records"].is_u64() && done["duration_ms"].as_f64().unwrap() >= 20.0);
    let job = w
        .log_with("updating timestamps of today's records")
        .unwrap();
    assert!(job["date"].as_str().unwrap().len() == 10);
    assert_eq!(w.log_with("job started").unwrap()["trigger"], "start");
    for line in w.logs() {
        assert_eq!(line["service"], "worker");
        assert_eq!(line["environment"], "uat");
        assert!(line["timestamp"].is_string() && line["level"].is_string());
    }

    let (status, body) = w.get("/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "worker");
    assert_eq!(w.get("/ready").unwrap().0, 200);
    assert_eq!(w.get("/nope").unwrap().0, 404);

    let (status, metrics) = w.get("/metrics").unwrap();
    assert_eq!(status, 200);
    for name in WORKER_METRICS.iter().chain(SHARED_METRICS) {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert_eq!(sample(&metrics, "worker_jobs_success_total"), Some(1.0));
    assert_eq!(sample(&metrics, "worker_jobs_failure_total"), Some(0.0));
    assert_eq!(sample(&metrics, "worker_job_running"), Some(0.0));
    assert!(sample(&metrics, "worker_last_success_timestamp_seconds").unwrap() > 1.7e9);
    assert!(sample(&metrics, "worker_next_run_timestamp_seconds").unwrap() > 1.7e9);
    assert!(metrics.contains("worker_job_duration_seconds_bucket{le=\"0.01\"}"));
    assert!(metrics.contains("worker_job_duration_seconds_bucket{le=\"600\"}"));
    assert!(metrics.contains("orion_build_info{commit="));
    assert!(metrics.contains("service=\"worker\""));
    // `promtool check metrics` must report nothing. promtool is optional on a workstation,
    // required in CI (a missing tool there is a failure, not a skip).
    orion_shared::testing::assert_promtool_accepts(&metrics);

    w.signal(libc::SIGTERM);
    let (status, took) = w.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM while idle took {took:?}"
    );
    let stopped = w.wait_log("worker stopped", Duration::from_secs(1));
    assert_eq!(stopped["how"], "idle");
    assert_eq!(stopped["exit_code"], 0);
    // The metrics port's handler threads (2 by default) were all joined.
    assert_eq!(stopped["handler_threads"], 2, "{stopped}");
    assert_eq!(stopped["handlers_joined"], 2, "{stopped}");
}

#[test]
fn failures_are_counted_and_logged() {
    let w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "0"),
        ("JOB_FAILURE_RATE", "1"),
    ]);
    let failed = w.wait_log("job failed", Duration::from_secs(5));
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("JOB_FAILURE_RATE"));
    assert_eq!(failed["level"], "error");
    let metrics = w.get("/metrics").unwrap().1;
    assert_eq!(sample(&metrics, "worker_jobs_failure_total"), Some(1.0));
    assert_eq!(sample(&metrics, "worker_jobs_success_total"), Some(0.0));
    assert_eq!(
        sample(&metrics, "worker_last_success_timestamp_seconds"),
        Some(0.0)
    );
}

#[test]
fn run_on_start_false_waits_for_the_schedule() {
    let mut w = Worker::start(&[("CRON_SCHEDULE", "@yearly"), ("RUN_ON_START", "false")]);
    w.wait_log("worker started", Duration::from_secs(5));
    let metrics = w.get("/metrics").unwrap().1;
    assert_eq!(sample(&metrics, "worker_jobs_success_total"), Some(0.0));
    // Stop it and read its log to the end: no job ran at any point.
    w.signal(libc::SIGTERM);
    let (status, _) = w.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    w.wait_log("worker stopped", Duration::from_secs(5));
    assert!(w.log_with("job started").is_none(), "{:?}", w.logs());
}

#[test]
fn sigterm_during_a_run_lets_the_job_finish() {
    let mut w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "1500"),
        ("SHUTDOWN_TIMEOUT", "10s"),
    ]);
    w.wait_log("job started", Duration::from_secs(5));
    w.signal(libc::SIGTERM);
    w.wait_log(
        "stopping: waiting for the running job to finish",
        Duration::from_secs(2),
    );
    assert_eq!(w.get("/ready").unwrap().0, 503, "not ready once stopping");
    assert_eq!(
        w.get("/health").unwrap().0,
        200,
        "still alive while finishing"
    );
    let (status, _) = w.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    // The last line; the collector may still be reading it after the exit.
    let stopped = w.wait_log("worker stopped", Duration::from_secs(5));
    assert!(w.log_with("job completed").is_some());
    assert_eq!(stopped["how"], "after the running job finished");
}

#[test]
fn sigterm_during_a_run_gives_up_after_the_shutdown_timeout() {
    let mut w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "60000"),
        ("SHUTDOWN_TIMEOUT", "1s"),
    ]);
    w.wait_log("job started", Duration::from_secs(5));
    w.signal(libc::SIGTERM);
    let (status, took) = w.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "did not wait for the job: {took:?}"
    );
    w.wait_log(
        "stopping: shutdown timeout reached; abandoning the running job",
        Duration::from_secs(1),
    );
    // The last line: once it is read, every line is, and none says completed.
    let stopped = w.wait_log("worker stopped", Duration::from_secs(5));
    assert!(w.log_with("job completed").is_none());
    assert_eq!(stopped["how"], "abandoning the running job");
}

#[test]
fn shutdown_delay_keeps_the_metrics_port_serving_with_ready_at_503() {
    // The same stop protocol as the API's (orion_shared::service::serve):
    // readiness fails at once, serving goes on for SHUTDOWN_DELAY.
    let mut w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("RUN_ON_START", "false"),
        ("SHUTDOWN_DELAY", "1s"),
    ]);
    w.wait_log("worker started", Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    w.signal(libc::SIGTERM);
    w.wait_log(
        "shutting down: readiness is 503, still serving for the delay",
        Duration::from_secs(2),
    );
    assert_eq!(w.get("/ready").unwrap().0, 503);
    assert_eq!(
        w.get("/health").unwrap().0,
        200,
        "still serving during the delay"
    );
    let (status, _) = w.wait_exit(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let stopped = w.wait_log("worker stopped", Duration::from_secs(5));
    assert_eq!(stopped["how"], "idle");
    // A probe's 503 while stopping is the stop protocol, not a fault:
    // nothing is logged above info, however often it is asked.
    let loud: Vec<serde_json::Value> = w
        .logs()
        .into_iter()
        .filter(|l| l["level"] == "warn" || l["level"] == "error")
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "60000"),
        ("SHUTDOWN_TIMEOUT", "60s"),
    ]);
    w.wait_log("job started", Duration::from_secs(5));
    w.signal(libc::SIGTERM);
    w.wait_log(
        "stopping: waiting for the running job to finish",
        Duration::from_secs(2),
    );
    w.signal(libc::SIGTERM);
    let (status, took) = w.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_job_timeout_is_a_failure() {
    let w = Worker::start(&[
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "60000"),
        ("JOB_TIMEOUT", "300ms"),
    ]);
    let timed_out = w.wait_log("job failed: timed out; abandoned", Duration::from_secs(5));
    assert_eq!(timed_out["level"], "error");
    // The stub honours cancellation: its thread returns and nothing is left running.
    w.wait_log(
        "abandoned run finally returned (already counted as failed)",
        Duration::from_secs(15),
    );
    let metrics = w.get("/metrics").unwrap().1;
    assert_eq!(sample(&metrics, "worker_jobs_failure_total"), Some(1.0));
    assert_eq!(sample(&metrics, "worker_job_running"), Some(0.0));
    assert_eq!(w.get("/health").unwrap().0, 200);
}

#[test]
fn config_errors_exit_2_with_one_line_naming_the_variable() {
    for (var, value, needle) in [
        (
            "CRON_SCHEDULE",
            "61 * * * *",
            "minute field \"61\": value out of range 0-59",
        ),
        ("CRON_SCHEDULE", "0 0 31 2 *", "never fires"),
        (
            "CRON_SCHEDULE",
            "* * * * 1-5 extra",
            "6 fields instead of 5",
        ),
        ("TZ", "Mars/Olympus", "IANA time zone"),
        ("METRICS_PORT", "70000", "1-65535"),
        (
            "RUN_ON_START",
            "maybe",
            "true or false (also 1 or 0, yes or no, on or off; any case)",
        ),
        ("JOB_DURATION_MS", "fast", "integer"),
        ("JOB_FAILURE_RATE", "2", "0-1"),
        ("JOB_TIMEOUT", "0", "a duration 100ms-24h"),
        ("LOG_LEVEL", "loud", "error"),
        ("SHUTDOWN_TIMEOUT", "soon", "duration"),
    ] {
        // A free port, so a value wrongly accepted cannot collide with anything.
        let port = common::free_port().to_string();
        let mut env = vec![(var, value)];
        if var != "METRICS_PORT" {
            env.push(("METRICS_PORT", &port));
        }
        let out = common::run_timeout(&[], &env, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {var}=\"{value}\"")) && stderr.contains(needle),
            "{var}={value}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "nothing logged before the config is valid"
        );
    }
}

/// An empty value (or blanks) is refused like any bad value, for every variable `--help` lists
/// except `TZ`, whose empty meaning (UTC) `--help` declares: `CRON_SCHEDULE=''` no longer runs
/// the job every minute.
#[test]
fn empty_values_exit_2_except_where_declared() {
    let vars = orion_worker::config::vars();
    for var in vars.iter().filter(|v| v.empty.is_none()) {
        for value in ["", " "] {
            let port = common::free_port().to_string();
            let mut env = vec![(var.name, value)];
            if var.name != "METRICS_PORT" {
                env.push(("METRICS_PORT", &port));
            }
            let out = common::run_timeout(&[], &env, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{}={value:?}: {stderr}",
                var.name
            );
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.starts_with(&format!(
                    "orion-worker: configuration error: invalid {}={value:?}: empty; set a value or unset it for the default (expected ",
                    var.name
                )),
                "{stderr}"
            );
        }
    }
    let declared: Vec<&str> = vars
        .iter()
        .filter(|v| v.empty.is_some())
        .map(|v| v.name)
        .collect();
    assert_eq!(declared, ["TZ"]);
    let w = Worker::start(&[("TZ", ""), ("CRON_SCHEDULE", "@yearly")]);
    let started = w.wait_log("worker started", Duration::from_secs(5));
    assert_eq!(started["zone"], "UTC");
    let bad = run(&["healthcheck"], &[("METRICS_PORT", "")]);
    assert_eq!(bad.status.code(), Some(2));
}

/// The documented `LOG_LEVEL=warn,orion_worker=debug`: the worker's own lines (job runs at
/// info) and its request lines (probes at debug), nothing at info from the shared code; and
/// `duration_ms` with at most three decimals.
#[test]
fn documented_log_level_example_shows_job_and_request_lines() {
    let w = Worker::start_unlogged(&[
        ("LOG_LEVEL", "warn,orion_worker=debug"),
        ("CRON_SCHEDULE", "@yearly"),
        ("JOB_DURATION_MS", "5"),
    ]);
    w.wait_log("job completed", Duration::from_secs(5));
    w.get("/health");
    let request = w.wait_log("request", Duration::from_secs(5));
    assert_eq!(request["route"], "/health");
    assert_eq!(request["level"], "debug");
    assert!(w.log_with("serving /health, /ready and /metrics").is_none());
    let lines = w.stdout_lines();
    let mut durations = 0;
    for raw in lines
        .iter()
        .filter_map(|l| common::raw_number(l, "duration_ms"))
    {
        common::assert_millis_text(raw);
        durations += 1;
    }
    assert!(
        durations >= 2,
        "job and request lines:\n{}",
        lines.join("\n")
    );
}

/// Every command takes no extra argument.
#[test]
fn commands_with_extra_arguments_exit_2() {
    for args in [
        ["healthcheck", "extra"],
        ["--version", "extra"],
        ["--help", "extra"],
    ] {
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "orion-worker: usage error: unexpected argument \"extra\" after {}; see 'orion-worker --help'\n",
                args[0]
            )
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn healthcheck_subcommand() {
    let w = Worker::start(&[("CRON_SCHEDULE", "@yearly")]);
    let port = w.port.to_string();
    let ok = run(&["healthcheck"], &[("METRICS_PORT", &port)]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    drop(w);
    let t = std::time::Instant::now();
    let down = run(
        &["healthcheck"],
        &[("METRICS_PORT", &common::free_port().to_string())],
    );
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    let bad = run(&["healthcheck"], &[("METRICS_PORT", "x")]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn version_and_help() {
    let v = run(&["--version"], &[]);
    assert_eq!(v.status.code(), Some(0));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.starts_with(&format!(
            "orion-worker {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let h = run(&["--help"], &[]);
    assert_eq!(h.status.code(), Some(0));
    let text = String::from_utf8_lossy(&h.stdout);
    for needle in [
        "schedule",
        "healthcheck",
        "CRON_SCHEDULE",
        "JOB_TIMEOUT",
        "METRICS_PORT",
        "SHUTDOWN_DELAY",
        "HTTP_SEND_TIMEOUT",
        "HTTP_PIPELINE_DEPTH",
    ] {
        assert!(text.contains(needle), "{needle} missing from --help");
    }
    // Every variable the configuration reads (the table a unit test compares with what is
    // read), and the exit codes.
    common::assert_help_lists(&text, &orion_worker::config::vars());
    let bad = run(&["frobnicate"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

/// The worker's port is served by the same front: accept errors back off
/// and are counted, and the worker lives on.
#[test]
fn accept_errors_do_not_end_the_worker() {
    let mut w = common::ServiceProcess::start(
        &common::SPEC,
        &[("CRON_SCHEDULE", "@yearly"), ("RUN_ON_START", "false")],
    );
    orion_shared::testing::assert_accept_errors_back_off(&mut w);
}
