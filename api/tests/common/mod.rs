//! Test harness: start the real `orion-api` binary (through
//! `orion_shared::testing::ServiceProcess`) and talk to it over plain TCP
//! (no HTTP client crate: the tests control every byte).
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_orion-api");

#[allow(unused_imports)] // each test binary uses its own subset
pub use orion_shared::http::sys::limit_child_open_files;
#[allow(unused_imports)] // each test binary uses its own subset
pub use orion_shared::testing::{
    assert_promtool_accepts, free_port, read_head, read_response, read_some, sample,
    Response as Resp, ServiceProcess, ServiceSpec,
};

/// How the API is started and says it listens.
pub const SPEC: ServiceSpec<'static> = ServiceSpec {
    bin: BIN,
    port_var: "PORT",
    listening: "api listening",
};

/// The API running as a child process (a [`ServiceProcess`] with the
/// API's own helpers).
pub struct Api(ServiceProcess);

impl std::ops::Deref for Api {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Api {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.0
    }
}

impl Api {
    /// Starts the API (LOG_LEVEL=info, then `env`) on a free port and waits
    /// until it logs "api listening" and `/health` answers 200.
    pub fn start(env: &[(&str, &str)]) -> Api {
        Api::healthy(ServiceProcess::start(&SPEC, env))
    }

    /// [`Api::start`] for a LOG_LEVEL that hides "api listening" (see
    /// `ServiceProcess::start_unlogged`).
    pub fn start_unlogged(env: &[(&str, &str)]) -> Api {
        Api::healthy(ServiceProcess::start_unlogged(&SPEC, env))
    }

    /// `process`, once its `/health` answers 200.
    fn healthy(process: ServiceProcess) -> Api {
        let api = Api(process);
        api.wait_until("/health to answer 200", Duration::from_secs(10), || {
            api.try_get("/health").is_ok_and(|r| r.status == 200)
        });
        api
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<Resp> {
        self.0.get(path)
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

    /// Waits until the front has logged (at trace level) that it accepted the
    /// connection whose client side is `s`.
    pub fn wait_front_found(&self, s: &TcpStream) {
        let peer = format!("\"peer\":\"{}\"", s.local_addr().unwrap());
        self.wait_log(Duration::from_secs(10), |l| {
            l.contains("front: new connection") && l.contains(&peer)
        });
    }

    /// Waits up to 10 s for the process to end and asserts it exited 0.
    pub fn assert_exits_cleanly(&mut self) {
        let (status, _) = self
            .wait_exit(Duration::from_secs(10))
            .expect("did not exit");
        assert_eq!(status.code(), Some(0));
    }

    /// Stops the process (SIGTERM), waits for it to exit and for its stdout
    /// to reach EOF; returns every stdout line it wrote.
    pub fn stop_and_collect(&mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        self.assert_exits_cleanly();
        self.wait_output_closed(Duration::from_secs(10));
        self.stdout_lines()
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
        match read_some(s, &mut buf) {
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

/// `/smuggled` never ran: no request log line names it and no 404 was
/// counted (none of the cases asks for an unknown path on purpose).
pub fn assert_nothing_smuggled(api: &Api) {
    // A sentinel request: its log line comes after any earlier request's.
    assert_eq!(api.get("/").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !api
        .stdout_lines()
        .iter()
        .any(|l| l.contains("\"route\":\"/\"") && l.contains("\"status\":200"))
    {
        assert!(Instant::now() < deadline, "sentinel never logged");
        std::thread::sleep(Duration::from_millis(10));
    }
    let lines = api.stdout_lines();
    let smuggled: Vec<&String> = lines.iter().filter(|l| l.contains("smuggled")).collect();
    assert!(smuggled.is_empty(), "executed: {smuggled:?}");
    let m = api.metrics();
    assert!(
        !m.contains(r#"route="unmatched",status_code="404""#),
        "a 404 was answered: {}",
        m.lines()
            .filter(|l| l.contains("unmatched"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
