//! The memif port driver: a native implementation of the shared-memory
//! packet interface of FD.io VPP, libmemif and DPDK's `net_memif`,
//! protocol version 2.0, wire-compatible with them.
//!
//! A [`MemifPort`] is a server (listening on a Unix socket, filesystem or
//! abstract `@name`) or a client (connecting to one) for one interface
//! id. Its background control thread ([`control`]) runs the handshake,
//! keeps serving or reconnecting after the peer goes away, and closes the
//! connection when the data path catches the peer misbehaving; the
//! dataplane keeps running throughout. The thread never touches packets.
//!
//! The module is split by role, as VPP's plugin is: [`abi`] (message and
//! ring layouts), [`control`] (socket protocol), [`region`] (shared memory
//! files), [`rx`] and [`tx`] (bursts over the rings), and [`sys`] (the
//! system calls; with `abi`'s marker trait the only `unsafe`).
//!
//! Data path: worker `w` owns queue `w` and receives from ring `w`; it
//! transmits on ring `w % n` where `n` is the number of rings the peer
//! accepted (queues share a ring under a lock only when the peer offered
//! fewer rings than we have queues). Bursts make no system call except,
//! once per burst, an interrupt eventfd write when the peer asked for
//! interrupts, and, in interrupt mode, reading our own eventfds when a
//! burst finds the ring empty. In [`RxMode::Interrupt`] the queue's
//! [`PortQueue::rx_fd`] is a per-queue epoll that turns readable when the
//! peer signals, so adaptive workers sleep; in [`RxMode::Polling`] we mask
//! the peer's interrupts and the worker polls.
//!
//! **Copies.** Every mode copies: rx copies from the peer's buffers into
//! ours, tx from ours into the peer's (server) or our own shared buffers
//! (client). Zero copy (client buffers carved from the packet arena) is
//! future work.
//!
//! **Untrusted peer.** Every index the peer publishes is checked to be at
//! most a ring away from ours, and every descriptor's region, offset and
//! length against the regions we mapped, before memory is touched; peer
//! regions must be sealed memory files at least as long as announced, and
//! not on hugetlbfs (see [`region`]). A violation closes the connection
//! with a log line and counts in
//! [`MemifStatus::peer_faults`]; it never panics and never reads or
//! writes outside the peer's regions.

pub mod abi;
mod connection;
mod control;
#[doc(hidden)]
pub mod fuzzing;
mod region;
mod rx;
mod sys;
mod tx;

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use caracal_wire::EthernetAddress;

use self::abi::{Secret, MAX_LOG2_RING_SIZE, SECRET_SIZE};
pub use self::connection::Direction;
use self::connection::{Connection, Doorbell, PeerFault};
use self::control::{Control, Listener};
use self::rx::RxStats;
use self::tx::TxStats;
use super::{bump, Port, PortCaps, PortId, PortKind, PortQueue, PortStats, QueueCounters};
use crate::buffer::{BufferCache, Frame, DATA_SIZE, MAX_DATA_SIZE};

/// Descriptors per ring a client creates unless told otherwise (as VPP,
/// libmemif and DPDK).
pub const DEFAULT_RING_SIZE: u16 = 1024;
/// Largest ring, descriptors.
pub const MAX_RING_SIZE: u16 = 1 << MAX_LOG2_RING_SIZE;
/// Bytes per buffer a client creates unless told otherwise.
pub const DEFAULT_BUFFER_SIZE: u16 = 2048;
/// Smallest buffer we create, bytes.
pub const MIN_BUFFER_SIZE: u16 = 128;
/// Most queue pairs (ring indices are announced as `u16`, DPDK takes 256).
pub const MAX_QUEUES: u16 = 256;
/// Largest IP MTU whose Ethernet frame fits a buffer of a default pool
/// ([`DATA_SIZE`]): what the dataplane's memif interfaces carry.
pub const MAX_MTU: u16 = (DATA_SIZE - caracal_wire::ethernet::HEADER_LEN) as u16;
/// Largest IP MTU the driver accepts: a frame longer than a ring buffer
/// travels as a chain of descriptors, and a receiver needs a pool whose
/// data room holds it ([`crate::buffer::BufferPool::with_data_size`];
/// longer frames are dropped and counted in [`MemifStatus::rx_bad_length`]
/// and the queues' `rx_too_long`).
pub const MAX_JUMBO_MTU: u16 = (MAX_DATA_SIZE - caracal_wire::ethernet::HEADER_LEN) as u16;

