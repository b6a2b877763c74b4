//! The metrics port: `/health`, `/ready` and `/metrics`, on the shared serving layer (same
//! connection defence as the API; every other path is a 404 there).

use std::sync::Arc;

use orion_shared::http::{Reply, Router};
use orion_shared::shutdown::Shutdown;
use prometheus::Registry;
use serde_json::json;

use crate::health::Health;

pub struct State {
    pub environment: String,
    pub registry: Registry,
    pub health: Arc<Health>,
    pub shutdown: Shutdown,
}

pub fn router(state: Arc<State>) -> Router {
    let (h, r, m) = (state.clone(), state.clone(), state);
    Router::new()
        .get_quiet("/health", move || health(&h))
        .get_quiet("/ready", move || ready(&r))
        .get_quiet("/metrics", move || Reply::metrics(&m.registry))
}

/// Liveness: 200 while the scheduler loop heartbeats and no job hangs, else 503 with the reason.
fn health(state: &State) -> Reply {
    let timestamp = orion_shared::logging::timestamp_now();
    let running = state.health.job_running_for().map(|d| d.as_secs_f64());
    let heartbeat_age = state.health.heartbeat_age().as_secs_f64();
    match state.health.check() {
        Ok(()) => Reply::json(
            200,
            &json!({
                "status": "ok",
                "service": "worker",
                "environment": state.environment,
                "timestamp": timestamp,
                "heartbeat_age_seconds": heartbeat_age,
                "job_running_seconds": running,
            }),
        ),
        Err(reason) => {
            log::error!(reason = reason.as_str(); "health check failing: worker is stuck");
            Reply::json(
                503,
                &json!({
                    "status": "stuck",
                    "service": "worker",
                    "environment": state.environment,
                    "timestamp": timestamp,
                    "reason": reason,
                }),
            )
        }
    }
}

/// Readiness: 200 until a shutdown signal, then 503 (the worker takes no traffic, but tools and
/// dashboards read it the same way as the API's).
fn ready(state: &State) -> Reply {
    if state.shutdown.is_stopping() {
        Reply::json(
            503,
            &json!({ "status": "shutting down", "service": "worker" }),
        )
    } else {
        Reply::json(200, &json!({ "status": "ready", "service": "worker" }))
    }
}
