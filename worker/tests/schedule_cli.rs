//! `orion-worker schedule`: what operators run before shipping a schedule. Pins the DST rules
//! (cronie's) and the weekday mapping on real 2026 dates, through the real binary.

mod common;

use chrono::{DateTime, Datelike, Weekday};
use common::run;

fn schedule(args: &[&str]) -> Vec<String> {
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    let out = run(&all, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn new_york_2026_spring_forward() {
    // 2026-03-08 02:00 EST -> 03:00 EDT. A fixed-time job in the gap runs once right after it.
    assert_eq!(
        schedule(&[
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2026-03-07T12:00:00-05:00",
            "-n",
            "2"
        ]),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    // A wildcard job follows the real clock: nothing in the gap.
    assert_eq!(
        schedule(&[
            "*/30 * * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2026-03-08T00:50:00-05:00",
            "-n",
            "4"
        ]),
        [
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00"
        ]
    );
}

#[test]
fn new_york_2026_fall_back() {
    // 2026-11-01 02:00 EDT -> 01:00 EST. Fixed-time: once. Wildcard: both passes.
    assert_eq!(
        schedule(&[
            "30 1 * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2026-10-31T12:00:00-04:00",
            "-n",
            "2"
        ]),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(
        schedule(&[
            "@hourly",
            "--tz",
            "America/New_York",
            "--from",
            "2026-11-01T00:20:00-04:00",
            "-n",
            "3"
        ]),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
}

#[test]
fn berlin_2026() {
    // 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    let two_thirty_from = |from| {
        schedule(&[
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            from,
            "-n",
            "2",
        ])
    };
    assert_eq!(
        two_thirty_from("2026-03-28T12:00:00+01:00"),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    assert_eq!(
        two_thirty_from("2026-10-24T12:00:00+02:00"),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    assert_eq!(
        schedule(&[
            "*/30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-10-25T01:50:00+02:00",
            "-n",
            "4"
        ]),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00"
        ]
    );
}

#[test]
fn weekdays() {
    let weekdays = |lines: Vec<String>| -> Vec<Weekday> {
        lines
            .iter()
            .map(|l| DateTime::parse_from_rfc3339(l).unwrap().weekday())
            .collect()
    };
    let days = weekdays(schedule(&[
        "0 9 * * 1-5",
        "--from",
        "2026-01-01T00:00:00Z",
        "-n",
        "60",
    ]));
    assert_eq!(days.len(), 60);
    assert!(
        days.iter()
            .all(|d| !matches!(d, Weekday::Sat | Weekday::Sun)),
        "{days:?}"
    );
    assert!(days.contains(&Weekday::Mon) && days.contains(&Weekday::Fri));
    for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun"] {
        let days = weekdays(schedule(&[
            expr,
            "--from",
            "2026-01-01T00:00:00Z",
            "-n",
            "10",
        ]));
        assert!(days.iter().all(|d| *d == Weekday::Sun), "{expr}: {days:?}");
    }
    // Both day fields restricted: the 13th of the month or any Friday (crontab(5) "either").
    assert_eq!(
        schedule(&["0 0 13 * 5", "--from", "2026-01-01T00:00:00Z", "-n", "4"]),
        [
            "2026-01-02T00:00:00+00:00",
            "2026-01-09T00:00:00+00:00",
            "2026-01-13T00:00:00+00:00",
            "2026-01-16T00:00:00+00:00"
        ]
    );
}

#[test]
fn defaults_come_from_the_environment() {
    let out = run(
        &["schedule", "--from", "2026-03-07T12:00:00Z", "-n", "1"],
        &[("CRON_SCHEDULE", "30 2 * * *"), ("TZ", "America/New_York")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2026-03-08T03:00:00-04:00\n"
    );
    let five = run(&["schedule"], &[]);
    assert_eq!(String::from_utf8_lossy(&five.stdout).lines().count(), 5);
}

/// A bad argument is named as the user typed it, never as the variable it stands in for; its
/// text after the name is the service's own (same "expected ..."). Values from the environment
/// are named as the variable.
#[test]
fn bad_input_exits_2_naming_the_argument_or_the_variable() {
    for (args, named, env) in [
        (
            vec!["schedule", "61 * * * *"],
            "invalid EXPR argument \"61 * * * *\"",
            ("CRON_SCHEDULE", "61 * * * *"),
        ),
        (
            vec!["schedule", "nonsense"],
            "invalid EXPR argument \"nonsense\"",
            ("CRON_SCHEDULE", "nonsense"),
        ),
        (
            vec!["schedule", "0 0 31 2 *"],
            "invalid EXPR argument \"0 0 31 2 *\"",
            ("CRON_SCHEDULE", "0 0 31 2 *"),
        ),
        (
            vec!["schedule", "@daily", "--tz", "Mars/Olympus"],
            "invalid --tz argument \"Mars/Olympus\"",
            ("TZ", "Mars/Olympus"),
        ),
    ] {
        let sub = run(&args, &[]);
        assert_eq!(sub.status.code(), Some(2), "{args:?}");
        let sub = String::from_utf8_lossy(&sub.stderr).into_owned();
        assert_eq!(sub.lines().count(), 1, "{sub}");
        let (prefix, expected) = sub.split_once(": expected ").unwrap();
        assert_eq!(
            prefix,
            format!("orion-worker: usage error: {named}"),
            "{sub}"
        );
        assert!(!sub.contains(env.0), "{args:?} named {}: {sub}", env.0);
        let port = common::free_port().to_string();
        let service = common::run_timeout(
            &[],
            &[env, ("METRICS_PORT", &port)],
            std::time::Duration::from_secs(10),
        );
        assert_eq!(service.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&service.stderr),
            format!(
                "orion-worker: configuration error: invalid {}={:?}: expected {expected}",
                env.0, env.1
            ),
            "{args:?}"
        );
        // Without the argument, the subcommand reads the variable, and names it.
        let from_env = run(&["schedule"], &[env]);
        assert_eq!(from_env.status.code(), Some(2));
        assert_eq!(from_env.stderr, service.stderr, "{args:?}");
    }
    for (args, named) in [
        (
            vec!["schedule", "@daily", "--from", "tomorrow"],
            "invalid --from argument \"tomorrow\"",
        ),
        (
            vec!["schedule", "@daily", "-n", "0"],
            "invalid -n argument \"0\"",
        ),
        (
            vec!["schedule", "@daily", "--count=0"],
            "invalid --count argument \"0\"",
        ),
        (
            vec!["schedule", "@daily", "--tz="],
            "invalid --tz argument \"\"",
        ),
        (
            vec!["schedule", "@daily", "--bogus"],
            "unknown option \"--bogus\"",
        ),
        (vec!["schedule", "@daily", "--tz"], "--tz needs a value"),
    ] {
        let out = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("orion-worker: usage error: {named}")),
            "{args:?}: {stderr}"
        );
    }
}

/// `CRON_SCHEDULE=''` is refused (it used to mean every minute) while `TZ=''` is UTC, as
/// tzset(3) reads it and `--help` says.
#[test]
fn empty_variables_in_the_subcommand() {
    let out = run(&["schedule"], &[("CRON_SCHEDULE", "")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("orion-worker: configuration error: invalid CRON_SCHEDULE=\"\": empty; set a value or unset it"),
        "{stderr}"
    );
    let out = run(
        &[
            "schedule",
            "@daily",
            "--from",
            "2026-03-07T12:00:00Z",
            "-n",
            "1",
        ],
        &[("TZ", "")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2026-03-08T00:00:00+00:00\n"
    );
}
