//! The guard's decisions, as plain functions over plain data: no system
//! call, no clock (every function is given `now`), no lock. The guard thread
//! gathers a kernel snapshot and the handlers' record for each connection,
//! asks [`judge`] for a [`Verdict`], lets [`plan`] add what only the whole
//! table can decide (shedding over the cap, how many pool kicks), and
//! carries the result out (`mod.rs`).
//!
//! Everything here is unit-tested with made-up snapshots and a fake clock
//! (`Instant`s built from one `t0`), the way the worker's scheduler is.

use std::time::{Duration, Instant};

use super::super::close::CloseReason;
use super::super::sys::TcpSnapshot;

/// Request bytes on a connection tiny_http never read from, waiting this
/// long, mean no thread took it: it is queued behind the task-pool race
/// (module docs of `guard`). A thread that was handed the connection reads
/// at once, so this only has to cover a new thread's first run on a busy
/// machine (5 ms kicked for well over one connection in two at a
/// 128-connection burst on the 2-core build VM); a kick too many costs one
/// spare thread for 5 s.
pub const QUEUED: Duration = Duration::from_millis(10);
/// At most this many pool kicks per evaluation (a burst can leave many
/// connections queued at once; each kick frees one).
pub const MAX_KICKS: usize = 64;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub in_flight: u32,
    pub responses: u64,
    pub last_response: Instant,
    pub request_started: Instant,
}

impl Activity {
    /// The record of a peer whose first request just started.
    pub fn new(now: Instant) -> Activity {
        Activity {
            in_flight: 0,
            responses: 0,
            last_response: now,
            request_started: now,
        }
    }
}

/// The guard's own record of one connection, carried from one look to the
/// next (what [`judge`] needs to remember).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnState {
    /// When the current wait began: discovery, or the last response seen.
    pub since: Instant,
    pub responses_seen: u64,
    /// The kernel's received and consumed counts when the current wait
    /// began: only bytes after them belong to the next request.
    pub baseline_received: u64,
    pub baseline_consumed: u64,
    /// Consumed count and the time it last moved (for the pool kick).
    pub last_consumed: u64,
    pub consumed_moved: Instant,
    /// The read side was shut for a request past its time (counted once).
    pub read_shut: bool,
    /// When the guard last kicked the pool for this connection.
    pub kicked: Option<Instant>,
    /// Since when unacknowledged response bytes wait, and the acknowledged
    /// count then (send-timeout rule).
    pub send_stall: Option<(Instant, u64)>,
}

impl ConnState {
    /// A connection first seen at `now`.
    pub fn new(now: Instant) -> ConnState {
        ConnState {
            since: now,
            responses_seen: 0,
            baseline_received: 0,
            baseline_consumed: 0,
            last_consumed: 0,
            consumed_moved: now,
            read_shut: false,
            kicked: None,
            send_stall: None,
        }
    }
}

/// What to do with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// End it (or, for [`CloseReason::RequestTimeout`], shut its read side).
    Close(CloseReason),
    /// Leave it open.
    Keep(Keep),
}

/// The details of a [`Verdict::Keep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    /// When a rule would next change its mind without any event (None:
    /// only an event can).
    pub look_at: Option<Instant>,
    /// Request bytes wait on a connection no thread has taken: start a
    /// fresh pool thread ([`kick_check`]).
    pub kick: bool,
    /// May be closed if the table is over the cap ([`plan`]).
    pub shed: Option<Sheddable>,
}

/// A connection that may be shed, and how it would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sheddable {
    /// Waiting since (older ones go first).
    pub since: Instant,
    /// A request head is arriving (drip): shed only after the idle and
    /// silent ones, with a 503.
    pub partial: bool,
}

