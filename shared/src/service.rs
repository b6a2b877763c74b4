//! [`CommonConfig`]: the settings every service reads, gathered from the
//! modules that own them (identity and parsing from `config`, the log
//! filter from `logging`, the serving layer from `http`).

use std::time::Duration;

use crate::config::{environment, ConfigError, Env};
use crate::http::HttpConfig;
use crate::logging::validate_filter;

/// The settings both services share: identity, logging, shutdown and the
/// HTTP serving layer.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub environment: String,
    pub log_level: String,
    /// How long to keep serving after SIGTERM with `/ready` at 503, so load
    /// balancers notice before the listener closes.
    pub shutdown_delay: Duration,
    /// How long in-flight work may take to finish after that.
    pub shutdown_timeout: Duration,
    pub http: HttpConfig,
}

impl CommonConfig {
    pub fn from_env(env: &Env) -> Result<CommonConfig, ConfigError> {
        let log_level = env.string("LOG_LEVEL", "info");
        validate_filter(&log_level)
            .map_err(|why| ConfigError::new("LOG_LEVEL", &log_level, why))?;
        Ok(CommonConfig {
            environment: environment(env)?,
            log_level,
            shutdown_delay: env.duration(
                "SHUTDOWN_DELAY",
                Duration::ZERO,
                Duration::from_secs(300),
            )?,
            shutdown_timeout: env.duration(
                "SHUTDOWN_TIMEOUT",
                Duration::from_secs(10),
                Duration::from_secs(3600),
            )?,
            http: HttpConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_config_rejects_bad_log_level() {
        let env = Env::from_pairs([("LOG_LEVEL", "loud")]);
        let e = CommonConfig::from_env(&env).unwrap_err();
        assert_eq!(e.var, "LOG_LEVEL");
        let env = Env::from_pairs([("LOG_LEVEL", "warn,orion_api=debug")]);
        assert!(CommonConfig::from_env(&env).is_ok());
    }
}