/// Which end of the control socket we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Listens; the client brings the shared memory. What the dataplane is
    /// for pods.
    #[default]
    Server,
    /// Connects (and reconnects) to a server and creates the memory.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// What the frames on the rings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Ethernet frames.
    #[default]
    Ethernet,
    /// Bare IPv4/IPv6 packets (no Ethernet header).
    Ip,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ethernet => "ethernet",
            Mode::Ip => "ip",
        }
    }
}

/// How our side learns that packets arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxMode {
    /// The peer signals an eventfd once per burst; adaptive workers sleep.
    #[default]
    Interrupt,
    /// The peer is asked not to signal; the worker polls the rings every
    /// loop (so an adaptive worker with such a queue never sleeps): for
    /// poll-mode workers, where it spares the peer a syscall per burst.
    Polling,
}

impl RxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RxMode::Interrupt => "interrupt",
            RxMode::Polling => "polling",
        }
    }
}

/// Where the control socket is.
///
/// DPDK's `net_memif` (21.11 and later) puts its sockets in the abstract
/// namespace unless given `socket-abstract=no`: a DPDK peer with
/// `socket=/run/x.sock` and that default meets us at `@/run/x.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// A filesystem path (absolute).
    Path(PathBuf),
    /// A name in the network namespace's abstract socket namespace,
    /// written `@name`.
    Abstract(String),
}

impl SocketAddress {
    /// `@name` is abstract; anything else must be an absolute path.
    pub fn parse(path: &Path) -> Result<SocketAddress, MemifError> {
        let bad =
            |why: &str| MemifError::InvalidConfig(format!("socket {}: {why}", path.display()));
        let text = path.to_str();
        if let Some(name) = text.and_then(|t| t.strip_prefix('@')) {
            if name.is_empty() || name.len() > 106 {
                return Err(bad("an abstract name has 1 to 106 bytes"));
            }
            return Ok(SocketAddress::Abstract(name.to_owned()));
        }
        if !path.is_absolute() {
            return Err(bad("not an absolute path (or @name)"));
        }
        if path.as_os_str().len() > 107 {
            return Err(bad("longer than a Unix socket path may be (107 bytes)"));
        }
        Ok(SocketAddress::Path(path.to_owned()))
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Path(p) => p.display().fmt(f),
            SocketAddress::Abstract(n) => write!(f, "@{n}"),
        }
    }
}

/// What memif interface to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifConfig {
    /// Our interface name, sent to the peer (first 31 bytes).
    pub name: String,
    pub socket: SocketAddress,
    pub role: Role,
    /// Interface id on the socket (both sides must agree).
    pub id: u32,
    /// Shared secret, at most 24 bytes; a server with one refuses
    /// clients without it.
    pub secret: Option<String>,
    /// Queue pairs, 1 to [`MAX_QUEUES`]; normally one per worker.
    pub queues: u16,
    pub mode: Mode,
    pub rx_mode: RxMode,
    /// Descriptors per ring, a power of two up to [`MAX_RING_SIZE`]: what
    /// a client creates, the most a server accepts. 0: a client creates
    /// [`DEFAULT_RING_SIZE`], a server accepts up to [`MAX_RING_SIZE`].
    pub ring_size: u16,
    /// Bytes per buffer a client creates (0: [`DEFAULT_BUFFER_SIZE`]);
    /// a server uses the client's.
    pub buffer_size: u16,
    /// MAC of the far side, the destination of the frames we send.
    pub peer_mac: EthernetAddress,
    /// IP MTU, bytes.
    pub mtu: u16,
    /// Put a client's region on hugepages when there are some.
    pub hugepages: bool,
}

/// Why a memif port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MemifError {
    #[error("invalid memif configuration: {0}")]
    InvalidConfig(String),
    #[error("memif socket {0} is in use by a running server")]
    SocketInUse(String),
    #[error("memif socket {socket}: {source}")]
    Socket { socket: String, source: io::Error },
    #[error("memif: {0}")]
    Io(#[from] io::Error),
}

