//! The connection defence: silent, dripping, idle, surplus and oversized
//! clients cannot starve the API or grow its memory, malformed input gets a
//! 4xx or a close, and accept errors back off without ending the process.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn silent_and_dripping_connections_do_not_starve_the_api_and_are_closed_after_the_header_timeout() {
    let api = Api::start(&[("HTTP_HEADER_TIMEOUT", "4s"), ("HTTP_IDLE_TIMEOUT", "30s")]);
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..200).map(|_| api.connect()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drips: Vec<_> = (0..20)
        .map(|_| {
            let mut s = api.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Drip: ";
                let mut sent = 0usize;
                let mut closed_after = None;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(15) {
                    let byte = if sent < request.len() {
                        request[sent]
                    } else {
                        b'a'
                    };
                    if s.write_all(&[byte]).is_err() {
                        closed_after = Some(start.elapsed());
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                closed_after
            })
        })
        .collect();
    // Wait until the front holds all 220 (each holds a connection slot).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let open = sample(&api.metrics(), "http_connections_open").unwrap();
        if open >= 220.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the front holds {open} of 220");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A fresh request is answered long before any timeout frees a place.
    let t = Instant::now();
    let r = api.get("/health");
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "fresh request waited {:?}",
        t.elapsed()
    );

    // None is closed for the header timeout before it has passed.
    let m = api.metrics();
    assert_eq!(
        sample(
            &m,
            r#"http_connections_closed_total{reason="header_timeout"}"#
        ),
        Some(0.0)
    );
    // ...and closed (with a 408) within a generous bound after it.
    for s in silent.iter_mut() {
        let left = Duration::from_secs(9).saturating_sub(opened.elapsed());
        let got = closed_within(s, left.max(Duration::from_millis(10)))
            .expect("silent connection still open");
        assert!(
            got.starts_with(b"HTTP/1.1 408"),
            "closed without a 408: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert!(opened.elapsed() >= Duration::from_millis(3900));
    // The drips are closed too, although they keep sending.
    for d in drips {
        let closed_after = d.join().unwrap().expect("drip connection never closed");
        assert!(closed_after < Duration::from_secs(9), "{closed_after:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let m = api.metrics();
    let timeouts = sample(
        &m,
        r#"http_connections_closed_total{reason="header_timeout"}"#,
    )
    .unwrap();
    assert!(timeouts >= 220.0, "closed: {timeouts} timeouts");
    assert_eq!(api.get("/").status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let api = Api::start(&[
        ("HTTP_HEADER_TIMEOUT", "10s"),
        ("HTTP_IDLE_TIMEOUT", "1500ms"),
    ]);
    let mut s = api.connect();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    let t = Instant::now();
    // Still usable before the idle timeout.
    std::thread::sleep(Duration::from_millis(700));
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 200);
    let t2 = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(6)).is_some(),
        "idle connection kept open"
    );
    let idle_for = t2.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1400),
        "closed after {idle_for:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    let m = api.metrics();
    assert!(
        sample(
            &m,
            r#"http_connections_closed_total{reason="idle_timeout"}"#
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn connections_above_the_cap_are_closed_quickly_and_the_api_still_answers() {
    let api = Api::start(&[
        ("HTTP_MAX_CONNECTIONS", "20"),
        ("HTTP_HEADER_TIMEOUT", "30s"),
    ]);
    let opened = Instant::now();
    let mut conns: Vec<TcpStream> = (0..60).map(|_| api.connect()).collect();
    // Closed within 1.5 s of opening: poll each until 40 are closed.
    let mut closed = vec![false; conns.len()];
    loop {
        for (s, c) in conns.iter_mut().zip(closed.iter_mut()) {
            if !*c {
                *c = closed_within(s, Duration::from_millis(1)).is_some();
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= 40 || opened.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let still_open = closed.iter().filter(|c| !**c).count();
    assert!(
        still_open <= 20,
        "{still_open} of 60 still open with a cap of 20"
    );
    assert_eq!(api.get("/health").status, 200);
    let m = api.metrics();
    assert!(
        sample(
            &m,
            r#"http_connections_closed_total{reason="over_capacity"}"#
        )
        .unwrap()
            >= 40.0
    );
    assert_eq!(sample(&m, "http_connections_max"), Some(20.0));
    let open = sample(&m, "http_connections_open").unwrap();
    assert!(open <= 21.0, "open gauge {open}");
}

#[test]
fn garbage_and_truncated_requests_get_400_or_a_close_and_the_server_keeps_serving() {
    let mut api = Api::start(&[
        ("HTTP_HEADER_TIMEOUT", "2s"),
        ("LOG_LEVEL", "info,orion_shared::http::front=trace"),
    ]);
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\nX: \xc3\x28\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    ];
    for input in &inputs {
        let mut s = api.connect();
        let _ = s.write_all(input);
        let (bytes, closed) = read_for(&mut s, Duration::from_secs(8));
        let shown = String::from_utf8_lossy(&input[..input.len().min(40)]).into_owned();
        if bytes.is_empty() {
            // No answer: then the connection must have been closed.
            assert!(
                closed,
                "connection left open without an answer for {shown:?}: {:?}",
                api.stdout_lines().iter().rev().take(20).collect::<Vec<_>>()
            );
        } else {
            let status: u16 = String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            // A 4xx/505, or (for input that is still a request) a normal answer.
            assert!(
                (400..500).contains(&status) || status == 505 || status == 200,
                "input {shown:?} got {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(api.get("/health").status, 200);
    }
    // Truncated requests: the client goes away mid-request.
    for cut in [3usize, 10, 20, 30] {
        let full = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let mut s = api.connect();
        s.write_all(&full[..cut]).unwrap();
        drop(s);
    }
    assert_eq!(api.get("/health").status, 200);
    // Still the same process (no restart hid a crash), and no handler panicked.
    assert!(
        api.child.try_wait().unwrap().is_none(),
        "the API exited: {:?}",
        api.stderr_lines()
    );
    assert_eq!(
        sample(&api.metrics(), "http_handler_panics_total"),
        Some(0.0)
    );
}

/// Accept errors are counted and back off, never fatal (tiny_http's own
/// accept loop ended for good on the first one, and the process had to be
/// restarted).
#[test]
fn accept_errors_back_off_and_serving_resumes() {
    let mut api = ServiceProcess::start(&SPEC, &[("HTTP_MAX_CONNECTIONS", "10")]);
    orion_shared::testing::assert_accept_errors_back_off(&mut api);
}

/// At the cap, a connection whose request is being served is never shed:
/// 400 clients that each connect and send a request at once, against a cap
/// of 8, all get their answer (the ones waiting for a place wait in the
/// kernel's queue; the ones answered and idle are shed to admit them).
#[test]
fn at_the_cap_every_client_that_sent_its_request_is_answered() {
    let api = Api::start(&[("HTTP_MAX_CONNECTIONS", "8")]);
    for round in 0..3 {
        let conns: Vec<TcpStream> = (0..400)
            .map(|_| {
                let mut s = api.connect();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        let mut lost = 0;
        for mut s in conns {
            match read_response(&mut s) {
                Ok(r) if r.status == 200 => {}
                _ => lost += 1,
            }
        }
        assert_eq!(lost, 0, "round {round}: {lost} of 400 got no answer");
    }
}
