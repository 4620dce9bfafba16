//! Longest-prefix match over a multibit trie with fixed strides: a 16-bit
//! first level, then 8-bit levels (16-8-8 for IPv4, 16-8-...-8 for IPv6),
//! with leaf pushing, in the family of DIR-24-8 and DPDK's `rte_lpm6`.
//!
//! The first level (65 536 entries, 256 KiB) stays in L2; an IPv4 lookup
//! is at most three dependent loads. Entries carry the depth of the prefix
//! that wrote them, so inserts and deletes are incremental: an insert only
//! overwrites entries of shorter prefixes, a delete restores the next
//! shorter covering prefix, which the caller supplies from its route table.
//!
//! The trie is plain data (`Clone`): the engine edits its master copy and
//! publishes clones as immutable snapshots.

use std::fmt;

/// An address usable as a trie key.
pub trait LpmKey: Copy + Eq + std::hash::Hash + fmt::Debug {
    /// Address width in bits.
    const BITS: u8;
    /// `width` bits starting `from` bits after the most significant bit.
    fn bits(self, from: u8, width: u8) -> usize;
    /// The address with everything after the first `len` bits cleared.
    fn mask(self, len: u8) -> Self;
}

impl LpmKey for u32 {
    const BITS: u8 = 32;
    #[inline(always)]
    fn bits(self, from: u8, width: u8) -> usize {
        ((self << from) >> (32 - width)) as usize
    }
    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
}

impl LpmKey for u128 {
    const BITS: u8 = 128;
    #[inline(always)]
    fn bits(self, from: u8, width: u8) -> usize {
        ((self << from) >> (128 - width)) as usize
    }
    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
}

/// Bits resolved by the first level.
const ROOT_BITS: u8 = 16;
/// Bits resolved by each later level.
const GROUP_BITS: u8 = 8;
const GROUP_SIZE: usize = 1 << GROUP_BITS;

/// Entry layout: `EXT` set → the low 31 bits index a child group;
/// otherwise bits 23..31 hold the depth of the prefix that wrote the entry
/// and bits 0..23 hold next-hop + 1 (0 = no route).
const EXT: u32 = 1 << 31;
const DEPTH_SHIFT: u32 = 23;
const VALUE_MASK: u32 = (1 << DEPTH_SHIFT) - 1;
const EMPTY: u32 = 0;

/// Largest next-hop value a trie can hold.
pub const MAX_NEXT_HOP: u32 = VALUE_MASK - 1;

#[inline]
fn leaf(depth: u8, next_hop: u32) -> u32 {
    (u32::from(depth) << DEPTH_SHIFT) | (next_hop + 1)
}

#[inline]
fn leaf_depth(e: u32) -> u8 {
    (e >> DEPTH_SHIFT) as u8
}

/// A multibit trie mapping prefixes of `K` to `u32` next-hop ids.
#[derive(Clone)]
pub struct Lpm<K: LpmKey> {
    root: Box<[u32]>,
    /// Child groups, `GROUP_SIZE` entries each, back to back.
    groups: Vec<u32>,
    free_groups: Vec<u32>,
    _key: std::marker::PhantomData<K>,
}

impl<K: LpmKey> fmt::Debug for Lpm<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm")
            .field("bits", &K::BITS)
            .field("groups", &self.group_count())
            .field("bytes", &self.memory_bytes())
            .finish()
    }
}

impl<K: LpmKey> Default for Lpm<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a level starts and how wide it is.
#[inline(always)]
fn level_span(level: u8) -> (u8, u8) {
    if level == 0 {
        (0, ROOT_BITS)
    } else {
        (ROOT_BITS + (level - 1) * GROUP_BITS, GROUP_BITS)
    }
}

impl<K: LpmKey> Lpm<K> {
    pub fn new() -> Self {
        Lpm {
            root: vec![EMPTY; 1 << ROOT_BITS].into_boxed_slice(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            _key: std::marker::PhantomData,
        }
    }

    /// Groups in use.
    pub fn group_count(&self) -> usize {
        self.groups.len() / GROUP_SIZE - self.free_groups.len()
    }

    /// Bytes of lookup tables.
    pub fn memory_bytes(&self) -> usize {
        (self.root.len() + self.groups.len()) * 4
    }

    /// The next hop of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: K) -> Option<u32> {
        let mut e = self.root[addr.bits(0, ROOT_BITS)];
        let mut from = ROOT_BITS;
        while e & EXT != 0 {
            let base = ((e & !EXT) as usize) * GROUP_SIZE;
            e = self.groups[base + addr.bits(from, GROUP_BITS)];
            from += GROUP_BITS;
        }
        let v = e & VALUE_MASK;
        (v != 0).then(|| v - 1)
    }

