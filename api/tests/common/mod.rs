//! Test harness: start the real `orion-api` binary on a free port and talk
//! to it over plain TCP (no HTTP client crate: the tests control every byte).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_orion-api");

#[allow(unused_imports)] // each test binary uses its own subset
pub use orion_shared::testing::{assert_promtool_accepts, free_port};

pub struct Api {
    pub child: Child,
    pub port: u16,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Set once the child's stdout reached EOF (every line is in `stdout`).
    pub stdout_done: Arc<AtomicBool>,
}

fn collect(
    r: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    done: Option<Arc<AtomicBool>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
        if let Some(done) = done {
            done.store(true, Ordering::SeqCst);
        }
    });
}

impl Api {
    pub fn start(env: &[(&str, &str)]) -> Api {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn orion-api");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_done = Arc::new(AtomicBool::new(false));
        collect(
            child.stdout.take().unwrap(),
            stdout.clone(),
            Some(stdout_done.clone()),
        );
        collect(child.stderr.take().unwrap(), stderr.clone(), None);
        let api = Api {
            child,
            port,
            stdout,
            stderr,
            stdout_done,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = api.try_get("/health") {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "api did not start: {:?}",
                api.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        api
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<Resp> {
        let mut s = TcpStream::connect(self.addr())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )?;
        read_response(&mut s)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path).expect("GET")
    }

    pub fn request(&self, raw: &str) -> Resp {
        let mut s = self.connect();
        s.write_all(raw.as_bytes()).unwrap();
        read_response(&mut s).expect("response")
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").text()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a stdout line matching `pred` and returns
    /// it; panics with the log so far if none comes.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {timeout:?}; stdout:\n{}",
                self.stdout_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the guard has logged (at trace level) that it found the
    /// connection whose client side is `s`.
    pub fn wait_guard_found(&self, s: &TcpStream) {
        let peer = format!("\"peer\":\"{}\"", s.local_addr().unwrap());
        self.wait_log(Duration::from_secs(10), |l| {
            l.contains("guard: new connection") && l.contains(&peer)
        });
    }

    /// Stops the process (SIGTERM), waits for it to exit and for its stdout
    /// to reach EOF; returns every stdout line it wrote.
    pub fn stop_and_collect(&mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        self.assert_exits_cleanly();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stdout_done.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "stdout not closed after exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stdout_lines()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit up to `timeout`; returns the status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some((st, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits up to 10 s for the process to end and asserts it exited 0.
    pub fn assert_exits_cleanly(&mut self) {
        let (status, _) = self
            .wait_exit(Duration::from_secs(10))
            .expect("did not exit");
        assert_eq!(status.code(), Some(0));
    }

    /// Resident set size in KiB (current and peak) from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn threads(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response (status line, headers, Content-Length body). For a
/// HEAD request use [`read_head`].
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Resp> {
    let (status, headers, rest) = read_head_inner(s)?;
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = rest;
    while body.len() < len {
        let mut buf = vec![0u8; len - body.len()];
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short body",
            ));
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(len);
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub fn read_head(s: &mut TcpStream) -> std::io::Result<Resp> {
    let (status, headers, rest) = read_head_inner(s)?;
    Ok(Resp {
        status,
        headers,
        body: rest,
    })
}

/// Status, headers, and the bytes read past the head.
type Head = (u16, Vec<(String, String)>, Vec<u8>);

fn read_head_inner(s: &mut TcpStream) -> std::io::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers, buf[end + 4..].to_vec()))
}

/// Everything the server sends within `timeout`, and whether it closed.
pub fn read_for(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

/// Whether the server closed `s` (EOF or reset) within `timeout`; bytes the
/// server sent first (a 408) are returned.
pub fn closed_within(s: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let (got, closed) = read_for(s, timeout);
    closed.then_some(got)
}

/// The value of one sample line of the Prometheus text output.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
