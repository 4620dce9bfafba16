//! The dataplane's object model as its API presents it: interfaces,
//! routes and counters, in domain types. The gRPC layer converts these to
//! and from protobuf; nothing here knows about the wire format of the API.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use caracal_wire::{EthernetAddress, Ipv4Cidr, Ipv6Cidr};

use crate::buffer::PoolStats;
use crate::graph::DropReason;
pub use crate::port::memif::{
    Direction as MemifRingDirection, MemifRingStatus, MemifStatus, Mode as MemifMode,
    Role as MemifRole, RxMode as MemifRxMode,
};
use crate::port::{PortId, PortKind, PortStats};

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpCidr {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpCidr {
    pub fn address(&self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.address()),
            IpCidr::V6(c) => IpAddr::V6(c.address()),
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match self {
            IpCidr::V4(c) => c.prefix_len(),
            IpCidr::V6(c) => c.prefix_len(),
        }
    }

    /// The same prefix with host bits cleared.
    pub fn network(&self) -> IpCidr {
        match self {
            IpCidr::V4(c) => {
                IpCidr::V4(Ipv4Cidr::new(c.network(), c.prefix_len()).expect("valid length"))
            }
            IpCidr::V6(c) => {
                IpCidr::V6(Ipv6Cidr::new(c.network(), c.prefix_len()).expect("valid length"))
            }
        }
    }

    /// The host prefix (/32 or /128) of this prefix's address.
    pub fn host(&self) -> IpCidr {
        match self {
            IpCidr::V4(c) => IpCidr::V4(Ipv4Cidr::new(c.address(), 32).expect("valid length")),
            IpCidr::V6(c) => IpCidr::V6(Ipv6Cidr::new(c.address(), 128).expect("valid length")),
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid prefix {0:?}: expected ADDRESS[/LEN]")]
pub struct BadPrefix(pub String);

impl FromStr for IpCidr {
    type Err = BadPrefix;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPrefix(s.to_owned());
        if s.contains(':') {
            s.parse::<Ipv6Cidr>().map(IpCidr::V6).map_err(|_| bad())
        } else {
            s.parse::<Ipv4Cidr>().map(IpCidr::V4).map_err(|_| bad())
        }
    }
}

/// What to create for an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// Unique key chosen by the client.
    pub name: String,
    /// The endpoint's own addresses; the only sources accepted from it.
    pub addresses: Vec<IpCidr>,
    /// IP MTU of the pod side, bytes.
    pub mtu: u16,
    pub kind: InterfaceKindSpec,
    /// Fail closed: no IP traffic to or from the interface until its
    /// endpoint policy arrives.
    pub policy_enforced: bool,
    /// L2 cross-connect: every frame received on this interface leaves
    /// unchanged by the interface of this name (which need not exist yet;
    /// until it does, the frames are dropped as port-down). One direction;
    /// the other is the peer's own setting.
    pub xconnect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKindSpec {
    Tap(TapSpec),
    Memif(MemifSpec),
}

/// A tap device created inside a network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    pub netns: PathBuf,
    /// Interface name inside the namespace.
    pub ifname: String,
    /// Queue pairs; 0 means one per worker.
    pub queues: u16,
    /// Also configure the pod side: up, MTU, addresses, gateway routes.
    pub configure: bool,
}

/// A memif interface (see [`crate::port::memif`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifSpec {
    /// Control socket: an absolute path, or `@name` (abstract namespace).
    pub socket: PathBuf,
    pub role: MemifRole,
    /// Interface id on the socket.
    pub id: u32,
    /// At most 24 bytes.
    pub secret: Option<String>,
    /// Queue pairs; 0 means one per worker.
    pub queues: u16,
    pub mode: MemifMode,
    pub rx_mode: MemifRxMode,
    /// Descriptors per ring (entries, not log2), a power of two; 0 is the
    /// role's default (client: creates 1024; server: accepts up to 16384).
    pub ring_size: u16,
    /// Bytes per buffer a client creates; 0 means 2048.
    pub buffer_size: u16,
    /// The peer interface's MAC; `None`: broadcast, which any peer accepts.
    pub peer_mac: Option<EthernetAddress>,
}

/// An interface as the dataplane runs it.
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    pub id: PortId,
    pub spec: InterfaceSpec,
    pub kind: PortKind,
    /// MAC of the pod side.
    pub mac: EthernetAddress,
    /// Kernel ifindex inside its namespace (taps).
    pub ifindex: u32,
    /// Taps: always. Memif: connected to a peer.
    pub up: bool,
    pub stats: PortStats,
    /// Connection state of a memif interface.
    pub memif: Option<MemifStatus>,
}

/// Who installed a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// Host route of an interface address; removed with the interface.
    Interface,
    /// Added through the routes API.
    Api,
}