/// A validated configuration, with defaults resolved.
#[derive(Debug)]
struct Settings {
    name: String,
    socket: SocketAddress,
    role: Role,
    id: u32,
    secret: Option<Secret>,
    queues: u16,
    mode: Mode,
    rx_mode: RxMode,
    log2_ring_size: u8,
    buffer_size: u32,
    peer_mac: EthernetAddress,
    gateway_mac: EthernetAddress,
    mtu: u16,
    hugepages: bool,
}

impl MemifConfig {
    fn settings(&self) -> Result<Settings, MemifError> {
        let bad = |why: String| Err(MemifError::InvalidConfig(why));
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return bad(format!(
                "{} queues: a memif has 1 to {MAX_QUEUES}",
                self.queues
            ));
        }
        let ring_size = match (self.ring_size, self.role) {
            (0, Role::Client) => DEFAULT_RING_SIZE,
            (0, Role::Server) => MAX_RING_SIZE,
            (n, _) => n,
        };
        if !ring_size.is_power_of_two() || !(2..=MAX_RING_SIZE).contains(&ring_size) {
            return bad(format!(
                "ring size {ring_size}: a power of two from 2 to {MAX_RING_SIZE}"
            ));
        }
        let buffer_size = match self.buffer_size {
            0 => DEFAULT_BUFFER_SIZE,
            n => n,
        };
        if buffer_size < MIN_BUFFER_SIZE {
            return bad(format!(
                "buffer size {buffer_size}: at least {MIN_BUFFER_SIZE} bytes"
            ));
        }
        // A client's region holds every ring's buffers; descriptor
        // offsets are 32-bit.
        let region = u64::from(self.queues) * 2 * u64::from(ring_size) * u64::from(buffer_size);
        if self.role == Role::Client && region >= 1 << 32 {
            return bad(format!(
                "{} queues of {ring_size} {buffer_size}-byte buffers need more than 4 GiB",
                self.queues
            ));
        }
        let secret = match &self.secret {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) if s.contains('\0') => return bad("the secret contains NUL".into()),
            Some(s) => match Secret::new(s) {
                Some(secret) => Some(secret),
                None => return bad(format!("the secret is longer than {SECRET_SIZE} bytes")),
            },
        };
        if self.mtu < 68 || self.mtu > MAX_JUMBO_MTU {
            return bad(format!("mtu {}: must be 68 to {MAX_JUMBO_MTU}", self.mtu));
        }
        Ok(Settings {
            name: self.name.clone(),
            socket: self.socket.clone(),
            role: self.role,
            id: self.id,
            secret,
            queues: self.queues,
            mode: self.mode,
            rx_mode: self.rx_mode,
            log2_ring_size: ring_size.trailing_zeros() as u8,
            buffer_size: u32::from(buffer_size),
            peer_mac: self.peer_mac,
            gateway_mac: crate::tables::Gateway::default().mac,
            mtu: self.mtu,
            hugepages: self.hugepages,
        })
    }
}

/// One ring as `show interfaces` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifRingStatus {
    pub direction: Direction,
    pub index: u16,
    /// Descriptors.
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    /// The consumer asked not to be signalled.
    pub interrupts_masked: bool,
}

/// A memif port's connection state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemifStatus {
    pub connected: bool,
    /// The peer's application name (from HELLO or INIT).
    pub peer_name: String,
    /// The peer's interface name (from CONNECT or CONNECTED).
    pub peer_interface: String,
    pub peer_pid: Option<u32>,
    pub rings: Vec<MemifRingStatus>,
    /// Sizes of the shared regions, bytes.
    pub regions: Vec<u64>,
    /// Our own region is on hugepages (client).
    pub hugepages: bool,
    /// Bytes per buffer of our region (client), 0 for a server.
    pub buffer_size: u32,
    /// Connections established since the port was created.
    pub connects: u64,
    pub disconnects: u64,
    /// Connections closed because the peer broke the protocol.
    pub peer_faults: u64,
    /// Received packets dropped: empty, longer than a buffer of the pool
    /// (those also count in the queues' `rx_too_long`), or not IP in IP
    /// mode.
    pub rx_bad_length: u64,
    /// Why the last connection (or attempt) ended.
    pub last_disconnect: String,
}

