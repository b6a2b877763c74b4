//! The connection guard: the defence tiny_http 0.12 does not have.
//!
//! tiny_http gives every accepted connection a thread that blocks in `read`
//! for as long as the peer likes: no header timeout, no idle timeout, no
//! header-size limit, no cap on threads. Its task pool also has a race that
//! lets a burst of new connections queue behind threads that are parked on
//! idle connections, where they wait indefinitely. We may not fork it, so the
//! guard works from the outside:
//!
//! * It finds our accepted client sockets in `/proc/self/fd` (local port =
//!   our port, connected peer; one entry per inode, because tiny_http holds
//!   two descriptors per connection) whenever a connection arrives (the
//!   listener's epoll wake-up, and a `SIGIO` for when that wake-up is lost:
//!   `sys::AcceptSignal`), and at least every [`RESCAN`] while any exist.
//! * It watches each socket with edge-triggered epoll, so it wakes when bytes
//!   arrive and costs nothing while everything is idle.
//! * Per connection it combines the kernel's view (`TCP_INFO` bytes received,
//!   `FIONREAD` bytes not yet read by tiny_http) with the handlers' view
//!   (request in flight, time of the last response, keyed by peer address).
//! * It acts with `shutdown(2)` on tiny_http's descriptor: the blocked read
//!   returns at once, tiny_http drops the connection and its thread goes back
//!   to the pool. Where a status helps the client it first writes a final
//!   408, 431 or 503 with `Connection: close`.
//!
//! Rules (all reasons are counted in `http_connections_closed_total{reason}`):
//! * `header_timeout`: no complete request within the header timeout of the
//!   connection opening or of its last response, while bytes did arrive (a
//!   drip) or none ever did (a silent connection) → 408 and close.
//! * `idle_timeout`: a keep-alive connection silent since its last response
//!   for the idle timeout → close.
//! * `header_too_large`: tiny_http has read more than the header limit of a
//!   request it has not handed to a handler yet → 431 and abort (RST). Bytes
//!   are counted as they arrive and the receive buffer is fixed at 64 KiB,
//!   so memory stays bounded by about the limit plus what arrives during one
//!   guard wake-up.
//! * `request_timeout`: a request in flight for longer than the header
//!   timeout (a body dripping into the drain that tiny_http does on drop) →
//!   the read side is shut so the handler's response can still go out.
//! * `over_capacity`: more than `max_connections` open → the surplus is
//!   closed, idle and silent connections first, newest traffic last.
//! * `send_timeout`: response bytes sit in the send queue and the peer has
//!   acknowledged none of them for the send timeout (a zero window: it does
//!   not read) → abort. A handler blocked in that write fails by itself
//!   (`SO_SNDTIMEO`, set on the listener) and closes the same way; this rule
//!   also catches answers that fit in the kernel's buffers.
//!
//! The handlers close connections through the guard too ([`Guard::close_peer`]):
//! after a refused request head (`bad_request`, `header_too_large`), after a
//! request with a body (`request_body`), when a connection pipelines past its
//! depth (`pipeline_depth`, see `lanes`) and on a send timeout. Every
//! connection is counted once, under the reason that closed it.
//!
//! And one remedy that closes nothing: request bytes that sit unread on a
//! connection no thread picked up make the guard "kick" the pool. The race:
//! tiny_http's pool counts a thread as waiting until the thread has run
//! after its wake-up, so a burst of connections against a pool of idle
//! threads queues more connections than there are threads to wake, and with
//! keep-alive clients the queued ones wait until some connection ends. The
//! guard tells them by tiny_http never having read a byte of them
//! ([`kick_check`], after [`QUEUED`]); it opens and at once closes a
//! connection to itself; tiny_http sees no waiting thread, spawns one for it,
//! and that thread, done in a moment, takes the queued connection next
//! (`http_pool_kicks_total`). Closing idle
//! connections instead would also free threads, but under CPU saturation a
//! busy keep-alive client looks momentarily idle and would lose its
//! connection; a spare thread costs nothing and exits after 5 s idle.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::sys::{self, ClientSocket, Epoll, EventFd, TcpSnapshot};

/// Rescan period. New connections are normally found at once (the listener's
/// wake-up or its SIGIO, see `sys::AcceptSignal`) and closed ones drop out on
/// the next evaluation; the periodic rescan is the backstop, at about 30 µs.
const RESCAN: Duration = Duration::from_secs(2);
/// Request bytes on a connection tiny_http never read from, waiting this
/// long, mean no thread took it: it is queued behind the task-pool race
/// (module docs). A thread that was handed the connection reads at once, so
/// this only has to cover a new thread's first run on a busy machine (5 ms
/// kicked for well over one connection in two at a 128-connection burst on
/// the 2-core build VM); a kick too many costs one spare thread for 5 s.
const QUEUED: Duration = Duration::from_millis(10);
/// At most this many pool kicks per evaluation (a burst can leave many
/// connections queued at once; each kick frees one).
const MAX_KICKS: usize = 64;
/// Connections waiting this long in the accept queue, with no new
/// connection reaching tiny_http meanwhile, mean its accept loop is gone.
const ACCEPT_STUCK: Duration = Duration::from_secs(3);
/// How often the listener itself is checked while nothing else happens.
const LIVENESS: Duration = Duration::from_secs(5);
/// With no connection open and none arriving for this long, rescans slow
/// down to [`IDLE_RESCAN`].
const IDLE_AFTER: Duration = Duration::from_secs(30);
const IDLE_RESCAN: Duration = Duration::from_secs(15);
/// Wake-ups are coalesced: under load the guard runs at most once per this.
const COALESCE: Duration = Duration::from_millis(2);
/// A socket we shut down that tiny_http still holds after this long is
/// wedged: its thread is not blocked on the socket (that would have ended at
/// once with the shutdown) but on something that never returns, such as the
/// writer deadlock an `HTTP/2.0` request line causes (ARCHITECTURE.md, Known
/// limits). Legitimate holders let go within milliseconds.
const WEDGED_AFTER: Duration = Duration::from_secs(5);

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
const TOKEN_ACCEPTED: u64 = u64::MAX - 2;

