//! One table of the tuple space: rows whose fields are at least as
//! specific as the table's [`Tuple`], hashed on the key bits the tuple
//! keeps, in one open-addressed array with linear probing.
//!
//! Each slot has a one-byte tag beside its row: 0 for empty, else seven
//! bits of the row's hash. A lookup masks the packet's key with the tuple,
//! hashes it, and scans the tags of the probe run from the home slot to the
//! next empty one; only rows whose tag matches are read and tested in full
//! (prefixes, port ranges, protocol), so rows that merely share the run
//! cost a byte compare and no per-bucket key needs storing. The tags of a
//! table are 1/32 (IPv6: 1/64) of its rows and stay in L1 cache; most
//! probes of a key that matches nothing in the table read no row at all.
//! The writer keeps the load at most ½ (short runs) and caps how many rows
//! may share one masked key (see `ruleset`).
//!
//! The slots are cut into pages of [`PAGE`] rows (and their tags) behind
//! `Arc`s: an insert or delete copies only the page(s) it writes (and the
//! page directory, once per published snapshot); every other page stays
//! shared with the snapshots the workers hold.

use std::mem::size_of;
use std::sync::Arc;

use super::family::Family;
use super::rule::{Action, Hit, PacketKey, Priority, RuleId};

/// "No priority": the best priority of a key that matched nothing yet.
pub(crate) const NO_MATCH: u32 = u32::MAX;
const PAGE_BITS: u32 = 7;
/// Rows per page: 4 KiB of IPv4 rows, 8 KiB of IPv6 rows.
pub(crate) const PAGE: usize = 1 << PAGE_BITS;
/// Smallest table, in slots (a power of two).
pub(crate) const MIN_CAPACITY: usize = 8;

/// How many leading bits of each field a table hashes on: prefix lengths
/// for the addresses, the common prefix of a range's ends for the ports,
/// 0 or 8 for the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Tuple {
    pub src: u8,
    pub dst: u8,
    pub sport: u8,
    pub dport: u8,
    pub proto: u8,
}

impl Tuple {
    /// True if a table of tuple `self` can hold a row of tuple `row`: the
    /// table hashes on no bit the row leaves open.
    pub fn fits(self, row: Tuple) -> bool {
        self.src <= row.src
            && self.dst <= row.dst
            && self.sport <= row.sport
            && self.dport <= row.dport
            && self.proto <= row.proto
    }
}

/// The netmask keeping the first `len` bits (≤ 16) of a port.
#[inline(always)]
fn port_mask(len: u8) -> u16 {
    (u32::MAX << (16 - u32::from(len))) as u16
}

/// One compiled match: a rule, or one element of a rule's cross product
/// of source and destination prefixes. 32 bytes for IPv4, 64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row<A> {
    /// Source prefix, host bits cleared.
    pub src: A,
    pub dst: A,
    /// Lowest source port (or ICMP type) and the width of the range.
    pub sport: u16,
    pub sport_span: u16,
    pub dport: u16,
    pub dport_span: u16,
    /// The rule's priority.
    pub prio: u32,
    pub rule: u32,
    pub src_len: u8,
    pub dst_len: u8,
    /// Protocol, and 0xff (exact) or 0 (any).
    pub proto: u8,
    pub proto_mask: u8,
    pub action: Action,
}

impl<A: Family> Row<A> {
    pub const VACANT: Row<A> = Row {
        src: A::ZERO,
        dst: A::ZERO,
        sport: 0,
        sport_span: 0,
        dport: 0,
        dport_span: 0,
        prio: NO_MATCH,
        rule: 0,
        src_len: 0,
        dst_len: 0,
        proto: 0,
        proto_mask: 0,
        action: Action::Deny,
    };

    /// Does the packet match every field?
    #[inline(always)]
    pub fn matches(&self, k: &PacketKey<A>) -> bool {
        (k.src.and(A::mask(self.src_len)) == self.src)
            & (k.dst.and(A::mask(self.dst_len)) == self.dst)
            & (k.sport.wrapping_sub(self.sport) <= self.sport_span)
            & (k.dport.wrapping_sub(self.dport) <= self.dport_span)
            & (k.proto & self.proto_mask == self.proto)
    }

