//! The memif control channel: a Unix `SOCK_SEQPACKET` socket over which a
//! client and a server agree on regions and rings, with `SCM_RIGHTS`
//! passing the memory files and eventfds.
//!
//! ```text
//! client                                  server
//!    connect ───────────────────────────► accept
//!            ◄──────────────────────────── HELLO (versions, limits)
//!    INIT (version, id, mode, secret) ───►
//!            ◄──────────────────────────── ACK
//!    ADD_REGION + memfd ────────────────►    (once per region)
//!            ◄──────────────────────────── ACK
//!    ADD_RING + eventfd ────────────────►    (once per ring)
//!            ◄──────────────────────────── ACK
//!    CONNECT (interface name) ──────────►
//!            ◄──────────────────────────── CONNECTED (interface name)
//!    ... packets over the rings; either side may send DISCONNECT ...
//! ```
//!
//! The two handshakes ([`ServerHandshake`], [`ClientHandshake`]) are state
//! machines fed decoded messages; they refuse ([`Refusal`], sent back as
//! the DISCONNECT reason) anything out of order or out of bounds. The
//! [`Control`] thread of each port runs them over the socket: a server
//! keeps listening and serves one client at a time (a second one is told
//! "already connected"); a client reconnects with exponential backoff. The
//! thread also closes a connection whose peer the data path caught
//! misbehaving. It never touches packets.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::abi::{
    self, AddRegion, AddRing, Hello, Init, Message, Name, Ring, ADD_RING_FLAG_C2S, COOKIE,
    MAX_LOG2_RING_SIZE, MSG_SIZE, RING_FLAG_MASK_INT, VERSION,
};
use super::connection::{Connection, Doorbell, OwnBuffers, RxRing, TxRing};
use super::region::Region;
use super::sys::{self, UnixAddr};
use super::{MemifError, Mode, Role, RxMode, Settings, Shared, SocketAddress};

/// How long a peer may take from connecting to CONNECTED.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait of a client between connection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Regions we accept from a client (DPDK's limit too).
const MAX_REGIONS: u16 = 256;
/// Pending connections the kernel queues for us.
const BACKLOG: libc::c_int = 8;
/// Our application name in HELLO and INIT.
pub const APP_NAME: &str = concat!("caracal ", env!("CARGO_PKG_VERSION"));

/// Why a handshake or a connection is refused; the peer gets this text as
/// the DISCONNECT reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// An interrupt eventfd received from the peer, made non-blocking so that
/// no read or write of ours can ever wait on it.
fn peer_doorbell(fd: OwnedFd) -> Result<Doorbell, Refusal> {
    sys::set_nonblocking(fd.as_fd()).map_err(|e| Refusal(format!("bad interrupt fd: {e}")))?;
    Ok(Doorbell::from_file(File::from(fd)))
}

// ------------------------------------------------------------------- server

/// A ring a client announced, not yet connected.
#[derive(Debug)]
struct PendingRing {
    region: u16,
    offset: u32,
    log2: u8,
    interrupt: Doorbell,
}

/// What the server side does after a message.
#[derive(Debug)]
pub enum ServerStep {
    Reply(Message),
    /// The handshake is complete: publish the connection, then reply.
    Connected(Connection, Message),
}

/// The server's side of one client's handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    settings: Arc<Settings>,
    init: Option<Init>,
    regions: Vec<Region>,
    /// By ring index, at most `queues` per direction (we say so in HELLO).
    c2s: Vec<Option<PendingRing>>,
    s2c: Vec<Option<PendingRing>>,
}

impl ServerHandshake {
    pub fn new(settings: Arc<Settings>) -> Self {
        let queues = usize::from(settings.queues);
        ServerHandshake {
            settings,
            init: None,
            regions: Vec::new(),
            c2s: (0..queues).map(|_| None).collect(),
            s2c: (0..queues).map(|_| None).collect(),
        }
    }

    /// The first message, sent as soon as the client connects. We offer
    /// as many rings per direction as we have queues.
    pub fn hello(&self) -> Message {
        Message::Hello(Hello {
            name: Name::new(APP_NAME),
            min_version: VERSION,
            max_version: VERSION,
            max_region: MAX_REGIONS - 1,
            max_s2c_ring: self.settings.queues - 1,
            max_c2s_ring: self.settings.queues - 1,
            max_log2_ring_size: self.settings.log2_ring_size,
        })
    }

