//! The AF_PACKET port driver: a kernel network interface (a NIC without
//! DPDK, a veth) driven through `PACKET_MMAP` rings, without a system
//! call per packet.
//!
//! Each queue is two packet sockets bound to the interface:
//!
//! - **rx**: a `TPACKET_V3` ring of blocks. The kernel fills a block with
//!   as many frames as fit and hands it over when it is full or after
//!   [`RX_RETIRE_MS`]; a burst copies frames out of the blocks it owns,
//!   in order, into our buffers and gives each block back once it has
//!   been read to its end (a burst may stop in the middle of a block and
//!   the next continues there). `PACKET_IGNORE_OUTGOING` leaves out what
//!   the interface sends. With more than one queue the rx sockets form a
//!   `PACKET_FANOUT_HASH` group, so each flow lands on one queue.
//! - **tx**: a `TPACKET_V2` ring of fixed frames with
//!   `PACKET_QDISC_BYPASS`, each large enough for the interface's MTU
//!   (at least a default buffer, so a jumbo interface gets jumbo frames). A burst copies each packet into the next free
//!   frame, marks it `TP_STATUS_SEND_REQUEST`, and ends with one
//!   non-blocking `sendto` that makes the kernel send every marked frame.
//!   When the ring is full the rest of the burst is dropped and counted
//!   (`tx_errors`): a burst always sends a prefix of its packets. The
//!   socket is bound with protocol 0 so it receives nothing, and
//!   `PACKET_LOSS` makes the kernel skip (rather than stall on) a frame it
//!   refuses.
//!
//! A received frame longer than a buffer of the worker's pool is dropped
//! and counted (`rx_too_long`), never truncated: a jumbo interface needs
//! a pool with a jumbo data room
//! ([`crate::buffer::BufferPool::with_data_size`]).
//!
//! The sockets are opened in the interface's network namespace (on a
//! short-lived thread that enters it, as tap does) and keep working from
//! any thread afterwards. VLAN tags the kernel strips into the ring's
//! metadata are not restored. All `unsafe` is in [`sys`].

// The interface queries are shared with the AF_XDP driver.
pub(in crate::port) mod sys;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use caracal_wire::EthernetAddress;

use self::sys::{RingGeometry, TpacketVersion};
use super::shm::SharedMemory;
use super::{bump, Port, PortCaps, PortId, PortKind, PortQueue, PortStats, QueueCounters};
use crate::buffer::{BufferCache, Frame, Meta, DATA_SIZE, MAX_DATA_SIZE};

/// Bytes per rx block (a power of two pages).
pub const RX_BLOCK_SIZE: u32 = 256 << 10;
/// Milliseconds after which the kernel hands over a block that is not
/// full, bounding rx latency at low rates.
pub const RX_RETIRE_MS: u32 = 1;
/// Bytes per tx block: a power of two pages holding whole frames.
const TX_BLOCK_SIZE: u32 = 64 << 10;
/// Where a tx frame's packet starts: `TPACKET2_HDRLEN - sizeof(sockaddr_ll)`
/// (packet(7)), the aligned `tpacket2_hdr`.
const TX_DATA_OFFSET: u32 = 32;
/// Largest IP MTU the driver carries: the Ethernet frame of it fits the
/// largest buffer a pool may have.
pub const MAX_MTU: u16 = (MAX_DATA_SIZE - caracal_wire::ethernet::HEADER_LEN) as u16;

/// One tx frame for an interface of `mtu`: the header and the longest
/// frame we send (the MTU plus an Ethernet header, at least a default
/// buffer), 16-byte aligned (`TPACKET_ALIGNMENT`).
fn tx_frame_size(mtu: u16) -> u32 {
    let frame = (usize::from(mtu) + caracal_wire::ethernet::HEADER_LEN).max(DATA_SIZE);
    (TX_DATA_OFFSET + frame as u32).next_multiple_of(16)
}
/// Most queues (fanout group members).
pub const MAX_QUEUES: u16 = 64;

// Offsets inside the ring structures (<linux/if_packet.h>); checked
// against libc's definitions by `sys`'s tests.
/// `tpacket2_hdr.tp_status` / `.tp_len`.
const V2_STATUS: usize = 0;
const V2_LEN: usize = 4;
/// `tpacket_block_desc.hdr.bh1.block_status` / `.num_pkts` /
/// `.offset_to_first_pkt`.
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST: usize = 16;
/// `tpacket3_hdr.tp_next_offset` / `.tp_snaplen` / `.tp_len` / `.tp_mac`.
const V3_NEXT: usize = 0;
const V3_SNAPLEN: usize = 12;
const V3_LEN: usize = 16;
const V3_MAC: usize = 24;