    /// The most specific tuple this row fits.
    pub fn tuple(&self) -> Tuple {
        let lcp = |lo: u16, span: u16| (lo ^ (lo + span)).leading_zeros() as u8;
        Tuple {
            src: self.src_len,
            dst: self.dst_len,
            sport: lcp(self.sport, self.sport_span),
            dport: lcp(self.dport, self.dport_span),
            proto: if self.proto_mask == 0xff { 8 } else { 0 },
        }
    }

    /// Same rule and same prefixes: the identity of a row in its table.
    fn same_row(&self, other: &Row<A>) -> bool {
        self.prio == other.prio
            && self.src == other.src
            && self.src_len == other.src_len
            && self.dst == other.dst
            && self.dst_len == other.dst_len
    }

    pub fn hit(&self) -> Hit {
        Hit {
            rule: RuleId(self.rule),
            priority: Priority(self.prio),
            action: self.action,
        }
    }
}

/// Tags a probe reads at once, as one `u64`.
const GROUP: usize = 8;
const LSB: u64 = 0x0101_0101_0101_0101;
const MSB: u64 = 0x8080_8080_8080_8080;

/// One page of slots: tags (0 = empty, else ≥ 0x80) and rows, copied on
/// write separately. The tags are followed by a copy of the first
/// [`GROUP`] tags of the next page (cyclically), so a probe reads any
/// [`GROUP`] consecutive tags from one page.
#[derive(Debug, Clone)]
struct Page<A> {
    tags: Arc<[u8]>,
    rows: Arc<[Row<A>]>,
}

/// A table of the tuple space.
#[derive(Debug, Clone)]
pub(crate) struct Table<A> {
    /// Best (lowest) priority of any row: a key that already matched a
    /// rule at or before it can skip this table and every later one.
    pub min_prio: u32,
    src_mask: A,
    dst_mask: A,
    sport_mask: u16,
    dport_mask: u16,
    proto_mask: u8,
    /// `64 - log2(capacity)`: the home slot is the top bits of the hash,
    /// the tag the seven bits below them.
    shift: u32,
    /// `capacity - 1`.
    slot_mask: usize,
    pages: Arc<[Page<A>]>,
    pub id: u32,
    pub tuple: Tuple,
    /// Rows held.
    pub len: usize,
}

/// Multiplicative hash of a masked key; the top bits depend on every input
/// bit. One multiply: the port and protocol bits are folded into the low
/// address bits, which masked keys of shorter prefixes leave zero.
#[inline(always)]
fn hash(src: u64, dst: u64, sport: u16, dport: u16, proto: u8) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let l4 = (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(proto);
    (src.rotate_left(32) ^ dst ^ l4.rotate_left(5)).wrapping_mul(K)
}

impl<A: Family> Table<A> {
    /// An empty table of `capacity` slots (a power of two ≥ 2).
    pub fn new(id: u32, tuple: Tuple, capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 2);
        let page_len = capacity.min(PAGE);
        let pages = (0..capacity / page_len)
            .map(|_| Page {
                tags: Arc::from(vec![0; page_len + GROUP]),
                rows: Arc::from(vec![Row::VACANT; page_len]),
            })
            .collect();
        Table {
            min_prio: NO_MATCH,
            src_mask: A::mask(tuple.src),
            dst_mask: A::mask(tuple.dst),
            sport_mask: port_mask(tuple.sport),
            dport_mask: port_mask(tuple.dport),
            proto_mask: if tuple.proto == 8 { 0xff } else { 0 },
            shift: 64 - capacity.trailing_zeros(),
            slot_mask: capacity - 1,
            pages,
            id,
            tuple,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slot_mask + 1
    }

    #[inline(always)]
    fn tag(&self, i: usize) -> u8 {
        self.pages[i >> PAGE_BITS].tags[i & (PAGE - 1)]
    }

    #[inline(always)]
    fn row(&self, i: usize) -> &Row<A> {
        &self.pages[i >> PAGE_BITS].rows[i & (PAGE - 1)]
    }

