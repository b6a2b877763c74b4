//! Per-connection ordering of requests: one handler thread per connection at
//! a time, a bounded read-ahead, and "nothing after the last answer runs".
//!
//! tiny_http parses the pipelined requests of a connection as fast as they
//! arrive and pushes them all into the one queue every handler pops from;
//! their responses are written in order (a later response waits for the
//! earlier one's writer). Left alone, a client that pipelines and never
//! reads holds one handler blocked in its write and every other handler
//! waiting behind it, and its requests fill the queue ahead of everybody
//! else's. And after a request whose framing we refuse, the requests tiny_http
//! already parsed from its body may be running on other threads.
//!
//! A *lane* per connection fixes both. A handler pops a request and admits it
//! to its connection's lane under one lock (so admission order is the
//! connection's order). If no request of that connection is running, the
//! popping thread runs it; otherwise the request waits in the lane and the
//! thread that holds the lane runs it next. So a connection never holds more
//! than one handler, and at most `depth` of its requests are admitted and
//! unanswered. The request beyond that closes the lane: the requests already
//! admitted are answered, the rest are discarded, and the connection is
//! closed after the last admitted answer ([`Finish::close`]). A lane closed
//! for any reason (refused framing, a body, a send timeout) discards every
//! later request of its connection until the connection is gone, even one
//! parsed after the close from bytes tiny_http had already buffered.
//!
//! Pure data: generic over the request and the key, tested with numbers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often a closed idle lane may be checked against the open sockets
/// (a /proc scan, under the turn lock) while requests keep arriving for it:
/// the requests tiny_http parses from a closed connection's buffered bytes
/// arrive within microseconds, so this bounds the scans they cause.
pub const RECHECK: Duration = Duration::from_millis(2);

/// Why a lane was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// More than `depth` requests admitted and unanswered.
    Depth,
    /// Closed by the request with this ordinal (its own answer said close).
    Request,
}

/// What the admitting thread does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Run it now (this thread holds the lane until [`Lanes::finish`] says
    /// the lane is empty); `discard` = drop it without running it.
    Run { ord: u64, item: T, discard: bool },
    /// Queued behind the running request.
    Queued,
    /// Queued, and this request overflowed the lane: the caller stops
    /// reading the connection (its read side is shut).
    Overflowed,
}

/// What the lane holder does after a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Finish<T> {
    /// Close the connection now (after the last admitted answer), for this
    /// reason; before running or discarding `next`.
    pub close: Option<CloseCause>,
    /// The next request of the lane, or None: the lane is released.
    pub next: Option<(u64, T, bool)>,
}

#[derive(Debug)]
struct Lane<T> {
    running: bool,
    queued: VecDeque<(u64, T)>,
    admitted: u64,
    /// Requests with a higher ordinal are discarded.
    last: Option<(u64, CloseCause)>,
    /// The connection was closed (no more closing to do).
    closed: bool,
    /// When [`Lanes::due_for_check`] last said yes.
    checked: Option<Instant>,
}

impl<T> Lane<T> {
    fn new() -> Lane<T> {
        Lane {
            running: false,
            queued: VecDeque::new(),
            admitted: 0,
            last: None,
            closed: false,
            checked: None,
        }
    }

    fn discards(&self, ord: u64) -> bool {
        self.last.is_some_and(|(l, _)| ord > l)
    }
}

/// The lanes of every connection with a request admitted, running or
/// refused (see the module docs).
#[derive(Debug)]
pub struct Lanes<K, T> {
    depth: u64,
    lanes: HashMap<K, Lane<T>>,
    /// Lanes with a last request (`last.is_some()`): while there are none,
    /// no lane can be closed and idle, and nobody looks.
    closed: usize,
}

impl<K: Hash + Eq + Copy, T> Lanes<K, T> {
    /// `depth`: requests of one connection admitted and unanswered, at most.
    pub fn new(depth: usize) -> Lanes<K, T> {
        Lanes {
            depth: depth.max(1) as u64,
            lanes: HashMap::new(),
            closed: 0,
        }
    }

    pub fn admit(&mut self, key: K, item: T) -> Admit<T> {
        let depth = self.depth;
        let lane = self.lanes.entry(key).or_insert_with(Lane::new);
        lane.admitted += 1;
        let ord = lane.admitted;
        if !lane.running {
            debug_assert!(lane.queued.is_empty());
            lane.running = true;
            let discard = lane.discards(ord);
            return Admit::Run { ord, item, discard };
        }
        lane.queued.push_back((ord, item));
        // Unanswered = the running one + the queued ones (while the lane is
        // open, none of them is a discard).
        if lane.last.is_none() && 1 + lane.queued.len() as u64 > depth {
            // The ones before this request are still answered.
            lane.last = Some((ord - 1, CloseCause::Depth));
            self.closed += 1;
            return Admit::Overflowed;
        }
        Admit::Queued
    }

