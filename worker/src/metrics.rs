//! The worker's own metrics (the shared registry adds process, build and connection metrics).
//!
//! They answer the operator's questions: is the job succeeding (`worker_jobs_*_total`,
//! `worker_last_success_timestamp_seconds` for "nothing succeeded for too long"), is it slow
//! (`worker_job_duration_seconds`), is it falling behind (`worker_jobs_skipped_total`), is it
//! running now (`worker_job_running`) and when will it run next (`worker_next_run_timestamp_seconds`).

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Buckets from 10 ms to 10 min: a stub run takes 200 ms, a real database job seconds to minutes,
/// and the default `JOB_TIMEOUT` (5 min) must fall inside the range so timeouts are visible.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone)]
pub struct WorkerMetrics {
    pub success: IntCounter,
    pub failure: IntCounter,
    pub duration: Histogram,
    pub skipped: IntCounter,
    pub running: IntGauge,
    pub last_success: Gauge,
    pub next_run: Gauge,
}

impl WorkerMetrics {
    pub fn register(registry: &Registry) -> WorkerMetrics {
        use orion_shared::metrics::register;
        let counter = |name: &str, help: &str| {
            register(registry, &IntCounter::new(name, help).expect("metric"))
        };
        let gauge =
            |name: &str, help: &str| register(registry, &Gauge::new(name, help).expect("metric"));
        WorkerMetrics {
            success: counter("worker_jobs_success_total", "Job runs that completed successfully."),
            failure: counter(
                "worker_jobs_failure_total",
                "Job runs that failed: returned an error, panicked or exceeded JOB_TIMEOUT.",
            ),
            duration: register(
                registry,
                &Histogram::with_opts(
                    HistogramOpts::new(
                        "worker_job_duration_seconds",
                        "Duration of finished job runs (successful or failed), in seconds.",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                )
                .expect("metric"),
            ),
            skipped: counter(
                "worker_jobs_skipped_total",
                "Scheduled slots not run because the previous run was still running or the worker was not awake (suspend, clock step).",
            ),
            running: register(
                registry,
                &IntGauge::new("worker_job_running", "1 while a job run is executing, else 0.")
                    .expect("metric"),
            ),
            last_success: gauge(
                "worker_last_success_timestamp_seconds",
                "Unix time of the last successful run's end; 0 until the first success.",
            ),
            next_run: gauge(
                "worker_next_run_timestamp_seconds",
                "Unix time of the next scheduled run.",
            ),
        }
    }
}

/// Seconds since the Unix epoch, with millisecond precision, for timestamp gauges.
pub fn unix_seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}