/// What interface to drive and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The interface, e.g. `eth1` (must exist and be up).
    pub ifname: String,
    /// Its network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`);
    /// `None`: the caller's.
    pub netns: Option<PathBuf>,
    /// Queue pairs, 1 to [`MAX_QUEUES`].
    pub queues: u16,
    /// Blocks of [`RX_BLOCK_SIZE`] bytes per rx ring (0: 32, 8 MiB).
    pub rx_blocks: u32,
    /// Frames per tx ring, rounded up to whole blocks (0: 1024).
    pub tx_frames: u32,
    /// MAC of the far side, the destination of the frames we send.
    pub peer_mac: EthernetAddress,
}

impl AfPacketConfig {
    /// One queue, default rings, in the caller's namespace.
    pub fn new(ifname: &str) -> Self {
        AfPacketConfig {
            ifname: ifname.to_owned(),
            netns: None,
            queues: 1,
            rx_blocks: 0,
            tx_frames: 0,
            peer_mac: EthernetAddress([0xff; 6]),
        }
    }

    fn validate(&self) -> Result<(), AfPacketError> {
        let bad = |why: String| Err(AfPacketError::InvalidConfig(why));
        if self.ifname.is_empty() || self.ifname.len() >= libc::IFNAMSIZ {
            return bad(format!("interface name {:?}", self.ifname));
        }
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return bad(format!("{} queues: 1 to {MAX_QUEUES}", self.queues));
        }
        if self.rx_blocks > 1024 || self.tx_frames > 64 * 1024 {
            return bad("rings of at most 1024 rx blocks and 65536 tx frames".into());
        }
        Ok(())
    }

    fn rx_geometry(&self, frame_size: u32) -> RingGeometry {
        RingGeometry {
            block_size: RX_BLOCK_SIZE,
            blocks: if self.rx_blocks == 0 {
                32
            } else {
                self.rx_blocks
            },
            // Only checked by the kernel for V3 (packets are packed, up
            // to a block each).
            frame_size,
        }
    }

    /// The tx ring for frames of `frame_size` bytes ([`tx_frame_size`]).
    fn tx_geometry(&self, frame_size: u32) -> RingGeometry {
        let per_block = TX_BLOCK_SIZE / frame_size;
        let frames = if self.tx_frames == 0 {
            1024
        } else {
            self.tx_frames
        };
        RingGeometry {
            block_size: TX_BLOCK_SIZE,
            blocks: frames.div_ceil(per_block),
            frame_size,
        }
    }
}