    /// Sets `prefix/len` → `next_hop`, over any shorter prefix and under
    /// any longer one. Replaces the next hop if the prefix already exists.
    ///
    /// # Panics
    /// If `len > K::BITS` or `next_hop > MAX_NEXT_HOP` (callers validate).
    pub fn insert(&mut self, prefix: K, len: u8, next_hop: u32) {
        assert!(len <= K::BITS && next_hop <= MAX_NEXT_HOP);
        let prefix = prefix.mask(len);
        self.write(prefix, len, |old| {
            (old & EXT == 0 && leaf_depth(old) <= len).then_some(leaf(len, next_hop))
        });
    }

    /// Removes `prefix/len`; entries it owned now resolve to `covering`
    /// (the depth and next hop of the longest shorter prefix that contains
    /// it, from the caller's route table) or to nothing.
    pub fn remove(&mut self, prefix: K, len: u8, covering: Option<(u8, u32)>) {
        assert!(len <= K::BITS);
        let prefix = prefix.mask(len);
        let replacement = covering.map_or(EMPTY, |(d, nh)| {
            assert!(d < len || len == 0);
            leaf(d, nh)
        });
        self.write(prefix, len, |old| {
            (old & EXT == 0 && old != EMPTY && leaf_depth(old) == len).then_some(replacement)
        });
    }

    /// Applies `update` to every leaf entry the prefix spans, descending
    /// into (and creating) groups as needed, then folds uniform groups.
    fn write(&mut self, prefix: K, len: u8, update: impl Fn(u32) -> Option<u32> + Copy) {
        // Walk down to the level that holds the prefix's last bits.
        let mut level = 0u8;
        let mut table: Option<u32> = None; // None = root
        let mut path: Vec<(Option<u32>, usize)> = Vec::new();
        loop {
            let (from, width) = level_span(level);
            if len <= from + width {
                let shift = from + width - len;
                let first = prefix.bits(from, width) & !((1usize << shift) - 1);
                for i in first..first + (1usize << shift) {
                    self.update_entry(table, i, update);
                }
                break;
            }
            let i = prefix.bits(from, width);
            let e = self.entry(table, i);
            let g = if e & EXT != 0 {
                e & !EXT
            } else {
                let g = self.alloc_group(e);
                self.set_entry(table, i, EXT | g);
                g
            };
            path.push((table, i));
            table = Some(g);
            level += 1;
        }
        // Fold groups that became uniform leaves, bottom up.
        while let Some((parent, i)) = path.pop() {
            let g = self.entry(parent, i) & !EXT;
            let base = g as usize * GROUP_SIZE;
            let first = self.groups[base];
            if first & EXT != 0
                || self.groups[base..base + GROUP_SIZE]
                    .iter()
                    .any(|&e| e != first)
            {
                break;
            }
            self.set_entry(parent, i, first);
            self.free_groups.push(g);
        }
    }

    /// Updates one entry, pushing the update into child groups.
    fn update_entry(
        &mut self,
        table: Option<u32>,
        i: usize,
        update: impl Fn(u32) -> Option<u32> + Copy,
    ) {
        let e = self.entry(table, i);
        if e & EXT != 0 {
            let g = e & !EXT;
            for j in 0..GROUP_SIZE {
                self.update_entry(Some(g), j, update);
            }
            let base = g as usize * GROUP_SIZE;
            let first = self.groups[base];
            if first & EXT == 0
                && self.groups[base..base + GROUP_SIZE]
                    .iter()
                    .all(|&x| x == first)
            {
                self.set_entry(table, i, first);
                self.free_groups.push(g);
            }
        } else if let Some(new) = update(e) {
            self.set_entry(table, i, new);
        }
    }

    #[inline]
    fn entry(&self, table: Option<u32>, i: usize) -> u32 {
        match table {
            None => self.root[i],
            Some(g) => self.groups[g as usize * GROUP_SIZE + i],
        }
    }

    #[inline]
    fn set_entry(&mut self, table: Option<u32>, i: usize, e: u32) {
        match table {
            None => self.root[i] = e,
            Some(g) => self.groups[g as usize * GROUP_SIZE + i] = e,
        }
    }

