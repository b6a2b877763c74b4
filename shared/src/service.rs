//! The service skeleton both Orion services run on: [`CommonConfig`] (the
//! settings every service reads, gathered from the modules that own them)
//! and [`serve`], which owns the whole lifecycle and the stop protocol, so
//! the API and the worker cannot drift apart in the order of their steps.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prometheus::Registry;

use crate::config::{environment, error_line, ConfigError, Env, Var, EXIT_CONFIG};
use crate::http::{HttpConfig, RequestMetrics, Router, Server, HTTP_VARS};
use crate::logging::{validate_filter, LOG_LEVEL_EXPECTED};
use crate::shutdown::{Event, Fatal, Shutdown};

/// How long handler threads may take to return once unblocked. They are
/// idle after a clean drain and return at once; after a drain that timed
/// out one may still be writing to a slow peer (bounded by the send
/// timeout), and the process does not wait that long for it.
const JOIN_GRACE: Duration = Duration::from_millis(500);

/// How much later than its own `SHUTDOWN_TIMEOUT` the work may return
/// before `serve` stops waiting for it: the work counts its timeout from
/// when it notices the stop, and notices it a little after the signal.
const WORK_GRACE: Duration = Duration::from_secs(1);

/// What [`serve`] needs to know about a service besides its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// `service` in every log line and in `orion_build_info`.
    pub name: &'static str,
    /// The binary, as configuration errors name it (`orion-api: ...`).
    pub binary: &'static str,
    /// The port the HTTP server binds on 0.0.0.0.
    pub port: u16,
    /// The message of the line logged once the port accepts connections
    /// (tests and operators wait for it; it carries `port`).
    pub listening: &'static str,
}

/// What a service's builder gets: the registry its metrics go to and the
/// shutdown its routes read (`/ready` is `!shutdown.is_stopping()`).
pub struct Context {
    pub registry: Registry,
    pub shutdown: Shutdown,
}

/// What a service hands to [`serve`]: its routes, whether requests are
/// measured, and the work it runs beside the server, if any.
pub struct Parts {
    pub router: Router,
    pub request_metrics: Option<RequestMetrics>,
    pub work: Option<Work>,
}

/// Work a service runs on its own thread beside the HTTP server (the
/// worker's cron loop). `run` returns once `stop` has been called (within
/// `SHUTDOWN_TIMEOUT`, which the work enforces itself) or when it cannot go
/// on; ending before a stop is fatal (exit 1).
pub struct Work {
    /// The thread's name.
    pub name: &'static str,
    pub run: Box<dyn FnOnce() -> WorkEnd + Send>,
    pub stop: Box<dyn Fn() + Send>,
}

/// How [`Work::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkEnd {
    /// False makes the exit code 1.
    pub ok: bool,
    /// Logged as `how` on the last line.
    pub how: &'static str,
}

