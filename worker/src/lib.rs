//! orion-worker: runs the "update today's records" job on a cron schedule, with metrics and health.
//!
//! One concept per module, in the order a request for "run the job at 09:00 in Berlin" meets them:
//! - [`config`]: the environment, validated (exit 2 on anything wrong);
//! - [`schedule`]: crontab(5) → saffron, time zones and daylight-saving rules;
//! - [`clock`]: wall and monotonic time, injectable so tests need no real waiting;
//! - [`scheduler`]: the loop — sleep, run, count what was missed, stop cleanly;
//! - [`job`]: the `Job` trait and the stub job;
//! - [`health`], [`metrics`], [`routes`]: what the metrics port reports;
//! - [`service`]: the wiring; [`cli`]: the command line (`main.rs` only calls it).
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod health;
pub mod job;
pub mod metrics;
pub mod routes;
pub mod schedule;
pub mod scheduler;
pub mod service;
