//! The AF_XDP port driver: one queue of a kernel network interface (a NIC
//! without DPDK, a veth) driven through an XDP socket, without a system
//! call per packet.
//!
//! - **UMEM.** One anonymous mapping of [`AfXdpConfig::frames`] frames of
//!   2048 or 4096 bytes (transparent hugepages advised when asked),
//!   registered with `XDP_UMEM_REG`. The first half of the frames belongs
//!   to rx, the second half to tx; a frame never changes sides.
//! - **rx.** Every rx frame starts on the fill ring. The kernel writes a
//!   packet into one and posts `(addr, len)` on the rx ring; a burst copies
//!   packets out into our buffers and puts their frames back on the fill
//!   ring, all with one producer update per ring per burst.
//! - **tx.** A burst takes free tx frames, copies each packet into one,
//!   posts the descriptors with one producer update, and makes one
//!   `sendto` only when the tx ring's need-wakeup flag asks for it
//!   (`XDP_USE_NEED_WAKEUP`; always, in copy mode). The kernel sends at
//!   most a budget of packets per call (32 by default, in copy mode) and
//!   then answers `EAGAIN`: the kick is repeated while the kernel makes
//!   progress, so a burst of 256 costs 8 calls. Frames come back on the
//!   completion ring and are reclaimed at the next burst. When no frame or
//!   ring slot is free the rest of the burst is dropped and counted
//!   (`tx_errors`): a burst always sends a prefix of its packets.
//! - **Steering.** An XDP program ([`program`]) redirects the queue's
//!   packets to the socket through an XSKMAP; other queues' packets go on
//!   to the kernel. It is attached in driver (native) mode when the
//!   interface supports it, else in generic (skb) mode, and detached when
//!   the port is dropped.
//! - **Modes.** [`XdpMode::Auto`] lets the kernel bind zero-copy when the
//!   driver supports it and copy mode otherwise (veth: native XDP, copy
//!   mode); `ZeroCopy` insists, `Copy` forbids it, `Skb` also forces the
//!   generic program.
//!
//! The kernel is trusted to follow the ring protocol, but nothing read
//! from shared memory is used unchecked: ring indices that claim more
//! entries than the ring holds are ignored, and every rx and completion
//! descriptor must name a frame of its side that the kernel actually
//! holds, with a length that fits the frame, before its bytes are read. A
//! bad descriptor is dropped and counted ([`AfXdpStats::bad_descriptors`]),
//! never followed. The socket is opened in the interface's network
//! namespace when asked (on a short-lived thread, as tap and af_packet
//! do) and works from any thread afterwards. All `unsafe` is in [`sys`]
//! and, for the UMEM and ring mappings, the ports' shared-memory module.

#[doc(hidden)]
pub mod fuzzing;
pub mod program;
mod sys;

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use caracal_wire::EthernetAddress;

use self::program::{AttachMode, XdpProgram};
use self::sys::{Kick, RingKind, RingMemory};
use super::af_packet::sys as ifquery;
use super::shm::{Plain, SharedMemory};
use super::{bump, Port, PortCaps, PortId, PortKind, PortQueue, PortStats, QueueCounters};
use crate::buffer::{BufferCache, Frame, Meta, DATA_SIZE};

/// Frames of the UMEM unless configured (half rx, half tx: 8 MiB).
pub const DEFAULT_FRAMES: u32 = 4096;
/// Bytes per UMEM frame unless configured.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Where the kernel puts a received packet inside its frame
/// (`XDP_PACKET_HEADROOM`, <linux/bpf.h>), with no UMEM headroom of ours.
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// Largest IP MTU a frame of one buffer carries. Frames are single UMEM
/// frames (at most a page in aligned mode): multi-buffer AF_XDP
/// (`XDP_USE_SG`, frames chained with `XDP_PKT_CONTD`) is not
/// implemented, so jumbo frames do not cross an AF_XDP port.
pub const MAX_MTU: u16 = (DATA_SIZE - caracal_wire::ethernet::HEADER_LEN) as u16;
/// Most times one burst kicks the kernel (each sends a budget of packets).
const MAX_KICKS: u32 = 64;