/// The rules for one connection, in order of precedence: the send timeout;
/// a request in flight (the request timeout, unless the peer's not reading
/// is what holds it up); a head larger than the limit; then, with no
/// request in flight, the header timeout (bytes arrived but no complete
/// request, or none ever did), the idle timeout after a response, the
/// drain's close of idle connections, and the pool kick for a connection no
/// thread has taken.
///
/// `conn` is updated (baselines after a response, stall and kick times);
/// `snap` is the kernel's view now, `activity` the handlers' record of the
/// peer (None: no request seen yet).
pub fn judge(
    conn: &mut ConnState,
    snap: &TcpSnapshot,
    activity: Option<&Activity>,
    limits: &Limits,
    draining: bool,
    now: Instant,
) -> Verdict {
    // A new response: the bytes up to here belonged to answered requests.
    if let Some(a) = activity.filter(|a| a.responses != conn.responses_seen) {
        conn.responses_seen = a.responses;
        conn.since = a.last_response;
        conn.baseline_received = snap.bytes_received;
        conn.baseline_consumed = snap.consumed();
    }
    if snap.consumed() != conn.last_consumed {
        conn.last_consumed = snap.consumed();
        conn.consumed_moved = now;
    }
    let mut keep = Keep::default();
    let mut at = |t: Instant| keep.look_at = Some(keep.look_at.map_or(t, |d| d.min(t)));

    match send_check(
        conn.send_stall,
        snap.unacked,
        snap.bytes_acked,
        now,
        limits.send_timeout,
    ) {
        SendCheck::Flowing => conn.send_stall = None,
        SendCheck::Waiting { since, acked } => {
            conn.send_stall = Some((since, acked));
            at(since + limits.send_timeout);
        }
        SendCheck::TimedOut => return Verdict::Close(CloseReason::SendTimeout),
    }

    if let Some(a) = activity.filter(|a| a.in_flight > 0) {
        // A handler waiting on a peer that does not read is the send
        // timeout's case, not a dripping body; and a read side shut once
        // stays shut.
        if conn.send_stall.is_none() && !conn.read_shut {
            let limit = a.request_started + limits.header_timeout;
            if now >= limit {
                conn.read_shut = true;
                return Verdict::Close(CloseReason::RequestTimeout);
            }
            at(limit);
        }
        return Verdict::Keep(keep);
    }

    let received = snap.bytes_received.saturating_sub(conn.baseline_received);
    let consumed = snap.consumed().saturating_sub(conn.baseline_consumed);
    if consumed > limits.max_header_bytes {
        return Verdict::Close(CloseReason::HeaderTooLarge);
    }
    if received == 0 {
        if draining {
            return Verdict::Close(CloseReason::Draining);
        }
        let (limit, reason) = if conn.responses_seen == 0 {
            (limits.header_timeout, CloseReason::HeaderTimeout)
        } else {
            (limits.idle_timeout, CloseReason::IdleTimeout)
        };
        if now >= conn.since + limit {
            return Verdict::Close(reason);
        }
        at(conn.since + limit);
        keep.shed = Some(Sheddable {
            since: conn.since,
            partial: false,
        });
        return Verdict::Keep(keep);
    }
    if now >= conn.since + limits.header_timeout {
        return Verdict::Close(CloseReason::HeaderTimeout);
    }
    at(conn.since + limits.header_timeout);
    if snap.unread > 0 {
        match kick_check(snap.consumed() == 0, conn.consumed_moved, conn.kicked, now) {
            Kick::Now => {
                conn.kicked = Some(now);
                keep.kick = true;
                // Look again soon: the kick's thread should have picked it
                // up by then.
                at(now + QUEUED);
            }
            Kick::LookAt(t) => at(t),
            Kick::Never => {}
        }
    } else {
        // A drip: bytes arrive but no request completes.
        keep.shed = Some(Sheddable {
            since: conn.since,
            partial: true,
        });
    }
    Verdict::Keep(keep)
}

/// What one evaluation of the whole table comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K> {
    /// Connections to close, and why (in the order to carry them out).
    pub close: Vec<(K, CloseReason)>,
    /// Pool kicks to make now (at most [`MAX_KICKS`]).
    pub kicks: usize,
    /// The earliest time any rule changes its mind.
    pub next: Option<Instant>,
}

