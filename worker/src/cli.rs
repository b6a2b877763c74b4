//! Command line: the service by default, plus `schedule`, `healthcheck`, `--version`, `--help`.
//!
//! No argument parser crate: four commands and three options do not justify one in a binary
//! that aims at a few hundred KiB.

use chrono::{DateTime, SecondsFormat, Utc};
use orion_shared::config::{exit_on_error, ConfigError, Env};

use crate::config::{self, WorkerConfig, DEFAULT_METRICS_PORT, DEFAULT_SCHEDULE, DEFAULT_ZONE};

const BINARY: &str = "orion-worker";
/// Exit code for usage and configuration errors (same as a bad environment variable).
const EXIT_USAGE: i32 = orion_shared::config::EXIT_CONFIG;

const HELP: &str = "\
orion-worker: runs the \"update today's records\" job on a cron schedule, with
/health, /ready and /metrics on METRICS_PORT.

Usage:
  orion-worker                 run the worker (configured by the environment below)
  orion-worker schedule ['EXPR'] [--tz ZONE] [--from RFC3339] [-n N]
                               print the next N (default 5) fire instants after --from
                               (default now) of EXPR (default $CRON_SCHEDULE) in ZONE
                               (default $TZ, else UTC); quote EXPR, the shell expands *
  orion-worker healthcheck     exit 0 if http://127.0.0.1:$METRICS_PORT/health answers
                               200 within 2 s, else 1 (for images without curl or wget)
  orion-worker --version | --help

Schedules are crontab(5): 5 fields (minute hour day-of-month month day-of-week) or
@yearly @annually @monthly @weekly @daily @midnight @hourly; day-of-week 0 and 7 are
Sunday; names JAN-DEC and SUN-SAT; ranges, lists and steps.

Environment (defaults): METRICS_PORT (9091), CRON_SCHEDULE (* * * * *), TZ (UTC),
  RUN_ON_START (true), JOB_DURATION_MS (200), JOB_FAILURE_RATE (0), JOB_TIMEOUT (5m),
  NODE_ENV or APP_ENV (development), LOG_LEVEL (info), SHUTDOWN_DELAY (0s),
  SHUTDOWN_TIMEOUT (10s), HTTP_THREADS (2), HTTP_HEADER_TIMEOUT (10s),
  HTTP_IDLE_TIMEOUT (75s), HTTP_MAX_CONNECTIONS (512).

Exit codes: 0 success; 1 runtime failure or unhealthy; 2 bad configuration or usage;
  130 a second shutdown signal.
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Schedule(ScheduleArgs),
    Healthcheck,
    Version,
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduleArgs {
    pub expr: Option<String>,
    pub tz: Option<String>,
    pub from: Option<String>,
    pub count: Option<String>,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::Serve);
    };
    let rest = &args[1..];
    let no_more = |cmd: Command| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("unexpected argument {:?}", rest[0]))
        }
    };
    match first.as_str() {
        "--version" | "-V" | "version" => no_more(Command::Version),
        "--help" | "-h" | "help" => Ok(Command::Help),
        "healthcheck" => no_more(Command::Healthcheck),
        "schedule" => parse_schedule(rest).map(Command::Schedule),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_schedule(args: &[String]) -> Result<ScheduleArgs, String> {
    let mut out = ScheduleArgs::default();
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let slot = match flag {
            "--tz" => &mut out.tz,
            "--from" => &mut out.from,
            "-n" | "--count" => &mut out.count,
            "--" => {
                words.extend(it.by_ref().map(String::as_str));
                break;
            }
            // A lone "-" or a negative number is not a flag; an expression never starts with '-'.
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f:?}")),
            _ => {
                words.push(arg);
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        *slot = Some(value);
    }
    // An unquoted expression arrives as several words: join them back.
    if !words.is_empty() {
        out.expr = Some(words.join(" "));
    }
    Ok(out)
}

/// Runs the command line; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    match parse(&args) {
        Ok(Command::Serve) => {
            let cfg = exit_on_error(BINARY, WorkerConfig::from_env(&Env::from_process()));
            crate::service::run(cfg)
        }
        Ok(Command::Schedule(a)) => {
            let lines = exit_on_error(BINARY, schedule_lines(&a, &Env::from_process(), Utc::now()));
            for line in lines {
                println!("{line}");
            }
            0
        }
        Ok(Command::Healthcheck) => {
            let env = Env::from_process();
            let port = exit_on_error(BINARY, env.port("METRICS_PORT", DEFAULT_METRICS_PORT));
            orion_shared::healthcheck::run(port, "/health")
        }
        Ok(Command::Version) => {
            println!("{}", orion_shared::build_info::version_line(BINARY));
            0
        }
        Ok(Command::Help) => {
            print!("{HELP}");
            0
        }
        Err(why) => {
            eprintln!("{BINARY}: {why}\nRun '{BINARY} --help' for usage.");
            EXIT_USAGE
        }
    }
}

