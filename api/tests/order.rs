//! Order is owned by the front: each connection is served one request at a
//! time, so what a client pipelines is answered in full and in order, what
//! follows a refused request or a body never runs, and a new connection
//! from a port an old one had is a new connection (tiny_http keyed neither,
//! and these were statistical races under the old serving layer: each case
//! here must hold every time).
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use orion_shared::http::sys::connect_from;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads exactly `n` responses (status line, head, Content-Length body).
fn read_answers(s: &mut TcpStream, n: usize) -> Vec<u16> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while got.len() < n {
        // Parse what is buffered.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("Content-Length");
            if buf.len() < end + 4 + len {
                break;
            }
            got.push(head[9..12].parse().unwrap());
            buf.drain(..end + 4 + len);
        }
        if got.len() >= n {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("after {} answers: {e}", got.len()),
        }
    }
    got
}

#[test]
fn a_client_that_pipelines_a_thousand_requests_and_reads_gets_every_answer_in_order() {
    let api = Api::start(&[]);
    for round in 0..20 {
        let mut s = api.connect();
        let paths: Vec<&str> = ["/health", "/nope", "/ready", "/"]
            .iter()
            .copied()
            .cycle()
            .take(1000)
            .collect();
        let all: String = paths
            .iter()
            .map(|p| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n"))
            .collect();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(all.as_bytes()).unwrap());
        let statuses = read_answers(&mut s, 1000);
        writer.join().unwrap();
        let want: Vec<u16> = paths
            .iter()
            .map(|p| if *p == "/nope" { 404 } else { 200 })
            .collect();
        assert_eq!(statuses.len(), 1000, "round {round}");
        assert_eq!(statuses, want, "round {round}: out of order");
    }
}

/// Requests a refused request or a body is followed by never run, and the
/// next connection from the same client port gets its own answer: 300
/// tries each, zero exceptions.
#[test]
fn nothing_behind_a_refusal_or_a_body_runs_and_a_reused_port_is_a_new_connection() {
    let api = Api::start(&[("LOG_LEVEL", "info")]);
    let addr = api.addr();
    let firsts = [
        // A refusal (two lengths), a body, a chunked body, a refused body.
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    ];
    let mut bad = Vec::new();
    for i in 0..300 {
        let first = format!("{}{}", firsts[i % firsts.len()], SMUGGLED.repeat(3));
        // A port of our own choosing (bound, with SO_REUSEADDR), so that no
        // other test's connection shares it when it is taken again.
        let mut a = reconnect(SocketAddr::from(([127, 0, 0, 1], 0)), addr);
        let local: SocketAddr = a.local_addr().unwrap();
        a.write_all(first.as_bytes()).unwrap();
        let (got, closed) = read_for(&mut a, Duration::from_secs(8));
        let text = String::from_utf8_lossy(&got).into_owned();
        if !closed || text.matches("HTTP/1.1 ").count() != 1 {
            bad.push(format!("first #{i}: {text:?}"));
        }
        drop(a);
        // At once, from the same port.
        let mut b = reconnect(local, addr);
        b.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (got, closed) = read_for(&mut b, Duration::from_secs(8));
        let text = String::from_utf8_lossy(&got).into_owned();
        if !closed || !text.starts_with("HTTP/1.1 200 ") || text.matches("HTTP/1.1 ").count() != 1 {
            bad.push(format!("second #{i}: {text:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of 600 wrong, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    assert_nothing_smuggled(&api);
}

/// The front stops reading a socket once a read comes back short and waits
/// for the next edge: a request in pieces, the next request after a pause,
/// a FIN sent with the request or after the answer are each seen at once.
/// 100 tries of each.
#[test]
fn pieces_pauses_and_half_closes_are_each_seen_at_once() {
    let api = Api::start(&[]);
    let req = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut bad = Vec::new();
    for i in 0..100 {
        // The request and the FIN at once: its answer, then EOF (the
        // answer says `Connection: close` if the FIN was read before it
        // came back from tiny_http).
        let mut s = api.connect();
        // Accepted and read once (nothing yet) first, so that the request
        // and the FIN arrive on a connection the front waits on.
        std::thread::sleep(Duration::from_millis(5));
        s.write_all(req).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (got, closed) = read_for(&mut s, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&got);
        if !closed || !text.starts_with("HTTP/1.1 200 ") {
            bad.push(format!("with FIN #{i}: closed {closed}, {text:?}"));
        }
        // A head in two pieces, a second request after a pause, a FIN
        // after its answer.
        let mut s = api.connect();
        s.write_all(&req[..20]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(&req[20..]).unwrap();
        let first = read_answers(&mut s, 1);
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(req).unwrap();
        let second = read_answers(&mut s, 1);
        s.shutdown(Shutdown::Write).unwrap();
        let closed = closed_within(&mut s, Duration::from_secs(5)).is_some();
        if first != [200] || second != [200] || !closed {
            bad.push(format!(
                "in pieces #{i}: {first:?} {second:?} closed {closed}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} wrong: {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
}

/// The port may still be closing on the client's side for a moment.
fn reconnect(local: SocketAddr, addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect_from(local, addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                let ss = std::process::Command::new("ss")
                    .args([
                        "-tanp",
                        &format!("sport = :{} or dport = :{}", local.port(), local.port()),
                    ])
                    .output()
                    .unwrap();
                panic!(
                    "reconnecting from {local}: {e}\n{}",
                    String::from_utf8_lossy(&ss.stdout)
                )
            }
        }
    }
}
