//! The API's routes: liveness, readiness, service info and metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use orion_shared::build_info::{COMMIT, VERSION};
use orion_shared::http::{Reply, Router};
use prometheus::Registry;
use serde_json::json;

/// Readiness: true while serving, false from the moment a shutdown signal
/// arrives (so load balancers stop sending before the listener closes).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn now_rfc3339() -> String {
    orion_shared::logging::timestamp_now()
}

pub fn router(environment: &str, ready: Readiness, registry: Registry) -> Router {
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
                    "timestamp": now_rfc3339(),
                }),
            )
        })
        .get_quiet("/ready", move || {
            let ok = ready.get();
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
        .get_quiet("/metrics", move || {
            Reply::bytes(
                200,
                orion_shared::metrics::CONTENT_TYPE,
                orion_shared::metrics::encode(&registry),
            )
        })
}
