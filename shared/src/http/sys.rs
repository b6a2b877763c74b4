//! The few Linux system calls the connection guard needs, wrapped safely.
//!
//! Everything here works on file descriptors the guard does not own: tiny_http
//! owns the client sockets. The guard only *looks* at them (fstat,
//! getsockname, getpeername, TCP_INFO, FIONREAD) and may `shutdown(2)` one,
//! which ends tiny_http's blocking read at once without closing the fd under
//! its feet. Descriptors are identified by (fd, inode) and the inode is
//! re-checked right before acting, so a number reused for another file is
//! never touched.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Raises the soft open-files limit to the hard limit (as Go's runtime does)
/// and returns the new soft limit. A default soft limit of 1024 would let a
/// burst of connections hit EMFILE, and EMFILE from accept ends tiny_http's
/// accept loop for good.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: valid pointer to an rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// The inode of whatever `fd` refers to, if it is a socket.
pub fn socket_inode(fd: RawFd) -> Option<u64> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a stat into valid memory.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    ((st.st_mode & libc::S_IFMT) == libc::S_IFSOCK).then_some(st.st_ino)
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
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
    // SAFETY: buffer and length are valid.
    if unsafe { f(fd, ss.as_mut_ptr() as *mut libc::sockaddr, &mut len) } != 0 {
        return None;
    }
    // SAFETY: zero-initialised and filled by the kernel.
    sockaddr_to_std(unsafe { ss.assume_init_ref() })
}

pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getsockname)
}

pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getpeername)
}

/// An accepted client socket of ours, as found in /proc/self/fd.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket {
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
/// it. None if `fd` no longer refers to that socket.
pub fn dup_socket(fd: RawFd, inode: u64) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor (or fails); on
    // success we are its only owner.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` was just created for us and is owned by nobody else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
    (socket_inode(dup) == Some(inode)).then_some(owned)
}

/// The prefix of the kernel's `struct tcp_info` we read (Linux ABI, stable
/// since 4.1 for the fields up to `tcpi_bytes_received`).
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    u32s: [u32; 24],
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
}

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

fn tcp_info(fd: RawFd) -> Option<TcpInfo> {
    let mut info = TcpInfo::default();
    let mut len = size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: buffer and length are valid; the kernel writes at most len bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut TcpInfo as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || (len as usize) < size_of::<TcpInfo>() {
        return None;
    }
    Some(info)
}

/// Connections waiting in a listening socket's accept queue (for a socket
/// in LISTEN state the kernel reports the queue length as `tcpi_unacked`).
pub fn accept_backlog(listener_fd: RawFd) -> Option<u32> {
    tcp_info(listener_fd)
        .filter(|i| i.state == TCP_LISTEN)
        .map(|i| i.u32s[4])
}

const TCP_LISTEN: u8 = 10;

