//! The worker's configuration, from the environment, validated before anything starts.
//!
//! A bad value stops the worker with exit code 2 and one line naming the variable, the value and
//! what is allowed — in particular a cron expression that is wrong or can never fire, or an unknown
//! zone: a worker that silently never runs its job is worse than one that refuses to start.

use std::time::Duration;

use chrono_tz::Tz;
use orion_shared::config::{ConfigError, Env, Var};
use orion_shared::service::{common_vars, CommonConfig};

use crate::schedule::{self, Schedule};

pub const DEFAULT_METRICS_PORT: u16 = 9091;
pub const DEFAULT_SCHEDULE: &str = "* * * * *";
pub const DEFAULT_ZONE: &str = "UTC";
/// Long enough for a real database job on a busy day, short enough that a hung run is noticed
/// (and a minute schedule is not blocked for an hour).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// The metrics/health port serves a scraper and two probes: two handler threads are plenty and
/// keep the worker's memory small (the API's default scales with CPUs).
pub const DEFAULT_HTTP_THREADS: usize = 2;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub common: CommonConfig,
    pub metrics_port: u16,
    pub schedule: Schedule,
    pub run_on_start: bool,
    pub job_duration: Duration,
    pub job_failure_rate: f64,
    pub job_timeout: Duration,
}

/// The variables the worker reads of its own; [`vars`] adds the shared ones.
pub const WORKER_VARS: &[Var] = &[
    Var {
        name: "METRICS_PORT",
        default: "9091",
        meaning: "port of /health, /ready and /metrics (1-65535)",
        empty: None,
    },
    Var {
        name: "CRON_SCHEDULE",
        default: DEFAULT_SCHEDULE,
        meaning: "when the job runs: crontab(5) 5 fields or a macro (@daily ...)",
        empty: None,
    },
    Var {
        name: "TZ",
        default: DEFAULT_ZONE,
        meaning: "IANA zone the schedule is read in (Europe/Berlin)",
        // What C programs do: tzset(3) (FreeBSD: "If TZ appears in the environment but its
        // value is a null string, Coordinated Universal Time (UTC) is used"; the glibc manual,
        // "TZ Variable": "when the value of TZ is the empty string, the GNU C Library uses UTC").
        empty: Some("UTC, as in tzset(3)"),
    },
    Var {
        name: "RUN_ON_START",
        default: "true",
        meaning: "run the job once at start (true/false, 1/0, yes/no, on/off)",
        empty: None,
    },
    Var {
        name: "JOB_DURATION_MS",
        default: "200",
        meaning: "how long the stub job takes, in ms (0-86400000)",
        empty: None,
    },
    Var {
        name: "JOB_FAILURE_RATE",
        default: "0",
        meaning: "probability that a stub run fails (0-1)",
        empty: None,
    },
    Var {
        name: "JOB_TIMEOUT",
        default: "5m",
        meaning: "a longer run counts as failed and is abandoned (100ms-24h)",
        empty: None,
    },
];

/// Every variable the worker reads, as `--help` lists them: [`WORKER_VARS`], then the shared
/// ones, with the worker's own default for `HTTP_THREADS` and its own `LOG_LEVEL` example.
pub fn vars() -> Vec<Var> {
    let mut vars = WORKER_VARS.to_vec();
    vars.extend(common_vars().into_iter().map(|v| match v.name {
        "HTTP_THREADS" => Var { default: "2", ..v },
        "LOG_LEVEL" => Var {
            meaning: "off|error|warn|info|debug|trace, or directives: warn,orion_worker=debug",
            ..v
        },
        _ => v,
    }));
    vars
}

/// `TZ` as an IANA zone (the error names `TZ`); unset or empty is UTC (see [`WORKER_VARS`]).
pub fn zone_from_env(env: &Env) -> Result<Tz, ConfigError> {
    match env.raw("TZ") {
        Some(v) if !v.trim().is_empty() => {
            schedule::parse_zone(v).map_err(|expected| ConfigError::new("TZ", v, expected))
        }
        _ => Ok(Tz::UTC),
    }
}

/// `CRON_SCHEDULE` in `zone` (the error names `CRON_SCHEDULE` and the field at fault); unset is
/// [`DEFAULT_SCHEDULE`], empty is refused.
pub fn schedule_from_env(env: &Env, zone: Tz) -> Result<Schedule, ConfigError> {
    let expr = env
        .text("CRON_SCHEDULE", schedule::EXPECTED)?
        .unwrap_or(DEFAULT_SCHEDULE);
    Schedule::parse(expr, zone).map_err(|e| {
        ConfigError::new(
            "CRON_SCHEDULE",
            env.raw("CRON_SCHEDULE").unwrap_or(expr),
            schedule::expected_text(&e),
        )
    })
}

