//! The Prometheus registry each service serves on `/metrics`.
//!
//! A custom registry (not the crate's global default) so that tests can build
//! several and nothing registers behind our back. `prometheus` is built
//! without default features (no protobuf); the `process` feature gives the
//! standard `process_*` metrics from /proc.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// A registry with process metrics and `orion_build_info{service,version,commit} 1`.
pub fn new_registry(service: &str) -> Registry {
    let registry = Registry::new_custom(None, None).expect("registry");
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector");
    let info = IntGaugeVec::new(
        Opts::new(
            "orion_build_info",
            "Build information of the running binary; the value is always 1.",
        ),
        &["service", "version", "commit"],
    )
    .expect("build info");
    info.with_label_values(&[
        service,
        crate::build_info::VERSION,
        crate::build_info::COMMIT,
    ])
    .set(1);
    registry
        .register(Box::new(info))
        .expect("register build info");
    registry
}

/// Text exposition format 0.0.4, the content type Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * 1024);
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        log::error!(error = e.to_string().as_str(); "metrics encoding failed");
    }
    out
}

/// Registers a collector, panicking on a programming error (duplicate name).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: &C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered twice");
    c.clone()
}
