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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of `/health`: `Reply::json`'s (keys in serde_json's
    /// order, escaped by it, a newline), the timestamp as every Orion
    /// timestamp is written.
    #[test]
    fn health_body_bytes() {
        for environment in ["production", "dev", "with \"quotes\" and \\ and \n", "é"] {
            let router = router(environment, Shutdown::new(), Registry::new());
            let reply = router.find("/health").expect("route").call();
            assert_eq!(
                (reply.status, reply.content_type),
                (200, "application/json")
            );
            let body = String::from_utf8(reply.body).unwrap();
            let env = serde_json::to_string(environment).unwrap();
            let prefix = format!(
                "{{\"environment\":{env},\"service\":\"api\",\"status\":\"ok\",\"timestamp\":\""
            );
            let ts = body
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix("\"}\n"))
                .unwrap_or_else(|| panic!("{body:?}"));
            // 2026-12-01T21:54:57.123Z
            let shape = ts.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                10 => b == b'T',
                13 | 16 => b == b':',
                19 => b == b'.',
                23 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
            assert!(ts.len() == 24 && shape, "{ts}");
        }
    }
}
