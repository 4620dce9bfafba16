//! A live memif connection: the mapped regions and the rings as the
//! control thread negotiated them, shared (`Arc`) by the workers that move
//! packets over them.
//!
//! A connection is immutable once built, except for ring positions, which
//! are atomics with one writer each: the rx position of ring `q` belongs
//! to the worker polling queue `q`, and a tx ring's position to whoever
//! holds its lock (queues share a tx ring only when the peer offered fewer
//! rings than we have queues). Dropping the last reference unmaps the
//! regions and closes the eventfds, so a worker that still holds a
//! connection the control thread has already dropped keeps touching valid
//! memory until its next burst lets go of it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use caracal_wire::EthernetAddress;

use super::abi::{LayoutError, Ring};
use super::region::Region;
use super::{Mode, Role};
use crate::port::shm::SharedMemory;

/// An eventfd used as a ring's interrupt line or a wake-up bell.
#[derive(Debug)]
pub struct Doorbell(File);

impl Doorbell {
    pub fn new() -> std::io::Result<Doorbell> {
        Ok(Doorbell(File::from(super::sys::eventfd()?)))
    }

    /// Wraps an eventfd received from the peer (already non-blocking).
    pub fn from_file(file: File) -> Doorbell {
        Doorbell(file)
    }

    /// Adds one to the counter: the descriptor turns readable. A full
    /// counter or a peer-supplied descriptor that refuses the write is not
    /// our problem; the peer polls or it does not.
    #[inline]
    pub fn ring(&self) {
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    /// Resets the counter (reads it); the descriptor stops being readable.
    #[inline]
    pub fn drain(&self) {
        let mut v = [0u8; 8];
        let _ = (&self.0).read(&mut v);
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Which way a ring carries packets, seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rx,
    Tx,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
        }
    }
}

/// A peer's misbehaviour, found on the packet path; the connection is
/// closed over it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFault {
    #[error("{dir} ring {ring}: peer index {peer} is {distance} slots from ours ({ours}), more than the ring's {size}", dir = .dir.as_str())]
    Indices {
        dir: Direction,
        ring: usize,
        ours: u16,
        peer: u16,
        distance: u16,
        size: u16,
    },
    #[error("{dir} ring {ring} slot {slot}: {source}", dir = .dir.as_str())]
    Descriptor {
        dir: Direction,
        ring: usize,
        slot: u16,
        source: LayoutError,
    },
    #[error("rx ring {ring} slot {slot}: length {length} is larger than our {size}-byte buffer")]
    Overrun {
        ring: usize,
        slot: u16,
        length: u32,
        size: u32,
    },
    #[error("rx ring {ring}: a chained packet runs past the descriptors the peer published")]
    UnfinishedChain { ring: usize },
    #[error("tx ring {ring} slot {slot}: the peer handed out a buffer with no room")]
    EmptyBuffer { ring: usize, slot: u16 },
}

/// Where our own buffers of a ring lie (client role): the buffer of slot
/// `i` is `size` bytes at `base + i * size` in region 0.
#[derive(Debug, Clone, Copy)]
pub struct OwnBuffers {
    pub base: usize,
    pub size: u32,
}

impl OwnBuffers {
    #[inline]
    pub fn offset(&self, ring: &Ring, index: u16) -> usize {
        let slot = usize::from(index & (ring.size() - 1));
        self.base + slot * self.size as usize
    }
}

/// A ring we receive from.
#[derive(Debug)]
pub struct RxRing {
    pub ring: Ring,
    /// The peer signals it after producing (unless we mask interrupts).
    pub interrupt: Doorbell,
    /// Our next index to consume: the C2S head we have read up to
    /// (server) or the S2C tail (client).
    pub position: AtomicU16,
    /// Client role: our buffers behind the ring's slots.
    pub own: Option<OwnBuffers>,
}

/// A ring we transmit on.
#[derive(Debug)]
pub struct TxRing {
    pub ring: Ring,
    /// We signal it after producing, unless the peer masked interrupts.
    pub interrupt: Doorbell,
    /// Our producer index: the S2C tail (server) or the C2S head
    /// (client). Read and written under `lock`.
    pub position: AtomicU16,
    lock: AtomicBool,
    pub own: Option<OwnBuffers>,
}

impl TxRing {
    pub fn new(ring: Ring, interrupt: Doorbell, position: u16, own: Option<OwnBuffers>) -> Self {
        TxRing {
            ring,
            interrupt,
            position: AtomicU16::new(position),
            lock: AtomicBool::new(false),
            own,
        }
    }

    /// Takes the ring for one burst. Uncontended unless queues share the
    /// ring; holders never block or sleep, so spinning is short.
    #[inline]
    pub fn lock(&self) -> TxGuard<'_> {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        TxGuard(&self.lock)
    }
}

/// Holds a [`TxRing`]'s lock until dropped.
#[derive(Debug)]
pub struct TxGuard<'a>(&'a AtomicBool);

impl Drop for TxGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Everything the data path needs of one connection.
#[derive(Debug)]
pub struct Connection {
    /// Unique per port, so a fault reported late is not held against a
    /// newer connection.
    pub id: u64,
    pub role: Role,
    pub mode: Mode,
    /// Regions by index; they own the mappings in `memories`.
    pub regions: Vec<Region>,
    /// The regions' memory, by region index, for descriptor validation.
    pub memories: Vec<Arc<SharedMemory>>,
    /// Rx ring `q` is polled by queue `q`.
    pub rx: Vec<RxRing>,
    /// Queue `q` transmits on ring `q % tx.len()`.
    pub tx: Vec<TxRing>,
    /// Source MAC of the Ethernet header we put on frames of an IP-mode
    /// peer, and destination of frames we strip (ours: the gateway's).
    pub peer_mac: EthernetAddress,
    pub gateway_mac: EthernetAddress,
    /// The application and interface names the peer gave.
    pub peer_name: String,
    pub peer_interface: String,
}

impl Connection {
    /// Region 0, where a client keeps its rings and buffers.
    pub fn own_memory(&self) -> Option<&SharedMemory> {
        self.memories.first().map(|m| &**m)
    }
}
