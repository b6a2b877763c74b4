//! The server lifecycle.
//!
//! `Server::start` binds the listener itself (so the guard knows its fd and
//! port), hands it to tiny_http and starts `threads` handler threads that
//! share one `Arc<tiny_http::Server>`, plus the connection guard.
//!
//! Graceful stop, in this order (the contract Kubernetes relies on):
//! 1. the owner flips readiness (its `/ready` answers 503) and waits its
//!    shutdown delay while we keep serving;
//! 2. [`Server::stop_accepting`]: `shutdown(2)` on the listening socket ends
//!    tiny_http's blocking accept, so new connections are refused;
//! 3. [`Server::drain`]: the guard closes every connection as soon as it is
//!    idle (right after its response; tiny_http does not let a handler set
//!    `Connection: close`), and we wait until every open connection is gone
//!    and no request is in flight, up to the timeout;
//! 4. [`Server::join_handlers`]: one unblock per handler thread, and each
//!    thread joined (within a grace period).
//!
//! `orion_shared::service::serve` runs these steps, each once, for both
//! services. Dropping a `Server` without them stops accepting and unblocks
//! every handler thread, without waiting for any.
//!
//! tiny_http's accept loop also ends for good on any accept error (EMFILE,
//! ENFILE, ENOBUFS...). It then pushes that error to the request queue; the
//! handler thread that receives it, outside a stop, reports it as fatal
//! through [`Shutdown::fatal`], and the process exits non-zero so the
//! orchestrator restarts it: never a live process that accepts nothing.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter, Registry};
use tiny_http::{Header, Method, Response};

use super::close::CloseReason;
use super::framing::{self, Body, HeadLimits, Verdict};
use super::guard::{Guard, Limits};
use super::lanes::{Admit, Lanes};
use super::peer::PeerKey;
use super::{reason_phrase, HttpConfig, Reply, RequestMetrics, Router};
use crate::shutdown::Shutdown;

/// Receive buffer per connection (the kernel doubles it: 64 KiB in effect).
const RECV_BUFFER: usize = 32 * 1024;

/// tiny_http's reader for a `Content-Length` body, when dropped unfinished,
/// allocates the whole unread rest at once (`vec![0; remaining]`, tiny_http
/// 0.12 `EqualReader::drop`). For `Content-Length: 1000000000000000` that
/// allocation fails and the process aborts: one request killed the API. A
/// request announcing more than this is therefore never dropped: it is
/// answered on the socket directly and parked (see [`dispose`]).
const SAFE_DROP_BODY: usize = 1 << 30;
/// Parked requests (each holds a tiny_http thread and two descriptors for
/// good) before the process restarts itself on purpose.
const MAX_PARKED: usize = 64;

/// What the handler threads share.
struct App {
    router: Router,
    metrics: Option<RequestMetrics>,
    panics: IntCounter,
    metric_children: MetricChildren,
    guard: Guard,
    max_body: u64,
    head_limits: HeadLimits,
    shutdown: Shutdown,
    /// Held while popping a request and admitting it to its lane, so that
    /// admission order is each connection's order (see `lanes`).
    turn: Mutex<()>,
    lanes: Mutex<Lanes<PeerKey, tiny_http::Request>>,
    /// When closed idle lanes were last checked against open connections.
    last_prune: Mutex<Instant>,
    /// Requests that must never be dropped (see [`SAFE_DROP_BODY`]).
    parked: Mutex<Vec<tiny_http::Request>>,
}