/// Limits the guard enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: u64,
    pub send_timeout: Duration,
}

/// What the handlers tell the guard about a connection (keyed by peer).
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: u32,
    responses: u64,
    last_response: Instant,
    request_started: Instant,
}

/// The guard's own record of a connection.
#[derive(Debug)]
struct Conn {
    sock: ClientSocket,
    /// When the current wait began: discovery, or the last response seen.
    since: Instant,
    responses_seen: u64,
    baseline_received: u64,
    baseline_consumed: u64,
    /// Consumed count and the time it last moved (for stall detection).
    last_consumed: u64,
    consumed_moved: Instant,
    read_shut: bool,
    /// When the guard last kicked the pool for this connection.
    kicked: Option<Instant>,
    /// Since when unacknowledged response bytes wait, and the acknowledged
    /// count then (send-timeout rule).
    send_stall: Option<(Instant, u64)>,
}

struct Metrics {
    open: IntGauge,
    closed: IntCounterVec,
    kicks: IntCounter,
    wedged: IntGauge,
}

struct Inner {
    limits: Limits,
    port: u16,
    listener_fd: RawFd,
    epoll: Epoll,
    wake: EventFd,
    activity: Mutex<HashMap<SocketAddr, Activity>>,
    conns: Mutex<HashMap<u64, Conn>>,
    /// Sockets we shut down that tiny_http has not closed yet.
    /// (inode → peer); kept while the socket exists at all (a closed one's
    /// `getpeername` fails, so the peer is remembered here).
    closed: Mutex<HashMap<u64, SocketAddr>>,
    /// When each socket in `closed` was first seen there by a rescan (only
    /// the guard thread touches it; a Mutex keeps `Inner` Sync).
    closed_seen: Mutex<HashMap<u64, Instant>>,
    metrics: Metrics,
    stop: AtomicBool,
    draining: AtomicBool,
    listener_closed: AtomicBool,
    listener_inode: Option<u64>,
    on_fatal: Box<dyn Fn(String) + Send + Sync>,
}

/// Handle shared by the server, its handler threads and the guard thread.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

impl Guard {
    /// Registers the metrics and starts the guard thread for the listener
    /// `listener_fd` bound to `port`.
    pub fn start(
        limits: Limits,
        port: u16,
        listener_fd: RawFd,
        registry: &Registry,
        on_fatal: Box<dyn Fn(String) + Send + Sync>,
    ) -> std::io::Result<Guard> {
        let open = IntGauge::new(
            "http_connections_open",
            "Client connections currently open (as seen by the connection guard).",
        )
        .expect("metric");
        let max = IntGauge::new(
            "http_connections_max",
            "The configured cap on open client connections (HTTP_MAX_CONNECTIONS).",
        )
        .expect("metric");
        max.set(limits.max_connections as i64);
        let closed = IntCounterVec::new(
            Opts::new(
                "http_connections_closed_total",
                "Client connections closed by the connection guard, by reason.",
            ),
            &["reason"],
        )
        .expect("metric");
        for reason in CLOSE_REASONS {
            closed.with_label_values(&[reason]);
        }
        let kicks = IntCounter::new(
            "http_pool_kicks_total",
            "Fresh tiny_http pool threads the guard started for connections no thread was reading.",
        )
        .expect("metric");
        let wedged = IntGauge::new(
            "http_connections_wedged",
            "Connections the guard closed whose tiny_http thread never let go (e.g. after an HTTP/2.0 request line).",
        )
        .expect("metric");
        for c in [
            Box::new(open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(max),
            Box::new(closed.clone()),
            Box::new(kicks.clone()),
            Box::new(wedged.clone()),
        ] {
            registry
                .register(c)
                .expect("connection metrics registered once");
        }

        let epoll = Epoll::new()?;
        let wake = EventFd::new()?;
        epoll.add(listener_fd, TOKEN_LISTENER, sys::READABLE | sys::EDGE)?;
        epoll.add(wake.fd(), TOKEN_WAKE, sys::READABLE | sys::EDGE)?;
        let inner = Arc::new(Inner {
            limits,
            port,
            listener_fd,
            epoll,
            wake,
            activity: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            closed: Mutex::new(HashMap::new()),
            closed_seen: Mutex::new(HashMap::new()),
            metrics: Metrics {
                open,
                closed,
                kicks,
                wedged,
            },
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            listener_closed: AtomicBool::new(false),
            listener_inode: sys::socket_inode(listener_fd),
            on_fatal,
        });
        let run = inner.clone();
        std::thread::Builder::new()
            .name("conn-guard".into())
            .spawn(move || run.run())?;
        Ok(Guard { inner })
    }

    /// A handler picked up a request from `peer`.
    pub fn request_started(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let now = Instant::now();
        let mut map = self
            .inner
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let a = map.entry(peer).or_insert(Activity {
            in_flight: 0,
            responses: 0,
            last_response: now,
            request_started: now,
        });
        a.in_flight += 1;
        a.request_started = now;
    }

    /// The response to `peer`'s request has been written.
    pub fn request_finished(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let mut map = self
            .inner
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(a) = map.get_mut(&peer) {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.responses += 1;
            a.last_response = Instant::now();
        }
    }

    /// Shuts the read side of `peer`'s connection, so that tiny_http's drain
    /// of an unwanted request body ends at once and it parses nothing more
    /// than what it already buffered (before a final answer; on a pipeline
    /// overflow).
    /// Returns the socket, for [`Guard::close_socket`] (after the read side
    /// is shut, tiny_http may close one of its descriptors at any moment and
    /// a socket so half-closed is hard to find by its peer again).
    pub fn shut_read(&self, peer: Option<SocketAddr>) -> Option<ClientSocket> {
        let s = self.inner.find(peer?)?;
        let fd = current_fd(&s)?;
        sys::shutdown(fd.as_fd(), true, false);
        let mut conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.get_mut(&s.inode) {
            c.read_shut = true;
        }
        Some(s)
    }

    /// Closes a socket found before (by [`Guard::shut_read`]), as
    /// [`Guard::close_peer`] does; `response` is written to it first.
    pub fn close_socket(
        &self,
        s: &ClientSocket,
        reason: &'static str,
        response: Option<&[u8]>,
        abort: bool,
    ) {
        self.inner.close_socket(s, reason, response, abort);
    }

    /// Closes `peer`'s connection for `reason` (one of [`CLOSE_REASONS`]),
    /// counted once: `abort` resets it (the peer does not read: nothing to
    /// deliver), otherwise both directions are shut after what was written.
    pub fn close_peer(&self, peer: Option<SocketAddr>, reason: &'static str, abort: bool) {
        let Some(peer) = peer else { return };
        if let Some(s) = self.inner.find(peer) {
            self.inner.close_socket(&s, reason, None, abort);
        }
    }

    /// Whether `peer` has a connection we know of (in our table) that we did
    /// not close: then a request from `peer` may be that connection's
    /// (cheap, no system call).
    pub fn knows_open_conn(&self, peer: SocketAddr) -> bool {
        // One lock at a time (rescan takes conns, then closed).
        let inodes: Vec<u64> = {
            let conns = self.inner.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns
                .iter()
                .filter(|(_, c)| c.sock.peer == peer)
                .map(|(ino, _)| *ino)
                .collect()
        };
        if inodes.is_empty() {
            return false;
        }
        let closed = self.inner.closed.lock().unwrap_or_else(|e| e.into_inner());
        inodes.iter().any(|ino| !closed.contains_key(ino))
    }

    /// The inodes of the sockets we closed for `peer` that may still exist.
    fn closed_inodes_of(&self, peer: SocketAddr) -> Vec<u64> {
        self.inner
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(ino, _)| *ino)
            .collect()
    }

