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
//! 3. A fatal condition (for example the HTTP accept loop died) is reported
//!    through [`Shutdown::fatal`]; the main thread wakes and exits non-zero so
//!    the orchestrator restarts the process.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Exit code when a second signal forces the process down.
pub const EXIT_FORCED: i32 = 130;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal asked us to stop.
    Stop,
    /// Something the process cannot live without failed.
    Fatal(String),
}

#[derive(Default)]
struct State {
    signals: u32,
    fatal: Option<String>,
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

    /// Reports a condition the process cannot recover from.
    pub fn fatal(&self, why: impl Into<String>) {
        let mut st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.fatal.is_none() {
            st.fatal = Some(why.into());
        }
        drop(st);
        self.inner.1.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        let st = self.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        st.signals > 0 || st.fatal.is_some()
    }

    fn event(st: &State) -> Option<Event> {
        if let Some(f) = &st.fatal {
            Some(Event::Fatal(f.clone()))
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
        s.fatal("accept loop died");
        s.trigger();
        assert_eq!(s.wait(), Event::Fatal("accept loop died".into()));
    }
}
