//! Code both Orion services use: configuration, JSON logging, the metrics
//! registry, the serving layer (a front that owns TCP, tiny_http behind it), shutdown
//! signalling, build information and the self-healthcheck.
//!
//! Modules depend on each other in one direction only: `config`,
//! `build_info`, `logging` and `shutdown` are leaves; `metrics` uses
//! `build_info`; `http` uses `config`, `logging`, `metrics` and `shutdown`;
//! `service`
//! (the settings every service reads, and `serve`: the lifecycle both run)
//! sits on top of all of them.
//!
//! `unsafe` code lives in `http::sys` alone: every other module forbids it
//! (here and in `http/mod.rs`).

#[forbid(unsafe_code)]
pub mod build_info;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod healthcheck;
pub mod http;
#[forbid(unsafe_code)]
pub mod logging;
#[forbid(unsafe_code)]
pub mod metrics;
#[forbid(unsafe_code)]
pub mod service;
#[forbid(unsafe_code)]
pub mod shutdown;
#[cfg(feature = "testing")]
#[forbid(unsafe_code)]
pub mod testing;