    pub fn on_message(
        &mut self,
        msg: Message,
        fd: Option<OwnedFd>,
        id: u64,
    ) -> Result<ServerStep, Refusal> {
        let Some(init) = self.init else {
            return match msg {
                Message::Init(init) => self.on_init(init).map(|()| ServerStep::Reply(Message::Ack)),
                other => refuse(format!("expected init, got {}", other.kind())),
            };
        };
        match msg {
            Message::AddRegion(r) => self.on_add_region(r, fd)?,
            Message::AddRing(r) => self.on_add_ring(r, fd)?,
            Message::Connect(name) => {
                let conn = self.connect(id, init, name)?;
                let reply = Message::Connected(Name::new(&self.settings.name));
                return Ok(ServerStep::Connected(conn, reply));
            }
            other => return refuse(format!("unexpected {} during setup", other.kind())),
        }
        Ok(ServerStep::Reply(Message::Ack))
    }

    fn on_init(&mut self, init: Init) -> Result<(), Refusal> {
        let s = &self.settings;
        if init.version != VERSION {
            return refuse(format!(
                "incompatible memif version {}.{} (we speak 2.0)",
                init.version >> 8,
                init.version & 0xff
            ));
        }
        if init.id != s.id {
            return refuse(format!("no interface with id {}", init.id));
        }
        if init.mode != s.mode.abi() {
            return refuse(format!("interface {} is in {} mode", s.id, s.mode.as_str()));
        }
        if let Some(secret) = s.secret {
            if init.secret.is_empty() {
                return refuse("secret required");
            }
            if init.secret != secret {
                return refuse("incorrect secret");
            }
        }
        self.init = Some(init);
        Ok(())
    }

    fn on_add_region(&mut self, r: AddRegion, fd: Option<OwnedFd>) -> Result<(), Refusal> {
        let Some(fd) = fd else {
            return refuse("add_region without a memory fd");
        };
        if usize::from(r.index) != self.regions.len() || r.index >= MAX_REGIONS {
            return refuse(format!("unexpected region index {}", r.index));
        }
        let region = Region::map_peer(fd, r.size)
            .map_err(|e| Refusal(format!("region {}: {e}", r.index)))?;
        self.regions.push(region);
        Ok(())
    }

    fn on_add_ring(&mut self, r: AddRing, fd: Option<OwnedFd>) -> Result<(), Refusal> {
        let Some(fd) = fd else {
            return refuse("add_ring without an interrupt fd");
        };
        let c2s = r.flags & ADD_RING_FLAG_C2S != 0;
        let dir = if c2s { "c2s" } else { "s2c" };
        let rings = if c2s { &mut self.c2s } else { &mut self.s2c };
        let Some(slot) = rings.get_mut(usize::from(r.index)) else {
            return refuse(format!("{dir} ring index {} out of range", r.index));
        };
        if slot.is_some() {
            return refuse(format!("{dir} ring {} added twice", r.index));
        }
        if r.log2_ring_size > self.settings.log2_ring_size {
            return refuse(format!(
                "{dir} ring {}: 2^{} descriptors, more than the 2^{} offered",
                r.index, r.log2_ring_size, self.settings.log2_ring_size
            ));
        }
        if r.private_hdr_size != 0 {
            return refuse("private headers are not supported");
        }
        if usize::from(r.region) >= self.regions.len() {
            return refuse(format!("{dir} ring {}: no region {}", r.index, r.region));
        }
        *slot = Some(PendingRing {
            region: r.region,
            offset: r.offset,
            log2: r.log2_ring_size,
            interrupt: peer_doorbell(fd)?,
        });
        Ok(())
    }

