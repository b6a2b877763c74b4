//! The job: a trait the loop runs, and the stub that stands in for the database job.
//!
//! The loop knows nothing about what a job does; a real "update today's timestamps" job against a
//! database replaces [`UpdateTodaysTimestamps`] by implementing [`Job`], without touching the loop,
//! its metrics or its shutdown handling.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

/// Something the worker runs on its schedule. It runs on a thread of its own: it may block, and
/// a job that never returns costs the loop nothing but that thread (the loop gives up on it after
/// `JOB_TIMEOUT`). A panic counts as a failure.
pub trait Job: Send + Sync + 'static {
    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError>;
}

/// What a run knows about itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The slot this run serves (or the start time, for the run at start).
    pub scheduled: DateTime<Utc>,
    /// When the job was started.
    pub started: DateTime<Utc>,
    /// The schedule's zone: "today" is today there.
    pub zone: Tz,
    cancel: CancelToken,
}

impl JobContext {
    pub fn new(
        scheduled: DateTime<Utc>,
        started: DateTime<Utc>,
        zone: Tz,
        cancel: CancelToken,
    ) -> JobContext {
        JobContext {
            scheduled,
            started,
            zone,
            cancel,
        }
    }

    /// Today's date in the schedule's zone, at the start of the run.
    pub fn today(&self) -> NaiveDate {
        self.started.with_timezone(&self.zone).date_naive()
    }

    /// True once the loop has given up on this run (timeout, or shutdown timeout). A well-behaved
    /// job checks this between steps and stops early.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sleeps for `d` unless the run is cancelled first.
    pub fn sleep(&self, d: Duration) -> Result<(), JobError> {
        if self.cancel.sleep(d) {
            Ok(())
        } else {
            Err(JobError::new("cancelled"))
        }
    }
}

/// What a successful run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobReport {
    /// Records updated.
    pub records: u64,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(String);

impl JobError {
    pub fn new(why: impl Into<String>) -> JobError {
        JobError(why.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

/// A flag the loop raises when it abandons a run; jobs can wait on it.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    pub fn cancel(&self) {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.1.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d`; returns false (early) if cancelled.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        let (cancelled, _) = self
            .inner
            .1
            .wait_timeout_while(guard, d, |cancelled| !*cancelled)
            .unwrap_or_else(|e| e.into_inner());
        !*cancelled
    }
}

/// The stub of the spec's job, "update timestamps of today's records": logs the date (in the
/// schedule's zone) and a record count, takes `JOB_DURATION_MS`, and fails with probability
/// `JOB_FAILURE_RATE` — the knob that lets operators rehearse the failure alerts on purpose.
pub struct UpdateTodaysTimestamps {
    duration: Duration,
    failure_rate: f64,
    rng: Mutex<Rng>,
}

impl UpdateTodaysTimestamps {
    pub fn new(duration: Duration, failure_rate: f64) -> UpdateTodaysTimestamps {
        UpdateTodaysTimestamps::with_rng(duration, failure_rate, Rng::from_time())
    }

    pub fn with_rng(duration: Duration, failure_rate: f64, rng: Rng) -> UpdateTodaysTimestamps {
        UpdateTodaysTimestamps {
            duration,
            failure_rate,
            rng: Mutex::new(rng),
        }
    }
}

impl Job for UpdateTodaysTimestamps {
    fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
        let (records, fail) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (rng.below(1000), rng.chance(self.failure_rate))
        };
        let date = ctx.today().to_string();
        log::info!(date = date.as_str(), records = records; "updating timestamps of today's records");
        ctx.sleep(self.duration)?;
        if fail {
            return Err(JobError::new(format!(
                "simulated failure (JOB_FAILURE_RATE={})",
                self.failure_rate
            )));
        }
        Ok(JobReport { records })
    }
}

/// A small PRNG (SplitMix64) for the stub: a failure knob needs no cryptographic randomness and is
/// not worth a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the wall clock's nanoseconds and the process id, so replicas started in the
    /// same second still differ.
    pub fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (0 never, 1 always).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in [0, n) (n > 0; the modulo bias is irrelevant for a stub's record count).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(cancel: CancelToken) -> JobContext {
        let t = DateTime::parse_from_rfc3339("2026-03-08T04:30:00Z")
            .unwrap()
            .to_utc();
        JobContext::new(t, t, "America/New_York".parse().unwrap(), cancel)
    }

    #[test]
    fn today_is_in_the_schedule_zone() {
        // 04:30 UTC is still the 7th in New York.
        assert_eq!(ctx(CancelToken::new()).today().to_string(), "2026-03-07");
    }

    #[test]
    fn failure_rate_is_honoured() {
        let mut rng = Rng::seeded(7);
        assert!((0..10_000).all(|_| !rng.chance(0.0)));
        assert!((0..10_000).all(|_| rng.chance(1.0)));
        let hits = (0..100_000).filter(|_| rng.chance(0.25)).count();
        assert!((23_500..26_500).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_ne!(Rng::seeded(1).next_u64(), Rng::seeded(2).next_u64());
    }

    #[test]
    fn stub_succeeds_fails_and_takes_its_time() {
        let ok = UpdateTodaysTimestamps::with_rng(Duration::from_millis(30), 0.0, Rng::seeded(1));
        let t = std::time::Instant::now();
        let report = ok.run(&ctx(CancelToken::new())).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(report.records < 1000);
        let bad = UpdateTodaysTimestamps::with_rng(Duration::ZERO, 1.0, Rng::seeded(1));
        let err = bad.run(&ctx(CancelToken::new())).unwrap_err();
        assert!(err.to_string().contains("JOB_FAILURE_RATE=1"), "{err}");
    }

    #[test]
    fn stub_stops_when_cancelled() {
        let job = UpdateTodaysTimestamps::with_rng(Duration::from_secs(60), 0.0, Rng::seeded(1));
        let cancel = CancelToken::new();
        let c = cancel.clone();
        let t = std::time::Instant::now();
        let h = std::thread::spawn(move || job.run(&ctx(c)));
        std::thread::sleep(Duration::from_millis(20));
        cancel.cancel();
        assert_eq!(h.join().unwrap().unwrap_err().to_string(), "cancelled");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
