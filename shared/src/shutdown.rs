//! Shutdown signalling: one object every thread can wait on.
//!
//! The protocol:
//! 1. The first SIGTERM or SIGINT (through `ctrlc` with its `termination`
//!    feature; without it SIGTERM is ignored and PID 1 in a container never
//!    stops) flips the state to *stopping* and wakes every waiter at once.
//!    Services react by failing readiness, finishing in-flight work within
//!    their timeout and exiting 0.
//! 2. A second signal exits immediately with code 130: an operator who presses
//!    Ctrl-C twice, or a runtime that escalates, gets an answer now.
//! 3. A fatal condition ([`Fatal`]: the server lost every link to tiny_http,
//!    or the service's work ended by itself) is reported through
//!    [`Shutdown::fatal`]; the main thread wakes and exits non-zero so the
//!    orchestrator restarts the process.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Exit code when a second signal forces the process down.
pub const EXIT_FORCED: i32 = 130;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal asked us to stop.
    Stop,
    /// Something the process cannot live without failed.
    Fatal(Fatal),
}

/// Why the process cannot go on and must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// Every link from the front to tiny_http failed (`last`: how the last
    /// one did): no request can be answered.
    LinksLost { last: &'static str },
    /// The service's work (the worker's cron loop) ended before a stop.
    WorkEnded {
        name: &'static str,
        how: &'static str,
    },
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::LinksLost { last } => {
                write!(f, "every link to tiny_http failed (the last: {last})")
            }
            Fatal::WorkEnded { name, how } => write!(f, "{name} ended before a stop ({how})"),
        }
    }
}

#[derive(Default)]
struct State {
    signals: u32,
    fatal: Option<Fatal>,
}

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<(Mutex<State>, Condvar)>,
}

static INSTALLED: OnceLock<Shutdown> = OnceLock::new();

impl Shutdown {
    /// A shutdown that only [`Shutdown::trigger`] fires (for tests).
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The process-wide shutdown wired to SIGTERM and SIGINT.
    pub fn install() -> Shutdown {
        INSTALLED
            .get_or_init(|| {
                let s = Shutdown::new();
                let handler = s.clone();
                ctrlc::set_handler(move || handler.on_signal())
                    .expect("installing the SIGTERM/SIGINT handler");
                s
            })
            .clone()
    }

    fn on_signal(&self) {
        let second = {
            let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
            st.signals += 1;
            st.signals > 1
        };
        if second {
            log::warn!(exit_code = EXIT_FORCED; "second signal: exiting immediately");
            std::process::exit(EXIT_FORCED);
        }
        log::info!("shutdown signal received");
        self.inner.1.notify_all();
    }

    /// Starts a graceful shutdown as if a signal had arrived.
    pub fn trigger(&self) {
        let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        st.signals = st.signals.max(1);
        drop(st);
        self.inner.1.notify_all();
    }

    /// Reports a condition the process cannot recover from (the first one
    /// reported is the one the exit names).
    pub fn fatal(&self, why: Fatal) {
        let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.fatal.is_none() {
            st.fatal = Some(why);
        }
        drop(st);
        self.inner.1.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        let st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        st.signals > 0 || st.fatal.is_some()
    }

    fn event(st: &State) -> Option<Event> {
        if let Some(f) = st.fatal {
            Some(Event::Fatal(f))
        } else if st.signals > 0 {
            Some(Event::Stop)
        } else {
            None
        }
    }

    /// Blocks until a signal or a fatal report.
    pub fn wait(&self) -> Event {
        let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(ev) = Self::event(&st) {
                return ev;
            }
            st = self.inner.1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps for `d` unless a shutdown arrives first; returns the event if it
    /// did. This is how loops sleep: a signal interrupts them at once.
    pub fn wait_timeout(&self, d: Duration) -> Option<Event> {
        let deadline = Instant::now() + d;
        let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(ev) = Self::event(&st) {
                return Some(ev);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .inner
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_waiters() {
        let s = Shutdown::new();
        assert_eq!(s.wait_timeout(Duration::from_millis(10)), None);
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.wait())
        };
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert_eq!(t.join().unwrap(), Event::Stop);
        assert!(s.is_stopping());
    }

    #[test]
    fn fatal_wins() {
        let s = Shutdown::new();
        let why = Fatal::LinksLost { last: "closed" };
        s.fatal(why);
        s.fatal(Fatal::WorkEnded {
            name: "cron",
            how: "panicked",
        });
        s.trigger();
        assert_eq!(s.wait(), Event::Fatal(why));
        assert_eq!(
            why.to_string(),
            "every link to tiny_http failed (the last: closed)"
        );
    }
}
