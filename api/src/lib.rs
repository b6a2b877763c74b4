//! orion-api: the HTTP API service.
//!
//! `main.rs` only parses the command line; [`run`] is the service:
//! config → logging → metrics → server → wait for a signal → graceful stop.
#![forbid(unsafe_code)]

pub mod config;
pub mod routes;

use std::net::SocketAddr;

use orion_shared::config::{exit_on_error, Env};
use orion_shared::http::{RequestMetrics, Server};
use orion_shared::shutdown::{Event, Shutdown};

pub const SERVICE: &str = "api";

/// Runs the API until a signal (exit 0) or a fatal error (exit 1); returns
/// the exit code.
pub fn run() -> i32 {
    let env = Env::from_process();
    let cfg = exit_on_error("orion-api", config::Config::from_env(&env));
    let nofile = exit_on_error("orion-api", cfg.common.http.prepare_fd_limit());
    orion_shared::logging::init(SERVICE, &cfg.common.environment, &cfg.common.log_level);
    orion_shared::logging::install_panic_hook();

    let shutdown = Shutdown::install();
    let registry = orion_shared::metrics::new_registry(SERVICE);
    let metrics = RequestMetrics::register(&registry);
    let router = routes::router(&cfg.common.environment, shutdown.clone(), registry.clone());
    let addr = SocketAddr::from(([0, 0, 0, 0], cfg.port));
    let server = match Server::start(
        &cfg.common.http,
        addr,
        router,
        Some(metrics),
        &registry,
        shutdown.clone(),
    ) {
        Ok(s) => s,
        Err(e) => {
            log::error!(port = cfg.port, error = e.to_string().as_str(); "cannot listen");
            return 1;
        }
    };
    let http = &cfg.common.http;
    log::info!(
        port = server.local_addr().port(),
        version = orion_shared::build_info::VERSION,
        commit = orion_shared::build_info::COMMIT,
        threads = http.threads,
        max_connections = http.max_connections,
        header_timeout_ms = http.header_timeout.as_millis() as u64,
        idle_timeout_ms = http.idle_timeout.as_millis() as u64,
        send_timeout_ms = http.send_timeout.as_millis() as u64,
        pipeline_depth = http.pipeline_depth,
        open_files_limit = nofile;
        "api listening"
    );

    match shutdown.wait() {
        Event::Fatal(why) => {
            log::error!(reason = why.as_str(); "fatal error; exiting");
            1
        }
        Event::Stop => {
            let delay = cfg.common.shutdown_delay;
            log::info!(delay_ms = delay.as_millis() as u64, timeout_ms = cfg.common.shutdown_timeout.as_millis() as u64; "shutting down: readiness is 503, still serving for the delay");
            std::thread::sleep(delay);
            server.stop_accepting();
            let clean = server.drain(cfg.common.shutdown_timeout);
            log::info!(drained = clean; "stopped");
            0
        }
    }
}
