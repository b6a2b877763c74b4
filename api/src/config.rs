//! The API's configuration: the shared settings plus its port.

use orion_shared::config::{ConfigError, Env, Var};
use orion_shared::service::{common_vars, CommonConfig};

pub const DEFAULT_PORT: u16 = 8000;

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub common: CommonConfig,
}

/// The variable the API reads of its own; [`vars`] adds the shared ones.
pub const API_VARS: &[Var] = &[Var {
    name: "PORT",
    default: "8000",
    meaning: "listen port (1-65535)",
    empty: None,
}];

/// Every variable the API reads, as `--help` lists them: [`API_VARS`], then the shared ones.
pub fn vars() -> Vec<Var> {
    API_VARS.iter().copied().chain(common_vars()).collect()
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            port: env.port("PORT", DEFAULT_PORT)?,
            common: CommonConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` is rendered from [`vars`]: it lists exactly what the configuration reads, and
    /// each default it shows as a value is the one in force.
    #[test]
    fn the_table_is_what_is_read_and_its_defaults_hold() {
        orion_shared::testing::check_var_table(&vars(), |env| {
            Config::from_env(env).map(|c| format!("{c:?}"))
        });
    }

    /// No variable of the API gives an empty value a meaning: each is refused.
    #[test]
    fn empty_values_are_refused() {
        for v in vars() {
            assert_eq!(v.empty, None, "{}", v.name);
            for empty in ["", " "] {
                let e = Config::from_env(&Env::from_pairs([(v.name, empty)])).unwrap_err();
                assert!(e.var == v.name && e.empty, "{}={empty:?}: {e}", v.name);
            }
        }
    }

    /// The request lines' target starts with this crate's name, so `LOG_LEVEL=orion_api=...`
    /// reaches them (see `orion_shared::logging::access_target`).
    #[test]
    fn request_lines_are_logged_under_this_crate() {
        let target = orion_shared::logging::access_target_for(crate::SERVICE);
        assert_eq!(target, concat!(env!("CARGO_CRATE_NAME"), "::access"));
    }
}
