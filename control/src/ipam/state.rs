//! The IPAM state as stores keep it: blocks, block affinities and
//! handles, in one serde document with a format version.
//!
//! The layout follows Calico's three IPAM resources (`IPAMBlock`,
//! `BlockAffinity`, `IPAMHandle`), gathered into one value so a store can
//! swap it atomically. The same type is the spec of the `IPAMState`
//! custom resource (see [`super::kube_store`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::block::{bounds, Block};

/// Version of the format written; a reader refuses a newer one rather
/// than drop what it does not understand.
pub const FORMAT_VERSION: u32 = 1;

// Doc comments on these types become the CRD's field descriptions
// (`kubectl explain`), so they speak to the reader of the object.

/// Everything IPAM knows; replaced as a whole on every change.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "caracal.io",
    version = "v1",
    kind = "IPAMState",
    plural = "ipamstates",
    singular = "ipamstate",
    root = "IpamStateResource",
    doc = "Caracal's IP address management state: blocks, affinities and handles"
)]
#[serde(rename_all = "camelCase")]
pub struct IpamState {
    /// Format version of this document (1).
    pub version: u32,
    /// Sorted by CIDR, never overlapping.
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Which node claimed which block (Calico's `BlockAffinity`).
    #[serde(default)]
    pub affinities: Vec<BlockAffinity>,
    /// Allocations by handle (Calico's `IPAMHandle`).
    #[serde(default)]
    pub handles: BTreeMap<String, HandleRecord>,
}

impl Default for IpamState {
    fn default() -> Self {
        IpamState {
            version: FORMAT_VERSION,
            blocks: Vec::new(),
            affinities: Vec::new(),
            handles: BTreeMap::new(),
        }
    }
}

/// A node's claim on a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinity {
    pub node: String,
    #[schemars(with = "String")]
    pub cidr: IpNet,
    pub state: AffinityState,
}

/// Calico's affinity states. Caracal claims a block atomically, so it
/// writes only confirmed; pending states (from two-step claims) are
/// accepted and do not count as affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    Confirmed,
    Pending,
    PendingDeletion,
}

/// One allocation's holder and addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandleRecord {
    pub node: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    pub addresses: Vec<IpAddr>,
    /// Free-form attributes from the request (e.g. the pod UID).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// When the handle was created, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_unix_ms: u64,
}

/// A store's version of the state, compared by [`super::IpamStore::compare_and_swap`].
/// Opaque: a counter for the file store, a `resourceVersion` for Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Revision(Option<String>);

impl Revision {
    /// The revision of a store that holds no state yet.
    pub const ABSENT: Revision = Revision(None);

    pub fn new(revision: impl Into<String>) -> Revision {
        Revision(Some(revision.into()))
    }

    /// `None` when the store holds no state yet.
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("(none)"))
    }
}

impl IpamState {
    /// Index of the block that contains `addr`.
    pub fn block_index_of(&self, addr: IpAddr) -> Option<usize> {
        let key = (matches!(addr, IpAddr::V6(_)), super::block::to_u128(addr));
        // Blocks are sorted and disjoint: the candidate is the last block
        // starting at or before `addr`.
        let after = self.blocks.partition_point(|b| block_key(b.cidr) <= key);
        let index = after.checked_sub(1)?;
        self.blocks[index].cidr.contains(&addr).then_some(index)
    }

    /// Adds a block, keeping the order; the caller made sure it overlaps
    /// none.
    pub fn insert_block(&mut self, block: Block) -> usize {
        let key = block_key(block.cidr);
        let at = self.blocks.partition_point(|b| block_key(b.cidr) < key);
        self.blocks.insert(at, block);
        at
    }

    /// Checks every invariant the allocator relies on, so that a damaged
    /// or hand-edited state is refused instead of double-assigning.
    pub fn check(&self) -> Result<(), String> {
        if self.version > FORMAT_VERSION {
            return Err(format!(
                "state format {} is newer than this agent understands ({FORMAT_VERSION})",
                self.version
            ));
        }
        for block in &self.blocks {
            block.check()?;
        }
        for pair in self.blocks.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let same_family = a.cidr.max_prefix_len() == b.cidr.max_prefix_len();
            if block_key(a.cidr) >= block_key(b.cidr)
                || (same_family && bounds(a.cidr).1 >= bounds(b.cidr).0)
            {
                return Err(format!(
                    "blocks {} and {} overlap or are out of order",
                    a.cidr, b.cidr
                ));
            }
        }

