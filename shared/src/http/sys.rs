//! The few Linux system calls the serving layer needs, wrapped safely: the
//! only module of the workspace with `unsafe` code (every other module of
//! `orion_shared`, and both service crates, forbid it). Each `unsafe` block
//! carries a `SAFETY:` comment; constants and structs come from `libc` where
//! it defines them (`libc::tcp_info`), and the three it lacks are written
//! down with where they come from.
//!
//! Most descriptors here are not ours: tiny_http owns the listener and the
//! client sockets and closes them whenever it likes (the read side's clone
//! as soon as it sees EOF), so nothing we hold keeps them open and a
//! `BorrowedFd` made from their numbers would be a lie. Two kinds of
//! function follow from that:
//! - **probes** take a descriptor *number* (`RawFd`, as listed in
//!   `/proc/self/fd`) and only read what it refers to right now (fstat,
//!   getsockname, getpeername, TCP_INFO, FIONREAD, SIOCOUTQ). A stale or
//!   reused number makes them report another file or fail; they change
//!   nothing. Sockets are identified by (fd, inode) for that reason.
//! - **actions** change a socket (`shutdown(2)`, the RST of [`abort`], a
//!   send, socket options, `O_ASYNC`) and take a `BorrowedFd`: the caller
//!   holds a handle that keeps the socket open for the call. For tiny_http's
//!   sockets that handle is our own checked duplicate, [`dup_socket`]: made
//!   from the number, its inode re-checked, dropped after the action, so a
//!   number reused for another file is never acted on.
//!
//! `shutdown(2)` ends tiny_http's blocking read at once without closing any
//! descriptor under its feet.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Raises the soft open-files limit to the hard limit (as Go's runtime does)
/// and returns the new soft limit. A default soft limit of 1024 would let a
/// burst of connections hit EMFILE, and EMFILE from accept ends tiny_http's
/// accept loop for good.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit the call only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// The inode of whatever `fd` refers to, if it is a socket (a probe).
pub fn socket_inode(fd: RawFd) -> Option<u64> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the size of a stat; fstat on a
    // number that is not open fails with EBADF and writes nothing.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so it filled the whole stat.
    let st = unsafe { st.assume_init() };
    ((st.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(st.st_ino)
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (its family says so)
            // into storage that is larger and at least as aligned.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn name_of(
    fd: RawFd,
    f: unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int,
) -> Option<SocketAddr> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `f` is getsockname or getpeername; `ss` is writable storage
    // of `len` bytes, and the kernel writes at most `len` of them.
    if unsafe { f(fd, ss.as_mut_ptr() as *mut libc::sockaddr, &mut len) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised (a valid sockaddr_storage) before the call.
    sockaddr_to_std(unsafe { ss.assume_init_ref() })
}

/// The local address of whatever socket `fd` refers to (a probe).
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// The peer address of whatever socket `fd` refers to (a probe).
pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getpeername)
}

/// An accepted client socket of ours, as found in /proc/self/fd.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket {
    /// A number tiny_http's descriptor had when we looked (not a handle:
    /// act through [`dup_socket`]).
    pub fd: RawFd,
    pub inode: u64,
    pub peer: SocketAddr,
}

/// Every connected TCP socket whose local port is `port` (the accepted client
/// connections of our listener), one entry per socket: tiny_http holds two
/// descriptors per connection (it clones the stream), deduplicated by inode.
pub fn client_sockets(port: u16, listener_fd: RawFd) -> Vec<ClientSocket> {
    let mut out: Vec<ClientSocket> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd == listener_fd {
            continue;
        }
        let Some(inode) = socket_inode(fd) else {
            continue;
        };
        if out.iter().any(|c| c.inode == inode) {
            continue;
        }
        if local_addr(fd).map(|a| a.port()) != Some(port) {
            continue;
        }
        let Some(peer) = peer_addr(fd) else { continue };
        out.push(ClientSocket { fd, inode, peer });
    }
    out
}

/// The inodes of every socket we hold a descriptor for.
pub fn socket_inodes() -> std::collections::HashSet<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()))
        .filter_map(socket_inode)
        .collect()
}