    /// Validates the announced rings and builds the connection.
    fn connect(&mut self, id: u64, init: Init, name: Name) -> Result<Connection, Refusal> {
        let regions = std::mem::take(&mut self.regions);
        let memories: Vec<_> = regions.iter().map(|r| r.memory().clone()).collect();
        let ring = |dir: &str, index: usize, p: &PendingRing| -> Result<Ring, Refusal> {
            let ring = Ring::new(
                memories[usize::from(p.region)].clone(),
                p.offset as usize,
                p.log2,
            )
            .map_err(|e| Refusal(format!("{dir} ring {index}: {e}")))?;
            if ring.cookie() != COOKIE {
                return refuse(format!(
                    "{dir} ring {index}: wrong cookie {:#x}",
                    ring.cookie()
                ));
            }
            Ok(ring)
        };
        let mut rx = Vec::new();
        for (i, p) in contiguous("c2s", &mut self.c2s)?.into_iter().enumerate() {
            let r = ring("c2s", i, &p)?;
            r.set_flags(self.settings.rx_mode.ring_flags());
            // The client's tail is ours to move; carry on from it.
            let position = AtomicU16::new(r.tail());
            rx.push(RxRing {
                ring: r,
                interrupt: p.interrupt,
                position,
                own: None,
            });
        }
        let mut tx = Vec::new();
        for (i, p) in contiguous("s2c", &mut self.s2c)?.into_iter().enumerate() {
            let r = ring("s2c", i, &p)?;
            let tail = r.tail();
            tx.push(TxRing::new(r, p.interrupt, tail, None));
        }
        Ok(Connection {
            id,
            role: Role::Server,
            mode: self.settings.mode,
            regions,
            memories,
            rx,
            tx,
            peer_mac: self.settings.peer_mac,
            gateway_mac: self.settings.gateway_mac,
            peer_name: init.name.text(),
            peer_interface: name.text(),
        })
    }
}

/// The rings of one direction, which must be numbered 0..n with n ≥ 1.
fn contiguous(dir: &str, rings: &mut [Option<PendingRing>]) -> Result<Vec<PendingRing>, Refusal> {
    let n = rings.iter().take_while(|r| r.is_some()).count();
    if n == 0 {
        return refuse(format!("no {dir} ring"));
    }
    if rings[n..].iter().any(Option::is_some) {
        return refuse(format!("{dir} rings are not numbered from 0 without gaps"));
    }
    Ok(rings[..n].iter_mut().filter_map(Option::take).collect())
}

// ------------------------------------------------------------------- client

/// A message to send, with the descriptor it carries.
#[derive(Debug)]
pub struct Outgoing {
    pub msg: Message,
    pub fd: Option<OwnedFd>,
}

/// What the client side does after a message.
#[derive(Debug)]
pub enum ClientStep {
    Send(Outgoing),
    Connected(Connection),
}

/// The region and rings a client made after HELLO.
#[derive(Debug)]
struct ClientLayout {
    region: Region,
    c2s: Vec<(Ring, Doorbell, OwnBuffers)>,
    s2c: Vec<(Ring, Doorbell, OwnBuffers)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Hello,
    Ack,
    Connected,
}

/// The client's side of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    settings: Arc<Settings>,
    awaiting: Awaiting,
    outbox: VecDeque<Outgoing>,
    layout: Option<ClientLayout>,
    peer_name: String,
}

impl ClientHandshake {
    pub fn new(settings: Arc<Settings>) -> Self {
        ClientHandshake {
            settings,
            awaiting: Awaiting::Hello,
            outbox: VecDeque::new(),
            layout: None,
            peer_name: String::new(),
        }
    }

    pub fn on_message(&mut self, msg: Message, id: u64) -> Result<ClientStep, Refusal> {
        match (self.awaiting, msg) {
            (Awaiting::Hello, Message::Hello(h)) => {
                self.on_hello(h)?;
                self.send_next()
            }
            (Awaiting::Ack, Message::Ack) => self.send_next(),
            (Awaiting::Connected, Message::Connected(name)) => self.connected(id, name),
            (_, other) => refuse(format!("unexpected {} from the server", other.kind())),
        }
    }

    fn send_next(&mut self) -> Result<ClientStep, Refusal> {
        let Some(out) = self.outbox.pop_front() else {
            return refuse("nothing left to send");
        };
        self.awaiting = match out.msg {
            Message::Connect(_) => Awaiting::Connected,
            _ => Awaiting::Ack,
        };
        Ok(ClientStep::Send(out))
    }

