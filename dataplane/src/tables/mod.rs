//! Forwarding tables, published to workers as immutable snapshots.
//!
//! The engine builds a new [`Tables`] for every change and swaps it in
//! atomically ([`arc_swap`]); a worker loads the current snapshot once per
//! poll loop and forwards a whole vector by it, so an update never stalls
//! forwarding and a vector never sees half of a change.

pub mod lpm;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use caracal_wire::EthernetAddress;

use crate::policy::EndpointRules;
use crate::port::{Port, PortId};
pub use lpm::Lpm;

/// Most paths an ECMP route can have.
pub const MAX_PATHS: usize = 8;

/// The gateway every pod sees, as in Calico: IPv4 169.254.1.1, MAC
/// ee:ee:ee:ee:ee:ee, and the IPv6 link-local address derived from that
/// MAC (RFC 4291 appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    pub mac: EthernetAddress,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Default for Gateway {
    fn default() -> Self {
        let mac = EthernetAddress([0xee; 6]);
        Gateway {
            mac,
            ipv4: Ipv4Addr::new(169, 254, 1, 1),
            ipv6: caracal_wire::ipv6::link_local_from_mac(mac),
        }
    }
}

/// One way out: the port and the Ethernet destination behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdjPath {
    pub port: PortId,
    pub dst_mac: EthernetAddress,
    /// IP MTU of the port, bytes.
    pub mtu: u16,
}

/// What a route resolves to: one path, or up to [`MAX_PATHS`] for ECMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjacency {
    paths: [AdjPath; MAX_PATHS],
    count: u8,
}

impl Adjacency {
    /// # Panics
    /// If `paths` is empty or longer than [`MAX_PATHS`].
    pub fn new(paths: &[AdjPath]) -> Self {
        assert!(!paths.is_empty() && paths.len() <= MAX_PATHS);
        let mut a = Adjacency {
            paths: [paths[0]; MAX_PATHS],
            count: paths.len() as u8,
        };
        a.paths[..paths.len()].copy_from_slice(paths);
        a
    }

    pub fn paths(&self) -> &[AdjPath] {
        &self.paths[..usize::from(self.count)]
    }

    /// The path for a flow: the only one, or one picked by the flow hash.
    #[inline]
    pub fn path(&self, flow_hash: u32) -> &AdjPath {
        if self.count == 1 {
            &self.paths[0]
        } else {
            // Multiply-shift maps the hash onto 0..count without a division.
            let i = ((u64::from(flow_hash) * u64::from(self.count)) >> 32) as usize;
            &self.paths[i]
        }
    }

    pub fn is_ecmp(&self) -> bool {
        self.count > 1
    }
}

/// A port as the workers see it.
#[derive(Debug, Clone)]
pub struct PortEntry {
    pub port: Arc<dyn Port>,
    pub name: Arc<str>,
    pub peer_mac: EthernetAddress,
    pub mtu: u16,
    /// The only IPv4 sources accepted from this port.
    pub ipv4: Box<[Ipv4Addr]>,
    /// The only IPv6 sources accepted from this port (link-local sources
    /// are accepted for neighbour discovery only).
    pub ipv6: Box<[Ipv6Addr]>,
    pub policy: PortPolicy,
}

/// What policy an endpoint (port) enforces.
#[derive(Debug, Clone, Default)]
pub enum PolicyMode {
    /// No attachment and not enforced: everything passes.
    #[default]
    Open,
    /// Enforced but its attachment has not arrived: no IP packet passes
    /// (fail closed).
    NotReady,
    Enforced(Arc<EndpointRules>),
}

/// A port's policy and the table generation it last changed in: a flow
/// verdict decided before that generation (for this port or the other
/// end of the flow) is stale and the flow goes through policy again.
#[derive(Debug, Clone, Default)]
pub struct PortPolicy {
    pub mode: PolicyMode,
    pub since: u64,
}

impl PortEntry {
    #[inline]
    pub fn owns_ipv4(&self, a: Ipv4Addr) -> bool {
        self.ipv4.contains(&a)
    }

    #[inline]
    pub fn owns_ipv6(&self, a: Ipv6Addr) -> bool {
        self.ipv6.contains(&a)
    }
}

/// One immutable snapshot of everything the workers forward by.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Increases with every publication.
    pub generation: u64,
    pub gateway: Gateway,
    pub fib4: Lpm<u32>,
    pub fib6: Lpm<u128>,
    /// Indexed by the next-hop ids stored in the FIBs.
    pub adjacencies: Arc<[Adjacency]>,
    /// Indexed by [`PortId`].
    pub ports: Arc<[Option<PortEntry>]>,
    /// Flow verdicts decided before this generation are stale whatever
    /// their ports (an API route change may have moved flows between
    /// ports).
    pub verdicts_since: u64,
    /// Cross-connects, indexed by the receiving [`PortId`]: frames
    /// received on that port leave unchanged by this one
    /// (`PortId::INVALID` while the named peer does not exist). A port
    /// beyond the end, or `None`, is not cross-connected.
    pub xconnects: Arc<[Option<PortId>]>,
}

impl Tables {
    /// The port frames received on `rx` are cross-connected to, if any.
    #[inline]
    pub fn xconnect(&self, rx: PortId) -> Option<PortId> {
        self.xconnects.get(rx.index()).copied().flatten()
    }

    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortEntry> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    #[inline]
    pub fn adjacency(&self, id: u32) -> Option<&Adjacency> {
        self.adjacencies.get(id as usize)
    }
}
