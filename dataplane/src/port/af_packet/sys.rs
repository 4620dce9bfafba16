//! The system calls of the AF_PACKET driver: packet sockets, their ring
//! options (`PACKET_VERSION`, `PACKET_RX_RING`/`PACKET_TX_RING`,
//! `PACKET_QDISC_BYPASS`, `PACKET_IGNORE_OUTGOING`), binding to an
//! interface, the ring mapping, the tx kick, and interface queries. This
//! is the only module of the driver with `unsafe`.
//!
//! [`RingMemory`] is the one way to touch a ring the kernel shares with
//! us. As memif's shared memory, it never hands out a Rust reference into
//! the mapping: status words are atomics (the kernel's ownership
//! protocol), everything else is a volatile load or a raw copy at an
//! offset checked against the mapping first.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `ETH_P_ALL` (<linux/if_ether.h>): every protocol, in network order for
/// `socket()` and `sockaddr_ll`.
pub(super) const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

/// `TPACKET_V2` and `TPACKET_V3` (<linux/if_packet.h>, `enum
/// tpacket_versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TpacketVersion {
    V2 = 1,
    V3 = 2,
}

/// Turns a `-1` return into the thread's `errno`.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A raw, close-on-exec, non-blocking packet socket for `protocol`
/// (network order; 0 receives nothing, which is what a tx-only socket
/// wants).
pub(in crate::port) fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::c_int::from(protocol),
        )
    })?;
    // SAFETY: a descriptor the kernel just created and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(SOL_PACKET, opt)` with a plain-data value.
fn set_packet_opt<T: Copy>(sock: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at `size_of::<T>()` readable bytes that
    // outlive the call; the kernel copies them. Callers pass the C type
    // the option expects (an int or a `tpacket_req`/`tpacket_req3`).
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(super) fn set_version(sock: BorrowedFd<'_>, v: TpacketVersion) -> io::Result<()> {
    set_packet_opt(sock, libc::PACKET_VERSION, &(v as libc::c_int))
}

/// Sends straight to the driver, skipping the qdisc layer (and the
/// taps that would see our frames).
pub(super) fn set_qdisc_bypass(sock: BorrowedFd<'_>) -> io::Result<()> {
    set_packet_opt(sock, libc::PACKET_QDISC_BYPASS, &(1 as libc::c_int))
}

/// Leaves out frames the interface sends (Linux 4.20).
pub(super) fn set_ignore_outgoing(sock: BorrowedFd<'_>) -> io::Result<()> {
    set_packet_opt(sock, libc::PACKET_IGNORE_OUTGOING, &(1 as libc::c_int))
}

/// Makes the kernel skip a tx frame it refuses (marking it
/// `TP_STATUS_WRONG_FORMAT`) instead of stopping the ring at it.
pub(super) fn set_loss(sock: BorrowedFd<'_>) -> io::Result<()> {
    set_packet_opt(sock, libc::PACKET_LOSS, &(1 as libc::c_int))
}

/// Joins fanout group `group` (hash of the flow picks the member).
pub(super) fn join_fanout(sock: BorrowedFd<'_>, group: u16) -> io::Result<()> {
    let arg = libc::c_int::from(group) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
    set_packet_opt(sock, libc::PACKET_FANOUT, &arg)
}

/// Geometry of one ring: `blocks` blocks of `block_size` bytes, each
/// holding `block_size / frame_size` frames (tx, V2) or packets of any
/// length (rx, V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RingGeometry {
    pub block_size: u32,
    pub blocks: u32,
    pub frame_size: u32,
}

impl RingGeometry {
    pub fn frames(&self) -> u32 {
        (self.block_size / self.frame_size) * self.blocks
    }

    pub fn bytes(&self) -> usize {
        self.block_size as usize * self.blocks as usize
    }
}

/// `PACKET_RX_RING` for a TPACKET_V3 socket: a block is handed to us
/// when full or after `retire_ms` milliseconds.
pub(super) fn set_rx_ring_v3(
    sock: BorrowedFd<'_>,
    g: RingGeometry,
    retire_ms: u32,
) -> io::Result<()> {
    let req = libc::tpacket_req3 {
        tp_block_size: g.block_size,
        tp_block_nr: g.blocks,
        tp_frame_size: g.frame_size,
        tp_frame_nr: g.frames(),
        tp_retire_blk_tov: retire_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    set_packet_opt(sock, libc::PACKET_RX_RING, &req)
}

/// `PACKET_TX_RING` for a TPACKET_V2 socket.
pub(super) fn set_tx_ring_v2(sock: BorrowedFd<'_>, g: RingGeometry) -> io::Result<()> {
    let req = libc::tpacket_req {
        tp_block_size: g.block_size,
        tp_block_nr: g.blocks,
        tp_frame_size: g.frame_size,
        tp_frame_nr: g.frames(),
    };
    set_packet_opt(sock, libc::PACKET_TX_RING, &req)
}

/// Binds `sock` to interface `ifindex` for `protocol` (network order).
pub(super) fn bind(sock: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = protocol;
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll of the length we pass.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Asks the kernel to send every frame marked `TP_STATUS_SEND_REQUEST`
/// on `sock`'s tx ring, without blocking. `EAGAIN`/`ENOBUFS` (the driver
/// is busy) are not errors: the frames stay marked and go with the next
/// kick.
pub(super) fn kick(sock: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a null buffer of length 0 and no address is how a tx ring
    // is flushed (packet(7)); nothing is read through the pointers.
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
    if rc >= 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Ok(()),
        _ => Err(e),
    }
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

/// An `ifreq` naming `ifname`, every other byte zero.
fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The MTU (IP bytes) of `ifname`, asked through any socket `sock`.
pub(in crate::port) fn mtu(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<u32> {
    let mut req = ifreq(ifname)?;
    // SAFETY: `req` is a valid `struct ifreq` that outlives the call;
    // SIOCGIFMTU fills its `ifru_mtu` member.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFMTU as _,
            &mut req as *mut libc::ifreq,
        )
    })?;
    // SAFETY: on success the kernel wrote the `ifru_mtu` member; any bit
    // pattern is a valid int.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// The MAC address of `ifname`.
pub(in crate::port) fn hw_addr(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq(ifname)?;
    // SAFETY: `req` is a valid `struct ifreq` that outlives the call;
    // SIOCGIFHWADDR fills its `ifru_hwaddr` member.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFHWADDR as _,
            &mut req as *mut libc::ifreq,
        )
    })?;
    // SAFETY: on success the kernel wrote `ifru_hwaddr`; any bit pattern
    // is a valid `sockaddr` (integers only).
    let hwaddr = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(&hwaddr.sa_data) {
        *dst = src as u8;
    }
    Ok(mac)
}

