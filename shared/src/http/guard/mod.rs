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
//!   `sys::AcceptSignal`), and at least every `schedule::RESCAN` while any exist.
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
//! (`policy::kick_check`, after `policy::QUEUED`); it opens and at once closes a
//! connection to itself; tiny_http sees no waiting thread, spawns one for it,
//! and that thread, done in a moment, takes the queued connection next
//! (`http_pool_kicks_total`). Closing idle
//! connections instead would also free threads, but under CPU saturation a
//! busy keep-alive client looks momentarily idle and would lose its
//! connection; a spare thread costs nothing and exits after 5 s idle.
//!
//! The guard is three parts, so each can be read (and changed) alone:
//! * `discovery` (`discovery::Sockets`): which sockets exist, kept in step
//!   with `/proc/self/fd`, and which ones we closed that tiny_http holds.
//! * `policy`: the rules above as plain functions — `policy::judge` gives
//!   a `Verdict` for one connection from its record, a
//!   kernel snapshot, the handlers' activity, the limits and `now`;
//!   `policy::plan` adds shedding and kicks over the whole table. Every
//!   close is a [`CloseReason`] that knows its label, its answer and how the
//!   socket ends. Unit-tested with a fake clock.
//! * `schedule` (`schedule::Schedule`): when to look, and when the accept
//!   queue says tiny_http's accept loop is gone; also pure.
//!
//! What is left here is the thin shell: the [`Guard`] handle the server and
//! its handlers use, and the guard thread's loop, which waits on epoll,
//! feeds events and readings to the schedule, takes snapshots, and carries
//! verdicts out with system calls.

mod discovery;
mod policy;
mod schedule;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::close::{CloseReason, Ending};
use super::peer::PeerKey;
use super::sys::{self, ClientSocket, Epoll, EventFd};
use discovery::{lock, Sockets};
pub use policy::Limits;
use policy::{judge, keep_activity, plan, wedged_verdict, Activity};
use schedule::{Listener, Schedule};

/// Wake-ups are coalesced: under load the guard runs at most once per this.
const COALESCE: Duration = Duration::from_millis(2);

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
const TOKEN_ACCEPTED: u64 = u64::MAX - 2;

struct Metrics {
    open: IntGauge,
    closed: IntCounterVec,
    kicks: IntCounter,
    wedged: IntGauge,
}

