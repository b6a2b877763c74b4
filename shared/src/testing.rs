//! Helpers for the services' integration tests (feature `testing`, enabled
//! only through the api's and worker's dev-dependencies; never shipped).
//!
//! [`ServiceProcess`] runs a real service binary and collects its output;
//! [`http_get`] and [`read_response`] talk plain HTTP/1.1 over TCP (no client
//! crate: the tests control every byte); [`sample`] reads one Prometheus
//! sample; [`check_var_table`] and [`assert_help_lists`] hold a binary's
//! `--help` to what its configuration reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, Env, Var};

/// A loopback port nothing listens on right now. Another process may take
/// it before the service binds it: [`ServiceProcess::start`] starts again on
/// another port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How to start one service binary as a test child.
#[derive(Debug, Clone)]
pub struct ServiceSpec<'a> {
    /// The binary (`env!("CARGO_BIN_EXE_...")`).
    pub bin: &'a str,
    /// The variable that sets its listening port (`PORT`, `METRICS_PORT`).
    pub port_var: &'a str,
    /// The `message` of the JSON log line it writes once it listens; the
    /// line carries the port in its `port` field.
    pub listening: &'a str,
}

/// A running service binary with its stdout and stderr lines collected.
/// Dropping it kills the process.
pub struct ServiceProcess {
    pub child: Child,
    /// The port it listens on, as its "listening" log line reports it.
    pub port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout_done: Arc<AtomicBool>,
    stderr_done: Arc<AtomicBool>,
}

fn collect(r: impl Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
        done.store(true, Ordering::SeqCst);
    });
}

/// The `port` of `line` if it is the JSON log line with `message`.
fn listening_port(line: &str, message: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != message {
        return None;
    }
    v["port"].as_u64().and_then(|p| u16::try_from(p).ok())
}

impl ServiceProcess {
    /// Starts `spec.bin` with a clean environment: its port variable set to
    /// a free port, `LOG_LEVEL=info`, then `env` (which may override both).
    /// Waits up to 10 s for its "listening" line and takes the port from it.
    /// When it exits first because its port was taken meanwhile ("in use"
    /// in its output: the race of [`free_port`]), it starts again on another
    /// port, up to 5 times. Panics with the output otherwise.
    pub fn start(spec: &ServiceSpec, env: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::start_with(spec, env, |_| {})
    }

    /// [`ServiceProcess::start`], with `configure` applied to each command
    /// before it is spawned (a `pre_exec`, say).
    pub fn start_with(
        spec: &ServiceSpec,
        env: &[(&str, &str)],
        configure: impl Fn(&mut Command),
    ) -> ServiceProcess {
        for _ in 0..5 {
            let port = free_port().to_string();
            let mut cmd = Command::new(spec.bin);
            cmd.env_clear()
                .env(spec.port_var, &port)
                .env("LOG_LEVEL", "info")
                .envs(env.iter().copied());
            configure(&mut cmd);
            let mut p = ServiceProcess::spawn(cmd);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let lines = p.stdout_lines();
                if let Some(port) = lines.iter().find_map(|l| listening_port(l, spec.listening)) {
                    p.port = port;
                    return p;
                }
                if p.child.try_wait().unwrap().is_some() {
                    p.wait_output_closed(Duration::from_secs(5));
                    let all = [p.stdout_lines(), p.stderr_lines()].concat().join("\n");
                    if all.contains("in use") {
                        break; // lost the port to someone else: again
                    }
                    panic!("{} exited before listening:\n{all}", spec.bin);
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not log {:?} within 10 s:\n{}\n{}",
                    spec.bin,
                    spec.listening,
                    lines.join("\n"),
                    p.stderr_lines().join("\n")
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        panic!("{}: every free port was taken before it bound it", spec.bin);
    }

    /// Like [`ServiceProcess::start`] for a log level that hides the
    /// "listening" line: `port` is the one it was given, and it is not
    /// started again if it loses that port (the caller's readiness check
    /// then fails).
    pub fn start_unlogged(spec: &ServiceSpec, env: &[(&str, &str)]) -> ServiceProcess {
        let port = free_port();
        let mut cmd = Command::new(spec.bin);
        cmd.env_clear()
            .env(spec.port_var, port.to_string())
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied());
        let mut p = ServiceProcess::spawn(cmd);
        p.port = port;
        p
    }

    /// Spawns `cmd` with stdout and stderr piped and collected (`port` is 0
    /// until the caller knows it).
    pub fn spawn(mut cmd: Command) -> ServiceProcess {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the service");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_done = Arc::new(AtomicBool::new(false));
        collect(
            child.stdout.take().unwrap(),
            stdout.clone(),
            stdout_done.clone(),
        );
        let stderr_done = Arc::new(AtomicBool::new(false));
        collect(
            child.stderr.take().unwrap(),
            stderr.clone(),
            stderr_done.clone(),
        );
        ServiceProcess {
            child,
            port: 0,
            stdout,
            stderr,
            stdout_done,
            stderr_done,
        }
    }

    /// 127.0.0.1 and its port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// One `GET path` with `Connection: close` (see [`http_get`]).
    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        http_get(self.addr(), path)
    }

