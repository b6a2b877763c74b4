//! JSON logs on stdout, one object per line.
//!
//! Every line has `timestamp` (RFC 3339, UTC, milliseconds), `level`,
//! `message`, `service` and `environment`, then the record's structured
//! fields (`log`'s key-values: `info!(route = "/", status = 200; "request")`).
//! Strings go through serde_json's escaping, so quotes and newlines in a
//! message still give one valid JSON object per line.
//!
//! `LOG_LEVEL` takes env_logger's directive syntax (`info`,
//! `warn,orion_api=debug`), which matches targets by prefix; request lines
//! are logged under the service's own `orion_api::access` /
//! `orion_worker::access` ([`access_target`]). env_logger is built without its default features:
//! its regex filter alone adds about 1 MB to a static binary, and a `/filter`
//! suffix then matches as a plain substring.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use log::kv::{Key, Value, VisitSource};

/// What `LOG_LEVEL` accepts, every form.
pub const LOG_LEVEL_EXPECTED: &str = "a level (off, error, warn, info, debug or trace; any case) \
or comma-separated directives LEVEL or TARGET=LEVEL, like warn,orion_api=debug";

/// Checks a `LOG_LEVEL` value before it is used. env_logger silently treats
/// an unknown bare word as a module name (so `loud` would mean "log
/// everything from a module called loud" and nothing else); we refuse it.
pub fn validate_filter(spec: &str) -> Result<(), String> {
    let spec = spec.split('/').next().unwrap_or("");
    if spec.trim().is_empty() {
        return Err(LOG_LEVEL_EXPECTED.to_string());
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
                return Err(LOG_LEVEL_EXPECTED.to_string());
            }
        }
        if level.parse::<log::LevelFilter>().is_err() {
            return Err(LOG_LEVEL_EXPECTED.to_string());
        }
    }
    Ok(())
}

/// Where request lines go when [`init`] has not named the service.
const ACCESS_FALLBACK: &str = "orion::access";

/// The target request lines are logged under, set by [`init`].
static ACCESS_TARGET: OnceLock<String> = OnceLock::new();

/// The target of a service's request lines: `<its crate>::access`
/// (`orion_api::access`, `orion_worker::access`). `LOG_LEVEL` filters by
/// target prefix, so the documented `warn,orion_api=debug` ("the API at
/// debug, the rest at warn") includes the API's request lines, and
/// `orion_api::access=warn` keeps only the 5xx ones. The serving layer
/// lives in `orion_shared`; logged under its module path, the request
/// lines would answer to neither.
pub fn access_target_for(service: &str) -> String {
    format!("orion_{service}::access")
}

/// The target the serving layer logs request lines under (pass it to
/// `log!(target: ...)` and to `log_enabled!(target: ...)` alike):
/// [`access_target_for`] the service [`init`] was given.
pub fn access_target() -> &'static str {
    ACCESS_TARGET.get().map_or(ACCESS_FALLBACK, String::as_str)
}

/// A duration in milliseconds to the microsecond, as `duration_ms` is
/// logged: a JSON number with at most three decimals (`0.055`, `12.5`,
/// `1500.0`), never the binary noise of `as_secs_f64() * 1000.0`
/// (`0.055392000000000004`). The f64 nearest a number of microseconds over
/// 1000 is written back as exactly that decimal (shortest round-trip form).
pub fn millis(d: Duration) -> f64 {
    let micros = d.as_nanos().saturating_add(500) / 1000;
    (micros.min(1 << 53) as f64) / 1000.0
}

/// A duration in seconds to the millisecond (`10.0`, `0.25`), for the
/// `*_s` fields, with at most three decimals likewise.
pub fn seconds(d: Duration) -> f64 {
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    (ms.min(1 << 53) as f64) / 1000.0
}

/// Installs the JSON logger. Call once, after the config is validated.
pub fn init(service: &'static str, environment: &str, filter: &str) {
    let environment = environment.to_string();
    let _ = ACCESS_TARGET.set(access_target_for(service));
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(filter)
        // tiny_http logs one thing we act on ourselves: the end of its
        // accept loop, which the front causes on purpose at start
        // (http/server.rs, "seals"); at error level it would page whoever
        // alerts on error lines.
        .filter_module("tiny_http", log::LevelFilter::Off)
        .target(env_logger::Target::Stdout)
        .format(move |buf, record| buf.write_all(&render(service, &environment, record)));
    // A second init (tests start several services in one process) is harmless.
    let _ = builder.try_init();
}

/// Now, as every Orion timestamp is written: RFC 3339, UTC, milliseconds
/// (`2026-12-01T21:54:57.123Z`).
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Renders one record as a JSON line (with the trailing newline).
pub fn format_line(service: &str, environment: &str, record: &log::Record<'_>) -> String {
    // `render` only writes JSON, which is UTF-8.
    String::from_utf8(render(service, environment, record)).unwrap_or_default()
}

