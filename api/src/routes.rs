//! The API's routes: liveness, readiness, service info and metrics.

use orion_shared::build_info::{COMMIT, VERSION};
use orion_shared::http::{Reply, Router};
use orion_shared::logging::push_timestamp;
use orion_shared::shutdown::Shutdown;
use prometheus::Registry;
use serde_json::json;
use std::time::SystemTime;

/// `/ready` answers 200 until a shutdown signal (or a fatal error) arrives,
/// then 503 at once, so load balancers stop sending before the listener
/// closes: readiness is `!shutdown.is_stopping()`, no state of its own.
pub fn router(environment: &str, shutdown: Shutdown, registry: Registry) -> Router {
    let health = HealthBody::new(environment);
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
            Reply::bytes(200, "application/json", health.render(SystemTime::now()))
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

/// The `/health` body, `{"environment":…,"service":"api","status":"ok","timestamp":…}`
/// and a newline: the bytes `Reply::json` writes for that object (serde_json
/// orders an object's keys), with everything but the timestamp rendered
/// once. It is the most frequent request (probes every few seconds, load
/// balancers), so it builds no JSON tree per request.
struct HealthBody {
    /// Up to the timestamp's opening quote.
    prefix: Vec<u8>,
}

impl HealthBody {
    fn new(environment: &str) -> HealthBody {
        let mut prefix = serde_json::to_vec(&json!({
            "environment": environment,
            "service": "api",
            "status": "ok",
        }))
        .unwrap_or_else(|_| b"{}".to_vec());
        // `{...}` -> `{...,"timestamp":"`: "timestamp" sorts after the others.
        prefix.pop();
        prefix.extend_from_slice(b",\"timestamp\":\"");
        HealthBody { prefix }
    }

    fn render(&self, now: SystemTime) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.prefix.len() + 28);
        body.extend_from_slice(&self.prefix);
        // A timestamp has no character to escape.
        push_timestamp(&mut body, now);
        body.extend_from_slice(b"\"}\n");
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn health_body_is_what_reply_json_writes() {
        for environment in ["production", "dev", "with \"quotes\" and \\ and \n", "é"] {
            let health = HealthBody::new(environment);
            for t in [
                UNIX_EPOCH + Duration::from_millis(1_796_000_000_123),
                SystemTime::now(),
            ] {
                let mut ts = Vec::new();
                push_timestamp(&mut ts, t);
                let expected = Reply::json(
                    200,
                    &json!({
                        "status": "ok",
                        "service": "api",
                        "environment": environment,
                        "timestamp": String::from_utf8(ts).unwrap(),
                    }),
                );
                assert_eq!(
                    String::from_utf8(health.render(t)).unwrap(),
                    String::from_utf8(expected.body).unwrap()
                );
            }
        }
    }
}