    /// The stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Polls `cond` every 5 ms; panics naming `what`, with the output so
    /// far, if it does not hold within `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out ({timeout:?}) waiting for {what}; stdout:\n{}\nstderr:\n{}",
                self.stdout_lines().join("\n"),
                self.stderr_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `timeout` for a stdout line matching `pred` (the first
    /// one, possibly written earlier) and returns it; panics otherwise.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let mut found = None;
        self.wait_until("a matching log line", timeout, || {
            found = self.stdout_lines().into_iter().find(|l| pred(l));
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits until stdout and stderr reached EOF (the process exited, and
    /// nothing it started holds them): from then on every line it wrote is
    /// collected.
    pub fn wait_output_closed(&self, timeout: Duration) {
        self.wait_until("stdout and stderr to close", timeout, || {
            self.stdout_done.load(Ordering::SeqCst) && self.stderr_done.load(Ordering::SeqCst)
        });
    }

    /// Sends `sig` to the process, with kill(1): a signal costs a fork here,
    /// which keeps this module free of `unsafe` (it lives in `http::sys`
    /// alone). The child is not reaped yet, so its pid cannot be reused.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(&pid)
            .status()
            .expect("run kill(1)");
        assert!(st.success(), "kill -{sig} {pid} failed: {st}");
    }

    /// Waits up to `timeout` for the process to exit; its status and how
    /// long the wait took, or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some((st, start.elapsed()));
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing it) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` with `Connection: close` on a fresh connection to `addr`
/// (5 s read timeout); the body is `Content-Length` long.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut s)
}

/// One `read`, retried when a signal interrupted it: the test process gets a
/// SIGCHLD whenever a service (or kill(1)) it started exits, and a read that
/// it interrupts fails with `Interrupted` (seen: a flaky keep-alive test).
pub fn read_some(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads one response (status line, headers, `Content-Length` body). For a
/// HEAD request use [`read_head`].
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut r = read_head(s)?;
    let len: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while r.body.len() < len {
        let mut buf = vec![0u8; len - r.body.len()];
        let n = read_some(s, &mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short body",
            ));
        }
        r.body.extend_from_slice(&buf[..n]);
    }
    r.body.truncate(len);
    Ok(r)
}

/// Reads a response head; `body` holds the bytes read past it.
pub fn read_head(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = read_some(s, &mut chunk)?;
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
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// The accept-error contract both services share, against a running one:
/// with its open-files limit lowered to what it has open (so accepting
/// fails with EMFILE), pending connections wait, the failure is logged and
/// backs off, and the process lives on; with the limit raised again, the
/// waiting connections are accepted and served, and the errors are counted
/// in `http_accept_errors_total{error="emfile"}`.
pub fn assert_accept_errors_back_off(p: &mut ServiceProcess) {
    let pid = p.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count() as u64;
    crate::http::sys::set_open_files_soft_limit_of(pid, open).expect("prlimit");
    let mut waiting: Vec<TcpStream> = (0..5)
        .map(|_| {
            let s = TcpStream::connect(p.addr()).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    p.wait_log(Duration::from_secs(10), |l| {
        l.contains("front: accept failed") && l.contains("\"level\":\"warn\"")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the process ended on accept errors: {:?}",
        p.stdout_lines()
    );
    crate::http::sys::set_open_files_soft_limit_of(pid, 4096).expect("prlimit");
    for s in waiting.iter_mut() {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(s).expect("a waiting connection is served once the limit is raised");
        assert_eq!(r.status, 200);
    }
    let m = p.get("/metrics").expect("metrics").text();
    let errors = sample(&m, r#"http_accept_errors_total{error="emfile"}"#).unwrap_or(0.0);
    assert!(errors >= 1.0, "EMFILE not counted: {errors}");
}

/// The value of the sample `series` (a name, with its labels if it has
/// any, exactly as exposed) in a Prometheus text exposition.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Runs `promtool check metrics` on an exposition and panics on any finding.
/// Without promtool the check is skipped loudly, except under `CI=true`,
/// where a missing tool is a failure.
pub fn assert_promtool_accepts(metrics: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI=true (Debian package prometheus; make deps installs it)"
            );
            eprintln!("SKIPPED: promtool not installed; `make deps` installs it");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

/// Checks a binary's table of variables (what its `--help` lists) against
/// its configuration. `read` runs the configuration on an [`Env`] and
/// returns it as `Debug` text. The table must name exactly the variables
/// read, and setting a variable to the default the table shows (where that
/// is a value) must give the same configuration as leaving it unset.
pub fn check_var_table(vars: &[Var], read: impl Fn(&Env) -> Result<String, ConfigError>) {
    let env = Env::default();
    let unset = read(&env).expect("the defaults are valid");
    let mut table: Vec<&str> = vars.iter().map(|v| v.name).collect();
    table.sort_unstable();
    assert_eq!(env.names_read(), table, "read (left) vs the table (right)");
    for v in vars.iter().filter(|v| v.default_is_a_value()) {
        let set = read(&Env::from_pairs([(v.name, v.default)]))
            .unwrap_or_else(|e| panic!("{}={}: {e}", v.name, v.default));
        assert_eq!(set, unset, "{}={} is not the default", v.name, v.default);
    }
}

/// Asserts that a `--help` text lists each of `vars` as `render_vars`
/// writes it (`  NAME [default]`) and the exit codes 0, 1, 2 and 130.
pub fn assert_help_lists(help: &str, vars: &[Var]) {
    for v in vars {
        let default = v.default.trim_matches(['(', ')']);
        assert!(
            help.contains(&format!("\n  {} [{default}]", v.name)),
            "{} missing:\n{help}",
            v.name
        );
    }
    let codes = help.split_once("Exit codes:\n").expect("no exit codes").1;
    for code in ["0", "1", "2", "130"] {
        assert!(
            codes
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} "))),
            "exit code {code} missing:\n{help}"
        );
    }
}

/// The raw text of the number `key` in a JSON log line, as written.
pub fn raw_number<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split_once(&format!("\"{key}\":"))?.1;
    rest.split([',', '}']).next()
}

/// Asserts that `raw` is a number as `logging::millis` writes it: digits,
/// a point and one to three decimals.
pub fn assert_millis_text(raw: &str) {
    let (int, frac) = raw.split_once('.').unwrap_or((raw, ""));
    assert!(
        !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()),
        "not a fixed-precision number of milliseconds: {raw}"
    );
    assert!(
        (1..=3).contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit()),
        "not a fixed-precision number of milliseconds: {raw}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_text() {
        let line = r#"{"a":1,"duration_ms":0.055,"b":2}"#;
        assert_eq!(raw_number(line, "duration_ms"), Some("0.055"));
        assert_eq!(
            raw_number(r#"{"duration_ms":12.5}"#, "duration_ms"),
            Some("12.5")
        );
        for ok in ["0.055", "12.5", "1500.0"] {
            assert_millis_text(ok);
        }
        for bad in ["0.055392000000000004", "12", "1e-5", "-1.0", ".5"] {
            assert!(
                std::panic::catch_unwind(|| assert_millis_text(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn sample_reads_exact_series_only() {
        let m = "# HELP x y\nhttp_open 3\nhttp_open_max 9\nc{reason=\"a\"} 2 1700000000\nv{x=\"a b\"} 4\n";
        assert_eq!(sample(m, "http_open"), Some(3.0));
        assert_eq!(sample(m, "http_open_max"), Some(9.0));
        assert_eq!(sample(m, r#"c{reason="a"}"#), Some(2.0));
        assert_eq!(sample(m, "http"), None);
        assert_eq!(sample(m, r#"c{reason="b"}"#), None);
        assert_eq!(sample(m, r#"v{x="a b"}"#), Some(4.0));
    }

    #[test]
    fn listening_port_needs_the_message_and_a_port() {
        let l = r#"{"message":"api listening","port":8123,"level":"info"}"#;
        assert_eq!(listening_port(l, "api listening"), Some(8123));
        assert_eq!(listening_port(l, "other"), None);
        assert_eq!(
            listening_port(r#"{"message":"api listening"}"#, "api listening"),
            None
        );
        assert_eq!(listening_port("not json", "api listening"), None);
    }
}
