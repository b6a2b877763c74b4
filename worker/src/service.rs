//! Wiring: the worker's parts on the shared service skeleton (`orion_shared::service::serve`,
//! which owns logging, the open-files budget, the metrics port and the stop protocol), with the
//! scheduler loop as the work that runs beside the metrics port.

use std::sync::Arc;

use orion_shared::service::{serve, Parts, Spec, Work, WorkEnd};

use crate::clock::{Clock, SystemClock};
use crate::config::WorkerConfig;
use crate::health::Health;
use crate::job::UpdateTodaysTimestamps;
use crate::metrics::WorkerMetrics;
use crate::routes;
use crate::scheduler::{Control, Exit, Scheduler, Settings};

/// The name in logs, metrics (`orion_build_info{service}`) and the scrape job.
pub const SERVICE: &str = "worker";

/// Runs the worker until a signal; returns the process exit code.
///
/// On SIGTERM `serve` tells the loop to stop at once (a running job may finish within
/// `SHUTDOWN_TIMEOUT`; `/ready` is 503, `/health` still answers) and closes the metrics port
/// only once the loop has returned; the last line, "worker stopped", says `how`.
pub fn run(cfg: WorkerConfig) -> i32 {
    let spec = Spec {
        name: SERVICE,
        binary: "orion-worker",
        port: cfg.metrics_port,
        listening: "serving /health, /ready and /metrics",
    };
    let common = cfg.common.clone();
    serve(&common, spec, move |ctx| {
        let metrics = WorkerMetrics::register(&ctx.registry);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let health = Arc::new(Health::new(clock.clone(), cfg.job_timeout));
        let router = routes::router(Arc::new(routes::State {
            environment: cfg.common.environment.clone(),
            registry: ctx.registry.clone(),
            health: health.clone(),
            shutdown: ctx.shutdown.clone(),
        }));
        // The loop waits on its own condvar (job completions and stop requests in one place);
        // `serve` posts the stop there.
        let control = Control::new();
        let job = Arc::new(UpdateTodaysTimestamps::new(
            cfg.job_duration,
            cfg.job_failure_rate,
        ));
        let scheduler = Scheduler::new(
            cfg.schedule,
            job,
            clock,
            metrics,
            health,
            control.clone(),
            Settings {
                run_on_start: cfg.run_on_start,
                job_timeout: cfg.job_timeout,
                shutdown_timeout: cfg.common.shutdown_timeout,
            },
        );
        Parts {
            router,
            request_metrics: None,
            work: Some(Work {
                name: "scheduler",
                run: Box::new(move || work_end(scheduler.run())),
                stop: Box::new(move || control.stop()),
            }),
        }
    })
}

/// The loop's exit as the skeleton reports it.
fn work_end(exit: Exit) -> WorkEnd {
    let (ok, how) = match exit {
        Exit::Idle => (true, "idle"),
        Exit::RunFinished => (true, "after the running job finished"),
        Exit::RunAbandoned => (true, "abandoning the running job"),
        Exit::Failed => (false, "failed to start"),
    };
    WorkEnd { ok, how }
}