/// Runs a service from start to exit and returns the process exit code:
/// 0 after a graceful stop, 1 after a fatal error (or work that failed),
/// 2 when the open-files limit cannot hold `HTTP_MAX_CONNECTIONS`; a second
/// signal exits 130 at once (in [`Shutdown`]). `build` makes the service's
/// parts once the registry and the shutdown exist. The configuration is
/// already valid (its errors went to stderr before anything was logged).
///
/// The steps, and why each is where it is:
/// 1. **Logging**, first: every later step may warn (the open-files limit
///    that cannot be raised, a port in use), and a line logged before the
///    logger exists is lost without a trace.
/// 2. **Signals** ([`Shutdown::install`]): from here a SIGTERM is a graceful
///    stop, not the default action that kills the process mid-start.
/// 3. **Open-files budget**: raise the soft limit to the hard one and check
///    that `HTTP_MAX_CONNECTIONS` fits (one descriptor per connection, two
///    per link to tiny_http, 64 spare). Before anything opens descriptors:
///    a cap the limit cannot hold is a configuration error (exit 2), not a
///    stream of `EMFILE`s once the connections come.
/// 4. **Registry and the service's parts** (metrics, routes, work): the
///    registry exists before the server, which registers its own metrics.
/// 5. **[`Server::start`]**: binds the port (exit 1 if it cannot), starts
///    tiny_http's handler threads behind the front and the front itself;
///    then the listening line, so whoever waits for it can connect at once.
/// 6. **The work's thread**, once `/health` and `/metrics` answer (the
///    worker's first job may run at start).
/// 7. **Wait** for the first signal or a fatal report.
///
/// Then the stop protocol, counted from the signal at T:
/// - readiness answers 503 at once (routes read [`Shutdown::is_stopping`])
///   and the work is told to stop (a running job may finish within
///   `SHUTDOWN_TIMEOUT`; nothing new starts);
/// - serving goes on until T + `SHUTDOWN_DELAY`, so load balancers notice
///   the 503 before the listener closes; and until the work has ended, so
///   `/health` answers while a job finishes;
/// - [`Server::stop_accepting`], once: new connections are refused;
/// - [`Server::drain`] until T + `SHUTDOWN_DELAY` + `SHUTDOWN_TIMEOUT`:
///   idle connections are closed, every request under way is answered
///   (`Connection: close`) and its connection closed;
/// - [`Server::join_handlers`]: every handler thread, however many, is
///   unblocked and joined (a short grace for one still writing); exit 0.
///
/// A fatal report skips the delay and the drain (the process cannot serve
/// and should be restarted now): the work is stopped and awaited, the
/// handler threads joined, exit 1. A fatal report during a graceful stop
/// makes its exit code 1 too.
pub fn serve(common: &CommonConfig, spec: Spec, build: impl FnOnce(&Context) -> Parts) -> i32 {
    // 1. Logging.
    crate::logging::init(spec.name, &common.environment, &common.log_level);
    crate::logging::install_panic_hook();
    // 2. Signals.
    let shutdown = Shutdown::install();
    // 3. Open-files budget.
    let nofile = match open_files_budget(&common.http) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}", error_line(spec.binary, &e));
            return EXIT_CONFIG;
        }
    };
    // 4. Registry and parts.
    let ctx = Context {
        registry: crate::metrics::new_registry(spec.name),
        shutdown: shutdown.clone(),
    };
    let parts = build(&ctx);
    // 5. The server.
    let addr = SocketAddr::from(([0, 0, 0, 0], spec.port));
    let http = &common.http;
    let mut server = match Server::start(
        http,
        addr,
        parts.router,
        parts.request_metrics,
        &ctx.registry,
        shutdown.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            log::error!(port = spec.port, error = e.to_string().as_str(); "cannot listen");
            return 1;
        }
    };
    log::info!(
        port = server.local_addr().port(),
        version = crate::build_info::VERSION,
        commit = crate::build_info::COMMIT,
        threads = http.threads,
        max_connections = http.max_connections,
        header_timeout_ms = http.header_timeout.as_millis() as u64,
        idle_timeout_ms = http.idle_timeout.as_millis() as u64,
        send_timeout_ms = http.send_timeout.as_millis() as u64,
        pipeline_depth = http.pipeline_depth,
        open_files_limit = nofile;
        "{}", spec.listening
    );
    // 6. The work.
    let work = match parts.work.map(|w| start_work(w, &shutdown)).transpose() {
        Ok(w) => w,
        Err(e) => {
            log::error!(error = e.to_string().as_str(); "cannot start the service's work thread");
            server.join_handlers(JOIN_GRACE);
            return 1;
        }
    };
    // 7. Wait.
    let event = shutdown.wait();
    let t = Instant::now();
    let graceful = match &event {
        Event::Stop => {
            log::info!(
                delay_ms = common.shutdown_delay.as_millis() as u64,
                timeout_ms = common.shutdown_timeout.as_millis() as u64;
                "shutting down: readiness is 503, still serving for the delay"
            );
            true
        }
        Event::Fatal(why) => {
            let why = why.to_string();
            log::error!(reason = why.as_str(); "fatal error; exiting");
            false
        }
    };
    // The stop protocol.
    let delay = if graceful {
        common.shutdown_delay
    } else {
        Duration::ZERO
    };
    let deadline = t + delay + common.shutdown_timeout;
    let end = work.map(|w| w.stop_and_wait(deadline));
    if let Some(rest) = (t + delay).checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    server.stop_accepting();
    let drained = graceful && server.drain(deadline.saturating_duration_since(Instant::now()));
    let joined = server.join_handlers(JOIN_GRACE);
    let fatal = matches!(shutdown.wait_timeout(Duration::ZERO), Some(Event::Fatal(_)));
    let code = i32::from(fatal || end.is_some_and(|e| !e.ok));
    match end {
        Some(end) => log::info!(
            exit_code = code,
            drained = drained,
            handler_threads = joined.threads,
            handlers_joined = joined.joined,
            how = end.how;
            "{} stopped", spec.name
        ),
        None => log::info!(
            exit_code = code,
            drained = drained,
            handler_threads = joined.threads,
            handlers_joined = joined.joined;
            "{} stopped", spec.name
        ),
    }
    code
}

/// Step 3: the limit in force after raising it, checked against the cap.
fn open_files_budget(http: &HttpConfig) -> Result<u64, ConfigError> {
    let nofile = match crate::http::sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            log::warn!(error = e.to_string().as_str(); "could not raise the open-files limit; assuming 1024");
            1024
        }
    };
    http.check_fd_budget(nofile)?;
    log::info!(
        open_files_limit = nofile,
        needed = http.fds_needed(),
        max_connections = http.max_connections;
        "open-files budget"
    );
    Ok(nofile)
}

/// The work's thread and how to stop it.
struct Running {
    stop: Box<dyn Fn() + Send>,
    ended: mpsc::Receiver<WorkEnd>,
    name: &'static str,
}

