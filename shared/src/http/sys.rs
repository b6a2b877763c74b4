//! The few Linux system calls the serving layer needs, wrapped safely: the
//! only module of the workspace with `unsafe` code (every other module of
//! `orion_shared`, and both service crates, forbid it). Each `unsafe` block
//! carries a `SAFETY:` comment; constants and structs come from `libc`.
//!
//! Every descriptor here is the front's own (its listener, its clients'
//! sockets, its epoll and eventfd) and is passed as a `BorrowedFd` or held
//! as an `OwnedFd`: nothing acts on a number that another owner may have
//! closed and reused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::{size_of, MaybeUninit};
use std::net::{
    Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Raises the soft open-files limit to the hard limit (as Go's runtime does)
/// and returns the new soft limit. A default soft limit of 1024 would make a
/// cap of 1,000 connections fail with EMFILE long before it is reached.
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

/// Fixes the send buffer (doubled by the kernel, no longer autotuned).
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) {
    set_int_opt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        bytes.min(i32::MAX as usize) as libc::c_int,
    );
}

/// `listen(2)` again on a bound listener, with another backlog: Linux
/// takes the new length for a socket already listening (std's `bind` uses
/// 128). The kernel caps it at `net.core.somaxconn`.
pub fn set_backlog(listener: &TcpListener, backlog: u32) -> io::Result<()> {
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: listen takes no pointers; the listener is open (borrowed).
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `accept4(2)` of one pending connection, non-blocking and close-on-exec
/// from the start (one system call instead of accept + fcntl).
pub fn accept(listener: &TcpListener) -> io::Result<(TcpStream, Option<SocketAddr>)> {
    let mut ss = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is writable storage of `len` bytes, of which the kernel
    // writes at most `len`; the listener is open (borrowed).
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            ss.as_mut_ptr() as *mut libc::sockaddr,
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: zero-initialised (a valid sockaddr_storage) before the call.
    Ok((stream, sockaddr_to_std(unsafe { ss.assume_init_ref() })))
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
/// sends a RST and drops both queues. `shutdown(2)` is not enough for a
/// client that is still sending: the kernel stops opening the receive
/// window but keeps the connection alive until the peer's zero-window
/// probes time out, minutes later.
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

/// Best-effort, non-blocking send (a final 431 before a reset).
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
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
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

    /// Watches `fd` for `events` under `token`. The registration ends by
    /// itself when the socket is closed (its only descriptor is ours).
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event the kernel only reads; both
        // descriptors are open for the call.
        if unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (before it is kept open but no longer wanted,
    /// e.g. a listener that backs off).
    pub fn delete(&self, fd: BorrowedFd<'_>) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a descriptor not registered gives ENOENT.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
    }

    /// Waits up to `timeout_ms` (-1 = forever); returns (token, events) pairs.
    pub fn wait(&self, out: &mut Vec<(u64, u32)>, timeout_ms: i32) {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: `evs` is writable room for the 256 events we allow.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), 256, timeout_ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            let (token, events) = (ev.u64, ev.events);
            out.push((token, events));
        }
    }
}

/// An eventfd to wake the front's thread (a command from the server).
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
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
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

/// Sets the soft open-files limit of the running process `pid` (keeping its
/// hard limit), as `prlimit --pid` does: the tests lower it under what the
/// process has open to make its `accept` fail with EMFILE, then raise it
/// again (the services never call it).
pub fn set_open_files_soft_limit_of(pid: u32, soft: u64) -> io::Result<()> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit; a null new limit only reads.
    if unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let new = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit the call only reads; the old one is
    // not asked for.
    if unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to `addr` from `local` (with `SO_REUSEADDR`, so a port whose
/// last connection is in TIME_WAIT can be taken again at once): what a
/// client, a proxy's pool or a load tester does when it reuses ports. The
/// tests use it to reconnect from the port a closed connection had; the
/// services never call it.
pub fn connect_from(local: SocketAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let (family, local_ss, local_len) = sockaddr_of(local);
    let (_, remote_ss, remote_len) = sockaddr_of(addr);
    // SAFETY: takes no pointers; returns a new descriptor or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(sock.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    // SAFETY: the sockaddrs are valid for the lengths given and only read;
    // `sock` is open.
    unsafe {
        if libc::bind(
            sock.as_raw_fd(),
            &local_ss as *const _ as *const libc::sockaddr,
            local_len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::connect(
            sock.as_raw_fd(),
            &remote_ss as *const _ as *const libc::sockaddr,
            remote_len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(TcpStream::from(sock))
}

/// `addr` as a `sockaddr_storage` of the family and length the kernel wants.
fn sockaddr_of(addr: SocketAddr) -> (libc::c_int, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain integers; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: storage is larger than and as aligned as a sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            (
                libc::AF_INET,
                ss,
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            (
                libc::AF_INET6,
                ss,
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}