/// How the socket is bound and the program attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Zero-copy when the driver can, copy otherwise; the program in
    /// driver mode when the driver can, skb mode otherwise.
    #[default]
    Auto,
    /// `XDP_ZEROCOPY` (and a driver-mode program), or fail.
    ZeroCopy,
    /// `XDP_COPY`, program in driver mode if possible.
    Copy,
    /// `XDP_COPY` with a generic (skb-mode) program: works on any
    /// interface, slowest.
    Skb,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::ZeroCopy => "zc",
            XdpMode::Copy => "copy",
            XdpMode::Skb => "skb",
        }
    }

    /// Program attach modes to try, in order.
    fn attach_modes(self) -> &'static [AttachMode] {
        match self {
            XdpMode::Auto | XdpMode::Copy => &[AttachMode::Driver, AttachMode::Skb],
            XdpMode::ZeroCopy => &[AttachMode::Driver],
            XdpMode::Skb => &[AttachMode::Skb],
        }
    }

    /// `sxdp_flags` of the bind, given where the program ended up.
    fn bind_flags(self, attached: AttachMode) -> u16 {
        let copy = match (self, attached) {
            (XdpMode::ZeroCopy, _) => libc::XDP_ZEROCOPY,
            (XdpMode::Copy | XdpMode::Skb, _) | (XdpMode::Auto, AttachMode::Skb) => libc::XDP_COPY,
            // Neither flag: the kernel tries zero-copy, then falls back.
            (XdpMode::Auto, AttachMode::Driver) => 0,
        };
        copy | libc::XDP_USE_NEED_WAKEUP
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "zc" | "zerocopy" | "zero-copy" => Ok(XdpMode::ZeroCopy),
            "copy" => Ok(XdpMode::Copy),
            "skb" | "generic" => Ok(XdpMode::Skb),
            _ => Err(format!("XDP mode {s:?}: auto, zc, copy or skb")),
        }
    }
}

/// What interface queue to drive and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// The interface, e.g. `eth1` (must exist and be up).
    pub ifname: String,
    /// Its network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`);
    /// `None`: the caller's.
    pub netns: Option<PathBuf>,
    /// The interface's rx/tx queue the socket binds to.
    pub queue: u32,
    pub mode: XdpMode,
    /// UMEM frames, a power of two from 64 to 65536 (0:
    /// [`DEFAULT_FRAMES`]); half are rx, half tx, and each ring has as
    /// many entries as its side has frames.
    pub frames: u32,
    /// Bytes per frame, 2048 or 4096 (0: [`DEFAULT_FRAME_SIZE`]).
    pub frame_size: u32,
    /// Advise transparent hugepages for the UMEM.
    pub hugepages: bool,
    /// MAC of the far side, the destination of the frames we send.
    pub peer_mac: EthernetAddress,
}

impl AfXdpConfig {
    /// Queue 0, default UMEM, automatic mode, in the caller's namespace.
    pub fn new(ifname: &str) -> Self {
        AfXdpConfig {
            ifname: ifname.to_owned(),
            netns: None,
            queue: 0,
            mode: XdpMode::Auto,
            frames: 0,
            frame_size: 0,
            hugepages: false,
            peer_mac: EthernetAddress([0xff; 6]),
        }
    }

    fn layout(&self) -> Result<UmemLayout, AfXdpError> {
        let bad = |why: String| Err(AfXdpError::InvalidConfig(why));
        if self.ifname.is_empty() || self.ifname.len() >= libc::IFNAMSIZ {
            return bad(format!("interface name {:?}", self.ifname));
        }
        let frames = if self.frames == 0 {
            DEFAULT_FRAMES
        } else {
            self.frames
        };
        if !frames.is_power_of_two() || !(64..=65536).contains(&frames) {
            return bad(format!("{frames} frames: a power of two, 64 to 65536"));
        }
        let frame_size = if self.frame_size == 0 {
            DEFAULT_FRAME_SIZE
        } else {
            self.frame_size
        };
        if frame_size != 2048 && frame_size != 4096 {
            return bad(format!("frame size {frame_size}: 2048 or 4096"));
        }
        if self.queue >= 4096 {
            return bad(format!("queue {}: below 4096", self.queue));
        }
        Ok(UmemLayout {
            frame_size,
            frames,
            rx_frames: frames / 2,
        })
    }
}

/// Why an AF_XDP port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("invalid af_xdp configuration: {0}")]
    InvalidConfig(String),
    #[error("af_xdp: {0}")]
    Netns(#[from] super::tap::TapError),
    #[error("af_xdp {ifname}: {what}: {source}")]
    Io {
        ifname: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// How the UMEM is cut: `frames` frames of `frame_size` bytes, frames
/// `0..rx_frames` for rx and the rest for tx. Pure arithmetic on UMEM
/// addresses, where descriptors from shared memory are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UmemLayout {
    frame_size: u32,
    frames: u32,
    rx_frames: u32,
}

/// What an rx descriptor turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxDesc {
    /// A packet of `len` bytes at UMEM offset `at`, in rx frame `frame`.
    Packet { frame: u32, at: usize, len: usize },
    /// An rx frame, but no packet we can take (empty, past the frame's
    /// end, longer than a buffer, or a multi-buffer fragment): the frame
    /// is recycled, the descriptor dropped.
    Malformed { frame: u32 },
    /// Not an rx frame at all: dropped, nothing recycled.
    Foreign,
}

