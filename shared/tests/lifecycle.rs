//! The server's end in-process: every handler thread is unblocked and joined,
//! however many there are (up to `HTTP_THREADS`' 256), and dropping a server
//! unblocks all of them too. One test function: it counts this process's
//! `http-*` threads, which another server running beside it would change.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use orion_shared::http::server::Joined;
use orion_shared::http::{HttpConfig, Reply, Router, Server};
use orion_shared::shutdown::Shutdown;

fn start(threads: usize) -> Server {
    let registry = orion_shared::metrics::new_registry("test");
    let router = Router::new().get("/ok", || Reply::json(200, &serde_json::json!({"ok": true})));
    let cfg = HttpConfig {
        threads,
        ..HttpConfig::default()
    };
    Server::start(
        &cfg,
        "127.0.0.1:0".parse().unwrap(),
        router,
        None,
        &registry,
        Shutdown::new(),
    )
    .unwrap()
}

/// This process's threads named `http-<n>` (the handler threads).
fn handler_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("http-"))
        .count()
}

/// Waits until [`handler_threads`] is `n` (a thread names itself once it
/// runs, so a fresh one may not show yet), failing after 5 s.
fn wait_handler_threads(n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while handler_threads() != n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} handler threads, expected {n}",
            handler_threads()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One keep-alive request: the connection stays open after its answer.
fn request(s: &mut TcpStream) {
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn every_handler_thread_is_joined_or_unblocked() {
    let mut server = start(256);
    wait_handler_threads(256, "started");
    // Open keep-alive connections with answered requests: the drain closes them.
    let mut conns: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        request(s);
    }
    server.stop_accepting();
    assert!(server.drain(Duration::from_secs(5)), "drain timed out");
    let t = Instant::now();
    let joined = server.join_handlers(Duration::from_secs(5));
    assert_eq!(
        joined,
        Joined {
            threads: 256,
            joined: 256
        }
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "joining took {:?}",
        t.elapsed()
    );
    assert_eq!(handler_threads(), 0);
    drop(server);

    // Dropped without the stop protocol: every thread is unblocked (it used
    // to be a fixed 64) and returns by itself.
    let server = start(200);
    wait_handler_threads(200, "started");
    drop(server);
    wait_handler_threads(0, "5 s after the drop");
}