    /// Writes slot `i`, copying its page (and the directory) if a snapshot
    /// still shares them.
    fn set(&mut self, i: usize, tag: u8, row: Row<A>) {
        let pages = Arc::make_mut(&mut self.pages);
        let (p, off) = (i >> PAGE_BITS, i & (PAGE - 1));
        Arc::make_mut(&mut pages[p].tags)[off] = tag;
        Arc::make_mut(&mut pages[p].rows)[off] = row;
        if off < GROUP {
            // The previous page (cyclically) mirrors this tag.
            let prev = &mut pages[p.checked_sub(1).unwrap_or(pages.len() - 1)];
            let page_len = prev.rows.len();
            Arc::make_mut(&mut prev.tags)[page_len + off] = tag;
        }
    }

    /// Home slot and tag of a masked key.
    #[inline(always)]
    fn locate(&self, src: A, dst: A, sport: u16, dport: u16, proto: u8) -> (usize, u8) {
        let h = hash(src.fold(), dst.fold(), sport, dport, proto);
        (
            (h >> self.shift) as usize,
            (h >> (self.shift - 7)) as u8 | 0x80,
        )
    }

    #[inline(always)]
    fn key_locate(&self, k: &PacketKey<A>) -> (usize, u8) {
        self.locate(
            k.src.and(self.src_mask),
            k.dst.and(self.dst_mask),
            k.sport & self.sport_mask,
            k.dport & self.dport_mask,
            k.proto & self.proto_mask,
        )
    }

    /// The key a row hashes on in this table.
    pub fn masked(&self, r: &Row<A>) -> (A, A, u16, u16, u8) {
        (
            r.src.and(self.src_mask),
            r.dst.and(self.dst_mask),
            r.sport & self.sport_mask,
            r.dport & self.dport_mask,
            r.proto & self.proto_mask,
        )
    }

    fn row_locate(&self, r: &Row<A>) -> (usize, u8) {
        let (src, dst, sport, dport, proto) = self.masked(r);
        self.locate(src, dst, sport, dport, proto)
    }

    /// The best row matching `k` with a priority in `from..best`
    /// (`from` ≤ `best`).
    ///
    /// Tests [`GROUP`] tags per step without a branch per slot: the empty
    /// slots are the tags without their top bit, the candidates the bytes
    /// equal to the key's tag before the first empty slot. A key that
    /// matches nothing in the table usually finds no candidate and an
    /// empty slot in the first step.
    #[inline(always)]
    pub fn probe(&self, k: &PacketKey<A>, from: u32, best: u32) -> Option<&Row<A>> {
        let (mut i, tag) = self.key_locate(k);
        let splat = LSB * u64::from(tag);
        let mut window = best.wrapping_sub(from);
        let mut hit = None;
        loop {
            let page = &self.pages[i >> PAGE_BITS];
            let off = i & (PAGE - 1);
            let tags: [u8; GROUP] = page.tags[off..off + GROUP]
                .try_into()
                .expect("pages hold GROUP tags past any slot");
            let w = u64::from_le_bytes(tags);
            let empty = !w & MSB;
            // Zero bytes of `x` are equal tags; the borrow trick may flag a
            // byte above a true zero too, which costs a row test, no more.
            let x = w ^ splat;
            let equal = x.wrapping_sub(LSB) & !x & MSB;
            let mut candidates = equal & empty.wrapping_sub(1) & !empty;
            while candidates != 0 {
                let slot = (i + (candidates.trailing_zeros() / 8) as usize) & self.slot_mask;
                let r = self.row(slot);
                // One compare tests from <= prio < best.
                if (r.prio.wrapping_sub(from) < window) & r.matches(k) {
                    window = r.prio - from;
                    hit = Some(r);
                }
                candidates &= candidates - 1;
            }
            if empty != 0 {
                return hit;
            }
            i = (i + GROUP) & self.slot_mask;
        }
    }

