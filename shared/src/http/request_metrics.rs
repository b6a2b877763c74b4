//! [`RequestMetrics`]: the per-request counter and latency histogram.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// `http_requests_total` and `http_request_duration_seconds`, labelled by
/// method, route template and status code.
#[derive(Clone)]
pub struct RequestMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

/// Buckets from 5 ms to 10 s; 2 s is the latency alert's threshold and must
/// be a bucket boundary for the p95 > 2 s condition to be exact.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
];

impl RequestMetrics {
    pub fn register(registry: &Registry) -> RequestMetrics {
        let labels = &["method", "route", "status_code"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            labels,
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from picking up a request to having written its response.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            labels,
        )
        .expect("metric");
        crate::metrics::register(registry, &requests);
        crate::metrics::register(registry, &duration);
        RequestMetrics { requests, duration }
    }
}