    /// Whether, right now (a /proc scan), `peer` has a connected socket we
    /// did not close (it connected again from the same port), or none of
    /// the sockets we closed for it exists any more.
    pub fn peer_reconnected_or_gone(&self, peer: SocketAddr) -> bool {
        let closed = self.closed_inodes_of(peer);
        let again = sys::client_sockets(self.inner.port, self.inner.listener_fd)
            .iter()
            .any(|s| s.peer == peer && !closed.contains(&s.inode));
        if again || closed.is_empty() {
            return true;
        }
        let alive = sys::socket_inodes();
        !closed.iter().any(|ino| alive.contains(ino))
    }

    /// Whether a socket we closed for `peer` still exists (tiny_http still
    /// holds it, so requests it parsed from it may still arrive).
    pub fn closed_socket_alive(&self, peer: SocketAddr) -> bool {
        let inodes = self.closed_inodes_of(peer);
        if inodes.is_empty() {
            return false;
        }
        let alive = sys::socket_inodes();
        inodes.iter().any(|ino| alive.contains(ino))
    }

    /// The peers of every socket we closed that still exists (one scan).
    pub fn closed_peers_alive(&self) -> HashSet<SocketAddr> {
        let closed: Vec<(u64, SocketAddr)> = self
            .inner
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(i, p)| (*i, *p))
            .collect();
        if closed.is_empty() {
            return HashSet::new();
        }
        let alive = sys::socket_inodes();
        closed
            .into_iter()
            .filter(|(ino, _)| alive.contains(ino))
            .map(|(_, p)| p)
            .collect()
    }

    /// The listener is being shut on purpose: stop watching the accept
    /// queue. Returns false if that was already so.
    pub fn close_listener(&self) -> bool {
        !self.inner.listener_closed.swap(true, Ordering::SeqCst)
    }

    /// Whether the listener was shut on purpose.
    pub fn listener_closed(&self) -> bool {
        self.inner.listener_closed.load(Ordering::SeqCst)
    }

    /// From now on idle connections are closed at once (graceful stop).
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.wake.notify();
    }

    /// Open client connections and requests in flight, freshly counted.
    pub fn open_and_in_flight(&self) -> (usize, u32) {
        let open = sys::client_sockets(self.inner.port, self.inner.listener_fd).len();
        let in_flight = self
            .inner
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|a| a.in_flight)
            .sum();
        self.inner.wake.notify();
        (open, in_flight)
    }

    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake.notify();
    }
}

