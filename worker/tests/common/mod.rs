//! Helpers for tests that run the real `orion-worker` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_orion-worker");

/// A command for the binary with a clean environment (no inherited TZ, CRON_SCHEDULE, ...).
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(env).args(args).output().expect("run orion-worker")
}

/// Like [`run`], but kills the process (and fails) if it is still running after `timeout`.
pub fn run_timeout(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut child = command(env)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orion-worker");
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "orion-worker {args:?} with {env:?} still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

pub use orion_shared::testing::free_port;

/// A running worker with its stdout (JSON log lines) collected.
pub struct Worker {
    pub child: Child,
    pub port: u16,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    pub fn start(env: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let port_s = port.to_string();
        let mut all: Vec<(&str, &str)> = vec![("METRICS_PORT", &port_s), ("LOG_LEVEL", "info")];
        all.extend_from_slice(env);
        let mut child = command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orion-worker");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let w = Worker { child, port, lines };
        w.wait_until("the metrics port answers", Duration::from_secs(10), || {
            w.get("/health").is_some()
        });
        w
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.port, path)
    }

    /// The log lines so far, parsed (every line must be a JSON object).
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    pub fn log_with(&self, message: &str) -> Option<serde_json::Value> {
        self.logs().into_iter().find(|l| l["message"] == message)
    }

    pub fn wait_log(&self, message: &str, timeout: Duration) -> serde_json::Value {
        let mut found = None;
        self.wait_until(&format!("log {message:?}"), timeout, || {
            found = self.log_with(message);
            found.is_some()
        });
        found.unwrap()
    }

    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; logs:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, up to `timeout`; returns its status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "worker did not exit within {timeout:?}; logs:\n{}",
                    self.lines.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET with `Connection: close`; `None` if nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of an unlabelled sample in a Prometheus text exposition.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