    /// Sizes the rings to what both sides accept, creates the region
    /// (rings, then every ring's buffers) and queues the setup messages.
    fn on_hello(&mut self, h: Hello) -> Result<(), Refusal> {
        let s = self.settings.clone();
        if h.min_version > VERSION || h.max_version < VERSION {
            return refuse(format!(
                "incompatible memif versions {:#06x}..{:#06x} (we speak 2.0)",
                h.min_version, h.max_version
            ));
        }
        self.peer_name = h.name.text();
        let queues = u32::from(s.queues);
        let n_c2s = queues.min(u32::from(h.max_c2s_ring) + 1) as usize;
        let n_s2c = queues.min(u32::from(h.max_s2c_ring) + 1) as usize;
        let log2 = s.log2_ring_size.min(h.max_log2_ring_size);
        let ring_bytes = abi::ring_bytes(log2);
        let rings = n_c2s + n_s2c;
        let buffers_base = (rings * ring_bytes).next_multiple_of(64);
        let buffer = s.buffer_size as usize;
        let size = buffers_base + (rings << log2) * buffer;
        let region = Region::create(c"caracal-memif", size, s.hugepages)
            .map_err(|e| Refusal(format!("cannot create the shared memory region: {e}")))?;
        let make = |i: usize| -> Result<(Ring, Doorbell, OwnBuffers), Refusal> {
            let ring = Ring::new(region.memory().clone(), i * ring_bytes, log2)
                .map_err(|e| Refusal(format!("ring layout: {e}")))?;
            ring.init();
            let own = OwnBuffers {
                base: buffers_base + ((i << log2) * buffer),
                size: s.buffer_size,
            };
            for slot in 0..ring.size() {
                ring.set_desc(
                    slot,
                    abi::Descriptor {
                        flags: 0,
                        region: 0,
                        length: s.buffer_size,
                        offset: own.offset(&ring, slot) as u32,
                        metadata: 0,
                    },
                );
            }
            let bell = Doorbell::new().map_err(|e| Refusal(format!("eventfd: {e}")))?;
            Ok((ring, bell, own))
        };
        let c2s = (0..n_c2s).map(make).collect::<Result<Vec<_>, _>>()?;
        let s2c = (n_c2s..rings).map(make).collect::<Result<Vec<_>, _>>()?;

        let dup = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| Refusal(format!("dup: {e}")))
        };
        let mut out = VecDeque::new();
        out.push_back(Outgoing {
            msg: Message::Init(Init {
                version: VERSION,
                id: s.id,
                mode: s.mode.abi(),
                secret: s.secret.unwrap_or_default(),
                name: Name::new(APP_NAME),
            }),
            fd: None,
        });
        out.push_back(Outgoing {
            msg: Message::AddRegion(AddRegion {
                index: 0,
                size: region.size() as u64,
            }),
            fd: Some(dup(region.fd())?),
        });
        for (flags, rings) in [(ADD_RING_FLAG_C2S, &c2s), (0, &s2c)] {
            for (index, (ring, bell, _)) in rings.iter().enumerate() {
                out.push_back(Outgoing {
                    msg: Message::AddRing(AddRing {
                        flags,
                        index: index as u16,
                        region: 0,
                        offset: (index + if flags == 0 { n_c2s } else { 0 }) as u32
                            * ring_bytes as u32,
                        log2_ring_size: ring.log2_size(),
                        private_hdr_size: 0,
                    }),
                    fd: Some(dup(bell.fd())?),
                });
            }
        }
        out.push_back(Outgoing {
            msg: Message::Connect(Name::new(&s.name)),
            fd: None,
        });
        self.outbox = out;
        self.layout = Some(ClientLayout { region, c2s, s2c });
        Ok(())
    }

    /// The server agreed: hand it every S2C buffer and build the
    /// connection. (DPDK's server resets ring indices when it gets
    /// CONNECT, so buffers are handed out only now.)
    fn connected(&mut self, id: u64, name: Name) -> Result<ClientStep, Refusal> {
        let Some(layout) = self.layout.take() else {
            return refuse("connected before setup");
        };
        let s = &self.settings;
        let tx = layout
            .c2s
            .into_iter()
            .map(|(ring, bell, own)| {
                let head = ring.head();
                TxRing::new(ring, bell, head, Some(own))
            })
            .collect();
        let rx = layout
            .s2c
            .into_iter()
            .map(|(ring, bell, own)| {
                ring.set_flags(s.rx_mode.ring_flags());
                let tail = ring.tail();
                // Every slot is a fresh buffer already; publish them all.
                ring.set_head(tail.wrapping_add(ring.size()));
                RxRing {
                    ring,
                    interrupt: bell,
                    position: AtomicU16::new(tail),
                    own: Some(own),
                }
            })
            .collect();
        let memories = vec![layout.region.memory().clone()];
        Ok(ClientStep::Connected(Connection {
            id,
            role: Role::Client,
            mode: s.mode,
            regions: vec![layout.region],
            memories,
            rx,
            tx,
            peer_mac: s.peer_mac,
            gateway_mac: s.gateway_mac,
            peer_name: std::mem::take(&mut self.peer_name),
            peer_interface: name.text(),
        }))
    }
}

