//! The serving layer both services use: a front that owns the TCP socket
//! and every client connection, tiny_http behind it serving the requests
//! the front forwards, a router, JSON replies, per-request metrics and logs,
//! and a graceful stop. See [`server`] for the whole picture and the stop
//! protocol, [`front`] for the event loop and [`conn`] for a connection's
//! rules.
//!
//! One concept per file. Pure (no system call, tested with made-up bytes
//! and instants): [`head`] (finding and splitting a request head),
//! [`framing`] (what a head means: `judge`), [`chunked`] (a chunked body),
//! [`conn`] (one connection's state machine and deadlines), [`upstream`]
//! (the canonical request and the answer's framing), [`close`] (every way a
//! connection ends). The shell: [`front`] (the epoll loop), [`handlers`]
//! (tiny_http's threads), [`server`] (start and stop), and [`sys`], the only
//! module with `unsafe` code (every other one forbids it).

#[forbid(unsafe_code)]
pub mod chunked;
#[forbid(unsafe_code)]
pub mod close;
#[forbid(unsafe_code)]
mod config;
#[forbid(unsafe_code)]
pub mod conn;
#[forbid(unsafe_code)]
pub mod framing;
#[forbid(unsafe_code)]
pub mod front;
#[forbid(unsafe_code)]
pub mod handlers;
#[forbid(unsafe_code)]
pub mod head;
#[forbid(unsafe_code)]
mod reply;
#[forbid(unsafe_code)]
mod request_metrics;
#[forbid(unsafe_code)]
mod router;
#[forbid(unsafe_code)]
pub mod server;
pub mod sys;
#[forbid(unsafe_code)]
pub mod upstream;

pub use close::CloseReason;
pub use config::{HttpConfig, HTTP_VARS};
pub use reply::{reason_phrase, Reply};
pub use request_metrics::{RequestMetrics, DURATION_BUCKETS};
pub use router::{Route, Router};
pub use server::Server;