impl UmemLayout {
    fn bytes(&self) -> usize {
        self.frames as usize * self.frame_size as usize
    }

    fn tx_frames(&self) -> u32 {
        self.frames - self.rx_frames
    }

    /// The UMEM address of frame `frame`'s first byte.
    fn base(&self, frame: u32) -> u64 {
        u64::from(frame) * u64::from(self.frame_size)
    }

    /// The frame holding `addr`, if `addr` is inside the UMEM.
    fn frame_of(&self, addr: u64) -> Option<u32> {
        let frame = addr / u64::from(self.frame_size);
        u32::try_from(frame).ok().filter(|&f| f < self.frames)
    }

    /// Checks an rx descriptor against the layout (not against ownership).
    fn check_rx(&self, addr: u64, len: u32, options: u32) -> RxDesc {
        let Some(frame) = self.frame_of(addr).filter(|&f| f < self.rx_frames) else {
            return RxDesc::Foreign;
        };
        let offset = addr - self.base(frame);
        let len = len as usize;
        let fits = offset + len as u64 <= u64::from(self.frame_size);
        if len == 0 || !fits || len > DATA_SIZE || options & libc::XDP_PKT_CONTD != 0 {
            return RxDesc::Malformed { frame };
        }
        RxDesc::Packet {
            frame,
            at: addr as usize,
            len,
        }
    }

    /// The tx frame a completion names, if it names one.
    fn check_completion(&self, addr: u64) -> Option<u32> {
        self.frame_of(addr).filter(|&f| f >= self.rx_frames)
    }

    /// Largest frame the rx side can hold (the kernel writes after its
    /// headroom) and that a buffer holds.
    fn max_frame(&self) -> usize {
        ((self.frame_size - XDP_PACKET_HEADROOM) as usize).min(DATA_SIZE)
    }
}

/// Entries a consumer may read between our consumer index `cons` and the
/// kernel's producer index `prod` (wrapping). A producer that claims more
/// than the ring holds is not believed: nothing is read.
fn ring_available(size: u32, prod: u32, cons: u32) -> u32 {
    let n = prod.wrapping_sub(cons);
    if n > size {
        0
    } else {
        n
    }
}

/// Free entries for a producer at index `prod` whose consumer (the
/// kernel) is at `cons`; none when the consumer claims to be ahead.
fn ring_free(size: u32, prod: u32, cons: u32) -> u32 {
    size.saturating_sub(prod.wrapping_sub(cons))
}

/// A ring we produce into (fill, tx).
#[derive(Debug)]
struct Producer<T: Plain> {
    mem: RingMemory<T>,
    size: u32,
    /// Our producer index (the shared one lags until `submit`).
    prod: u32,
    /// The kernel's consumer index as last read.
    cons: u32,
}

impl<T: Plain> Producer<T> {
    fn new(mem: RingMemory<T>, size: u32) -> Self {
        let (prod, cons) = (mem.load_producer(), mem.load_consumer());
        Producer {
            mem,
            size,
            prod,
            cons,
        }
    }

    /// Up to `want` free slots, starting at index `self.prod`.
    #[inline]
    fn reserve(&mut self, want: u32) -> u32 {
        if ring_free(self.size, self.prod, self.cons) < want {
            self.cons = self.mem.load_consumer();
        }
        ring_free(self.size, self.prod, self.cons).min(want)
    }

    /// Publishes the next `n` slots, written already.
    #[inline]
    fn submit(&mut self, n: u32) {
        if n > 0 {
            self.prod = self.prod.wrapping_add(n);
            self.mem.store_producer(self.prod);
        }
    }

    /// Entries the kernel has not consumed yet.
    #[inline]
    fn outstanding(&mut self) -> u32 {
        self.cons = self.mem.load_consumer();
        self.prod.wrapping_sub(self.cons).min(self.size)
    }

