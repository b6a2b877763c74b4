//! Configuration from the environment, validated before anything starts.
//!
//! The rule: never run on a silently wrong config. Every variable is parsed by
//! a typed helper; a bad value becomes a [`ConfigError`] that names the
//! variable, the value and what is allowed, and [`exit_on_error`] turns it into
//! one line on stderr and exit code 2 (the conventional "usage error").

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// Where the user typed a bad value: errors name it the way it was typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable: `invalid PORT="70000": ...`.
    Var,
    /// A command-line argument or option: `invalid --tz argument "Mars": ...`.
    Arg,
}

/// A value the service cannot use, from a variable or an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable (`PORT`) or the argument as typed (`--tz`, `EXPR`).
    pub var: String,
    pub value: String,
    /// Every accepted spelling, after "expected".
    pub expected: String,
    pub origin: Origin,
    /// The value was empty (or blanks only), and the variable gives an
    /// empty value no meaning.
    pub empty: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (var, value, expected) = (&self.var, &self.value, &self.expected);
        match self.origin {
            Origin::Var => write!(f, "invalid {var}={value:?}: ")?,
            Origin::Arg => write!(f, "invalid {var} argument {value:?}: ")?,
        }
        if self.empty {
            write!(
                f,
                "empty; set a value or unset it for the default (expected {expected})"
            )
        } else {
            write!(f, "expected {expected}")
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A bad value of the variable `var`.
    pub fn new(var: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_string(),
            value: value.to_string(),
            expected: expected.into(),
            origin: Origin::Var,
            empty: false,
        }
    }

    /// A bad value of the command-line argument `arg` (as the user typed it).
    pub fn arg(arg: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            origin: Origin::Arg,
            ..ConfigError::new(arg, value, expected)
        }
    }

    /// The variable `var` is set to nothing (or blanks).
    pub fn empty(var: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            empty: true,
            ..ConfigError::new(var, value, expected)
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
            eprintln!("{}", error_line(service, &e));
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// The line [`exit_on_error`] prints: `orion-api: configuration error: ...`
/// for a variable, `orion-worker: usage error: ...` for an argument.
pub fn error_line(service: &str, e: &ConfigError) -> String {
    let kind = match e.origin {
        Origin::Var => "configuration error",
        Origin::Arg => "usage error",
    };
    format!("{service}: {kind}: {e}")
}

/// One environment variable as `--help` and the configuration reference
/// describe it. Each binary lists the variables it reads in one table
/// (its own, then [`crate::service::common_vars`]); `--help` is rendered
/// from that table, and a test in each binary checks that the variables its
/// configuration reads ([`Env::names_read`]) are exactly the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// The value used when unset, spelt as a user would set it; in
    /// parentheses when it is a description, not a value (`(CPUs, 2-16)`).
    pub default: &'static str,
    /// What it does, in a few words.
    pub meaning: &'static str,
    /// What an empty value means, for the few variables that give it one;
    /// `None`: an empty value is refused like any bad value.
    pub empty: Option<&'static str>,
}

impl Var {
    /// The default is a value (setting the variable to it changes nothing).
    pub fn default_is_a_value(&self) -> bool {
        !self.default.starts_with('(')
    }
}

/// The `ENVIRONMENT` section of `--help`: one line per variable, name and
/// default, then what it does; the empty-value rule last.
pub fn render_vars(vars: &[Var]) -> String {
    const COLUMN: usize = 34;
    let mut out = String::from(
        "Environment (default in brackets; durations: 500ms, 10s, 2m, 1h or seconds):\n",
    );
    for v in vars {
        let head = format!("  {} [{}]", v.name, v.default.trim_matches(['(', ')']));
        if head.len() < COLUMN {
            out.push_str(&format!("{head:<COLUMN$}{}\n", v.meaning));
        } else {
            out.push_str(&format!("{head}\n{:COLUMN$}{}\n", "", v.meaning));
        }
    }
    out.push_str("  An empty value is refused like any bad value (exit 2)");
    let declared: Vec<String> = vars
        .iter()
        .filter_map(|v| v.empty.map(|m| format!("{}='' means {m}", v.name)))
        .collect();
    if declared.is_empty() {
        out.push_str(".\n");
    } else {
        out.push_str(&format!(", except {}.\n", declared.join(", ")));
    }
    out
}

/// The `Exit codes` section of both binaries' `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success: stopped gracefully after SIGTERM or SIGINT, or the command succeeded
  1    runtime failure (cannot listen, a fatal error), or healthcheck: not healthy
  2    bad configuration or usage (one line on stderr names the variable or argument)
  130  a second SIGTERM or SIGINT during the graceful stop
";