impl Inner {
    fn run(self: Arc<Self>) {
        let mut events = Vec::with_capacity(64);
        let mut last_scan = Instant::now() - RESCAN;
        // After a listener edge the accept may not have happened yet when we
        // scan; look again a little later.
        let mut follow_ups: Vec<Instant> = Vec::new();
        let mut next_deadline: Option<Instant> = None;
        let mut last_discovery = Instant::now();
        let mut last_arrival = Instant::now();
        // Idle (nothing open, no arrival for a while) the guard sleeps long:
        // the worker's idle CPU budget is a few ms per minute.
        let rescan_every = |last_arrival: Instant| {
            if self.metrics.open.get() > 0 || last_arrival.elapsed() < IDLE_AFTER {
                RESCAN
            } else {
                IDLE_RESCAN
            }
        };
        let mut backlog_since: Option<Instant> = None;
        // While connections announced by the listener still wait for
        // tiny_http's accept: when to look again (never blocking the loop:
        // the rules keep being applied meanwhile).
        let mut accept_poll: Option<(Instant, Duration)> = None;
        // New connections are announced twice: by the listener's epoll
        // wake-up, which is lost when tiny_http accepts before we look, and
        // by a SIGIO that is not (sys::AcceptSignal). Dropped on every return,
        // which disarms it.
        let accept_signal = self
            .listener_inode
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))
            .and_then(|inode| sys::AcceptSignal::arm(self.listener_fd, inode))
            .and_then(|s| {
                self.epoll
                    .add(s.fd(), TOKEN_ACCEPTED, sys::READABLE | sys::EDGE)
                    .map(|()| s)
            });
        let accept_signal = match accept_signal {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!(error = e.to_string().as_str(); "guard: no accept signal; new connections may be found up to one rescan late");
                None
            }
        };
        loop {
            let now = Instant::now();
            // The listener is checked at least every LIVENESS (see below).
            let rescan = if self.draining.load(Ordering::Relaxed) {
                last_scan + Duration::from_millis(10)
            } else {
                last_scan + rescan_every(last_arrival)
            };
            let backlog_check = backlog_since.map(|_| now + Duration::from_millis(500));
            let wake_at = [
                next_deadline,
                Some(rescan),
                backlog_check,
                accept_poll.map(|(t, _)| t),
            ]
            .into_iter()
            .chain(follow_ups.iter().copied().map(Some))
            .flatten()
            .fold(now + LIVENESS, Instant::min);
            // Rounded up: a deadline 0.4 ms away must not become a zero
            // timeout and a spin.
            let timeout_ms = wake_at
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000)
                .min(60_000) as i32;
            self.epoll.wait(&mut events, timeout_ms);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            log::trace!(events = events.len(), timeout_ms = timeout_ms; "guard: woke");
            let mut scan = now.duration_since(last_scan) >= rescan_every(last_arrival)
                || self.draining.load(Ordering::Relaxed);
            for &(token, ev) in &events {
                match token {
                    TOKEN_LISTENER | TOKEN_ACCEPTED => {
                        if token == TOKEN_ACCEPTED {
                            accept_signal.as_ref().map(sys::AcceptSignal::drain);
                        }
                        scan = true;
                        last_arrival = now;
                        // tiny_http may not have taken the new connections
                        // off the accept queue yet (under CPU pressure its
                        // accept thread can lag by more than any fixed
                        // follow-up delay): look again until it has.
                        accept_poll = Some((now, Duration::ZERO));
                        follow_ups = vec![
                            now + Duration::from_millis(1),
                            now + Duration::from_millis(5),
                            now + Duration::from_millis(25),
                            now + Duration::from_millis(100),
                            now + Duration::from_millis(500),
                        ];
                    }
                    TOKEN_WAKE => self.wake.drain(),
                    _ if ev & sys::HANGUP != 0 => scan = true,
                    _ => {}
                }
            }
            if accept_poll.is_some_and(|(t, _)| t <= now) {
                scan = true;
            }
            let before = follow_ups.len();
            follow_ups.retain(|t| *t > now);
            if follow_ups.len() != before {
                scan = true;
            }
            if scan {
                if self.rescan(now) {
                    last_discovery = now;
                }
                last_scan = now;
            }
            // tiny_http's accept loop can end for good (an accept error ends
            // it; EMFILE while cloning a stream panics its thread). Either
            // way connections pile up in the accept queue and nothing takes
            // them: report it so the process exits and is restarted.
            // If its thread panicked, the listener was dropped with it:
            // our fd is closed (or reused) and nothing listens any more.
            let backlog = sys::accept_backlog(self.listener_fd);
            let listening = self.listener_inode.is_some()
                && sys::socket_inode(self.listener_fd) == self.listener_inode
                && backlog.is_some();
            let closing = self.listener_closed.load(Ordering::SeqCst);
            if let Some((_, pause)) = accept_poll.filter(|(t, _)| *t <= now) {
                accept_poll = next_accept_poll(backlog, closing, pause).map(|p| (now + p, p));
            }
            if !listening && !closing {
                (self.on_fatal)("the listening socket is gone".to_string());
                return;
            }
            match backlog.filter(|n| *n > 0) {
                Some(waiting) if !closing => {
                    let since = *backlog_since.get_or_insert(now);
                    if now.duration_since(since) >= ACCEPT_STUCK
                        && now.duration_since(last_discovery) >= ACCEPT_STUCK
                    {
                        (self.on_fatal)(format!(
                            "accept loop is not accepting: {waiting} connections waiting for {}s",
                            ACCEPT_STUCK.as_secs()
                        ));
                        return;
                    }
                }
                _ => backlog_since = None,
            }
            next_deadline = self.evaluate(now);
            if !events.is_empty() {
                std::thread::sleep(COALESCE);
            }
        }
    }

    /// Opens and closes a connection to ourselves, so that tiny_http spawns a
    /// fresh pool thread that then takes a queued connection (module docs).
    fn kick_pool(&self) {
        let addr = match sys::local_addr(self.listener_fd) {
            Some(SocketAddr::V4(a)) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            Some(SocketAddr::V6(a)) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            Some(a) => a,
            None => return,
        };
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            self.metrics.kicks.inc();
            log::debug!(port = addr.port(); "guard: kicked the connection pool for a stalled connection");
            drop(s);
        }
    }

    /// Reconciles our table with the sockets that exist now; returns whether
    /// a new one was found.
    fn rescan(&self, now: Instant) -> bool {
        let mut discovered = false;
        // Taken before the scan: handler records touched from here on may
        // belong to a connection the scan below does not see yet.
        let scan_started = Instant::now();
        let found = sys::client_sockets(self.port, self.listener_fd);
        log::trace!(found = found.len(); "guard: rescan");
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        // Never EPOLL_CTL_DEL here: epoll keys registrations by (fd number,
        // open file), a DEL by a number that was closed and reused would
        // remove the registration of the *new* connection. Registrations of
        // closed sockets vanish by themselves, stray events are ignored.
        conns.retain(|ino, c| match found.iter().find(|s| s.inode == *ino) {
            Some(s) => {
                // tiny_http may have closed the fd we used but not its twin.
                c.sock.fd = s.fd;
                true
            }
            None => false,
        });
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if !closed.is_empty() {
            let alive = sys::socket_inodes();
            closed.retain(|ino, _| alive.contains(ino));
        }
        self.check_wedged(&closed, now);
        for s in found {
            if conns.contains_key(&s.inode) || closed.contains_key(&s.inode) {
                continue;
            }
            let watch = sys::READABLE | sys::EDGE | sys::HANGUP;
            match self.epoll.add(s.fd, s.inode, watch) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(_) => continue,
            }
            discovered = true;
            log::trace!(fd = s.fd, inode = s.inode, peer = s.peer.to_string().as_str(); "guard: new connection");
            conns.insert(
                s.inode,
                Conn {
                    sock: s,
                    since: now,
                    responses_seen: 0,
                    baseline_received: 0,
                    baseline_consumed: 0,
                    last_consumed: 0,
                    consumed_moved: now,
                    read_shut: false,
                    kicked: None,
                    send_stall: None,
                },
            );
        }
        drop(closed);
        let open = conns.len();
        // Forget handler bookkeeping of peers that are gone.
        let peers: Vec<SocketAddr> = conns.values().map(|c| c.sock.peer).collect();
        drop(conns);
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        activity.retain(|peer, a| keep_activity(a, peers.contains(peer), scan_started));
        drop(activity);
        self.metrics.open.set(open as i64);
        discovered
    }

    /// Counts the closed sockets tiny_http never let go of; when they would
    /// eat into the descriptors reserved for open connections, the process
    /// must restart to get its threads and descriptors back (nothing else
    /// can free them).
    fn check_wedged(&self, closed: &HashMap<u64, SocketAddr>, now: Instant) {
        let mut seen = self.closed_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|ino, _| closed.contains_key(ino));
        for ino in closed.keys() {
            seen.entry(*ino).or_insert(now);
        }
        let n = wedged(seen.values().copied(), now, WEDGED_AFTER);
        drop(seen);
        self.metrics.wedged.set(n as i64);
        // While draining the stop is under way anyway (and exits 0).
        if self.draining.load(Ordering::Relaxed) {
            return;
        }
        if let Some(why) = wedged_verdict(n, self.limits.max_connections) {
            (self.on_fatal)(why);
        }
    }

    /// `peer`'s socket: from our table, else from a fresh scan (not found
    /// yet); the inode is re-checked.
    fn find(&self, peer: SocketAddr) -> Option<ClientSocket> {
        let found = {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.values().find(|c| c.sock.peer == peer).map(|c| c.sock)
        };
        // Its descriptor may be closed (tiny_http closes the read side's at
        // EOF): then its twin's.
        let found = found.and_then(|s| {
            if sys::socket_inode(s.fd) == Some(s.inode) {
                Some(s)
            } else {
                sys::fd_of_inode(s.inode).map(|fd| ClientSocket { fd, ..s })
            }
        });
        let found = found.or_else(|| {
            sys::client_sockets(self.port, self.listener_fd)
                .into_iter()
                .find(|s| s.peer == peer)
        });
        if found.is_none() {
            log::debug!(peer = peer.to_string().as_str(); "guard: no socket for this peer");
        }
        found
    }

    fn close(&self, c: &Conn, reason: &str, response: Option<&[u8]>) {
        // The client is still sending: end it now (RST), see sys::abort.
        let abort = reason == "header_too_large" || reason == "send_timeout";
        self.close_socket(&c.sock, reason, response, abort);
    }

    fn close_socket(&self, s: &ClientSocket, reason: &str, response: Option<&[u8]>, abort: bool) {
        // The fd number could have been closed or reused since we looked.
        let Some(fd) = current_fd(s) else {
            log::debug!(peer = s.peer.to_string().as_str(); "guard: socket gone before its close");
            return;
        };
        let s = &ClientSocket {
            fd: fd.as_raw_fd(),
            ..*s
        };
        // Until tiny_http closes it, a rescan must not take it for new; and
        // a connection is closed (and counted) once.
        if self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.inode, s.peer)
            .is_some()
        {
            log::debug!(peer = s.peer.to_string().as_str(), reason = reason; "guard: already closed");
            return;
        }
        // Counted before acting, so that whoever sees the close can already
        // see it in /metrics.
        if !reason.is_empty() {
            self.metrics.closed.with_label_values(&[reason]).inc();
            log::debug!(peer = s.peer.to_string().as_str(), reason = reason; "connection closed by guard");
        }
        if let Some(r) = response {
            sys::send_nowait(fd.as_fd(), r);
        }
        sys::shutdown(fd.as_fd(), true, true);
        if abort {
            sys::abort(fd.as_fd());
        }
    }

    /// Applies the rules to every connection; returns the next deadline.
    fn evaluate(&self, now: Instant) -> Option<Instant> {
        let limits = &self.limits;
        let draining = self.draining.load(Ordering::Relaxed);
        let activity: HashMap<SocketAddr, Activity> = self
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let closed: HashSet<u64> = self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut at = |t: Instant| deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
        let mut stalled = 0usize;
        // (waiting-since, inode, partial request?) of connections that may be shed
        // (none of them is in `gone`).
        let mut idle: Vec<(Instant, u64, bool)> = Vec::new();

        for (ino, c) in conns.iter_mut() {
            if closed.contains(ino) || sys::socket_inode(c.sock.fd) != Some(*ino) {
                gone.push(*ino);
                continue;
            }
            let Some(snap): Option<TcpSnapshot> = sys::tcp_snapshot(c.sock.fd) else {
                gone.push(*ino);
                continue;
            };
            let act = activity.get(&c.sock.peer).copied();
            if let Some(a) = act {
                if a.responses != c.responses_seen {
                    c.responses_seen = a.responses;
                    c.since = a.last_response;
                    c.baseline_received = snap.bytes_received;
                    c.baseline_consumed = snap.consumed();
                }
            }
            if snap.consumed() != c.last_consumed {
                c.last_consumed = snap.consumed();
                c.consumed_moved = now;
            }
            // Send timeout: response bytes wait and the peer acknowledges
            // none of them.
            match send_check(
                c.send_stall,
                snap.unacked,
                snap.bytes_acked,
                now,
                limits.send_timeout,
            ) {
                SendCheck::Flowing => c.send_stall = None,
                SendCheck::Waiting { since, acked } => {
                    c.send_stall = Some((since, acked));
                    at(since + limits.send_timeout);
                }
                SendCheck::TimedOut => {
                    self.close(c, "send_timeout", None);
                    gone.push(*ino);
                    continue;
                }
            }
            if let Some(a) = act.filter(|a| a.in_flight > 0) {
                let limit = a.request_started + limits.header_timeout;
                // A handler waiting on a peer that does not read is the
                // send timeout's case, not a dripping body.
                if c.send_stall.is_some() {
                    continue;
                }
                if now >= limit && !c.read_shut {
                    c.read_shut = true;
                    if let Some(fd) = current_fd(&c.sock) {
                        sys::shutdown(fd.as_fd(), true, false);
                    }
                    self.metrics
                        .closed
                        .with_label_values(&["request_timeout"])
                        .inc();
                } else if !c.read_shut {
                    at(limit);
                }
                continue;
            }
            let received = snap.bytes_received.saturating_sub(c.baseline_received);
            let consumed = snap.consumed().saturating_sub(c.baseline_consumed);
            if consumed > limits.max_header_bytes {
                self.close(c, "header_too_large", Some(RESPONSE_431));
                gone.push(*ino);
                continue;
            }
            if received == 0 {
                if draining {
                    self.close(c, "", None);
                    gone.push(*ino);
                    continue;
                }
                let (limit, reason, response) = if c.responses_seen == 0 {
                    (limits.header_timeout, "header_timeout", Some(RESPONSE_408))
                } else {
                    (limits.idle_timeout, "idle_timeout", None)
                };
                if now >= c.since + limit {
                    self.close(c, reason, response);
                    gone.push(*ino);
                    continue;
                }
                at(c.since + limit);
                idle.push((c.since, *ino, false));
            } else {
                if now >= c.since + limits.header_timeout {
                    self.close(c, "header_timeout", Some(RESPONSE_408));
                    gone.push(*ino);
                    continue;
                }
                at(c.since + limits.header_timeout);
                if snap.unread > 0 {
                    match kick_check(snap.consumed() == 0, c.consumed_moved, c.kicked, now) {
                        Kick::Now => {
                            c.kicked = Some(now);
                            stalled += 1;
                            // Look again soon: the kick's thread should
                            // have picked it up by then.
                            at(now + QUEUED);
                        }
                        Kick::LookAt(t) => at(t),
                        Kick::Never => {}
                    }
                } else {
                    // A drip: bytes arrive but no request completes.
                    idle.push((c.since, *ino, true));
                }
            }
        }
        // Over the cap: shed idle and silent connections first (oldest first),
        // partial requests only after them.
        let live = conns.len() - gone.len();
        if live > limits.max_connections {
            idle.sort_by_key(|(since, ino, partial)| (*partial, *since, *ino));
            for &(_, ino, partial) in idle.iter().take(live - limits.max_connections) {
                if let Some(c) = conns.get(&ino) {
                    self.close(c, "over_capacity", partial.then_some(RESPONSE_503));
                    gone.push(ino);
                }
            }
        }
        for _ in 0..stalled.min(MAX_KICKS) {
            self.kick_pool();
        }
        for ino in gone {
            conns.remove(&ino);
        }
        self.metrics.open.set(conns.len() as i64);
        deadline
    }
}

