//! Packet buffers: one contiguous arena of fixed-size slots, addressed by
//! `u32` index, with a lock-free shared free list and per-worker caches.
//!
//! Each slot is `[Meta (64 B)][headroom (128 B)][data room]`, so the
//! metadata and the first bytes of the packet share a prefetch. The data
//! room is fixed per pool when it is created, as DPDK's mbuf pool
//! `data_room_size`: [`DATA_SIZE`] (2 KiB) by default, up to
//! [`MAX_DATA_SIZE`] for a pool that carries jumbo frames whole
//! ([`BufferPool::with_data_size`]). A packet is always one buffer: ports
//! drop (and count) a frame longer than the pool's data room, never
//! truncate it. The arena is backed by a memfd mapping, on hugepages when
//! the kernel has them reserved, else on ordinary pages (with a warning).
//!
//! Ownership of a buffer is carried by a [`BufferIndex`], a linear token: it
//! is neither `Copy` nor `Clone`, so exactly one place holds a buffer at a
//! time and only the holder can reach its bytes. Dropping a token without
//! giving it back to a pool leaks the slot, which the pool's exact
//! accounting ([`BufferPool::in_use`]) makes visible to tests.

mod arena;
mod frame;

pub use arena::{BufferCache, BufferPool, BufferPoolConfig, BufferPoolError, PoolStats};
pub use frame::{Frame, FRAME_SIZE};

use crate::port::PortId;

/// Bytes of packet data a buffer of a default pool holds after its
/// headroom (the dataplane's pool).
pub const DATA_SIZE: usize = 2048;
/// Largest data room a pool may have: a 9216-byte jumbo frame (the usual
/// NIC maximum) with room to spare. `Meta`'s 16-bit offsets bound it too.
pub const MAX_DATA_SIZE: usize = 16 * 1024;
/// Data rooms are whole cache lines, so every slot stays 64-byte aligned.
pub const DATA_SIZE_ALIGN: usize = 64;
/// Bytes reserved before the packet so nodes can prepend headers
/// (ICMP errors, encapsulation) without copying.
pub const HEADROOM: usize = 128;
/// Bytes of per-packet metadata at the start of each slot.
pub const META_SIZE: usize = 64;

const _: () = assert!(HEADROOM + MAX_DATA_SIZE <= u16::MAX as usize);
const _: () = assert!((META_SIZE + HEADROOM).is_multiple_of(DATA_SIZE_ALIGN));

/// Owning handle to one buffer of a [`BufferPool`].
///
/// `#[repr(transparent)]` over the `u32` index: moving it costs what moving
/// a `u32` costs. Indices are unique across every pool of the process, so a
/// token can never reach another pool's memory.
#[derive(Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct BufferIndex(u32);

impl BufferIndex {
    /// The raw index, for traces and debugging.
    pub fn get(&self) -> u32 {
        self.0
    }
}

/// A pending ICMP error a node asked for; the ICMP error nodes build it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpErrorRequest {
    pub msg_type: u8,
    pub code: u8,
    /// Next-hop MTU for "fragmentation needed" / "packet too big".
    pub mtu: u16,
}

/// Typed per-packet metadata, stored in the buffer's slot.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct Meta {
    /// Offset of the first packet byte from the start of the data area.
    pub data_off: u16,
    /// Packet length in bytes.
    pub len: u16,
    /// Port the packet arrived on.
    pub rx_port: PortId,
    /// Port the packet leaves by, set by rewrite (or by ARP/ND replies).
    pub tx_port: PortId,
    /// Adjacency chosen by the route lookup.
    pub adjacency: u32,
    /// Hash of the flow's 5-tuple, for ECMP and later the flow table.
    pub flow_hash: u32,
    /// Set when a node sends the packet to an ICMP error node.
    pub icmp_error: IcmpErrorRequest,
    /// The flow the flow node found for the packet, for the policy node:
    /// its entry index, or [`Meta::NO_FLOW`].
    pub flow: u32,
    /// The packet's direction in `flow` (0 original, 1 reply).
    pub flow_dir: u8,
}

const _: () = assert!(core::mem::size_of::<Meta>() == META_SIZE);

impl Meta {
    /// Metadata of a freshly received packet of `len` bytes placed right
    /// after the headroom.
    pub const fn received(rx_port: PortId, len: u16) -> Self {
        Meta {
            data_off: HEADROOM as u16,
            len,
            rx_port,
            tx_port: PortId::INVALID,
            adjacency: 0,
            flow_hash: 0,
            icmp_error: IcmpErrorRequest {
                msg_type: 0,
                code: 0,
                mtu: 0,
            },
            flow: Self::NO_FLOW,
            flow_dir: 0,
        }
    }

    /// `flow` of a packet without a flow.
    pub const NO_FLOW: u32 = u32::MAX;
}

/// Mutable access to one packet: its metadata and its bytes.
///
/// Obtained from [`BufferPool::packet`] while holding the buffer's
/// [`BufferIndex`]; every accessor is bounds-checked against the slot.
/// `area` is the headroom and the pool's data room.
#[derive(Debug)]
pub struct Packet<'a> {
    meta: &'a mut Meta,
    area: &'a mut [u8],
}

impl<'a> Packet<'a> {
    pub(crate) fn new(meta: &'a mut Meta, area: &'a mut [u8]) -> Self {
        Packet { meta, area }
    }

    #[inline]
    pub fn meta(&self) -> &Meta {
        self.meta
    }

    #[inline]
    pub fn meta_mut(&mut self) -> &mut Meta {
        self.meta
    }

    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.meta.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.meta.len == 0
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let start = usize::from(self.meta.data_off);
        &self.area[start..start + usize::from(self.meta.len)]
    }

    /// The packet's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.meta.data_off);
        &mut self.area[start..start + usize::from(self.meta.len)]
    }

    /// Bytes available in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.meta.data_off)
    }

    /// The pool's data room: the longest packet this buffer holds at the
    /// default offset ([`HEADROOM`]).
    #[inline]
    pub fn data_room(&self) -> usize {
        self.area.len() - HEADROOM
    }

    /// Bytes available after the packet.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.area.len() - usize::from(self.meta.data_off) - usize::from(self.meta.len)
    }

    /// Grows the packet at the front by `n` bytes (uninitialised contents:
    /// whatever the slot held). Returns false, changing nothing, when the
    /// headroom is too small.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> bool {
        if n > self.headroom() {
            return false;
        }
        self.meta.data_off -= n as u16;
        self.meta.len += n as u16;
        true
    }

    /// Removes `n` bytes from the front. Returns false when the packet is
    /// shorter than `n`.
    #[inline]
    pub fn advance(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.meta.data_off += n as u16;
        self.meta.len -= n as u16;
        true
    }

    /// Sets the packet length; returns false when it would not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if usize::from(self.meta.data_off) + len > self.area.len() {
            return false;
        }
        self.meta.len = len as u16;
        true
    }

    /// The whole data area (headroom and the pool's data room) with the
    /// packet's offset, for nodes that move headers around inside the
    /// slot and for drivers that gather a packet into it.
    #[inline]
    pub fn area_mut(&mut self) -> (&mut [u8], usize) {
        let off = usize::from(self.meta.data_off);
        (&mut *self.area, off)
    }
}