impl WorkerConfig {
    pub fn from_env(env: &Env) -> Result<WorkerConfig, ConfigError> {
        let mut common = CommonConfig::from_env(env)?;
        if env.raw("HTTP_THREADS").is_none() {
            common.http.threads = DEFAULT_HTTP_THREADS;
        }
        let metrics_port = env.port("METRICS_PORT", DEFAULT_METRICS_PORT)?;
        let zone = zone_from_env(env)?;
        let schedule = schedule_from_env(env, zone)?;
        let run_on_start = env.bool("RUN_ON_START", true)?;
        let job_duration =
            Duration::from_millis(env.int("JOB_DURATION_MS", 200, 0, 24 * 3600 * 1000)?);
        let job_failure_rate = env.float("JOB_FAILURE_RATE", 0.0, 0.0, 1.0)?;
        let job_timeout = env.duration_in(
            "JOB_TIMEOUT",
            DEFAULT_JOB_TIMEOUT,
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        )?;
        Ok(WorkerConfig {
            common,
            metrics_port,
            schedule,
            run_on_start,
            job_duration,
            job_failure_rate,
            job_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        WorkerConfig::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = WorkerConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.metrics_port, 9091);
        assert_eq!(c.schedule.expr(), "* * * * *");
        assert_eq!(c.schedule.zone().name(), "UTC");
        assert!(c.run_on_start);
        assert_eq!(c.job_duration, Duration::from_millis(200));
        assert_eq!(c.job_failure_rate, 0.0);
        assert_eq!(c.job_timeout, Duration::from_secs(300));
        assert_eq!(c.common.http.threads, 2);
    }

    #[test]
    fn values() {
        let env = Env::from_pairs([
            ("METRICS_PORT", "9191"),
            ("CRON_SCHEDULE", " 0 0 * * * "),
            ("TZ", "Europe/Berlin"),
            ("RUN_ON_START", "false"),
            ("JOB_DURATION_MS", "5"),
            ("JOB_FAILURE_RATE", "0.5"),
            ("JOB_TIMEOUT", "2m"),
            ("HTTP_THREADS", "3"),
        ]);
        let c = WorkerConfig::from_env(&env).unwrap();
        assert_eq!(c.metrics_port, 9191);
        assert_eq!(c.schedule.expr(), "0 0 * * *");
        assert_eq!(c.schedule.zone().name(), "Europe/Berlin");
        assert!(!c.run_on_start);
        assert_eq!(c.job_duration, Duration::from_millis(5));
        assert_eq!(c.job_failure_rate, 0.5);
        assert_eq!(c.job_timeout, Duration::from_secs(120));
        assert_eq!(c.common.http.threads, 3);
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("METRICS_PORT", "abc"),
            ("METRICS_PORT", "70000"),
            ("CRON_SCHEDULE", "61 * * * *"),
            ("CRON_SCHEDULE", "0 0 31 2 *"),
            ("TZ", "Mars/Olympus"),
            ("RUN_ON_START", "maybe"),
            ("JOB_DURATION_MS", "-1"),
            ("JOB_FAILURE_RATE", "1.5"),
            ("JOB_TIMEOUT", "0"),
            ("JOB_TIMEOUT", "forever"),
            ("LOG_LEVEL", "loud"),
        ] {
            let e = err(&[(var, value)]);
            assert_eq!(e.var, var, "{var}={value}: {e}");
        }
        assert_eq!(
            err(&[("CRON_SCHEDULE", "61 * * * *")]).to_string(),
            "invalid CRON_SCHEDULE=\"61 * * * *\": expected a cron expression: 5 fields (minute hour day-of-month month day-of-week) or one of @yearly @annually @monthly @weekly @daily @midnight @hourly; minute field \"61\": value out of range 0-59"
        );
        assert!(err(&[("RUN_ON_START", "maybe")])
            .to_string()
            .ends_with("expected true or false (also 1 or 0, yes or no, on or off; any case)"));
    }

    /// Empty is refused like any bad value, for every variable but `TZ` (whose empty meaning,
    /// UTC, the table declares and `--help` states).
    #[test]
    fn empty_values() {
        for var in vars() {
            for empty in ["", "  "] {
                let env = Env::from_pairs([(var.name, empty)]);
                let result = WorkerConfig::from_env(&env);
                match var.empty {
                    None => {
                        let e = result.unwrap_err();
                        assert!(e.var == var.name && e.empty, "{}={empty:?}: {e}", var.name);
                        assert!(e.to_string().contains("set a value or unset it"), "{e}");
                    }
                    Some(_) => assert!(result.is_ok(), "{}={empty:?}", var.name),
                }
            }
        }
        let c = WorkerConfig::from_env(&Env::from_pairs([("TZ", "")])).unwrap();
        assert_eq!(c.schedule.zone(), Tz::UTC);
        let declared: Vec<&str> = vars()
            .iter()
            .filter(|v| v.empty.is_some())
            .map(|v| v.name)
            .collect();
        assert_eq!(declared, ["TZ"]);
    }

    /// `--help` is rendered from [`vars`]: it lists exactly what the configuration reads, and
    /// each default it shows is the one in force.
    #[test]
    fn the_table_is_what_is_read_and_its_defaults_hold() {
        orion_shared::testing::check_var_table(&vars(), |env| {
            WorkerConfig::from_env(env).map(|c| format!("{c:?}"))
        });
    }
}
