//! The allocation algorithm, as pure functions over an [`IpamState`].
//!
//! Each function takes the state, the pools and the current time, changes
//! the state in memory and says whether it did; [`super::Ipam`] wraps them
//! in load → compute → compare-and-swap. Nothing here does IO, so every
//! rule below is unit-tested directly.
//!
//! Assigning one address of a family follows Calico:
//!
//! 1. a free address in a block affine to the node, blocks in pool order
//!    and then address order;
//! 2. otherwise claim a block for the node: a block nobody holds that
//!    still has room, or a new block at the lowest free place in a pool;
//! 3. otherwise, unless `strict_affinity`, borrow a free address from any
//!    block of an eligible pool (other nodes' blocks);
//! 4. a released address is skipped by 1–3 while it cools down; when
//!    nothing else is free, the one released longest ago is reused.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::block::{bounds, first_free_block, usable_in_pool, Block};
use super::pool::{Family, Pool, PoolSet};
use super::state::{AffinityState, BlockAffinity, HandleRecord, IpamState};
use super::{
    AssignRequest, Assigned, BlockUsage, HandleInfo, IpamConfig, IpamError, IpamUsage, PoolUsage,
};

/// What a step computed, and whether the state changed (and so must be
/// written back).
#[derive(Debug)]
pub struct Outcome<T> {
    pub value: T,
    pub changed: bool,
}

impl<T> Outcome<T> {
    fn unchanged(value: T) -> Self {
        Outcome {
            value,
            changed: false,
        }
    }

