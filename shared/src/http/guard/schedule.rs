//! When the guard thread looks, as a plain state machine over given
//! instants (no clock, no system call): when to rescan `/proc` for sockets,
//! how to follow a connection that arrived until tiny_http has accepted it,
//! how long to sleep, and when the accept queue says tiny_http's accept loop
//! is gone. The guard thread (`mod.rs`) feeds it events and readings and
//! does what it says.

use std::time::{Duration, Instant};

/// Rescan period. New connections are normally found at once (the listener's
/// wake-up or its SIGIO, see `sys::AcceptSignal`) and closed ones drop out on
/// the next evaluation; the periodic rescan is the backstop, at about 30 µs.
pub const RESCAN: Duration = Duration::from_secs(2);
/// With no connection open and none arriving for this long, rescans slow
/// down to [`IDLE_RESCAN`]: the worker's idle CPU budget is a few ms per
/// minute.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);
pub const IDLE_RESCAN: Duration = Duration::from_secs(15);
/// While draining (a graceful stop) idle connections are closed at once, so
/// the table is looked at often.
pub const DRAIN_RESCAN: Duration = Duration::from_millis(10);
/// Connections waiting this long in the accept queue, with no new
/// connection reaching tiny_http meanwhile, mean its accept loop is gone.
pub const ACCEPT_STUCK: Duration = Duration::from_secs(3);
/// While the accept queue is not empty, it is looked at this often (on top
/// of the growing accept poll, which stops at 10 ms).
pub const BACKLOG_CHECK: Duration = Duration::from_millis(500);
/// How often the listener itself is checked while nothing else happens.
pub const LIVENESS: Duration = Duration::from_secs(5);
/// After a listener wake-up the accept may not have happened when we scan
/// (tiny_http's accept thread can lag under CPU pressure): look again after
/// each of these delays.
pub const FOLLOW_UPS: [Duration; 5] = [
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// What the guard thread reads of the listener after a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Connections in the accept queue (None: unreadable).
    pub backlog: Option<u32>,
    /// Our descriptor still refers to the socket we bound.
    pub listening: bool,
    /// The listener is being closed on purpose (a stop).
    pub closing: bool,
}

/// The guard thread's timing state.
#[derive(Debug, Clone)]
pub struct Schedule {
    last_scan: Option<Instant>,
    last_arrival: Instant,
    last_discovery: Instant,
    follow_ups: Vec<Instant>,
    /// While connections announced by the listener still wait for
    /// tiny_http's accept: when to look again, and the pause that led there.
    accept_poll: Option<(Instant, Duration)>,
    /// Since when the accept queue has not been empty.
    backlog_since: Option<Instant>,
}

impl Schedule {
    /// A guard starting at `now` (it scans on its first wake-up).
    pub fn new(now: Instant) -> Schedule {
        Schedule {
            last_scan: None,
            last_arrival: now,
            last_discovery: now,
            follow_ups: Vec::new(),
            accept_poll: None,
            backlog_since: None,
        }
    }

    fn rescan_every(&self, now: Instant, open: usize, draining: bool) -> Duration {
        if draining {
            DRAIN_RESCAN
        } else if open > 0 || now.saturating_duration_since(self.last_arrival) < IDLE_AFTER {
            RESCAN
        } else {
            IDLE_RESCAN
        }
    }

