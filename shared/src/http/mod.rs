//! The serving layer both services use: tiny_http behind a router, JSON
//! replies, per-request metrics and logs, a connection guard and a graceful
//! stop. See [`server::Server`] for the lifecycle and [`guard`] for the
//! defence against slow, idle and oversized clients.
//!
//! One concept per file: [`HttpConfig`] (`config.rs`), [`Reply`]
//! (`reply.rs`), [`Router`] (`router.rs`), [`RequestMetrics`]
//! (`request_metrics.rs`), the request-head checks (`framing`), per-connection
//! ordering (`lanes`), the guard, the server, and the system calls (`sys`).

mod config;
pub mod framing;
pub mod guard;
pub mod lanes;
mod reply;
mod request_metrics;
mod router;
pub mod server;
pub mod sys;

pub use config::HttpConfig;
pub use reply::{reason_phrase, Reply};
pub use request_metrics::{RequestMetrics, DURATION_BUCKETS};
pub use router::{Route, Router};
pub use server::Server;
