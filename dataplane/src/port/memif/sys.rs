//! The system calls of the memif driver that std does not wrap: memory
//! files (`memfd_create`, file seals), eventfds, a nested epoll per
//! queue, and Unix `SOCK_SEQPACKET` sockets with `SCM_RIGHTS` descriptor
//! passing. With [`abi`](super::abi)'s `Plain` impls, this is the only
//! module of the driver with `unsafe`; regions are mapped as
//! [`SharedMemory`](crate::port::shm::SharedMemory), the ports' one
//! bounds-checked way to touch memory shared with a peer.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::port::sys::{self as port_sys, check, owned};

/// `memfd_create(2)` with sealing allowed and close-on-exec, on hugepages
/// when `hugetlb`.
pub fn memfd_create(name: &CStr, hugetlb: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if hugetlb {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// Adds `seals` (`F_SEAL_*`) to a memory file.
pub fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl on a descriptor the borrow keeps open.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The seals of a memory file; an error (`EINVAL`) when the file cannot
/// carry seals at all.
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: plain fcntl on a descriptor the borrow keeps open.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

/// `HUGETLBFS_MAGIC` (<linux/magic.h>): the filesystem of huge page
/// files, `MFD_HUGETLB` memfds included.
const HUGETLBFS_MAGIC: libc::c_long = 0x9584_58f6;

/// Whether `fd` is a file on hugetlbfs.
pub fn is_hugetlbfs(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: `statfs` is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs; the borrow keeps `fd`
    // open for the call.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as libc::c_long == HUGETLBFS_MAGIC)
}

/// Sets `O_NONBLOCK` on a descriptor (the open file description, which
/// a peer that passed it to us shares).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a descriptor the borrow keeps open.
    unsafe {
        let flags = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        check(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
    }
    Ok(())
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    Ok(owned(fd))
}

// -------------------------------------------------------------------- epoll

/// An epoll instance used as a *level-triggered readiness aggregate*: the
/// workers' own epoll watches its descriptor, which turns readable while
/// any descriptor registered here is.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll(owned(fd)))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Whether anything watched is readable now.
    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        use std::os::fd::AsFd;
        poll_readable(&[self.0.as_fd()], Some(Duration::ZERO)).is_ok_and(|r| r[0])
    }

    /// Watches `fd` for input.
    pub fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd.as_raw_fd() as u64,
        };
        // SAFETY: `ev` is a valid epoll_event that the kernel copies; the
        // borrow keeps `fd` open for the call.
        check(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        })
        .map(drop)
    }

    /// Stops watching `fd`; not watching it is not an error.
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`.
        unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
    }
}

// --------------------------------------------------------------------- poll

/// Waits until one of `fds` (each watched for input) is readable or hung
/// up, or `timeout` passes (`None`: forever). Returns one flag per
/// descriptor. `EINTR` counts as "nothing happened".
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        // Round up so a short timeout is not a busy loop.
        let ms = t.as_micros().div_ceil(1000);
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    });
    // SAFETY: `pfds` holds `pfds.len()` valid entries, as we tell the
    // kernel; the borrows keep every descriptor open for the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

// ------------------------------------------------------------------ sockets

/// A Unix socket address: a filesystem path, or a name in the abstract
/// namespace (Linux), given without its leading NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixAddr<'a> {
    Path(&'a [u8]),
    Abstract(&'a [u8]),
}

/// Bytes of `sun_path`.
const SUN_PATH_LEN: usize = 108;

/// The `sockaddr_un` for `addr` and its length.
fn sockaddr(addr: &UnixAddr<'_>) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    // SAFETY: `sockaddr_un` is plain data; all zeroes is a valid value.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, lead) = match addr {
        UnixAddr::Path(p) => (*p, 0),
        UnixAddr::Abstract(n) => (*n, 1),
    };
    if bytes.is_empty() {
        return Err(invalid("empty socket address"));
    }
    if bytes.contains(&0) && lead == 0 {
        return Err(invalid("socket path contains NUL"));
    }
    // A path needs its terminating NUL; an abstract name its leading one.
    if bytes.len() + 1 > SUN_PATH_LEN {
        return Err(invalid("socket address longer than 107 bytes"));
    }
    for (dst, &src) in sun.sun_path[lead..].iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let path_offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = match addr {
        // The kernel finds the NUL; pass the whole structure as most do.
        UnixAddr::Path(_) => size_of::<libc::sockaddr_un>(),
        // Abstract names are exactly as long as the length says.
        UnixAddr::Abstract(n) => path_offset + 1 + n.len(),
    };
    Ok((sun, len as libc::socklen_t))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    port_sys::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK, 0)
}

/// A non-blocking `SOCK_SEQPACKET` socket listening on `addr`.
pub fn listen(addr: &UnixAddr<'_>, backlog: libc::c_int) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (sun, len) = sockaddr(addr)?;
    // SAFETY: `sun` is a valid sockaddr_un of `len` bytes.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    // SAFETY: plain syscall on our socket.
    check(unsafe { libc::listen(sock.as_raw_fd(), backlog) })?;
    Ok(sock)
}

/// Connects a non-blocking `SOCK_SEQPACKET` socket to `addr`. A Unix
/// connect completes at once or fails (`EAGAIN` when the listener's
/// backlog is full).
pub fn connect(addr: &UnixAddr<'_>) -> io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (sun, len) = sockaddr(addr)?;
    // SAFETY: `sun` is a valid sockaddr_un of `len` bytes.
    check(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(sock)
}

/// Accepts one pending connection, non-blocking and close-on-exec;
/// `None` when there is none.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    // SAFETY: null address pointers are allowed (we do not want the
    // peer's address); the result is checked.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    match check(fd) {
        Ok(fd) => Ok(Some(owned(fd))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// The process id at the other end of a connected Unix socket.
pub fn peer_pid(sock: BorrowedFd<'_>) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` has room for `len` bytes, as we tell the kernel.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.pid as u32)
}