/// The line as bytes: strings escaped and numbers written straight into one
/// buffer.
fn render(service: &str, environment: &str, record: &log::Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    render_into(&mut out, service, environment, record);
    out
}

fn render_into(out: &mut Vec<u8>, service: &str, environment: &str, record: &log::Record<'_>) {
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
        Some(literal) => push_json_str(out, literal),
        None => push_json_str(out, &record.args().to_string()),
    }
    out.extend_from_slice(b",\"service\":");
    push_json_str(out, service);
    out.extend_from_slice(b",\"environment\":");
    push_json_str(out, environment);
    if record.level() <= log::Level::Warn || record.level() == log::Level::Trace {
        out.extend_from_slice(b",\"target\":");
        push_json_str(out, record.target());
    }
    let mut fields = Fields { out };
    let _ = record.key_values().visit(&mut fields);
    out.extend_from_slice(b"}\n");
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
        if let Some(b) = value.to_bool() {
            out.extend_from_slice(if b { b"true" } else { b"false" });
        } else if let Some(n) = value.to_u64() {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(out, "{n}");
        } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &f);
        } else if let Some(s) = value.to_borrowed_str() {
            push_json_str(out, s);
        } else {
            push_json_str(out, &value.to_string());
        }
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

    /// The line of an info record "m" with `kvs`.
    fn line_of(kvs: &[(&str, log::kv::Value)]) -> String {
        let record = log::Record::builder()
            .args(format_args!("m"))
            .level(log::Level::Info)
            .key_values(&kvs)
            .build();
        format_line("api", "dev", &record)
    }

    /// The text a line gives a field of value `v`.
    fn field_text(v: f64) -> String {
        let line = line_of(&[("duration_ms", v.into())]);
        let tail = line.split_once("\"duration_ms\":").unwrap().1;
        tail.strip_suffix("}\n").unwrap().to_string()
    }

    #[test]
    fn durations_are_written_to_the_microsecond() {
        // The line that was `0.055392000000000004` before.
        assert_eq!(field_text(millis(Duration::from_nanos(55_392))), "0.055");
        assert_eq!(field_text(millis(Duration::from_nanos(55_500))), "0.056");
        assert_eq!(field_text(millis(Duration::ZERO)), "0.0");
        assert_eq!(field_text(millis(Duration::from_millis(1500))), "1500.0");
        assert_eq!(
            field_text(millis(Duration::from_micros(12_345_678))),
            "12345.678"
        );
        assert_eq!(field_text(seconds(Duration::from_millis(300_000))), "300.0");
        assert_eq!(
            field_text(seconds(Duration::from_nanos(10_000_123_456))),
            "10.0"
        );
        assert_eq!(field_text(seconds(Duration::from_micros(250_600))), "0.251");
        // Every microsecond count written as that decimal: digits, a point,
        // at most three decimals, and exactly the value.
        let mut n: u64 = 1;
        for i in 0..20_000u64 {
            // Small counts all, then a spread up to about a day.
            let micros = if i < 5_000 { i } else { n % 86_400_000_000 };
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let text = field_text(millis(Duration::from_nanos(micros * 1000 + 499)));
            let (int, frac) = text.split_once('.').unwrap_or_else(|| panic!("{text}"));
            assert!(
                int.bytes().all(|b| b.is_ascii_digit()) && !int.is_empty(),
                "{text}"
            );
            assert!(
                (1..=3).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()),
                "{text}"
            );
            let scaled = format!("{int}{frac:0<3}").parse::<u64>().unwrap();
            assert_eq!(scaled, micros, "{text}");
        }
    }

    #[test]
    fn request_lines_have_the_services_target() {
        assert_eq!(access_target_for("api"), "orion_api::access");
        assert_eq!(access_target_for("worker"), "orion_worker::access");
    }

    #[test]
    fn field_values_are_written_as_before() {
        let kvs: &[(&str, log::kv::Value)] = &[
            ("u", 200u16.into()),
            ("neg", (-42i64).into()),
            ("min", i64::MIN.into()),
            ("yes", true.into()),
            ("no", false.into()),
            ("f", 0.1f64.into()),
            ("nan", f64::NAN.into()),
            ("s", "x\ny".into()),
        ];
        let line = line_of(kvs);
        let tail = line.split_once(",\"environment\":\"dev\"").unwrap().1;
        assert_eq!(
            tail,
            ",\"u\":200,\"neg\":-42,\"min\":-9223372036854775808,\"yes\":true,\"no\":false,\"f\":0.1,\"nan\":\"NaN\",\"s\":\"x\\ny\"}\n"
        );
    }
}
