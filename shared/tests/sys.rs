//! The Linux probes the connection guard relies on, checked against real
//! sockets.
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use orion_shared::http::sys;

#[test]
fn accept_backlog_counts_unaccepted_connections() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    assert_eq!(sys::accept_backlog(l.as_raw_fd()), Some(0));
    let _c: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    poll_until(|| sys::accept_backlog(l.as_raw_fd()) == Some(3));
    assert_eq!(sys::accept_backlog(l.as_raw_fd()), Some(3));
    let (_a, _) = l.accept().unwrap();
    assert_eq!(sys::accept_backlog(l.as_raw_fd()), Some(2));
}

#[test]
fn client_sockets_and_tcp_snapshot() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let (server_side, peer) = l.accept().unwrap();
    let _clone = server_side.try_clone().unwrap();
    let found = sys::client_sockets(addr.port(), l.as_raw_fd());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].peer, peer);
    c.write_all(b"hello").unwrap();
    poll_until(|| sys::tcp_snapshot(server_side.as_raw_fd()).is_some_and(|s| s.unread == 5));
    let snap = sys::tcp_snapshot(server_side.as_raw_fd()).unwrap();
    assert_eq!(snap.bytes_received, 5);
    assert_eq!(snap.unread, 5);
    assert_eq!(snap.consumed(), 0);
}

/// `SO_SNDTIMEO` on a listener is inherited by the sockets it accepts, and
/// an idle `accept()` still blocks (a receive timeout there would make it
/// fail with EAGAIN and end tiny_http's accept loop): what `Server::start`
/// relies on.
#[test]
fn a_send_timeout_on_the_listener_is_inherited_and_leaves_accept_blocking() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    sys::set_send_timeout(l.as_raw_fd(), std::time::Duration::from_millis(300));
    let t = std::time::Instant::now();
    let connector = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        TcpStream::connect(addr).unwrap()
    });
    let (accepted, _) = l.accept().expect("accept failed instead of blocking");
    assert!(t.elapsed() >= std::time::Duration::from_millis(600));
    let _client = connector.join().unwrap();
    assert_eq!(
        accepted.write_timeout().unwrap(),
        Some(std::time::Duration::from_millis(300))
    );
    assert_eq!(accepted.read_timeout().unwrap(), None);
}

/// Polls `cond` every millisecond for up to 5 s (then the assertion that
/// follows reports the state).
fn poll_until(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cond() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