    #[inline]
    fn needs_wakeup(&self) -> bool {
        self.mem.load_flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// A ring we consume from (rx, completion).
#[derive(Debug)]
struct Consumer<T: Plain> {
    mem: RingMemory<T>,
    size: u32,
    /// Our consumer index (the shared one lags until `release`).
    cons: u32,
    /// The kernel's producer index as last read.
    prod: u32,
}

impl<T: Plain> Consumer<T> {
    fn new(mem: RingMemory<T>, size: u32) -> Self {
        let (prod, cons) = (mem.load_producer(), mem.load_consumer());
        Consumer {
            mem,
            size,
            cons,
            prod,
        }
    }

    /// Up to `max` entries ready, starting at index `self.cons`.
    #[inline]
    fn peek(&mut self, max: u32) -> u32 {
        if ring_available(self.size, self.prod, self.cons) < max {
            self.prod = self.mem.load_producer();
        }
        ring_available(self.size, self.prod, self.cons).min(max)
    }

    /// Gives the next `n` entries, read already, back to the kernel.
    #[inline]
    fn release(&mut self, n: u32) {
        if n > 0 {
            self.cons = self.cons.wrapping_add(n);
            self.mem.store_consumer(self.cons);
        }
    }
}

/// Per-queue counters beyond [`QueueCounters`], written by the owning
/// worker once per burst.
#[derive(Debug, Default)]
struct XdpCounters {
    bad_descriptors: AtomicU64,
    tx_kicks: AtomicU64,
    rx_wakeups: AtomicU64,
}

/// The AF_XDP port's own figures: ours and the kernel's
/// (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfXdpStats {
    /// Rx or completion descriptors that named no frame the kernel held,
    /// or no packet a buffer can take: dropped, never followed.
    pub bad_descriptors: u64,
    /// `sendto` calls made to start transmission.
    pub tx_kicks: u64,
    /// `recvfrom` calls made to wake the driver up for the fill ring.
    pub rx_wakeups: u64,
    /// Kernel: packets dropped for reasons other than an empty fill ring
    /// (e.g. too long for a frame).
    pub kernel_rx_dropped: u64,
    pub kernel_rx_invalid_descs: u64,
    pub kernel_tx_invalid_descs: u64,
    /// Kernel: packets dropped because the rx ring was full.
    pub kernel_rx_ring_full: u64,
    /// Kernel: packets dropped because the fill ring was empty.
    pub kernel_rx_fill_ring_empty: u64,
    pub kernel_tx_ring_empty: u64,
}

/// Everything a queue needs, until a worker takes it.
#[derive(Debug)]
struct QueueParts {
    fill: Producer<u64>,
    rx: Consumer<libc::xdp_desc>,
    tx: Producer<libc::xdp_desc>,
    comp: Consumer<u64>,
    umem: SharedMemory,
}

/// An AF_XDP socket on one interface queue.
#[derive(Debug)]
pub struct AfXdpPort {
    ifname: String,
    queue: u32,
    mac: EthernetAddress,
    peer_mac: EthernetAddress,
    caps: PortCaps,
    zero_copy: bool,
    attach_mode: AttachMode,
    layout: UmemLayout,
    unclaimed: Mutex<Option<QueueParts>>,
    counters: Arc<QueueCounters>,
    xdp_counters: Arc<XdpCounters>,
    // Detached (and its map closed) on drop.
    _program: XdpProgram,
    sock: Arc<OwnedFd>,
}

/// Everything the namespace thread brings back.
struct Opened {
    parts: QueueParts,
    sock: OwnedFd,
    program: XdpProgram,
    zero_copy: bool,
    mac: [u8; 6],
    mtu: u32,
}

impl AfXdpPort {
    /// Opens the socket on `cfg.queue` of the interface (inside
    /// `cfg.netns` when given) and steers that queue's packets to it.
    pub fn create(cfg: &AfXdpConfig) -> Result<Arc<AfXdpPort>, AfXdpError> {
        let layout = cfg.layout()?;
        let opened = match &cfg.netns {
            Some(ns) => super::tap::run_in_netns(ns, || open_here(cfg, layout))??,
            None => open_here(cfg, layout)?,
        };
        let mtu = u16::try_from(opened.mtu)
            .unwrap_or(u16::MAX)
            .min(MAX_MTU)
            .min((layout.max_frame() - caracal_wire::ethernet::HEADER_LEN) as u16);
        let attach_mode = opened.program.mode();
        tracing::info!(
            "af_xdp {} queue {}: {} mode, program in {} mode",
            cfg.ifname,
            cfg.queue,
            if opened.zero_copy {
                "zero-copy"
            } else {
                "copy"
            },
            attach_mode.as_str()
        );
        Ok(Arc::new(AfXdpPort {
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
            mac: EthernetAddress(opened.mac),
            peer_mac: cfg.peer_mac,
            caps: PortCaps { queues: 1, mtu },
            zero_copy: opened.zero_copy,
            attach_mode,
            layout,
            unclaimed: Mutex::new(Some(opened.parts)),
            counters: Arc::default(),
            xdp_counters: Arc::default(),
            _program: opened.program,
            sock: Arc::new(opened.sock),
        }))
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface's own MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// True when the kernel bound the socket in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Where the steering program runs.
    pub fn attach_mode(&self) -> AttachMode {
        self.attach_mode
    }

    /// The driver's and the kernel's counters.
    pub fn xdp_stats(&self) -> AfXdpStats {
        let c = &self.xdp_counters;
        let mut s = AfXdpStats {
            bad_descriptors: c.bad_descriptors.load(Ordering::Relaxed),
            tx_kicks: c.tx_kicks.load(Ordering::Relaxed),
            rx_wakeups: c.rx_wakeups.load(Ordering::Relaxed),
            ..AfXdpStats::default()
        };
        match sys::statistics(self.sock.as_fd()) {
            Ok(k) => {
                s.kernel_rx_dropped = k.rx_dropped;
                s.kernel_rx_invalid_descs = k.rx_invalid_descs;
                s.kernel_tx_invalid_descs = k.tx_invalid_descs;
                s.kernel_rx_ring_full = k.rx_ring_full;
                s.kernel_rx_fill_ring_empty = k.rx_fill_ring_empty_descs;
                s.kernel_tx_ring_empty = k.tx_ring_empty_descs;
            }
            Err(e) => tracing::debug!("af_xdp {}: XDP_STATISTICS: {e}", self.ifname),
        }
        s
    }
}

/// Opens the socket and attaches the program in the calling thread's
/// namespace.
fn open_here(cfg: &AfXdpConfig, layout: UmemLayout) -> Result<Opened, AfXdpError> {
    let io = |what: &'static str| {
        move |source| AfXdpError::Io {
            ifname: cfg.ifname.clone(),
            what,
            source,
        }
    };
    let ifindex = crate::port::sys::ifindex(&cfg.ifname).map_err(io("no such interface"))?;
    let (mac, mtu) = {
        let probe = ifquery::packet_socket(0).map_err(io("socket(AF_PACKET)"))?;
        (
            ifquery::hw_addr(probe.as_fd(), &cfg.ifname).map_err(io("SIOCGIFHWADDR"))?,
            ifquery::mtu(probe.as_fd(), &cfg.ifname).map_err(io("SIOCGIFMTU"))?,
        )
    };

