//! The API's routes: liveness, readiness, service info and metrics.

use orion_shared::build_info::{COMMIT, VERSION};
use orion_shared::http::{Reply, Router};
use orion_shared::logging::timestamp_now;
use orion_shared::shutdown::Shutdown;
use prometheus::Registry;
use serde_json::json;

/// `/ready` answers 200 until a shutdown signal (or a fatal error) arrives,
/// then 503 at once, so load balancers stop sending before the listener
/// closes: readiness is `!shutdown.is_stopping()`, no state of its own.
pub fn router(environment: &str, shutdown: Shutdown, registry: Registry) -> Router {
    let env_health = environment.to_string();
    let env_ready = environment.to_string();
    let info = Reply::json(
        200,
        &json!({
            "service": "api",
            "version": VERSION,
            "commit": COMMIT,
            "environment": environment,
        }),
    );
    Router::new()
        .get_quiet("/health", move || {
            Reply::json(
                200,
                &json!({
                    "status": "ok",
                    "service": "api",
                    "environment": env_health,
                    "timestamp": timestamp_now(),
                }),
            )
        })
        .get_quiet("/ready", move || {
            let ok = !shutdown.is_stopping();
            Reply::json(
                if ok { 200 } else { 503 },
                &json!({
                    "status": if ok { "ready" } else { "shutting down" },
                    "service": "api",
                    "environment": env_ready,
                }),
            )
        })
        .get("/", move || info.clone())
        .get_quiet("/metrics", move || Reply::metrics(&registry))
}