/// Our own checked duplicate of `s`'s socket (see `sys::dup_socket`), made
/// from its descriptor if that still refers to it, else from its twin's
/// (tiny_http closes the read side's as soon as it sees EOF, the write
/// side's later); None once both are gone.
fn current_fd(s: &ClientSocket) -> Option<OwnedFd> {
    sys::dup_socket(s.fd, s.inode)
        .or_else(|| sys::fd_of_inode(s.inode).and_then(|fd| sys::dup_socket(fd, s.inode)))
}

/// The send-timeout rule for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendCheck {
    /// Nothing waits for the peer.
    Flowing,
    /// Bytes wait, the peer has acknowledged `acked` bytes in all, and has
    /// acknowledged nothing more since `since`.
    Waiting { since: Instant, acked: u64 },
    /// Nothing acknowledged for the send timeout.
    TimedOut,
}

/// Pure: `prev` is the last [`SendCheck::Waiting`] state, `unacked` and
/// `acked` the kernel's counts now. A wait starts when first seen (never
/// earlier: the guard may not have looked for a while) and restarts on any
/// acknowledged byte.
fn send_check(
    prev: Option<(Instant, u64)>,
    unacked: u64,
    acked: u64,
    now: Instant,
    timeout: Duration,
) -> SendCheck {
    if unacked == 0 {
        return SendCheck::Flowing;
    }
    let since = match prev {
        Some((since, a)) if a == acked => since,
        _ => now,
    };
    if now.duration_since(since) >= timeout {
        SendCheck::TimedOut
    } else {
        SendCheck::Waiting { since, acked }
    }
}

