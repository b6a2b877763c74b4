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

/// One request on its own connection (`Connection: close`), read to the end.
fn request(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn every_handler_thread_is_joined_or_unblocked() {
    let mut server = start(256);
    wait_handler_threads(256, "started");
    // Requests spread over the handlers.
    let addr = server.local_addr();
    let clients: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || (0..4).for_each(|_| request(addr))))
        .collect();
    for c in clients {
        c.join().unwrap();
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