/// Most descriptors one received message may carry before we call it
/// truncated; memif messages carry at most one.
const MAX_FDS: usize = 4;
/// Control buffer for `MAX_FDS` descriptors, 8-byte aligned as `cmsghdr`
/// requires.
type CmsgBuf = [u64; 8];
const _: () = assert!(size_of::<CmsgBuf>() >= cmsg_space_for_fds(MAX_FDS));

const fn cmsg_space_for_fds(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument only.
    unsafe { libc::CMSG_SPACE((n * size_of::<libc::c_int>()) as libc::c_uint) as usize }
}

/// Sends one message, with `fd` attached (`SCM_RIGHTS`) when given. Never
/// raises `SIGPIPE`; never blocks (a full socket is an error).
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cmsg: CmsgBuf = [0; 8];
    // SAFETY: `msghdr` is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let space = cmsg_space_for_fds(1);
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is aligned, zeroed and `space` bytes
        // long, enough for one header with one descriptor, so the first
        // header and its data area lie inside it.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as libc::c_uint) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<libc::c_int>(), fd.as_raw_fd());
        }
    }
    // SAFETY: `msg` points at `iov` and `cmsg`, both alive for the call;
    // the kernel only reads them (and `bytes`).
    let sent = unsafe {
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// What one `recvmsg` brought.
#[derive(Debug)]
pub struct Received {
    /// Bytes of the message; 0 is end of stream.
    pub len: usize,
    /// The message did not fit the buffer (rest discarded by the kernel).
    pub truncated: bool,
    /// Descriptors that came with it; the control data was cut short when
    /// more came than we accept.
    pub fds: Vec<OwnedFd>,
    pub fds_truncated: bool,
}

/// Receives one message into `buf` without blocking (`WouldBlock` when
/// there is none). Received descriptors are close-on-exec and owned by
/// the result, so none can leak whatever the message turns out to be.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg = MaybeUninit::<CmsgBuf>::zeroed();
    // SAFETY: `msghdr` is plain data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<CmsgBuf>() as _;
    // SAFETY: `msg` describes `buf` and the control buffer, both writable
    // and alive for the call, with their true lengths.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_controllen` bytes of the control
    // buffer with well-formed headers; the CMSG_* walk stays inside it.
    // Each SCM_RIGHTS payload is an array of descriptors now installed in
    // our table, which we take ownership of exactly once.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr);
                let header = data.offset_from(hdr.cast::<u8>()) as usize;
                let count =
                    ((*hdr).cmsg_len as usize).saturating_sub(header) / size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                    if fd >= 0 {
                        fds.push(owned(fd));
                    }
                }
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    Ok(Received {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::shm::SharedMemory;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    #[test]
    fn shared_memory_reads_what_another_mapping_writes() {
        let fd = memfd_create(c"caracal-test", false).unwrap();
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        let a = SharedMemory::map(fd.as_fd(), 4096, 4096).unwrap();
        let b = SharedMemory::map(fd.as_fd(), 4096, 4096).unwrap();
        a.store_u16(6, 0xbeef, Ordering::Release);
        assert_eq!(b.load_u16(6, Ordering::Acquire), 0xbeef);
        a.write::<u32>(8, 0x1234_5678);
        assert_eq!(b.read::<u32>(8), 0x1234_5678);
        a.copy_in(4090, &[1, 2, 3, 4, 5, 6]);
        let mut out = [0u8; 6];
        b.copy_out(4090, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        assert!(a.contains(0, 4096) && !a.contains(1, 4096) && !a.contains(usize::MAX, 2));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn shared_memory_refuses_out_of_bounds_access() {
        let fd = memfd_create(c"caracal-test", false).unwrap();
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        let m = SharedMemory::map(fd.as_fd(), 4096, 4096).unwrap();
        let mut out = [0u8; 2];
        m.copy_out(4095, &mut out);
    }

    #[test]
    fn seals_stick() {
        let fd = memfd_create(c"caracal-test", false).unwrap();
        add_seals(fd.as_fd(), libc::F_SEAL_SHRINK).unwrap();
        assert_ne!(seals(fd.as_fd()).unwrap() & libc::F_SEAL_SHRINK, 0);
        let pipe = eventfd().unwrap();
        assert!(seals(pipe.as_fd()).is_err(), "an eventfd carries no seals");
    }

    #[test]
    fn seqpacket_carries_messages_and_descriptors() {
        let name = format!("caracal-sys-test-{}", std::process::id());
        let addr = UnixAddr::Abstract(name.as_bytes());
        let listener = listen(&addr, 4).unwrap();
        assert!(accept(listener.as_fd()).unwrap().is_none());
        let client = connect(&addr).unwrap();
        let server = accept(listener.as_fd())
            .unwrap()
            .expect("pending connection");
        assert_eq!(peer_pid(server.as_fd()), Some(std::process::id()));

        let ev = eventfd().unwrap();
        send(client.as_fd(), &[7u8; 128], Some(ev.as_fd())).unwrap();
        send(client.as_fd(), &[9u8; 200], None).unwrap();
        let mut buf = [0u8; 128];
        let r = recv(server.as_fd(), &mut buf).unwrap();
        assert_eq!((r.len, r.truncated, r.fds.len()), (128, false, 1));
        assert_eq!(buf, [7u8; 128]);
        // The received descriptor is the same eventfd.
        File::from(r.fds.into_iter().next().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        let mut count = [0u8; 8];
        File::from(ev).read_exact(&mut count).unwrap();
        assert_eq!(u64::from_ne_bytes(count), 1);

        let r = recv(server.as_fd(), &mut buf).unwrap();
        assert!(r.truncated, "a 200-byte message does not fit 128");
        let e = recv(server.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(client);
        assert_eq!(recv(server.as_fd(), &mut buf).unwrap().len, 0, "EOF");
    }

    #[test]
    fn poll_reports_readable_descriptors() {
        let a = eventfd().unwrap();
        let b = eventfd().unwrap();
        let ready = poll_readable(&[a.as_fd(), b.as_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, [false, false]);
        File::from(b.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        let ready = poll_readable(&[a.as_fd(), b.as_fd()], Some(Duration::ZERO)).unwrap();
        assert_eq!(ready, [false, true]);

        // A nested epoll turns readable with what it watches.
        let ep = Epoll::new().unwrap();
        ep.add(a.as_fd()).unwrap();
        assert!(!ep.is_ready());
        File::from(a.try_clone().unwrap())
            .write_all(&1u64.to_ne_bytes())
            .unwrap();
        assert!(ep.is_ready());
        ep.remove(a.as_fd());
        assert!(!ep.is_ready());
    }

    #[test]
    fn socket_addresses_are_bounded() {
        assert!(sockaddr(&UnixAddr::Path(b"")).is_err());
        assert!(sockaddr(&UnixAddr::Path(&[b'a'; 108])).is_err());
        assert!(sockaddr(&UnixAddr::Path(&[b'a'; 107])).is_ok());
        assert!(sockaddr(&UnixAddr::Path(b"a\0b")).is_err());
        let (sun, len) = sockaddr(&UnixAddr::Abstract(b"x")).unwrap();
        assert_eq!(sun.sun_path[0], 0);
        assert_eq!(sun.sun_path[1], b'x' as libc::c_char);
        assert_eq!(
            len as usize,
            std::mem::offset_of!(libc::sockaddr_un, sun_path) + 2
        );
    }
}