/// Combines the verdicts on every open connection (`K` names one): the
/// closes they ask for, then, while more than `max_connections` stay open,
/// the surplus shed — idle and silent connections first, oldest first, and
/// connections with a partial request only after them (with a 503).
pub fn plan<K: Copy + Ord>(
    verdicts: impl IntoIterator<Item = (K, Verdict)>,
    max_connections: usize,
) -> Plan<K> {
    let mut close = Vec::new();
    let mut kicks = 0usize;
    let mut next: Option<Instant> = None;
    let mut open = 0usize;
    let mut sheddable: Vec<(bool, Instant, K)> = Vec::new();
    for (k, v) in verdicts {
        match v {
            Verdict::Close(reason) => {
                close.push((k, reason));
                // A shut read side leaves the connection open (its answer
                // still goes out).
                if reason == CloseReason::RequestTimeout {
                    open += 1;
                }
            }
            Verdict::Keep(keep) => {
                open += 1;
                kicks += usize::from(keep.kick);
                if let Some(t) = keep.look_at {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                if let Some(s) = keep.shed {
                    sheddable.push((s.partial, s.since, k));
                }
            }
        }
    }
    if open > max_connections {
        sheddable.sort();
        for (partial, _, k) in sheddable.into_iter().take(open - max_connections) {
            let reason = if partial {
                CloseReason::OverCapacityPartial
            } else {
                CloseReason::OverCapacity
            };
            close.push((k, reason));
        }
    }
    Plan {
        close,
        kicks: kicks.min(MAX_KICKS),
        next,
    }
}

/// The send-timeout rule for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCheck {
    /// Nothing waits for the peer.
    Flowing,
    /// Bytes wait, the peer has acknowledged `acked` bytes in all, and has
    /// acknowledged nothing more since `since`.
    Waiting { since: Instant, acked: u64 },
    /// Nothing acknowledged for the send timeout.
    TimedOut,
}

/// `prev` is the last [`SendCheck::Waiting`] state, `unacked` and `acked`
/// the kernel's counts now. A wait starts when first seen (never earlier:
/// the guard may not have looked for a while) and restarts on any
/// acknowledged byte.
pub fn send_check(
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

/// The pool-kick rule for one connection with request bytes waiting unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Kick the pool now.
    Now,
    /// Not yet: look again at this time.
    LookAt(Instant),
    /// Never for this connection: a thread has read from it, and tiny_http
    /// gives a connection one thread for its whole life, so a fresh pool
    /// thread could not help (that thread is busy, not missing).
    Never,
}