    fn changed(value: T) -> Self {
        Outcome {
            value,
            changed: true,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Assigns one address per family with an eligible pool to `req.handle`,
/// or returns what the handle already holds. On error `state` is left
/// half-changed and must be dropped.
pub fn assign(
    state: &mut IpamState,
    pools: &PoolSet,
    req: &AssignRequest,
    config: &IpamConfig,
    now_unix_ms: u64,
) -> Result<Outcome<Assigned>, IpamError> {
    if let Some(record) = state.handles.get(&req.handle) {
        return Ok(Outcome::unchanged(assigned_of(&record.addresses)));
    }
    let v4 = pools.eligible(req, Family::V4)?;
    let v6 = pools.eligible(req, Family::V6)?;
    if v4.is_empty() && v6.is_empty() {
        return Err(IpamError::NoPool {
            family: "IPv4 or IPv6",
            node: req.node.clone(),
        });
    }
    let mut addresses = Vec::new();
    for (family, eligible) in [(Family::V4, v4), (Family::V6, v6)] {
        if eligible.is_empty() {
            continue;
        }
        // On error the caller drops the state, so a first family's
        // address is never left behind.
        let addr =
            assign_one(state, &eligible, req, config, now_unix_ms).ok_or(IpamError::Exhausted {
                family: family.name(),
            })?;
        addresses.push(addr);
    }
    let record = HandleRecord {
        node: req.node.clone(),
        namespace: req.namespace.clone(),
        pod: req.pod.clone(),
        addresses,
        attrs: req.attrs.clone(),
        created_unix_ms: now_unix_ms,
    };
    let assigned = assigned_of(&record.addresses);
    state.handles.insert(req.handle.clone(), record);
    Ok(Outcome::changed(assigned))
}

fn assigned_of(addresses: &[IpAddr]) -> Assigned {
    let mut assigned = Assigned::default();
    for &addr in addresses {
        match addr {
            IpAddr::V4(_) if assigned.ipv4.is_none() => assigned.ipv4 = Some(IpNet::from(addr)),
            IpAddr::V6(_) if assigned.ipv6.is_none() => assigned.ipv6 = Some(IpNet::from(addr)),
            _ => {}
        }
    }
    assigned
}

/// Where a free address was found.
#[derive(Debug, Clone, Copy)]
struct Pick {
    block: usize,
    ordinal: u32,
}

fn assign_one(
    state: &mut IpamState,
    pools: &[&Pool],
    req: &AssignRequest,
    config: &IpamConfig,
    now_unix_ms: u64,
) -> Option<IpAddr> {
    let cooldown_ms = millis(config.cooldown);
    let cooled = |block: &Block, ordinal: u32| {
        block
            .released_at(ordinal)
            .is_none_or(|at| now_unix_ms.saturating_sub(at) >= cooldown_ms)
    };
    let pool_of = |cidr: IpNet| pools.iter().position(|p| p.spec.cidr.contains(&cidr));

    // Blocks of the eligible pools affine to the node, in pool order.
    let mut affine: Vec<(usize, usize)> = state
        .affinities
        .iter()
        .filter(|a| a.node == req.node && a.state == AffinityState::Confirmed)
        .filter_map(|a| {
            let pool = pool_of(a.cidr)?;
            Some((pool, state.block_index_of(a.cidr.network())?))
        })
        .collect();
    affine.sort_unstable();
    // Everyone else's blocks in the eligible pools, for borrowing.
    let mut others: Vec<(usize, usize)> = state
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.affinity.as_deref() != Some(req.node.as_str()))
        .filter_map(|(i, b)| Some((pool_of(b.cidr)?, i)))
        .collect();
    others.sort_unstable();

    let free_in = |state: &IpamState, (pool, block): (usize, usize)| {
        let b = &state.blocks[block];
        (0..b.allocations.len() as u32)
            .find(|&o| {
                b.allocations[o as usize].is_none()
                    && usable_in_pool(pools[pool].spec.cidr, b.address(o))
                    && cooled(b, o)
            })
            .map(|ordinal| Pick { block, ordinal })
    };

    // 1. The node's own blocks.
    let mut pick = affine.iter().find_map(|&at| free_in(state, at));
    // 2. Claim a block.
    if pick.is_none() {
        pick = claim_block(state, pools, &others, &req.node, free_in);
    }
    // 3. Borrow.
    if pick.is_none() && !config.strict_affinity {
        pick = others.iter().find_map(|&at| free_in(state, at));
    }
    // 4. Nothing cooled is left: the address released longest ago.
    if pick.is_none() {
        let borrowable: &[(usize, usize)] = if config.strict_affinity { &[] } else { &others };
        pick = affine
            .iter()
            .chain(borrowable)
            .flat_map(|&(pool, block)| {
                let b = &state.blocks[block];
                b.released.iter().filter_map(move |r| {
                    let free = b.allocations[r.ordinal as usize].is_none()
                        && usable_in_pool(pools[pool].spec.cidr, b.address(r.ordinal));
                    free.then_some((
                        r.at_unix_ms,
                        Pick {
                            block,
                            ordinal: r.ordinal,
                        },
                    ))
                })
            })
            .min_by_key(|(at, _)| *at)
            .map(|(_, pick)| pick);
    }

    let Pick { block, ordinal } = pick?;
    let block = &mut state.blocks[block];
    block.allocate(ordinal, &req.handle);
    Some(block.address(ordinal))
}

/// Claims a block of the eligible pools for `node` and picks an address
/// in it: first a block nobody holds that has a cooled free address, then
/// a new block at the lowest free place of the first pool with room.
fn claim_block(
    state: &mut IpamState,
    pools: &[&Pool],
    others: &[(usize, usize)],
    node: &str,
    free_in: impl Fn(&IpamState, (usize, usize)) -> Option<Pick>,
) -> Option<Pick> {
    let unheld = others
        .iter()
        .filter(|&&(_, block)| state.blocks[block].affinity.is_none())
        .find_map(|&at| free_in(state, at));
    if let Some(pick) = unheld {
        let block = &mut state.blocks[pick.block];
        block.affinity = Some(node.to_owned());
        let cidr = block.cidr;
        state.affinities.push(confirmed(node, cidr));
        return Some(pick);
    }

    for pool in pools {
        let family = Family::of(pool.spec.cidr);
        let mut taken: Vec<(u128, u128)> = state
            .blocks
            .iter()
            .filter(|b| Family::of(b.cidr) == family)
            .map(|b| bounds(b.cidr))
            .collect();
        // A block holding only the pool's network or broadcast address
        // (possible with tiny blocks) is skipped, not claimed.
        while let Some(cidr) = first_free_block(pool.spec.cidr, pool.spec.block_size, taken.clone())
        {
            let block = Block::new(cidr, Some(node.to_owned()));
            let first_usable = (0..block.allocations.len() as u32)
                .find(|&o| usable_in_pool(pool.spec.cidr, block.address(o)));
            let Some(ordinal) = first_usable else {
                let range = bounds(cidr);
                let at = taken.partition_point(|r| *r < range);
                taken.insert(at, range);
                continue;
            };
            let index = state.insert_block(block);
            state.affinities.push(confirmed(node, cidr));
            return Some(Pick {
                block: index,
                ordinal,
            });
        }
    }
    None
}

fn confirmed(node: &str, cidr: IpNet) -> BlockAffinity {
    BlockAffinity {
        node: node.to_owned(),
        cidr,
        state: AffinityState::Confirmed,
    }
}

/// Releases everything `handle` holds; nothing to do when it holds
/// nothing.
pub fn release(state: &mut IpamState, handle: &str, now_unix_ms: u64) -> Outcome<Vec<IpAddr>> {
    let Some(record) = state.handles.remove(handle) else {
        return Outcome::unchanged(Vec::new());
    };
    let mut freed = Vec::with_capacity(record.addresses.len());
    for addr in &record.addresses {
        if let Some(index) = state.block_index_of(*addr) {
            let block = &mut state.blocks[index];
            if block.ordinal(*addr).and_then(|o| block.holder(o)) == Some(handle) {
                freed.extend(block.release_handle(handle, now_unix_ms));
            }
        }
    }
    Outcome::changed(freed)
}

/// Releases every handle `live` says is gone, returning them.
pub fn gc(
    state: &mut IpamState,
    mut live: impl FnMut(&HandleInfo) -> bool,
    now_unix_ms: u64,
) -> Outcome<Vec<HandleInfo>> {
    let dead: Vec<HandleInfo> = state
        .handles
        .iter()
        .map(|(handle, record)| handle_info(handle, record))
        .filter(|info| !live(info))
        .collect();
    for info in &dead {
        release(state, &info.handle, now_unix_ms);
    }
    let changed = !dead.is_empty();
    Outcome {
        value: dead,
        changed,
    }
}

/// Gives up `node`'s affinity for blocks with nothing allocated and
/// nothing cooling down, deleting them; returns their CIDRs.
pub fn release_empty_blocks(
    state: &mut IpamState,
    node: &str,
    now_unix_ms: u64,
    config: &IpamConfig,
) -> Outcome<Vec<IpNet>> {
    let cooldown_ms = millis(config.cooldown);
    let mut released = Vec::new();
    state.blocks.retain_mut(|block| {
        block.prune_released(now_unix_ms, cooldown_ms);
        let idle = block.affinity.as_deref() == Some(node)
            && block.is_empty()
            && block.released.is_empty();
        if idle {
            released.push(block.cidr);
        }
        !idle
    });
    state
        .affinities
        .retain(|a| !(a.node == node && released.contains(&a.cidr)));
    let changed = !released.is_empty();
    Outcome {
        value: released,
        changed,
    }
}

/// Housekeeping before a write: forget release times that have cooled.
pub fn tidy(state: &mut IpamState, now_unix_ms: u64, config: &IpamConfig) {
    let cooldown_ms = millis(config.cooldown);
    for block in &mut state.blocks {
        block.prune_released(now_unix_ms, cooldown_ms);
    }
}

pub fn handle_info(handle: &str, record: &HandleRecord) -> HandleInfo {
    HandleInfo {
        handle: handle.to_owned(),
        node: record.node.clone(),
        namespace: record.namespace.clone(),
        pod: record.pod.clone(),
        addresses: record.addresses.clone(),
        attrs: record.attrs.clone(),
        created: UNIX_EPOCH + Duration::from_millis(record.created_unix_ms),
    }
}

/// Occupancy of every pool and block.
pub fn usage(
    state: &IpamState,
    pools: &PoolSet,
    now_unix_ms: u64,
    config: &IpamConfig,
) -> IpamUsage {
    let cooldown_ms = millis(config.cooldown);
    let pools: Vec<&Pool> = pools.iter().collect();
    let mut by_pool: BTreeMap<usize, Vec<BlockUsage>> = BTreeMap::new();
    let mut orphan_blocks = Vec::new();
    for block in &state.blocks {
        let pool = pools.iter().position(|p| p.spec.cidr.contains(&block.cidr));
        let pool_cidr = pool.map(|i| pools[i].spec.cidr);
        let (mut used, mut free, mut cooling) = (0, 0, 0);
        for (ordinal, slot) in block.allocations.iter().enumerate() {
            let ordinal = ordinal as u32;
            if slot.is_some() {
                used += 1;
            } else if pool_cidr.is_none_or(|p| usable_in_pool(p, block.address(ordinal))) {
                free += 1;
                let at = block.released_at(ordinal);
                if at.is_some_and(|at| now_unix_ms.saturating_sub(at) < cooldown_ms) {
                    cooling += 1;
                }
            }
        }
        let usage = BlockUsage {
            cidr: block.cidr,
            affinity: block.affinity.clone(),
            used,
            free,
            cooling,
        };
        match pool {
            Some(i) => by_pool.entry(i).or_default().push(usage),
            None => orphan_blocks.push(usage),
        }
    }
    let pools = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| {
            let blocks = by_pool.remove(&i).unwrap_or_default();
            let (first, last) = bounds(pool.spec.cidr);
            let size = (last - first).saturating_add(1);
            let reserved = if Family::of(pool.spec.cidr) == Family::V4 {
                2
            } else {
                1
            };
            PoolUsage {
                name: pool.spec.name.clone(),
                cidr: pool.spec.cidr,
                block_size: pool.spec.block_size,
                disabled: pool.spec.disabled,
                capacity: size.saturating_sub(reserved),
                used: blocks.iter().map(|b| u64::from(b.used)).sum(),
                blocks,
            }
        })
        .collect();
    IpamUsage {
        pools,
        orphan_blocks,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ipam::IpPool;

    const N1: &str = "n1";
    const N2: &str = "n2";

    fn pool(name: &str, cidr: &str, block_size: u8) -> IpPool {
        IpPool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size,
            node_selector: String::new(),
            disabled: false,
            nat_outgoing: false,
        }
    }

    fn pools(list: Vec<IpPool>) -> PoolSet {
        PoolSet::new(list).unwrap()
    }

    fn req(handle: &str, node: &str) -> AssignRequest {
        AssignRequest {
            handle: handle.into(),
            node: node.into(),
            ..Default::default()
        }
    }

    fn config(strict_affinity: bool, cooldown_secs: u64) -> IpamConfig {
        IpamConfig {
            strict_affinity,
            cooldown: Duration::from_secs(cooldown_secs),
            ..IpamConfig::default()
        }
    }

    /// Assigns and checks the state's invariants after every step.
    fn take(
        state: &mut IpamState,
        set: &PoolSet,
        r: &AssignRequest,
        cfg: &IpamConfig,
        now: u64,
    ) -> Result<Assigned, IpamError> {
        let out = assign(state, set, r, cfg, now);
        state.check().unwrap();
        out.map(|o| o.value)
    }

    fn v4(a: &Assigned) -> String {
        a.ipv4.unwrap().addr().to_string()
    }

    fn affinity(state: &IpamState, cidr: &str) -> Option<String> {
        let i = state
            .block_index_of(cidr.parse::<IpNet>().unwrap().network())
            .unwrap();
        state.blocks[i].affinity.clone()
    }

    #[test]
    fn first_address_skips_pool_network_and_claims_blocks_in_order() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let a = take(&mut state, &set, &req("h0", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&a), "10.65.0.1");
        assert_eq!(a.ipv4.unwrap().prefix_len(), 32);
        assert_eq!(a.ipv6, None);
        for i in 1..63 {
            take(&mut state, &set, &req(&format!("h{i}"), N1), &cfg, 0).unwrap();
        }
        assert_eq!(state.blocks.len(), 1);
        // The next address comes from a second block, and .64 (not the
        // pool's network address) is handed out.
        let a = take(&mut state, &set, &req("h63", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&a), "10.65.0.64");
        assert_eq!(affinity(&state, "10.65.0.64/26").as_deref(), Some(N1));
        assert_eq!(state.affinities.len(), 2);
        // Another node claims the third block, not one of n1's.
        let b = take(&mut state, &set, &req("other", N2), &cfg, 0).unwrap();
        assert_eq!(v4(&b), "10.65.0.128");
        assert_eq!(affinity(&state, "10.65.0.128/26").as_deref(), Some(N2));
    }

