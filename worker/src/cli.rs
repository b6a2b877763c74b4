//! Command line: the service by default, plus `schedule`, `healthcheck`, `--version`, `--help`.
//!
//! No argument parser crate: four commands and three options do not justify one in a binary
//! that aims at a few hundred KiB.

use chrono::{DateTime, SecondsFormat, Utc};
use orion_shared::config::{exit_on_error, render_vars, ConfigError, Env, EXIT_CODES_HELP};

use crate::config::{self, WorkerConfig, DEFAULT_METRICS_PORT};
use crate::schedule::{self, Schedule};

const BINARY: &str = "orion-worker";
/// Exit code for usage and configuration errors (same as a bad environment variable).
const EXIT_USAGE: i32 = orion_shared::config::EXIT_CONFIG;

const USAGE: &str = "\
orion-worker: runs the \"update today's records\" job on a cron schedule, with
/health, /ready and /metrics on METRICS_PORT.

Usage:
  orion-worker                 run the worker (configured by the environment below)
  orion-worker schedule ['EXPR'] [--tz ZONE] [--from RFC3339] [-n N]
                               print the next N (default 5, at most 10000) fire instants
                               after --from (default now) of EXPR (default $CRON_SCHEDULE)
                               in ZONE (default $TZ, else UTC); quote EXPR, the shell
                               expands *; options also as --tz=ZONE, --count N
  orion-worker healthcheck     exit 0 if http://127.0.0.1:$METRICS_PORT/health answers
                               200 within 2 s, else 1 (for images without curl or wget)
  orion-worker --version | -V  print version and commit
  orion-worker --help | -h     print this help
A command takes no other arguments than these.

Schedules are crontab(5): 5 fields (minute hour day-of-month month day-of-week) or
@yearly @annually @monthly @weekly @daily @midnight @hourly; day-of-week 0 and 7 are
Sunday; names JAN-DEC and SUN-SAT; ranges, lists and steps.

";

/// `--help`: the usage, every variable the worker reads (from [`config::vars`], the table its
/// configuration is tested against) and the exit codes.
pub fn help() -> String {
    format!("{USAGE}{}\n{EXIT_CODES_HELP}", render_vars(&config::vars()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve,
    Schedule(ScheduleArgs),
    Healthcheck,
    Version,
    Help,
}

/// An option's value and the option as the user typed it (`-n` or `--count`), which its
/// error names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub typed: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduleArgs {
    pub expr: Option<String>,
    pub tz: Option<Given>,
    pub from: Option<Given>,
    pub count: Option<Given>,
}

/// Parses the arguments (without the program name); an error is the usage error's text.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::Serve);
    };
    let rest = &args[1..];
    let alone = |cmd: Command| match rest.first() {
        None => Ok(cmd),
        Some(extra) => Err(format!("unexpected argument {extra:?} after {first}")),
    };
    match first.as_str() {
        "--version" | "-V" | "version" => alone(Command::Version),
        "--help" | "-h" | "help" => alone(Command::Help),
        "healthcheck" => alone(Command::Healthcheck),
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
            f if f.starts_with('-') && f.len() > 1 => {
                return Err(format!(
                    "unknown option {f:?} for schedule (expected --tz, --from, -n or --count)"
                ))
            }
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
        *slot = Some(Given {
            typed: flag.to_string(),
            value,
        });
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
            print!("{}", help());
            0
        }
        Err(why) => {
            eprintln!("{BINARY}: usage error: {why}; see '{BINARY} --help'");
            EXIT_USAGE
        }
    }
}

/// What `--from` accepts.
const FROM_EXPECTED: &str =
    "an RFC 3339 time with its offset, such as 2026-03-08T00:00:00-05:00 or 2026-03-08T05:00:00Z";