    /// When to wake up at the latest, with `open` connections known and the
    /// rules' own next `deadline`.
    pub fn wake_at(
        &self,
        now: Instant,
        open: usize,
        draining: bool,
        deadline: Option<Instant>,
    ) -> Instant {
        let rescan = self
            .last_scan
            .map_or(now, |t| t + self.rescan_every(now, open, draining));
        [
            deadline,
            Some(rescan),
            self.backlog_since.map(|_| now + BACKLOG_CHECK),
            self.accept_poll.map(|(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .chain(self.follow_ups.iter().copied())
        .fold(now + LIVENESS, Instant::min)
    }

    /// The listener announced a connection (its wake-up or its SIGIO).
    pub fn arrival(&mut self, now: Instant) {
        self.last_arrival = now;
        self.accept_poll = Some((now, Duration::ZERO));
        self.follow_ups = FOLLOW_UPS.iter().map(|d| now + *d).collect();
    }

    /// Whether a rescan is due at `now` (the period passed, a follow-up or
    /// the accept poll is due, or draining); spent follow-ups are dropped.
    pub fn scan_due(&mut self, now: Instant, open: usize, draining: bool) -> bool {
        let period = self.last_scan.is_none_or(|t| {
            now.saturating_duration_since(t) >= self.rescan_every(now, open, draining)
        });
        let before = self.follow_ups.len();
        self.follow_ups.retain(|t| *t > now);
        let follow_up = self.follow_ups.len() != before;
        let poll = self.accept_poll.is_some_and(|(t, _)| t <= now);
        period || follow_up || poll || draining
    }

    /// A rescan ran at `now`; `discovered` whether it found a new socket.
    pub fn scanned(&mut self, now: Instant, discovered: bool) {
        self.last_scan = Some(now);
        if discovered {
            self.last_discovery = now;
        }
    }

    /// After a look at the listener at `now`: moves the accept poll on, and
    /// returns why the process must restart, if it must. tiny_http's accept
    /// loop can end for good (an accept error ends it; `EMFILE` while
    /// cloning a stream panics its thread and drops the listener): then
    /// connections pile up in the accept queue with nothing taking them, or
    /// our descriptor no longer refers to a listening socket.
    pub fn check_listener(&mut self, now: Instant, l: Listener) -> Option<String> {
        if let Some((_, pause)) = self.accept_poll.filter(|(t, _)| *t <= now) {
            self.accept_poll = next_accept_poll(l.backlog, l.closing, pause).map(|p| (now + p, p));
        }
        if l.closing {
            self.backlog_since = None;
            return None;
        }
        if !l.listening {
            return Some("the listening socket is gone".to_string());
        }
        match l.backlog.filter(|n| *n > 0) {
            Some(waiting) => {
                let since = *self.backlog_since.get_or_insert(now);
                (now.saturating_duration_since(since) >= ACCEPT_STUCK
                    && now.saturating_duration_since(self.last_discovery) >= ACCEPT_STUCK)
                    .then(|| {
                        format!(
                            "accept loop is not accepting: {waiting} connections waiting for {}s",
                            ACCEPT_STUCK.as_secs()
                        )
                    })
            }
            None => {
                self.backlog_since = None;
                None
            }
        }
    }
}

/// After a look at the accept queue (`backlog`, None if unreadable) that
/// followed a listener wake-up with `pause`, the pause before the next look,
/// or None once the queue is empty (or the listener is being closed). It
/// starts at 100 µs and doubles to 10 ms: a lagging accept thread is
/// followed closely, a dead one costs at most 100 looks a second until
/// [`Schedule::check_listener`] reports it.
pub fn next_accept_poll(backlog: Option<u32>, closing: bool, pause: Duration) -> Option<Duration> {
    match backlog {
        Some(n) if n > 0 && !closing => {
            Some((pause * 2).clamp(Duration::from_micros(100), Duration::from_millis(10)))
        }
        _ => None,
    }
}

/// The epoll timeout for waking at `wake_at`, in whole milliseconds rounded
/// up (a deadline 0.4 ms away must not become a zero timeout and a spin),
/// at most a minute.
pub fn timeout_ms(now: Instant, wake_at: Instant) -> i32 {
    wake_at
        .saturating_duration_since(now)
        .as_micros()
        .div_ceil(1000)
        .min(60_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::guard::FakeClock as Clock;

    const QUIET: Listener = Listener {
        backlog: Some(0),
        listening: true,
        closing: false,
    };

    #[test]
    fn the_first_wake_up_scans_then_every_rescan_period_while_anything_is_open() {
        let c = Clock(Instant::now());
        let mut s = Schedule::new(c.at(0));
        assert_eq!(s.wake_at(c.at(0), 0, false, None), c.at(0));
        assert!(s.scan_due(c.at(0), 0, false));
        s.scanned(c.at(0), false);
        let rescan = RESCAN.as_millis() as u64;
        assert_eq!(s.wake_at(c.at(1), 3, false, None), c.at(rescan));
        assert!(!s.scan_due(c.at(rescan - 1), 3, false));
        assert!(s.scan_due(c.at(rescan), 3, false));
        // A rule's deadline comes first when it is earlier.
        assert_eq!(s.wake_at(c.at(1), 3, false, Some(c.at(7))), c.at(7));
    }

    #[test]
    fn an_idle_guard_sleeps_longer_and_a_draining_one_looks_often() {
        let c = Clock(Instant::now());
        let mut s = Schedule::new(c.at(0));
        s.scanned(c.at(0), false);
        let idle = IDLE_AFTER.as_millis() as u64;
        // Nothing open, nothing arrived for IDLE_AFTER: the idle period, but
        // never longer than the liveness check.
        let t = c.at(idle);
        s.scanned(t, false);
        let slow = IDLE_RESCAN.min(LIVENESS);
        assert_eq!(s.wake_at(t, 0, false, None), t + slow);
        assert!(!s.scan_due(t + RESCAN, 0, false));
        assert!(s.scan_due(t + IDLE_RESCAN, 0, false));
        // One connection open: back to the rescan period.
        assert!(s.scan_due(t + RESCAN, 1, false));
        // Draining: every DRAIN_RESCAN, and due on every wake-up.
        assert_eq!(s.wake_at(t, 0, true, None), t + DRAIN_RESCAN);
        assert!(s.scan_due(t + Duration::from_millis(1), 0, true));
    }

    #[test]
    fn an_arrival_is_followed_up_until_tiny_http_has_accepted_it() {
        let c = Clock(Instant::now());
        let mut s = Schedule::new(c.at(0));
        s.scanned(c.at(0), false);
        s.arrival(c.at(100));
        // The accept poll is due at once; then the follow-ups, in turn.
        assert_eq!(s.wake_at(c.at(100), 0, false, None), c.at(100));
        assert!(s.scan_due(c.at(100), 0, false));
        s.scanned(c.at(100), true);
        // Still one in the queue: the poll goes on 100 µs later.
        let waiting = Listener {
            backlog: Some(1),
            ..QUIET
        };
        assert_eq!(s.check_listener(c.at(100), waiting), None);
        assert_eq!(
            s.wake_at(c.at(100), 1, false, None),
            c.at(100) + Duration::from_micros(100)
        );
        // Accepted: the poll ends; the follow-ups remain.
        let t = c.at(101);
        assert!(s.scan_due(t, 1, false), "poll and the 1 ms follow-up");
        s.scanned(t, false);
        assert_eq!(s.check_listener(t, QUIET), None);
        for ms in [105, 125, 200, 600] {
            assert_eq!(s.wake_at(c.at(ms - 1), 1, false, None), c.at(ms), "{ms}");
            assert!(!s.scan_due(c.at(ms - 1), 1, false));
            assert!(s.scan_due(c.at(ms), 1, false), "{ms}");
            s.scanned(c.at(ms), false);
        }
        // Then only the period.
        let rescan = RESCAN.as_millis() as u64;
        assert_eq!(s.wake_at(c.at(600), 1, false, None), c.at(600 + rescan));
    }

    #[test]
    fn the_accept_queue_is_polled_until_empty_with_a_growing_pause() {
        let us = Duration::from_micros;
        // Empty (or unreadable, or closing): done.
        assert_eq!(next_accept_poll(Some(0), false, Duration::ZERO), None);
        assert_eq!(next_accept_poll(None, false, us(800)), None);
        assert_eq!(next_accept_poll(Some(3), true, us(800)), None);
        // Waiting: 100 µs first, doubling, at most 10 ms.
        let mut pause = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            pause = next_accept_poll(Some(1), false, pause).expect("still waiting");
            seen.push(pause);
        }
        assert_eq!(seen[0], us(100));
        assert_eq!(seen[1], us(200));
        assert_eq!(seen[6], us(6_400));
        assert_eq!(seen[7], us(10_000));
        assert_eq!(seen[9], us(10_000));
    }

    #[test]
    fn a_full_accept_queue_with_no_discovery_for_accept_stuck_is_fatal() {
        let c = Clock(Instant::now());
        let stuck = ACCEPT_STUCK.as_millis() as u64;
        let waiting = Listener {
            backlog: Some(7),
            ..QUIET
        };
        let mut s = Schedule::new(c.at(0));
        s.scanned(c.at(0), true);
        assert_eq!(s.check_listener(c.at(1_000), waiting), None);
        // While the queue is not empty it is looked at every BACKLOG_CHECK.
        assert_eq!(
            s.wake_at(c.at(1_000), 0, false, None),
            c.at(1_000) + BACKLOG_CHECK
        );
        assert_eq!(s.check_listener(c.at(1_000 + stuck - 1), waiting), None);
        let why = s
            .check_listener(c.at(1_000 + stuck), waiting)
            .expect("stuck for ACCEPT_STUCK");
        assert!(why.contains("7 connections waiting"), "{why}");

        // A discovery meanwhile means tiny_http is accepting (just slowly).
        let mut s = Schedule::new(c.at(0));
        assert_eq!(s.check_listener(c.at(0), waiting), None);
        s.scanned(c.at(stuck - 10), true);
        assert_eq!(s.check_listener(c.at(stuck), waiting), None);
        // An empty queue restarts the count.
        let mut s = Schedule::new(c.at(0));
        assert_eq!(s.check_listener(c.at(0), waiting), None);
        assert_eq!(s.check_listener(c.at(stuck - 1), QUIET), None);
        assert_eq!(s.check_listener(c.at(stuck + 1), waiting), None);
        // Closing on purpose: never fatal.
        let closing = Listener {
            closing: true,
            ..waiting
        };
        assert_eq!(s.check_listener(c.at(10 * stuck), closing), None);
    }

    #[test]
    fn a_vanished_listener_is_fatal_unless_it_is_being_closed() {
        let c = Clock(Instant::now());
        let mut s = Schedule::new(c.at(0));
        let gone = Listener {
            backlog: None,
            listening: false,
            closing: false,
        };
        let why = s.check_listener(c.at(1), gone).expect("fatal");
        assert_eq!(why, "the listening socket is gone");
        let closing = Listener {
            closing: true,
            ..gone
        };
        assert_eq!(s.check_listener(c.at(2), closing), None);
    }

    #[test]
    fn the_epoll_timeout_rounds_up_and_is_capped() {
        let c = Clock(Instant::now());
        let now = c.at(0);
        assert_eq!(timeout_ms(now, now), 0);
        assert_eq!(timeout_ms(now, now + Duration::from_micros(400)), 1);
        assert_eq!(timeout_ms(now, now + Duration::from_micros(1_001)), 2);
        assert_eq!(timeout_ms(c.at(5), now), 0, "in the past");
        assert_eq!(timeout_ms(now, now + Duration::from_secs(3_600)), 60_000);
    }
}