    #[test]
    fn whole_pool_is_usable_except_network_and_broadcast() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let mut seen = BTreeSet::new();
        for i in 0..254 {
            let a = take(&mut state, &set, &req(&format!("h{i}"), N1), &cfg, 0).unwrap();
            assert!(seen.insert(v4(&a)));
        }
        assert!(!seen.contains("10.65.0.0") && !seen.contains("10.65.0.255"));
        assert!(seen.contains("10.65.0.63") && seen.contains("10.65.0.192"));
        let err = take(&mut state, &set, &req("one-more", N1), &cfg, 0).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { family: "IPv4" }));
    }

    #[test]
    fn dual_stack_gets_one_address_per_family() {
        let set = pools(vec![
            pool("v4", "10.65.0.0/24", 0),
            pool("v6", "fd00:65::/120", 0),
        ]);
        let mut state = IpamState::default();
        let a = take(&mut state, &set, &req("h", N1), &config(false, 30), 0).unwrap();
        assert_eq!(a.ipv4.unwrap().to_string(), "10.65.0.1/32");
        assert_eq!(a.ipv6.unwrap().to_string(), "fd00:65::1/128");
        let cidrs: Vec<String> = state.blocks.iter().map(|b| b.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.65.0.0/26", "fd00:65::/122"]);
        assert_eq!(state.handles["h"].addresses.len(), 2);
    }

    #[test]
    fn one_family_exhausted_fails_the_request() {
        // The IPv6 pool holds a single usable address.
        let set = pools(vec![
            pool("v4", "10.65.0.0/24", 0),
            pool("v6", "fd00:65::/127", 127),
        ]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        // (The state is then half-changed and the caller drops it; the
        // Ipam tests check that nothing is stored.)
        let err = assign(&mut state, &set, &req("b", N1), &cfg, 0).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { family: "IPv6" }));
    }

    #[test]
    fn no_pool_for_the_node() {
        let mut set_pool = pool("east", "10.65.0.0/24", 0);
        set_pool.node_selector = "zone == 'east'".into();
        let set = pools(vec![set_pool]);
        let mut state = IpamState::default();
        let err = take(&mut state, &set, &req("h", N1), &config(false, 30), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no IP pool for IPv4 or IPv6 selects node \"n1\""
        );
        let mut r = req("h", N1);
        r.node_labels.insert("zone".into(), "east".into());
        take(&mut state, &set, &r, &config(false, 30), 0).unwrap();
    }

    #[test]
    fn assign_is_idempotent_per_handle() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 0)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let first = assign(&mut state, &set, &req("h", N1), &cfg, 0).unwrap();
        assert!(first.changed);
        let again = assign(&mut state, &set, &req("h", N1), &cfg, 0).unwrap();
        assert!(!again.changed);
        assert_eq!(first.value, again.value);
        assert_eq!(state.handles.len(), 1);
        assert_eq!(state.blocks[0].used(), 1);
    }

    #[test]
    fn release_is_idempotent_and_frees_addresses() {
        let set = pools(vec![
            pool("v4", "10.65.0.0/24", 0),
            pool("v6", "fd00:65::/120", 0),
        ]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("h", N1), &cfg, 0).unwrap();
        let out = release(&mut state, "h", 5);
        assert!(out.changed);
        let freed: Vec<String> = out.value.iter().map(ToString::to_string).collect();
        assert_eq!(freed, ["10.65.0.1", "fd00:65::1"]);
        state.check().unwrap();
        assert!(state.handles.is_empty());
        assert!(state.blocks.iter().all(Block::is_empty));
        let again = release(&mut state, "h", 6);
        assert!(!again.changed && again.value.is_empty());
    }

    #[test]
    fn borrows_from_other_nodes_blocks_when_not_strict() {
        // One block only: n1 claims it, n2 must borrow.
        let set = pools(vec![pool("p", "10.65.0.0/26", 26)]);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &config(false, 30), 0).unwrap();
        let b = take(&mut state, &set, &req("b", N2), &config(false, 30), 0).unwrap();
        assert_eq!(v4(&b), "10.65.0.2");
        // Borrowing does not move the block's affinity.
        assert_eq!(affinity(&state, "10.65.0.0/26").as_deref(), Some(N1));
        assert_eq!(state.handles["b"].node, N2);
    }

    #[test]
    fn strict_affinity_refuses_to_borrow() {
        let set = pools(vec![pool("p", "10.65.0.0/26", 26)]);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &config(true, 30), 0).unwrap();
        let err = take(&mut state, &set, &req("b", N2), &config(true, 30), 0).unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { family: "IPv4" }));
    }

    #[test]
    fn own_blocks_come_before_claiming_and_claiming_before_borrowing() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        // n2 owns the first block and has room in it.
        take(&mut state, &set, &req("x", N2), &cfg, 0).unwrap();
        // n1 claims its own block rather than borrowing from n2's.
        let a = take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&a), "10.65.0.64");
        // And keeps using it.
        let b = take(&mut state, &set, &req("b", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&b), "10.65.0.65");
    }

    #[test]
    fn affine_blocks_follow_pool_order() {
        let set = pools(vec![
            pool("first", "10.66.0.0/24", 26),
            pool("second", "10.65.0.0/24", 26),
        ]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let a = take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&a), "10.66.0.1");
        // A request naming the second pool claims a block there.
        let mut r = req("b", N1);
        r.ipv4_pools = Some(vec!["second".into()]);
        assert_eq!(
            v4(&take(&mut state, &set, &r, &cfg, 0).unwrap()),
            "10.65.0.1"
        );
        // Unnamed requests still prefer the first pool's block.
        assert_eq!(
            v4(&take(&mut state, &set, &req("c", N1), &cfg, 0).unwrap()),
            "10.66.0.2"
        );
    }

    #[test]
    fn pool_selection_by_annotation() {
        let set = pools(vec![
            pool("default", "10.65.0.0/24", 0),
            IpPool {
                node_selector: "!all()".into(),
                ..pool("special", "10.99.0.0/24", 0)
            },
            pool("v6", "fd00:65::/120", 0),
        ]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let plain = take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        assert_eq!(v4(&plain), "10.65.0.1");
        let mut r = req("b", N1);
        r.ipv4_pools = Some(vec!["special".into()]);
        r.ipv6_pools = Some(vec!["fd00:65::/120".into()]);
        let named = take(&mut state, &set, &r, &cfg, 0).unwrap();
        assert_eq!(v4(&named), "10.99.0.1");
        assert_eq!(named.ipv6.unwrap().addr().to_string(), "fd00:65::2");
        let mut r = req("c", N1);
        r.ipv4_pools = Some(vec!["missing".into()]);
        let err = take(&mut state, &set, &r, &cfg, 0).unwrap_err();
        assert!(matches!(err, IpamError::UnknownPool(p) if p == "missing"));
    }

    #[test]
    fn released_addresses_cool_down_before_reuse() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        let a = take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        release(&mut state, "a", 1_000);
        // Within the cool-down the next address is handed out instead.
        let b = take(&mut state, &set, &req("b", N1), &cfg, 2_000).unwrap();
        assert_ne!(v4(&a), v4(&b));
        assert_eq!(v4(&b), "10.65.0.2");
        // Once cooled, the lowest free address is used again.
        let c = take(&mut state, &set, &req("c", N1), &cfg, 31_000).unwrap();
        assert_eq!(v4(&c), v4(&a));
    }

    #[test]
    fn cooling_addresses_are_reused_oldest_first_when_nothing_else_is_free() {
        // A pool of three usable addresses.
        let set = pools(vec![pool("p", "10.65.0.0/30", 30)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap(); // .1
        take(&mut state, &set, &req("b", N1), &cfg, 0).unwrap(); // .2
        release(&mut state, "b", 100);
        release(&mut state, "a", 200);
        // .2 was released first, so it is the one reused.
        let c = take(&mut state, &set, &req("c", N1), &cfg, 300).unwrap();
        assert_eq!(v4(&c), "10.65.0.2");
        let d = take(&mut state, &set, &req("d", N1), &cfg, 300).unwrap();
        assert_eq!(v4(&d), "10.65.0.1");
        // .3 is the broadcast address of the pool.
        assert!(take(&mut state, &set, &req("e", N1), &cfg, 300).is_err());
    }

    #[test]
    fn cooling_address_is_not_reused_while_a_block_can_be_claimed() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 30)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap(); // .1
        take(&mut state, &set, &req("b", N1), &cfg, 0).unwrap(); // .2
        take(&mut state, &set, &req("c", N1), &cfg, 0).unwrap(); // .3
        release(&mut state, "b", 10);
        let d = take(&mut state, &set, &req("d", N1), &cfg, 20).unwrap();
        assert_eq!(v4(&d), "10.65.0.4");
    }

    #[test]
    fn unheld_blocks_are_claimed_before_new_ones() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 0);
        let mut state = IpamState::default();
        take(&mut state, &set, &req("a", N1), &cfg, 0).unwrap();
        // n1's block lost its affinity (its node went away) but is in use.
        state.blocks[0].affinity = None;
        state.affinities.clear();
        let b = take(&mut state, &set, &req("b", N2), &cfg, 0).unwrap();
        assert_eq!(v4(&b), "10.65.0.2");
        assert_eq!(affinity(&state, "10.65.0.0/26").as_deref(), Some(N2));
    }

    #[test]
    fn gc_releases_handles_whose_pod_is_gone() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 0)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        for (handle, pod) in [("h1", "alive"), ("h2", "dead"), ("h3", "dead")] {
            let r = AssignRequest {
                pod: pod.into(),
                namespace: "ns".into(),
                ..req(handle, N1)
            };
            take(&mut state, &set, &r, &cfg, 0).unwrap();
        }
        let out = gc(&mut state, |h| h.pod == "alive", 10);
        assert!(out.changed);
        let gone: Vec<&str> = out.value.iter().map(|h| h.handle.as_str()).collect();
        assert_eq!(gone, ["h2", "h3"]);
        assert_eq!(
            out.value[0].addresses,
            vec!["10.65.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(state.handles.keys().collect::<Vec<_>>(), ["h1"]);
        state.check().unwrap();
        let again = gc(&mut state, |h| h.pod == "alive", 20);
        assert!(!again.changed && again.value.is_empty());
    }

    #[test]
    fn empty_blocks_are_released_after_their_cool_down() {
        let set = pools(vec![pool("p", "10.65.0.0/24", 26)]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        for i in 0..64 {
            take(&mut state, &set, &req(&format!("h{i}"), N1), &cfg, 0).unwrap();
        }
        take(&mut state, &set, &req("x", N2), &cfg, 0).unwrap();
        assert_eq!(state.blocks.len(), 3);
        release(&mut state, "h63", 1_000); // empties n1's second block
        let out = release_empty_blocks(&mut state, N1, 2_000, &cfg);
        assert!(!out.changed, "still cooling");
        let out = release_empty_blocks(&mut state, N1, 40_000, &cfg);
        assert_eq!(out.value, vec!["10.65.0.64/26".parse::<IpNet>().unwrap()]);
        state.check().unwrap();
        assert_eq!(state.blocks.len(), 2);
        assert_eq!(state.affinities.len(), 2);
        // n2's block and n1's busy block stay.
        assert!(!release_empty_blocks(&mut state, N2, 40_000, &cfg).changed);
    }

    #[test]
    fn usage_counts_blocks_per_pool() {
        let set = pools(vec![
            pool("p", "10.65.0.0/24", 26),
            pool("v6", "fd00::/64", 0),
        ]);
        let cfg = config(false, 30);
        let mut state = IpamState::default();
        for i in 0..3 {
            take(&mut state, &set, &req(&format!("h{i}"), N1), &cfg, 0).unwrap();
        }
        release(&mut state, "h1", 0);
        let usage = usage(&state, &set, 1, &cfg);
        assert_eq!(usage.pools.len(), 2);
        let p = &usage.pools[0];
        assert_eq!((p.capacity, p.used), (254, 2));
        assert_eq!(p.blocks.len(), 1);
        let b = &p.blocks[0];
        assert_eq!((b.used, b.free, b.cooling), (2, 61, 1));
        assert_eq!(b.affinity.as_deref(), Some(N1));
        assert_eq!(usage.pools[1].capacity, (1u128 << 64) - 1);
        assert_eq!(usage.pools[1].blocks[0].used, 2);
        assert!(usage.orphan_blocks.is_empty());
        // A block whose pool was removed is still shown.
        let other = pools(vec![pool("q", "10.70.0.0/24", 26)]);
        assert_eq!(super::usage(&state, &other, 1, &cfg).orphan_blocks.len(), 2);
    }
}
