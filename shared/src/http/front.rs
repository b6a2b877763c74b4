//! The front: one thread that owns the TCP listener and every client
//! connection, and forwards each request that passes to tiny_http.
//!
//! An epoll loop (edge-triggered, every socket non-blocking), so the thread
//! never blocks on a client: it waits only in `epoll_wait`, and each
//! connection costs a [`Conn`] and its buffers, not a thread. The loop does
//! the system calls; [`Conn`] decides (`conn.rs`). Per iteration:
//! 1. events: the listener has connections, a client socket is readable or
//!    writable, a link to tiny_http has answers, or the server sent a
//!    command (stop accepting, drain, exit);
//! 2. each client socket that moved is driven: bytes written, the state
//!    machine advanced, bytes read, until it waits;
//! 3. the canonical requests queued in this iteration are written to the
//!    links, one write per link;
//! 4. new connections are accepted, at most up to the cap: over it, the
//!    connection that is cheapest to lose is shed first (mini-redis takes
//!    its permit before `accept`; so do we, and shed to get one); accept
//!    errors are counted and back off, never end the loop;
//! 5. deadlines that have fallen are carried out.
//!
//! Invariants: a client connection has at most one request with tiny_http;
//! every close goes through [`Loop::close`] (counted once, by reason); an
//! answer is paired with its request by its link's order alone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::close::{CloseReason, Ending};
use super::conn::{pick_shed, Conn, Expiry, Limits, Step, Written};
use super::sys::{self, Epoll, EventFd};
use super::upstream;
use crate::shutdown::Fatal;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
/// Links to tiny_http: this bit and their index.
const TOKEN_LINK: u64 = 1 << 62;

/// Connections accepted per loop iteration, at most: between batches the
/// loop reads what the new connections sent, so a client that sends its
/// request at once is being served before a flood of others can push it
/// out over the cap.
const ACCEPT_BATCH: usize = 64;

/// Steps (a read, a write, a state change) one connection gets per turn.
const DRIVE_STEPS: usize = 64;

/// Candidates looked at for one shed: each one read first may turn out to
/// have a request and be spared.
const SHED_TRIES: usize = 8;

/// First and longest pause of the listener after an accept error that
/// another accept would only repeat (no descriptors or memory left).
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Commands from the server and what the front reports back.
#[derive(Default)]
struct State {
    stop_accepting: bool,
    drain: bool,
    exit: bool,
    listener_closed: bool,
    /// The front has begun the drain; `open` is reported from then on.
    draining: bool,
    /// Client connections open, reported while draining.
    open: usize,
    exited: bool,
}

/// What the server keeps of the front: commands go in, reports come out.
pub struct Handle {
    wake: EventFd,
    state: Mutex<State>,
    changed: Condvar,
}

impl Handle {
    fn command(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.wake.notify();
    }

    fn report(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| !done(s) && !s.exited)
            .unwrap_or_else(|e| e.into_inner());
        done(&state)
    }

    /// Closes the listener (new connections are refused from when this
    /// returns; pending ones are reset).
    pub fn stop_accepting(&self) {
        self.command(|s| s.stop_accepting = true);
        self.wait_for(Duration::from_secs(5), |s| s.listener_closed);
    }

    /// Starts the drain and waits up to `timeout` for every connection to
    /// end. Returns the number still open (0: drained).
    pub fn drain(&self, timeout: Duration) -> usize {
        self.command(|s| s.drain = true);
        self.wait_for(timeout, |s| s.draining && s.open == 0);
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.exited {
            0
        } else {
            s.open
        }
    }

    /// Tells the loop to close everything and end.
    pub fn exit(&self) {
        self.command(|s| s.exit = true);
    }
}