    /// Rows a probe of `k` tests (a tuning aid).
    #[cfg(test)]
    pub fn probe_cost(&self, k: &PacketKey<A>) -> usize {
        let (mut i, tag) = self.key_locate(k);
        let mut n = 0;
        while self.tag(i) != 0 {
            n += usize::from(self.tag(i) == tag);
            i = (i + 1) & self.slot_mask;
        }
        n
    }

    /// How many rows of the table hash on the same masked key as `r`.
    pub fn group_len(&self, r: &Row<A>) -> usize {
        let want = self.masked(r);
        let (mut i, tag) = self.row_locate(r);
        let mut n = 0;
        while self.tag(i) != 0 {
            n += usize::from(self.tag(i) == tag && self.masked(self.row(i)) == want);
            i = (i + 1) & self.slot_mask;
        }
        n
    }

    /// True if one more row would push the load past ½.
    pub fn is_full(&self) -> bool {
        (self.len + 1) * 2 > self.capacity()
    }

    /// True if the load fell under ⅛ and the table can halve.
    pub fn is_sparse(&self) -> bool {
        self.capacity() > MIN_CAPACITY && self.len * 8 < self.capacity()
    }

    /// Adds a row; the caller has made room ([`Self::is_full`]).
    pub fn insert(&mut self, row: Row<A>) {
        debug_assert!(row.prio != NO_MATCH && self.len < self.capacity() - 1);
        let (mut i, tag) = self.row_locate(&row);
        while self.tag(i) != 0 {
            i = (i + 1) & self.slot_mask;
        }
        self.set(i, tag, row);
        self.len += 1;
    }

    /// Removes the row with `row`'s identity, closing the gap by shifting
    /// later rows of the run back (no tombstones). False if absent.
    pub fn remove(&mut self, row: &Row<A>) -> bool {
        let mask = self.slot_mask;
        let (mut hole, _) = self.row_locate(row);
        loop {
            if self.tag(hole) == 0 {
                return false;
            }
            if self.row(hole).same_row(row) {
                break;
            }
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            if self.tag(j) == 0 {
                break;
            }
            let r = *self.row(j);
            // `r` may move back into the hole unless its home lies
            // (cyclically) after the hole.
            let (home, tag) = self.row_locate(&r);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.set(hole, tag, r);
                hole = j;
            }
        }
        self.set(hole, 0, Row::VACANT);
        self.len -= 1;
        true
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row<A>> {
        self.pages
            .iter()
            .flat_map(|p| p.tags.iter().zip(p.rows.iter()))
            .filter(|(t, _)| **t != 0)
            .map(|(_, r)| r)
    }

    /// The same rows in a table of `capacity` slots (new, unshared pages).
    pub fn resized(&self, capacity: usize) -> Self {
        let mut t = Table::new(self.id, self.tuple, capacity);
        for r in self.rows() {
            t.insert(*r);
        }
        t.min_prio = self.min_prio;
        t
    }