/// A snapshot of environment variables with typed, validating getters.
///
/// Tests build one from pairs; services from the process environment.
/// Every variable asked for is recorded ([`Env::names_read`]), so a test
/// can compare what a configuration reads with what `--help` lists.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
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
            read: RefCell::default(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            read: RefCell::default(),
        }
    }

    /// The names of the variables asked for so far (set or not).
    pub fn names_read(&self) -> Vec<String> {
        self.read.borrow().iter().cloned().collect()
    }

    /// The raw value as set, empty included (`None`: unset). Every getter
    /// reads through here.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().insert(name.to_string());
        self.vars.get(name).map(|s| s.as_str())
    }

    /// The value without surrounding blanks; `None` when unset. An empty
    /// value (or blanks only) is refused: a ConfigMap or compose file that
    /// renders a variable as empty almost always meant something, and
    /// running on the default instead (every minute for `CRON_SCHEDULE`)
    /// would hide it. `expected` is what the error lists as allowed.
    pub fn text(&self, name: &str, expected: &str) -> Result<Option<&str>, ConfigError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(ConfigError::empty(name, v, expected)),
            Some(v) => Ok(Some(v.trim())),
        }
    }

    /// A value checked by `parse` (given it without surrounding blanks);
    /// `expected` describes what is allowed. Unset gives `default`; empty
    /// is refused (see [`Env::text`]).
    pub fn parse<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.text(name, expected)? {
            None => Ok(default),
            Some(v) => parse(v).ok_or_else(|| {
                // The error shows the value as set, blanks included.
                ConfigError::new(
                    name,
                    self.vars.get(name).map_or(v, String::as_str),
                    expected,
                )
            }),
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
        self.parse(name, default, BOOL_EXPECTED, parse_bool)
    }

    /// A duration within `max` (see [`parse_duration`] for the syntax).
    pub fn duration(
        &self,
        name: &str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_in(name, default, Duration::ZERO, max)
    }

    /// A duration in `min..=max`; the error states both bounds.
    pub fn duration_in(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse(name, default, &duration_expected(min, max), |v| {
            parse_duration(v).filter(|d| (min..=max).contains(d))
        })
    }
}

/// What a boolean variable accepts, every spelling.
pub const BOOL_EXPECTED: &str = "true or false (also 1 or 0, yes or no, on or off; any case)";

