//! Liveness of the scheduler loop, for `GET /health`.
//!
//! A process that answers HTTP is not necessarily a worker that works: the loop thread could be
//! wedged, or a job thread could hang forever (the loop abandons it after `JOB_TIMEOUT`, but skips
//! every later slot rather than run two copies at once). Both are states only a restart fixes, so
//! both make `/health` answer 503 and the liveness probe restarts the container:
//! - the loop has not heartbeaten for `JOB_TIMEOUT` + [`STUCK_MARGIN`] (it beats at least every
//!   [`crate::clock::MAX_WAIT_SLICE`], sleeping or waiting for a job);
//! - a job has been executing for longer than `JOB_TIMEOUT` + [`STUCK_MARGIN`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// Slack on top of `JOB_TIMEOUT` before "slow" becomes "stuck": several heartbeat intervals, and
/// room for a job that honours cancellation to wind down.
pub const STUCK_MARGIN: Duration = Duration::from_secs(60);

pub struct Health {
    clock: Arc<dyn Clock>,
    stuck_after: Duration,
    /// Monotonic milliseconds of the last heartbeat.
    heartbeat_ms: AtomicU64,
    /// Monotonic milliseconds (plus one, so 0 means "none") since a job started executing.
    job_since_ms: AtomicU64,
}

impl Health {
    pub fn new(clock: Arc<dyn Clock>, job_timeout: Duration) -> Health {
        let h = Health {
            stuck_after: job_timeout + STUCK_MARGIN,
            heartbeat_ms: AtomicU64::new(0),
            job_since_ms: AtomicU64::new(0),
            clock,
        };
        h.beat();
        h
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// The loop is alive.
    pub fn beat(&self) {
        self.heartbeat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn job_started(&self) {
        self.job_since_ms
            .store(self.now_ms() + 1, Ordering::Relaxed);
    }

    pub fn job_ended(&self) {
        self.job_since_ms.store(0, Ordering::Relaxed);
    }

    /// Age of the last heartbeat.
    pub fn heartbeat_age(&self) -> Duration {
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(beat))
    }

    /// How long the current job has been executing, if one is.
    pub fn job_running_for(&self) -> Option<Duration> {
        match self.job_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    /// `Ok` while the loop is alive and no job hangs; otherwise why not.
    pub fn check(&self) -> Result<(), String> {
        let age = self.heartbeat_age();
        if age > self.stuck_after {
            return Err(format!(
                "scheduler loop has not heartbeaten for {}s",
                age.as_secs()
            ));
        }
        if let Some(running) = self.job_running_for().filter(|d| *d > self.stuck_after) {
            return Err(format!(
                "a job has been running for {}s, beyond JOB_TIMEOUT plus {}s",
                running.as_secs(),
                STUCK_MARGIN.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn setup() -> (Arc<FakeClock>, Health) {
        let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
        let health = Health::new(clock.clone(), Duration::from_secs(30));
        (clock, health)
    }

    #[test]
    fn stale_heartbeat_is_stuck() {
        let (clock, health) = setup();
        assert!(health.check().is_ok());
        clock.advance(Duration::from_secs(89));
        assert!(health.check().is_ok());
        clock.advance(Duration::from_secs(2));
        assert!(health.check().unwrap_err().contains("heartbeat"));
        health.beat();
        assert!(health.check().is_ok());
    }

    #[test]
    fn hung_job_is_stuck_even_while_the_loop_beats() {
        let (clock, health) = setup();
        health.job_started();
        for _ in 0..9 {
            clock.advance(Duration::from_secs(10));
            health.beat();
        }
        assert!(health.check().is_ok());
        clock.advance(Duration::from_secs(2));
        health.beat();
        assert!(health.check().unwrap_err().contains("running for 92s"));
        health.job_ended();
        assert!(health.check().is_ok());
    }
}
