//! Every endpoint and status of the API, its metrics and its logs, against
//! the real binary.
mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn health_ready_info() {
    let api = Api::start(&[("NODE_ENV", "uat")]);
    let r = api.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["service"], "api");
    assert_eq!(v["environment"], "uat");
    assert!(chrono_like(v["timestamp"].as_str().unwrap()));

    let r = api.get("/ready");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");

    let v = api.get("/").json();
    assert_eq!(v["service"], "api");
    assert_eq!(v["environment"], "uat");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(!v["commit"].as_str().unwrap().is_empty());
}

fn chrono_like(ts: &str) -> bool {
    // 2026-11-25T22:28:22.214Z
    ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == "."
}

#[test]
fn app_env_is_accepted() {
    let api = Api::start(&[("APP_ENV", "production")]);
    assert_eq!(api.get("/health").json()["environment"], "production");
}

#[test]
fn head_works_wherever_get_does() {
    let api = Api::start(&[]);
    for path in ["/", "/health", "/ready", "/metrics"] {
        let mut s = api.connect();
        write!(
            s,
            "HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let r = read_head(&mut s).unwrap();
        assert_eq!(r.status, 200, "HEAD {path}");
        // Nothing after the head: the server closes without a body.
        let rest = closed_within(&mut s, Duration::from_secs(5)).expect("closed");
        assert!(
            r.body.is_empty() && rest.is_empty(),
            "HEAD {path} sent a body"
        );
    }
}

#[test]
fn unknown_path_is_404_json_and_wrong_method_is_405_with_allow() {
    let api = Api::start(&[]);
    let r = api.get("/nope?x=1");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], 404);

    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = api.request(&format!(
            "{method} /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(r.json()["status"], 405);
    }
}

#[test]
fn bodies_over_one_mebibyte_get_413_without_being_read() {
    let api = Api::start(&[]);
    // Announce 64 MiB and send none of it: the answer must not wait for it.
    let mut s = api.connect();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 67108864\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["status"], 413);

    // Chunked: counted as it streams, never stored.
    let mut s = api.connect();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut answered = None;
    for _ in 0..40 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    if let Ok(r) = read_response(&mut s) {
        answered = Some(r.status);
    }
    assert_eq!(answered, Some(413));

    // A small body is fine.
    let r = api.request(
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 200);
    assert_eq!(api.get("/health").status, 200);
}

#[test]
fn metrics_have_the_spec_names_and_bounded_labels() {
    let api = Api::start(&[]);
    api.get("/");
    api.get("/health");
    api.get("/does-not-exist");
    api.request("BREW /coffee HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    // A request is counted once its answer is written, so the client can see
    // the answer a moment before the count: wait for all three (bounded).
    let counted = [
        r#"http_requests_total{method="GET",route="/",status_code="200"}"#,
        r#"http_requests_total{method="GET",route="unmatched",status_code="404"}"#,
        r#"http_requests_total{method="other",route="unmatched",status_code="404"}"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = api.get("/metrics");
        let m = r.text();
        if counted.iter().all(|c| sample(&m, c).is_some()) || Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = r.text();
    for name in [
        "# TYPE http_requests_total counter",
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE http_connections_open gauge",
        "# TYPE http_connections_max gauge",
        "# TYPE http_connections_closed_total counter",
        "# TYPE http_handler_panics_total counter",
        "# TYPE orion_build_info gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
    assert_eq!(
        sample(
            &m,
            r#"http_requests_total{method="GET",route="/",status_code="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"http_requests_total{method="GET",route="unmatched",status_code="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"http_requests_total{method="other",route="unmatched",status_code="404"}"#
        ),
        Some(1.0)
    );
    assert!(m.contains(
        r#"http_request_duration_seconds_bucket{method="GET",route="/",status_code="200",le="2"}"#
    ));
    assert!(m.contains(r#"orion_build_info{commit=""#));
}

#[test]
fn five_thousand_random_paths_leave_the_series_count_bounded() {
    let api = Api::start(&[]);
    let mut s = api.connect();
    s.set_nodelay(true).unwrap();
    // One keep-alive connection, 5,000 distinct paths and a few methods.
    let methods = ["GET", "HEAD", "DELETE", "PURGE"];
    for i in 0..5000u32 {
        let m = methods[(i % 4) as usize];
        let rq = format!(
            "{m} /r/{i}/{:x} HTTP/1.1\r\nHost: t\r\n\r\n",
            i.wrapping_mul(2654435761)
        );
        s.write_all(rq.as_bytes()).unwrap();
        if m == "HEAD" {
            read_head(&mut s).unwrap();
        } else {
            read_response(&mut s).unwrap();
        }
    }
    let m = api.metrics();
    let series: HashSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    assert!(series.len() <= 6, "series grew: {series:?}");
    let buckets = m
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds_bucket"))
        .count();
    assert!(buckets <= 6 * 13, "{buckets} bucket series");
}

#[test]
fn promtool_accepts_the_metrics() {
    let api = Api::start(&[]);
    api.get("/");
    api.get("/nope");
    assert_promtool_accepts(&api.metrics());
}

#[test]
fn logs_are_json_lines_with_request_fields_and_probes_at_debug() {
    let mut api = Api::start(&[("NODE_ENV", "production")]);
    api.get("/");
    api.get("/health");
    api.get("/nope\"quote");
    // Every line the process writes, up to its exit (no wait that may be short).
    let lines = api.stop_and_collect();
    assert!(!lines.is_empty());
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &parsed {
        for key in ["timestamp", "level", "message", "service", "environment"] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["service"], "api");
        assert_eq!(v["environment"], "production");
    }
    let requests: Vec<&serde_json::Value> = parsed
        .iter()
        .filter(|v| v["message"] == "request")
        .collect();
    let root = requests
        .iter()
        .find(|v| v["route"] == "/")
        .expect("GET / logged at info");
    assert_eq!(root["level"], "info");
    assert_eq!(root["method"], "GET");
    assert_eq!(root["status"], 200);
    assert!(root["duration_ms"].as_f64().is_some());
    assert!(requests
        .iter()
        .any(|v| v["route"] == "unmatched" && v["status"] == 404));
    // /health is at debug, so LOG_LEVEL=info hides it.
    assert!(
        !requests.iter().any(|v| v["route"] == "/health"),
        "probe logged at info"
    );
}

#[test]
fn log_level_debug_shows_probes_and_warn_hides_requests() {
    let api = Api::start(&[("LOG_LEVEL", "debug")]);
    api.get("/health");
    api.wait_log(std::time::Duration::from_secs(10), |l| {
        l.contains("\"route\":\"/health\"") && l.contains("\"level\":\"debug\"")
    });

    let mut api = Api::start_unlogged(&[("LOG_LEVEL", "warn")]);
    api.get("/");
    // Every line up to the exit: a request line cannot still be on its way.
    assert!(!api
        .stop_and_collect()
        .iter()
        .any(|l| l.contains("\"message\":\"request\"")));
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("orion-api {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("healthcheck"));
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