/// `never_read` is whether tiny_http has consumed no byte of the connection
/// yet, `waiting_since` since when nothing was consumed (its discovery, or
/// the last time its consumed count moved), `kicked` when we last kicked for
/// it. A kick whose own connection lost the same race frees nothing, so a
/// connection still queued is kicked for again after [`QUEUED`].
pub fn kick_check(
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

/// Whether the handlers' record `a` of a peer outlives a rescan that began
/// at `scan_started` and did (`known`) or did not find an open connection
/// from that peer. A record touched since the scan began is kept even when
/// the scan missed its socket: that connection was accepted (and maybe
/// answered) after `/proc` was read, and without its record the next rescan
/// would take the request it answered for a partial one (a 408 after the
/// header timeout instead of the idle close).
pub fn keep_activity(a: &Activity, known: bool, scan_started: Instant) -> bool {
    known || a.in_flight > 0 || a.request_started.max(a.last_response) >= scan_started
}

/// How many of the closed sockets first seen at `seen` are still held
/// `after` later (the caller drops the ones that are gone).
pub fn wedged(seen: impl IntoIterator<Item = Instant>, now: Instant, after: Duration) -> usize {
    seen.into_iter()
        .filter(|t| now.saturating_duration_since(*t) >= after)
        .count()
}

/// Restart once wedged connections are as many as the cap on open ones: the
/// fd budget checked at start reserves descriptors for `max_connections`
/// connections, and wedged ones (outside the cap) would take them next.
/// Until then a wedged thread costs a stack and two descriptors, which is
/// cheaper than a restart an attacker could trigger with a few requests.
pub fn wedged_verdict(wedged: usize, max_connections: usize) -> Option<String> {
    (wedged >= max_connections.max(1)).then(|| {
        format!(
            "{wedged} connections wedged in tiny_http (at least HTTP_MAX_CONNECTIONS={max_connections}); restarting to free their threads and descriptors"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CloseReason::*;

    use crate::http::guard::FakeClock as Clock;

    /// The record of a peer whose one request was answered at `t`.
    fn answered(t: Instant) -> Activity {
        Activity {
            in_flight: 0,
            responses: 1,
            last_response: t,
            request_started: t - Duration::from_millis(1),
        }
    }

    /// The record of a peer whose first request started at `t` and runs.
    fn in_flight(t: Instant) -> Activity {
        Activity {
            in_flight: 1,
            responses: 0,
            last_response: t,
            request_started: t,
        }
    }

    const HEADER_MS: u64 = 10_000;
    const IDLE_MS: u64 = 60_000;
    const SEND_MS: u64 = 5_000;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(HEADER_MS),
            idle_timeout: Duration::from_millis(IDLE_MS),
            max_connections: 4,
            max_header_bytes: 1_000,
            send_timeout: Duration::from_millis(SEND_MS),
        }
    }

    /// `received` bytes arrived, `unread` of them not read by tiny_http.
    fn snap(received: u64, unread: u64) -> TcpSnapshot {
        TcpSnapshot {
            state: 1,
            bytes_received: received,
            unread,
            bytes_acked: 0,
            unacked: 0,
        }
    }

    /// One connection, first seen at 0 ms on a fake clock, looked at again
    /// and again as the guard would.
    struct Watched {
        clock: Clock,
        conn: ConnState,
        limits: Limits,
        draining: bool,
    }

    impl Watched {
        fn new() -> Watched {
            let clock = Clock(Instant::now());
            let conn = ConnState::new(clock.at(0));
            Watched {
                clock,
                conn,
                limits: limits(),
                draining: false,
            }
        }

        fn draining() -> Watched {
            Watched {
                draining: true,
                ..Watched::new()
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.clock.at(ms)
        }

        /// The verdict at `ms` on the kernel's `s` and the handlers' `a`.
        fn look(&mut self, ms: u64, s: TcpSnapshot, a: Option<Activity>) -> Verdict {
            let now = self.at(ms);
            judge(
                &mut self.conn,
                &s,
                a.as_ref(),
                &self.limits,
                self.draining,
                now,
            )
        }

        /// A verdict that keeps the connection, with only a deadline at `ms`.
        fn until(&self, ms: u64) -> Verdict {
            Verdict::Keep(Keep {
                look_at: Some(self.at(ms)),
                ..Keep::default()
            })
        }

        /// A verdict that keeps it, sheddable, until `ms` (waiting since `since`).
        fn sheddable(&self, ms: u64, since: u64, partial: bool) -> Verdict {
            Verdict::Keep(Keep {
                look_at: Some(self.at(ms)),
                kick: false,
                shed: Some(Sheddable {
                    since: self.at(since),
                    partial,
                }),
            })
        }
    }

    fn kicks(v: Verdict) -> bool {
        matches!(v, Verdict::Keep(k) if k.kick)
    }

    fn shed(v: Verdict) -> Option<Sheddable> {
        match v {
            Verdict::Keep(k) => k.shed,
            Verdict::Close(_) => None,
        }
    }

    #[test]
    fn a_silent_connection_gets_a_408_at_the_header_timeout_and_not_before() {
        let mut w = Watched::new();
        let v = w.look(HEADER_MS - 1, snap(0, 0), None);
        assert_eq!(v, w.sheddable(HEADER_MS, 0, false));
        assert_eq!(
            w.look(HEADER_MS, snap(0, 0), None),
            Verdict::Close(HeaderTimeout)
        );
        assert!(HeaderTimeout
            .response()
            .is_some_and(|r| r.starts_with(b"HTTP/1.1 408 ")));
    }

    #[test]
    fn a_drip_that_never_completes_a_head_gets_a_408_counted_from_its_start() {
        // Bytes keep arriving (and tiny_http reads them, waiting for more):
        // the deadline stays where the wait began.
        let mut w = Watched::new();
        assert_eq!(
            w.look(1, snap(10, 0), None),
            w.sheddable(HEADER_MS, 0, true)
        );
        let v = w.look(HEADER_MS - 1, snap(20, 0), None);
        assert_eq!(v, w.sheddable(HEADER_MS, 0, true));
        assert_eq!(
            w.look(HEADER_MS, snap(30, 0), None),
            Verdict::Close(HeaderTimeout)
        );
    }

    #[test]
    fn after_a_response_the_next_wait_is_the_idle_timeout_counted_from_it() {
        // The request's 100 bytes were read and answered at 50 ms: they are
        // not a partial next request, and the header timeout no longer runs.
        let mut w = Watched::new();
        let a = Some(answered(w.at(50)));
        let v = w.look(HEADER_MS + 1, snap(100, 0), a);
        assert_eq!(v, w.sheddable(50 + IDLE_MS, 50, false));
        let v = w.look(50 + IDLE_MS, snap(100, 0), a);
        assert_eq!(v, Verdict::Close(IdleTimeout));
        assert_eq!(IdleTimeout.response(), None);
    }

    #[test]
    fn bytes_after_a_response_start_a_new_header_timeout_from_that_response() {
        let mut w = Watched::new();
        let a = Some(answered(w.at(1_000)));
        w.look(1_001, snap(100, 0), a);
        // 5 more bytes, read: a partial second request, timed from 1 s.
        let v = w.look(1_000 + HEADER_MS - 1, snap(105, 0), a);
        assert_eq!(v, w.sheddable(1_000 + HEADER_MS, 1_000, true));
        let v = w.look(1_000 + HEADER_MS, snap(105, 0), a);
        assert_eq!(v, Verdict::Close(HeaderTimeout));
    }

    #[test]
    fn a_head_larger_than_the_limit_is_cut_off_as_soon_as_it_is_read() {
        let max = limits().max_header_bytes;
        // Exactly the limit read: kept; one byte more: 431 and reset.
        let v = Watched::new().look(1, snap(max, 0), None);
        assert!(matches!(v, Verdict::Keep(_)), "{v:?}");
        let v = Watched::new().look(1, snap(max + 1, 0), None);
        assert_eq!(v, Verdict::Close(HeaderTooLarge));
        // Bytes the kernel holds unread do not count: tiny_http has not
        // buffered them.
        let v = Watched::new().look(1, snap(5 * max, 4 * max + 1), None);
        assert!(matches!(v, Verdict::Keep(_)), "{v:?}");
        // After a response, only the bytes since count.
        let mut w = Watched::new();
        let a = Some(answered(w.at(5)));
        assert!(matches!(w.look(6, snap(900, 0), a), Verdict::Keep(_)));
        let v = w.look(7, snap(900 + max, 0), a);
        assert!(matches!(v, Verdict::Keep(_)), "{max} new bytes: {v:?}");
        let v = w.look(8, snap(901 + max, 0), a);
        assert_eq!(v, Verdict::Close(HeaderTooLarge));
    }

    #[test]
    fn a_request_in_flight_past_the_header_timeout_has_its_read_side_shut_once() {
        let mut w = Watched::new();
        let a = Some(in_flight(w.at(100)));
        // Far more than the head limit was read: a body, not a head.
        let body = snap(50 * w.limits.max_header_bytes, 0);
        let v = w.look(100 + HEADER_MS - 1, body, a);
        assert_eq!(v, w.until(100 + HEADER_MS));
        assert_eq!(
            w.look(100 + HEADER_MS, body, a),
            Verdict::Close(RequestTimeout)
        );
        // Shut once: afterwards nothing more, not even a deadline.
        let v = w.look(100 + 5 * HEADER_MS, body, a);
        assert_eq!(v, Verdict::Keep(Keep::default()));
        // Draining does not cut a request in flight either.
        let mut w = Watched::draining();
        let a = Some(in_flight(w.at(100)));
        assert_eq!(w.look(200, snap(0, 0), a), w.until(100 + HEADER_MS));
    }

    #[test]
    fn a_peer_that_reads_nothing_is_reset_at_the_send_timeout_from_its_last_ack() {
        let mut w = Watched::new();
        let a = Some(in_flight(w.at(0)));
        let stuck = |acked| TcpSnapshot {
            bytes_acked: acked,
            unacked: 4_096,
            ..snap(80, 0)
        };
        // Waiting from 1 s; an ack at 4 s restarts the wait, another at 9 s.
        assert_eq!(w.look(1_000, stuck(10), a), w.until(1_000 + SEND_MS));
        assert_eq!(w.look(4_000, stuck(11), a), w.until(4_000 + SEND_MS));
        assert_eq!(w.look(9_000, stuck(12), a), w.until(9_000 + SEND_MS));
        // Past the header timeout: no request timeout while the peer stalls.
        let v = w.look(HEADER_MS + 1, stuck(12), a);
        assert_eq!(
            v,
            w.until(9_000 + SEND_MS),
            "no request timeout while stalled"
        );
        let v = w.look(9_000 + SEND_MS - 1, stuck(12), a);
        assert_eq!(v, w.until(9_000 + SEND_MS));
        let v = w.look(9_000 + SEND_MS, stuck(12), a);
        assert_eq!(v, Verdict::Close(SendTimeout));
        // Also with no handler involved (an answer that fit in the buffers).
        let mut w = Watched::new();
        w.look(1, stuck(0), None);
        assert_eq!(
            w.look(1 + SEND_MS, stuck(0), None),
            Verdict::Close(SendTimeout)
        );
    }

    #[test]
    fn draining_closes_idle_connections_at_once_but_not_partial_requests() {
        let v = Watched::draining().look(1, snap(0, 0), None);
        assert_eq!(v, Verdict::Close(Draining));
        assert_eq!(Draining.label(), None, "not counted");
        let v = Watched::draining().look(1, snap(10, 0), None);
        assert!(matches!(v, Verdict::Keep(_)), "{v:?}");
    }

    #[test]
    fn only_a_connection_no_thread_has_read_is_kicked_for_after_queued() {
        let q = QUEUED.as_millis() as u64;
        // 50 bytes, none read, seen at 0: kicked at QUEUED, not before, not
        // again until QUEUED later; never sheddable while it waits.
        let mut w = Watched::new();
        let v = w.look(q - 1, snap(50, 50), None);
        assert!(!kicks(v) && shed(v).is_none(), "{v:?}");
        let v = w.look(q, snap(50, 50), None);
        assert!(kicks(v), "{v:?}");
        assert!(!kicks(w.look(q + 1, snap(50, 50), None)));
        assert!(kicks(w.look(2 * q, snap(50, 50), None)));
        // Read from once (a thread owns it): never kicked for.
        let mut w = Watched::new();
        assert!(!kicks(w.look(5 * q, snap(50, 20), None)));
        assert!(!kicks(w.look(50 * q, snap(50, 20), None)));
    }

    #[test]
    fn the_plan_sheds_idle_oldest_first_then_partial_requests_with_a_503() {
        let clock = Clock(Instant::now());
        let keep = |since: u64, partial: bool| {
            Verdict::Keep(Keep {
                look_at: Some(clock.at(since + HEADER_MS)),
                kick: false,
                shed: Some(Sheddable {
                    since: clock.at(since),
                    partial,
                }),
            })
        };
        let busy = Verdict::Keep(Keep::default());
        // Cap 4, seven open (one closing anyway does not count).
        let verdicts = [
            (1, keep(30, false)),
            (2, keep(10, true)),
            (3, keep(20, false)),
            (4, busy),
            (5, Verdict::Close(IdleTimeout)),
            (6, keep(5, true)),
            (7, busy),
            (8, keep(40, false)),
        ];
        let p = plan(verdicts, 4);
        assert_eq!(
            p.close,
            [
                (5, IdleTimeout),
                (3, OverCapacity),
                (1, OverCapacity),
                (8, OverCapacity)
            ]
        );
        assert_eq!(p.next, Some(clock.at(5 + HEADER_MS)));
        // One more open: the oldest partial request goes too, with a 503.
        let p = plan(verdicts.into_iter().chain([(9, busy)]), 4);
        assert_eq!(p.close.last(), Some(&(6, OverCapacityPartial)));
        assert_eq!(
            OverCapacityPartial.response().map(|r| &r[..12]),
            Some(&b"HTTP/1.1 503"[..])
        );
        // A shut read side still counts as open: one over the cap of 1.
        let p = plan(
            [(1, keep(0, false)), (2, Verdict::Close(RequestTimeout))],
            1,
        );
        assert_eq!(p.close, [(2, RequestTimeout), (1, OverCapacity)]);
        // At the cap: nothing shed.
        let p = plan([(1, keep(0, false)), (2, busy)], 2);
        assert!(p.close.is_empty());
    }

    /// Every combination of handler record, kernel snapshot and draining:
    /// the deadline a verdict announces is honest. Before it, nothing may
    /// close or kick (the guard sleeps until then); with none announced,
    /// nothing may ever change without an event; and every connection that
    /// is neither busy nor stalled ends within a bounded number of looks.
    #[test]
    fn a_verdicts_deadline_is_the_earliest_time_it_can_change() {
        let clock = Clock(Instant::now());
        let l = limits();
        let records = [
            None,
            Some(in_flight(clock.at(3))),
            Some(answered(clock.at(50))),
        ];
        let stalled = TcpSnapshot {
            unacked: 100,
            ..snap(40, 0)
        };
        let snaps = [
            snap(0, 0),
            snap(10, 0),
            snap(50, 50),
            snap(50, 20),
            snap(l.max_header_bytes + 1, 0),
            stalled,
        ];
        let quiet = |v: &Verdict| matches!(v, Verdict::Keep(k) if !k.kick);
        for a in &records {
            for s in &snaps {
                for draining in [false, true] {
                    let case = format!("{a:?} {s:?} draining={draining}");
                    let mut c = ConnState::new(clock.at(0));
                    let mut now = clock.at(5);
                    let mut looks = 0;
                    loop {
                        looks += 1;
                        assert!(looks < 5_000, "{case}: no end after {looks} looks");
                        let v = judge(&mut c, s, a.as_ref(), &l, draining, now);
                        let Verdict::Keep(k) = v else { break };
                        let Some(due) = k.look_at else {
                            let mut later = c;
                            let v = judge(
                                &mut later,
                                s,
                                a.as_ref(),
                                &l,
                                draining,
                                now + Duration::from_secs(86_400),
                            );
                            assert!(
                                quiet(&v),
                                "{case}: nothing announced, yet {v:?} a day later"
                            );
                            break;
                        };
                        assert!(due > now, "{case}: deadline {due:?} not after {now:?}");
                        for before in [now + (due - now) / 2, due - Duration::from_micros(1)] {
                            let mut early = c;
                            let v = judge(&mut early, s, a.as_ref(), &l, draining, before);
                            assert!(quiet(&v), "{case}: {v:?} before the deadline");
                        }
                        now = due;
                    }
                }
            }
        }
    }

    #[test]
    fn the_plan_kicks_at_most_max_kicks_times() {
        let kick = Verdict::Keep(Keep {
            kick: true,
            ..Keep::default()
        });
        assert_eq!(plan((0..3).map(|k| (k, kick)), 1_000).kicks, 3);
        assert_eq!(plan((0..500).map(|k| (k, kick)), 1_000).kicks, MAX_KICKS);
        assert_eq!(plan(Vec::<(u8, Verdict)>::new(), 1).next, None);
    }

    #[test]
    fn kick_check_waits_queued_from_the_wait_or_the_last_kick() {
        let clock = Clock(Instant::now());
        let at = |ms| clock.at(ms);
        // Read before: its own thread is busy; never kicked, however long.
        assert_eq!(kick_check(false, at(0), None, at(60_000)), Kick::Never);
        let q = QUEUED.as_millis() as u64;
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
        let clock = Clock(Instant::now());
        let at = |ms| clock.at(ms);
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
        let clock = Clock(Instant::now());
        let at = |ms| clock.at(ms);
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
    fn send_check_counts_from_the_last_acknowledged_byte() {
        let clock = Clock(Instant::now());
        let s = |secs: u64| clock.at(secs * 1_000);
        let t = Duration::from_secs(10);
        // Nothing waiting: flowing, whatever came before.
        assert_eq!(
            send_check(Some((s(0), 5)), 0, 5, s(99), t),
            SendCheck::Flowing
        );
        // First seen waiting at 3 s: the wait starts then, not earlier.
        let w = SendCheck::Waiting {
            since: s(3),
            acked: 5,
        };
        assert_eq!(send_check(None, 100, 5, s(3), t), w);
        // Still nothing acknowledged at 12 s: waiting; at 13 s: timed out.
        assert_eq!(send_check(Some((s(3), 5)), 100, 5, s(12), t), w);
        assert_eq!(
            send_check(Some((s(3), 5)), 100, 5, s(13), t),
            SendCheck::TimedOut
        );
        // One byte acknowledged at 12 s restarts the wait.
        let w = SendCheck::Waiting {
            since: s(12),
            acked: 6,
        };
        assert_eq!(send_check(Some((s(3), 5)), 99, 6, s(12), t), w);
        assert_eq!(send_check(Some((s(12), 6)), 99, 6, s(21), t), w);
        assert_eq!(
            send_check(Some((s(12), 6)), 99, 6, s(22), t),
            SendCheck::TimedOut
        );
    }
}