/// What a duration variable accepts, with its bounds.
pub fn duration_expected(min: Duration, max: Duration) -> String {
    let bound = |d: Duration| {
        let ms = d.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    };
    let range = if min.is_zero() {
        format!("of at most {}", bound(max))
    } else {
        format!("{}-{}", bound(min), bound(max))
    };
    format!(
        "a duration {range}: a number with ms, s, m or h (500ms, 10s, 2m, 1h) or a bare number of seconds (1.5)"
    )
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

/// What `NODE_ENV` and `APP_ENV` accept.
pub const ENVIRONMENT_EXPECTED: &str =
    "a name of 1-63 letters, digits, '-', '_' or '.' (e.g. development, uat, production)";

/// The deployment environment's name: `NODE_ENV` (the original spec's name)
/// or `APP_ENV`; `NODE_ENV` wins when both are set (an empty one is refused,
/// not skipped).
pub fn environment(env: &Env) -> Result<String, ConfigError> {
    let node = env.text("NODE_ENV", ENVIRONMENT_EXPECTED)?;
    let app = env.text("APP_ENV", ENVIRONMENT_EXPECTED)?;
    let (name, v) = match (node, app) {
        (Some(v), _) => ("NODE_ENV", v),
        (None, Some(v)) => ("APP_ENV", v),
        (None, None) => return Ok("development".to_string()),
    };
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::new(
            name,
            env.raw(name).unwrap_or(v),
            ENVIRONMENT_EXPECTED,
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
    fn empty_values_are_refused_like_bad_ones() {
        let env = Env::from_pairs([("E", ""), ("B", "   ")]);
        for name in ["E", "B"] {
            let errors = [
                env.port(name, 1).unwrap_err(),
                env.int(name, 1, 0, 9).unwrap_err(),
                env.float(name, 0.0, 0.0, 1.0).unwrap_err(),
                env.bool(name, true).unwrap_err(),
                env.duration(name, Duration::ZERO, Duration::from_secs(1))
                    .unwrap_err(),
                env.text(name, "a word").unwrap_err(),
            ];
            for e in errors {
                assert_eq!(e.var, name);
                assert!(e.empty, "{e}");
                let line = e.to_string();
                assert!(line.starts_with(&format!("invalid {name}=")), "{line}");
                assert!(line.contains("set a value or unset it"), "{line}");
                assert!(line.contains("expected "), "{line}");
            }
        }
        assert_eq!(
            env.bool("E", true).unwrap_err().to_string(),
            format!("invalid E=\"\": empty; set a value or unset it for the default (expected {BOOL_EXPECTED})")
        );
        // Unset is the default; surrounding blanks are not part of a value.
        assert_eq!(env.text("UNSET", "x").unwrap(), None);
        assert!(env.bool("UNSET", true).unwrap());
        let env = Env::from_pairs([("P", " 80 ")]);
        assert_eq!(env.port("P", 1).unwrap(), 80);
    }

    #[test]
    fn errors_list_every_accepted_spelling() {
        for v in ["true", "1", "yes", "on", "TRUE", "On"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["false", "0", "no", "off", "No"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        for spelling in ["true", "false", "1", "0", "yes", "no", "on", "off"] {
            assert!(
                BOOL_EXPECTED
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == spelling),
                "{spelling} missing from {BOOL_EXPECTED:?}"
            );
        }
        let env = Env::from_pairs([("B", "maybe"), ("D", "soon")]);
        assert!(env
            .bool("B", true)
            .unwrap_err()
            .to_string()
            .ends_with(BOOL_EXPECTED));
        let e = env
            .duration_in(
                "D",
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid D=\"soon\": expected a duration 100ms-1h: a number with ms, s, m or h (500ms, 10s, 2m, 1h) or a bare number of seconds (1.5)"
        );
        assert!(duration_expected(Duration::ZERO, Duration::from_secs(300))
            .starts_with("a duration of at most 5m:"));
        let env = Env::from_pairs([("D", "50ms")]);
        assert!(env
            .duration_in(
                "D",
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_secs(1)
            )
            .is_err());
    }

    #[test]
    fn arguments_are_named_as_typed() {
        let e = ConfigError::arg("--tz", "Mars", "a zone");
        assert_eq!(
            e.to_string(),
            "invalid --tz argument \"Mars\": expected a zone"
        );
        assert_eq!(
            error_line("orion-worker", &e),
            "orion-worker: usage error: invalid --tz argument \"Mars\": expected a zone"
        );
        assert_eq!(
            error_line("orion-api", &ConfigError::new("PORT", "x", "a port")),
            "orion-api: configuration error: invalid PORT=\"x\": expected a port"
        );
    }

    #[test]
    fn reads_are_recorded() {
        let env = Env::from_pairs([("A", "1")]);
        let _ = env.int("A", 0, 0, 9);
        let _ = env.bool("UNSET", true);
        let _ = environment(&env);
        assert_eq!(env.names_read(), ["A", "APP_ENV", "NODE_ENV", "UNSET"]);
    }

    #[test]
    fn help_lists_each_variable_and_the_empty_rule() {
        let vars = [
            Var {
                name: "TZ",
                default: "UTC",
                meaning: "the zone",
                empty: Some("UTC"),
            },
            Var {
                name: "A_VERY_LONG_VARIABLE_NAME",
                default: "(CPUs, 2-16)",
                meaning: "long",
                empty: None,
            },
        ];
        let text = render_vars(&vars);
        assert!(text.contains("\n  TZ [UTC]"), "{text}");
        assert!(
            text.contains("  A_VERY_LONG_VARIABLE_NAME [CPUs, 2-16]\n"),
            "{text}"
        );
        assert!(
            text.ends_with("(exit 2), except TZ='' means UTC.\n"),
            "{text}"
        );
        assert!(render_vars(&vars[1..]).ends_with("(exit 2).\n"));
        assert!(!vars[1].default_is_a_value() && vars[0].default_is_a_value());
    }

    /// Every variable goes through [`Env`] (so [`Env::names_read`] sees it and
    /// the tables can be checked against it): no other module of the
    /// services reads the process environment.
    #[test]
    fn nothing_else_reads_the_environment() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack: Vec<_> = ["shared/src", "api/src", "worker/src"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        let mut checked = 0;
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // Env itself, and the test helpers (`CI=true`), which never ship.
            if rel.ends_with("shared/src/config.rs") || rel.ends_with("shared/src/testing.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for needle in ["env::var", "env::vars", "getenv"] {
                assert!(
                    !text.contains(needle),
                    "{rel} reads the environment ({needle}); use config::Env"
                );
            }
            checked += 1;
        }
        assert!(checked > 20, "only {checked} files checked");
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
        // An empty one is refused, not skipped for the other.
        let env = Env::from_pairs([("NODE_ENV", ""), ("APP_ENV", "uat")]);
        let e = environment(&env).unwrap_err();
        assert!(e.var == "NODE_ENV" && e.empty, "{e}");
        let env = Env::from_pairs([("APP_ENV", &*"x".repeat(64))]);
        assert_eq!(environment(&env).unwrap_err().var, "APP_ENV");
    }
}
