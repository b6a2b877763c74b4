//! JSON logs on stdout, one object per line.
//!
//! Every line has `timestamp` (RFC 3339, UTC, milliseconds), `level`,
//! `message`, `service` and `environment`, then the record's structured
//! fields (`log`'s key-values: `info!(route = "/", status = 200; "request")`).
//! Strings go through serde_json's escaping, so quotes and newlines in a
//! message still give one valid JSON object per line.
//!
//! `LOG_LEVEL` takes env_logger's directive syntax (`info`,
//! `warn,orion_api=debug`). env_logger is built without its default features:
//! its regex filter alone adds about 1 MB to a static binary, and a `/filter`
//! suffix then matches as a plain substring.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};

/// Checks a `LOG_LEVEL` value before it is used. env_logger silently treats
/// an unknown bare word as a module name (so `loud` would mean "log
/// everything from a module called loud" and nothing else); we refuse it.
pub fn validate_filter(spec: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "off, error, warn, info, debug or trace, or directives like warn,orion_api=debug";
    let spec = spec.split('/').next().unwrap_or("");
    if spec.trim().is_empty() {
        return Err(EXPECTED.to_string());
    }
    for directive in spec.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let (module, level) = match directive.split_once('=') {
            Some((m, l)) => (Some(m.trim()), l.trim()),
            None => (None, directive),
        };
        if let Some(m) = module {
            let valid_module = !m.is_empty()
                && m.split("::").all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if !valid_module {
                return Err(EXPECTED.to_string());
            }
        }
        if level.parse::<log::LevelFilter>().is_err() {
            return Err(EXPECTED.to_string());
        }
    }
    Ok(())
}

/// Installs the JSON logger. Call once, after the config is validated.
pub fn init(service: &'static str, environment: &str, filter: &str) {
    let environment = environment.to_string();
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(filter)
        .target(env_logger::Target::Stdout)
        .format(move |buf, record| buf.write_all(&render(service, &environment, record)));
    // A second init (tests start several services in one process) is harmless.
    let _ = builder.try_init();
}

/// Now, as every Orion timestamp is written: RFC 3339, UTC, milliseconds.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Renders one record as a JSON line (with the trailing newline).
pub fn format_line(service: &str, environment: &str, record: &log::Record<'_>) -> String {
    // `render` only writes JSON, which is UTF-8.
    String::from_utf8(render(service, environment, record)).unwrap_or_default()
}

/// The line as bytes. Every request is logged, so this stays on one buffer:
/// strings are escaped straight into it, numbers written in place.
fn render(service: &str, environment: &str, record: &log::Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(timestamp_now().as_bytes());
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(match record.level() {
        log::Level::Error => b"error",
        log::Level::Warn => b"warn",
        log::Level::Info => b"info",
        log::Level::Debug => b"debug",
        log::Level::Trace => b"trace",
    });
    out.extend_from_slice(b"\",\"message\":");
    match record.args().as_str() {
        Some(literal) => push_json_str(&mut out, literal),
        None => push_json_str(&mut out, &record.args().to_string()),
    }
    out.extend_from_slice(b",\"service\":");
    push_json_str(&mut out, service);
    out.extend_from_slice(b",\"environment\":");
    push_json_str(&mut out, environment);
    if record.level() <= log::Level::Warn || record.level() == log::Level::Trace {
        out.extend_from_slice(b",\"target\":");
        push_json_str(&mut out, record.target());
    }
    let mut fields = Fields { out: &mut out };
    let _ = record.key_values().visit(&mut fields);
    out.extend_from_slice(b"}\n");
    out
}

struct Fields<'a> {
    out: &'a mut Vec<u8>,
}

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let key = key.as_str();
        // The fixed fields cannot be overwritten by a record.
        if matches!(
            key,
            "timestamp" | "level" | "message" | "service" | "environment" | "target"
        ) {
            return Ok(());
        }
        let out = &mut *self.out;
        out.push(b',');
        push_json_str(out, key);
        out.push(b':');
        // Writing into a Vec cannot fail.
        let _ = if let Some(b) = value.to_bool() {
            write!(out, "{b}")
        } else if let Some(n) = value.to_u64() {
            write!(out, "{n}")
        } else if let Some(n) = value.to_i64() {
            write!(out, "{n}")
        } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
            serde_json::to_writer(&mut *out, &f).map_err(std::io::Error::from)
        } else if let Some(s) = value.to_borrowed_str() {
            push_json_str(out, s);
            Ok(())
        } else {
            push_json_str(out, &value.to_string());
            Ok(())
        };
        Ok(())
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string serialisation is the escaping we trust; it cannot
    // fail on a str written into a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Routes panics through the logger so they arrive as JSON lines too.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        log::error!(panic = message.as_str(), location = location.as_str(), thread = thread; "panic");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "info",
            "WARN",
            "off",
            "warn,orion_api=debug",
            "orion_shared::http=trace",
            "debug/foo",
        ] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["loud", "", "info,noisy", "=debug", "x=loud", "a b=info"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_are_json_even_with_quotes_and_newlines() {
        let args = format_args!("he said \"hi\"\nand left\t\u{1}");
        let kvs: &[(&str, log::kv::Value)] = &[
            ("status", 200u64.into()),
            ("route", "/a\"b".into()),
            ("ok", true.into()),
            ("duration_ms", 1.25f64.into()),
            ("level", "spoofed".into()),
        ];
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Info)
            .key_values(&kvs)
            .build();
        let line = format_line("api", "dev", &record);
        assert!(line.ends_with("}\n"));
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "he said \"hi\"\nand left\t\u{1}");
        assert_eq!(v["level"], "info");
        assert_eq!(v["service"], "api");
        assert_eq!(v["environment"], "dev");
        assert_eq!(v["status"], 200);
        assert_eq!(v["route"], "/a\"b");
        assert_eq!(v["ok"], true);
        assert_eq!(v["duration_ms"], 1.25);
        let ts = v["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }
}