    /// A group whose every entry is `fill` (the leaf it replaces).
    fn alloc_group(&mut self, fill: u32) -> u32 {
        let g = match self.free_groups.pop() {
            Some(g) => g,
            None => {
                let g = (self.groups.len() / GROUP_SIZE) as u32;
                assert!(g < EXT, "trie group space exhausted");
                self.groups.resize(self.groups.len() + GROUP_SIZE, EMPTY);
                g
            }
        };
        let base = g as usize * GROUP_SIZE;
        self.groups[base..base + GROUP_SIZE].fill(fill);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// The obvious LPM: scan every prefix.
    struct Reference<K: LpmKey> {
        routes: HashMap<(K, u8), u32>,
    }

    impl<K: LpmKey> Default for Reference<K> {
        fn default() -> Self {
            Reference {
                routes: HashMap::new(),
            }
        }
    }

    impl<K: LpmKey> Reference<K> {
        fn lookup(&self, a: K) -> Option<u32> {
            self.routes
                .iter()
                .filter(|((p, l), _)| a.mask(*l) == *p)
                .max_by_key(|((_, l), _)| *l)
                .map(|(_, nh)| *nh)
        }
        fn covering(&self, p: K, len: u8) -> Option<(u8, u32)> {
            (0..len)
                .rev()
                .find_map(|l| self.routes.get(&(p.mask(l), l)).map(|nh| (l, *nh)))
        }
    }

    #[test]
    fn ipv4_basics() {
        let mut t = Lpm::<u32>::new();
        assert_eq!(t.lookup(0x0a000001), None);
        t.insert(0, 0, 1);
        t.insert(0x0a000000, 8, 2);
        t.insert(0x0a010200, 24, 3);
        t.insert(0x0a010203, 32, 4);
        assert_eq!(t.lookup(0x0b000000), Some(1));
        assert_eq!(t.lookup(0x0a7f0000), Some(2));
        assert_eq!(t.lookup(0x0a010201), Some(3));
        assert_eq!(t.lookup(0x0a010203), Some(4));
        // A shorter prefix inserted later does not shadow longer ones.
        t.insert(0x0a010000, 16, 5);
        assert_eq!(t.lookup(0x0a010203), Some(4));
        assert_eq!(t.lookup(0x0a010300), Some(5));
        t.remove(0x0a010203, 32, Some((24, 3)));
        assert_eq!(t.lookup(0x0a010203), Some(3));
        t.remove(0x0a010200, 24, Some((16, 5)));
        t.remove(0x0a010000, 16, Some((8, 2)));
        assert_eq!(t.lookup(0x0a010203), Some(2));
        assert_eq!(t.group_count(), 0, "groups fold back when uniform");
    }

    #[test]
    fn replace_next_hop() {
        let mut t = Lpm::<u128>::new();
        let p = 0xfd00_0065_0000_0000_0000_0000_0000_0005u128;
        t.insert(p, 128, 7);
        t.insert(p, 128, 9);
        assert_eq!(t.lookup(p), Some(9));
        assert_eq!(t.lookup(p + 1), None);
        t.remove(p, 128, None);
        assert_eq!(t.lookup(p), None);
        assert_eq!(t.group_count(), 0);
    }

    fn check<K: LpmKey>(ops: Vec<(bool, K, u8, u32)>, probes: Vec<K>) -> Result<(), TestCaseError> {
        let mut t = Lpm::<K>::new();
        let mut r = Reference::<K>::default();
        for (insert, p, len, nh) in ops {
            let p = p.mask(len);
            if insert {
                t.insert(p, len, nh);
                r.routes.insert((p, len), nh);
            } else if r.routes.remove(&(p, len)).is_some() {
                t.remove(p, len, r.covering(p, len));
            }
        }
        for a in probes
            .iter()
            .copied()
            .chain(r.routes.keys().map(|(p, _)| *p))
        {
            prop_assert_eq!(t.lookup(a), r.lookup(a), "address {:?}", a);
        }
        Ok(())
    }

    /// Prefixes drawn near each other so they nest and overlap.
    fn v4_prefix() -> impl Strategy<Value = (u32, u8)> {
        (
            prop::sample::select(vec![0x0a000000u32, 0x0a010000, 0xc0a80000]),
            any::<u16>(),
            0u8..=32,
        )
            .prop_map(|(base, low, len)| (base | u32::from(low), len))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn ipv4_matches_reference(
            ops in prop::collection::vec((any::<bool>(), v4_prefix(), 0u32..1000), 1..80),
            probes in prop::collection::vec(v4_prefix(), 50),
        ) {
            let ops = ops.into_iter().map(|(i, (p, l), nh)| (i || l % 3 != 0, p, l, nh)).collect();
            check::<u32>(ops, probes.into_iter().map(|(p, _)| p).collect())?;
        }

        #[test]
        fn ipv6_matches_reference(
            ops in prop::collection::vec((any::<bool>(), any::<u64>(), 0u8..=128, 0u32..1000), 1..60),
            probes in prop::collection::vec(any::<u64>(), 50),
        ) {
            // Keep the high bits common so prefixes of all lengths overlap.
            let k = |low: u64| (0xfd00_0065u128 << 96) | (u128::from(low) << 20);
            let ops = ops.into_iter().map(|(i, p, l, nh)| (i || l % 3 != 0, k(p), l, nh)).collect();
            check::<u128>(ops, probes.into_iter().map(k).collect())?;
        }
    }
}