    let umem = SharedMemory::anonymous(layout.bytes(), cfg.hugepages).map_err(io("mmap UMEM"))?;
    let sock = sys::xdp_socket().map_err(io("socket(AF_XDP)"))?;
    let fd = sock.as_fd();
    sys::register_umem(fd, &umem, layout.frame_size).map_err(io("XDP_UMEM_REG"))?;
    let (rx_n, tx_n) = (layout.rx_frames, layout.tx_frames());
    sys::set_ring_size(fd, RingKind::Fill, rx_n).map_err(io("XDP_UMEM_FILL_RING"))?;
    sys::set_ring_size(fd, RingKind::Completion, tx_n).map_err(io("XDP_UMEM_COMPLETION_RING"))?;
    sys::set_ring_size(fd, RingKind::Rx, rx_n).map_err(io("XDP_RX_RING"))?;
    sys::set_ring_size(fd, RingKind::Tx, tx_n).map_err(io("XDP_TX_RING"))?;
    let offsets = sys::mmap_offsets(fd).map_err(io("XDP_MMAP_OFFSETS"))?;
    let fill = Producer::new(
        RingMemory::map(fd, RingKind::Fill, rx_n, &offsets).map_err(io("mmap fill ring"))?,
        rx_n,
    );
    let comp = Consumer::new(
        RingMemory::map(fd, RingKind::Completion, tx_n, &offsets)
            .map_err(io("mmap completion ring"))?,
        tx_n,
    );
    let rx = Consumer::new(
        RingMemory::map(fd, RingKind::Rx, rx_n, &offsets).map_err(io("mmap rx ring"))?,
        rx_n,
    );
    let tx = Producer::new(
        RingMemory::map(fd, RingKind::Tx, tx_n, &offsets).map_err(io("mmap tx ring"))?,
        tx_n,
    );

    // The program first: where it runs decides how to bind. Until the
    // socket is in the map, the queue's packets pass to the kernel.
    let program =
        XdpProgram::attach(ifindex, cfg.queue + 1, cfg.mode.attach_modes()).map_err(|e| {
            AfXdpError::Io {
                ifname: cfg.ifname.clone(),
                what: e.what,
                source: e.source,
            }
        })?;
    sys::bind(fd, ifindex, cfg.queue, cfg.mode.bind_flags(program.mode())).map_err(io("bind"))?;
    let zero_copy = sys::zero_copy(fd).map_err(io("XDP_OPTIONS"))?;
    program
        .insert(cfg.queue, fd)
        .map_err(io("bpf(BPF_MAP_UPDATE_ELEM, XSKMAP)"))?;
    Ok(Opened {
        parts: QueueParts {
            fill,
            rx,
            tx,
            comp,
            umem,
        },
        sock,
        program,
        zero_copy,
        mac,
        mtu,
    })
}

impl Port for AfXdpPort {
    fn kind(&self) -> PortKind {
        PortKind::AfXdp
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }

    fn peer_mac(&self) -> EthernetAddress {
        self.peer_mac
    }

    fn open_queue(&self, worker: usize) -> Option<Box<dyn PortQueue>> {
        if worker != 0 {
            return None;
        }
        let parts = self
            .unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(Box::new(AfXdpQueue::new(
            self.layout,
            parts,
            usize::from(self.caps.mtu) + caracal_wire::ethernet::HEADER_LEN,
            self.sock.clone(),
            self.counters.clone(),
            self.xdp_counters.clone(),
        )))
    }