// ------------------------------------------------------------------ socket

/// A server's listening socket; a filesystem socket is removed when it
/// goes away, unless someone else's socket has replaced it meanwhile.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// The path and the (device, inode) we bound.
    file: Option<(PathBuf, u64, u64)>,
}

impl Listener {
    /// Listens on `addr`. A filesystem socket left behind by a dead
    /// process (nobody accepts on it) is replaced; a live one, or any
    /// other kind of file, is not touched.
    pub fn bind(addr: &SocketAddress) -> Result<Listener, MemifError> {
        match addr {
            SocketAddress::Abstract(name) => {
                let fd = sys::listen(&UnixAddr::Abstract(name.as_bytes()), BACKLOG)
                    .map_err(|e| bind_error(addr, e))?;
                Ok(Listener { fd, file: None })
            }
            SocketAddress::Path(path) => {
                use std::os::unix::ffi::OsStrExt;
                let bytes = path.as_os_str().as_bytes();
                let fd = match sys::listen(&UnixAddr::Path(bytes), BACKLOG) {
                    Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                        let stale = std::fs::symlink_metadata(path)
                            .is_ok_and(|m| m.file_type().is_socket())
                            && sys::connect(&UnixAddr::Path(bytes))
                                .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED));
                        if !stale {
                            return Err(bind_error(addr, e));
                        }
                        tracing::info!(socket = %path.display(), "replacing a stale memif socket");
                        let _ = std::fs::remove_file(path);
                        sys::listen(&UnixAddr::Path(bytes), BACKLOG)
                            .map_err(|e| bind_error(addr, e))?
                    }
                    other => other.map_err(|e| bind_error(addr, e))?,
                };
                let meta = std::fs::symlink_metadata(path).map_err(|e| bind_error(addr, e))?;
                Ok(Listener {
                    fd,
                    file: Some((path.clone(), meta.dev(), meta.ino())),
                })
            }
        }
    }
}

