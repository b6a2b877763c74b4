//! Which client sockets exist: the guard's table of the connections it
//! watches and of the ones it closed that tiny_http still holds, kept in
//! step with `/proc/self/fd` by [`Sockets::rescan`]. This is the part of the
//! guard that looks at the system; what to do with a socket is `policy`'s.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::sys::{self, ClientSocket, Epoll};
use super::policy::{wedged, ConnState};

/// A socket we shut down that tiny_http still holds after this long is
/// wedged: its thread is not blocked on the socket (that would have ended at
/// once with the shutdown) but on something that never returns, such as the
/// writer deadlock an `HTTP/2.0` request line causes (ARCHITECTURE.md, Known
/// limits). Legitimate holders let go within milliseconds.
pub const WEDGED_AFTER: Duration = Duration::from_secs(5);

/// One watched connection: where it is, and what the policy remembers.
#[derive(Debug)]
pub struct Tracked {
    pub sock: ClientSocket,
    pub state: ConnState,
}

/// What a rescan found.
#[derive(Debug)]
pub struct Rescan {
    /// A socket we had not seen before.
    pub discovered: bool,
    /// Connections open (watched) now.
    pub open: usize,
    /// Their peers.
    pub peers: HashSet<SocketAddr>,
    /// Closed sockets tiny_http has held for [`WEDGED_AFTER`] or longer.
    pub wedged: usize,
    /// When the scan read `/proc`: handler records touched since may belong
    /// to a connection it could not see yet.
    pub started: Instant,
}

/// The table. Every map has its own lock, always taken one at a time or in
/// the order `conns`, then `closed` (the handlers read both).
pub struct Sockets {
    port: u16,
    listener_fd: RawFd,
    /// Watched connections, by socket inode.
    pub conns: Mutex<HashMap<u64, Tracked>>,
    /// Sockets we shut down that tiny_http has not closed yet (inode →
    /// peer), kept while the socket exists at all: a closed one's
    /// `getpeername` fails, so the peer is remembered here.
    closed: Mutex<HashMap<u64, SocketAddr>>,
    /// When each socket in `closed` was first seen there by a rescan (only
    /// the guard thread touches it).
    closed_seen: Mutex<HashMap<u64, Instant>>,
}

impl Sockets {
    pub fn new(port: u16, listener_fd: RawFd) -> Sockets {
        Sockets {
            port,
            listener_fd,
            conns: Mutex::new(HashMap::new()),
            closed: Mutex::new(HashMap::new()),
            closed_seen: Mutex::new(HashMap::new()),
        }
    }

    /// Every accepted client socket that exists now (a `/proc` scan).
    pub fn scan(&self) -> Vec<ClientSocket> {
        sys::client_sockets(self.port, self.listener_fd)
    }

    /// Reconciles the table with the sockets that exist now: drops the
    /// vanished, registers the new with `epoll` (edge-triggered: readable,
    /// hang-up), forgets closed sockets tiny_http has let go of.
    pub fn rescan(&self, epoll: &Epoll, now: Instant) -> Rescan {
        let started = Instant::now();
        let found = self.scan();
        log::trace!(found = found.len(); "guard: rescan");
        let mut discovered = false;
        let mut conns = lock(&self.conns);
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
        let mut closed = lock(&self.closed);
        if !closed.is_empty() {
            let alive = sys::socket_inodes();
            closed.retain(|ino, _| alive.contains(ino));
        }
        let wedged = self.count_wedged(&closed, now);
        for s in found {
            if conns.contains_key(&s.inode) || closed.contains_key(&s.inode) {
                continue;
            }
            let watch = sys::READABLE | sys::EDGE | sys::HANGUP;
            match epoll.add(s.fd, s.inode, watch) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(_) => continue,
            }
            discovered = true;
            log::trace!(fd = s.fd, inode = s.inode, peer = s.peer.to_string().as_str(); "guard: new connection");
            conns.insert(
                s.inode,
                Tracked {
                    sock: s,
                    state: ConnState::new(now),
                },
            );
        }
        Rescan {
            discovered,
            open: conns.len(),
            peers: conns.values().map(|c| c.sock.peer).collect(),
            wedged,
            started,
        }
    }

    /// How many closed sockets tiny_http has held for [`WEDGED_AFTER`].
    fn count_wedged(&self, closed: &HashMap<u64, SocketAddr>, now: Instant) -> usize {
        let mut seen = lock(&self.closed_seen);
        seen.retain(|ino, _| closed.contains_key(ino));
        for ino in closed.keys() {
            seen.entry(*ino).or_insert(now);
        }
        wedged(seen.values().copied(), now, WEDGED_AFTER)
    }

    /// `peer`'s socket: from the table, else from a fresh scan (not found
    /// yet); the inode is re-checked.
    pub fn find(&self, peer: SocketAddr) -> Option<ClientSocket> {
        let found = lock(&self.conns)
            .values()
            .find(|c| c.sock.peer == peer)
            .map(|c| c.sock);
        // Its descriptor may be closed (tiny_http closes the read side's at
        // EOF): then its twin's.
        let found = found.and_then(|s| {
            if sys::socket_inode(s.fd) == Some(s.inode) {
                Some(s)
            } else {
                sys::fd_of_inode(s.inode).map(|fd| ClientSocket { fd, ..s })
            }
        });
        let found = found.or_else(|| self.scan().into_iter().find(|s| s.peer == peer));
        if found.is_none() {
            log::debug!(peer = peer.to_string().as_str(); "guard: no socket for this peer");
        }
        found
    }

    /// Records that we are closing `s`; false if it was closed before (a
    /// connection is closed, and counted, once). Until tiny_http lets go of
    /// it, a rescan must not take it for new.
    pub fn mark_closed(&self, s: &ClientSocket) -> bool {
        lock(&self.closed).insert(s.inode, s.peer).is_none()
    }

    /// The inodes of every socket we closed that may still exist.
    pub fn closed_inodes(&self) -> HashSet<u64> {
        lock(&self.closed).keys().copied().collect()
    }

    /// Whether `peer` has a connection in the table that we did not close:
    /// then a request from `peer` may be that connection's (cheap, no
    /// system call).
    pub fn knows_open_conn(&self, peer: SocketAddr) -> bool {
        // One lock at a time (rescan takes conns, then closed).
        let inodes: Vec<u64> = lock(&self.conns)
            .iter()
            .filter(|(_, c)| c.sock.peer == peer)
            .map(|(ino, _)| *ino)
            .collect();
        if inodes.is_empty() {
            return false;
        }
        let closed = lock(&self.closed);
        inodes.iter().any(|ino| !closed.contains_key(ino))
    }

    /// The inodes of the sockets we closed for `peer` that may still exist.
    pub fn closed_inodes_of(&self, peer: SocketAddr) -> Vec<u64> {
        lock(&self.closed)
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(ino, _)| *ino)
            .collect()
    }

    /// Every socket we closed that may still exist: (inode, peer).
    pub fn closed_list(&self) -> Vec<(u64, SocketAddr)> {
        lock(&self.closed).iter().map(|(i, p)| (*i, *p)).collect()
    }
}

/// A lock that survives a panicked holder (the data stays consistent: every
/// critical section here is a plain map update).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