/// The front's metrics.
struct Metrics {
    open: IntGauge,
    /// One child of `http_connections_closed_total` per label.
    closed: Vec<(&'static str, IntCounter)>,
    accept_errors: IntCounterVec,
}

impl Metrics {
    fn register(registry: &Registry, max_connections: usize) -> Metrics {
        let open = IntGauge::new(
            "http_connections_open",
            "Client connections open now (the front's own count).",
        )
        .expect("metric");
        let max = IntGauge::new(
            "http_connections_max",
            "The cap on open client connections (HTTP_MAX_CONNECTIONS).",
        )
        .expect("metric");
        max.set(max_connections as i64);
        let closed_vec = IntCounterVec::new(
            Opts::new(
                "http_connections_closed_total",
                "Client connections the server closed, by reason (closes by the client are not counted).",
            ),
            &["reason"],
        )
        .expect("metric");
        let closed = CloseReason::LABELS
            .iter()
            .map(|l| (*l, closed_vec.with_label_values(&[l])))
            .collect();
        let accept_errors = IntCounterVec::new(
            Opts::new(
                "http_accept_errors_total",
                "Errors accepting a connection, by errno; each backs off or is skipped, none is fatal.",
            ),
            &["error"],
        )
        .expect("metric");
        for m in [&open, &max] {
            crate::metrics::register(registry, m);
        }
        crate::metrics::register(registry, &closed_vec);
        crate::metrics::register(registry, &accept_errors);
        Metrics {
            open,
            closed,
            accept_errors,
        }
    }