    fn stats(&self) -> PortStats {
        PortStats::sum([&*self.counters])
    }
}

/// The queue of an AF_XDP port, owned by one worker.
#[derive(Debug)]
pub struct AfXdpQueue {
    layout: UmemLayout,
    fill: Producer<u64>,
    rx: Consumer<libc::xdp_desc>,
    tx: Producer<libc::xdp_desc>,
    comp: Consumer<u64>,
    umem: SharedMemory,
    /// Which frames the kernel holds (on the fill or tx ring, or being
    /// filled or sent): only those may come back in a descriptor.
    in_kernel: Vec<bool>,
    /// Rx frames waiting for room on the fill ring.
    rx_spare: Vec<u32>,
    /// Tx frames of ours, free.
    tx_free: Vec<u32>,
    /// Longest frame the interface takes (MTU + Ethernet header).
    max_frame: usize,
    sock: Arc<OwnedFd>,
    counters: Arc<QueueCounters>,
    xdp_counters: Arc<XdpCounters>,
}

impl AfXdpQueue {
    /// The queue over `parts`, every rx frame put on the fill ring.
    fn new(
        layout: UmemLayout,
        parts: QueueParts,
        max_frame: usize,
        sock: Arc<OwnedFd>,
        counters: Arc<QueueCounters>,
        xdp_counters: Arc<XdpCounters>,
    ) -> Self {
        let mut q = AfXdpQueue {
            layout,
            umem: parts.umem,
            fill: parts.fill,
            rx: parts.rx,
            tx: parts.tx,
            comp: parts.comp,
            in_kernel: vec![false; layout.frames as usize],
            rx_spare: (0..layout.rx_frames).rev().collect(),
            tx_free: (layout.rx_frames..layout.frames).rev().collect(),
            max_frame,
            sock,
            counters,
            xdp_counters,
        };
        q.refill();
        q
    }

    /// Puts spare rx frames on the fill ring.
    fn refill(&mut self) {
        let n = self.fill.reserve(self.rx_spare.len() as u32);
        for i in 0..n {
            let Some(frame) = self.rx_spare.pop() else {
                break;
            };
            self.fill
                .mem
                .write(self.fill.prod.wrapping_add(i), self.layout.base(frame));
            self.in_kernel[frame as usize] = true;
        }
        self.fill.submit(n);
    }

    /// Takes back the tx frames the kernel is done with. Returns the
    /// number of bad completions.
    fn reclaim(&mut self) -> u64 {
        let n = self.comp.peek(self.comp.size);
        let mut bad = 0;
        for i in 0..n {
            let addr = self.comp.mem.read(self.comp.cons.wrapping_add(i));
            match self.layout.check_completion(addr) {
                Some(f) if self.in_kernel[f as usize] => {
                    self.in_kernel[f as usize] = false;
                    self.tx_free.push(f);
                }
                _ => bad += 1,
            }
        }
        self.comp.release(n);
        bad
    }

