//! [`HttpConfig`]: the serving layer's settings, from the environment, and
//! the open-files budget they need.

use std::time::Duration;

use crate::config::{ConfigError, Env, Var};

/// The variables [`HttpConfig::from_env`] reads, for `--help` (each
/// binary's table, and the tests that compare it with what is read).
pub const HTTP_VARS: &[Var] = &[
    Var {
        name: "HTTP_THREADS",
        default: "(CPUs, 2-16)",
        meaning: "handler threads (1-256); as many links to tiny_http, at most 16",
        empty: None,
    },
    Var {
        name: "HTTP_HEADER_TIMEOUT",
        default: "10s",
        meaning: "time to send a complete request head, else 408 (100ms-1h)",
        empty: None,
    },
    Var {
        name: "HTTP_IDLE_TIMEOUT",
        default: "75s",
        meaning: "an idle keep-alive connection is closed after this (100ms-1h)",
        empty: None,
    },
    Var {
        name: "HTTP_MAX_CONNECTIONS",
        default: "512",
        meaning: "cap on open connections (1-100000; open files >= 1 per + 2 per link + 64)",
        empty: None,
    },
    Var {
        name: "HTTP_SEND_TIMEOUT",
        default: "10s",
        meaning: "a peer that takes no response byte this long is reset (100ms-1h)",
        empty: None,
    },
    Var {
        name: "HTTP_PIPELINE_DEPTH",
        default: "16",
        meaning: "requests a client may leave waiting behind an unread answer (1-1024)",
        empty: None,
    },
];

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
    /// Requests a client may leave waiting behind an answer it does not
    /// read; more, for a second (`conn::PIPELINE_STALL`), reset it
    /// (`reason="pipeline_depth"`).
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
            // 10 s is gone or hostile; meanwhile it holds a connection slot
            // and one answer's bytes (nginx waits 60 s).
            send_timeout: Duration::from_secs(10),
            pipeline_depth: 16,
        }
    }
}

/// One handler per core, at least two. Handlers run microseconds of CPU and
/// never wait on a client (the front writes every answer); more threads
/// than cores only add wake-ups. `available_parallelism` honours a
/// container's cgroup CPU quota.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    cpus.clamp(2, 16)
}

impl HttpConfig {
    pub fn from_env(env: &Env) -> Result<HttpConfig, ConfigError> {
        let d = HttpConfig::default();
        let (least, hour) = (Duration::from_millis(100), Duration::from_secs(3600));
        Ok(HttpConfig {
            threads: env.int("HTTP_THREADS", d.threads as u64, 1, 256)? as usize,
            header_timeout: env.duration_in(
                "HTTP_HEADER_TIMEOUT",
                d.header_timeout,
                least,
                hour,
            )?,
            idle_timeout: env.duration_in("HTTP_IDLE_TIMEOUT", d.idle_timeout, least, hour)?,
            max_connections: env.int(
                "HTTP_MAX_CONNECTIONS",
                d.max_connections as u64,
                1,
                100_000,
            )? as usize,
            send_timeout: env.duration_in("HTTP_SEND_TIMEOUT", d.send_timeout, least, hour)?,
            pipeline_depth: env.int("HTTP_PIPELINE_DEPTH", d.pipeline_depth as u64, 1, 1024)?
                as usize,
            ..d
        })
    }

    /// Unix connections from the front to tiny_http: one per handler
    /// thread (each has a tiny_http thread reading it), at most 16.
    pub fn links(&self) -> usize {
        self.threads.clamp(1, 16)
    }

    /// Descriptors the connection cap needs (see [`HttpConfig::check_fd_budget`]).
    pub fn fds_needed(&self) -> u64 {
        self.max_connections as u64 + self.spare_fds()
    }

    /// Descriptors besides the clients': both ends of each link, plus
    /// listeners, epoll, eventfd, stdio and friends.
    fn spare_fds(&self) -> u64 {
        2 * self.links() as u64 + 64
    }

    /// The open-files budget: one descriptor per client connection plus
    /// [`HttpConfig::spare_fds`]. The front never accepts past the cap, so
    /// within the budget accept never runs out of descriptors (and if it
    /// did, the front backs off and counts it). (`service::serve` raises
    /// the limit, after logging has started, and calls this.)
    pub fn check_fd_budget(&self, nofile: u64) -> Result<(), ConfigError> {
        let needed = self.fds_needed();
        if needed > nofile {
            return Err(ConfigError::new(
                "HTTP_MAX_CONNECTIONS",
                &self.max_connections.to_string(),
                format!(
                    "at most {} with the open-files limit of {nofile} (1 fd per connection + {})",
                    nofile.saturating_sub(self.spare_fds()),
                    self.spare_fds()
                ),
            ));
        }
        Ok(())
    }
}
