//! The `healthcheck` subcommand's probe: scratch images have no shell, curl
//! or wget, so the binary checks itself. One plain HTTP/1.0 GET to
//! 127.0.0.1, a hard deadline, success only on a 200 status line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// True when `GET path` on 127.0.0.1:`port` answers 200 within `timeout`.
pub fn probe(port: u16, path: &str, timeout: Duration) -> bool {
    probe_detail(port, path, timeout).is_ok()
}

/// Like [`probe`], with the reason for a failure.
pub fn probe_detail(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let left = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_string())
    };
    let mut stream = TcpStream::connect_timeout(&addr, left(deadline)?)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: orion-healthcheck\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(|e| e.to_string())?;
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.lines().next().unwrap_or("").to_string();
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code == "200" {
        Ok(())
    } else {
        Err(format!("unhealthy: {status:?}"))
    }
}

/// Runs the subcommand: prints the outcome and returns the exit code.
pub fn run(port: u16, path: &str) -> i32 {
    match probe_detail(port, path, Duration::from_secs(2)) {
        Ok(()) => {
            println!("healthy: http://127.0.0.1:{port}{path} answered 200");
            0
        }
        Err(why) => {
            eprintln!("unhealthy: http://127.0.0.1:{port}{path}: {why}");
            1
        }
    }
}
