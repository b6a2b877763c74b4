//! The serving layer both services use: tiny_http behind a router, JSON
//! replies, per-request metrics and logs, a connection guard and a graceful
//! stop. See [`server::Server`] for the lifecycle and [`guard`] for the
//! defence against slow, idle and oversized clients.

pub mod framing;
pub mod guard;
pub mod lanes;
pub mod server;
pub mod sys;

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::config::{ConfigError, Env};

pub use server::Server;

/// Settings of the serving layer (all from the environment).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Handler threads taking requests from tiny_http's queue.
    pub threads: usize,
    /// A request must be complete this long after the connection opened or
    /// after its previous response.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// Cap on open client connections.
    pub max_connections: usize,
    /// Request bodies above this get 413 (none of our routes take a body).
    pub max_body_bytes: u64,
    /// Request line plus headers above this get 431.
    pub max_header_bytes: u64,
    /// A connection whose peer accepts no response byte for this long is
    /// reset (`reason="send_timeout"`).
    pub send_timeout: Duration,
    /// Requests of one connection admitted and unanswered, at most (see
    /// `lanes`); the next one closes it after those are answered.
    pub pipeline_depth: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            threads: default_threads(),
            header_timeout: Duration::from_secs(10),
            // Longer than the idle timeouts of the proxies in front of us
            // (AWS ALB 60 s, nginx upstream keepalive 60 s), so the proxy
            // always closes first and never sends on a connection we just
            // closed (the classic keep-alive race that shows as 502s).
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            // As long as a client may take to send its request (the header
            // timeout): a peer that accepts no byte of a few-KiB answer for
            // 10 s is gone or hostile, and meanwhile it holds one of as few
            // as two handlers (README, Configuration; nginx waits 60 s, but
            // nginx does not spend a thread per blocked write).
            send_timeout: Duration::from_secs(10),
            pipeline_depth: 16,
        }
    }
}

/// One handler per core (at least two, so one slow client write cannot hold
/// every request). Handlers run microseconds of CPU and never wait on
/// anything but the response write; more threads than cores only add
/// wake-ups: with 2 cores, 4 handlers did about 7 % fewer requests/s than 2
/// in the benchmark (README, Benchmarks). `available_parallelism` honours a
/// container's cgroup CPU quota.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    cpus.clamp(2, 16)
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<HttpConfig, ConfigError> {
        let d = HttpConfig::default();
        let hour = Duration::from_secs(3600);
        let cfg = HttpConfig {
            threads: env.int("HTTP_THREADS", d.threads as u64, 1, 256)? as usize,
            header_timeout: env.duration("HTTP_HEADER_TIMEOUT", d.header_timeout, hour)?,
            idle_timeout: env.duration("HTTP_IDLE_TIMEOUT", d.idle_timeout, hour)?,
            max_connections: env.int(
                "HTTP_MAX_CONNECTIONS",
                d.max_connections as u64,
                1,
                100_000,
            )? as usize,
            send_timeout: env.duration("HTTP_SEND_TIMEOUT", d.send_timeout, hour)?,
            pipeline_depth: env.int("HTTP_PIPELINE_DEPTH", d.pipeline_depth as u64, 1, 1024)?
                as usize,
            ..d
        };
        for (name, v) in [
            ("HTTP_HEADER_TIMEOUT", cfg.header_timeout),
            ("HTTP_IDLE_TIMEOUT", cfg.idle_timeout),
            ("HTTP_SEND_TIMEOUT", cfg.send_timeout),
        ] {
            if v < Duration::from_millis(100) {
                return Err(ConfigError::new(
                    name,
                    env.raw(name).unwrap_or(""),
                    "a duration of at least 100ms",
                ));
            }
        }
        Ok(cfg)
    }

    /// Raises the soft open-files limit to the hard one and checks the
    /// connection cap fits it (see [`HttpConfig::check_fd_budget`]); returns
    /// the limit in force. Both services call this before serving.
    pub fn prepare_fd_limit(&self) -> Result<u64, ConfigError> {
        let nofile = match sys::raise_nofile_limit() {
            Ok(n) => n,
            Err(e) => {
                log::warn!(error = e.to_string().as_str(); "could not raise the open-files limit; assuming 1024");
                1024
            }
        };
        self.check_fd_budget(nofile)?;
        Ok(nofile)
    }

    /// The open-files budget: tiny_http holds two descriptors per
    /// connection, plus listener, epoll, stdio and friends. Exceeding the
    /// limit makes accept fail with EMFILE, which ends tiny_http's accept
    /// loop for good, so the cap must stay well below it.
    pub fn check_fd_budget(&self, nofile: u64) -> Result<(), ConfigError> {
        let needed = self.max_connections as u64 * 2 + 64;
        if needed > nofile {
            return Err(ConfigError::new(
                "HTTP_MAX_CONNECTIONS",
                &self.max_connections.to_string(),
                format!(
                    "at most {} with the open-files limit of {nofile} (2 fds per connection + 64)",
                    nofile.saturating_sub(64) / 2
                ),
            ));
        }
        Ok(())
    }
}

/// A response from a route handler.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON error body every non-2xx answer of ours uses.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            &serde_json::json!({ "error": reason_phrase(status), "status": status, "message": message }),
        )
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

type HandlerFn = Box<dyn Fn() -> Reply + Send + Sync>;

/// A GET route (HEAD is answered wherever GET is).
pub struct Route {
    pub path: &'static str,
    /// Logged at debug instead of info (probes and scrapes).
    pub quiet: bool,
    handler: HandlerFn,
}

/// Exact-path routing over a handful of routes; every unknown path is one
/// label value ("unmatched") so clients cannot grow the series count.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub fn get(
        self,
        path: &'static str,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.route(path, false, handler)
    }

    /// A GET route whose requests are logged at debug (health, readiness, metrics).
    pub fn get_quiet(
        self,
        path: &'static str,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.route(path, true, handler)
    }

    fn route(
        mut self,
        path: &'static str,
        quiet: bool,
        handler: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.routes.push(Route {
            path,
            quiet,
            handler: Box::new(handler),
        });
        self
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path == path)
    }

    pub fn routes(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|r| r.path)
    }
}

impl Route {
    pub fn call(&self) -> Reply {
        (self.handler)()
    }
}

/// `http_requests_total` and `http_request_duration_seconds`, labelled by
/// method, route template and status code.
#[derive(Clone)]
pub struct RequestMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

/// Buckets from 5 ms to 10 s; 2 s is the latency alert's threshold and must
/// be a bucket boundary for the p95 > 2 s condition to be exact.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
];

impl RequestMetrics {
    pub fn register(registry: &Registry) -> RequestMetrics {
        let labels = &["method", "route", "status_code"];
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by method, route template and status code.",
            ),
            labels,
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from picking up a request to having written its response.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            labels,
        )
        .expect("metric");
        crate::metrics::register(registry, &requests);
        crate::metrics::register(registry, &duration);
        RequestMetrics { requests, duration }
    }
}