/// Pure: whether the handlers' record `a` of a peer outlives a rescan that
/// began at `scan_started` and did (`known`) or did not find an open
/// connection from that peer. A record touched since the scan began is kept
/// even when the scan missed its socket: that connection was accepted (and
/// maybe answered) after `/proc` was read, and without its record the next
/// rescan would take the request it answered for a partial one (a 408 after
/// the header timeout instead of the idle close).
fn keep_activity(a: &Activity, known: bool, scan_started: Instant) -> bool {
    known || a.in_flight > 0 || a.request_started.max(a.last_response) >= scan_started
}

/// Pure: after a look at the accept queue (`backlog`, None if unreadable)
/// that followed a listener wake-up with `pause`, the pause before the next
/// look, or None once the queue is empty (or the listener is being closed).
/// It starts at 100 µs and doubles to 10 ms: a lagging accept thread is
/// followed closely, a dead one costs at most 100 looks a second until the
/// accept-loop check in `run` reports it.
fn next_accept_poll(backlog: Option<u32>, closing: bool, pause: Duration) -> Option<Duration> {
    match backlog {
        Some(n) if n > 0 && !closing => {
            Some((pause * 2).clamp(Duration::from_micros(100), Duration::from_millis(10)))
        }
        _ => None,
    }
}

