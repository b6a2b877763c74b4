//! Helpers for tests that run the real `orion-worker` binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Output, Stdio};
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

#[allow(unused_imports)] // each test binary uses its own subset
pub use orion_shared::http::sys::limit_child_open_files;
#[allow(unused_imports)] // each test binary uses its own subset
pub use orion_shared::testing::{
    assert_help_lists, assert_millis_text, free_port, raw_number, sample, ServiceProcess,
    ServiceSpec,
};

/// How the worker is started and says it listens.
pub const SPEC: ServiceSpec<'static> = ServiceSpec {
    bin: BIN,
    port_var: "METRICS_PORT",
    listening: "serving /health, /ready and /metrics",
};

/// A running worker (a [`ServiceProcess`]) whose stdout lines are JSON logs.
pub struct Worker(ServiceProcess);

impl std::ops::Deref for Worker {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.0
    }
}

impl Worker {
    /// Starts the worker (LOG_LEVEL=info, then `env`) on a free metrics
    /// port; waits until it logs that it serves and `/health` answers.
    pub fn start(env: &[(&str, &str)]) -> Worker {
        let w = Worker(ServiceProcess::start(&SPEC, env));
        w.wait_until("the metrics port answers", Duration::from_secs(10), || {
            w.get("/health").is_some()
        });
        w
    }

    /// [`Worker::start`] for a `LOG_LEVEL` that hides the "serving" line: on the port it was
    /// given, once `/health` answers.
    pub fn start_unlogged(env: &[(&str, &str)]) -> Worker {
        let w = Worker(ServiceProcess::start_unlogged(&SPEC, env));
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
        self.stdout_lines()
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

    /// Waits for the process to exit, up to `timeout` (else kills it and
    /// fails); returns its status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        match self.0.wait_exit(timeout) {
            Some(exit) => exit,
            None => {
                let _ = self.child.kill();
                panic!(
                    "worker did not exit within {timeout:?}; logs:\n{}",
                    self.stdout_lines().join("\n")
                );
            }
        }
    }
}

/// One HTTP/1.1 GET with `Connection: close`; `None` if nothing answers.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = orion_shared::testing::http_get(SocketAddr::from(([127, 0, 0, 1], port)), path).ok()?;
    Some((r.status, r.text()))
}
