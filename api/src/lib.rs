//! orion-api: the HTTP API service.
//!
//! `main.rs` only parses the command line; [`run`] reads the configuration
//! and hands the service to `orion_shared::service::serve`, which owns the
//! lifecycle (logging, open-files budget, registry, server, stop protocol).
#![forbid(unsafe_code)]

pub mod config;
pub mod routes;

use orion_shared::config::{exit_on_error, Env};
use orion_shared::http::RequestMetrics;
use orion_shared::service::{serve, Parts, Spec};

pub const SERVICE: &str = "api";

/// Runs the API until a signal (exit 0) or a fatal error (exit 1); a bad
/// environment exits 2 before anything is logged. Returns the exit code.
pub fn run() -> i32 {
    let cfg = exit_on_error("orion-api", config::Config::from_env(&Env::from_process()));
    let spec = Spec {
        name: SERVICE,
        binary: "orion-api",
        port: cfg.port,
        listening: "api listening",
    };
    let environment = cfg.common.environment.clone();
    serve(&cfg.common, spec, |ctx| Parts {
        request_metrics: Some(RequestMetrics::register(&ctx.registry)),
        router: routes::router(&environment, ctx.shutdown.clone(), ctx.registry.clone()),
        work: None,
    })
}
