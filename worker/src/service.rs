//! Wiring: logging, metrics, the metrics port, signals, and the scheduler loop on the main thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orion_shared::http::Server;
use orion_shared::shutdown::{Event, Shutdown};

use crate::clock::{Clock, SystemClock};
use crate::config::WorkerConfig;
use crate::health::Health;
use crate::job::UpdateTodaysTimestamps;
use crate::metrics::WorkerMetrics;
use crate::routes;
use crate::scheduler::{Control, Exit, Scheduler, Settings};

/// The name in logs, metrics (`orion_build_info{service}`) and the scrape job.
pub const SERVICE: &str = "worker";

/// How long the metrics port may take to close its connections at exit. Nothing is lost by
/// closing a scrape early, and SIGTERM while idle must end the process within a second.
const HTTP_DRAIN: Duration = Duration::from_millis(300);

/// Runs the worker until a signal; returns the process exit code.
pub fn run(cfg: WorkerConfig) -> i32 {
    orion_shared::logging::init(SERVICE, &cfg.common.environment, &cfg.common.log_level);
    orion_shared::logging::install_panic_hook();
    let shutdown = Shutdown::install();

    if let Err(e) = cfg.common.http.prepare_fd_limit() {
        eprintln!("orion-worker: configuration error: {e}");
        return orion_shared::config::EXIT_CONFIG;
    }

    let registry = orion_shared::metrics::new_registry(SERVICE);
    let metrics = WorkerMetrics::register(&registry);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let health = Arc::new(Health::new(clock.clone(), cfg.job_timeout));
    let router = routes::router(Arc::new(routes::State {
        environment: cfg.common.environment.clone(),
        registry: registry.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    }));
    let addr = SocketAddr::from(([0, 0, 0, 0], cfg.metrics_port));
    let server = match Server::start(
        &cfg.common.http,
        addr,
        router,
        None,
        &registry,
        shutdown.clone(),
    ) {
        Ok(server) => server,
        Err(e) => {
            log::error!(port = cfg.metrics_port, error = e.to_string().as_str(); "cannot serve metrics");
            return 1;
        }
    };
    log::info!(port = server.local_addr().port(); "serving /health, /ready and /metrics");

    // The loop waits on its own condvar (job completions and stop requests in one place); this
    // thread forwards the shutdown signal to it.
    let control = Control::new();
    {
        let (shutdown, control) = (shutdown.clone(), control.clone());
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Event::Fatal(why) = shutdown.wait() {
                    log::error!(reason = why.as_str(); "fatal: stopping");
                }
                control.stop();
            });
        if let Err(e) = spawned {
            log::error!(error = e.to_string().as_str(); "cannot start the signal thread");
            return 1;
        }
    }

    let job = Arc::new(UpdateTodaysTimestamps::new(
        cfg.job_duration,
        cfg.job_failure_rate,
    ));
    let exit = Scheduler::new(
        cfg.schedule,
        job,
        clock,
        metrics,
        health,
        control,
        Settings {
            run_on_start: cfg.run_on_start,
            job_timeout: cfg.job_timeout,
            shutdown_timeout: cfg.common.shutdown_timeout,
        },
    )
    .run();

    server.drain(HTTP_DRAIN);
    drop(server);
    let fatal = matches!(shutdown.wait_timeout(Duration::ZERO), Some(Event::Fatal(_)));
    let code = i32::from(fatal || exit == Exit::Failed);
    let how = match exit {
        Exit::Idle => "idle",
        Exit::RunFinished => "after the running job finished",
        Exit::RunAbandoned => "abandoning the running job",
        Exit::Failed => "failed to start",
    };
    log::info!(exit_code = code, how = how; "worker stopped");
    code
}