/// The `schedule` subcommand's output lines: the next fire instants, RFC 3339 with the zone's
/// UTC offset. An error names what was typed where it was typed: the argument (`EXPR`, `--tz`,
/// ...) or, for what comes from the environment, the variable, with the service's own text.
pub fn schedule_lines(
    a: &ScheduleArgs,
    env: &Env,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ConfigError> {
    let zone = match &a.tz {
        Some(tz) => schedule::parse_zone(&tz.value)
            .map_err(|expected| ConfigError::arg(&tz.typed, &tz.value, expected))?,
        None => config::zone_from_env(env)?,
    };
    let schedule = match &a.expr {
        Some(expr) => Schedule::parse(expr, zone)
            .map_err(|e| ConfigError::arg("EXPR", expr, schedule::expected_text(&e)))?,
        None => config::schedule_from_env(env, zone)?,
    };
    let from = match &a.from {
        None => now,
        Some(f) => DateTime::parse_from_rfc3339(f.value.trim())
            .map_err(|_| ConfigError::arg(&f.typed, &f.value, FROM_EXPECTED))?
            .to_utc(),
    };
    let count = match &a.count {
        None => 5,
        Some(n) => n
            .value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ConfigError::arg(&n.typed, &n.value, "a count 1-10000"))?,
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
    use orion_shared::config::Origin;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn given(typed: &str, value: &str) -> Option<Given> {
        Some(Given {
            typed: typed.into(),
            value: value.into(),
        })
    }

    #[test]
    fn commands() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&args(&["--version"])), Ok(Command::Version));
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&args(&["healthcheck"])), Ok(Command::Healthcheck));
        assert!(parse(&args(&["serve"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
        for cmd in [
            "healthcheck",
            "--version",
            "-V",
            "version",
            "--help",
            "-h",
            "help",
        ] {
            assert_eq!(
                parse(&args(&[cmd, "extra"])),
                Err(format!("unexpected argument \"extra\" after {cmd}"))
            );
        }
    }

    #[test]
    fn schedule_options() {
        let parsed = parse(&args(&[
            "schedule",
            "0 9 * * 1-5",
            "--tz",
            "Europe/Berlin",
            "--from=2026-01-01T00:00:00Z",
            "--count",
            "3",
        ]));
        assert_eq!(
            parsed,
            Ok(Command::Schedule(ScheduleArgs {
                expr: Some("0 9 * * 1-5".into()),
                tz: given("--tz", "Europe/Berlin"),
                from: given("--from", "2026-01-01T00:00:00Z"),
                count: given("--count", "3"),
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
            tz: given("--tz", "UTC"),
            count: given("-n", "1"),
            ..Default::default()
        };
        assert_eq!(
            schedule_lines(&a, &env, now).unwrap(),
            ["2026-03-08T00:00:00+00:00"]
        );
    }

    /// An error names what the user typed where it was typed: an argument as typed, a
    /// variable when the value came from the environment.
    #[test]
    fn schedule_errors_name_the_argument_or_the_variable() {
        let now = Utc::now();
        let bad = |a: ScheduleArgs, env: &[(&str, &str)]| {
            let e = schedule_lines(&a, &Env::from_pairs(env.iter().copied()), now).unwrap_err();
            (e.var.clone(), e.origin)
        };
        let expr = |e: &str| ScheduleArgs {
            expr: Some(e.into()),
            ..Default::default()
        };
        let arg = |name: &str| (name.to_string(), Origin::Arg);
        let var = |name: &str| (name.to_string(), Origin::Var);
        assert_eq!(bad(expr("61 * * * *"), &[]), arg("EXPR"));
        assert_eq!(bad(expr("0 0 31 2 *"), &[]), arg("EXPR"));
        assert_eq!(
            bad(expr("nonsense"), &[("CRON_SCHEDULE", "@daily")]),
            arg("EXPR")
        );
        assert_eq!(
            bad(ScheduleArgs::default(), &[("CRON_SCHEDULE", "nonsense")]),
            var("CRON_SCHEDULE")
        );
        assert_eq!(
            bad(ScheduleArgs::default(), &[("CRON_SCHEDULE", "")]),
            var("CRON_SCHEDULE")
        );
        let tz = |value: &str| ScheduleArgs {
            tz: given("--tz", value),
            ..expr("@daily")
        };
        assert_eq!(bad(tz("Nowhere/Land"), &[]), arg("--tz"));
        assert_eq!(bad(tz(""), &[]), arg("--tz"));
        assert_eq!(bad(expr("@daily"), &[("TZ", "Nowhere/Land")]), var("TZ"));
        assert_eq!(
            bad(
                ScheduleArgs {
                    from: given("--from", "yesterday"),
                    ..expr("@daily")
                },
                &[]
            ),
            arg("--from")
        );
        for typed in ["-n", "--count"] {
            assert_eq!(
                bad(
                    ScheduleArgs {
                        count: given(typed, "0"),
                        ..expr("@daily")
                    },
                    &[]
                ),
                arg(typed)
            );
        }
        // The argument's text is the variable's, after its own name.
        let as_arg = schedule_lines(&expr("61 * * * *"), &Env::default(), now).unwrap_err();
        let as_var = schedule_lines(
            &ScheduleArgs::default(),
            &Env::from_pairs([("CRON_SCHEDULE", "61 * * * *")]),
            now,
        )
        .unwrap_err();
        assert_eq!(as_arg.expected, as_var.expected);
        assert!(as_arg
            .to_string()
            .starts_with("invalid EXPR argument \"61 * * * *\": expected"));
        // TZ='' is UTC, as for the service.
        let empty_tz = schedule_lines(&expr("@daily"), &Env::from_pairs([("TZ", "")]), now);
        assert!(empty_tz.unwrap()[0].ends_with("+00:00"));
    }

    #[test]
    fn help_lists_every_variable_and_the_exit_codes() {
        orion_shared::testing::assert_help_lists(&help(), &config::vars());
    }
}
