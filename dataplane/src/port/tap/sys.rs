//! The system calls of the tap driver that std does not wrap: entering a
//! network namespace (`setns`), attaching a queue to a multi-queue tap
//! (`TUNSETIFF`), and asking a tap for its MAC address (`SIOCGIFHWADDR`;
//! its ifindex comes from the ports' shared `sys`). This is the only module of the driver with `unsafe`;
//! reads and writes on a queue go through `std::fs::File`, which needs none.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::port::sys::ifreq;

/// The tun/tap clone device: every open of it is a fresh, unattached queue.
const TUN_DEVICE: &str = "/dev/net/tun";

/// `ARPHRD_ETHER` (<linux/if_arp.h>): the hardware type a tap reports.
const ARPHRD_ETHER: libc::sa_family_t = 1;

/// Moves the calling thread into the network namespace `ns` refers to.
/// Sockets and tap queues the thread opens afterwards belong to that
/// namespace for their whole life, whichever thread uses them later.
pub(super) fn enter_netns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `setns` only reads the descriptor and the flag; the borrow
    // keeps the descriptor open for the call. It changes nothing but the
    // calling thread's namespace, which is what the caller asks for.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens the clone device: a tap queue not yet attached to any device,
/// non-blocking and close-on-exec (std sets `O_CLOEXEC` on every open), in
/// the calling thread's network namespace.
pub(super) fn open_tun() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_DEVICE)
}

/// Attaches `queue` (fresh from [`open_tun`]) to the multi-queue tap
/// `ifname`: `IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE`, so frames are plain
/// Ethernet with no packet-info prefix. With `create_only`, `IFF_TUN_EXCL`
/// makes the kernel fail with `EBUSY` instead of attaching to a device of
/// that name that already exists, so the first queue always creates the
/// device and never joins someone else's.
pub(super) fn attach_tap_queue(queue: &File, ifname: &str, create_only: bool) -> io::Result<()> {
    let mut req = ifreq(ifname)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if create_only {
        flags |= libc::IFF_TUN_EXCL;
    }
    // `ifr_flags` is a C short; the tun flags all fit in its 16 bits.
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: `queue` is an open descriptor of the tun clone device and
    // `req` a properly initialised `struct ifreq` that outlives the call;
    // TUNSETIFF reads it and writes the chosen name back into it.
    let rc = unsafe {
        libc::ioctl(
            queue.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The MAC address of the tap `queue` is attached to, as the kernel (and
/// so the pod) uses it.
pub(super) fn hw_addr(queue: &File, ifname: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq(ifname)?;
    // SAFETY: `queue` is an attached tap queue, whose ioctl handler answers
    // SIOCGIFHWADDR for its own device by filling `req`, a valid
    // `struct ifreq` that outlives the call.
    let rc = unsafe {
        libc::ioctl(
            queue.as_raw_fd(),
            libc::SIOCGIFHWADDR as _,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel wrote the `ifru_hwaddr` member of the
    // union; any bit pattern is a valid `sockaddr` (integers only).
    let hwaddr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hwaddr.sa_family != ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("hardware type {} is not Ethernet", hwaddr.sa_family),
        ));
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(&hwaddr.sa_data) {
        *dst = src as u8;
    }
    Ok(mac)
}
