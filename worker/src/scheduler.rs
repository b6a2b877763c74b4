//! The scheduler loop: sleep until the next slot, run the job, account for what was missed.
//!
//! Invariants (each has a test below):
//! - **Interruptible sleep.** The loop waits on a condvar that a shutdown signal notifies, so a
//!   signal ends an idle wait at once; each wait lasts at most one [`Clock::wait_slice`] and the
//!   wall clock is re-read on every wake (clock steps, suspend).
//! - **No overlap.** Jobs run on one runner thread, never on the loop's; the loop waits for the run
//!   and starts nothing else meanwhile. Slots that pass during a run are not replayed: each is
//!   counted in `worker_jobs_skipped_total` and logged once, and the next run is the next slot
//!   after now.
//! - **Failures are contained.** An error or a panic is a failure and the loop goes on. A run that
//!   exceeds `JOB_TIMEOUT` is a failure, is told to cancel and is abandoned: the loop stops waiting
//!   for it. A thread cannot be killed, so until it returns, slots are skipped (two copies of a
//!   database job must not run at once) and `/health` reports it once it hangs past the margin.
//! - **Graceful stop.** A signal while idle ends the loop at once. A signal during a run starts no
//!   new run and gives the running one up to `SHUTDOWN_TIMEOUT` (and never past its own timeout).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use orion_shared::logging::{millis, seconds};

use crate::clock::Clock;
use crate::health::Health;
use crate::job::{CancelToken, Job, JobContext, JobReport};
use crate::metrics::{unix_seconds, WorkerMetrics};
use crate::schedule::Schedule;

/// Loop settings from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Run the job once at start, before the first slot (`RUN_ON_START`).
    pub run_on_start: bool,
    /// A run taking longer is a failure and is abandoned (`JOB_TIMEOUT`).
    pub job_timeout: Duration,
    /// After a shutdown signal, how long a running job may still take (`SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
}

/// Skipped slots logged one line each per accounting round; beyond this, one summary line, so a
/// clock that jumps years ahead cannot flood the log.
const MAX_SKIP_LOG_LINES: u64 = 100;
/// Skipped slots counted per accounting round (a minute schedule over a 70-day clock jump).
const MAX_SKIP_COUNT: usize = 100_000;

/// How a run ended, as the job thread reports it.
#[derive(Debug)]
enum Outcome {
    Succeeded(JobReport),
    Failed(String),
    Panicked(String),
}

#[derive(Debug)]
struct Finished {
    id: u64,
    outcome: Outcome,
    duration: Duration,
    ended: DateTime<Utc>,
}

#[derive(Default)]
struct Hub {
    stop: bool,
    finished: Vec<Finished>,
}

/// The loop's mailbox: shutdown requests and job completions, behind one condvar so one wait
/// observes both.
#[derive(Clone, Default)]
pub struct Control {
    inner: Arc<(Mutex<Hub>, Condvar)>,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Asks the loop to stop (graceful: a running job may finish within the shutdown timeout).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.inner.1.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.lock().stop
    }

    fn post(&self, f: Finished) {
        self.lock().finished.push(f);
        self.inner.1.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Hub>, d: Duration) -> MutexGuard<'a, Hub> {
        self.inner
            .1
            .wait_timeout(guard, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }
}

/// How [`Scheduler::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped while no job was running.
    Idle,
    /// Stopped during a run, which then finished (successfully or not).
    RunFinished,
    /// Stopped during a run that did not finish within the shutdown timeout (or its own timeout).
    RunAbandoned,
    /// Could not start (no thread for the job runner): the process should exit non-zero.
    Failed,
}