impl Metrics {
    fn register(registry: &Registry, max_connections: usize) -> Metrics {
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
        max.set(max_connections as i64);
        let closed = IntCounterVec::new(
            Opts::new(
                "http_connections_closed_total",
                "Client connections closed by the connection guard, by reason.",
            ),
            &["reason"],
        )
        .expect("metric");
        for label in CloseReason::LABELS {
            closed.with_label_values(&[label]);
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
        Metrics {
            open,
            closed,
            kicks,
            wedged,
        }
    }
}

struct Inner {
    limits: Limits,
    listener_fd: RawFd,
    listener_inode: Option<u64>,
    epoll: Epoll,
    wake: EventFd,
    sockets: Sockets,
    /// The handlers' records, by peer.
    activity: Mutex<HashMap<PeerKey, Activity>>,
    metrics: Metrics,
    stop: AtomicBool,
    draining: AtomicBool,
    listener_closed: AtomicBool,
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
        let metrics = Metrics::register(registry, limits.max_connections);
        let epoll = Epoll::new()?;
        let wake = EventFd::new()?;
        epoll.add(listener_fd, TOKEN_LISTENER, sys::READABLE | sys::EDGE)?;
        epoll.add(wake.fd(), TOKEN_WAKE, sys::READABLE | sys::EDGE)?;
        let inner = Arc::new(Inner {
            limits,
            listener_fd,
            listener_inode: sys::socket_inode(listener_fd),
            epoll,
            wake,
            sockets: Sockets::new(port, listener_fd),
            activity: Mutex::new(HashMap::new()),
            metrics,
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            listener_closed: AtomicBool::new(false),
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
        let mut map = lock(&self.inner.activity);
        let a = map.entry(PeerKey(peer)).or_insert(Activity::new(now));
        a.in_flight += 1;
        a.request_started = now;
    }

    /// The response to `peer`'s request has been written.
    pub fn request_finished(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        if let Some(a) = lock(&self.inner.activity).get_mut(&PeerKey(peer)) {
            a.in_flight = a.in_flight.saturating_sub(1);
            a.responses += 1;
            a.last_response = Instant::now();
        }
    }

    /// Shuts the read side of `peer`'s connection, so that tiny_http's drain
    /// of an unwanted request body ends at once and it parses nothing more
    /// than what it already buffered (before a final answer; on a pipeline
    /// overflow). Not a close: nothing is counted.
    /// Returns the socket, for [`Guard::close_socket`] (after the read side
    /// is shut, tiny_http may close one of its descriptors at any moment and
    /// a socket so half-closed is hard to find by its peer again).
    pub fn shut_read(&self, peer: Option<SocketAddr>) -> Option<ClientSocket> {
        let s = self.inner.sockets.find(peer?)?;
        let fd = current_fd(&s)?;
        sys::shutdown(fd.as_fd(), true, false);
        if let Some(c) = lock(&self.inner.sockets.conns).get_mut(&s.inode) {
            c.state.read_shut = true;
        }
        Some(s)
    }

    /// Closes a socket found before (by [`Guard::shut_read`]) for `reason`,
    /// as [`Guard::close_peer`] does; `answer` (the handler's final
    /// response) is written to it first.
    pub fn close_socket(&self, s: &ClientSocket, reason: CloseReason, answer: Option<&[u8]>) {
        self.inner.close(s, reason, answer);
    }

    /// Closes `peer`'s connection for `reason`, counted once and ended as
    /// the reason says ([`CloseReason::ending`]).
    pub fn close_peer(&self, peer: Option<SocketAddr>, reason: CloseReason) {
        let Some(peer) = peer else { return };
        if let Some(s) = self.inner.sockets.find(peer) {
            self.inner.close(&s, reason, None);
        }
    }

    /// Whether `peer` has a connection we know of (in our table) that we did
    /// not close: then a request from `peer` may be that connection's
    /// (cheap, no system call).
    pub fn knows_open_conn(&self, peer: SocketAddr) -> bool {
        self.inner.sockets.knows_open_conn(peer)
    }

    /// Whether, right now (a /proc scan), `peer` has a connected socket we
    /// did not close (it connected again from the same port), or none of
    /// the sockets we closed for it exists any more.
    pub fn peer_reconnected_or_gone(&self, peer: SocketAddr) -> bool {
        let closed = self.inner.sockets.closed_inodes_of(peer);
        let again = self
            .inner
            .sockets
            .scan()
            .iter()
            .any(|s| s.peer == peer && !closed.contains(&s.inode));
        if again || closed.is_empty() {
            return true;
        }
        let alive = sys::socket_inodes();
        !closed.iter().any(|ino| alive.contains(ino))
    }

    /// The peers of every socket we closed that still exists (one scan).
    pub fn closed_peers_alive(&self) -> HashSet<SocketAddr> {
        let closed = self.inner.sockets.closed_list();
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
        let open = self.inner.sockets.scan().len();
        let in_flight = lock(&self.inner.activity)
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
    /// The guard thread: wait (epoll, until the schedule's or a rule's next
    /// time), note what arrived, rescan when due, check the listener, judge
    /// every connection and carry the verdicts out. Returns on `stop` or
    /// after reporting a fatal condition.
    fn run(self: Arc<Self>) {
        let mut events = Vec::with_capacity(64);
        let mut schedule = Schedule::new(Instant::now());
        let mut deadline: Option<Instant> = None;
        // New connections are announced twice: by the listener's epoll
        // wake-up, which is lost when tiny_http accepts before we look, and
        // by a SIGIO that is not (sys::AcceptSignal). Dropped on every return,
        // which disarms it.
        let accept_signal = self.arm_accept_signal();
        loop {
            let now = Instant::now();
            let open = self.metrics.open.get() as usize;
            let draining = self.draining.load(Ordering::Relaxed);
            let wake_at = schedule.wake_at(now, open, draining, deadline);
            let timeout_ms = schedule::timeout_ms(now, wake_at);
            self.epoll.wait(&mut events, timeout_ms);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            log::trace!(events = events.len(), timeout_ms = timeout_ms; "guard: woke");
            let mut hangup = false;
            for &(token, ev) in &events {
                match token {
                    TOKEN_LISTENER | TOKEN_ACCEPTED => {
                        if token == TOKEN_ACCEPTED {
                            accept_signal.as_ref().map(sys::AcceptSignal::drain);
                        }
                        schedule.arrival(now);
                    }
                    TOKEN_WAKE => self.wake.drain(),
                    _ if ev & sys::HANGUP != 0 => hangup = true,
                    _ => {}
                }
            }
            let draining = self.draining.load(Ordering::Relaxed);
            if schedule.scan_due(now, open, draining) || hangup {
                let found = self.rescan(now);
                schedule.scanned(now, found);
            }
            // If tiny_http's accept thread panicked, the listener was
            // dropped with it: our number is closed (or reused), or is no
            // longer a listening socket.
            let backlog = sys::accept_backlog(self.listener_fd);
            let listener = Listener {
                backlog,
                listening: backlog.is_some()
                    && self.listener_inode.is_some()
                    && sys::socket_inode(self.listener_fd) == self.listener_inode,
                closing: self.listener_closed.load(Ordering::SeqCst),
            };
            if let Some(why) = schedule.check_listener(now, listener) {
                (self.on_fatal)(why);
                return;
            }
            deadline = self.evaluate(now);
            if !events.is_empty() {
                std::thread::sleep(COALESCE);
            }
        }
    }

    fn arm_accept_signal(&self) -> Option<sys::AcceptSignal> {
        let armed = self
            .listener_inode
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))
            .and_then(|inode| sys::AcceptSignal::arm(self.listener_fd, inode))
            .and_then(|s| {
                self.epoll
                    .add(s.fd(), TOKEN_ACCEPTED, sys::READABLE | sys::EDGE)
                    .map(|()| s)
            });
        match armed {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!(error = e.to_string().as_str(); "guard: no accept signal; new connections may be found up to one rescan late");
                None
            }
        }
    }