/// What the control thread records about the link, changed together
/// with the published connection so a status is one consistent snapshot.
#[derive(Debug, Default)]
struct LinkInfo {
    peer_pid: Option<u32>,
    last_disconnect: String,
    connects: u64,
    disconnects: u64,
    peer_faults: u64,
}

/// One queue pair's shared state.
#[derive(Debug)]
struct QueueShared {
    counters: Arc<QueueCounters>,
    rx_bad_length: AtomicU64,
    /// The queue's `rx_fd`: watches the current connection's rx eventfd
    /// and `kick`.
    epoll: sys::Epoll,
    /// Rung when the connection changes, to wake a sleeping worker.
    kick: Doorbell,
    claimed: AtomicBool,
}

/// What the port, its queues and its control thread share.
#[derive(Debug)]
struct Shared {
    settings: Arc<Settings>,
    /// The current connection; workers copy it when `epoch` moves.
    conn: Mutex<Option<Arc<Connection>>>,
    epoch: AtomicU64,
    next_connection: AtomicU64,
    queues: Box<[QueueShared]>,
    /// Wakes the control thread (stop, or a fault to act on).
    wake: Doorbell,
    stop: AtomicBool,
    /// A fault the data path found: (connection id, what).
    fault: Mutex<Option<(u64, PeerFault)>>,
    /// Locked before `conn` when both are.
    link: Mutex<LinkInfo>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn current(&self) -> Option<Arc<Connection>> {
        lock(&self.conn).clone()
    }

    /// Makes `conn` the connection workers use (`None`: disconnected)
    /// and wakes them. In interrupt mode each rx ring's eventfd joins its
    /// queue's epoll; a descriptor epoll refuses fails the publication.
    fn publish(&self, conn: Option<Arc<Connection>>) -> io::Result<()> {
        let mut current = lock(&self.conn);
        if self.settings.rx_mode == RxMode::Interrupt {
            if let Some(new) = &conn {
                for (i, (rx, q)) in new.rx.iter().zip(self.queues.iter()).enumerate() {
                    if let Err(e) = q.epoll.add(rx.interrupt.fd()) {
                        for (rx, q) in new.rx.iter().zip(self.queues.iter()).take(i) {
                            q.epoll.remove(rx.interrupt.fd());
                        }
                        return Err(e);
                    }
                }
            }
            if let Some(old) = current.as_ref() {
                for (rx, q) in old.rx.iter().zip(self.queues.iter()) {
                    q.epoll.remove(rx.interrupt.fd());
                }
            }
        }
        *current = conn;
        self.epoch.fetch_add(1, Ordering::Release);
        drop(current);
        for q in self.queues.iter() {
            q.kick.ring();
        }
        Ok(())
    }

    /// Publishes a new connection and records it.
    fn connected(&self, conn: Arc<Connection>, peer_pid: Option<u32>) -> io::Result<()> {
        let mut link = lock(&self.link);
        self.publish(Some(conn.clone()))?;
        link.connects += 1;
        link.peer_pid = peer_pid;
        drop(link);
        tracing::info!(
            interface = %self.settings.name,
            role = self.settings.role.as_str(),
            socket = %self.settings.socket,
            peer = %conn.peer_name,
            peer_interface = %conn.peer_interface,
            pid = peer_pid,
            rx_rings = conn.rx.len(),
            tx_rings = conn.tx.len(),
            ring_size = conn.rx.first().map_or(0, |r| r.ring.size()),
            "memif connected"
        );
        Ok(())
    }

    fn last_disconnect(&self) -> String {
        lock(&self.link).last_disconnect.clone()
    }

    /// Records why a session ended; unpublishes its connection, if it
    /// had one, and counts a fault of the peer's.
    fn disconnected(&self, reason: String, was_connected: bool, peer_fault: bool) {
        let mut link = lock(&self.link);
        if was_connected {
            // Publishing nothing cannot fail.
            let _ = self.publish(None);
            link.disconnects += 1;
        }
        if peer_fault {
            link.peer_faults += 1;
        }
        link.last_disconnect = reason;
        link.peer_pid = None;
    }

