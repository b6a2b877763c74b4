//! Memory under an oversized header, in its own test binary so that no
//! load test shares the machine while peak RSS is measured.
mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// Bound stated in README: a 64 MiB header raises the peak RSS by less than
/// 16 MiB (measured: a few MiB), and the client gets a 431 or a close.
#[test]
fn a_64_mib_header_does_not_grow_memory() {
    let api = Api::start(&[]);
    let (_, peak_before) = api.rss_kib();
    let t0 = Instant::now();
    let mut s = api.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Huge: ")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut got);
    // The server cuts the client off at once instead of draining it.
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    if !got.is_empty() {
        assert!(
            got.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
    }
    assert!(sent < 64 * 1024 * 1024, "the server read all 64 MiB");
    let (_, peak_after) = api.rss_kib();
    let grew = peak_after.saturating_sub(peak_before);
    eprintln!(
        "peak RSS before {peak_before} KiB, after {peak_after} KiB, sent {} KiB",
        sent / 1024
    );
    assert!(
        grew < 16 * 1024,
        "peak RSS grew by {grew} KiB; {}",
        api.metrics()
            .lines()
            .filter(|l| l.starts_with("http_pool_kicks_total") || l.starts_with("process_threads"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let m = api.metrics();
    let closed: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("http_connections_closed_total"))
        .collect();
    assert!(
        sample(
            &m,
            r#"http_connections_closed_total{reason="header_too_large"}"#
        )
        .unwrap()
            >= 1.0,
        "{closed:?}"
    );
    assert_eq!(api.get("/health").status, 200);
}