    /// The lane holder is done with request `ord`; `closed`: its handling
    /// closed the connection itself (a refused or final answer, a failed
    /// write).
    pub fn finish(&mut self, key: K, ord: u64, closed: bool) -> Finish<T> {
        // One lookup, also for the removal.
        let Entry::Occupied(mut entry) = self.lanes.entry(key) else {
            return Finish {
                close: None,
                next: None,
            };
        };
        let lane = entry.get_mut();
        let mut close = None;
        if closed {
            lane.closed = true;
            match lane.last {
                Some((l, _)) if l <= ord => {}
                Some(_) => lane.last = Some((ord, CloseCause::Request)),
                None => {
                    lane.last = Some((ord, CloseCause::Request));
                    self.closed += 1;
                }
            }
        } else if let Some((l, cause)) = lane.last {
            if ord >= l && !lane.closed {
                lane.closed = true;
                close = Some(cause);
            }
        }
        let next = match lane.queued.pop_front() {
            Some((o, item)) => {
                let discard = lane.discards(o);
                Some((o, item, discard))
            }
            None => {
                lane.running = false;
                // An open lane is forgotten when idle; a closed one is kept
                // until its connection is gone (`retain_open`), so that
                // requests parsed after the close are still discarded.
                if lane.last.is_none() {
                    entry.remove();
                }
                None
            }
        };
        Finish { close, next }
    }

    /// Whether some idle closed lane waits for its connection to go away.
    pub fn has_closed_idle(&self) -> bool {
        self.closed > 0 && self.lanes.values().any(|l| !l.running && l.last.is_some())
    }

    /// Whether `key`'s lane is closed and idle.
    pub fn is_closed_idle(&self, key: &K) -> bool {
        self.closed > 0
            && self
                .lanes
                .get(key)
                .is_some_and(|l| !l.running && l.last.is_some())
    }

    /// Whether `key`'s lane is closed and idle and was not checked against
    /// the open sockets within [`RECHECK`] of `now` (then it counts as
    /// checked now): the caller forgets it if its socket is gone.
    pub fn due_for_check(&mut self, key: &K, now: Instant) -> bool {
        let Some(l) = self.lanes.get_mut(key) else {
            return false;
        };
        if l.running || l.last.is_none() {
            return false;
        }
        if l.checked.is_some_and(|t| now.duration_since(t) < RECHECK) {
            return false;
        }
        l.checked = Some(now);
        true
    }

    /// Forgets idle closed lanes whose connection is gone (`alive` says
    /// whether it still exists).
    pub fn retain_open(&mut self, alive: impl Fn(&K) -> bool) {
        let closed = &mut self.closed;
        self.lanes.retain(|k, l| {
            let keep = l.running || l.last.is_none() || alive(k);
            if !keep {
                *closed -= 1;
            }
            keep
        });
    }

    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(a: Admit<T>) -> (u64, T, bool) {
        match a {
            Admit::Run { ord, item, discard } => (ord, item, discard),
            _ => panic!("expected Run"),
        }
    }

    #[test]
    fn one_request_at_a_time_per_connection_in_order() {
        let mut l: Lanes<u8, &str> = Lanes::new(4);
        assert_eq!(run(l.admit(1, "a")), (1, "a", false));
        assert_eq!(l.admit(1, "b"), Admit::Queued);
        assert_eq!(l.admit(1, "c"), Admit::Queued);
        // Another connection is independent.
        assert_eq!(run(l.admit(2, "x")), (1, "x", false));
        let f = l.finish(1, 1, false);
        assert_eq!(f.close, None);
        assert_eq!(f.next, Some((2, "b", false)));
        assert_eq!(l.finish(1, 2, false).next, Some((3, "c", false)));
        assert_eq!(l.finish(1, 3, false).next, None);
        // Idle open lanes are forgotten; a new request starts a new lane.
        assert_eq!(l.finish(2, 1, false).next, None);
        assert!(l.is_empty());
        assert_eq!(run(l.admit(1, "d")), (1, "d", false));
    }

    #[test]
    fn the_request_beyond_the_depth_closes_the_lane_after_the_admitted_ones() {
        let mut l: Lanes<u8, u32> = Lanes::new(3);
        assert_eq!(run(l.admit(7, 1)), (1, 1, false));
        assert_eq!(l.admit(7, 2), Admit::Queued);
        assert_eq!(l.admit(7, 3), Admit::Queued);
        assert_eq!(l.admit(7, 4), Admit::Overflowed);
        // Later ones are only queued to be dropped in order.
        assert_eq!(l.admit(7, 5), Admit::Queued);
        let f = l.finish(7, 1, false);
        assert_eq!((f.close, f.next), (None, Some((2, 2, false))));
        let f = l.finish(7, 2, false);
        assert_eq!((f.close, f.next), (None, Some((3, 3, false))));
        // After the last admitted answer: close, then discard the rest.
        let f = l.finish(7, 3, false);
        assert_eq!(f.close, Some(CloseCause::Depth));
        assert_eq!(f.next, Some((4, 4, true)));
        let f = l.finish(7, 4, false);
        assert_eq!((f.close, f.next), (None, Some((5, 5, true))));
        assert_eq!(l.finish(7, 5, false).next, None);
        // Parsed after the close: still discarded, and never overflows again.
        assert_eq!(run(l.admit(7, 6)), (6, 6, true));
        assert_eq!(l.admit(7, 7), Admit::Queued);
        assert!(l.finish(7, 6, false).close.is_none());
    }

