//! The serving layer both services use: tiny_http behind a router, JSON
//! replies, per-request metrics and logs, a connection guard and a graceful
//! stop. See [`server::Server`] for the lifecycle and [`guard`] for the
//! defence against slow, idle and oversized clients.
//!
//! One concept per file: [`HttpConfig`] (`config.rs`), [`CloseReason`]
//! (`close.rs`: every way a connection is closed), `PeerKey` (`peer.rs`), [`Reply`]
//! (`reply.rs`), [`Router`] (`router.rs`), [`RequestMetrics`]
//! (`request_metrics.rs`), the request-head checks (`framing`), per-connection
//! ordering (`lanes`), the guard, the server, and the system calls (`sys`,
//! the only module with `unsafe` code; every other one forbids it).

#[forbid(unsafe_code)]
pub mod close;
#[forbid(unsafe_code)]
mod config;
#[forbid(unsafe_code)]
pub mod framing;
#[forbid(unsafe_code)]
pub mod guard;
#[forbid(unsafe_code)]
pub mod lanes;
#[forbid(unsafe_code)]
mod peer;
#[forbid(unsafe_code)]
mod reply;
#[forbid(unsafe_code)]
mod request_metrics;
#[forbid(unsafe_code)]
mod router;
#[forbid(unsafe_code)]
pub mod server;
pub mod sys;

pub use close::CloseReason;
pub use config::HttpConfig;
pub use reply::{reason_phrase, Reply};
pub use request_metrics::{RequestMetrics, DURATION_BUCKETS};
pub use router::{Route, Router};
pub use server::Server;