fn start_work(work: Work, shutdown: &Shutdown) -> std::io::Result<Running> {
    let (tx, ended) = mpsc::channel();
    let shutdown = shutdown.clone();
    let Work { name, run, stop } = work;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The panic hook has logged the panic itself.
            let end = catch_unwind(AssertUnwindSafe(run)).unwrap_or(WorkEnd {
                ok: false,
                how: "panicked",
            });
            if !shutdown.is_stopping() {
                shutdown.fatal(Fatal::WorkEnded { name, how: end.how });
            }
            let _ = tx.send(end);
        })?;
    Ok(Running { stop, ended, name })
}

impl Running {
    /// Tells the work to stop and waits for it until `deadline` +
    /// [`WORK_GRACE`] (it keeps its own `SHUTDOWN_TIMEOUT`, so this bound is
    /// only a backstop).
    fn stop_and_wait(self, deadline: Instant) -> WorkEnd {
        (self.stop)();
        let left = (deadline + WORK_GRACE).saturating_duration_since(Instant::now());
        self.ended.recv_timeout(left).unwrap_or_else(|_| {
            log::error!(thread = self.name; "the service's work did not stop within the shutdown timeout");
            WorkEnd {
                ok: false,
                how: "did not stop in time",
            }
        })
    }
}

/// The settings both services share: identity, logging, shutdown and the
/// HTTP serving layer.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub environment: String,
    pub log_level: String,
    /// How long to keep serving after SIGTERM with `/ready` at 503, so load
    /// balancers notice before the listener closes.
    pub shutdown_delay: Duration,
    /// How long in-flight work may take to finish after that.
    pub shutdown_timeout: Duration,
    pub http: HttpConfig,
}

/// The variables [`CommonConfig::from_env`] reads besides the serving
/// layer's ([`crate::http::HTTP_VARS`]).
pub const COMMON_VARS: &[Var] = &[
    Var {
        name: "NODE_ENV",
        default: "development",
        meaning: "environment name in logs, /health and / (wins over APP_ENV)",
        empty: None,
    },
    Var {
        name: "APP_ENV",
        default: "development",
        meaning: "the same, when NODE_ENV is unset",
        empty: None,
    },
    Var {
        name: "LOG_LEVEL",
        default: "info",
        meaning: "off|error|warn|info|debug|trace, or directives: warn,orion_api=debug",
        empty: None,
    },
    Var {
        name: "SHUTDOWN_DELAY",
        default: "0s",
        meaning: "after SIGTERM, keep serving with /ready at 503 this long (0s-5m)",
        empty: None,
    },
    Var {
        name: "SHUTDOWN_TIMEOUT",
        default: "10s",
        meaning: "then wait this long for requests or the job in flight (0s-1h)",
        empty: None,
    },
];

/// Every variable [`CommonConfig::from_env`] reads: [`COMMON_VARS`] then
/// [`crate::http::HTTP_VARS`].
pub fn common_vars() -> Vec<Var> {
    COMMON_VARS.iter().chain(HTTP_VARS).copied().collect()
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<CommonConfig, ConfigError> {
        let log_level = env
            .text("LOG_LEVEL", LOG_LEVEL_EXPECTED)?
            .unwrap_or("info")
            .to_string();
        validate_filter(&log_level).map_err(|why| {
            ConfigError::new("LOG_LEVEL", env.raw("LOG_LEVEL").unwrap_or(""), why)
        })?;
        Ok(CommonConfig {
            environment: environment(env)?,
            log_level,
            shutdown_delay: env.duration(
                "SHUTDOWN_DELAY",
                Duration::ZERO,
                Duration::from_secs(300),
            )?,
            shutdown_timeout: env.duration(
                "SHUTDOWN_TIMEOUT",
                Duration::from_secs(10),
                Duration::from_secs(3600),
            )?,
            http: HttpConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_config_rejects_bad_log_level() {
        let env = Env::from_pairs([("LOG_LEVEL", "loud")]);
        let e = CommonConfig::from_env(&env).unwrap_err();
        assert_eq!(e.var, "LOG_LEVEL");
        let env = Env::from_pairs([("LOG_LEVEL", "warn,orion_api=debug")]);
        assert!(CommonConfig::from_env(&env).is_ok());
        let env = Env::from_pairs([("LOG_LEVEL", "")]);
        let e = CommonConfig::from_env(&env).unwrap_err();
        assert!(e.var == "LOG_LEVEL" && e.empty, "{e}");
    }

    #[test]
    fn the_table_is_what_is_read() {
        let env = Env::default();
        CommonConfig::from_env(&env).unwrap();
        let mut table: Vec<&str> = common_vars().iter().map(|v| v.name).collect();
        table.sort_unstable();
        assert_eq!(env.names_read(), table);
    }
}