fn bind_error(addr: &SocketAddress, source: io::Error) -> MemifError {
    if source.raw_os_error() == Some(libc::EADDRINUSE) {
        MemifError::SocketInUse(addr.to_string())
    } else {
        MemifError::Socket {
            socket: addr.to_string(),
            source,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.file {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

// ----------------------------------------------------------------- thread

#[derive(Debug)]
enum Phase {
    Server(Box<ServerHandshake>),
    Client(Box<ClientHandshake>),
    Connected,
}

/// One connection attempt or connection.
#[derive(Debug)]
struct Session {
    sock: OwnedFd,
    /// The connection id this session builds or runs.
    id: u64,
    phase: Phase,
    /// When the handshake must be done by.
    deadline: Instant,
    peer_pid: Option<u32>,
}

/// How a session ends.
#[derive(Debug)]
enum Close {
    /// We end it and say why.
    Refuse(String),
    /// We end it because the data path caught the peer breaking the
    /// protocol, and say why.
    Fault(String),
    /// The peer said why (DISCONNECT) or hung up.
    Peer(String),
}

/// The control thread of one memif port.
#[derive(Debug)]
pub struct Control {
    shared: Arc<Shared>,
    listener: Option<Listener>,
    session: Option<Session>,
    backoff: Duration,
    next_attempt: Instant,
}

impl Control {
    pub fn new(shared: Arc<Shared>, listener: Option<Listener>) -> Self {
        Control {
            shared,
            listener,
            session: None,
            backoff: MIN_BACKOFF,
            next_attempt: Instant::now(),
        }
    }

    fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// Runs until the port asks it to stop.
    pub fn run(mut self) {
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                self.close(Close::Refuse("interface deleted".into()));
                return;
            }
            if self.shared.settings.role == Role::Client
                && self.session.is_none()
                && Instant::now() >= self.next_attempt
            {
                self.try_connect();
            }
            let (wake, listen, sock) = match self.wait() {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(interface = self.name(), "memif control poll: {e}");
                    std::thread::sleep(MIN_BACKOFF);
                    continue;
                }
            };
            if wake {
                self.shared.wake.drain();
                self.check_fault();
            }
            if listen {
                self.accept();
            }
            if sock {
                self.read();
            }
            if let Some(s) = &self.session {
                if !matches!(s.phase, Phase::Connected) && Instant::now() >= s.deadline {
                    self.close(Close::Refuse("handshake timed out".into()));
                }
            }
        }
    }

    /// Sleeps until something needs us; returns (wake, listener, session)
    /// readiness.
    fn wait(&self) -> io::Result<(bool, bool, bool)> {
        let now = Instant::now();
        let mut until: Option<Instant> = None;
        if let Some(s) = &self.session {
            if !matches!(s.phase, Phase::Connected) {
                until = Some(s.deadline);
            }
        } else if self.shared.settings.role == Role::Client {
            until = Some(self.next_attempt);
        }
        let timeout = until.map(|t| t.saturating_duration_since(now));
        let mut fds = vec![self.shared.wake.fd()];
        if let Some(l) = &self.listener {
            fds.push(l.fd.as_fd());
        }
        if let Some(s) = &self.session {
            fds.push(s.sock.as_fd());
        }
        let ready = sys::poll_readable(&fds, timeout)?;
        let listen = self.listener.is_some() && ready[1];
        let sock = self.session.is_some() && *ready.last().unwrap_or(&false);
        Ok((ready[0], listen, sock))
    }

    fn next_id(&self) -> u64 {
        self.shared.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn try_connect(&mut self) {
        let addr = &self.shared.settings.socket;
        let result = match addr {
            SocketAddress::Path(p) => {
                use std::os::unix::ffi::OsStrExt;
                sys::connect(&UnixAddr::Path(p.as_os_str().as_bytes()))
            }
            SocketAddress::Abstract(n) => sys::connect(&UnixAddr::Abstract(n.as_bytes())),
        };
        match result {
            Ok(sock) => {
                tracing::debug!(interface = self.name(), socket = %addr, "memif socket connected");
                let peer_pid = sys::peer_pid(sock.as_fd());
                self.session = Some(Session {
                    sock,
                    id: self.next_id(),
                    phase: Phase::Client(Box::new(ClientHandshake::new(
                        self.shared.settings.clone(),
                    ))),
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                    peer_pid,
                });
            }
            Err(e) => {
                tracing::debug!(interface = self.name(), socket = %addr, "memif connect: {e}");
                self.retry_later();
            }
        }
    }

    fn retry_later(&mut self) {
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let sock = match sys::accept(listener.fd.as_fd()) {
                Ok(Some(sock)) => sock,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(interface = self.name(), "memif accept: {e}");
                    return;
                }
            };
            let peer_pid = sys::peer_pid(sock.as_fd());
            if self.session.is_some() {
                tracing::info!(
                    interface = self.name(),
                    pid = peer_pid,
                    "memif: refusing a second client"
                );
                let _ = send(&sock, &Message::disconnect("already connected"), None);
                continue;
            }
            let handshake = ServerHandshake::new(self.shared.settings.clone());
            if let Err(e) = send(&sock, &handshake.hello(), None) {
                tracing::warn!(interface = self.name(), "memif: cannot send hello: {e}");
                continue;
            }
            tracing::debug!(
                interface = self.name(),
                pid = peer_pid,
                "memif client accepted"
            );
            self.session = Some(Session {
                sock,
                id: self.next_id(),
                phase: Phase::Server(Box::new(handshake)),
                deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                peer_pid,
            });
        }
    }

    /// Handles every message waiting on the session's socket.
    fn read(&mut self) {
        let mut buf = [0u8; MSG_SIZE];
        loop {
            let Some(session) = &self.session else {
                return;
            };
            let received = match sys::recv(session.sock.as_fd(), &mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.close(Close::Peer(format!("socket error: {e}"))),
            };
            if received.len == 0 {
                return self.close(Close::Peer("peer closed the socket".into()));
            }
            if received.truncated || received.fds_truncated || received.fds.len() > 1 {
                return self.close(Close::Refuse("malformed control message".into()));
            }
            let msg = match Message::decode(&buf[..received.len]) {
                Ok(msg) => msg,
                Err(e) => return self.close(Close::Refuse(e.to_string())),
            };
            let fd = received.fds.into_iter().next();
            if let Err(close) = self.handle(msg, fd) {
                return self.close(close);
            }
        }
    }

    fn handle(&mut self, msg: Message, fd: Option<OwnedFd>) -> Result<(), Close> {
        if let Message::Disconnect { reason, .. } = msg {
            return Err(Close::Peer(format!("peer disconnected: {}", reason.text())));
        }
        let Some(session) = &mut self.session else {
            return Ok(());
        };
        tracing::debug!(interface = %self.shared.settings.name, msg = msg.kind(), "memif message");
        let id = session.id;
        let wire_error = |e: io::Error| Close::Refuse(format!("cannot wire interrupts: {e}"));
        match &mut session.phase {
            Phase::Server(h) => match h.on_message(msg, fd, id).map_err(|r| Close::Refuse(r.0))? {
                ServerStep::Reply(reply) => {
                    send(&session.sock, &reply, None).map_err(|e| Close::Peer(e.to_string()))?;
                }
                ServerStep::Connected(conn, reply) => {
                    // Live before the client hears it is: it may send at once.
                    self.shared
                        .connected(Arc::new(conn), session.peer_pid)
                        .map_err(wire_error)?;
                    session.phase = Phase::Connected;
                    send(&session.sock, &reply, None).map_err(|e| Close::Peer(e.to_string()))?;
                }
            },
            Phase::Client(h) => match h.on_message(msg, id).map_err(|r| Close::Refuse(r.0))? {
                ClientStep::Send(out) => {
                    send(&session.sock, &out.msg, out.fd.as_ref())
                        .map_err(|e| Close::Peer(e.to_string()))?;
                }
                ClientStep::Connected(conn) => {
                    self.shared
                        .connected(Arc::new(conn), session.peer_pid)
                        .map_err(wire_error)?;
                    session.phase = Phase::Connected;
                    self.backoff = MIN_BACKOFF;
                }
            },
            Phase::Connected => {
                return Err(Close::Refuse(format!(
                    "unexpected {} while connected",
                    msg.kind()
                )))
            }
        }
        Ok(())
    }

    /// Closes the connection the data path found a fault on, if it is
    /// still the current one.
    fn check_fault(&mut self) {
        let Some((id, fault)) = self.shared.take_fault() else {
            return;
        };
        let current = self
            .session
            .as_ref()
            .is_some_and(|s| s.id == id && matches!(s.phase, Phase::Connected));
        if current {
            tracing::warn!(
                interface = self.name(),
                "memif peer misbehaved: {fault}; disconnecting"
            );
            self.close(Close::Fault(format!("protocol violation: {fault}")));
        }
    }

    /// Ends the session: unpublishes its connection, tells the peer why
    /// (when it is our decision), and schedules a client's next attempt.
    fn close(&mut self, why: Close) {
        let Some(session) = self.session.take() else {
            return;
        };
        let (reason, tell, fault) = match why {
            Close::Refuse(r) => (r, true, false),
            Close::Fault(r) => (r, true, true),
            Close::Peer(r) => (r, false, false),
        };
        if tell {
            let _ = send(&session.sock, &Message::disconnect(&reason), None);
        }
        let was_connected = matches!(session.phase, Phase::Connected);
        if was_connected {
            tracing::info!(interface = self.name(), reason = %reason, "memif disconnected");
        } else if self.shared.last_disconnect() != reason {
            tracing::info!(interface = self.name(), reason = %reason, "memif handshake failed");
        } else {
            // A client retrying against a server that keeps refusing it.
            tracing::debug!(interface = self.name(), reason = %reason, "memif handshake failed again");
        }
        self.shared.disconnected(reason, was_connected, fault);
        drop(session);
        if self.shared.settings.role == Role::Client {
            self.retry_later();
        }
    }
}

fn send(sock: &OwnedFd, msg: &Message, fd: Option<&OwnedFd>) -> io::Result<()> {
    sys::send(sock.as_fd(), &msg.encode(), fd.map(|f| f.as_fd()))
}

impl Mode {
    /// The `Init` message's mode number.
    pub fn abi(self) -> u8 {
        match self {
            Mode::Ethernet => abi::MODE_ETHERNET,
            Mode::Ip => abi::MODE_IP,
        }
    }
}

impl RxMode {
    /// Flags we set on the rings we receive from.
    pub fn ring_flags(self) -> u16 {
        match self {
            RxMode::Interrupt => 0,
            RxMode::Polling => RING_FLAG_MASK_INT,
        }
    }
}

const _: () = assert!(MAX_LOG2_RING_SIZE <= 15, "ring sizes must fit u16 indices");
