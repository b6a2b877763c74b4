//! The worker's configuration, from the environment, validated before anything starts.
//!
//! A bad value stops the worker with exit code 2 and one line naming the variable, the value and
//! what is allowed — in particular a cron expression that is wrong or can never fire, or an unknown
//! zone: a worker that silently never runs its job is worse than one that refuses to start.

use std::time::Duration;

use chrono_tz::Tz;
use orion_shared::config::{ConfigError, Env};
use orion_shared::service::CommonConfig;

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

/// `TZ` as an IANA zone (error names `TZ`).
pub fn zone(name: &str) -> Result<Tz, ConfigError> {
    schedule::parse_zone(name).map_err(|expected| ConfigError::new("TZ", name, expected))
}

/// `CRON_SCHEDULE` in `zone` (error names `CRON_SCHEDULE` and the field at fault).
pub fn cron_schedule(expr: &str, zone: Tz) -> Result<Schedule, ConfigError> {
    Schedule::parse(expr, zone)
        .map_err(|e| ConfigError::new("CRON_SCHEDULE", expr, schedule::expected_text(&e)))
}

impl WorkerConfig {
    pub fn from_env(env: &Env) -> Result<WorkerConfig, ConfigError> {
        let mut common = CommonConfig::from_env(env)?;
        if env.raw("HTTP_THREADS").is_none() {
            common.http.threads = DEFAULT_HTTP_THREADS;
        }
        let metrics_port = env.port("METRICS_PORT", DEFAULT_METRICS_PORT)?;
        let zone = zone(env.raw("TZ").unwrap_or(DEFAULT_ZONE))?;
        let schedule = cron_schedule(env.raw("CRON_SCHEDULE").unwrap_or(DEFAULT_SCHEDULE), zone)?;
        let run_on_start = env.bool("RUN_ON_START", true)?;
        let job_duration =
            Duration::from_millis(env.int("JOB_DURATION_MS", 200, 0, 24 * 3600 * 1000)?);
        let job_failure_rate = env.float("JOB_FAILURE_RATE", 0.0, 0.0, 1.0)?;
        let job_timeout = env.duration(
            "JOB_TIMEOUT",
            DEFAULT_JOB_TIMEOUT,
            Duration::from_secs(24 * 3600),
        )?;
        if job_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "JOB_TIMEOUT",
                env.raw("JOB_TIMEOUT").unwrap_or(""),
                "a duration of at least 100ms",
            ));
        }
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
            "invalid CRON_SCHEDULE=\"61 * * * *\": expected a cron expression (5 fields or a macro like @daily); minute field \"61\": value out of range 0-59"
        );
    }
}