    /// Rescans the sockets, forgets the handlers' records of peers that are
    /// gone, and restarts the process when too many closed sockets are
    /// wedged; returns whether a new socket was found.
    fn rescan(&self, now: Instant) -> bool {
        let found = self.sockets.rescan(&self.epoll, now);
        lock(&self.activity)
            .retain(|peer, a| keep_activity(a, found.peers.contains(&peer.0), found.started));
        self.metrics.open.set(found.open as i64);
        self.metrics.wedged.set(found.wedged as i64);
        // While draining the stop is under way anyway (and exits 0).
        if !self.draining.load(Ordering::Relaxed) {
            if let Some(why) = wedged_verdict(found.wedged, self.limits.max_connections) {
                (self.on_fatal)(why);
            }
        }
        found.discovered
    }

    /// Judges every watched connection and carries the plan out; returns the
    /// next time a rule could change its mind.
    fn evaluate(&self, now: Instant) -> Option<Instant> {
        let draining = self.draining.load(Ordering::Relaxed);
        let activity: HashMap<PeerKey, Activity> = lock(&self.activity).clone();
        let closed = self.sockets.closed_inodes();
        let mut conns = lock(&self.sockets.conns);
        let mut gone = Vec::new();
        let mut verdicts = Vec::with_capacity(conns.len());
        for (ino, c) in conns.iter_mut() {
            // Closed by us, or the number now refers to another file: gone.
            if closed.contains(ino) || sys::socket_inode(c.sock.fd) != Some(*ino) {
                gone.push(*ino);
                continue;
            }
            let Some(snap) = sys::tcp_snapshot(c.sock.fd) else {
                gone.push(*ino);
                continue;
            };
            let act = activity.get(&PeerKey(c.sock.peer));
            let verdict = judge(&mut c.state, &snap, act, &self.limits, draining, now);
            verdicts.push((*ino, verdict));
        }
        let plan = plan(verdicts, self.limits.max_connections);
        for (ino, reason) in plan.close {
            if let Some(c) = conns.get(&ino) {
                self.close(&c.sock, reason, None);
                if reason.ending() != Ending::ReadSide {
                    gone.push(ino);
                }
            }
        }
        for _ in 0..plan.kicks {
            self.kick_pool();
        }
        for ino in gone {
            conns.remove(&ino);
        }
        self.metrics.open.set(conns.len() as i64);
        plan.next
    }

    /// Carries a close out: counted first (whoever sees the close can
    /// already see it in /metrics), then the answer (`answer`, else the
    /// reason's own), then the socket ended as the reason says. A
    /// connection is closed and counted once.
    fn close(&self, s: &ClientSocket, reason: CloseReason, answer: Option<&[u8]>) {
        // The fd number could have been closed or reused since we looked.
        let Some(fd) = current_fd(s) else {
            log::debug!(peer = s.peer.to_string().as_str(); "guard: socket gone before its close");
            return;
        };
        let ending = reason.ending();
        let s = &ClientSocket {
            fd: fd.as_raw_fd(),
            ..*s
        };
        if ending != Ending::ReadSide && !self.sockets.mark_closed(s) {
            log::debug!(peer = s.peer.to_string().as_str(), reason = reason.label().unwrap_or("draining"); "guard: already closed");
            return;
        }
        if let Some(label) = reason.label() {
            self.metrics.closed.with_label_values(&[label]).inc();
            log::debug!(peer = s.peer.to_string().as_str(), reason = label; "connection closed by guard");
        }
        if ending == Ending::ReadSide {
            sys::shutdown(fd.as_fd(), true, false);
            return;
        }
        if let Some(r) = answer.or(reason.response()) {
            sys::send_nowait(fd.as_fd(), r);
        }
        sys::shutdown(fd.as_fd(), true, true);
        if ending == Ending::Abort {
            sys::abort(fd.as_fd());
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
}

/// Fake time for the guard's unit tests: every instant is a fixed `t0`
/// plus some milliseconds, so a test states times as numbers.
#[cfg(test)]
struct FakeClock(Instant);

#[cfg(test)]
impl FakeClock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
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
