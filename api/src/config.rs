//! The API's configuration: the shared settings plus its port.

use orion_shared::config::{ConfigError, Env};
use orion_shared::service::CommonConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            port: env.port("PORT", 8000)?,
            common: CommonConfig::from_env(env)?,
        })
    }
}