enum Wake {
    Due,
    Stop,
    /// The wall clock stepped backwards; `now` is the new time.
    ClockBack(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    Start,
    Schedule,
}

/// A run the loop gave up on whose thread has not returned yet.
struct Abandoned {
    id: u64,
}

pub struct Scheduler {
    schedule: Schedule,
    job: Arc<dyn Job>,
    clock: Arc<dyn Clock>,
    metrics: WorkerMetrics,
    health: Arc<Health>,
    control: Control,
    settings: Settings,
    seq: u64,
    abandoned: Option<Abandoned>,
    last_fired: Option<DateTime<Utc>>,
    runner: Option<mpsc::Sender<JobRun>>,
}

/// One run handed to the runner thread.
struct JobRun {
    id: u64,
    scheduled: DateTime<Utc>,
    trigger: Trigger,
    cancel: CancelToken,
}

/// What the runner thread needs to run jobs and report on them.
struct Runner {
    job: Arc<dyn Job>,
    clock: Arc<dyn Clock>,
    control: Control,
    metrics: WorkerMetrics,
    health: Arc<Health>,
    zone: chrono_tz::Tz,
}

impl Runner {
    fn run(&self, w: JobRun) {
        let started = self.clock.now();
        let t0 = self.clock.elapsed();
        let (trigger, lateness_ms) = match w.trigger {
            Trigger::Start => ("start", 0.0),
            Trigger::Schedule => (
                "schedule",
                (started - w.scheduled)
                    .num_microseconds()
                    .unwrap_or(i64::MAX) as f64
                    / 1e3,
            ),
        };
        log::info!(
            run = w.id,
            trigger = trigger,
            scheduled = rfc3339(w.scheduled).as_str(),
            started = started.to_rfc3339_opts(SecondsFormat::Micros, true).as_str(),
            lateness_ms = lateness_ms;
            "job started"
        );
        let ctx = JobContext::new(w.scheduled, started, self.zone, w.cancel);
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.job.run(&ctx))) {
            Ok(Ok(report)) => Outcome::Succeeded(report),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(payload) => Outcome::Panicked(
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        let duration = self.clock.elapsed().saturating_sub(t0);
        self.metrics.running.set(0);
        self.health.job_ended();
        self.control.post(Finished {
            id: w.id,
            outcome,
            duration,
            ended: self.clock.now(),
        });
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Scheduler {
    pub fn new(
        schedule: Schedule,
        job: Arc<dyn Job>,
        clock: Arc<dyn Clock>,
        metrics: WorkerMetrics,
        health: Arc<Health>,
        control: Control,
        settings: Settings,
    ) -> Scheduler {
        Scheduler {
            schedule,
            job,
            clock,
            metrics,
            health,
            control,
            settings,
            seq: 0,
            abandoned: None,
            last_fired: None,
            runner: None,
        }
    }

    /// Runs until stopped.
    pub fn run(mut self) -> Exit {
        match self.spawn_runner() {
            Ok(tx) => self.runner = Some(tx),
            Err(e) => {
                log::error!(error = e.to_string().as_str(); "cannot start the job runner thread");
                return Exit::Failed;
            }
        }
        let now = self.clock.now();
        let mut next = self.schedule.next_after(now);
        let next_text = next.map(rfc3339).unwrap_or_default();
        log::info!(
            schedule = self.schedule.expr(),
            zone = self.schedule.zone().name(),
            saffron = self.schedule.saffron(),
            next_run = next_text.as_str(),
            run_on_start = self.settings.run_on_start,
            job_timeout_s = seconds(self.settings.job_timeout);
            "worker started"
        );
        if let Some(n) = next {
            self.metrics.next_run.set(unix_seconds(n));
        }
        if self.control.is_stopping() {
            log::info!("stopping: no job running");
            return Exit::Idle;
        }
        if self.settings.run_on_start {
            let started = self.clock.now();
            if let Some(exit) = self.execute(now, Trigger::Start) {
                return exit;
            }
            next = self.account_missed(now, Some(started));
        }
        loop {
            let Some(due) = next else {
                // Unreachable for a parsed schedule (never-firing ones are refused); stay alive
                // and stoppable rather than spin.
                log::error!(schedule = self.schedule.expr(); "the schedule has no future run");
                while !matches!(self.sleep_until(DateTime::<Utc>::MAX_UTC), Wake::Stop) {}
                return Exit::Idle;
            };
            self.metrics.next_run.set(unix_seconds(due));
            match self.sleep_until(due) {
                Wake::Stop => {
                    log::info!("stopping: no job running");
                    return Exit::Idle;
                }
                Wake::ClockBack(now) => {
                    next = self.after_backward_step(now);
                    continue;
                }
                Wake::Due => {}
            }
            if self.abandoned.is_some() {
                self.skip(due, "the previous run timed out and is still running");
                next = self.account_missed(due, None);
                continue;
            }
            let started = self.clock.now();
            if let Some(exit) = self.execute(due, Trigger::Schedule) {
                return exit;
            }
            next = self.account_missed(due, Some(started));
        }
    }

    /// Waits until `due` on the wall clock, a stop request or a backward clock step.
    fn sleep_until(&mut self, due: DateTime<Utc>) -> Wake {
        let control = self.control.clone();
        let mut hub = control.lock();
        let mut last = self.clock.now();
        loop {
            self.health.beat();
            self.reap(&mut hub);
            if hub.stop {
                return Wake::Stop;
            }
            let now = self.clock.now();
            if now >= due {
                return Wake::Due;
            }
            if now < last - chrono::Duration::seconds(1) {
                return Wake::ClockBack(now);
            }
            last = now;
            let left = (due - now).to_std().unwrap_or_default();
            hub = control.wait(hub, self.clock.wait_slice(left));
        }
    }

    /// After the wall clock stepped back, the next slot is recomputed from the new time, as cronie
    /// does: a wildcard job follows the clock (and may repeat slots), a fixed-time job does not
    /// repeat a slot it has already run.
    fn after_backward_step(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = match self.last_fired {
            Some(last) if !self.schedule.is_wildcard() => now.max(last),
            _ => now,
        };
        let next = self.schedule.next_after(from);
        let next_text = next.map(rfc3339).unwrap_or_default();
        log::warn!(now = rfc3339(now).as_str(), next_run = next_text.as_str(); "wall clock stepped backwards; next run recomputed");
        next
    }

    /// Counts and logs the slots in (`after`, now] that were not run, and returns the next slot
    /// after now. Slots before `run_started` were missed because the loop woke late (suspend,
    /// SIGSTOP, a forward clock step); later ones because the run was still going.
    fn account_missed(
        &mut self,
        after: DateTime<Utc>,
        run_started: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut count = 0u64;
        for slot in self
            .schedule
            .iter_after(after)
            .take_while(|s| *s <= now)
            .take(MAX_SKIP_COUNT)
        {
            count += 1;
            let reason = match run_started {
                Some(started) if slot >= started => "the previous run was still running",
                _ => "the worker was not awake at that time (suspended, stopped or the clock stepped)",
            };
            if count <= MAX_SKIP_LOG_LINES {
                self.skip(slot, reason);
            } else {
                self.metrics.skipped.inc();
            }
        }
        if count > MAX_SKIP_LOG_LINES {
            log::warn!(
                skipped = count - MAX_SKIP_LOG_LINES,
                until = rfc3339(now).as_str();
                "further skipped runs not logged individually"
            );
        }
        self.schedule.next_after(now)
    }

    fn skip(&self, slot: DateTime<Utc>, reason: &str) {
        self.metrics.skipped.inc();
        log::warn!(scheduled = rfc3339(slot).as_str(), reason = reason; "skipped run");
    }

    /// Handles completions of abandoned runs that arrive while the loop is doing something else.
    fn reap(&mut self, hub: &mut Hub) {
        let Some(abandoned) = &self.abandoned else {
            return;
        };
        if let Some(i) = hub.finished.iter().position(|f| f.id == abandoned.id) {
            let f = hub.finished.swap_remove(i);
            log::warn!(
                run = f.id,
                duration_ms = millis(f.duration),
                outcome = format!("{:?}", f.outcome).as_str();
                "abandoned run finally returned (already counted as failed)"
            );
            self.abandoned = None;
        }
    }

    /// Starts the one thread that runs jobs. It sleeps on a channel between runs, so at a slot the
    /// job starts after two wake-ups of sleeping threads (timer → loop → runner) — much quicker
    /// on a busy machine than creating a thread, which queues behind running tasks for a slice.
    /// One runner also makes overlapping runs impossible by construction.
    fn spawn_runner(&self) -> std::io::Result<mpsc::Sender<JobRun>> {
        let (tx, rx) = mpsc::channel::<JobRun>();
        let runner = Runner {
            job: self.job.clone(),
            clock: self.clock.clone(),
            control: self.control.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            zone: self.schedule.zone(),
        };
        std::thread::Builder::new()
            .name("job-runner".into())
            .spawn(move || {
                for work in rx {
                    runner.run(work);
                }
            })?;
        Ok(tx)
    }

    /// Runs the job once for `scheduled` and waits for it. Returns `Some` if the loop must end
    /// (a stop request arrived during the run).
    fn execute(&mut self, scheduled: DateTime<Utc>, trigger: Trigger) -> Option<Exit> {
        self.seq += 1;
        let id = self.seq;
        if let Trigger::Schedule = trigger {
            self.last_fired = Some(scheduled);
        }
        let cancel = CancelToken::new();
        self.metrics.running.set(1);
        self.health.job_started();
        let started_mono = self.clock.elapsed();
        let work = JobRun {
            id,
            scheduled,
            trigger,
            cancel: cancel.clone(),
        };
        if self
            .runner
            .as_ref()
            .map(|tx| tx.send(work))
            .is_none_or(|r| r.is_err())
        {
            self.metrics.running.set(0);
            self.health.job_ended();
            self.metrics.failure.inc();
            log::error!(run = id; "job failed: the runner thread is gone");
            return self.control.is_stopping().then_some(Exit::Idle);
        }

        let deadline = started_mono + self.settings.job_timeout;
        let mut stop_deadline: Option<Duration> = None;
        let control = self.control.clone();
        let mut hub = control.lock();
        loop {
            self.health.beat();
            if let Some(i) = hub.finished.iter().position(|f| f.id == id) {
                let f = hub.finished.swap_remove(i);
                drop(hub);
                self.record(f);
                return stop_deadline.map(|_| Exit::RunFinished);
            }
            self.reap(&mut hub);
            let now = self.clock.elapsed();
            if hub.stop && stop_deadline.is_none() {
                stop_deadline = Some(now + self.settings.shutdown_timeout);
                log::info!(
                    run = id,
                    shutdown_timeout_s = seconds(self.settings.shutdown_timeout);
                    "stopping: waiting for the running job to finish"
                );
            }
            if now >= deadline {
                drop(hub);
                cancel.cancel();
                self.metrics.failure.inc();
                self.metrics
                    .duration
                    .observe(self.settings.job_timeout.as_secs_f64());
                self.abandoned = Some(Abandoned { id });
                log::error!(
                    run = id,
                    scheduled = rfc3339(scheduled).as_str(),
                    job_timeout_s = seconds(self.settings.job_timeout);
                    "job failed: timed out; abandoned"
                );
                return stop_deadline.map(|_| Exit::RunAbandoned);
            }
            if stop_deadline.is_some_and(|sd| now >= sd) {
                drop(hub);
                cancel.cancel();
                log::warn!(
                    run = id,
                    running_for_s = seconds(now.saturating_sub(started_mono));
                    "stopping: shutdown timeout reached; abandoning the running job"
                );
                return Some(Exit::RunAbandoned);
            }
            let until = stop_deadline.map_or(deadline, |sd| sd.min(deadline));
            hub = control.wait(hub, self.clock.wait_slice(until - now));
        }
    }

    fn record(&mut self, f: Finished) {
        self.metrics.duration.observe(f.duration.as_secs_f64());
        match f.outcome {
            Outcome::Succeeded(report) => {
                self.metrics.success.inc();
                self.metrics.last_success.set(unix_seconds(f.ended));
                log::info!(
                    run = f.id,
                    duration_ms = millis(f.duration),
                    records = report.records;
                    "job completed"
                );
            }
            Outcome::Failed(error) => {
                self.metrics.failure.inc();
                log::error!(run = f.id, duration_ms = millis(f.duration), error = error.as_str(); "job failed");
            }
            Outcome::Panicked(panic) => {
                self.metrics.failure.inc();
                log::error!(run = f.id, duration_ms = millis(f.duration), error = panic.as_str(); "job failed: panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::job::JobError;
    use crate::schedule::parse_zone;
    use std::collections::VecDeque;
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::Instant;

    enum Step {
        Succeed,
        Fail,
        Panic,
        /// Takes this long on the fake clock.
        Take(Duration),
        /// Blocks until the test sends (or drops) the sender.
        Block(mpsc::Receiver<()>),
    }

    /// A job that does what the test scripted, and records each call's slot and whether the run
    /// had been cancelled by the time it returned.
    struct Script {
        clock: Arc<FakeClock>,
        steps: Mutex<VecDeque<Step>>,
        calls: Mutex<Vec<(DateTime<Utc>, bool)>>,
    }

    impl Job for Script {
        fn run(&self, ctx: &JobContext) -> Result<JobReport, JobError> {
            let step = self
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Succeed);
            let index = {
                let mut calls = self.calls.lock().unwrap();
                calls.push((ctx.scheduled, false));
                calls.len() - 1
            };
            let result = match step {
                Step::Succeed => Ok(JobReport { records: 7 }),
                Step::Fail => Err(JobError::new("database unreachable")),
                Step::Panic => panic!("job exploded"),
                Step::Take(d) => {
                    self.clock.advance(d);
                    Ok(JobReport { records: 7 })
                }
                Step::Block(rx) => {
                    let _ = rx.recv();
                    Ok(JobReport { records: 7 })
                }
            };
            self.calls.lock().unwrap()[index].1 = ctx.is_cancelled();
            result
        }
    }

    struct Harness {
        clock: Arc<FakeClock>,
        control: Control,
        metrics: WorkerMetrics,
        health: Arc<Health>,
        job: Arc<Script>,
        handle: Option<JoinHandle<Exit>>,
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn settings() -> Settings {
        Settings {
            run_on_start: false,
            job_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    fn start(expr: &str, now: &str, settings: Settings, steps: Vec<Step>) -> Harness {
        let clock = Arc::new(FakeClock::new(at(now)));
        let registry = prometheus::Registry::new();
        let metrics = WorkerMetrics::register(&registry);
        let health = Arc::new(Health::new(clock.clone(), settings.job_timeout));
        let control = Control::new();
        let job = Arc::new(Script {
            clock: clock.clone(),
            steps: Mutex::new(steps.into()),
            calls: Mutex::new(Vec::new()),
        });
        let schedule = Schedule::parse(expr, parse_zone("UTC").unwrap()).unwrap();
        let scheduler = Scheduler::new(
            schedule,
            job.clone(),
            clock.clone(),
            metrics.clone(),
            health.clone(),
            control.clone(),
            settings,
        );
        let handle = Some(std::thread::spawn(move || scheduler.run()));
        Harness {
            clock,
            control,
            metrics,
            health,
            job,
            handle,
        }
    }

    /// A minutely schedule whose 12:00 run blocks until the returned sender
    /// sends (or is dropped); returns once that run has started.
    fn start_running_a_blocked_job(settings: Settings) -> (Harness, mpsc::Sender<()>) {
        let (release, gate) = mpsc::channel();
        let h = start(
            "* * * * *",
            "2026-01-01T11:59:30Z",
            settings,
            vec![Step::Block(gate)],
        );
        h.wait_next("2026-01-01T12:00:00Z");
        h.advance_to("2026-01-01T12:00:00Z");
        wait_for("job running", || h.calls().len() == 1);
        (h, release)
    }

    /// Polls `cond` in real time (the loop reacts within a millisecond or so).
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    impl Harness {
        fn wait_next(&self, t: &str) {
            let want = unix_seconds(at(t));
            wait_for(&format!("next run {t}"), || {
                self.metrics.next_run.get() == want
            });
        }

        fn advance_to(&self, t: &str) {
            let d = (at(t) - self.clock.now()).to_std().unwrap();
            self.clock.advance(d);
        }

        fn calls(&self) -> Vec<(DateTime<Utc>, bool)> {
            self.job.calls.lock().unwrap().clone()
        }

        fn slots(&self) -> Vec<DateTime<Utc>> {
            self.calls().into_iter().map(|c| c.0).collect()
        }

        fn stop(&mut self) -> Exit {
            self.control.stop();
            self.join()
        }

        fn join(&mut self) -> Exit {
            self.handle.take().unwrap().join().unwrap()
        }
    }

    #[test]
    fn fires_on_minute_boundaries_without_real_waiting() {
        let mut h = start("* * * * *", "2026-01-01T11:59:30Z", settings(), vec![]);
        h.wait_next("2026-01-01T12:00:00Z");
        assert!(h.calls().is_empty(), "nothing runs before the slot");
        h.advance_to("2026-01-01T12:00:00Z");
        wait_for("first success", || h.metrics.success.get() == 1);
        h.wait_next("2026-01-01T12:01:00Z");
        h.advance_to("2026-01-01T12:01:00Z");
        wait_for("second success", || h.metrics.success.get() == 2);
        h.wait_next("2026-01-01T12:02:00Z");
        assert_eq!(
            h.slots(),
            [at("2026-01-01T12:00:00Z"), at("2026-01-01T12:01:00Z")]
        );
        assert_eq!(
            h.metrics.last_success.get(),
            unix_seconds(at("2026-01-01T12:01:00Z"))
        );
        assert_eq!(h.metrics.skipped.get(), 0);
        assert_eq!(h.metrics.running.get(), 0);
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn runs_once_at_start_when_asked() {
        let s = Settings {
            run_on_start: true,
            ..settings()
        };
        let (release, gate) = mpsc::channel();
        let mut h = start(
            "* * * * *",
            "2026-01-01T11:59:30Z",
            s,
            vec![Step::Block(gate)],
        );
        wait_for("run at start", || h.calls().len() == 1);
        // The next slot is already published while the start run is going.
        h.wait_next("2026-01-01T12:00:00Z");
        release.send(()).unwrap();
        wait_for("start run done", || h.metrics.success.get() == 1);
        h.wait_next("2026-01-01T12:00:00Z");
        assert_eq!(h.slots(), [at("2026-01-01T11:59:30Z")]);
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn an_overrun_skips_the_missed_slots_once_each_and_does_not_replay_them() {
        let steps = vec![Step::Take(Duration::from_secs(150))];
        let mut h = start("* * * * *", "2026-01-01T11:59:30Z", settings(), steps);
        h.wait_next("2026-01-01T12:00:00Z");
        h.advance_to("2026-01-01T12:00:00Z");
        // The run ends at 12:02:30: 12:01 and 12:02 were missed; the next run is 12:03.
        h.wait_next("2026-01-01T12:03:00Z");
        assert_eq!(h.metrics.skipped.get(), 2);
        assert_eq!(h.metrics.success.get(), 1);
        assert_eq!(h.metrics.duration.get_sample_sum(), 150.0);
        h.advance_to("2026-01-01T12:03:00Z");
        wait_for("second run", || h.metrics.success.get() == 2);
        assert_eq!(
            h.slots(),
            [at("2026-01-01T12:00:00Z"), at("2026-01-01T12:03:00Z")]
        );
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn errors_and_panics_are_failures_and_the_loop_goes_on() {
        let steps = vec![Step::Fail, Step::Panic, Step::Succeed];
        let mut h = start("* * * * *", "2026-01-01T11:59:30Z", settings(), steps);
        for (slot, next) in [
            ("2026-01-01T12:00:00Z", "2026-01-01T12:01:00Z"),
            ("2026-01-01T12:01:00Z", "2026-01-01T12:02:00Z"),
            ("2026-01-01T12:02:00Z", "2026-01-01T12:03:00Z"),
        ] {
            h.wait_next(slot);
            h.advance_to(slot);
            h.wait_next(next);
        }
        assert_eq!(h.metrics.failure.get(), 2);
        assert_eq!(h.metrics.success.get(), 1);
        assert_eq!(h.metrics.duration.get_sample_count(), 3);
        assert_eq!(h.metrics.running.get(), 0);
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn a_timed_out_run_is_a_failure_is_cancelled_and_blocks_later_slots_until_it_returns() {
        let (mut h, release) = start_running_a_blocked_job(settings());
        assert_eq!(h.metrics.running.get(), 1);
        h.advance_to("2026-01-01T12:00:31Z");
        wait_for("timeout counted", || h.metrics.failure.get() == 1);
        h.wait_next("2026-01-01T12:01:00Z");
        assert_eq!(h.metrics.duration.get_sample_sum(), 30.0);
        // The abandoned thread still runs: the 12:01 slot is skipped, not run alongside it.
        h.advance_to("2026-01-01T12:01:00Z");
        h.wait_next("2026-01-01T12:02:00Z");
        assert_eq!(h.metrics.skipped.get(), 1);
        assert_eq!(h.calls().len(), 1);
        assert_eq!(h.metrics.running.get(), 1);
        // Hanging past JOB_TIMEOUT + margin makes /health fail, so a restart can clear it.
        h.advance_to("2026-01-01T12:01:31Z");
        h.health.beat();
        assert!(h.health.check().is_err());
        release.send(()).unwrap();
        wait_for("abandoned run returned", || h.metrics.running.get() == 0);
        assert!(h.health.check().is_ok());
        assert!(h.calls()[0].1, "the abandoned run saw its cancellation");
        h.advance_to("2026-01-01T12:02:00Z");
        wait_for("next run", || h.metrics.success.get() == 1);
        assert_eq!(
            h.slots(),
            [at("2026-01-01T12:00:00Z"), at("2026-01-01T12:02:00Z")]
        );
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn stop_while_idle_ends_the_loop_at_once() {
        let mut h = start("@daily", "2026-01-01T11:59:30Z", settings(), vec![]);
        h.wait_next("2026-01-02T00:00:00Z");
        let t = Instant::now();
        assert_eq!(h.stop(), Exit::Idle);
        assert!(t.elapsed() < Duration::from_millis(500));
        assert!(h.calls().is_empty());
    }

    #[test]
    fn stop_during_a_run_lets_it_finish_and_starts_nothing_new() {
        let (mut h, release) = start_running_a_blocked_job(settings());
        h.control.stop();
        // Time passes (a slot too) while the job finishes within the shutdown timeout.
        h.advance_to("2026-01-01T12:00:09Z");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!h.handle.as_ref().unwrap().is_finished());
        release.send(()).unwrap();
        assert_eq!(h.join(), Exit::RunFinished);
        assert_eq!(h.metrics.success.get(), 1);
        assert_eq!(h.calls().len(), 1);
        assert!(
            !h.calls()[0].1,
            "a run that finished in time is not cancelled"
        );
    }

    #[test]
    fn stop_during_a_run_abandons_it_after_the_shutdown_timeout() {
        let (mut h, _release) = start_running_a_blocked_job(Settings {
            job_timeout: Duration::from_secs(300),
            ..settings()
        });
        h.control.stop();
        // Let the loop see the stop, then let fake seconds pass until it gives up.
        std::thread::sleep(Duration::from_millis(20));
        let t0 = h.clock.now();
        while !h.handle.as_ref().unwrap().is_finished() {
            h.clock.advance(Duration::from_millis(500));
            std::thread::sleep(Duration::from_millis(3));
            assert!(
                h.clock.now() - t0 < chrono::Duration::seconds(60),
                "never gave up"
            );
        }
        let waited = (h.clock.now() - t0).num_milliseconds();
        assert!(
            (10_000..30_000).contains(&waited),
            "gave up after {waited} ms"
        );
        assert_eq!(h.join(), Exit::RunAbandoned);
        assert_eq!(h.metrics.success.get(), 0);
    }

    #[test]
    fn a_late_wake_runs_once_and_counts_the_slots_it_slept_through() {
        let mut h = start("* * * * *", "2026-01-01T11:59:30Z", settings(), vec![]);
        h.wait_next("2026-01-01T12:00:00Z");
        // Suspend/resume: the wall clock jumps forward.
        h.clock.set_wall(at("2026-01-01T12:05:30Z"));
        h.wait_next("2026-01-01T12:06:00Z");
        assert_eq!(h.slots(), [at("2026-01-01T12:00:00Z")]);
        assert_eq!(h.metrics.skipped.get(), 5);
        assert_eq!(h.stop(), Exit::Idle);
    }

    #[test]
    fn after_the_clock_steps_back_wildcard_jobs_follow_it_and_fixed_jobs_do_not_repeat() {
        let mut h = start("* * * * *", "2026-01-01T11:59:30Z", settings(), vec![]);
        h.wait_next("2026-01-01T12:00:00Z");
        h.advance_to("2026-01-01T12:00:00Z");
        h.wait_next("2026-01-01T12:01:00Z");
        h.clock.set_wall(at("2026-01-01T11:30:10Z"));
        h.wait_next("2026-01-01T11:31:00Z");
        h.advance_to("2026-01-01T11:31:00Z");
        wait_for("run on the stepped clock", || h.metrics.success.get() == 2);
        assert_eq!(h.stop(), Exit::Idle);

        // A fixed-time job that ran at 12:00 does not run 12:00 again when the clock steps back to
        // 11:50; a wildcard one does (cronie's rule for backward jumps).
        let clock = Arc::new(FakeClock::new(at("2026-01-01T12:00:05Z")));
        let for_expr = |expr: &str| {
            let mut s = Scheduler::new(
                Schedule::parse(expr, parse_zone("UTC").unwrap()).unwrap(),
                Arc::new(Script {
                    clock: clock.clone(),
                    steps: Mutex::new(VecDeque::new()),
                    calls: Mutex::new(Vec::new()),
                }),
                clock.clone(),
                WorkerMetrics::register(&prometheus::Registry::new()),
                Arc::new(Health::new(clock.clone(), Duration::from_secs(30))),
                Control::new(),
                settings(),
            );
            s.last_fired = Some(at("2026-01-01T12:00:00Z"));
            s.after_backward_step(at("2026-01-01T11:50:00Z"))
        };
        assert_eq!(for_expr("0 12 * * *"), Some(at("2026-01-02T12:00:00Z")));
        assert_eq!(for_expr("0 11,12 * * *"), Some(at("2026-01-02T11:00:00Z")));
        assert_eq!(for_expr("*/10 12 * * *"), Some(at("2026-01-01T12:00:00Z")));
    }
}
