//! Caracal's LPM trie (16-8-8…) against `rte_lpm` (IPv4, DIR-24-8) and
//! `rte_lpm6` (IPv6, 24-8-8…) on the same random, seeded route tables:
//! build time, memory, and lookup cycles over random addresses in
//! batches; every looked-up address must get the same next hop from both.
//!
//! Prefix lengths follow the shape of real tables. IPv4: mostly /24, then
//! /16–/23, a few /8–/15, and a tail of /25–/32 (host and pod-block
//! routes, which cost `rte_lpm` a second-level group each). IPv6: /48
//! for half, then /56, /64, /52, /60 and /36–/44, all under a few
//! provider /32s per thousand routes (as real allocations nest), and a
//! few /29–/32 anywhere in 2000::/3.

use std::collections::HashSet;
use std::ops::{BitOr, BitXor};
use std::time::Duration;

use caracal_dataplane::tables::lpm::{Lpm, LpmKey};
use caracal_dpdk_sys::{DpdkError, Eal, Lpm4, Lpm6};
use serde::{Deserialize, Serialize};

use super::{lookup_figure, timed, LookupFigure, Opts, PeerError, Rng};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

/// One route: a prefix (host bits cleared, as an integer in host order),
/// its length and a next-hop id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route<A> {
    pub prefix: A,
    pub len: u8,
    pub next_hop: u32,
}

/// Both tables on one route set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LpmComparison {
    pub family: Family,
    /// Distinct prefixes in both tables.
    pub prefixes: usize,
    /// Second-level groups the DPDK table was sized for (what it needs,
    /// plus a margin; both DPDK tables allocate everything up front).
    pub dpdk_tbl8_groups: usize,
    pub tsc_hz: u64,
    pub quick: bool,
    /// `rte_lpm` or `rte_lpm6`.
    pub dpdk_table: String,
    pub caracal: LpmFigures,
    pub dpdk: LpmFigures,
    /// Addresses both looked up, those that matched a route, and those on
    /// which the two tables disagree.
    pub compared: usize,
    pub hits: usize,
    pub mismatches: usize,
}

/// One table's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LpmFigures {
    /// Creating the table and adding every route, ms.
    pub build_ms: f64,
    /// Bytes of lookup tables (for DPDK: its heap bytes, the rule store
    /// included).
    pub memory_bytes: usize,
    /// Per workload (`uniform` addresses, addresses `covered` by a random
    /// route) and batch size.
    pub lookups: Vec<LookupFigure>,
}

/// `n` distinct random routes of `family`, deterministic for a given
/// `seed`, with next hops below 2^20 (what `rte_lpm6` can hold).
pub fn random_routes(family: Family, n: usize, seed: u64) -> RouteSet {
    let mut rng = Rng(seed);
    match family {
        Family::V4 => RouteSet::V4(distinct(n, &mut rng, route_v4)),
        Family::V6 => {
            let providers: Vec<u128> = (0..(n / 1000).max(16))
                .map(|_| global_v6(&mut rng).mask(32))
                .collect();
            RouteSet::V6(distinct(n, &mut rng, |rng| route_v6(rng, &providers)))
        }
    }
}

/// The routes of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteSet {
    V4(Vec<Route<u32>>),
    V6(Vec<Route<u128>>),
}

/// Up to `n` routes from `draw` with distinct prefixes (it gives up after
/// 20 n draws, which the length mixes here never come near).
fn distinct<A: LpmKey>(
    n: usize,
    rng: &mut Rng,
    mut draw: impl FnMut(&mut Rng) -> (A, u8),
) -> Vec<Route<A>> {
    let mut seen = HashSet::with_capacity(n);
    let mut routes = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(20) {
        if routes.len() == n {
            break;
        }
        let (addr, len) = draw(rng);
        let prefix = addr.mask(len);
        if seen.insert((prefix, len)) {
            let next_hop = rng.below(1 << 20) as u32;
            routes.push(Route {
                prefix,
                len,
                next_hop,
            });
        }
    }
    routes
}

/// A prefix length from `(length, weight)` pairs whose weights sum to 1000.
fn pick_len(rng: &mut Rng, mix: &[(u8, usize)]) -> u8 {
    let mut x = rng.below(1000);
    for &(len, w) in mix {
        if x < w {
            return len;
        }
        x -= w;
    }
    mix[mix.len() - 1].0
}

/// IPv4 prefix lengths, per mille.
const V4_MIX: &[(u8, usize)] = &[
    (8, 1),
    (12, 1),
    (14, 1),
    (16, 15),
    (17, 10),
    (18, 15),
    (19, 25),
    (20, 30),
    (21, 35),
    (22, 90),
    (23, 80),
    (24, 600),
    (25, 10),
    (26, 15),
    (27, 10),
    (28, 10),
    (29, 12),
    (30, 10),
    (31, 5),
    (32, 25),
];