/// Why an AF_PACKET port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("invalid af_packet configuration: {0}")]
    InvalidConfig(String),
    #[error("af_packet: {0}")]
    Netns(#[from] super::tap::TapError),
    #[error("af_packet {ifname}: {what}: {source}")]
    Io {
        ifname: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The two sockets and rings of one queue pair.
#[derive(Debug)]
struct QueueSockets {
    rx_sock: OwnedFd,
    rx_mem: SharedMemory,
    rx_geometry: RingGeometry,
    tx_sock: OwnedFd,
    tx_mem: SharedMemory,
    tx_geometry: RingGeometry,
}

/// An AF_PACKET interface.
#[derive(Debug)]
pub struct AfPacketPort {
    ifname: String,
    mac: EthernetAddress,
    peer_mac: EthernetAddress,
    caps: PortCaps,
    /// Queue `i` until a worker takes it.
    unclaimed: Mutex<Vec<Option<QueueSockets>>>,
    counters: Box<[Arc<QueueCounters>]>,
}

/// Everything the namespace thread brings back.
struct Opened {
    queues: Vec<QueueSockets>,
    mac: [u8; 6],
    mtu: u32,
}

impl AfPacketPort {
    /// Opens `cfg.queues` queue pairs on the interface (inside
    /// `cfg.netns` when given).
    pub fn create(cfg: &AfPacketConfig) -> Result<Arc<AfPacketPort>, AfPacketError> {
        cfg.validate()?;
        let opened = match &cfg.netns {
            Some(ns) => super::tap::run_in_netns(ns, || open_here(cfg))??,
            None => open_here(cfg)?,
        };
        let mtu = u16::try_from(opened.mtu).unwrap_or(u16::MAX).min(MAX_MTU);
        let counters = (0..cfg.queues).map(|_| Arc::default()).collect();
        Ok(Arc::new(AfPacketPort {
            ifname: cfg.ifname.clone(),
            mac: EthernetAddress(opened.mac),
            peer_mac: cfg.peer_mac,
            caps: PortCaps {
                queues: cfg.queues,
                mtu,
            },
            unclaimed: Mutex::new(opened.queues.into_iter().map(Some).collect()),
            counters,
        }))
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's own MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }
}

/// Opens the queues in the calling thread's namespace.
fn open_here(cfg: &AfPacketConfig) -> Result<Opened, AfPacketError> {
    let io = |what: &'static str| {
        move |source| AfPacketError::Io {
            ifname: cfg.ifname.clone(),
            what,
            source,
        }
    };
    let ifindex = crate::port::sys::ifindex(&cfg.ifname).map_err(io("no such interface"))?;
    // The MTU sizes the tx frames, so it is read before the rings exist.
    let (mtu, mac) = {
        let probe = sys::packet_socket(0).map_err(io("socket"))?;
        (
            sys::mtu(probe.as_fd(), &cfg.ifname).map_err(io("SIOCGIFMTU"))?,
            sys::hw_addr(probe.as_fd(), &cfg.ifname).map_err(io("SIOCGIFHWADDR"))?,
        )
    };
    let frame_size = tx_frame_size(u16::try_from(mtu).unwrap_or(u16::MAX).min(MAX_MTU));
    // Process-unique fanout group id (16 bits).
    let group = (std::process::id() as u16) ^ (ifindex as u16).rotate_left(8);
    let mut queues = Vec::with_capacity(usize::from(cfg.queues));
    for _ in 0..cfg.queues {
        // Created with protocol 0 and bound with ETH_P_ALL afterwards, so
        // nothing from another interface slips in before the bind.
        let rx_sock = sys::packet_socket(0).map_err(io("socket"))?;
        let rx = rx_sock.as_fd();
        sys::set_version(rx, TpacketVersion::V3).map_err(io("PACKET_VERSION 3"))?;
        sys::set_ignore_outgoing(rx).map_err(io("PACKET_IGNORE_OUTGOING"))?;
        let rx_geometry = cfg.rx_geometry(frame_size);
        sys::set_rx_ring_v3(rx, rx_geometry, RX_RETIRE_MS).map_err(io("PACKET_RX_RING"))?;
        let rx_mem = sys::map_rings(rx, rx_geometry.bytes()).map_err(io("mmap rx ring"))?;
        sys::bind(rx, ifindex, sys::ETH_P_ALL_BE).map_err(io("bind rx"))?;
        if cfg.queues > 1 {
            sys::join_fanout(rx, group).map_err(io("PACKET_FANOUT"))?;
        }

        let tx_sock = sys::packet_socket(0).map_err(io("socket"))?;
        let tx = tx_sock.as_fd();
        sys::set_version(tx, TpacketVersion::V2).map_err(io("PACKET_VERSION 2"))?;
        sys::set_qdisc_bypass(tx).map_err(io("PACKET_QDISC_BYPASS"))?;
        sys::set_loss(tx).map_err(io("PACKET_LOSS"))?;
        let tx_geometry = cfg.tx_geometry(frame_size);
        sys::set_tx_ring_v2(tx, tx_geometry).map_err(io("PACKET_TX_RING"))?;
        let tx_mem = sys::map_rings(tx, tx_geometry.bytes()).map_err(io("mmap tx ring"))?;
        sys::bind(tx, ifindex, 0).map_err(io("bind tx"))?;
        queues.push(QueueSockets {
            rx_sock,
            rx_mem,
            rx_geometry,
            tx_sock,
            tx_mem,
            tx_geometry,
        });
    }
    Ok(Opened { queues, mac, mtu })
}

impl Port for AfPacketPort {
    fn kind(&self) -> PortKind {
        PortKind::AfPacket
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }

    fn peer_mac(&self) -> EthernetAddress {
        self.peer_mac
    }

    fn open_queue(&self, worker: usize) -> Option<Box<dyn PortQueue>> {
        let sockets = self
            .unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(worker)?
            .take()?;
        let max_frame = usize::from(self.caps.mtu) + caracal_wire::ethernet::HEADER_LEN;
        Some(Box::new(AfPacketQueue {
            rx: RxRing {
                blocks: sockets.rx_geometry.blocks,
                block_size: sockets.rx_geometry.block_size as usize,
                mem: sockets.rx_mem,
                sock: sockets.rx_sock,
                block: 0,
                current: None,
            },
            tx: TxRing {
                frames: sockets.tx_geometry.frames(),
                per_block: sockets.tx_geometry.block_size / sockets.tx_geometry.frame_size,
                frame_size: sockets.tx_geometry.frame_size as usize,
                mem: sockets.tx_mem,
                sock: sockets.tx_sock,
                head: 0,
                max_frame,
            },
            counters: self.counters[worker].clone(),
        }))
    }

    fn stats(&self) -> PortStats {
        PortStats::sum(self.counters.iter().map(|c| &**c))
    }
}

/// The rx ring of a queue and where we are in it.
#[derive(Debug)]
struct RxRing {
    // Unmapped before the socket closes (field order).
    mem: SharedMemory,
    sock: OwnedFd,
    blocks: u32,
    block_size: usize,
    /// The block we read next (or are reading).
    block: u32,
    /// Position inside `block` when we own it and stopped mid-way.
    current: Option<BlockCursor>,
}

#[derive(Debug, Clone, Copy)]
struct BlockCursor {
    /// Frames of the block not read yet.
    left: u32,
    /// Offset of the next frame's header from the block's start.
    at: usize,
}

/// What one rx burst did.
#[derive(Debug, Default)]
struct RxStats {
    packets: u64,
    bytes: u64,
    no_buffer: u64,
    too_long: u64,
}

impl RxRing {
    fn block_off(&self) -> usize {
        self.block as usize * self.block_size
    }

    /// Gives the current block back to the kernel and moves to the next.
    fn release(&mut self) {
        self.mem.store_u32(
            self.block_off() + BLOCK_STATUS,
            libc::TP_STATUS_KERNEL,
            Ordering::Release,
        );
        self.block = (self.block + 1) % self.blocks;
        self.current = None;
    }

    fn receive(
        &mut self,
        port: PortId,
        cache: &mut BufferCache,
        out: &mut Frame,
        stats: &mut RxStats,
    ) {
        let room = cache.pool().data_size();
        while out.room() > 0 {
            let base = self.block_off();
            let mut cur = match self.current {
                Some(c) => c,
                None => {
                    let status = self.mem.load_u32(base + BLOCK_STATUS, Ordering::Acquire);
                    if status & libc::TP_STATUS_USER == 0 {
                        return;
                    }
                    BlockCursor {
                        left: self.mem.read::<u32>(base + BLOCK_NUM_PKTS),
                        at: self.mem.read::<u32>(base + BLOCK_FIRST) as usize,
                    }
                }
            };
            if cur.left == 0 {
                self.release();
                continue;
            }
            // The kernel is trusted, but a cursor outside the block would
            // be our bug: give the block back rather than panic.
            let hdr = cur.at;
            if hdr + 32 > self.block_size {
                self.release();
                continue;
            }
            let snaplen = self.mem.read::<u32>(base + hdr + V3_SNAPLEN) as usize;
            let len = self.mem.read::<u32>(base + hdr + V3_LEN) as usize;
            let mac = usize::from(self.mem.read::<u16>(base + hdr + V3_MAC));
            let next = self.mem.read::<u32>(base + hdr + V3_NEXT) as usize;
            let whole = hdr + mac + snaplen <= self.block_size && snaplen == len && len > 0;
            if whole && len > room {
                stats.too_long += 1;
            } else if whole {
                let Some(mut b) = cache.alloc() else {
                    stats.no_buffer += 1;
                    self.current = Some(cur);
                    return;
                };
                let mut p = cache.pool().packet(&mut b);
                *p.meta_mut() = Meta::received(port, len as u16);
                self.mem.copy_out(base + hdr + mac, p.data_mut());
                out.push(b);
                stats.packets += 1;
                stats.bytes += len as u64;
            }
            // Truncated (by the kernel: not ours to count) or longer than
            // a buffer (counted above): skipped, not received.
            cur.left -= 1;
            cur.at = hdr + next;
            if cur.left == 0 || next == 0 {
                self.release();
            } else {
                self.current = Some(cur);
            }
        }
    }
}

/// The tx ring of a queue.
#[derive(Debug)]
struct TxRing {
    // Unmapped before the socket closes (field order).
    mem: SharedMemory,
    sock: OwnedFd,
    frames: u32,
    per_block: u32,
    /// Bytes per frame (header included).
    frame_size: usize,
    /// The frame we fill next.
    head: u32,
    /// Longest frame the interface takes (MTU + Ethernet header).
    max_frame: usize,
}

impl TxRing {
    fn frame_off(&self, i: u32) -> usize {
        (i / self.per_block) as usize * TX_BLOCK_SIZE as usize
            + (i % self.per_block) as usize * self.frame_size
    }

    /// Puts one frame on the ring; false when the ring is full.
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> bool {
        let off = self.frame_off(self.head);
        let status = self.mem.load_u32(off + V2_STATUS, Ordering::Acquire);
        // AVAILABLE (0), or a frame the kernel refused and skipped
        // (PACKET_LOSS marks it WRONG_FORMAT): both are ours.
        if status & !libc::TP_STATUS_WRONG_FORMAT != libc::TP_STATUS_AVAILABLE {
            return false;
        }
        self.mem.copy_in(off + TX_DATA_OFFSET as usize, bytes);
        self.mem.write::<u32>(off + V2_LEN, bytes.len() as u32);
        self.mem.store_u32(
            off + V2_STATUS,
            libc::TP_STATUS_SEND_REQUEST,
            Ordering::Release,
        );
        self.head = (self.head + 1) % self.frames;
        true
    }
}

/// One queue pair of an AF_PACKET port, owned by one worker.
#[derive(Debug)]
pub struct AfPacketQueue {
    rx: RxRing,
    tx: TxRing,
    counters: Arc<QueueCounters>,
}

impl PortQueue for AfPacketQueue {
    fn rx_burst(&mut self, port: PortId, cache: &mut BufferCache, out: &mut Frame) -> usize {
        let mut stats = RxStats::default();
        self.rx.receive(port, cache, out, &mut stats);
        let c = &self.counters;
        bump(&c.rx_packets, stats.packets);
        bump(&c.rx_bytes, stats.bytes);
        bump(&c.rx_no_buffer, stats.no_buffer);
        bump(&c.rx_too_long, stats.too_long);
        stats.packets as usize
    }

    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame) {
        let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        let mut full = false;
        for mut b in pkts.drain() {
            let p = cache.pool().packet(&mut b);
            let data = p.data();
            if !full && !data.is_empty() && data.len() <= self.tx.max_frame {
                if self.tx.put(data) {
                    sent += 1;
                    bytes += data.len() as u64;
                } else {
                    full = true;
                    errors += 1;
                }
            } else {
                errors += 1;
            }
            cache.free(b);
        }
        if sent > 0 {
            if let Err(e) = sys::kick(self.tx.sock.as_fd()) {
                // The frames stay marked; the next kick retries them.
                tracing::debug!("af_packet tx kick: {e}");
            }
        }
        let c = &self.counters;
        bump(&c.tx_packets, sent);
        bump(&c.tx_bytes, bytes);
        bump(&c.tx_errors, errors);
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.rx.sock.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_frames_fit_their_blocks() {
        for (mtu, frame) in [(1500, DATA_SIZE), (9000, 9014), (MAX_MTU, MAX_DATA_SIZE)] {
            let g = AfPacketConfig::new("eth0").tx_geometry(tx_frame_size(mtu));
            assert_eq!(g.frame_size % 16, 0);
            assert!(g.frame_size >= TX_DATA_OFFSET + frame as u32, "mtu {mtu}");
            assert!(g.frames() >= 1024);
            assert!(g.block_size / g.frame_size >= 1);
            assert_eq!(g.block_size % 4096, 0);
        }
        assert_eq!(tx_frame_size(1500), TX_DATA_OFFSET + DATA_SIZE as u32);
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = AfPacketConfig::new("");
        assert!(c.validate().is_err());
        c.ifname = "eth0".into();
        c.queues = 0;
        assert!(c.validate().is_err());
        c.queues = 1;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        let err = AfPacketPort::create(&AfPacketConfig::new("caracal-none0")).unwrap_err();
        // Unprivileged: socket() fails first; privileged: the lookup.
        assert!(matches!(err, AfPacketError::Io { .. }), "{err}");
    }
}
