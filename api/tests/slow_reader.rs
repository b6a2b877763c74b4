//! A client that pipelines and never reads (issue 15, part 2): it holds at
//! most one handler, everybody else is served meanwhile, it is closed after
//! the send timeout (or its pipelining depth) with the reason counted, and
//! an absurd Content-Length no longer kills the process.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn closed_count(api: &Api, reason: &str) -> f64 {
    sample(
        &api.metrics(),
        &format!("http_connections_closed_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Writes `total` copies of `rq` on `s` from a thread (the write blocks once
/// the server stops reading) and returns when it is under way.
fn flood(s: &TcpStream, rq: &'static [u8], total: usize) {
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let all = rq.repeat(total);
        let _ = w.write_all(&all);
    });
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// The flood of issue 15: 10,000 pipelined `GET /metrics` in one write,
/// never read. A depth of 1024 lets it fill every buffer before the depth
/// rule would close it, so what ends it is the send timeout.
#[test]
fn a_non_reading_pipelining_client_does_not_stall_others_and_is_closed_after_the_send_timeout() {
    let api = Api::start(&[
        ("HTTP_THREADS", "2"),
        ("HTTP_SEND_TIMEOUT", "2s"),
        ("HTTP_PIPELINE_DEPTH", "1024"),
    ]);
    let mut s = api.connect();
    let started = Instant::now();
    flood(&s, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 10_000);
    // Meanwhile fresh clients are served at once, again and again.
    while started.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        let r = api.get("/health");
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a fresh client waited {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Closed by the send timeout: counted, and the socket is reset.
    let waited = wait_for("send_timeout counted", Duration::from_secs(10), || {
        closed_count(&api, "send_timeout") >= 1.0
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed after {:?}, before the send timeout could pass",
        started.elapsed()
    );
    let _ = waited;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).is_some(),
        "flooding connection still open"
    );
    let m = api.metrics();
    let answered = sample(
        &m,
        r#"http_requests_total{method="GET",route="/metrics",status_code="200"}"#,
    )
    .unwrap_or(0.0);
    assert!(answered < 10_000.0, "the whole flood was executed");
    assert_eq!(api.get("/health").status, 200);
}

/// With the default depth (16) the same flood is cut off by the depth rule:
/// its answers fit in the kernel's buffers, the connection is closed after
/// at most 16 unanswered requests more, and most of the flood never runs.
#[test]
fn pipelining_beyond_the_depth_closes_the_connection_and_the_rest_never_runs() {
    let api = Api::start(&[("HTTP_THREADS", "2")]);
    let mut s = api.connect();
    flood(&s, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n", 10_000);
    wait_for("pipeline_depth counted", Duration::from_secs(10), || {
        closed_count(&api, "pipeline_depth") + closed_count(&api, "send_timeout") >= 1.0
    });
    let (got, closed) = read_for(&mut s, Duration::from_secs(5));
    assert!(closed, "flooding connection still open");
    let text = String::from_utf8_lossy(&got);
    let answers = text.matches("HTTP/1.1 200").count();
    assert!(answers < 10_000, "every pipelined request was answered");
    let m = api.metrics();
    let ran = sample(
        &m,
        r#"http_requests_total{method="GET",route="/health",status_code="200"}"#,
    )
    .unwrap_or(0.0);
    // Start-up probes and our own GETs aside, far from 10,000 ran.
    assert!(ran < 9_000.0, "{ran} of the flood ran");
    assert_eq!(api.get("/health").status, 200);
}

/// Dropping tiny_http's reader of an unread `Content-Length` body allocates
/// the whole rest at once: `Content-Length: 1000000000000000` aborted the
/// process. Now: 413 (or 400 for a length we refuse) and the API lives on.
#[test]
fn an_absurd_content_length_does_not_kill_the_process() {
    let mut api = Api::start(&[]);
    for (cl, want) in [
        ("1000000000000000", "HTTP/1.1 413"),
        ("9000000000000000000", "HTTP/1.1 400"),
        ("12345678901234567890", "HTTP/1.1 400"),
    ] {
        let mut s = api.connect();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n"
        )
        .unwrap();
        let (got, closed) = read_for(&mut s, Duration::from_secs(5));
        assert!(closed);
        assert!(
            got.starts_with(want.as_bytes()),
            "{cl}: {}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(api.get("/health").status, 200);
    }
    assert!(api.child.try_wait().unwrap().is_none(), "the API died");
}