/// The `schedule` subcommand's output lines: the next fire instants, RFC 3339 with the zone's
/// UTC offset. Errors are the service's own configuration errors (same text, exit code 2).
pub fn schedule_lines(
    a: &ScheduleArgs,
    env: &Env,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ConfigError> {
    let zone_name =
        a.tz.clone()
            .or_else(|| env.raw("TZ").map(str::to_string))
            .unwrap_or_else(|| DEFAULT_ZONE.to_string());
    let zone = config::zone(&zone_name)?;
    let expr = a
        .expr
        .clone()
        .or_else(|| env.raw("CRON_SCHEDULE").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
    let schedule = config::cron_schedule(&expr, zone)?;
    let from = match &a.from {
        None => now,
        Some(s) => DateTime::parse_from_rfc3339(s.trim())
            .map_err(|_| {
                ConfigError::new(
                    "--from",
                    s,
                    "an RFC 3339 time such as 2026-03-08T00:00:00-05:00",
                )
            })?
            .to_utc(),
    };
    let count = match &a.count {
        None => 5,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ConfigError::new("-n", s, "a count 1-10000"))?,
    };
    Ok(schedule
        .iter_after(from)
        .take(count)
        .map(|t| {
            t.with_timezone(&zone)
                .to_rfc3339_opts(SecondsFormat::Secs, false)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn commands() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&args(&["healthcheck"])), Ok(Command::Healthcheck));
        assert!(parse(&args(&["healthcheck", "x"])).is_err());
        assert!(parse(&args(&["serve"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn schedule_options() {
        let parsed = parse(&args(&[
            "schedule",
            "0 9 * * 1-5",
            "--tz",
            "Europe/Berlin",
            "--from=2026-01-01T00:00:00Z",
            "-n",
            "3",
        ]));
        assert_eq!(
            parsed,
            Ok(Command::Schedule(ScheduleArgs {
                expr: Some("0 9 * * 1-5".into()),
                tz: Some("Europe/Berlin".into()),
                from: Some("2026-01-01T00:00:00Z".into()),
                count: Some("3".into()),
            }))
        );
        // Unquoted words are joined back into one expression.
        let Ok(Command::Schedule(a)) = parse(&args(&["schedule", "0", "9", "*", "*", "1-5"]))
        else {
            panic!()
        };
        assert_eq!(a.expr.as_deref(), Some("0 9 * * 1-5"));
        assert!(parse(&args(&["schedule", "--tz"])).is_err());
        assert!(parse(&args(&["schedule", "--zone", "UTC"])).is_err());
    }

    #[test]
    fn schedule_output_and_defaults_from_the_environment() {
        let now = DateTime::parse_from_rfc3339("2026-03-07T12:00:00Z")
            .unwrap()
            .to_utc();
        let env = Env::from_pairs([("TZ", "America/New_York"), ("CRON_SCHEDULE", "30 2 * * *")]);
        let lines = schedule_lines(&ScheduleArgs::default(), &env, now).unwrap();
        assert_eq!(
            lines,
            [
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00",
                "2026-03-10T02:30:00-04:00",
                "2026-03-11T02:30:00-04:00",
                "2026-03-12T02:30:00-04:00"
            ]
        );
        let a = ScheduleArgs {
            expr: Some("@daily".into()),
            tz: Some("UTC".into()),
            count: Some("1".into()),
            ..Default::default()
        };
        assert_eq!(
            schedule_lines(&a, &env, now).unwrap(),
            ["2026-03-08T00:00:00+00:00"]
        );
    }

    #[test]
    fn schedule_errors_are_config_errors() {
        let now = Utc::now();
        let env = Env::default();
        let bad = |a: ScheduleArgs| schedule_lines(&a, &env, now).unwrap_err().var;
        let expr = |e: &str| ScheduleArgs {
            expr: Some(e.into()),
            ..Default::default()
        };
        assert_eq!(bad(expr("61 * * * *")), "CRON_SCHEDULE");
        assert_eq!(bad(expr("0 0 31 2 *")), "CRON_SCHEDULE");
        assert_eq!(
            bad(ScheduleArgs {
                tz: Some("Nowhere/Land".into()),
                ..expr("@daily")
            }),
            "TZ"
        );
        assert_eq!(
            bad(ScheduleArgs {
                from: Some("yesterday".into()),
                ..expr("@daily")
            }),
            "--from"
        );
        assert_eq!(
            bad(ScheduleArgs {
                count: Some("0".into()),
                ..expr("@daily")
            }),
            "-n"
        );
    }
}