    /// Kicks the kernel while the tx ring needs it and it makes progress.
    fn kick(&mut self) -> u64 {
        let mut kicks = 0;
        while kicks < u64::from(MAX_KICKS) && self.tx.needs_wakeup() {
            let before = self.tx.outstanding();
            if before == 0 {
                break;
            }
            kicks += 1;
            match sys::kick_tx(self.sock.as_fd()) {
                Ok(Kick::Done) => break,
                Ok(Kick::Again) => {
                    if self.tx.outstanding() == before {
                        // No progress (a busy driver): the next burst
                        // kicks again.
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!("af_xdp tx kick: {e}");
                    break;
                }
            }
        }
        kicks
    }
}

impl PortQueue for AfXdpQueue {
    fn rx_burst(&mut self, port: PortId, cache: &mut BufferCache, out: &mut Frame) -> usize {
        let n = self.rx.peek(out.room() as u32);
        let (mut packets, mut bytes, mut no_buffer, mut bad) = (0u64, 0u64, 0u64, 0u64);
        let mut too_long = 0u64;
        let room = cache.pool().data_size();
        let mut taken = 0;
        while taken < n {
            let d = self.rx.mem.read(self.rx.cons.wrapping_add(taken));
            match self.layout.check_rx(d.addr, d.len, d.options) {
                // Longer than a buffer of this worker's pool (a pool
                // smaller than the default): dropped whole.
                RxDesc::Packet { frame, len, .. }
                    if self.in_kernel[frame as usize] && len > room =>
                {
                    too_long += 1;
                    self.in_kernel[frame as usize] = false;
                    self.rx_spare.push(frame);
                }
                RxDesc::Packet { frame, at, len } if self.in_kernel[frame as usize] => {
                    let Some(mut b) = cache.alloc() else {
                        // Left on the ring for the next burst.
                        no_buffer += 1;
                        break;
                    };
                    let mut p = cache.pool().packet(&mut b);
                    *p.meta_mut() = Meta::received(port, len as u16);
                    self.umem.copy_out(at, p.data_mut());
                    out.push(b);
                    packets += 1;
                    bytes += len as u64;
                    self.in_kernel[frame as usize] = false;
                    self.rx_spare.push(frame);
                }
                RxDesc::Malformed { frame } if self.in_kernel[frame as usize] => {
                    bad += 1;
                    self.in_kernel[frame as usize] = false;
                    self.rx_spare.push(frame);
                }
                // A frame the kernel does not hold, or none of ours.
                _ => bad += 1,
            }
            taken += 1;
        }
        self.rx.release(taken);
        self.refill();
        let mut wakeups = 0;
        if n == 0 && self.fill.needs_wakeup() {
            sys::wake_rx(self.sock.as_fd());
            wakeups = 1;
        }
        let c = &self.counters;
        bump(&c.rx_packets, packets);
        bump(&c.rx_bytes, bytes);
        bump(&c.rx_no_buffer, no_buffer);
        bump(&c.rx_too_long, too_long);
        bump(&self.xdp_counters.bad_descriptors, bad);
        bump(&self.xdp_counters.rx_wakeups, wakeups);
        packets as usize
    }

    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame) {
        let bad = self.reclaim();
        let want = pkts.len().min(self.tx_free.len()) as u32;
        let mut room = self.tx.reserve(want);
        let (mut sent, mut bytes, mut errors) = (0u32, 0u64, 0u64);
        for mut b in pkts.drain() {
            let p = cache.pool().packet(&mut b);
            let data = p.data();
            if room == 0 || data.is_empty() || data.len() > self.max_frame {
                errors += 1;
            } else if let Some(frame) = self.tx_free.pop() {
                let addr = self.layout.base(frame);
                self.umem.copy_in(addr as usize, data);
                let d = libc::xdp_desc {
                    addr,
                    len: data.len() as u32,
                    options: 0,
                };
                self.tx.mem.write(self.tx.prod.wrapping_add(sent), d);
                self.in_kernel[frame as usize] = true;
                sent += 1;
                room -= 1;
                bytes += data.len() as u64;
            } else {
                errors += 1;
            }
            cache.free(b);
        }
        self.tx.submit(sent);
        let kicks = self.kick();
        let c = &self.counters;
        bump(&c.tx_packets, u64::from(sent));
        bump(&c.tx_bytes, bytes);
        bump(&c.tx_errors, errors);
        bump(&self.xdp_counters.bad_descriptors, bad);
        bump(&self.xdp_counters.tx_kicks, kicks);
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> UmemLayout {
        AfXdpConfig::new("eth0").layout().unwrap()
    }

    #[test]
    fn the_default_umem_is_split_in_halves() {
        let l = layout();
        assert_eq!((l.frames, l.rx_frames, l.tx_frames()), (4096, 2048, 2048));
        assert_eq!(l.bytes(), 8 << 20);
        assert_eq!(l.max_frame(), 1792);
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = AfXdpConfig::new("");
        assert!(c.layout().is_err());
        c.ifname = "eth0".into();
        for frames in [63, 100, 32, 1 << 17] {
            c.frames = frames;
            assert!(c.layout().is_err(), "{frames} frames");
        }
        c.frames = 64;
        c.frame_size = 3000;
        assert!(c.layout().is_err());
        c.frame_size = 4096;
        let l = c.layout().unwrap();
        assert_eq!((l.rx_frames, l.max_frame()), (32, DATA_SIZE));
    }

    #[test]
    fn ring_indices_wrap() {
        // Empty, partly full, full, and across the u32 wrap.
        assert_eq!(ring_available(8, 5, 5), 0);
        assert_eq!(ring_available(8, 7, 5), 2);
        assert_eq!(ring_available(8, 2, u32::MAX - 1), 4);
        assert_eq!(ring_free(8, 5, 5), 8);
        assert_eq!(ring_free(8, 13, 5), 0);
        assert_eq!(ring_free(8, 1, u32::MAX - 2), 4);
    }

    #[test]
    fn ring_indices_that_cannot_be_are_not_believed() {
        // A producer claiming more than the ring holds, or behind us.
        assert_eq!(ring_available(8, 17, 5), 0);
        assert_eq!(ring_available(8, 4, 5), 0);
        // A consumer ahead of our producer.
        assert_eq!(ring_free(8, 5, 6), 0);
    }

    #[test]
    fn rx_descriptors_are_checked_against_the_umem() {
        let l = layout();
        let f = 3u32;
        let base = l.base(f);
        assert_eq!(
            l.check_rx(base + 256, 1514, 0),
            RxDesc::Packet {
                frame: f,
                at: base as usize + 256,
                len: 1514
            }
        );
        // Exactly to the frame's end is fine, one past is not.
        assert!(matches!(
            l.check_rx(base + 256, 1792, 0),
            RxDesc::Packet { .. }
        ));
        assert_eq!(
            l.check_rx(base + 256, 1793, 0),
            RxDesc::Malformed { frame: f }
        );
        assert_eq!(l.check_rx(base, 0, 0), RxDesc::Malformed { frame: f });
        assert_eq!(
            l.check_rx(base + 256, 64, libc::XDP_PKT_CONTD),
            RxDesc::Malformed { frame: f }
        );
        // Tx frames, past the UMEM, absurd addresses.
        assert_eq!(l.check_rx(l.base(l.rx_frames), 64, 0), RxDesc::Foreign);
        assert_eq!(l.check_rx(l.bytes() as u64, 64, 0), RxDesc::Foreign);
        assert_eq!(l.check_rx(u64::MAX, u32::MAX, 0), RxDesc::Foreign);
        assert_eq!(
            l.check_rx(base + 2047, u32::MAX, 0),
            RxDesc::Malformed { frame: f }
        );
    }

    #[test]
    fn a_buffer_bounds_packets_of_big_frames() {
        let mut c = AfXdpConfig::new("eth0");
        c.frame_size = 4096;
        let l = c.layout().unwrap();
        assert!(matches!(
            l.check_rx(l.base(1) + 256, DATA_SIZE as u32, 0),
            RxDesc::Packet { .. }
        ));
        assert_eq!(
            l.check_rx(l.base(1) + 256, DATA_SIZE as u32 + 1, 0),
            RxDesc::Malformed { frame: 1 }
        );
    }

    #[test]
    fn completions_must_name_tx_frames() {
        let l = layout();
        assert_eq!(l.check_completion(l.base(l.rx_frames)), Some(l.rx_frames));
        assert_eq!(
            l.check_completion(l.base(l.frames - 1) + 100),
            Some(l.frames - 1)
        );
        assert_eq!(l.check_completion(l.base(0)), None);
        assert_eq!(l.check_completion(l.bytes() as u64), None);
        assert_eq!(l.check_completion(u64::MAX), None);
    }

    #[test]
    fn modes_parse_and_choose_bind_flags() {
        assert_eq!("zc".parse::<XdpMode>(), Ok(XdpMode::ZeroCopy));
        assert_eq!("skb".parse::<XdpMode>(), Ok(XdpMode::Skb));
        assert!("fast".parse::<XdpMode>().is_err());
        let w = libc::XDP_USE_NEED_WAKEUP;
        assert_eq!(XdpMode::Auto.bind_flags(AttachMode::Driver), w);
        assert_eq!(
            XdpMode::Auto.bind_flags(AttachMode::Skb),
            w | libc::XDP_COPY
        );
        assert_eq!(
            XdpMode::ZeroCopy.bind_flags(AttachMode::Driver),
            w | libc::XDP_ZEROCOPY
        );
        assert_eq!(XdpMode::Skb.attach_modes(), [AttachMode::Skb]);
    }

    proptest::proptest! {
        /// Whatever the kernel writes in a descriptor, what the driver
        /// reads is inside one rx frame and fits a buffer, and what it
        /// recycles is an rx frame.
        #[test]
        fn no_rx_descriptor_leads_outside_its_frame(
            addr in proptest::prop_oneof![
                0u64..(8 << 20) + 8192,
                proptest::arbitrary::any::<u64>()
            ],
            len in proptest::prop_oneof![0u32..4096, proptest::arbitrary::any::<u32>()],
            options in 0u32..4,
            big in proptest::arbitrary::any::<bool>(),
        ) {
            let mut c = AfXdpConfig::new("eth0");
            c.frame_size = if big { 4096 } else { 2048 };
            let l = c.layout().unwrap();
            match l.check_rx(addr, len, options) {
                RxDesc::Packet { frame, at, len } => {
                    let start = l.base(frame) as usize;
                    proptest::prop_assert!(frame < l.rx_frames);
                    proptest::prop_assert!(at >= start && (1..=DATA_SIZE).contains(&len));
                    proptest::prop_assert!(at + len <= start + l.frame_size as usize);
                }
                RxDesc::Malformed { frame } => proptest::prop_assert!(frame < l.rx_frames),
                RxDesc::Foreign => {}
            }
        }
    }

    #[test]
    fn a_missing_interface_is_an_error() {
        let err = AfXdpPort::create(&AfXdpConfig::new("caracal-none0")).unwrap_err();
        assert!(matches!(err, AfXdpError::Io { .. }), "{err}");
    }
}