/// A descriptor of ours that refers to socket `inode` right now, if any
/// (tiny_http holds two per connection and closes them at different times,
/// so the one we knew may be gone while its twin is not).
pub fn fd_of_inode(inode: u64) -> Option<RawFd> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()))
        .find(|fd| socket_inode(*fd) == Some(inode))
}

/// Our own descriptor for socket `inode`, duplicated from `fd` and checked:
/// tiny_http closes its descriptors whenever it likes (the read side's as
/// soon as it sees EOF, e.g. right after we shut the read side), so acting
/// on its number risks `EBADF` or, worse, a number already reused by a new
/// connection. A checked duplicate refers to the right socket until we drop
/// it: it is the handle the actions below borrow. None if `fd` no longer
/// refers to that socket.
pub fn dup_socket(fd: RawFd, inode: u64) -> Option<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument and creates a new
    // descriptor (or fails with EBADF); it changes nothing about `fd`.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` is open and was just created for us: nobody else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    (socket_inode(owned.as_raw_fd()) == Some(inode)).then_some(owned)
}

/// The bytes of `struct tcp_info` we need: up to `tcpi_bytes_received`
/// (Linux 4.1). A kernel writes as much of the struct as it knows, at most
/// what we ask for; libc's struct has fields newer than that.
const TCP_INFO_NEEDED: usize = offset_of!(libc::tcp_info, tcpi_bytes_received) + size_of::<u64>();

/// What the kernel knows about a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpSnapshot {
    /// TCP state (1 = ESTABLISHED, 8 = CLOSE_WAIT, ...).
    pub state: u8,
    /// Payload bytes received since the connection opened.
    pub bytes_received: u64,
    /// Bytes received but not yet read by the application.
    pub unread: u64,
    /// Payload bytes the peer has acknowledged since the connection opened.
    pub bytes_acked: u64,
    /// Bytes in the send queue the peer has not acknowledged yet
    /// (`SIOCOUTQ`): sent and in flight, or unsent behind a zero window.
    pub unacked: u64,
}

impl TcpSnapshot {
    /// Bytes the application (tiny_http) has read so far.
    pub fn consumed(&self) -> u64 {
        self.bytes_received.saturating_sub(self.unread)
    }
}

/// `TCP_INFO` of whatever socket `fd` refers to (a probe).
fn tcp_info(fd: RawFd) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is writable memory of `len` bytes; the kernel writes
    // at most `len` bytes and stores how many it wrote in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < TCP_INFO_NEEDED {
        return None;
    }
    Some(info)
}

/// Connections waiting in the accept queue of whatever listening socket
/// `listener_fd` refers to (a probe; for a socket in LISTEN state the
/// kernel reports the queue length as `tcpi_unacked`).
pub fn accept_backlog(listener_fd: RawFd) -> Option<u32> {
    tcp_info(listener_fd)
        .filter(|i| i.tcpi_state == TCP_LISTEN)
        .map(|i| i.tcpi_unacked)
}

/// `TCP_LISTEN` of the kernel's `include/net/tcp_states.h` (libc 0.2
/// defines the TCP states for Hurd only).
const TCP_LISTEN: u8 = 10;

/// What the kernel knows about whatever socket `fd` refers to (a probe).
pub fn tcp_snapshot(fd: RawFd) -> Option<TcpSnapshot> {
    let info = tcp_info(fd)?;
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD stores one int through the pointer, a valid one.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) } != 0 {
        unread = 0;
    }
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) stores one int, as above.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) } != 0 {
        outq = 0;
    }
    Some(TcpSnapshot {
        state: info.tcpi_state,
        bytes_received: info.tcpi_bytes_received,
        unread: unread.max(0) as u64,
        bytes_acked: info.tcpi_bytes_acked,
        unacked: outq.max(0) as u64,
    })
}

fn set_int_opt(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: the option value is a valid int of the length given; `fd`
    // is open for the call (borrowed).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Sets TCP_NODELAY (best effort).
pub fn set_nodelay(fd: BorrowedFd<'_>) {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Fixes the receive buffer (the kernel doubles the value and stops
/// autotuning it).
pub fn set_recv_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    set_int_opt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    );
}