/// The pool-kick rule for one connection with request bytes waiting unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kick {
    /// Kick the pool now.
    Now,
    /// Not yet: look again at this time.
    LookAt(Instant),
    /// Never for this connection: a thread has read from it, and tiny_http
    /// gives a connection one thread for its whole life, so a fresh pool
    /// thread could not help (that thread is busy, not missing).
    Never,
}

/// Pure: `never_read` is whether tiny_http has consumed no byte of the
/// connection yet, `waiting_since` since when nothing was consumed (its
/// discovery, or the last time its consumed count moved), `kicked` when we
/// last kicked for it. A kick whose own connection lost the same race frees
/// nothing, so a connection still queued is kicked for again after
/// [`QUEUED`].
fn kick_check(
    never_read: bool,
    waiting_since: Instant,
    kicked: Option<Instant>,
    now: Instant,
) -> Kick {
    if !never_read {
        return Kick::Never;
    }
    let due = match kicked {
        Some(k) if k >= waiting_since => k + QUEUED,
        _ => waiting_since + QUEUED,
    };
    if now >= due {
        Kick::Now
    } else {
        Kick::LookAt(due)
    }
}

/// How many of the closed sockets first seen at `seen` are still held
/// `after` later (the caller drops the ones that are gone).
fn wedged(seen: impl IntoIterator<Item = Instant>, now: Instant, after: Duration) -> usize {
    seen.into_iter()
        .filter(|t| now.saturating_duration_since(*t) >= after)
        .count()
}

/// Restart once wedged connections are as many as the cap on open ones: the
/// fd budget checked at start reserves descriptors for `max_connections`
/// connections, and wedged ones (outside the cap) would take them next.
/// Until then a wedged thread costs a stack and two descriptors, which is
/// cheaper than a restart an attacker could trigger with a few requests.
fn wedged_verdict(wedged: usize, max_connections: usize) -> Option<String> {
    (wedged >= max_connections.max(1)).then(|| {
        format!(
            "{wedged} connections wedged in tiny_http (at least HTTP_MAX_CONNECTIONS={max_connections}); restarting to free their threads and descriptors"
        )
    })
}