impl RouteOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteOrigin::Interface => "interface",
            RouteOrigin::Api => "api",
        }
    }
}

/// One way out for a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathSpec {
    /// Output interface name.
    pub interface: String,
    /// Next hop; `None` when the destination is on the link.
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: IpCidr,
    /// One path, or several for ECMP.
    pub paths: Vec<PathSpec>,
    pub origin: RouteOrigin,
}

/// Counters of one worker.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub worker: usize,
    pub core: Option<usize>,
    pub vectors: u64,
    pub packets: u64,
    /// Non-zero drop counters.
    pub drops: Vec<(DropReason, u64)>,
}

/// Everything `GetCounters` reports.
#[derive(Debug, Clone)]
pub struct CountersSnapshot {
    pub workers: Vec<WorkerStats>,
    pub pool: PoolStats,
    pub buffer_size: u32,
}

impl CountersSnapshot {
    /// Drops summed over workers, by reason.
    pub fn total_drops(&self) -> Vec<(DropReason, u64)> {
        let mut totals = [0u64; DropReason::COUNT];
        for w in &self.workers {
            for &(r, n) in &w.drops {
                totals[r as usize] += n;
            }
        }
        DropReason::ALL
            .iter()
            .zip(totals)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
            .collect()
    }
}

/// What `GetRuntime` reports (VPP's `show runtime`): per worker and per
/// node, raw totals since the start or the last clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// Rate of the cycle counter the clocks are in, per second.
    pub tsc_hz: u64,
    pub workers: Vec<WorkerRuntime>,
}

/// One worker's poll loop and nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerRuntime {
    pub worker: usize,
    pub core: Option<usize>,
    /// Poll loop iterations.
    pub loops: u64,
    /// Iterations that received no packet.
    pub idle_loops: u64,
    /// Cycles of all iterations, sleep included.
    pub clocks: u64,
    /// Cycles of the iterations that received nothing.
    pub idle_clocks: u64,
    /// `port-input` (rx bursts), the graph's nodes in dispatch order,
    /// `port-output` (tx bursts).
    pub nodes: Vec<NodeRuntime>,
}

/// One node (or burst pseudo-node) of one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRuntime {
    pub name: &'static str,
    /// Times it ran (a vector each; every poll for `port-input`).
    pub calls: u64,
    /// Packets it handled.
    pub vectors: u64,
    /// Cycles it spent.
    pub clocks: u64,
}

impl RuntimeSnapshot {
    /// What was counted since `base`, an earlier snapshot of the same
    /// dataplane (workers matched by id, nodes by name).
    pub fn since(&self, base: &RuntimeSnapshot) -> RuntimeSnapshot {
        let workers = self
            .workers
            .iter()
            .map(
                |w| match base.workers.iter().find(|b| b.worker == w.worker) {
                    Some(b) => w.since(b),
                    None => w.clone(),
                },
            )
            .collect();
        RuntimeSnapshot {
            tsc_hz: self.tsc_hz,
            workers,
        }
    }
}

impl WorkerRuntime {
    fn since(&self, b: &WorkerRuntime) -> WorkerRuntime {
        WorkerRuntime {
            worker: self.worker,
            core: self.core,
            loops: self.loops.saturating_sub(b.loops),
            idle_loops: self.idle_loops.saturating_sub(b.idle_loops),
            clocks: self.clocks.saturating_sub(b.clocks),
            idle_clocks: self.idle_clocks.saturating_sub(b.idle_clocks),
            nodes: self
                .nodes
                .iter()
                .map(|n| match b.nodes.iter().find(|m| m.name == n.name) {
                    Some(m) => NodeRuntime {
                        name: n.name,
                        calls: n.calls.saturating_sub(m.calls),
                        vectors: n.vectors.saturating_sub(m.vectors),
                        clocks: n.clocks.saturating_sub(m.clocks),
                    },
                    None => n.clone(),
                })
                .collect(),
        }
    }
}

/// One flow of the flow table, as `ListFlows` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEntry {
    /// `tcp`, `udp`, `icmp`... or the protocol number.
    pub protocol: String,
    /// The originator, `address:port` (`[address]:port` for IPv6).
    pub src: String,
    pub dst: String,
    /// conntrack's state: `ESTABLISHED`, `SYN_SENT`... for TCP;
    /// `UNREPLIED`, `REPLIED` or `ASSURED` otherwise.
    pub state: String,
    /// `None`: no decision recorded.
    pub allowed: Option<bool>,
    /// The rule that decided (`default`: the endpoint's default).
    pub rule: String,
    /// Original direction, reply direction.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub idle_ms: u32,
    /// Time left before the flow expires if it stays idle.
    pub expires_ms: u32,
}