/// Sets `SO_SNDTIMEO`: a blocking send that cannot queue a byte for this
/// long fails with `EAGAIN` (a partial send returns what it queued).
///
/// Set on the listener: Linux copies it to every accepted socket, and unlike
/// `SO_RCVTIMEO` it does not affect `accept()` (which waits on the receive
/// timeout: `SO_RCVTIMEO` on a listener makes an idle `accept()` fail with
/// `EAGAIN`, and tiny_http's accept loop ends for good on its first error,
/// so never set that one there). Both facts are checked in
/// `shared/tests/sys.rs`.
///
/// Nor does the guard set `SO_RCVTIMEO` on each client socket it finds, as
/// a backstop for a connection it finds late: Linux reads the receive
/// timeout when a blocking `recv` starts waiting (`sock_rcvtimeo` in
/// `tcp_recvmsg`), so setting it on a socket whose tiny_http thread is
/// already blocked bounds nothing until that read returns; and when it
/// expires, tiny_http takes the `EAGAIN` for a broken connection and ends
/// it without a word (its 408 arm matches `ErrorKind::TimedOut`; `EAGAIN`
/// is `WouldBlock`), where the header timeout's contract is a 408. The
/// guard bounds a late-found connection by its own rules instead, from
/// the moment it finds it, and its loop never blocks on the accept queue.
///
/// An action that still takes a number: `shared/tests/sys.rs` calls it
/// that way. `Server::start` calls it on the listener it owns at that
/// moment (a `TcpListener` not yet handed to tiny_http).
pub fn set_send_timeout(fd: RawFd, timeout: std::time::Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    // SAFETY: the option value is a valid timeval of the length given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
}

/// `shutdown(2)` of one direction or both; errors (already closed) are ignored.
pub fn shutdown(fd: BorrowedFd<'_>, read: bool, write: bool) {
    let how = match (read, write) {
        (true, true) => libc::SHUT_RDWR,
        (true, false) => libc::SHUT_RD,
        (false, true) => libc::SHUT_WR,
        (false, false) => return,
    };
    // SAFETY: shutdown takes no pointers; `fd` is open for the call.
    unsafe { libc::shutdown(fd.as_raw_fd(), how) };
}

/// Aborts a TCP connection at once: `connect(2)` with an `AF_UNSPEC`
/// address disconnects the socket (the kernel's `tcp_disconnect`), which
/// sends a RST, drops both queues and fails any blocked read with an error.
/// `shutdown(2)` is not enough for a client that is still sending: the
/// kernel stops opening the receive window but keeps the connection alive
/// until the peer's zero-window probes time out, minutes later.
pub fn abort(fd: BorrowedFd<'_>) {
    // SAFETY: sockaddr is plain integers, for which all zeroes is valid.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: `sa` is a valid sockaddr of the length given, only read;
    // `fd` is open for the call.
    unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
}

/// Best-effort, non-blocking send (a final 408/431/503 before closing).
pub fn send_nowait(fd: BorrowedFd<'_>, bytes: &[u8]) {
    // SAFETY: `bytes` is valid for reads of its length; `fd` is open for
    // the call. MSG_DONTWAIT never blocks, MSG_NOSIGNAL avoids SIGPIPE.
    unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// A minimal epoll set; tokens are u64s chosen by the caller.
pub struct Epoll {
    fd: OwnedFd,
}

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const EDGE: u32 = libc::EPOLLET as u32;
pub const HANGUP: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: takes no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and was just created for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches whatever file `fd` refers to now. Takes a number like the
    /// probes: registering changes nothing about that file, and the
    /// registration ends by itself when the file is closed everywhere
    /// (there is no `delete`: a delete by a number that was closed and
    /// reused would remove the registration of the *new* file).
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event the kernel only reads.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1 = forever); returns (token, events) pairs.
    pub fn wait(&self, out: &mut Vec<(u64, u32)>, timeout_ms: i32) {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: `evs` is writable room for the 64 events we allow.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), 64, timeout_ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            let (token, events) = (ev.u64, ev.events);
            out.push((token, events));
        }
    }
}

/// An eventfd to wake the guard thread (stop, drain, a handler's request).
pub struct EventFd {
    file: File,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: takes no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and was just created for us alone.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(EventFd { file })
    }
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
    pub fn notify(&self) {
        // An eventfd takes 8-byte writes; a full counter (EAGAIN) is awake.
        let _ = (&self.file).write(&1u64.to_ne_bytes());
    }
    pub fn drain(&self) {
        // Non-blocking: EAGAIN when there was nothing to read.
        let _ = (&self.file).read(&mut [0u8; 8]);
    }
}

