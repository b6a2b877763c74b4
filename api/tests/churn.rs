//! Connection churn, in its own test binary so that nothing else shares the
//! machine while the API's memory is measured: 3,000 clients that connect,
//! send nothing, and reconnect as soon as they are closed. The old serving
//! layer spent a thread per connection tiny_http had accepted and grew past
//! 500 MB in a minute (the manifests allow 64 Mi); the front holds its cap,
//! sheds the silent, and stays small, and a fresh client is still served.
mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 3000;
const THREADS: usize = 30;
const RUN: Duration = Duration::from_secs(30);
/// The memory limit of the API's container in k8s/base/api-deployment.yaml.
const LIMIT_KIB: u64 = 64 * 1024;

/// One thread's share of the clients: each slot holds a connection or is
/// reconnected at the next sweep once the server has closed it.
fn clients(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>, reconnects: Arc<AtomicU64>) {
    let mut slots: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        for slot in slots.iter_mut() {
            let closed = match slot {
                None => true,
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                    Err(_) => true,
                },
            };
            if closed {
                *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                    .ok()
                    .inspect(|s| s.set_nonblocking(true).unwrap());
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn three_thousand_reconnecting_silent_clients_leave_memory_bounded_and_a_fresh_client_served() {
    // The test's own descriptors: 3,000 sockets and some.
    orion_shared::http::sys::raise_nofile_limit().unwrap();
    let api = Api::start(&[]);
    let addr = api.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let reconnects = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (stop, reconnects) = (stop.clone(), reconnects.clone());
            std::thread::spawn(move || clients(addr, CLIENTS / THREADS, stop, reconnects))
        })
        .collect();
    let start = Instant::now();
    let mut peak = 0;
    let mut served = Vec::new();
    while start.elapsed() < RUN {
        std::thread::sleep(Duration::from_secs(1));
        let (rss, hwm) = api.rss_kib();
        peak = peak.max(rss).max(hwm);
        // A fresh client, every few seconds: answered, and without waiting
        // for a timeout to free a place (a generous bound, not a benchmark).
        if start.elapsed().as_secs().is_multiple_of(5) {
            let t = Instant::now();
            let r = api.try_get("/health");
            served.push((r.as_ref().map(|r| r.status).ok(), t.elapsed()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let m = api.metrics();
    eprintln!(
        "peak RSS {peak} KiB, reconnects {}, fresh clients {served:?}, open {:?}, over_capacity {:?}",
        reconnects.load(Ordering::Relaxed),
        sample(&m, "http_connections_open"),
        sample(&m, r#"http_connections_closed_total{reason="over_capacity"}"#),
    );
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {peak} KiB, the limit is {LIMIT_KIB} KiB"
    );
    assert!(!served.is_empty());
    for (status, took) in &served {
        assert_eq!(*status, Some(200), "{served:?}");
        assert!(*took < Duration::from_secs(2), "{served:?}");
    }
    assert!(
        reconnects.load(Ordering::Relaxed) > CLIENTS as u64,
        "the clients were not closed and reconnected"
    );
    assert!(sample(&m, "http_connections_open").unwrap() <= 512.0);
}
