//! The server: the front (`front.rs`) on the TCP port, tiny_http behind it
//! on a Unix socket only the front reaches, and tiny_http's handler threads.
//!
//! ```text
//! clients ──TCP──▶ front (1 thread, epoll) ──Unix, canonical requests──▶ tiny_http
//!                                                 ◀── answers, in order ── handler threads
//! ```
//!
//! [`Server::start`], in order:
//! 1. binds the TCP port (so a port in use fails before anything starts);
//! 2. binds tiny_http's listener to an abstract Unix address (no file: the
//!    root file system is read-only) and starts the handler threads;
//! 3. connects the front's links to tiny_http one at a time, each proven
//!    served by a probe before the next (tiny_http's task pool can leave a
//!    connection queued behind one that never ends when two arrive at once);
//! 4. seals tiny_http's listener (`shutdown(2)`): nobody else in the
//!    network namespace can reach tiny_http around the front, and tiny_http's
//!    accept thread ends;
//! 5. starts the front on the TCP listener.
//!
//! Graceful stop, in this order (the contract Kubernetes relies on), each
//! step once, run by `orion_shared::service::serve`:
//! 1. the owner flips readiness (its `/ready` answers 503) and waits its
//!    shutdown delay while we keep serving;
//! 2. [`Server::stop_accepting`]: the listener is closed; new connections
//!    are refused (and those the kernel had queued are reset, never run);
//! 3. [`Server::drain`]: idle connections close at once, every request
//!    under way is answered (with `Connection: close`) and its connection
//!    closed, up to the timeout;
//! 4. [`Server::join_handlers`]: the front ends, then every handler thread
//!    is unblocked and joined (within a grace period).
//!
//! Dropping a `Server` without them ends the front and unblocks every
//! handler thread, without waiting for any.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};

use super::conn::Limits;
use super::framing::{HeadLimits, MAX_HEADER_FIELDS};
use super::front::{self, Handle};
use super::handlers::{handler_loop, App};
use super::{sys, upstream, HttpConfig, RequestMetrics, Router};
use crate::shutdown::Shutdown;

/// Pending connections the kernel queues for the listener (std's `bind`
/// gives 128, nginx 511, Go `net.core.somaxconn`); the kernel caps it at
/// `net.core.somaxconn` (4096 since Linux 5.4). A full queue drops new SYNs,
/// and a dropped SYN costs the client a second (its first retransmission):
/// under a flood of connections a fresh client must find room, and the
/// front empties the queue every iteration (shedding over its cap).
const LISTEN_BACKLOG: u32 = 4096;
/// Receive buffer per client connection (the kernel doubles it): a head is
/// at most 64 KiB, and a client that sends more than the front reads waits.
const RECV_BUFFER: usize = 32 * 1024;
/// Send buffer per client connection (doubled too): what a client that does
/// not read can leave queued in the kernel, beside its one answer in ours.
const SEND_BUFFER: usize = 64 * 1024;
/// How long a link's probe may take to be answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    app: Arc<App>,
    http: Arc<tiny_http::Server>,
    control: Option<Arc<Handle>>,
    front: Option<JoinHandle<()>>,
    addr: SocketAddr,
    /// The handler threads not joined yet.
    handlers: Vec<JoinHandle<()>>,
}

/// What [`Server::join_handlers`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Handler threads the server had.
    pub threads: usize,
    /// Those that returned and were joined within the grace period.
    pub joined: usize,
}