    fn closed(&self, label: &str) {
        if let Some((_, c)) = self.closed.iter().find(|(l, _)| *l == label) {
            c.inc();
        }
    }
}

/// What the front is given to run.
pub struct Parts {
    pub listener: TcpListener,
    pub links: Vec<UnixStream>,
    pub limits: Limits,
    pub max_connections: usize,
    /// Called once if every link to tiny_http is gone (the process cannot
    /// serve and must be restarted).
    pub fatal: Box<dyn Fn(Fatal) + Send>,
}

/// Starts the front's thread.
pub fn start(
    parts: Parts,
    registry: &Registry,
) -> std::io::Result<(Arc<Handle>, std::thread::JoinHandle<()>)> {
    let control = Arc::new(Handle {
        wake: EventFd::new()?,
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let metrics = Metrics::register(registry, parts.max_connections);
    let epoll = Epoll::new()?;
    let all = sys::READABLE | sys::WRITABLE | sys::HANGUP | sys::EDGE;
    parts.listener.set_nonblocking(true)?;
    epoll.add(
        parts.listener.as_fd(),
        TOKEN_LISTENER,
        sys::READABLE | sys::EDGE,
    )?;
    epoll.add(control.wake.fd(), TOKEN_WAKE, sys::READABLE | sys::EDGE)?;
    let mut links = Vec::with_capacity(parts.links.len());
    for (i, stream) in parts.links.into_iter().enumerate() {
        stream.set_nonblocking(true)?;
        epoll.add(stream.as_fd(), TOKEN_LINK | i as u64, all)?;
        links.push(Link::new(stream));
    }
    let mut lp = Loop {
        epoll,
        listener: Some(parts.listener),
        accept_ready: true,
        cap_full: false,
        paused_until: None,
        backoff: BACKOFF_FIRST,
        slots: Vec::new(),
        free: Vec::new(),
        open: 0,
        links,
        dirty: Vec::new(),
        timers: BinaryHeap::new(),
        limits: parts.limits,
        max_connections: parts.max_connections,
        draining: false,
        metrics,
        again: Vec::new(),
        fwd: Vec::with_capacity(256),
        scratch: vec![0; 64 * 1024],
        control: control.clone(),
        fatal: Some(parts.fatal),
    };
    let handle = std::thread::Builder::new()
        .name("front".into())
        .spawn(move || lp.run())?;
    Ok((control, handle))
}

/// A link to tiny_http: one Unix connection, the requests written on it in
/// order, and the answers read back.
struct Link {
    stream: UnixStream,
    out: Vec<u8>,
    /// Answers read: `inbuf[pos..end]` is unread. Its length is its room
    /// (filled once, so a read never zeroes memory first); it grows only for
    /// an answer longer than it.
    inbuf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The requests on the link, oldest first: (slot, generation, HEAD).
    waiting: VecDeque<(u32, u32, bool)>,
    writable: bool,
    alive: bool,
}

impl Link {
    fn new(stream: UnixStream) -> Link {
        Link {
            stream,
            out: Vec::with_capacity(4096),
            inbuf: vec![0; 64 * 1024],
            pos: 0,
            end: 0,
            waiting: VecDeque::new(),
            writable: true,
            alive: true,
        }
    }
}

/// A place for a client connection; its generation tells a connection
/// from an earlier one in the same place (timers and links name both).
#[derive(Default)]
struct Entry {
    gen: u32,
    slot: Option<Slot>,
}

/// A client connection: its socket and its state machine.
struct Slot {
    stream: TcpStream,
    conn: Conn,
    readable: bool,
    writable: bool,
    /// The client's side is shut or the socket failed (an event said
    /// so): read until `read` says so too.
    hup: bool,
    /// The deadline a timer is set for (the earliest pushed, if several).
    scheduled: Option<Instant>,
}

struct Loop {
    epoll: Epoll,
    listener: Option<TcpListener>,
    /// The listener may have connections waiting (edge-triggered: only
    /// an `accept` that returns `EAGAIN` clears it).
    accept_ready: bool,
    /// At the cap with nothing to shed: no accept until a connection ends.
    cap_full: bool,
    /// Accepting is paused after an error, until then.
    paused_until: Option<Instant>,
    backoff: Duration,
    slots: Vec<Entry>,
    free: Vec<u32>,
    open: usize,
    links: Vec<Link>,
    /// Links with requests queued in this iteration.
    dirty: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    limits: Limits,
    max_connections: usize,
    draining: bool,
    metrics: Metrics,
    /// Connections that used up their steps with work left: driven again
    /// in the next iteration.
    again: Vec<(u32, u32)>,
    /// The canonical request being composed.
    fwd: Vec<u8>,
    /// What each read lands in first.
    scratch: Vec<u8>,
    control: Arc<Handle>,
    fatal: Option<Box<dyn Fn(Fatal) + Send>>,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Vec::with_capacity(256);
        let mut moved: Vec<u32> = Vec::new();
        loop {
            let timeout = self.timeout(Instant::now());
            self.epoll.wait(&mut events, timeout);
            let now = Instant::now();
            moved.clear();
            for &(token, ev) in &events {
                match token {
                    TOKEN_LISTENER => self.accept_ready = true,
                    TOKEN_WAKE => {
                        self.control.wake.drain();
                        if self.commands(now) {
                            self.shut_everything();
                            return;
                        }
                    }
                    t if t & TOKEN_LINK != 0 => {
                        let i = (t & !TOKEN_LINK) as usize;
                        if ev & sys::WRITABLE != 0 {
                            if let Some(l) = self.links.get_mut(i) {
                                l.writable = true;
                                if !l.out.is_empty() {
                                    self.dirty.push(i);
                                }
                            }
                        }
                        if ev & (sys::READABLE | sys::HANGUP) != 0 {
                            self.read_link(i, now);
                        }
                    }
                    t => {
                        let (idx, gen) = ((t & 0xffff_ffff) as u32, (t >> 32) as u32);
                        if let Some(slot) = self.slot_mut(idx, gen) {
                            if ev & (sys::READABLE | sys::HANGUP) != 0 {
                                slot.readable = true;
                            }
                            if ev & sys::HANGUP != 0 {
                                slot.hup = true;
                            }
                            if ev & (sys::WRITABLE | sys::HANGUP) != 0 {
                                slot.writable = true;
                            }
                            moved.push(idx);
                        }
                    }
                }
            }
            for &idx in &moved {
                self.drive(idx, now);
            }
            for (idx, gen) in std::mem::take(&mut self.again) {
                if self.slot_mut(idx, gen).is_some() {
                    self.drive(idx, now);
                }
            }
            self.flush_links(now);
            self.accept(now);
            self.expire(now);
            if self.draining {
                let open = self.open;
                self.control.report(|s| s.open = open);
            }
        }
    }

    /// Milliseconds until the next deadline or the end of an accept pause;
    /// 0 while connections wait to be accepted.
    fn timeout(&self, now: Instant) -> i32 {
        if !self.again.is_empty() {
            return 0;
        }
        if self.accept_ready
            && !self.cap_full
            && self.paused_until.is_none()
            && self.listener.is_some()
        {
            return 0;
        }
        let next = self
            .timers
            .peek()
            .map(|Reverse((at, _, _))| *at)
            .into_iter()
            .chain(self.paused_until)
            .min();
        match next {
            None => -1,
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_micros().div_ceil(1000);
                ms.min(60_000) as i32
            }
        }
    }

    /// Carries out the server's commands; returns whether to exit.
    fn commands(&mut self, now: Instant) -> bool {
        let (stop, drain, exit) = {
            let s = self.control.state.lock().unwrap_or_else(|e| e.into_inner());
            (s.stop_accepting || s.drain || s.exit, s.drain, s.exit)
        };
        if stop && self.listener.is_some() {
            // Closing it resets what waits in its queue: those requests
            // never ran, and their clients see a refused connection.
            self.listener = None;
            self.accept_ready = false;
            log::debug!("front: listener closed");
            self.control.report(|s| s.listener_closed = true);
        }
        if drain && !self.draining {
            self.draining = true;
            let open: Vec<u32> = self.live_slots().collect();
            for idx in open {
                let Some(slot) = self.slot_at(idx) else {
                    continue;
                };
                match slot.conn.drain() {
                    Some(reason) => {
                        if self.close(idx, reason, now) {
                            self.drive(idx, now);
                        }
                    }
                    None => self.drive(idx, now),
                }
            }
            let open = self.open;
            self.control.report(|s| {
                s.draining = true;
                s.open = open;
            });
        }
        exit
    }

    fn shut_everything(&mut self) {
        let open: Vec<u32> = self.live_slots().collect();
        for idx in open {
            self.drop_slot(idx);
        }
        self.links.clear();
        self.listener = None;
        self.control.report(|s| {
            s.exited = true;
            s.open = 0;
            s.listener_closed = true;
        });
    }

    fn live_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, e)| e.slot.is_some())
            .map(|(i, _)| i as u32)
    }

    fn slot_at(&mut self, idx: u32) -> Option<&mut Slot> {
        self.slots.get_mut(idx as usize)?.slot.as_mut()
    }

    fn slot_mut(&mut self, idx: u32, gen: u32) -> Option<&mut Slot> {
        let e = self.slots.get_mut(idx as usize)?;
        if e.gen != gen {
            return None;
        }
        e.slot.as_mut()
    }

    fn gen_of(&self, idx: u32) -> u32 {
        self.slots.get(idx as usize).map_or(0, |e| e.gen)
    }

    /// Accepts while the listener has connections, up to the cap.
    fn accept(&mut self, now: Instant) {
        if let Some(until) = self.paused_until {
            if now < until {
                return;
            }
            self.paused_until = None;
            self.accept_ready = true;
        }
        for _ in 0..ACCEPT_BATCH {
            if !self.accept_ready || self.cap_full || self.listener.is_none() {
                return;
            }
            if self.open >= self.max_connections && !self.shed_one(now) {
                // Full of requests in progress: the rest wait in the
                // kernel's queue until a connection ends.
                self.cap_full = true;
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match sys::accept(listener) {
                Ok((stream, peer)) => {
                    self.backoff = BACKOFF_FIRST;
                    self.admit(stream, peer, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.accept_ready = false,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(0);
                    self.metrics
                        .accept_errors
                        .with_label_values(&[accept_error_label(errno)])
                        .inc();
                    if !accept_error_is_transient(errno) {
                        log::warn!(error = e.to_string().as_str(), pause_ms = self.backoff.as_millis() as u64; "front: accept failed; pausing the listener");
                        self.paused_until = Some(now + self.backoff);
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                        return;
                    }
                }
            }
        }
    }

    /// Sheds the connection cheapest to lose, at once (its place is needed
    /// now: no lingering); whether one went. A candidate with no request
    /// under way is read first: its request may be waiting in the socket,
    /// its event not taken yet (a client that sends right after connecting,
    /// accepted in the same batch), and then it is being served, not idle.
    fn shed_one(&mut self, now: Instant) -> bool {
        for _ in 0..SHED_TRIES {
            let ranked = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((i as u32, e.slot.as_ref()?.conn.shed_rank()?)));
            let Some((idx, rank)) = pick_shed(ranked.map(|(i, r)| ((i, r), r))) else {
                return false;
            };
            let open = self.open;
            if rank.0 > 0 {
                if let Some(slot) = self.slot_at(idx) {
                    slot.readable = true;
                }
                self.drive(idx, now);
                if self.open < open {
                    return true;
                }
                let now_rank = self.slot_at(idx).and_then(|s| s.conn.shed_rank());
                if now_rank.map(|r| r.0) != Some(rank.0) {
                    continue;
                }
            }
            if let Some(reason) = self.slot_at(idx).and_then(|s| s.conn.shed_reason()) {
                self.count(idx, reason);
                if let (Some(slot), Some(answer)) = (self.slot_at(idx), reason.response()) {
                    sys::send_nowait(slot.stream.as_fd(), answer);
                }
            }
            self.drop_slot(idx);
            return true;
        }
        false
    }

    fn admit(&mut self, stream: TcpStream, peer: Option<SocketAddr>, now: Instant) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Entry::default());
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[idx as usize];
        entry.gen = entry.gen.wrapping_add(1);
        let token = (u64::from(entry.gen) << 32) | u64::from(idx);
        let all = sys::READABLE | sys::WRITABLE | sys::HANGUP | sys::EDGE;
        if let Err(e) = self.epoll.add(stream.as_fd(), token, all) {
            log::warn!(error = e.to_string().as_str(); "front: cannot watch a new connection; dropped");
            self.free.push(idx);
            return;
        }
        if log::log_enabled!(log::Level::Trace) {
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            log::trace!(peer = peer.as_str(); "front: new connection");
        }
        entry.slot = Some(Slot {
            stream,
            conn: Conn::new(now),
            // Clients send at once: read before waiting for the event.
            readable: true,
            writable: true,
            hup: false,
            scheduled: None,
        });
        self.open += 1;
        self.metrics.open.set(self.open as i64);
        self.drive(idx, now);
    }

    /// Moves one connection as far as it goes without waiting.
    fn drive(&mut self, idx: u32, now: Instant) {
        // Bounded, so one busy client cannot hold the loop for long; what
        // is left is taken up in the next iteration (no event would come for
        // bytes already in its socket: the events are edge-triggered).
        let mut steps = DRIVE_STEPS;
        loop {
            if steps == 0 {
                let gen = self.gen_of(idx);
                self.again.push((idx, gen));
                break;
            }
            steps -= 1;
            let Some(slot) = self
                .slots
                .get_mut(idx as usize)
                .and_then(|e| e.slot.as_mut())
            else {
                return;
            };
            let conn = &mut slot.conn;
            if conn.written < conn.out.len() && slot.writable {
                match (&slot.stream).write(&conn.out[conn.written..]) {
                    Ok(n) => {
                        if let Written::Last(reason) = conn.wrote(n, now) {
                            sys::shutdown(slot.stream.as_fd(), false, true);
                            self.count(idx, reason);
                        }
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        slot.writable = false;
                        conn.wrote(0, now);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        // The client is gone: nothing to answer any more.
                        self.drop_slot(idx);
                        return;
                    }
                }
            }
            match slot.conn.advance(&self.limits, &mut self.fwd) {
                Step::Forward { head_only } => {
                    self.forward(idx, head_only, now);
                    continue;
                }
                Step::Write if slot.writable => continue,
                Step::Close(reason) => {
                    if self.close(idx, reason, now) {
                        continue;
                    }
                    return;
                }
                Step::Write | Step::Read | Step::Wait => {}
            }
            if !(slot.readable && slot.conn.wants_read()) {
                break;
            }
            let room = slot.conn.read_room(&self.limits).min(self.scratch.len());
            match (&slot.stream).read(&mut self.scratch[..room]) {
                Ok(0) => {
                    slot.readable = false;
                    if let Some(reason) = slot.conn.eof() {
                        self.close(idx, reason, now);
                        return;
                    }
                }
                Ok(n) => {
                    slot.conn.received(&self.scratch[..n]);
                    // Less than asked for: the socket is empty now, and
                    // bytes that come later raise a new edge (so does the
                    // client's FIN, unless an event already reported it):
                    // no second read to learn it from `EAGAIN`.
                    if n < room && !slot.hup {
                        slot.readable = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    slot.readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_slot(idx);
                    return;
                }
            }
        }
        self.schedule(idx);
    }

    /// Queues the canonical request in `fwd` on the least busy link.
    fn forward(&mut self, idx: u32, head_only: bool, now: Instant) {
        let gen = self.gen_of(idx);
        let best = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.alive)
            .min_by_key(|(_, l)| l.waiting.len())
            .map(|(i, _)| i);
        let Some(i) = best else {
            self.fwd.clear();
            if self.close(idx, CloseReason::Internal, now) {
                self.drive(idx, now);
            }
            return;
        };
        let link = &mut self.links[i];
        link.out.extend_from_slice(&self.fwd);
        link.waiting.push_back((idx, gen, head_only));
        self.fwd.clear();
        if !self.dirty.contains(&i) {
            self.dirty.push(i);
        }
    }

    /// Writes what each link has queued.
    fn flush_links(&mut self, now: Instant) {
        while let Some(i) = self.dirty.pop() {
            let link = &mut self.links[i];
            if !link.alive || !link.writable {
                continue;
            }
            let mut failed = false;
            while !link.out.is_empty() {
                match (&link.stream).write(&link.out) {
                    Ok(n) => {
                        link.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        link.writable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                self.link_failed(i, "writing to tiny_http failed", now);
            }
        }
    }

    /// Reads answers from a link and hands each to its connection.
    fn read_link(&mut self, i: usize, now: Instant) {
        loop {
            let link = &mut self.links[i];
            if !link.alive {
                return;
            }
            if link.pos == link.end {
                (link.pos, link.end) = (0, 0);
            }
            if link.inbuf.len() - link.end < 4096 {
                // Move what is unread to the front; grow if it fills half.
                link.inbuf.copy_within(link.pos..link.end, 0);
                (link.pos, link.end) = (0, link.end - link.pos);
                if link.end > link.inbuf.len() / 2 {
                    let grown = link.inbuf.len() * 2;
                    link.inbuf.resize(grown, 0);
                }
            }
            let end = link.end;
            match (&link.stream).read(&mut link.inbuf[end..]) {
                Ok(0) => {
                    self.link_failed(i, "tiny_http closed its connection", now);
                    return;
                }
                Ok(n) => {
                    link.end += n;
                    if !self.deliver(i, now) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.link_failed(i, "reading from tiny_http failed", now);
                    return;
                }
            }
        }
    }

    /// Hands every complete answer in link `i`'s buffer to its connection;
    /// false if the link had to be dropped.
    fn deliver(&mut self, i: usize, now: Instant) -> bool {
        loop {
            let link = &mut self.links[i];
            let Some(&(idx, gen, head_only)) = link.waiting.front() else {
                if link.pos < link.end {
                    self.link_failed(i, "tiny_http answered a request it was not sent", now);
                    return false;
                }
                return true;
            };
            let buf = &link.inbuf[link.pos..link.end];
            let head = match upstream::parse_answer(buf, head_only) {
                Ok(Some(h)) if buf.len() >= h.head_len + h.body_len => h,
                Ok(_) => return true,
                Err(upstream::OutOfStep(why)) => {
                    self.link_failed(i, why, now);
                    return false;
                }
            };
            link.waiting.pop_front();
            let total = head.head_len + head.body_len;
            let start = link.pos;
            link.pos += total;
            // The link's buffer and the connection are different fields of
            // `self`: the answer is copied into the connection, then driven.
            let bytes = &self.links[i].inbuf[start..start + total];
            let entry = self.slots.get_mut(idx as usize);
            if let Some(slot) = entry.filter(|e| e.gen == gen).and_then(|e| e.slot.as_mut()) {
                let (h, body) = bytes.split_at(head.head_len);
                slot.conn.answer(h, body, now);
                self.drive(idx, now);
            }
        }
    }

    /// A link is out of step or gone: every request on it fails with 500.
    fn link_failed(&mut self, i: usize, why: &'static str, now: Instant) {
        let link = &mut self.links[i];
        if !link.alive {
            return;
        }
        link.alive = false;
        let waiting: Vec<(u32, u32, bool)> = link.waiting.drain(..).collect();
        link.out.clear();
        self.epoll.delete(link.stream.as_fd());
        let _ = link.stream.shutdown(std::net::Shutdown::Both);
        let left = self.links.iter().filter(|l| l.alive).count();
        log::error!(link = i, reason = why, requests_failed = waiting.len(), links_left = left; "front: a link to tiny_http failed");
        for (idx, gen, _) in waiting {
            if self.slot_mut(idx, gen).is_some() && self.close(idx, CloseReason::Internal, now) {
                self.drive(idx, now);
            }
        }
        if left == 0 {
            if let Some(fatal) = self.fatal.take() {
                fatal(Fatal::LinksLost { last: why });
            }
        }
    }

    /// Counts a close once per connection.
    fn count(&mut self, idx: u32, reason: CloseReason) {
        let Some(slot) = self.slot_at(idx) else {
            return;
        };
        if slot.conn.counted {
            return;
        }
        slot.conn.counted = true;
        if let Some(label) = reason.label() {
            self.metrics.closed(label);
            log::debug!(reason = label; "front: closing a connection");
        }
    }

    /// Closes for `reason`: counted, then reset, dropped, or answered and
    /// shut down gracefully. Returns whether the connection still lives (it
    /// has an answer to write, then lingers).
    fn close(&mut self, idx: u32, reason: CloseReason, now: Instant) -> bool {
        self.count(idx, reason);
        let Some(slot) = self.slot_at(idx) else {
            return false;
        };
        match (reason.ending(), reason.response()) {
            (Ending::Abort, answer) => {
                if let Some(answer) = answer {
                    sys::send_nowait(slot.stream.as_fd(), answer);
                }
                sys::abort(slot.stream.as_fd());
                self.drop_slot(idx);
                false
            }
            (Ending::Graceful, Some(_)) => {
                slot.conn.answer_and_close(reason, now);
                true
            }
            (Ending::Graceful, None) => {
                self.drop_slot(idx);
                false
            }
        }
    }

    fn drop_slot(&mut self, idx: u32) {
        if let Some(slot) = self.slots.get_mut(idx as usize).and_then(|e| e.slot.take()) {
            drop(slot);
            self.free.push(idx);
            self.open -= 1;
            self.metrics.open.set(self.open as i64);
            // A place is free: a connection may be waiting for it.
            self.cap_full = false;
        }
    }

    /// Sets a timer for the connection's deadline, if it is earlier than
    /// the one set (a later one is found when the earlier fires).
    fn schedule(&mut self, idx: u32) {
        let limits = self.limits;
        let Some(slot) = self.slot_at(idx) else {
            return;
        };
        let Some((at, _)) = slot.conn.deadline(&limits) else {
            return;
        };
        if slot.scheduled.is_some_and(|s| s <= at) {
            return;
        }
        slot.scheduled = Some(at);
        let gen = self.gen_of(idx);
        self.timers.push(Reverse((at, idx, gen)));
    }

    /// Carries out every deadline that has fallen.
    fn expire(&mut self, now: Instant) {
        let limits = self.limits;
        while let Some(&Reverse((at, idx, gen))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slot_mut(idx, gen) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue;
            }
            slot.scheduled = None;
            match slot.conn.expired(&limits, now) {
                Some(Expiry::Close(reason)) => {
                    if self.close(idx, reason, now) {
                        self.drive(idx, now);
                    }
                }
                Some(Expiry::LingerOver) => self.drop_slot(idx),
                None => self.schedule(idx),
            }
        }
        if self.open == 0 && self.draining {
            self.control.report(|s| s.open = 0);
        }
    }
}

/// The `error` label of `http_accept_errors_total`.
fn accept_error_label(errno: i32) -> &'static str {
    match errno {
        libc::EMFILE => "emfile",
        libc::ENFILE => "enfile",
        libc::ENOBUFS => "enobufs",
        libc::ENOMEM => "enomem",
        libc::ECONNABORTED => "econnaborted",
        libc::EPERM => "eperm",
        libc::EPROTO => "eproto",
        _ => "other",
    }
}

/// Errors about one pending connection (it is gone; the next may be fine),
/// as opposed to errors an immediate retry would only repeat.
fn accept_error_is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNABORTED | libc::EPERM | libc::EPROTO | libc::EINTR
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_that_would_repeat_back_off_and_the_others_do_not() {
        for e in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!accept_error_is_transient(e));
            assert_ne!(accept_error_label(e), "other");
        }
        for e in [libc::ECONNABORTED, libc::EPROTO, libc::EPERM] {
            assert!(accept_error_is_transient(e));
        }
    }
}
