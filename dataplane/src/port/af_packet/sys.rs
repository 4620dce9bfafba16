//! The system calls of the AF_PACKET driver: packet sockets, their ring
//! options (`PACKET_VERSION`, `PACKET_RX_RING`/`PACKET_TX_RING`,
//! `PACKET_QDISC_BYPASS`, `PACKET_IGNORE_OUTGOING`), binding to an
//! interface, the ring mapping, the tx kick, and interface queries. This
//! is the only module of the driver with `unsafe`.
//!
//! The rings are a [`SharedMemory`]: status words are atomics (the
//! kernel's ownership protocol), everything else is a volatile load or a
//! raw copy at an offset checked against the mapping first.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::port::shm::{MapOptions, SharedMemory};
use crate::port::sys::{self, check, ifreq};

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

/// A raw, close-on-exec, non-blocking packet socket for `protocol`
/// (network order; 0 receives nothing, which is what a tx-only socket
/// wants).
pub(in crate::port) fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    sys::socket(
        libc::AF_PACKET,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK,
        libc::c_int::from(protocol),
    )
}

/// `setsockopt(SOL_PACKET, opt)` with a plain-data value (an int or a
/// `tpacket_req`/`tpacket_req3`).
fn set_packet_opt<T: Copy>(sock: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    sys::setsockopt(sock, libc::SOL_PACKET, opt, value)
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
    sys::bind(sock, &sll)
}

/// Asks the kernel to send every frame marked `TP_STATUS_SEND_REQUEST`
/// on `sock`'s tx ring, without blocking. `EAGAIN`/`ENOBUFS` (the driver
/// is busy) are not errors: the frames stay marked and go with the next
/// kick.
pub(super) fn kick(sock: BorrowedFd<'_>) -> io::Result<()> {
    match sys::flush_tx(sock) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) => Err(e),
        _ => Ok(()),
    }
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

/// Maps the `len` bytes of rings configured on `sock`, locked in when
/// `RLIMIT_MEMLOCK` allows.
///
/// The kernel owns a frame or block until its status word says it is
/// ours and takes it back when we store the release value; between the
/// two, only we touch its bytes. Accesses are bounds-checked: a failed
/// check is a bug in the driver's ring arithmetic and panics.
pub(super) fn map_rings(sock: BorrowedFd<'_>, len: usize) -> io::Result<SharedMemory> {
    let opts = |flags| MapOptions {
        flags: libc::MAP_SHARED | libc::MAP_POPULATE | flags,
        offset: 0,
        mapped: len,
    };
    SharedMemory::map_with(Some(sock), len, opts(libc::MAP_LOCKED))
        // MAP_LOCKED needs RLIMIT_MEMLOCK room; retry without.
        .or_else(|_| SharedMemory::map_with(Some(sock), len, opts(0)))
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    #[test]
    fn header_layouts_match_the_offsets_the_driver_uses() {
        assert_eq!(size_of::<libc::tpacket2_hdr>(), 32);
        assert_eq!(libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>(), 32);
        assert_eq!(size_of::<libc::tpacket3_hdr>(), 48);
        assert_eq!(std::mem::offset_of!(libc::tpacket3_hdr, tp_status), 20);
        assert_eq!(std::mem::offset_of!(libc::tpacket3_hdr, tp_mac), 24);
        assert_eq!(std::mem::offset_of!(libc::tpacket_block_desc, hdr), 8);
    }
}