impl App {
    fn lanes(&self) -> MutexGuard<'_, Lanes<PeerKey, tiny_http::Request>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Server {
    app: Arc<App>,
    http: Arc<tiny_http::Server>,
    /// tiny_http's listener: a number, not a handle (its accept thread
    /// owns the socket and closes it when that loop ends), with the inode
    /// it had at the start.
    listener_fd: RawFd,
    listener_inode: Option<u64>,
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
    /// not need them).
    pub fn start(
        cfg: &HttpConfig,
        addr: SocketAddr,
        router: Router,
        metrics: Option<RequestMetrics>,
        registry: &Registry,
        shutdown: Shutdown,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let listener_fd = listener.as_raw_fd();
        let listener_inode = super::sys::socket_inode(listener_fd);
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
        // tiny_http writes the head and the body of a response separately;
        // with Nagle on, a keep-alive client's delayed ACK would hold the
        // body back for 40 ms.
        super::sys::set_nodelay(listener.as_fd());
        // A small fixed receive buffer (also inherited): our requests are a
        // few hundred bytes and carry no body we read, and `shutdown(2)`
        // does not discard what is already queued, so after the guard cuts
        // off an oversized header tiny_http still reads (and buffers) at
        // most this much more. Autotuning would let that grow to megabytes.
        super::sys::set_recv_buffer(listener.as_fd(), RECV_BUFFER);
        // Inherited too: a response write the peer accepts no byte of for
        // the send timeout fails instead of holding its handler (sys.rs:
        // why SO_SNDTIMEO is safe on a listener and SO_RCVTIMEO is not).
        super::sys::set_send_timeout(listener_fd, cfg.send_timeout);
        let guard = Guard::start(
            Limits {
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
                max_connections: cfg.max_connections,
                max_header_bytes: cfg.max_header_bytes,
                send_timeout: cfg.send_timeout,
            },
            addr.port(),
            listener_fd,
            registry,
            {
                let shutdown = shutdown.clone();
                Box::new(move |why: String| {
                    log::error!(reason = why.as_str(); "HTTP accept loop is dead; exiting so the orchestrator restarts us");
                    shutdown.fatal(why);
                })
            },
        )?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let panics = IntCounter::new(
            "http_handler_panics_total",
            "Request handlers that panicked (answered 500; the process lives on).",
        )
        .expect("metric");
        crate::metrics::register(registry, &panics);
        let app = Arc::new(App {
            metric_children: MetricChildren::new(router.len()),
            router,
            metrics,
            panics,
            guard,
            max_body: cfg.max_body_bytes,
            head_limits: HeadLimits {
                max_bytes: cfg.max_header_bytes,
                max_fields: framing::MAX_HEADER_FIELDS,
            },
            shutdown,
            turn: Mutex::new(()),
            lanes: Mutex::new(Lanes::new(cfg.pipeline_depth)),
            last_prune: Mutex::new(Instant::now()),
            parked: Mutex::new(Vec::new()),
        });
        let http = Arc::new(http);
        let mut server = Server {
            app,
            http,
            listener_fd,
            listener_inode,
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
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting: new connections are refused from here on. A second
    /// call does nothing.
    pub fn stop_accepting(&self) {
        if !self.app.guard.close_listener() {
            return;
        }
        // Linux wakes a blocked accept with EINVAL when its socket is shut
        // down, and takes the socket out of the LISTEN state. Through a
        // checked duplicate: the accept loop may have ended and closed the
        // listener already, and its number be another file's by now.
        let listener = self
            .listener_inode
            .and_then(|inode| super::sys::dup_socket(self.listener_fd, inode));
        if let Some(listener) = listener {
            super::sys::shutdown(listener.as_fd(), true, true);
        }
    }

    /// Waits until no connection is open and no request in flight, up to
    /// `timeout`. Returns whether everything finished. Comes after
    /// [`Server::stop_accepting`] (else it stops accepting first: draining
    /// while accepting would never end).
    pub fn drain(&self, timeout: Duration) -> bool {
        if !self.app.guard.listener_closed() {
            self.stop_accepting();
        }
        self.app.guard.start_draining();
        let deadline = Instant::now() + timeout;
        loop {
            let (open, in_flight) = self.app.guard.open_and_in_flight();
            if open == 0 && in_flight == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                log::warn!(open_connections = open, in_flight = in_flight; "shutdown timeout reached with work in flight");
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Unblocks every handler thread and joins each one that returns
    /// within `grace`. After a clean drain they are all idle in (or
    /// queued for) tiny_http's `recv` and return at once: one unblock
    /// message each, taken in turn. One still busy (writing to a slow peer
    /// after a drain that timed out) is left behind and not waited for.
    /// Stops accepting first, so the accept error tiny_http then queues is
    /// not taken for a dead accept loop.
    pub fn join_handlers(&mut self, grace: Duration) -> Joined {
        self.stop_accepting();
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

    /// One unblock message per handler thread not joined yet.
    fn unblock_handlers(&self) {
        for _ in &self.handlers {
            self.http.unblock();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
        self.app.guard.stop();
        self.unblock_handlers();
    }
}

fn handler_loop(app: &App, http: &tiny_http::Server) {
    loop {
        let (peer, admitted, mut closed_idle) = {
            let _turn = app.turn.lock().unwrap_or_else(|e| e.into_inner());
            let rq = match http.recv() {
                Ok(rq) => rq,
                Err(e) => {
                    if app.guard.listener_closed() || e.to_string() == "thread unblocked" {
                        return;
                    }
                    log::error!(error = e.to_string().as_str(); "HTTP accept loop died; exiting so the orchestrator restarts us");
                    app.shutdown.fatal(format!("accept loop died: {e}"));
                    return;
                }
            };
            // TCP requests always have a peer address.
            let peer = rq
                .remote_addr()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
            let mut lanes = app.lanes();
            // A closed lane discards what its connection still sends. But
            // clients reuse ports quickly (a proxy's pool, a load test): a
            // request from the same address and port is a new connection's
            // once we know of an open connection from there that we did not
            // close (our table; else a /proc scan, at most every 2 ms per
            // lane), or once the closed socket is gone.
            let key = PeerKey(peer);
            if lanes.is_closed_idle(&key)
                && (app.guard.knows_open_conn(peer)
                    || (lanes.due_for_check(&key, Instant::now())
                        && app.guard.peer_reconnected_or_gone(peer)))
            {
                lanes.retain_open(|k| *k != key);
            }
            let admitted = lanes.admit(key, rq);
            // Whether a closed lane may wait to be forgotten, looked at
            // under this lock when nothing is run here.
            let closed_idle = !matches!(admitted, Admit::Run { .. }) && lanes.has_closed_idle();
            (peer, admitted, closed_idle)
        };
        let mut next = match admitted {
            Admit::Run { ord, item, discard } => Some((ord, item, discard)),
            Admit::Queued => None,
            Admit::Overflowed => {
                // Stop reading it: tiny_http parses only what it buffered.
                app.guard.shut_read(Some(peer));
                None
            }
        };
        // Serve the lane until it is empty: this connection's requests, in
        // order, on this thread only.
        while let Some((ord, rq, discard)) = next {
            let closed = if discard {
                // Never run, never logged. The connection was shut before
                // (a lane discards only after its close), so the 500 that
                // tiny_http writes when a request is dropped goes nowhere.
                dispose(app, rq);
                false
            } else {
                handle(app, rq)
            };
            let finish = {
                let mut lanes = app.lanes();
                let finish = lanes.finish(PeerKey(peer), ord, closed);
                // The last finish of this turn looks for closed lanes too.
                closed_idle = finish.next.is_none() && lanes.has_closed_idle();
                finish
            };
            if finish.close.is_some() {
                app.guard.close_peer(Some(peer), CloseReason::PipelineDepth);
            }
            next = finish.next;
        }
        if closed_idle {
            prune_lanes(app);
        }
    }
}

/// Drops a request that is not answered through tiny_http, unless dropping
/// it would abort the process ([`SAFE_DROP_BODY`]): then it is parked.
fn dispose(app: &App, rq: tiny_http::Request) {
    if !must_park(&rq) {
        drop(rq);
        return;
    }
    let peer = rq.remote_addr().copied();
    app.guard.close_peer(peer, CloseReason::RequestBody);
    let mut parked = app.parked.lock().unwrap_or_else(|e| e.into_inner());
    parked.push(rq);
    log::warn!(parked = parked.len(); "parked a request announcing an absurd Content-Length (tiny_http would abort on dropping it)");
    if parked.len() >= MAX_PARKED {
        app.shutdown.fatal(format!(
            "{MAX_PARKED} requests with absurd Content-Length parked; restarting to free their threads"
        ));
    }
}

fn must_park(rq: &tiny_http::Request) -> bool {
    rq.body_length().is_some_and(|n| n > SAFE_DROP_BODY)
}

/// Forgets closed lanes whose connection is gone (at most once a second,
/// and only when there are any, which the caller saw: a /proc scan).
fn prune_lanes(app: &App) {
    {
        let mut last = app.last_prune.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
    }
    let alive = app.guard.closed_peers_alive();
    app.lanes().retain_open(|peer| alive.contains(&peer.0));
}

fn method_label(m: &Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Options => "OPTIONS",
        Method::Connect => "CONNECT",
        Method::Trace => "TRACE",
        Method::NonStandard(_) => "other",
    }
}

/// Reads (never stores) a chunked body up to `max` bytes: Ok(false) if it
/// ended within the limit, Ok(true) if it is larger, Err if it is invalid.
fn chunked_over(rq: &mut tiny_http::Request, max: u64) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    let mut total = 0u64;
    let reader = rq.as_reader();
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(false),
            n => {
                total += n as u64;
                if total > max {
                    return Ok(true);
                }
            }
        }
    }
}

/// Handles one request; returns whether the connection was closed.
fn handle(app: &App, mut rq: tiny_http::Request) -> bool {
    let start = Instant::now();
    let peer = rq.remote_addr().copied();
    app.guard.request_started(peer);
    let method = method_label(rq.method());
    let rq_method = CachedMethod::of(rq.method());
    let head_only = *rq.method() == Method::Head;
    let version = rq.http_version();
    let verdict = framing::judge(
        (version.0, version.1),
        rq.url(),
        rq.headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str())),
        app.head_limits,
    );
    let found = app.router.find_at(framing::route_path(rq.url()));
    let route = found.map(|(_, r)| r);
    // Unmatched paths come after the routes.
    let route_index = found.map_or(app.router.len(), |(i, _)| i);
    let route_label = route.map_or("unmatched", |r| r.path);
    let quiet = route.is_some_and(|r| r.quiet);

