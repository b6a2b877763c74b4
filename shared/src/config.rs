//! Configuration from the environment, validated before anything starts.
//!
//! The rule: never run on a silently wrong config. Every variable is parsed by
//! a typed helper; a bad value becomes a [`ConfigError`] that names the
//! variable, the value and what is allowed, and [`exit_on_error`] turns it into
//! one line on stderr and exit code 2 (the conventional "usage error").

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A variable had a value the service cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub fn new(var: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_string(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Exit code for configuration and usage errors.
pub const EXIT_CONFIG: i32 = 2;

/// Unwraps a config result or prints one line and exits with code 2.
///
/// Logging may not be set up yet (its level is itself config), so this writes
/// a plain line to stderr: that is what `docker logs` and `kubectl logs` show.
pub fn exit_on_error<T>(service: &str, result: Result<T, ConfigError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{service}: configuration error: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// A snapshot of environment variables with typed, validating getters.
///
/// Tests build one from pairs; services from the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment. Variables that are not valid UTF-8 are kept
    /// lossily so that a getter can still report them as invalid.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The raw value; an empty string counts as unset (as compose files and
    /// ConfigMaps often render optional variables).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).trim().to_string()
    }

    /// A value checked by `parse`; `expected` describes what is allowed.
    pub fn parse<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => parse(v.trim()).ok_or_else(|| ConfigError::new(name, v, expected)),
        }
    }

    pub fn port(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.parse(name, default, "a port number 1-65535", |v| {
            v.parse::<u16>().ok().filter(|p| *p != 0)
        })
    }

    /// An integer in `min..=max`.
    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.parse(name, default, &format!("an integer {min}-{max}"), |v| {
            v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
        })
    }

    /// A number in `min..=max` (for rates and probabilities).
    pub fn float(&self, name: &str, default: f64, min: f64, max: f64) -> Result<f64, ConfigError> {
        self.parse(name, default, &format!("a number {min}-{max}"), |v| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= min && *n <= max)
        })
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.parse(name, default, "true or false", parse_bool)
    }

    /// A duration within `max` (see [`parse_duration`] for the syntax).
    pub fn duration(
        &self,
        name: &str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let expected = format!(
            "a duration like 500ms, 10s, 2m or a number of seconds, at most {}s",
            max.as_secs()
        );
        self.parse(name, default, &expected, |v| {
            parse_duration(v).filter(|d| *d <= max)
        })
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare (possibly fractional) number of seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 || num.trim().starts_with('+') {
        return None;
    }
    Duration::try_from_secs_f64(n * scale).ok()
}

/// The deployment environment's name: `NODE_ENV` (the original spec's name)
/// or `APP_ENV`; `NODE_ENV` wins when both are set.
pub fn environment(env: &Env) -> Result<String, ConfigError> {
    let (name, value) = match (env.raw("NODE_ENV"), env.raw("APP_ENV")) {
        (Some(v), _) => ("NODE_ENV", v),
        (None, Some(v)) => ("APP_ENV", v),
        (None, None) => return Ok("development".to_string()),
    };
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::new(
            name,
            value,
            "a name of letters, digits, '-', '_' or '.' (e.g. development, uat, production)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let env = Env::from_pairs([("A", "8080"), ("B", "abc"), ("C", "70000"), ("D", "0")]);
        assert_eq!(env.port("A", 1).unwrap(), 8080);
        assert_eq!(env.port("UNSET", 8000).unwrap(), 8000);
        for v in ["B", "C", "D"] {
            let e = env.port(v, 1).unwrap_err();
            assert_eq!(e.var, v);
            assert!(e.to_string().contains("1-65535"), "{e}");
        }
        assert_eq!(
            env.port("C", 1).unwrap_err().to_string(),
            "invalid C=\"70000\": expected a port number 1-65535"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "ten", "1d", "NaN", "inf", "+3"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let env = Env::from_pairs([("T", "2h")]);
        assert!(env
            .duration("T", Duration::ZERO, Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn environment_names() {
        assert_eq!(environment(&Env::default()).unwrap(), "development");
        let env = Env::from_pairs([("APP_ENV", "uat")]);
        assert_eq!(environment(&env).unwrap(), "uat");
        let env = Env::from_pairs([("APP_ENV", "uat"), ("NODE_ENV", "production")]);
        assert_eq!(environment(&env).unwrap(), "production");
        let env = Env::from_pairs([("NODE_ENV", "prod\"uction")]);
        assert_eq!(environment(&env).unwrap_err().var, "NODE_ENV");
    }
}