    /// Called by a worker: the peer of connection `id` broke the protocol.
    #[cold]
    fn report_fault(&self, id: u64, fault: PeerFault) {
        let mut slot = lock(&self.fault);
        if slot.is_none() {
            *slot = Some((id, fault));
        }
        drop(slot);
        self.wake.ring();
    }

    fn take_fault(&self) -> Option<(u64, PeerFault)> {
        lock(&self.fault).take()
    }
}

/// A memif interface.
#[derive(Debug)]
pub struct MemifPort {
    shared: Arc<Shared>,
    caps: PortCaps,
    control: Option<JoinHandle<()>>,
}

impl MemifPort {
    /// Validates `config`, binds the socket (server) and starts the
    /// control thread, which connects in the background: the port exists
    /// (and drops what it is given to send) before a peer shows up.
    pub fn create(config: &MemifConfig) -> Result<Arc<MemifPort>, MemifError> {
        let settings = Arc::new(config.settings()?);
        let listener = match settings.role {
            Role::Server => Some(Listener::bind(&settings.socket)?),
            Role::Client => None,
        };
        let queues = (0..settings.queues)
            .map(|_| -> io::Result<QueueShared> {
                let epoll = sys::Epoll::new()?;
                let kick = Doorbell::new()?;
                epoll.add(kick.fd())?;
                Ok(QueueShared {
                    counters: Arc::default(),
                    rx_bad_length: AtomicU64::new(0),
                    epoll,
                    kick,
                    claimed: AtomicBool::new(false),
                })
            })
            .collect::<io::Result<Box<[_]>>>()?;
        let caps = PortCaps {
            queues: settings.queues,
            mtu: settings.mtu,
        };
        let shared = Arc::new(Shared {
            settings,
            conn: Mutex::new(None),
            epoch: AtomicU64::new(0),
            next_connection: AtomicU64::new(1),
            queues,
            wake: Doorbell::new()?,
            stop: AtomicBool::new(false),
            fault: Mutex::new(None),
            link: Mutex::default(),
        });
        let control = Control::new(shared.clone(), listener);
        let thread = std::thread::Builder::new()
            .name("caracal-memif".into())
            .spawn(move || control.run())?;
        Ok(Arc::new(MemifPort {
            shared,
            caps,
            control: Some(thread),
        }))
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.shared.conn).is_some()
    }

    /// Waits up to `timeout` for a connection (tests, benchmarks).
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_connected() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    pub fn role(&self) -> Role {
        self.shared.settings.role
    }

    pub fn status(&self) -> MemifStatus {
        let s = &self.shared;
        let link = lock(&s.link);
        let conn = s.current();
        let mut status = MemifStatus {
            connected: conn.is_some(),
            peer_pid: link.peer_pid,
            connects: link.connects,
            disconnects: link.disconnects,
            peer_faults: link.peer_faults,
            rx_bad_length: s
                .queues
                .iter()
                .map(|q| q.rx_bad_length.load(Ordering::Relaxed))
                .sum(),
            last_disconnect: link.last_disconnect.clone(),
            ..MemifStatus::default()
        };
        let Some(conn) = conn else {
            return status;
        };
        status.peer_name = conn.peer_name.clone();
        status.peer_interface = conn.peer_interface.clone();
        status.regions = conn.regions.iter().map(|r| r.size() as u64).collect();
        if conn.role == Role::Client {
            status.hugepages = conn.regions.iter().any(|r| r.hugepages());
            status.buffer_size = s.settings.buffer_size;
        }
        let ring = |direction, index: usize, r: &abi::Ring| MemifRingStatus {
            direction,
            index: index as u16,
            size: r.size(),
            head: r.head(),
            tail: r.tail(),
            interrupts_masked: r.flags() & abi::RING_FLAG_MASK_INT != 0,
        };
        status.rings = conn
            .rx
            .iter()
            .enumerate()
            .map(|(i, r)| ring(Direction::Rx, i, &r.ring))
            .chain(
                conn.tx
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ring(Direction::Tx, i, &r.ring)),
            )
            .collect();
        status
    }
}

impl Drop for MemifPort {
    /// Stops the control thread, which tells a connected peer, closes
    /// the connection and removes a server's socket file.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.ring();
        if let Some(t) = self.control.take() {
            if t.join().is_err() {
                tracing::error!(interface = %self.shared.settings.name, "memif control thread panicked");
            }
        }
    }
}