    // None: keep the connection; Some(reason): answer, then close it.
    let too_large = || {
        Reply::error(
            413,
            &format!("request body larger than {} bytes", app.max_body),
        )
    };
    let (reply, close) = match verdict {
        Verdict::Refuse(r) => (
            Reply::error(r.status(), r.message()),
            Some(r.close_reason()),
        ),
        Verdict::Route(Body::None) => (route_reply(app, &rq, route, method, route_label), None),
        // Bodies: none of our routes takes one, so we never need to know
        // where it ends. Too large → 413 without reading it; otherwise the
        // normal answer. Either way the connection is closed after it.
        Verdict::Route(Body::Length(n)) if n > app.max_body => {
            (too_large(), Some(CloseReason::RequestBody))
        }
        Verdict::Route(Body::Length(_)) => (
            route_reply(app, &rq, route, method, route_label),
            Some(CloseReason::RequestBody),
        ),
        // Counted (never stored) up to the limit; the guard bounds the time.
        Verdict::Route(Body::Chunked) => match chunked_over(&mut rq, app.max_body) {
            Ok(true) => (too_large(), Some(CloseReason::RequestBody)),
            Ok(false) => (
                route_reply(app, &rq, route, method, route_label),
                Some(CloseReason::RequestBody),
            ),
            Err(_) => (
                Reply::error(400, "invalid chunked body"),
                Some(CloseReason::BadRequest),
            ),
        },
    };
    let status = reply.status;
    let level = if status >= 500 {
        log::Level::Warn
    } else if quiet {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    // Only a request that will be logged pays for a copy of its path.
    let shown: Option<String> = log::log_enabled!(target: crate::logging::access_target(), level)
        .then(|| shown_path(framing::route_path(rq.url())));
    let mut closed = false;
    match close {
        None => {
            // The bytes tiny_http would write, rendered in one buffer and
            // written at once (where `render_keep_alive` knows them), else
            // tiny_http's own `respond`.
            let bytes = with_http_date(|date| {
                let version = rq.http_version();
                framing::render_keep_alive(
                    (version.0, version.1),
                    rq.headers().iter().map(|h| h.field.as_str().as_str()),
                    &reply,
                    head_only,
                    date,
                )
            })
            .flatten();
            let written = match bytes {
                Some(bytes) => write_whole(rq, &bytes),
                None => {
                    let mut response = Response::from_data(reply.body).with_status_code(status);
                    response.add_header(header("Content-Type", reply.content_type));
                    for (name, value) in &reply.headers {
                        response.add_header(header(name, value));
                    }
                    rq.respond(response)
                }
            };
            if let Err(e) = written {
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    // SO_SNDTIMEO: the peer accepted nothing for the send
                    // timeout. Reset it; its later requests are discarded.
                    app.guard.close_peer(peer, CloseReason::SendTimeout);
                    closed = true;
                } else {
                    log::debug!(error = e.to_string().as_str(); "writing response failed");
                }
            }
        }
        Some(reason) => {
            // The last answer on this connection. Order matters: stop
            // reading first (tiny_http's drain of a body ends at once and it
            // parses nothing more than it buffered), write the answer with
            // `Connection: close` ourselves (tiny_http drops a handler's
            // Connection header), shut the connection, and only then let go
            // of the writer: the answer tiny_http writes for a later request
            // it already parsed waits for this writer, and finds the socket
            // shut. Those requests are discarded by the lane, never run.
            let sock = app.guard.shut_read(peer);
            let close = |reason: CloseReason, answer: Option<&[u8]>| match &sock {
                Some(s) => app.guard.close_socket(s, reason, answer),
                None => app.guard.close_peer(peer, reason),
            };
            let extra: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            let bytes = framing::render_final(
                status,
                reason_phrase(status),
                reply.content_type,
                &extra,
                &reply.body,
                head_only,
            );
            if must_park(&rq) {
                // Nothing was written on this connection since its previous
                // answer (lanes run one request at a time), so the answer
                // can go straight to the socket.
                close(reason, Some(&bytes));
                dispose(app, rq);
            } else {
                let mut writer = rq.into_writer();
                let written = writer.write_all(&bytes).and_then(|()| writer.flush());
                let timed_out = matches!(&written, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
                if timed_out {
                    close(CloseReason::SendTimeout, None);
                } else {
                    close(reason, None);
                }
                drop(writer);
            }
            closed = true;
        }
    }
    app.guard.request_finished(peer);

    let elapsed = start.elapsed();
    if let Some(m) = &app.metrics {
        let seconds = elapsed.as_secs_f64();
        match app.metric_children.slot(rq_method, route_index, status) {
            Some(slot) => {
                let (requests, duration) = slot.get_or_init(|| {
                    let labels = [method, route_label, &status_label(status)];
                    (
                        m.requests.with_label_values(&labels),
                        m.duration.with_label_values(&labels),
                    )
                });
                requests.inc();
                duration.observe(seconds);
            }
            None => {
                let code = status_label(status);
                let labels = [method, route_label, &code];
                m.requests.with_label_values(&labels).inc();
                m.duration.with_label_values(&labels).observe(seconds);
            }
        }
    }
    if let Some(shown) = shown {
        log::log!(target: crate::logging::access_target(), level, method = method, route = route_label, path = shown.as_str(), status = status, duration_ms = crate::logging::millis(elapsed); "request");
    }
    closed
}

/// The answer of the route (404, 405 or the handler's reply).
fn route_reply(
    app: &App,
    rq: &tiny_http::Request,
    route: Option<&super::Route>,
    method: &'static str,
    route_label: &'static str,
) -> Reply {
    match route {
        None => Reply::error(404, "no such route"),
        Some(_) if !matches!(rq.method(), Method::Get | Method::Head) => {
            Reply::error(405, "only GET and HEAD are allowed here")
                .with_header("Allow", "GET, HEAD")
        }
        Some(r) => match catch_unwind(AssertUnwindSafe(|| r.call())) {
            Ok(reply) => reply,
            Err(_) => {
                app.panics.inc();
                log::error!(method = method, route = route_label; "handler panicked; answered 500");
                Reply::error(500, "internal error")
            }
        },
    }
}

/// The logged copy of a request's path: its first 256 characters (the
/// request, and its URL, are gone once answered), copied in one piece.
fn shown_path(path: &str) -> String {
    let end = path.char_indices().nth(256).map_or(path.len(), |(i, _)| i);
    path[..end].to_string()
}

/// The methods whose metric children are kept (every other one is rare).
#[derive(Clone, Copy)]
enum CachedMethod {
    Get = 0,
    Head = 1,
    Other,
}

impl CachedMethod {
    fn of(m: &Method) -> CachedMethod {
        match m {
            Method::Get => CachedMethod::Get,
            Method::Head => CachedMethod::Head,
            _ => CachedMethod::Other,
        }
    }
}

/// The status codes we answer with, and their `status_code` labels: their
/// metric children are kept, and their labels need no allocation.
const CACHED_STATUSES: [(u16, &str); 8] = [
    (200, "200"),
    (400, "400"),
    (404, "404"),
    (405, "405"),
    (413, "413"),
    (431, "431"),
    (500, "500"),
    (503, "503"),
];

/// The children of `http_requests_total` and `http_request_duration_seconds`
/// for GET and HEAD × every route and `unmatched` × the usual status codes,
/// each got from the vectors on its first request, exactly as
/// `with_label_values` would create it (so a series appears only once
/// answered). Then a request costs no label hashing, no read lock and no
/// reference count; the other label sets go through `with_label_values`.
struct MetricChildren {
    /// Routes plus one (`unmatched`).
    routes: usize,
    slots: Box<[OnceLock<(IntCounter, Histogram)>]>,
}

impl MetricChildren {
    fn new(routes: usize) -> MetricChildren {
        let routes = routes + 1;
        MetricChildren {
            routes,
            slots: (0..2 * routes * CACHED_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    fn slot(
        &self,
        method: CachedMethod,
        route: usize,
        status: u16,
    ) -> Option<&OnceLock<(IntCounter, Histogram)>> {
        let method = match method {
            CachedMethod::Other => return None,
            m => m as usize,
        };
        let status = CACHED_STATUSES.iter().position(|(s, _)| *s == status)?;
        if route >= self.routes {
            return None;
        }
        self.slots
            .get((method * self.routes + route) * CACHED_STATUSES.len() + status)
    }
}

/// The `status_code` label.
fn status_label(status: u16) -> Cow<'static, str> {
    CACHED_STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or_else(|| status.to_string().into(), |(_, label)| (*label).into())
}

thread_local! {
    /// The second and its HTTP date, for the `Date` header (formatted once a
    /// second per handler thread).
    static HTTP_DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the `Date` header tiny_http would write now; `None` if
/// the clock is before 1970 or past 9999.
fn with_http_date<R>(f: impl FnOnce(&str) -> R) -> Option<R> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    HTTP_DATE
        .try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if cache.0 != secs {
                *cache = (secs, framing::http_date(secs)?);
            }
            Some(f(&cache.1))
        })
        .ok()
        .flatten()
}

/// Writes a whole rendered answer as tiny_http's `respond` writes one: the
/// errors it ignores (the client went away) are ignored here too.
fn write_whole(rq: tiny_http::Request, bytes: &[u8]) -> std::io::Result<()> {
    fn ignore_client_closing(r: std::io::Result<()>) -> std::io::Result<()> {
        r.or_else(|e| match e.kind() {
            ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset => Ok(()),
            _ => Err(e),
        })
    }
    let mut writer = rq.into_writer();
    ignore_client_closing(writer.write_all(bytes))?;
    ignore_client_closing(writer.flush())
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_path_is_its_first_256_characters() {
        for path in [
            String::new(),
            "/health".to_string(),
            "/".repeat(256),
            "/".repeat(257),
            "é".repeat(300),
            "𝄞".repeat(256) + "x",
            format!("/{}", "ß".repeat(400)),
        ] {
            let want: String = path.chars().take(256).collect();
            assert_eq!(shown_path(&path), want);
        }
    }

    #[test]
    fn every_cached_label_set_has_its_own_metric_children() {
        let routes = 4;
        let children = MetricChildren::new(routes);
        let mut seen = std::collections::HashSet::new();
        for method in [CachedMethod::Get, CachedMethod::Head] {
            for route in 0..=routes {
                for (status, _) in CACHED_STATUSES {
                    let slot = children.slot(method, route, status).expect("cached");
                    assert!(seen.insert(slot as *const _), "{route} {status}");
                }
            }
        }
        assert_eq!(seen.len(), children.slots.len());
        assert!(children.slot(CachedMethod::Other, 0, 200).is_none());
        assert!(children.slot(CachedMethod::Get, 0, 201).is_none());
        assert!(children.slot(CachedMethod::Get, routes + 1, 200).is_none());
    }
}