/// Every `reason` of `http_connections_closed_total` (all exported from 0).
pub const CLOSE_REASONS: [&str; 9] = [
    "header_timeout",
    "idle_timeout",
    "header_too_large",
    "request_timeout",
    "over_capacity",
    "bad_request",
    "request_body",
    "pipeline_depth",
    "send_timeout",
];

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
const RESPONSE_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn the_accept_queue_is_polled_until_empty_with_a_growing_pause() {
        let us = Duration::from_micros;
        // Empty (or unreadable, or closing): done.
        assert_eq!(next_accept_poll(Some(0), false, Duration::ZERO), None);
        assert_eq!(next_accept_poll(None, false, us(800)), None);
        assert_eq!(next_accept_poll(Some(3), true, us(800)), None);
        // Waiting: 100 µs first, doubling, at most 10 ms.
        let mut pause = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            pause = next_accept_poll(Some(1), false, pause).expect("still waiting");
            seen.push(pause);
        }
        assert_eq!(seen[0], us(100));
        assert_eq!(seen[1], us(200));
        assert_eq!(seen[6], us(6_400));
        assert_eq!(seen[7], us(10_000));
        assert_eq!(seen[9], us(10_000));
    }

    #[test]
    fn only_a_connection_no_thread_ever_read_is_kicked_for() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Read before: its own thread is busy; never kicked, however long.
        assert_eq!(kick_check(false, at(0), None, at(60_000)), Kick::Never);
        let q = QUEUED.as_millis() as u64;
        // Never read, bytes waiting since 0: not before QUEUED, then at once.
        assert_eq!(
            kick_check(true, at(0), None, at(q - 1)),
            Kick::LookAt(at(q))
        );
        assert_eq!(kick_check(true, at(0), None, at(q)), Kick::Now);
        assert_eq!(kick_check(true, at(0), None, at(900)), Kick::Now);
        // Kicked at QUEUED and still queued: again QUEUED after that kick.
        assert_eq!(
            kick_check(true, at(0), Some(at(q)), at(q + 2)),
            Kick::LookAt(at(2 * q))
        );
        assert_eq!(kick_check(true, at(0), Some(at(q)), at(2 * q)), Kick::Now);
        // A kick from before the current wait does not delay this one.
        assert_eq!(
            kick_check(true, at(100), Some(at(1)), at(100 + q)),
            Kick::Now
        );
        assert_eq!(
            kick_check(true, at(100), Some(at(1)), at(101)),
            Kick::LookAt(at(100 + q))
        );
    }

    #[test]
    fn a_rescan_keeps_the_records_of_connections_it_may_not_have_seen() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let rec = |in_flight, started, finished| Activity {
            in_flight,
            responses: u64::from(in_flight == 0),
            request_started: started,
            last_response: finished,
        };
        let scan = at(100);
        // Answered before the scan began and not found by it: gone.
        assert!(!keep_activity(&rec(0, at(10), at(20)), false, scan));
        // Found by the scan: kept, however old.
        assert!(keep_activity(&rec(0, at(10), at(20)), true, scan));
        // In flight: kept.
        assert!(keep_activity(&rec(1, at(10), at(10)), false, scan));
        // The race: accepted after /proc was read, asked and answered before
        // the records were pruned. Kept, so the next rescan sees a response.
        assert!(keep_activity(&rec(0, at(101), at(102)), false, scan));
        // Started before the scan, answered after it: kept too.
        assert!(keep_activity(&rec(0, at(90), at(100)), false, scan));
    }

    #[test]
    fn a_closed_socket_is_wedged_only_once_held_for_wedged_after() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let after = Duration::from_secs(5);
        assert_eq!(wedged([], at(60_000), after), 0);
        // Seen at 0 and at 1 s: at 4.999 s neither, at 5 s one, at 6 s both.
        let seen = [at(0), at(1_000)];
        assert_eq!(wedged(seen, at(4_999), after), 0);
        assert_eq!(wedged(seen, at(5_000), after), 1);
        assert_eq!(wedged(seen, at(6_000), after), 2);
        // A clock that reads earlier than a record never counts it.
        assert_eq!(wedged([at(10_000)], at(0), after), 0);
    }

    #[test]
    fn wedged_connections_restart_the_process_at_the_connection_cap() {
        assert_eq!(wedged_verdict(0, 512), None);
        assert_eq!(wedged_verdict(511, 512), None);
        let why = wedged_verdict(512, 512).expect("at the cap");
        assert!(why.contains("512 connections wedged"), "{why}");
        assert!(why.contains("HTTP_MAX_CONNECTIONS=512"), "{why}");
        assert!(wedged_verdict(600, 512).is_some());
        // A cap of 0 cannot be configured, but must not restart on nothing.
        assert_eq!(wedged_verdict(0, 0), None);
        assert!(wedged_verdict(1, 0).is_some());
    }

    #[test]
    fn send_timeout_counts_from_the_last_acknowledged_byte() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // Nothing waiting: flowing, whatever came before.
        assert_eq!(
            send_check(Some((t0, 5)), 0, 5, s(99), T),
            SendCheck::Flowing
        );
        // First seen waiting at 3 s: the wait starts then, not earlier.
        let w = send_check(None, 100, 5, s(3), T);
        assert_eq!(
            w,
            SendCheck::Waiting {
                since: s(3),
                acked: 5
            }
        );
        // Still nothing acknowledged at 12 s: waiting; at 13 s: timed out.
        assert_eq!(
            send_check(Some((s(3), 5)), 100, 5, s(12), T),
            SendCheck::Waiting {
                since: s(3),
                acked: 5
            }
        );
        assert_eq!(
            send_check(Some((s(3), 5)), 100, 5, s(13), T),
            SendCheck::TimedOut
        );
        // One byte acknowledged at 12 s restarts the wait.
        assert_eq!(
            send_check(Some((s(3), 5)), 99, 6, s(12), T),
            SendCheck::Waiting {
                since: s(12),
                acked: 6
            }
        );
        assert_eq!(
            send_check(Some((s(12), 6)), 99, 6, s(21), T),
            SendCheck::Waiting {
                since: s(12),
                acked: 6
            }
        );
        assert_eq!(
            send_check(Some((s(12), 6)), 99, 6, s(22), T),
            SendCheck::TimedOut
        );
    }

    #[test]
    fn every_close_reason_is_distinct() {
        let set: HashSet<&str> = CLOSE_REASONS.iter().copied().collect();
        assert_eq!(set.len(), CLOSE_REASONS.len());
        for r in [
            "bad_request",
            "request_body",
            "pipeline_depth",
            "send_timeout",
        ] {
            assert!(set.contains(r), "{r}");
        }
    }
}
