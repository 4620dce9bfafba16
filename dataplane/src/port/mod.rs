//! Ports: where packets enter and leave the dataplane.
//!
//! A [`Port`] is the shared, control-side object (a tap device, a memif
//! connection, an AF_PACKET or AF_XDP socket, later a vhost-user one).
//! Each worker opens its own [`PortQueue`] on it and is the only thread
//! that touches that queue, so the rx/tx paths need no locks. Queue calls are per burst: a dyn call
//! per vector, never per packet.

pub mod af_packet;
pub mod af_xdp;
pub mod loopback;
pub mod memif;
mod shm;
mod sys;
pub mod tap;

use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use caracal_wire::EthernetAddress;

use crate::buffer::{BufferCache, Frame};

/// Index of a port in the interface table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PortId(pub u16);

impl PortId {
    /// "No port": the `tx_port` of a packet nothing has routed yet.
    pub const INVALID: PortId = PortId(u16::MAX);

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// What kind of device a port drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Tap,
    Memif,
    AfPacket,
    AfXdp,
    /// In-memory port used by tests and benchmarks.
    Loopback,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::Memif => "memif",
            PortKind::AfPacket => "af_packet",
            PortKind::AfXdp => "af_xdp",
            PortKind::Loopback => "loopback",
        }
    }
}

/// Static properties of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCaps {
    /// Queue pairs the port offers; worker `w` uses queue `w % queues`
    /// for tx and polls queue `w` for rx when `w < queues`.
    pub queues: u16,
    /// Largest IP packet (L3 bytes) the peer accepts.
    pub mtu: u16,
}

/// Per-queue counters, written only by the owning worker (once per burst)
/// and read by the API thread.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_errors: AtomicU64,
    pub rx_no_buffer: AtomicU64,
    /// Frames dropped on receive because they are longer than a buffer of
    /// the worker's pool (dropped whole, never truncated).
    pub rx_too_long: AtomicU64,
}

/// Adds to a single-writer counter without a locked instruction.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// Totals of a port's counters over its queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub rx_no_buffer: u64,
    /// Frames dropped on receive for being longer than a buffer of the
    /// pool (never truncated).
    pub rx_too_long: u64,
}

impl PortStats {
    pub fn sum<'a>(queues: impl IntoIterator<Item = &'a QueueCounters>) -> Self {
        let mut s = PortStats::default();
        for q in queues {
            s.rx_packets += q.rx_packets.load(Ordering::Relaxed);
            s.rx_bytes += q.rx_bytes.load(Ordering::Relaxed);
            s.tx_packets += q.tx_packets.load(Ordering::Relaxed);
            s.tx_bytes += q.tx_bytes.load(Ordering::Relaxed);
            s.tx_errors += q.tx_errors.load(Ordering::Relaxed);
            s.rx_no_buffer += q.rx_no_buffer.load(Ordering::Relaxed);
            s.rx_too_long += q.rx_too_long.load(Ordering::Relaxed);
        }
        s
    }
}

/// A device the dataplane sends to and receives from.
pub trait Port: Send + Sync + fmt::Debug {
    fn kind(&self) -> PortKind;
    fn caps(&self) -> PortCaps;
    /// MAC address of the far side (the pod's interface).
    fn peer_mac(&self) -> EthernetAddress;
    /// Opens the queue pair worker `worker` uses. Called off the packet
    /// path, once per worker per port. `None` if that queue was already
    /// taken or the port is gone.
    fn open_queue(&self, worker: usize) -> Option<Box<dyn PortQueue>>;
    /// Counters summed over all queues.
    fn stats(&self) -> PortStats;
}

/// One queue pair of a port, owned by one worker.
pub trait PortQueue: Send + fmt::Debug {
    /// Receives up to `out.room()` packets into buffers from `cache`,
    /// appending them to `out` with `Meta::received(port, len)` set.
    /// Returns the number received.
    fn rx_burst(
        &mut self,
        port: crate::port::PortId,
        cache: &mut BufferCache,
        out: &mut Frame,
    ) -> usize;
    /// Sends every packet of `pkts` (emptying it); buffers go back to
    /// `cache` whether sent or not. Failures are counted, not returned.
    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame);
    /// A descriptor that turns readable when rx has packets, for adaptive
    /// mode; `None` for ports that must be polled.
    fn rx_fd(&self) -> Option<RawFd>;
}