    /// Bytes of the slot pages and the directory (shared pages counted in
    /// full).
    pub fn memory_bytes(&self) -> usize {
        // Each Arc allocation carries two reference counts.
        let arc = 2 * size_of::<usize>();
        arc + self.pages.len() * (size_of::<Page<A>>() + 2 * arc)
            + self.capacity() * (1 + size_of::<Row<A>>())
            + self.pages.len() * GROUP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(src: u32, src_len: u8, prio: u32) -> Row<u32> {
        Row {
            src: src & u32::mask(src_len),
            src_len,
            sport_span: u16::MAX,
            dport_span: u16::MAX,
            prio,
            rule: prio,
            ..Row::VACANT
        }
    }

    fn key(src: u32) -> PacketKey<u32> {
        PacketKey::new(src, 0, 6, 1, 2)
    }

    const T24: Tuple = Tuple {
        src: 24,
        dst: 0,
        sport: 0,
        dport: 0,
        proto: 0,
    };

    #[test]
    fn sizes() {
        assert_eq!(size_of::<Row<u32>>(), 32);
        assert_eq!(size_of::<Row<u128>>(), 64);
        assert_eq!(size_of::<Option<Hit>>(), 12);
    }

    #[test]
    fn tuple_of_ranges() {
        let r = Row::<u32> {
            sport: 1024,
            sport_span: 65535 - 1024,
            dport: 80,
            dport_span: 0,
            proto: 6,
            proto_mask: 0xff,
            src_len: 8,
            dst_len: 32,
            ..Row::VACANT
        };
        let t = r.tuple();
        assert_eq!((t.src, t.dst, t.sport, t.dport, t.proto), (8, 32, 0, 16, 8));
        let r = Row::<u32> {
            sport: 0,
            sport_span: 1023,
            ..r
        };
        assert_eq!(r.tuple().sport, 6);
    }

    #[test]
    fn probe_finds_best_in_window() {
        let mut t = Table::new(0, T24, 8);
        t.insert(row(0x0a00_0100, 24, 7));
        t.insert(row(0x0a00_0105, 32, 3));
        t.insert(row(0x0a00_0200, 24, 5));
        let hit = |t: &Table<u32>, a, from, best| t.probe(&key(a), from, best).map(|r| r.prio);
        assert_eq!(hit(&t, 0x0a00_0105, 0, NO_MATCH), Some(3));
        assert_eq!(hit(&t, 0x0a00_0106, 0, NO_MATCH), Some(7));
        assert_eq!(hit(&t, 0x0a00_0105, 4, NO_MATCH), Some(7));
        assert_eq!(hit(&t, 0x0a00_0105, 0, 3), None);
        assert_eq!(hit(&t, 0x0a00_0299, 0, NO_MATCH), Some(5));
        assert_eq!(hit(&t, 0x0b00_0105, 0, NO_MATCH), None);
    }

    #[test]
    fn remove_keeps_runs_reachable() {
        // A tiny table forces long runs that wrap around.
        let mut t = Table::new(0, T24, 16);
        let rows: Vec<_> = (0..7).map(|i| row(0x0a00_0000 + (i << 8), 24, i)).collect();
        for r in &rows {
            t.insert(*r);
        }
        for (n, r) in rows.iter().enumerate() {
            assert!(t.remove(r));
            assert!(!t.remove(r));
            for (m, other) in rows.iter().enumerate() {
                let found = t.probe(&key(other.src | 9), 0, NO_MATCH).map(|x| x.prio);
                assert_eq!(
                    found,
                    (m > n).then_some(other.prio),
                    "row {m} after removing {n}"
                );
            }
        }
        assert_eq!(t.len, 0);
        assert_eq!(t.rows().count(), 0);
    }

    #[test]
    fn runs_cross_pages() {
        // Two pages at load ½: some runs cross the page boundary or wrap
        // around, which the mirrored tags must cover.
        let mut t = Table::new(0, T24, 2 * PAGE);
        let rows: Vec<_> = (0..PAGE as u32).map(|i| row(i << 8, 24, i)).collect();
        for r in &rows {
            t.insert(*r);
        }
        let found =
            |t: &Table<u32>, r: &Row<u32>| t.probe(&key(r.src | 1), 0, NO_MATCH).map(|x| x.prio);
        for r in &rows {
            assert_eq!(found(&t, r), Some(r.prio));
        }
        for r in rows.iter().step_by(2) {
            assert!(t.remove(r));
        }
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(found(&t, r), (i % 2 == 1).then_some(r.prio));
        }
        // The mirrors agree with the tags they copy.
        for (p, page) in t.pages.iter().enumerate() {
            let next = &t.pages[(p + 1) % t.pages.len()];
            assert_eq!(page.tags[PAGE..], next.tags[..GROUP]);
        }
    }

    #[test]
    fn writes_copy_only_shared_pages() {
        let mut t = Table::new(0, T24, 4 * PAGE);
        let snapshot = t.clone();
        t.insert(row(0x0a00_0100, 24, 1));
        let copied = t
            .pages
            .iter()
            .zip(snapshot.pages.iter())
            .filter(|(a, b)| !Arc::ptr_eq(&a.rows, &b.rows))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(snapshot.rows().count(), 0);
        assert_eq!(t.rows().count(), 1);
    }
}