/// The rings of one packet socket, mapped; unmapped on drop.
///
/// The kernel owns a frame or block until its status word says it is
/// ours and takes it back when we store the release value; between the
/// two, only we touch its bytes. Accesses are bounds-checked: a failed
/// check is a bug in the driver's ring arithmetic and panics.
#[derive(Debug)]
pub(super) struct RingMemory {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is memory shared with the kernel; every access is
// an atomic, a volatile load or a raw copy, sound from any thread. Which
// thread touches which frame is the queue's business (one owner).
unsafe impl Send for RingMemory {}
// SAFETY: as above.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Maps the `len` bytes of rings configured on `sock`.
    pub fn map(sock: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address),
        // so no existing memory is replaced; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                sock.as_raw_fd(),
                0,
            )
        };
        let p = if p == libc::MAP_FAILED {
            // MAP_LOCKED needs RLIMIT_MEMLOCK room; retry without.
            // SAFETY: as above.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    sock.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            p
        } else {
            p
        };
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RingMemory { base, len })
    }

    /// A pointer to `len` bytes at `off`, aligned for `align`.
    #[inline]
    #[track_caller]
    fn at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len) && off.is_multiple_of(align),
            "ring access of {len} bytes at {off} outside a {} byte mapping",
            self.len
        );
        // SAFETY: `off + len <= self.len`, checked just above.
        unsafe { self.base.as_ptr().add(off) }
    }

    #[inline]
    #[track_caller]
    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        let p = self.at(off, 4, align_of::<AtomicU32>());
        // SAFETY: in bounds and aligned (checked by `at`), alive as long
        // as `self`; status words are only ever accessed atomically by us
        // and by the kernel's ring protocol.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// A status word (`tp_status`, `block_status`).
    #[inline]
    #[track_caller]
    pub fn load_status(&self, off: usize) -> u32 {
        self.atomic_u32(off).load(Ordering::Acquire)
    }

    /// Hands a frame or block over with its new status; every write to
    /// it before this is visible to the kernel first.
    #[inline]
    #[track_caller]
    pub fn store_status(&self, off: usize, value: u32) {
        self.atomic_u32(off).store(value, Ordering::Release)
    }

    #[inline]
    #[track_caller]
    pub fn read_u32(&self, off: usize) -> u32 {
        let p = self.at(off, 4, 4);
        // SAFETY: in bounds and aligned (checked by `at`); any bit pattern
        // is a u32.
        unsafe { std::ptr::read_volatile(p.cast::<u32>()) }
    }

    #[inline]
    #[track_caller]
    pub fn read_u16(&self, off: usize) -> u16 {
        let p = self.at(off, 2, 2);
        // SAFETY: as `read_u32`.
        unsafe { std::ptr::read_volatile(p.cast::<u16>()) }
    }

    #[inline]
    #[track_caller]
    pub fn write_u32(&self, off: usize, value: u32) {
        let p = self.at(off, 4, 4);
        // SAFETY: in bounds and aligned (checked by `at`); no reference
        // into the mapping exists to be invalidated.
        unsafe { std::ptr::write_volatile(p.cast::<u32>(), value) }
    }

    /// Copies `dst.len()` bytes at `off` out of the ring.
    #[inline]
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let p = self.at(off, dst.len(), 1);
        // SAFETY: the source is inside the mapping (checked by `at`) and
        // cannot overlap `dst`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the ring at `off`.
    #[inline]
    #[track_caller]
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len(), 1);
        // SAFETY: the destination is inside the mapping (checked by `at`)
        // and cannot overlap `src`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value created; no
        // reference into it exists (none is ever handed out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layouts_match_the_offsets_the_driver_uses() {
        assert_eq!(size_of::<libc::tpacket2_hdr>(), 32);
        assert_eq!(libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>(), 32);
        assert_eq!(size_of::<libc::tpacket3_hdr>(), 48);
        assert_eq!(std::mem::offset_of!(libc::tpacket3_hdr, tp_status), 20);
        assert_eq!(std::mem::offset_of!(libc::tpacket3_hdr, tp_mac), 24);
        assert_eq!(std::mem::offset_of!(libc::tpacket_block_desc, hdr), 8);
    }

    #[test]
    fn ifreq_refuses_names_the_kernel_would_truncate() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-of-16-chr").is_err());
        assert!(ifreq("eth0").is_ok());
    }
}