    #[test]
    fn a_request_that_closes_its_connection_discards_everything_after_it() {
        let mut l: Lanes<u8, u32> = Lanes::new(8);
        assert_eq!(run(l.admit(1, 10)), (1, 10, false));
        assert_eq!(l.admit(1, 11), Admit::Queued);
        let f = l.finish(1, 1, true);
        assert_eq!(f.close, None, "the handler already closed it");
        assert_eq!(f.next, Some((2, 11, true)));
        assert_eq!(l.finish(1, 2, false).next, None);
        assert!(l.has_closed_idle());
        assert_eq!(run(l.admit(1, 12)), (3, 12, true));
        assert_eq!(l.finish(1, 3, false).next, None);
        // Kept while the connection exists, forgotten once it is gone.
        l.retain_open(|_| true);
        assert_eq!(l.len(), 1);
        // Checked at most once per RECHECK while requests keep coming.
        let t0 = Instant::now();
        assert!(l.due_for_check(&1, t0));
        assert!(!l.due_for_check(&1, t0 + Duration::from_millis(1)));
        assert!(l.due_for_check(&1, t0 + RECHECK));
        assert!(!l.due_for_check(&2, t0), "no lane");
        assert!(l.is_closed_idle(&1));
        l.retain_open(|_| false);
        assert!(l.is_empty());
        assert_eq!(run(l.admit(1, 13)), (1, 13, false));
    }

    #[test]
    fn a_close_by_request_before_the_depth_limit_wins() {
        let mut l: Lanes<u8, u32> = Lanes::new(1);
        assert_eq!(run(l.admit(1, 1)), (1, 1, false));
        assert_eq!(l.admit(1, 2), Admit::Overflowed);
        // Request 1 closed the connection itself (e.g. a send timeout).
        let f = l.finish(1, 1, true);
        assert_eq!(f.close, None);
        assert_eq!(f.next, Some((2, 2, true)));
    }

    #[test]
    fn discarded_requests_do_not_count_against_the_depth() {
        let mut l: Lanes<u8, u32> = Lanes::new(2);
        assert_eq!(run(l.admit(1, 1)), (1, 1, false));
        assert_eq!(l.admit(1, 2), Admit::Queued);
        assert_eq!(l.admit(1, 3), Admit::Overflowed);
        for i in 4..100 {
            assert_eq!(l.admit(1, i), Admit::Queued);
        }
        let f = l.finish(1, 1, false);
        assert_eq!(f.next, Some((2, 2, false)));
        let f = l.finish(1, 2, false);
        assert_eq!(f.close, Some(CloseCause::Depth));
        assert_eq!(f.next, Some((3, 3, true)));
    }

    /// The count of lanes with a last request follows every way a lane
    /// gets one or goes, so the shortcuts it allows answer as the full
    /// look would.
    #[test]
    fn the_closed_count_follows_the_lanes() {
        fn check(l: &Lanes<u8, u32>) {
            let closed = l.lanes.values().filter(|x| x.last.is_some()).count();
            assert_eq!(l.closed, closed);
            let idle = l.lanes.values().any(|x| !x.running && x.last.is_some());
            assert_eq!(l.has_closed_idle(), idle);
            for k in 0..8 {
                let want = l
                    .lanes
                    .get(&k)
                    .is_some_and(|x| !x.running && x.last.is_some());
                assert_eq!(l.is_closed_idle(&k), want, "{k}");
            }
        }
        let mut l: Lanes<u8, u32> = Lanes::new(1);
        check(&l);
        // Overflow, then the close of the admitted one.
        assert_eq!(run(l.admit(1, 1)), (1, 1, false));
        assert_eq!(l.admit(1, 2), Admit::Overflowed);
        check(&l);
        let f = l.finish(1, 1, false);
        check(&l);
        l.finish(1, f.next.unwrap().0, false);
        check(&l);
        // A request that closes its connection, twice on one lane.
        assert_eq!(run(l.admit(2, 1)), (1, 1, false));
        l.finish(2, 1, true);
        check(&l);
        assert_eq!(run(l.admit(2, 2)), (2, 2, true));
        l.finish(2, 2, true);
        check(&l);
        // Open lanes come and go without counting.
        assert_eq!(run(l.admit(3, 1)), (1, 1, false));
        check(&l);
        l.finish(3, 1, false);
        check(&l);
        // A closed lane that is running is kept by retain_open.
        assert_eq!(run(l.admit(1, 9)), (3, 9, true));
        l.retain_open(|_| false);
        check(&l);
        assert_eq!(l.len(), 1);
        l.finish(1, 3, false);
        check(&l);
        l.retain_open(|k| *k == 1);
        check(&l);
        l.retain_open(|_| false);
        check(&l);
        assert!(l.is_empty());
        assert_eq!(l.closed, 0);
    }
}