pub fn tcp_snapshot(fd: RawFd) -> Option<TcpSnapshot> {
    let info = tcp_info(fd)?;
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) } != 0 {
        unread = 0;
    }
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) } != 0 {
        outq = 0;
    }
    Some(TcpSnapshot {
        state: info.state,
        bytes_received: info.bytes_received,
        unread: unread.max(0) as u64,
        bytes_acked: info.bytes_acked,
        unacked: outq.max(0) as u64,
    })
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Sets TCP_NODELAY (best effort).
pub fn set_nodelay(fd: RawFd) {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Fixes the receive buffer (the kernel doubles the value and stops
/// autotuning it).
pub fn set_recv_buffer(fd: RawFd, bytes: usize) {
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
pub fn set_send_timeout(fd: RawFd, timeout: std::time::Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    // SAFETY: valid timeval pointer and length.
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
pub fn shutdown(fd: RawFd, read: bool, write: bool) {
    let how = match (read, write) {
        (true, true) => libc::SHUT_RDWR,
        (true, false) => libc::SHUT_RD,
        (false, true) => libc::SHUT_WR,
        (false, false) => return,
    };
    // SAFETY: shutdown on an fd has no memory effects.
    unsafe { libc::shutdown(fd, how) };
}

/// Aborts a TCP connection at once: `connect(2)` with an `AF_UNSPEC`
/// address disconnects the socket (the kernel's `tcp_disconnect`), which
/// sends a RST, drops both queues and fails any blocked read with an error.
/// `shutdown(2)` is not enough for a client that is still sending: the
/// kernel stops opening the receive window but keeps the connection alive
/// until the peer's zero-window probes time out, minutes later.
pub fn abort(fd: RawFd) {
    let mut sa = MaybeUninit::<libc::sockaddr>::zeroed();
    // SAFETY: zeroed sockaddr with family AF_UNSPEC; length is its size.
    unsafe {
        (*sa.as_mut_ptr()).sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        libc::connect(
            fd,
            sa.as_ptr(),
            size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Best-effort, non-blocking send (a final 408/431/503 before closing).
pub fn send_nowait(fd: RawFd, bytes: &[u8]) {
    // SAFETY: valid buffer; MSG_DONTWAIT never blocks, MSG_NOSIGNAL avoids SIGPIPE.
    unsafe {
        libc::send(
            fd,
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
}

/// A minimal epoll set; tokens are u64s chosen by the caller.
pub struct Epoll {
    fd: RawFd,
}

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const EDGE: u32 = libc::EPOLLET as u32;
pub const HANGUP: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid event pointer.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: valid event pointer (ignored by the kernel for DEL).
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` (-1 = forever); returns (token, events) pairs.
    pub fn wait(&self, out: &mut Vec<(u64, u32)>, timeout_ms: i32) {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: buffer of 64 events.
        let n = unsafe { libc::epoll_wait(self.fd, evs.as_mut_ptr(), 64, timeout_ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            let (token, events) = (ev.u64, ev.events);
            out.push((token, events));
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.fd) };
    }
}

/// An eventfd to wake the guard thread (stop, drain, a handler's request).
pub struct EventFd {
    fd: RawFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd { fd })
    }
    pub fn fd(&self) -> RawFd {
        self.fd
    }
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd, &one as *const u64 as *const libc::c_void, 8) };
    }
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; non-blocking.
        unsafe { libc::read(self.fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.fd) };
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
    fd: RawFd,
    listener_fd: RawFd,
    listener_inode: Option<u64>,
}

/// `F_SETOWN_EX` and `F_OWNER_TID` (Linux ABI; the libc crate lacks them on musl).
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

impl AcceptSignal {
    /// Arms `listener_fd`. Call on the thread that will read the signalfd:
    /// `SIGIO` is blocked on it and directed to it.
    pub fn arm(listener_fd: RawFd) -> io::Result<AcceptSignal> {
        // SAFETY: sigset operations on a local, zero-initialised sigset_t;
        // pthread_sigmask affects only the calling thread.
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
        let armed = AcceptSignal {
            fd,
            listener_fd,
            listener_inode: socket_inode(listener_fd),
        };
        // SAFETY: gettid has no arguments; the fcntl calls take a valid
        // f_owner_ex and plain flags on a descriptor we were handed.
        unsafe {
            let owner = FOwnerEx {
                kind: F_OWNER_TID,
                pid: libc::syscall(libc::SYS_gettid) as libc::pid_t,
            };
            // The owner first: O_ASYNC without an owner would signal nobody,
            // but never the whole process.
            if libc::fcntl(listener_fd, F_SETOWN_EX, &owner) < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::fcntl(listener_fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(listener_fd, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(armed)
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Reads every pending signal (non-blocking).
    pub fn drain(&self) {
        let mut info = [0u8; 128]; // one struct signalfd_siginfo
                                   // SAFETY: reads at most 128 bytes into a 128-byte buffer.
        while unsafe { libc::read(self.fd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
    }
}

impl Drop for AcceptSignal {
    /// Disarms the listener, so that no `SIGIO` goes to a thread id the
    /// kernel may hand to another thread (which would not block it) once the
    /// armed thread is gone. Skipped when the descriptor no longer is our
    /// listener.
    fn drop(&mut self) {
        if self.listener_inode.is_some() && socket_inode(self.listener_fd) == self.listener_inode {
            // SAFETY: plain fcntl calls on our listener's descriptor.
            unsafe {
                let flags = libc::fcntl(self.listener_fd, libc::F_GETFL);
                if flags >= 0 {
                    libc::fcntl(self.listener_fd, libc::F_SETFL, flags & !libc::O_ASYNC);
                }
            }
        }
        // SAFETY: we own this fd.
        unsafe { libc::close(self.fd) };
    }
}