        let confirmed: BTreeSet<(&str, IpNet)> = self
            .affinities
            .iter()
            .filter(|a| a.state == AffinityState::Confirmed)
            .map(|a| (a.node.as_str(), a.cidr))
            .collect();
        let claimed: BTreeSet<(&str, IpNet)> = self
            .blocks
            .iter()
            .filter_map(|b| b.affinity.as_deref().map(|n| (n, b.cidr)))
            .collect();
        if let Some((node, cidr)) = confirmed.symmetric_difference(&claimed).next() {
            return Err(format!(
                "affinity of {node} for block {cidr} does not match the block"
            ));
        }

        let mut allocated = 0usize;
        for block in &self.blocks {
            for ordinal in 0..block.allocations.len() as u32 {
                let Some(holder) = block.holder(ordinal) else {
                    continue;
                };
                allocated += 1;
                let addr = block.address(ordinal);
                if !self
                    .handles
                    .get(holder)
                    .is_some_and(|h| h.addresses.contains(&addr))
                {
                    return Err(format!(
                        "{addr} is held by {holder:?}, which does not list it"
                    ));
                }
            }
        }
        let listed: usize = self.handles.values().map(|h| h.addresses.len()).sum();
        if listed != allocated {
            return Err(format!(
                "handles list {listed} addresses but blocks allocate {allocated}"
            ));
        }
        Ok(())
    }
}

/// Sort key of a block: IPv4 before IPv6, then by first address.
fn block_key(cidr: IpNet) -> (bool, u128) {
    (matches!(cidr, IpNet::V6(_)), bounds(cidr).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_are_found_by_address() {
        let mut state = IpamState::default();
        for cidr in ["fd00::/122", "10.0.0.64/26", "10.0.0.0/26", "10.0.1.0/28"] {
            state.insert_block(Block::new(net(cidr), None));
        }
        let order: Vec<String> = state.blocks.iter().map(|b| b.cidr.to_string()).collect();
        assert_eq!(
            order,
            ["10.0.0.0/26", "10.0.0.64/26", "10.0.1.0/28", "fd00::/122"]
        );
        let find = |a: &str| state.block_index_of(a.parse().unwrap());
        assert_eq!(find("10.0.0.0"), Some(0));
        assert_eq!(find("10.0.0.127"), Some(1));
        assert_eq!(find("10.0.0.128"), None);
        assert_eq!(find("10.0.1.15"), Some(2));
        assert_eq!(find("10.0.1.16"), None);
        assert_eq!(find("9.0.0.0"), None);
        assert_eq!(find("fd00::3f"), Some(3));
        assert_eq!(find("fd00::40"), None);
        state.check().unwrap();
    }

    #[test]
    fn check_finds_inconsistencies() {
        let mut state = IpamState::default();
        state.insert_block(Block::new(net("10.0.0.0/26"), Some("n1".into())));
        assert!(state.check().unwrap_err().contains("affinity of n1"));
        state.affinities.push(BlockAffinity {
            node: "n1".into(),
            cidr: net("10.0.0.0/26"),
            state: AffinityState::Confirmed,
        });
        state.check().unwrap();

        state.blocks[0].allocate(5, "h");
        assert!(state.check().unwrap_err().contains("does not list it"));
        state.handles.insert(
            "h".into(),
            HandleRecord {
                node: "n1".into(),
                namespace: String::new(),
                pod: String::new(),
                addresses: vec!["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()],
                attrs: BTreeMap::new(),
                created_unix_ms: 0,
            },
        );
        assert!(state.check().unwrap_err().contains("list 2 addresses"));
        state.handles.get_mut("h").unwrap().addresses.pop();
        state.check().unwrap();

        state.blocks.push(Block::new(net("10.0.0.32/27"), None));
        assert!(state.check().unwrap_err().contains("overlap"));
        state.blocks.pop();
        state.version = FORMAT_VERSION + 1;
        assert!(state.check().unwrap_err().contains("newer"));
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let mut state = IpamState::default();
        state.insert_block(Block::new(net("10.0.0.0/30"), None));
        state.blocks[0].allocate(1, "h");
        state.blocks[0].release_handle("h", 7);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"blocks":[{"cidr":"10.0.0.0/30","allocations":[null,null,null,null],"attributes":[],"released":[{"ordinal":1,"atUnixMs":7}]}],"affinities":[],"handles":{}}"#
        );
        let back: IpamState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        let minimal: IpamState = serde_json::from_str(r#"{"version":1}"#).unwrap();
        assert_eq!(minimal, IpamState::default());
    }
}
