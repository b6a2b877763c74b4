//! Code both Orion services use: configuration, JSON logging, the metrics
//! registry, the tiny_http serving layer with its connection guard, shutdown
//! signalling, build information and the self-healthcheck.

pub mod build_info;
pub mod config;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod service;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
