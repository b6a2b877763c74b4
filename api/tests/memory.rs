//! Memory under an oversized header, in its own test binary so that no
//! load test shares the machine while peak RSS is measured.
mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// Bound stated in docs/http.md: a 64 MiB header raises the peak RSS by less than
/// 16 MiB (measured: a few MiB), and the client gets a 431 or a close.
#[test]
fn a_64_mib_header_does_not_grow_memory() {
    let api = Api::start(&[]);
    let (_, peak_before) = api.rss_kib();
    let t0 = Instant::now();
    let (sent, got) = send_huge_header(&api);
    // The server cuts the client off at once instead of draining it.
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "cut off without a 431: {:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
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

/// Opens a connection and sends a request head whose one header is 64 MiB,
/// until the server cuts it off. Returns the bytes sent and what came back.
fn send_huge_header(api: &Api) -> (usize, Vec<u8>) {
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
    (sent, got)
}

/// The first connection after a quiet spell is cut off too (when tiny_http
/// owned the listener, the guard's wake-up for it was lost half the time and
/// the whole 64 MiB was read). Four tries, each after a quiet spell.
#[test]
fn a_huge_header_on_the_first_connection_after_a_quiet_spell_is_cut_off() {
    let api = Api::start(&[]);
    for attempt in 1..=4 {
        std::thread::sleep(Duration::from_millis(700));
        let (sent, _) = send_huge_header(&api);
        assert!(
            sent < 64 * 1024 * 1024,
            "attempt {attempt}: the server read all 64 MiB"
        );
    }
    let m = api.metrics();
    assert!(
        sample(
            &m,
            r#"http_connections_closed_total{reason="header_too_large"}"#
        )
        .unwrap()
            >= 4.0
    );
}
