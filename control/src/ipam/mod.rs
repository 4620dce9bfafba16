//! IP address management in Calico's model.
//!
//! IP pools are carved into blocks (default /26 for IPv4, /122 for IPv6);
//! a node claims blocks (block affinity) and assigns addresses from its own
//! blocks first, borrowing from other nodes' blocks when `strict_affinity`
//! is off. Every allocation carries a handle (container id + interface) so
//! it can be released by handle, and handles whose pod is gone are found
//! by garbage collection. A released address cools down before reuse.
//!
//! State lives behind [`IpamStore`], a compare-and-swap store: a locked
//! file under the state directory in standalone mode, Kubernetes custom
//! resources in a cluster. Every change is read–modify–CAS, retried on
//! conflict, so concurrent allocations (threads or processes) never hand
//! out one address twice.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

/// An `IPPool` as the datastore defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the blocks the pool is carved into.
    pub block_size: u8,
    /// Calico-style selector of the nodes that may claim blocks; empty or
    /// "all()" selects every node.
    pub node_selector: String,
    pub disabled: bool,
    /// Kept for a later slice; not acted upon yet.
    pub nat_outgoing: bool,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// When true a node never borrows from blocks affine to other nodes.
    pub strict_affinity: bool,
    /// How long a released address rests before it is handed out again.
    pub cooldown: Duration,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig { strict_affinity: false, cooldown: Duration::from_secs(30) }
    }
}

/// One allocation request (a CNI ADD).
#[derive(Debug, Clone, Default)]
pub struct AssignRequest {
    /// Unique per attachment: "<container id>.<ifname>".
    pub handle: String,
    pub node: String,
    /// Labels of the node, for pools' node selectors.
    pub node_labels: BTreeMap<String, String>,
    pub namespace: String,
    pub pod: String,
    /// Pools (names or CIDRs) to use for IPv4, from the pod's or
    /// namespace's `caracal.io/ipv4pools` annotation; `None` = every
    /// enabled pool of the family that selects the node.
    pub ipv4_pools: Option<Vec<String>>,
    pub ipv6_pools: Option<Vec<String>>,
}

/// What an allocation gave: one address per family that has a usable pool
/// (host prefixes: /32, /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
}

/// Who holds an allocation, kept with it for GC and display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleInfo {
    pub handle: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no IP pool for {family} selects node {node:?}")]
    NoPool { family: &'static str, node: String },
    #[error("unknown IP pool {0:?}")]
    UnknownPool(String),
    #[error("IP pools exhausted for {family}")]
    Exhausted { family: &'static str },
    #[error("too many concurrent updates; gave up after {0} attempts")]
    Contention(u32),
    #[error("IPAM store: {0}")]
    Store(String),
}