/// A signal for every connection the kernel queues on a listener, read
/// through a signalfd the guard thread can wait on with epoll.
///
/// Why: epoll re-checks a file's readiness before it reports it, so when
/// tiny_http's accept thread empties the accept queue first, the listener's
/// wake-up is silently dropped; that lost about half of the first connections
/// after a quiet spell, and such a connection went unwatched until the next
/// rescan (a client sent a 64 MiB header meanwhile). A queued signal is not
/// re-checked. `O_ASYNC` with `F_SETOWN_EX`/`F_OWNER_TID` sends `SIGIO` to the
/// thread that armed it, which blocks `SIGIO` (so it never takes the default
/// action) and reads it from the signalfd. Standard signals coalesce: one
/// pending `SIGIO` may stand for many connections, which is all a rescan needs.
pub struct AcceptSignal {
    signals: File,
    listener_fd: RawFd,
    listener_inode: u64,
}

/// `F_SETOWN_EX`, `F_OWNER_TID` and `struct f_owner_ex` of the kernel's
/// `include/uapi/asm-generic/fcntl.h` (the same on every architecture we
/// build for); libc 0.2 defines them for Linux on hexagon only.
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

impl AcceptSignal {
    /// Arms the listener (`listener_fd`, socket `listener_inode`): through a
    /// checked duplicate, since owner and `O_ASYNC` belong to the open file
    /// both descriptors share, and the duplicate is dropped before this
    /// returns (holding it would keep the listener open after tiny_http
    /// closes it). Call on the thread that will read the signalfd: `SIGIO`
    /// is blocked on it and directed to it.
    pub fn arm(listener_fd: RawFd, listener_inode: u64) -> io::Result<AcceptSignal> {
        let listener = dup_socket(listener_fd, listener_inode)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: sigset operations on a local, zero-initialised sigset_t;
        // pthread_sigmask affects only the calling thread; signalfd reads
        // the set and returns a new descriptor or -1.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGIO);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and was just created for us alone.
        let signals = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let armed = AcceptSignal {
            signals,
            listener_fd,
            listener_inode,
        };
        let l = listener.as_raw_fd();
        // SAFETY: gettid takes no arguments; the fcntl calls take a valid
        // f_owner_ex (only read) or plain ints, on our duplicate (open).
        unsafe {
            let owner = FOwnerEx {
                kind: F_OWNER_TID,
                pid: libc::syscall(libc::SYS_gettid) as libc::pid_t,
            };
            // The owner first: O_ASYNC without an owner would signal nobody,
            // but never the whole process.
            if libc::fcntl(l, F_SETOWN_EX, &owner) < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::fcntl(l, libc::F_GETFL);
            if flags < 0 || libc::fcntl(l, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(armed)
    }

    pub fn fd(&self) -> RawFd {
        self.signals.as_raw_fd()
    }

    /// Reads every pending signal (non-blocking).
    pub fn drain(&self) {
        // Room for one struct signalfd_siginfo (128 bytes) per read.
        let mut info = [0u8; 128];
        while (&self.signals).read(&mut info).is_ok_and(|n| n > 0) {}
    }
}

impl Drop for AcceptSignal {
    /// Disarms the listener, so that no `SIGIO` goes to a thread id the
    /// kernel may hand to another thread (which would not block it) once the
    /// armed thread is gone. Skipped when the descriptor no longer is our
    /// listener.
    fn drop(&mut self) {
        if let Some(listener) = dup_socket(self.listener_fd, self.listener_inode) {
            let l = listener.as_raw_fd();
            // SAFETY: fcntl with plain int arguments on our duplicate (open).
            unsafe {
                let flags = libc::fcntl(l, libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(l, libc::F_SETFL, flags & !libc::O_ASYNC);
                }
            }
        }
    }
}

/// Makes `cmd`'s child start under an open-files limit of `soft`/`hard`
/// (the integration tests run the services under small limits, so results
/// do not depend on the machine's). Test-only: built with feature `testing`.
#[cfg(feature = "testing")]
pub fn limit_child_open_files(cmd: &mut std::process::Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit(2), which is async-signal-safe and allocates nothing; `lim`
    // is a plain value copied into the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