fn route_v4(rng: &mut Rng) -> (u32, u8) {
    // Unicast space, 1.0.0.0–223.255.255.255.
    let addr = (1 + rng.below(223) as u32) << 24 | (rng.next_u64() as u32 & 0x00ff_ffff);
    (addr, pick_len(rng, V4_MIX))
}

/// IPv6 prefix lengths under a provider /32, per mille (the 20 missing
/// are /29–/32 anywhere).
const V6_MIX: &[(u8, usize)] = &[
    (36, 10),
    (40, 20),
    (44, 20),
    (48, 500),
    (52, 50),
    (56, 150),
    (60, 50),
    (64, 180),
];

/// A random address in 2000::/3.
fn global_v6(rng: &mut Rng) -> u128 {
    let a = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    (a >> 3) | (1u128 << 125)
}

fn route_v6(rng: &mut Rng, providers: &[u128]) -> (u128, u8) {
    let x = rng.below(1000);
    if x < 20 {
        return (global_v6(rng), if x < 5 { 29 } else { 32 });
    }
    let provider = providers[rng.below(providers.len())];
    // Random bits below the provider's 32.
    let low = (u128::from(rng.next_u64()) << 32) | u128::from(rng.next_u64() as u32);
    (provider | low, pick_len(rng, V6_MIX))
}

/// A DPDK LPM table, in the form this comparison drives it.
trait DpdkTable: Sized {
    /// Our key type.
    type Key: LpmKey + BitOr<Output = Self::Key> + BitXor<Output = Self::Key>;
    /// DPDK's form of an address.
    type Addr: Copy;
    const NAME: &'static str;
    fn addr(a: Self::Key) -> Self::Addr;
    fn create(eal: &Eal, rules: usize, tbl8_groups: usize) -> Result<Self, DpdkError>;
    fn add(&mut self, r: &Route<Self::Key>) -> Result<(), DpdkError>;
    fn lookup_bulk(&self, addrs: &[Self::Addr], out: &mut [Option<u32>]);
    fn memory_bytes(&self) -> usize;
}

impl DpdkTable for Lpm4 {
    type Key = u32;
    type Addr = u32;
    const NAME: &'static str = "rte_lpm";
    fn addr(a: u32) -> u32 {
        a
    }
    fn create(eal: &Eal, rules: usize, tbl8_groups: usize) -> Result<Self, DpdkError> {
        Lpm4::new(eal, rules, tbl8_groups)
    }
    fn add(&mut self, r: &Route<u32>) -> Result<(), DpdkError> {
        Lpm4::add(self, r.prefix, r.len, r.next_hop)
    }
    fn lookup_bulk(&self, addrs: &[u32], out: &mut [Option<u32>]) {
        Lpm4::lookup_bulk(self, addrs, out);
    }
    fn memory_bytes(&self) -> usize {
        Lpm4::memory_bytes(self)
    }
}

impl DpdkTable for Lpm6 {
    type Key = u128;
    type Addr = [u8; 16];
    const NAME: &'static str = "rte_lpm6";
    fn addr(a: u128) -> [u8; 16] {
        a.to_be_bytes()
    }
    fn create(eal: &Eal, rules: usize, tbl8_groups: usize) -> Result<Self, DpdkError> {
        Lpm6::new(eal, rules, tbl8_groups)
    }
    fn add(&mut self, r: &Route<u128>) -> Result<(), DpdkError> {
        Lpm6::add(self, &r.prefix.to_be_bytes(), r.len, r.next_hop)
    }
    fn lookup_bulk(&self, addrs: &[[u8; 16]], out: &mut [Option<u32>]) {
        Lpm6::lookup_bulk(self, addrs, out);
    }
    fn memory_bytes(&self) -> usize {
        Lpm6::memory_bytes(self)
    }
}

/// Second-level groups `rte_lpm` / `rte_lpm6` need for `routes`: one per
/// distinct 8-bit level below the first 24 bits on each prefix's path.
pub fn tbl8_groups<A: LpmKey>(routes: &[Route<A>]) -> usize {
    let mut nodes = HashSet::new();
    for r in routes {
        for b in (24..r.len).step_by(8) {
            nodes.insert((b, r.prefix.mask(b)));
        }
    }
    nodes.len()
}

