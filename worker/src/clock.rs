//! Time as the loop sees it, injectable so tests cross minute boundaries without waiting.
//!
//! The loop needs two clocks: the wall clock (cron instants are wall-clock instants, and the wall
//! clock can step: NTP corrections, suspend/resume, a VM restored from a snapshot) and a monotonic
//! clock (job durations and timeouts must not stretch or shrink when the wall clock steps). It
//! never blocks for long without looking at the wall clock again: [`Clock::wait_slice`] caps each
//! wait, so a step is noticed within one slice and the heartbeat stays fresh.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The loop's view of time.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock now.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time since an arbitrary origin, for durations and timeouts.
    fn elapsed(&self) -> Duration;
    /// How long to block (in real time) before looking at the clock again, when the next event is
    /// `left` away on this clock.
    fn wait_slice(&self, left: Duration) -> Duration;
}

/// Longest real-time wait between two looks at the wall clock. Ten seconds bounds how late a
/// wall-clock step is noticed and how old the heartbeat gets while idle, for about six wake-ups
/// (some tens of microseconds of CPU) per minute.
pub const MAX_WAIT_SLICE: Duration = Duration::from_secs(10);

/// The real clocks: `SystemTime` (through chrono) and `Instant`.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wait_slice(&self, left: Duration) -> Duration {
        left.min(MAX_WAIT_SLICE)
    }
}

/// A clock that moves only when a test says so.
///
/// Waiting code polls it every millisecond of real time, so a test advances the clock and the
/// loop reacts at once, without any real minute passing.
#[derive(Debug)]
pub struct FakeClock {
    state: Mutex<(DateTime<Utc>, Duration)>,
}

impl FakeClock {
    pub fn new(start: DateTime<Utc>) -> FakeClock {
        FakeClock {
            state: Mutex::new((start, Duration::from_secs(1_000_000))),
        }
    }

    /// Time passes: wall and monotonic clocks move together.
    pub fn advance(&self, d: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += chrono::Duration::from_std(d).expect("duration in range");
        st.1 += d;
    }

    /// The wall clock steps (NTP, suspend, an operator): the monotonic clock does not move.
    pub fn set_wall(&self, t: DateTime<Utc>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn elapsed(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    fn wait_slice(&self, _left: Duration) -> Duration {
        Duration::from_millis(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let c = FakeClock::new(t0);
        let m0 = c.elapsed();
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), t0 + chrono::Duration::seconds(90));
        assert_eq!(c.elapsed() - m0, Duration::from_secs(90));
        c.set_wall(t0);
        assert_eq!(c.now(), t0);
        assert_eq!(c.elapsed() - m0, Duration::from_secs(90));
    }

    #[test]
    fn system_clock_slices_waits() {
        let c = SystemClock::new();
        assert_eq!(c.wait_slice(Duration::from_secs(59)), MAX_WAIT_SLICE);
        assert_eq!(
            c.wait_slice(Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn system_clock_follows_real_time() {
        let before = Instant::now();
        let wall_before = Utc::now();
        let c = SystemClock::new();
        let after = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let asked = Instant::now();
        let e = c.elapsed();
        // Measured from its creation: at least the time since `after`, at
        // most the time since `before`.
        assert!(e >= asked - after, "{e:?} < {:?}", asked - after);
        assert!(e >= Duration::from_millis(30), "{e:?}");
        assert!(e <= before.elapsed(), "{e:?}");
        let later = c.elapsed();
        assert!(later >= e);
        // The wall clock is the system's.
        let now = c.now();
        assert!(wall_before <= now && now <= Utc::now(), "{now}");
    }
}
