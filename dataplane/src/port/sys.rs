//! System call shapes the port drivers share: error and descriptor
//! wrapping, socket options of plain-data values, binding to a socket
//! address, the empty `sendto` that flushes a kernel tx ring (AF_PACKET,
//! AF_XDP), and interface lookups: the ifindex and the `ifreq` of
//! interface ioctls (tap, AF_PACKET, AF_XDP). Each driver's own `sys` module keeps what is
//! particular to it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Turns a `-1` return into the thread's `errno`.
pub(in crate::port) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Wraps a descriptor a successful syscall just returned.
pub(in crate::port) fn owned(fd: libc::c_int) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: callers pass a descriptor the kernel just created for us and
    // that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A close-on-exec socket of `domain`, `kind` (`SOCK_*`, with any more
/// flags) and `protocol`.
pub(in crate::port) fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = check(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) })?;
    Ok(owned(fd))
}

/// `setsockopt(level, opt)` with a plain-data value.
///
/// `T` must be the C type the option expects (an int, a `tpacket_req`,
/// an `xdp_umem_reg`...): the kernel copies `size_of::<T>()` bytes.
pub(in crate::port) fn setsockopt<T: Copy>(
    sock: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points at `size_of::<T>()` readable bytes that
    // outlive the call; the kernel copies them.
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Binds `sock` to `addr`, a `sockaddr_*` of its family.
pub(in crate::port) fn bind<A: Copy>(sock: BorrowedFd<'_>, addr: &A) -> io::Result<()> {
    // SAFETY: `addr` is a valid socket address of the length we pass,
    // which the kernel only reads.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (addr as *const A).cast(),
            size_of::<A>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// An empty, non-blocking `sendto` without an address: how a kernel tx
/// ring (AF_PACKET, AF_XDP) is asked to send what is on it.
pub(in crate::port) fn flush_tx(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a null buffer of length 0 and no address; nothing is read
    // through the pointers.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `ifreq` naming `ifname`, every other byte zero; an error for a name
/// the kernel would truncate or cannot hold.
pub(in crate::port) fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `ifreq` is plain old data (byte arrays, integers and a raw
    // pointer inside a union); all zeroes is a valid value of each.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The ifindex of `ifname` in the calling thread's network namespace.
pub(in crate::port) fn ifindex(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the
    // call; `if_nametoindex` only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_holds_the_name_nul_terminated() {
        let req = ifreq("eth0").unwrap();
        let name: Vec<u8> = req.ifr_name.iter().map(|&c| c as u8).collect();
        assert_eq!(&name[..5], b"eth0\0");
        assert!(name[5..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ifreq_refuses_names_the_kernel_would_truncate() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-of-16-chr").is_err());
        assert!(ifreq("a-name-of-15chr").is_ok());
        assert!(ifreq("nul\0inside").is_err());
    }

    #[test]
    fn ifindex_of_a_missing_interface_is_an_error() {
        assert!(ifindex("caracal-none0").is_err());
    }
}