/// Our trie and DPDK's table `T` over `routes`, each route length ≥ 1.
fn compare<T: DpdkTable>(
    family: Family,
    routes: &[Route<T::Key>],
    uniform: Vec<T::Key>,
    opts: &Opts,
    rng: &mut Rng,
) -> Result<LpmComparison, PeerError> {
    let eal = Eal::init()?;
    let covered: Vec<T::Key> = (0..uniform.len())
        .map(|_| {
            // A random route's prefix over random host bits.
            let r = &routes[rng.below(routes.len())];
            let host = uniform[rng.below(uniform.len())];
            r.prefix | (host ^ host.mask(r.len))
        })
        .collect();
    let workloads: [(&str, Vec<T::Key>); 2] = [("uniform", uniform), ("covered", covered)];
    let dpdk_workloads: Vec<Vec<T::Addr>> = workloads
        .iter()
        .map(|(_, keys)| keys.iter().map(|&a| T::addr(a)).collect())
        .collect();

    let (ours, our_build) = timed(|| {
        let mut t = Lpm::<T::Key>::new();
        for r in routes {
            t.insert(r.prefix, r.len, r.next_hop);
        }
        t
    });
    let groups = tbl8_groups(routes);
    let groups = groups + groups / 10 + 256;
    let (dpdk, dpdk_build) = timed(|| {
        let mut t = T::create(eal, routes.len(), groups)?;
        for r in routes {
            t.add(r)?;
        }
        Ok::<_, DpdkError>(t)
    });
    let dpdk = dpdk?;

    let (mut compared, mut hits, mut mismatches) = (0, 0, 0);
    for ((_, keys), addrs) in workloads.iter().zip(&dpdk_workloads) {
        let mut theirs = vec![None; addrs.len()];
        dpdk.lookup_bulk(addrs, &mut theirs);
        for (&k, t) in keys.iter().zip(&theirs) {
            let o = ours.lookup(k);
            compared += 1;
            hits += usize::from(o.is_some());
            mismatches += usize::from(o != *t);
        }
    }

    let (mut our_lookups, mut dpdk_lookups) = (Vec::new(), Vec::new());
    for ((w, keys), addrs) in workloads.iter().zip(&dpdk_workloads) {
        for &batch in &opts.batches {
            our_lookups.push(lookup_figure(
                w,
                batch,
                opts.duration,
                keys,
                |k, out: &mut [Option<u32>]| {
                    for (o, &a) in out.iter_mut().zip(k) {
                        *o = ours.lookup(a);
                    }
                },
            ));
            dpdk_lookups.push(lookup_figure(
                w,
                batch,
                opts.duration,
                addrs,
                |a, out: &mut [Option<u32>]| dpdk.lookup_bulk(a, out),
            ));
        }
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(LpmComparison {
        family,
        prefixes: routes.len(),
        dpdk_tbl8_groups: groups,
        tsc_hz: eal.tsc_hz(),
        quick: opts.quick,
        dpdk_table: T::NAME.to_owned(),
        caracal: LpmFigures {
            build_ms: ms(our_build),
            memory_bytes: ours.memory_bytes(),
            lookups: our_lookups,
        },
        dpdk: LpmFigures {
            build_ms: ms(dpdk_build),
            memory_bytes: dpdk.memory_bytes(),
            lookups: dpdk_lookups,
        },
        compared,
        hits,
        mismatches,
    })
}

/// Our LPM trie and `rte_lpm` (v4) or `rte_lpm6` (v6) with `prefixes`
/// random routes ([`random_routes`]), looked up with as many uniform
/// random addresses (IPv6: in 2000::/3) and addresses inside random
/// routes.
///
/// Mind the size in quick runs: `rte_lpm_add` finds an existing rule by a
/// linear scan of the rules of its length, so building `rte_lpm` is
/// quadratic — about 100 s for a million IPv4 routes (most of them /24)
/// on the development machines, against 1 s for 100 000. `rte_lpm6`
/// keeps its rules in a hash and builds a million in about 2 s.
pub fn lpm(family: Family, prefixes: usize, opts: &Opts) -> Result<LpmComparison, PeerError> {
    let seed = 0x1b3 ^ prefixes as u64;
    let mut rng = Rng(seed ^ 0xadd7);
    let n = opts.keys();
    match random_routes(family, prefixes, seed) {
        RouteSet::V4(routes) => {
            let uniform = (0..n).map(|_| rng.next_u64() as u32).collect();
            compare::<Lpm4>(family, &routes, uniform, opts, &mut rng)
        }
        RouteSet::V6(routes) => {
            let uniform = (0..n).map(|_| global_v6(&mut rng)).collect();
            compare::<Lpm6>(family, &routes, uniform, opts, &mut rng)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_distinct_deterministic_and_shaped() {
        let RouteSet::V4(a) = random_routes(Family::V4, 20_000, 7) else {
            panic!("v4")
        };
        assert_eq!(a.len(), 20_000);
        assert_eq!(
            RouteSet::V4(a.clone()),
            random_routes(Family::V4, 20_000, 7)
        );
        let share = |len: u8| a.iter().filter(|r| r.len == len).count() as f64 / a.len() as f64;
        assert!((share(24) - 0.6).abs() < 0.03, "{}", share(24));
        assert!(a
            .iter()
            .all(|r| r.prefix == r.prefix.mask(r.len) && r.len >= 8));
        let RouteSet::V6(b) = random_routes(Family::V6, 20_000, 7) else {
            panic!("v6")
        };
        assert_eq!(b.len(), 20_000);
        assert!(b.iter().all(|r| r.prefix >> 125 == 1 && r.len >= 29));
    }
}