impl Port for MemifPort {
    fn kind(&self) -> PortKind {
        PortKind::Memif
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }

    fn peer_mac(&self) -> EthernetAddress {
        self.shared.settings.peer_mac
    }

    fn open_queue(&self, worker: usize) -> Option<Box<dyn PortQueue>> {
        let q = self.shared.queues.get(worker)?;
        if q.claimed.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Box::new(MemifQueue {
            shared: self.shared.clone(),
            index: worker,
            epoch: u64::MAX,
            conn: None,
        }))
    }

    fn stats(&self) -> PortStats {
        PortStats::sum(self.shared.queues.iter().map(|q| &*q.counters))
    }
}

/// One queue pair of a memif port, owned by one worker.
#[derive(Debug)]
pub struct MemifQueue {
    shared: Arc<Shared>,
    index: usize,
    /// The `Shared::epoch` our `conn` is from.
    epoch: u64,
    /// The connection this queue uses; `None` while disconnected, or
    /// after we found its peer at fault (until the control thread
    /// replaces it).
    conn: Option<Arc<Connection>>,
}

impl MemifQueue {
    /// Picks up a new connection (or its end): one atomic load per burst.
    #[inline]
    fn sync(&mut self) {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.conn = self.shared.current();
        }
    }

    #[cold]
    fn fault(&mut self, fault: PeerFault) {
        if let Some(conn) = self.conn.take() {
            self.shared.report_fault(conn.id, fault);
        }
    }

    fn queue(&self) -> &QueueShared {
        &self.shared.queues[self.index]
    }

    fn receive(
        &mut self,
        port: PortId,
        cache: &mut BufferCache,
        out: &mut Frame,
        stats: &mut RxStats,
    ) {
        let Some(conn) = &self.conn else {
            return;
        };
        if let Err(fault) = rx::receive(conn, self.index, port, cache, out, stats) {
            self.fault(fault);
        }
    }

    /// Resets the queue's eventfds (its own kick and the connection's
    /// rx interrupt) so the worker's epoll stops reporting them.
    fn drain(&self) {
        self.queue().kick.drain();
        if let Some(rx) = self.conn.as_ref().and_then(|c| c.rx.get(self.index)) {
            rx.interrupt.drain();
        }
    }
}

impl PortQueue for MemifQueue {
    fn rx_burst(&mut self, port: PortId, cache: &mut BufferCache, out: &mut Frame) -> usize {
        self.sync();
        let mut stats = RxStats::default();
        self.receive(port, cache, out, &mut stats);
        if stats.packets == 0
            && stats.bad_length == 0
            && stats.too_long == 0
            && self.shared.settings.rx_mode == RxMode::Interrupt
        {
            // About to look idle: clear the eventfds first, then look
            // again, so a packet published in between is not left
            // waiting for a signal that already came.
            self.drain();
            self.sync();
            self.receive(port, cache, out, &mut stats);
        }
        let c = &self.queue().counters;
        bump(&c.rx_packets, stats.packets);
        bump(&c.rx_bytes, stats.bytes);
        bump(&c.rx_no_buffer, u64::from(stats.no_buffer));
        bump(&c.rx_too_long, stats.too_long);
        bump(
            &self.queue().rx_bad_length,
            stats.bad_length + stats.too_long,
        );
        stats.packets as usize
    }

    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame) {
        self.sync();
        let mut stats = TxStats::default();
        match &self.conn {
            Some(conn) => {
                if let Err(fault) = tx::transmit(conn, self.index, cache, pkts, &mut stats) {
                    self.fault(fault);
                }
            }
            None => {
                stats.errors = pkts.len() as u64;
                for b in pkts.drain() {
                    cache.free(b);
                }
            }
        }
        let c = &self.queue().counters;
        bump(&c.tx_packets, stats.packets);
        bump(&c.tx_bytes, stats.bytes);
        bump(&c.tx_errors, stats.errors);
    }

    fn rx_fd(&self) -> Option<RawFd> {
        match self.shared.settings.rx_mode {
            RxMode::Interrupt => Some(self.queue().epoll.fd()),
            RxMode::Polling => None,
        }
    }
}

impl Drop for MemifQueue {
    fn drop(&mut self) {
        self.queue().claimed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
