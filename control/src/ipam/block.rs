//! Blocks: the unit a node claims from a pool, and the address arithmetic
//! behind them.
//!
//! A block is an aligned CIDR inside a pool (default /26 for IPv4, /122
//! for IPv6, so 64 addresses either way). It records, per address in
//! order, which handle holds it; the handles themselves sit in a small
//! per-block attribute list, as in Calico's `IPAMBlock`. Addresses are
//! numbered by their *ordinal*, the offset from the block's network
//! address. Arithmetic is done on `u128`, which holds both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest block, in addresses, a pool may be carved into (a /20 for
/// IPv4, a /116 for IPv6, as Calico allows); it bounds a block's
/// per-address vector.
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// One block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// Node the block is affine to; absent for a block nobody claims (its
    /// node released it while addresses were still in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// One entry per address, by ordinal: an index into `attributes`, or
    /// null when the address is free.
    pub allocations: Vec<Option<u32>>,
    /// The holders of this block's allocations; every address of one
    /// handle in this block shares one entry.
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    /// Addresses freed recently, for the cool-down; entries are dropped
    /// once cooled or reallocated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<ReleasedAddress>,
}

/// Who holds an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationAttribute {
    pub handle: String,
}

/// When an address of a block was last released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedAddress {
    pub ordinal: u32,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl Block {
    /// An empty block; `cidr` must be canonical and no larger than
    /// [`MAX_BLOCK_ADDRESSES`] (pool validation guarantees both).
    pub fn new(cidr: IpNet, affinity: Option<String>) -> Block {
        let len = block_len(cidr).expect("block size validated with its pool");
        Block {
            cidr,
            affinity,
            allocations: vec![None; len as usize],
            attributes: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Number of addresses in use.
    pub fn used(&self) -> u32 {
        self.allocations.iter().filter(|a| a.is_some()).count() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// Address with the given ordinal.
    pub fn address(&self, ordinal: u32) -> IpAddr {
        nth(self.cidr, ordinal)
    }

    /// Ordinal of `addr` when it is in this block.
    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        ordinal_of(self.cidr, addr)
    }

    /// Holder of the address with the given ordinal.
    pub fn holder(&self, ordinal: u32) -> Option<&str> {
        let index = self.allocations.get(ordinal as usize).copied().flatten()?;
        self.attributes
            .get(index as usize)
            .map(|a| a.handle.as_str())
    }

    /// When the address was released, if it still has an entry.
    pub fn released_at(&self, ordinal: u32) -> Option<u64> {
        self.released
            .iter()
            .find(|r| r.ordinal == ordinal)
            .map(|r| r.at_unix_ms)
    }

    /// Gives the free address `ordinal` to `handle`.
    pub fn allocate(&mut self, ordinal: u32, handle: &str) {
        debug_assert!(self.allocations[ordinal as usize].is_none());
        let index = match self.attributes.iter().position(|a| a.handle == handle) {
            Some(i) => i,
            None => {
                self.attributes.push(AllocationAttribute {
                    handle: handle.to_owned(),
                });
                self.attributes.len() - 1
            }
        };
        self.allocations[ordinal as usize] = Some(index as u32);
        self.released.retain(|r| r.ordinal != ordinal);
    }

    /// Frees every address `handle` holds here, stamping each with the
    /// release time, and returns them.
    pub fn release_handle(&mut self, handle: &str, now_unix_ms: u64) -> Vec<IpAddr> {
        let Some(index) = self.attributes.iter().position(|a| a.handle == handle) else {
            return Vec::new();
        };
        let index = index as u32;
        let mut freed = Vec::new();
        for ordinal in 0..self.allocations.len() as u32 {
            let slot = &mut self.allocations[ordinal as usize];
            match *slot {
                Some(i) if i == index => {
                    *slot = None;
                    freed.push(ordinal);
                }
                // Later attributes move down one place.
                Some(i) if i > index => *slot = Some(i - 1),
                _ => {}
            }
        }
        self.attributes.remove(index as usize);
        for &ordinal in &freed {
            self.released.retain(|r| r.ordinal != ordinal);
            self.released.push(ReleasedAddress {
                ordinal,
                at_unix_ms: now_unix_ms,
            });
        }
        freed.into_iter().map(|o| self.address(o)).collect()
    }

    /// Forgets release times older than `cooldown_ms`.
    pub fn prune_released(&mut self, now_unix_ms: u64, cooldown_ms: u64) {
        self.released
            .retain(|r| now_unix_ms.saturating_sub(r.at_unix_ms) < cooldown_ms);
    }

    /// Checks the block's own structure (sizes and indices), so that no
    /// later access can go out of range.
    pub fn check(&self) -> Result<(), String> {
        let len =
            block_len(self.cidr).ok_or_else(|| format!("block {} is too large", self.cidr))?;
        if self.cidr.trunc() != self.cidr {
            return Err(format!("block {} is not a network address", self.cidr));
        }
        if self.allocations.len() as u64 != u64::from(len) {
            return Err(format!(
                "block {} has {} allocation slots, expected {len}",
                self.cidr,
                self.allocations.len()
            ));
        }
        let mut referenced = vec![false; self.attributes.len()];
        for index in self.allocations.iter().flatten() {
            match referenced.get_mut(*index as usize) {
                Some(r) => *r = true,
                None => {
                    return Err(format!(
                        "block {} refers to missing attribute {index}",
                        self.cidr
                    ))
                }
            }
        }
        if referenced.contains(&false) {
            return Err(format!("block {} has an unused attribute", self.cidr));
        }
        if let Some(r) = self.released.iter().find(|r| r.ordinal >= len) {
            return Err(format!(
                "block {} has release time for ordinal {}",
                self.cidr, r.ordinal
            ));
        }
        Ok(())
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `value` of the family of `like`; `value` must fit.
fn from_u128(value: u128, like: IpNet) -> IpAddr {
    match like {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(value).expect("IPv4 address in range"),
        )),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Host bits of a prefix of length `prefix_len` in `net`'s family, as a mask.
fn host_mask(net: IpNet, prefix_len: u8) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - prefix_len);
    if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

/// First and last address of `net`, as integers.
pub fn bounds(net: IpNet) -> (u128, u128) {
    let first = to_u128(net.network());
    (first, first | host_mask(net, net.prefix_len()))
}

/// Number of addresses in a block, when it is small enough to be one.
pub fn block_len(cidr: IpNet) -> Option<u32> {
    let len = host_mask(cidr, cidr.prefix_len()).checked_add(1)?;
    u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BLOCK_ADDRESSES)
}

/// The address with the given ordinal in `cidr`; `ordinal` must be inside.
pub fn nth(cidr: IpNet, ordinal: u32) -> IpAddr {
    let (first, last) = bounds(cidr);
    let value = first + u128::from(ordinal);
    assert!(value <= last, "ordinal {ordinal} outside {cidr}");
    from_u128(value, cidr)
}

/// Offset of `addr` from the start of `cidr`, when inside and small enough.
pub fn ordinal_of(cidr: IpNet, addr: IpAddr) -> Option<u32> {
    if !cidr.contains(&addr) {
        return None;
    }
    u32::try_from(to_u128(addr) - bounds(cidr).0).ok()
}

/// The first block of `block_prefix` inside `pool` that overlaps none of
/// `taken` (blocks of any size; ranges sorted by first address), or `None`
/// when the pool is full.
pub fn first_free_block(
    pool: IpNet,
    block_prefix: u8,
    taken: impl IntoIterator<Item = (u128, u128)>,
) -> Option<IpNet> {
    let (pool_first, pool_last) = bounds(pool);
    let step_mask = host_mask(pool, block_prefix);
    // Rounds up to the next block boundary; `None` past the end of space.
    let align_up = |v: u128| v.checked_add(step_mask).map(|v| v & !step_mask);
    let mut candidate = pool_first;
    for (first, last) in taken {
        if last < candidate {
            continue;
        }
        if first > candidate + step_mask {
            break;
        }
        candidate = align_up(last.checked_add(1)?)?;
        if candidate > pool_last {
            return None;
        }
    }
    if candidate.checked_add(step_mask)? > pool_last {
        return None;
    }
    IpNet::new(from_u128(candidate, pool), block_prefix).ok()
}

/// Whether `addr` may be handed out from `pool`: never the pool's network
/// address (for IPv6 the subnet-router anycast address, RFC 4291 §2.6.1)
/// and, for IPv4, never its broadcast address. Every other address of a
/// block is usable, `.0` and `.255` of inner /26 blocks included.
pub fn usable_in_pool(pool: IpNet, addr: IpAddr) -> bool {
    if addr == pool.network() {
        return false;
    }
    !matches!(pool, IpNet::V4(p) if addr == IpAddr::V4(p.broadcast()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_block_of_26() {
        let cidr = net("10.65.0.64/26");
        assert_eq!(block_len(cidr), Some(64));
        assert_eq!(nth(cidr, 0), ip("10.65.0.64"));
        assert_eq!(nth(cidr, 63), ip("10.65.0.127"));
        assert_eq!(ordinal_of(cidr, ip("10.65.0.64")), Some(0));
        assert_eq!(ordinal_of(cidr, ip("10.65.0.100")), Some(36));
        assert_eq!(ordinal_of(cidr, ip("10.65.0.128")), None);
        assert_eq!(ordinal_of(cidr, ip("fd00::1")), None);
        assert_eq!(bounds(cidr), (0x0a41_0040, 0x0a41_007f));
    }

    #[test]
    fn v6_block_of_122() {
        let cidr = net("fd00:65::40/122");
        assert_eq!(block_len(cidr), Some(64));
        assert_eq!(nth(cidr, 0), ip("fd00:65::40"));
        assert_eq!(nth(cidr, 63), ip("fd00:65::7f"));
        for ordinal in [0, 1, 31, 63] {
            assert_eq!(ordinal_of(cidr, nth(cidr, ordinal)), Some(ordinal));
        }
        assert_eq!(ordinal_of(cidr, ip("fd00:65::80")), None);
    }

    #[test]
    fn block_len_limits() {
        assert_eq!(block_len(net("10.0.0.0/20")), Some(4096));
        assert_eq!(block_len(net("10.0.0.0/19")), None);
        assert_eq!(block_len(net("10.0.0.1/32")), Some(1));
        assert_eq!(block_len(net("fd00::/116")), Some(4096));
        assert_eq!(block_len(net("::/0")), None);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn nth_past_the_end_panics() {
        nth(net("10.0.0.0/26"), 64);
    }

    #[test]
    fn first_free_block_skips_taken_blocks_of_any_size() {
        let pool = net("10.0.0.0/24");
        let taken = |nets: &[&str]| nets.iter().map(|n| bounds(net(n))).collect::<Vec<_>>();
        assert_eq!(
            first_free_block(pool, 26, taken(&[])),
            Some(net("10.0.0.0/26"))
        );
        assert_eq!(
            first_free_block(pool, 26, taken(&["10.0.0.0/26", "10.0.0.128/26"])),
            Some(net("10.0.0.64/26"))
        );
        // A /28 left over from an older pool blocks the /26 around it.
        assert_eq!(
            first_free_block(pool, 26, taken(&["10.0.0.0/26", "10.0.0.80/28"])),
            Some(net("10.0.0.128/26"))
        );
        // Blocks outside the pool do not matter.
        assert_eq!(
            first_free_block(pool, 26, taken(&["9.0.0.0/8", "10.0.0.0/26"])),
            Some(net("10.0.0.64/26"))
        );
        let all = [
            "10.0.0.0/26",
            "10.0.0.64/26",
            "10.0.0.128/26",
            "10.0.0.192/26",
        ];
        assert_eq!(first_free_block(pool, 26, taken(&all)), None);
        // The whole IPv6 space, carved into /122s, without overflow.
        assert_eq!(
            first_free_block(net("::/0"), 122, taken(&[])),
            Some(net("::/122"))
        );
        assert_eq!(
            first_free_block(net("::/0"), 122, taken(&["::/1", "8000::/1"])),
            None
        );
        let last = net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122");
        assert_eq!(
            first_free_block(
                net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"),
                122,
                taken(&[
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121",
                    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/122",
                ])
            ),
            Some(last)
        );
    }

    #[test]
    fn pool_network_and_v4_broadcast_are_not_usable() {
        let pool = net("10.65.0.0/24");
        assert!(!usable_in_pool(pool, ip("10.65.0.0")));
        assert!(!usable_in_pool(pool, ip("10.65.0.255")));
        assert!(usable_in_pool(pool, ip("10.65.0.64")));
        assert!(usable_in_pool(pool, ip("10.65.0.63")));
        let pool6 = net("fd00:65::/120");
        assert!(!usable_in_pool(pool6, ip("fd00:65::")));
        assert!(usable_in_pool(pool6, ip("fd00:65::ff")));
    }

    #[test]
    fn allocate_and_release_keep_attributes_compact() {
        let mut block = Block::new(net("10.0.0.0/26"), Some("n1".into()));
        block.allocate(1, "a");
        block.allocate(2, "b");
        block.allocate(3, "a");
        block.allocate(4, "c");
        assert_eq!(block.attributes.len(), 3);
        assert_eq!(block.holder(3), Some("a"));
        assert_eq!(block.used(), 4);
        block.check().unwrap();

        let freed = block.release_handle("a", 1000);
        assert_eq!(freed, vec![ip("10.0.0.1"), ip("10.0.0.3")]);
        assert_eq!(block.holder(2), Some("b"));
        assert_eq!(block.holder(4), Some("c"));
        assert_eq!(block.released_at(1), Some(1000));
        assert_eq!(block.released_at(3), Some(1000));
        block.check().unwrap();
        assert!(block.release_handle("a", 2000).is_empty());

        block.allocate(1, "d");
        assert_eq!(block.released_at(1), None);
        block.prune_released(31_000, 30_000);
        assert_eq!(block.released_at(3), None);
        block.check().unwrap();
    }

    #[test]
    fn check_rejects_broken_blocks() {
        let mut block = Block::new(net("10.0.0.0/26"), None);
        block.allocations.pop();
        assert!(block.check().unwrap_err().contains("63 allocation slots"));
        let mut block = Block::new(net("10.0.0.0/26"), None);
        block.allocations[0] = Some(0);
        assert!(block.check().unwrap_err().contains("missing attribute"));
        let mut block = Block::new(net("10.0.0.0/26"), None);
        block.cidr = net("10.0.0.1/26");
        assert!(block.check().unwrap_err().contains("not a network address"));
    }
}