impl Server {
    /// Binds `addr` and starts serving `router`. `metrics` enables the
    /// per-request metrics (the API has them; the worker's health port does
    /// not need them). A fatal condition (every link to tiny_http gone) is
    /// reported through `shutdown`.
    pub fn start(
        cfg: &HttpConfig,
        addr: SocketAddr,
        router: Router,
        metrics: Option<RequestMetrics>,
        registry: &Registry,
        shutdown: Shutdown,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        sys::set_backlog(&listener, LISTEN_BACKLOG)?;
        // Inherited by every accepted socket (Linux copies these from the
        // listener): no Nagle delay on answers, and fixed buffers.
        sys::set_nodelay(listener.as_fd());
        sys::set_recv_buffer(listener.as_fd(), RECV_BUFFER);
        sys::set_send_buffer(listener.as_fd(), SEND_BUFFER);

        let unix_addr = UnixAddr::from_abstract_name(abstract_name(addr.port()))?;
        let unix = UnixListener::bind_addr(&unix_addr)?;
        let seal = unix.try_clone()?;
        let http = tiny_http::Server::from_listener(unix, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let http = Arc::new(http);
        // Never dropped: tiny_http's `Drop` connects to its own address to
        // wake its accept loop and unwraps the address as a path, which an
        // abstract address is not (tiny_http 0.12 lib.rs, `impl Drop for
        // Server`). One server lives as long as the process anyway.
        std::mem::forget(http.clone());

        let panics = IntCounter::new(
            "http_handler_panics_total",
            "Request handlers that panicked (answered 500; the process lives on).",
        )
        .expect("metric");
        crate::metrics::register(registry, &panics);
        let app = Arc::new(App::new(router, metrics, panics));
        let mut server = Server {
            app,
            http,
            control: None,
            front: None,
            addr,
            handlers: Vec::with_capacity(cfg.threads),
        };
        for i in 0..cfg.threads {
            let (app, http) = (server.app.clone(), server.http.clone());
            // On failure `server` is dropped: the threads started so far
            // are unblocked.
            let handle = std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handler_loop(&app, &http))?;
            server.handlers.push(handle);
        }

        let links = (0..cfg.links())
            .map(|_| connect_link(&unix_addr))
            .collect::<io::Result<Vec<_>>>()?;
        server.app.sealed.store(true, Ordering::Release);
        sys::shutdown(seal.as_fd(), true, true);
        drop(seal);

        let parts = front::Parts {
            listener,
            links,
            limits: Limits {
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
                send_timeout: cfg.send_timeout,
                head: HeadLimits {
                    max_bytes: cfg.max_header_bytes,
                    max_fields: MAX_HEADER_FIELDS,
                },
                max_body: cfg.max_body_bytes,
                pipeline_depth: cfg.pipeline_depth,
            },
            max_connections: cfg.max_connections,
            fatal: Box::new(move |why| shutdown.fatal(why)),
        };
        let (control, front) = front::start(parts, registry)?;
        server.control = Some(control);
        server.front = Some(front);
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting: new connections are refused from when this
    /// returns. A second call does nothing.
    pub fn stop_accepting(&self) {
        if let Some(c) = &self.control {
            c.stop_accepting();
        }
    }

    /// Stops accepting (if not yet) and waits until every connection has
    /// ended, up to `timeout`. Returns whether everything finished.
    pub fn drain(&self, timeout: Duration) -> bool {
        let Some(c) = &self.control else {
            return true;
        };
        c.stop_accepting();
        let open = c.drain(timeout);
        if open > 0 {
            log::warn!(open_connections = open; "shutdown timeout reached with work in flight");
        }
        open == 0
    }

    /// Ends the front (closing whatever is still open), then unblocks every
    /// handler thread and joins each one that returns within `grace`. After
    /// a clean drain they are all idle in tiny_http's `recv` and return at
    /// once, one unblock message each.
    pub fn join_handlers(&mut self, grace: Duration) -> Joined {
        self.end_front();
        let threads = self.handlers.len();
        self.unblock_handlers();
        let deadline = Instant::now() + grace;
        while self.handlers.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (done, busy): (Vec<_>, Vec<_>) =
            self.handlers.drain(..).partition(JoinHandle::is_finished);
        // A finished thread joins at once (a panic in it was logged by the
        // panic hook when it happened).
        let joined = done.into_iter().map(JoinHandle::join).count();
        self.handlers = busy;
        if !self.handlers.is_empty() {
            log::warn!(busy = self.handlers.len(), threads = threads; "handler threads still busy at exit; not waiting for them");
        }
        Joined { threads, joined }
    }

    fn end_front(&mut self) {
        if let Some(c) = &self.control {
            c.exit();
        }
        if let Some(front) = self.front.take() {
            let _ = front.join();
        }
    }

    /// One unblock message per handler thread not joined yet.
    fn unblock_handlers(&self) {
        self.app.stopping.store(true, Ordering::Release);
        for _ in &self.handlers {
            self.http.unblock();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.end_front();
        self.unblock_handlers();
    }
}

/// A name no other server of this process or another takes.
fn abstract_name(port: u16) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "orion-http-{}-{}-{}",
        std::process::id(),
        port,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects one link and proves a tiny_http thread serves it: the probe's
/// answer comes back before the link is used (or the next one connected).
fn connect_link(addr: &UnixAddr) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect_addr(addr)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let mut probe = Vec::new();
    upstream::render_probe(&mut probe);
    stream.write_all(&probe)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("tiny_http did not answer the link's probe: {e}"),
            )
        })?;
        if n == 0 {
            return Err(io::Error::other("tiny_http closed a link during its probe"));
        }
        got.extend_from_slice(&buf[..n]);
        match upstream::parse_answer(&got, false) {
            Ok(Some(a)) if got.len() < a.head_len + a.body_len => {}
            Ok(Some(a)) if a.status == 200 => break,
            Ok(Some(_)) => {
                return Err(io::Error::other(
                    "tiny_http answered a probe with other than 200",
                ))
            }
            Ok(None) => {}
            Err(upstream::OutOfStep(why)) => return Err(io::Error::other(why)),
        }
    }
    stream.set_read_timeout(None)?;
    Ok(stream)
}
