//! A compiled decision tree over one family's rows: the fast lookup
//! structure of a classifier whose rules have been still for a moment.
//!
//! The tuple space ([`super::table`]) takes an edit in microseconds but a
//! lookup visits one table per tuple. The tree is the other trade: it is
//! built from all rows at once (milliseconds to a few hundred for 10k
//! rules, off the packet path) and a lookup walks a few nodes and tests a
//! handful of rows. The rule set keeps both: the tree answers for the rows
//! it was built from, the tuple space for everything changed since (see
//! `ruleset`).
//!
//! # Shape
//!
//! Every row is a box in the key space, one interval per *field*: each
//! 32-bit word of the source and destination address (a prefix is an
//! exact value in its leading words, a range in at most one word, and
//! anything in the rest), source port, destination port, protocol. A
//! node splits its region of the key space on one field into up to
//! [`WAYS`] intervals; a key picks its child by counting the node's
//! boundaries it lies above (a branch-free binary search of three
//! compares over one cache line of boundaries and children). A leaf lists the rows that meet its region, in priority
//! order, and the lookup tests them in full until the first that matches:
//! the tree only narrows the candidates, so a wrong cut costs time, never
//! a verdict.
//!
//! The builder cuts HyperSplit-style (Qi et al., "HyperSplit: Exploiting
//! Memory-Efficient Multi-Dimensional Packet Classification", INFOCOM
//! 2009), generalised to several cuts per node: for each field it weighs
//! the elementary intervals between row endpoints by how many rows cover
//! them, places the boundaries at the weight quantiles, and keeps the
//! field whose children are smallest (largest child plus average child,
//! which charges rows copied into several children). A region ends as a
//! leaf when at most [`LEAF_ROWS`] rows meet it, or when its best row
//! covers all of it (the rows after it can never be the first match).
//! Adjacent children with the same rows are one child.
//!
//! A tree that would grow past a memory budget is not built; [`Forest`]
//! then splits the rows, and past that the caller keeps the tuple space
//! alone.
//!
//! Variants tried with `perf/benches/classify.rs` and not kept: 16-way
//! nodes (no faster, twice the memory), leaves of indices into one shared
//! copy of each row (one more dependent load: slower), HiCuts-style cuts
//! on k bits of a field (a shift and a mask per node instead of compares,
//! but deeper trees on prefix-heavy sets and every port range split into
//! aligned blocks: faster on fw1, slower on acl1), and a descent without a
//! branch on "leaf yet?" (leaves step to themselves and are scanned
//! afterwards: slower).

use std::marker::PhantomData;
use std::mem::size_of;

use super::family::Family;
use super::rule::PacketKey;
use super::table::{Row, NO_MATCH};

/// Children per node.
pub(crate) const WAYS: usize = 8;
/// A region with at most this many rows is a leaf.
const LEAF_ROWS: usize = 6;
/// Deeper regions become leaves whatever their size (a guard against
/// rows no cut separates, such as many rules on the same box).
const MAX_DEPTH: u32 = 40;
/// Fields of the widest family: four words per IPv6 address, two ports,
/// the protocol.
pub(crate) const MAX_FIELDS: usize = 11;
/// A child reference with this bit is a leaf index; without it, a node
/// index shifted left by [`FIELD_BITS`] with the field that node cuts on.
const LEAF: u32 = 1 << 31;
const FIELD_BITS: u32 = 4;
const FIELD_MASK: u32 = (1 << FIELD_BITS) - 1;

/// Fields a tree of family `A` cuts on.
const fn fields<A: Family>() -> usize {
    2 * A::WORDS + 3
}

/// A key's fields, in field order, each as a [`biased`] word (16 slots,
/// so that any 4-bit field index is in bounds).
pub(crate) type Words = [i32; 16];

/// `x` moved into `i32` with its order kept (`0` → `i32::MIN`): nodes
/// compare signed words, which SSE2 does in one instruction.
#[inline(always)]
const fn biased(x: u32) -> i32 {
    (x ^ 0x8000_0000) as i32
}

/// The fields of `k`.
#[inline(always)]
pub(crate) fn words<A: Family>(k: &PacketKey<A>) -> Words {
    let mut w = [0; 16];
    let n = A::WORDS;
    for i in 0..n {
        w[i] = biased(k.src.word(i));
        w[n + i] = biased(k.dst.word(i));
    }
    w[2 * n] = biased(k.sport.into());
    w[2 * n + 1] = biased(k.dport.into());
    w[2 * n + 2] = biased(k.proto.into());
    w
}

/// Inclusive intervals, one per field.
type Region = [(u32, u32); MAX_FIELDS];

/// The whole key space of family `A`.
fn universe<A: Family>() -> Region {
    let mut r = [(0, u32::MAX); MAX_FIELDS];
    let n = A::WORDS;
    r[2 * n] = (0, u16::MAX.into());
    r[2 * n + 1] = (0, u16::MAX.into());
    r[2 * n + 2] = (0, u8::MAX.into());
    r
}

/// The interval word `i` of a `len`-bit prefix of `addr` allows.
fn prefix_word<A: Family>(addr: A, len: u8, i: usize) -> (u32, u32) {
    let first = 32 * i as u32;
    let len = u32::from(len);
    let w = addr.word(i);
    if len >= first + 32 {
        (w, w)
    } else if len <= first {
        (0, u32::MAX)
    } else {
        let host = u32::MAX >> (len - first);
        (w & !host, w | host)
    }
}

/// The box of a row.
fn row_region<A: Family>(r: &Row<A>) -> Region {
    let mut b = [(0, u32::MAX); MAX_FIELDS];
    let n = A::WORDS;
    for i in 0..n {
        b[i] = prefix_word(r.src, r.src_len, i);
        b[n + i] = prefix_word(r.dst, r.dst_len, i);
    }
    let ports = |lo: u16, span: u16| (u32::from(lo), u32::from(lo) + u32::from(span));
    b[2 * n] = ports(r.sport, r.sport_span);
    b[2 * n + 1] = ports(r.dport, r.dport_span);
    b[2 * n + 2] = if r.proto_mask == 0xff {
        (r.proto.into(), r.proto.into())
    } else {
        (0, u8::MAX.into())
    };
    b
}

/// One inner node: a key whose cut field is above `bounds[0..c]` and not
/// above `bounds[c]` goes to `children[c]` (bounds and fields [`biased`]).
/// Unused bounds are `i32::MAX` (no key is above it), so the last bound
/// is always unused.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Node {
    bounds: [i32; WAYS],
    children: [u32; WAYS],
}

impl Node {
    const EMPTY: Node = Node {
        bounds: [i32::MAX; WAYS],
        children: [0; WAYS],
    };

    /// The child of a key whose cut field is `x`.
    #[inline(always)]
    fn child(&self, x: i32) -> u32 {
        // Three compares of a branch-free binary search (the bounds are
        // sorted): the count of bounds below `x`.
        let b = &self.bounds;
        let mut c = usize::from(x > b[3]) * 4;
        c += usize::from(x > b[(c + 1) & 7]) * 2;
        c += usize::from(x > b[c & 7]);
        self.children[c & 7]
    }
}

/// A leaf's rows: `rows[start..start + len]`.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    start: u32,
    len: u32,
}

/// Why a tree was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooBig;

/// The compiled tree of one family (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct Tree<A> {
    nodes: Vec<Node>,
    leaves: Vec<Leaf>,
    /// Leaf rows, each leaf's in priority order. (A copy per leaf rather
    /// than an index into one copy: one dependent load fewer per lookup,
    /// which measured faster on ClassBench despite the larger tree.)
    rows: Vec<Row<A>>,
    /// Beside each leaf row, the index of the row it copies in the slice
    /// the tree was built from.
    origin: Vec<u32>,
    root: u32,
    /// Best (lowest) priority of any row: a key that already matched at or
    /// before it skips the tree.
    min_prio: u32,
    _family: PhantomData<A>,
}

/// What a lookup found: the row, and its index in the rows the tree was
/// built from.
pub(crate) struct Found<'t, A> {
    pub row: &'t Row<A>,
    pub origin: u32,
}

impl<A: Family> Tree<A> {
    /// Builds the tree of `rows` (any order). Fails if it would take more
    /// than about `budget` bytes.
    pub fn build(rows: &[Row<A>], budget: usize) -> Result<Self, TooBig> {
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        order.sort_by_key(|&i| rows[i as usize].prio);
        let mut b = Builder::<A> {
            _family: PhantomData,
            regions: rows.iter().map(row_region).collect(),
            nodes: Vec::new(),
            leaves: Vec::new(),
            leaf_rows: Vec::new(),
            budget,
            scratch: Vec::new(),
        };
        let root = b.build(&universe::<A>(), order, 0)?;
        Ok(Tree {
            nodes: b.nodes,
            leaves: b.leaves,
            rows: b.leaf_rows.iter().map(|&i| rows[i as usize]).collect(),
            origin: b.leaf_rows,
            root,
            min_prio: rows.iter().map(|r| r.prio).min().unwrap_or(NO_MATCH),
            _family: PhantomData,
        })
    }

    /// The best row matching `k` with a priority below `best` (the
    /// priority of a match found elsewhere, or `NO_MATCH`).
    #[inline]
    pub fn lookup(&self, k: &PacketKey<A>, best: u32) -> Option<Found<'_, A>> {
        let w = words(k);
        let mut r = self.root;
        while r & LEAF == 0 {
            r = self.nodes[(r >> FIELD_BITS) as usize].child(w[(r & FIELD_MASK) as usize]);
        }
        self.scan(r, k, best).map(|i| self.row(i))
    }

    /// [`Self::lookup`] for a batch: `found[i]` is the index into the
    /// tree's leaf rows of the best row for `keys[i]` with a priority below
    /// `best[i]`, which it lowers; `u32::MAX` if none (then `best[i]` is
    /// unchanged). The keys walk the
    /// tree level by level together, so their node loads overlap.
    /// `words_of[i]` are the [`words`] of `keys[i]`.
    #[inline]
    pub fn lookup_batch<const N: usize>(
        &self,
        keys: &[PacketKey<A>],
        words_of: &[Words; N],
        best: &mut [u32],
        found: &mut [u32; N],
    ) {
        debug_assert!(keys.len() <= N && best.len() == keys.len() && N <= 256);
        found[..keys.len()].fill(u32::MAX);
        let mut cur = [self.root; N];
        let mut active = [0u8; N];
        // Keys that already matched at or before the tree's best row skip it.
        let mut live = 0;
        for (i, &b) in best.iter().enumerate() {
            active[live] = i as u8;
            live += usize::from(b > self.min_prio);
        }
        while live > 0 {
            let mut kept = 0;
            for j in 0..live {
                let i = usize::from(active[j]);
                let r = cur[i];
                if r & LEAF != 0 {
                    if let Some(f) = self.scan(r, &keys[i], best[i]) {
                        best[i] = self.rows[f as usize].prio;
                        found[i] = f;
                    }
                    continue;
                }
                let node = &self.nodes[(r >> FIELD_BITS) as usize];
                cur[i] = node.child(words_of[i][(r & FIELD_MASK) as usize]);
                active[kept] = i as u8;
                kept += 1;
            }
            live = kept;
        }
    }

    /// Leaf row `index` (from [`Self::lookup_batch`]) and its origin.
    #[inline]
    pub fn row(&self, index: u32) -> Found<'_, A> {
        Found {
            row: &self.rows[index as usize],
            origin: self.origin[index as usize],
        }
    }

    /// The index among the leaf rows of the first row of leaf `r` that
    /// matches `k`, if its priority is below `best`.
    #[inline(always)]
    fn scan(&self, r: u32, k: &PacketKey<A>, best: u32) -> Option<u32> {
        let leaf = self.leaves[(r & !LEAF) as usize];
        let start = leaf.start as usize;
        let rows = &self.rows[start..start + leaf.len as usize];
        for (n, row) in rows.iter().enumerate() {
            if row.prio >= best {
                return None;
            }
            if row.matches(k) {
                return Some((start + n) as u32);
            }
        }
        None
    }

    /// Bytes of the lookup structure.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.nodes.capacity() * size_of::<Node>()
            + self.leaves.capacity() * size_of::<Leaf>()
            + self.rows.capacity() * size_of::<Row<A>>()
            + self.origin.capacity() * size_of::<u32>()
    }

    /// Nodes, leaves and leaf rows (for reports and tuning).
    #[cfg(test)]
    pub fn shape(&self) -> TreeShape {
        TreeShape {
            nodes: self.nodes.len(),
            leaves: self.leaves.len(),
            leaf_rows: self.rows.len(),
            depth: self.depth(self.root),
        }
    }

    /// Nodes walked and leaf rows tested by a lookup of `k` (a tuning aid).
    #[cfg(test)]
    pub fn walk_cost(&self, w: &Words, k: &PacketKey<A>, best: u32) -> (usize, usize) {
        let mut r = self.root;
        let mut nodes = 0;
        while r & LEAF == 0 {
            nodes += 1;
            r = self.nodes[(r >> FIELD_BITS) as usize].child(w[(r & FIELD_MASK) as usize]);
        }
        let leaf = self.leaves[(r & !LEAF) as usize];
        let rows = match self.scan(r, k, best) {
            Some(i) => i - leaf.start + 1,
            None => leaf.len,
        };
        (nodes, rows as usize)
    }

    #[cfg(test)]
    fn depth(&self, r: u32) -> usize {
        if r & LEAF != 0 {
            return 0;
        }
        let node = &self.nodes[(r >> FIELD_BITS) as usize];
        1 + node
            .children
            .iter()
            .map(|&c| self.depth(c))
            .max()
            .unwrap_or(0)
    }
}

/// The trees of one family: one over all rows when that fits the budget,
/// else the rows split in two by whether a field is wide (a prefix shorter
/// than a quarter of the address, or a port range wider than half the
/// ports), source address first, then destination, then the ports, and
/// each part split again only if it does not fit. A row wide in a field is
/// copied into every child of a cut on that field; kept apart from the
/// rows narrow in it, it is not (EffiCuts' separable trees, Vamanan et
/// al., SIGCOMM 2010). Sorted by their best priority.
#[derive(Debug, Clone, Default)]
pub(crate) struct Forest<A> {
    trees: Vec<Tree<A>>,
}

/// Is a row wide in split criterion `c` (see [`Forest`])?
fn wide<A: Family>(r: &Row<A>, c: usize) -> bool {
    match c {
        0 => r.src_len < A::BITS / 4,
        1 => r.dst_len < A::BITS / 4,
        2 => r.sport_span > u16::MAX / 2,
        _ => r.dport_span > u16::MAX / 2,
    }
}
const CRITERIA: usize = 4;

impl<A: Family> Forest<A> {
    /// The forest of `rows` in about `budget` bytes, or [`TooBig`].
    pub fn build(rows: &[Row<A>], budget: usize) -> Result<Self, TooBig> {
        let mut trees = Vec::new();
        let all: Vec<u32> = (0..rows.len() as u32).collect();
        Self::part(rows, all, budget, 0, &mut trees)?;
        trees.sort_by_key(|t| t.min_prio);
        Ok(Forest { trees })
    }

    /// Builds the tree(s) of `part` (indices into `rows`), splitting by
    /// criteria `criterion..`.
    fn part(
        rows: &[Row<A>],
        part: Vec<u32>,
        budget: usize,
        criterion: usize,
        trees: &mut Vec<Tree<A>>,
    ) -> Result<(), TooBig> {
        let subset: Vec<Row<A>> = part.iter().map(|&i| rows[i as usize]).collect();
        match Tree::build(&subset, budget) {
            Ok(mut t) => {
                for o in &mut t.origin {
                    *o = part[*o as usize];
                }
                trees.push(t);
                return Ok(());
            }
            Err(TooBig) if criterion == CRITERIA => return Err(TooBig),
            Err(TooBig) => {}
        }
        let (w, n): (Vec<u32>, Vec<u32>) = part
            .iter()
            .partition(|&&i| wide(&rows[i as usize], criterion));
        if w.is_empty() || n.is_empty() {
            return Self::part(rows, part, budget, criterion + 1, trees);
        }
        for half in [w, n] {
            let share = (budget * half.len() / part.len()).max(budget / 4);
            Self::part(rows, half, share, criterion + 1, trees)?;
        }
        Ok(())
    }

    pub fn trees(&self) -> &[Tree<A>] {
        &self.trees
    }

    /// The best row matching `k` below priority `best`.
    pub fn lookup(&self, k: &PacketKey<A>, mut best: u32) -> Option<Found<'_, A>> {
        let mut hit = None;
        for t in &self.trees {
            if t.min_prio >= best {
                break;
            }
            if let Some(f) = t.lookup(k, best) {
                best = f.row.prio;
                hit = Some(f);
            }
        }
        hit
    }

    /// [`Tree::lookup_batch`] over every tree: `found[i]` is
    /// `(tree, leaf row)` of the best row below `best[i]`, or `None`.
    #[inline]
    pub fn lookup_batch<const N: usize>(
        &self,
        keys: &[PacketKey<A>],
        best: &mut [u32],
        found: &mut [Option<(u16, u32)>; N],
    ) {
        found.fill(None);
        let mut words_of = [[0; 16]; N];
        for (w, k) in words_of.iter_mut().zip(keys) {
            *w = words(k);
        }
        let mut one = [u32::MAX; N];
        for (n, t) in self.trees.iter().enumerate() {
            t.lookup_batch(keys, &words_of, best, &mut one);
            for (f, &o) in found.iter_mut().zip(&one[..keys.len()]) {
                if o != u32::MAX {
                    *f = Some((n as u16, o));
                }
            }
        }
    }

    /// A row [`Self::lookup_batch`] found.
    pub fn row(&self, (tree, index): (u16, u32)) -> Found<'_, A> {
        self.trees[usize::from(tree)].row(index)
    }

    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.trees.iter().map(Tree::memory_bytes).sum::<usize>()
    }
}

/// The size of a tree.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeShape {
    pub nodes: usize,
    pub leaves: usize,
    /// Rows over all leaves (a row meeting several leaves counts in each).
    pub leaf_rows: usize,
    /// Longest path from the root to a leaf, in nodes.
    pub depth: usize,
}

struct Builder<A> {
    _family: PhantomData<A>,
    regions: Vec<Region>,
    nodes: Vec<Node>,
    leaves: Vec<Leaf>,
    /// Leaf rows as indices into `rows`.
    leaf_rows: Vec<u32>,
    budget: usize,
    scratch: Vec<u32>,
}

/// A cut: the field and the upper end of every child but the last.
struct Cut {
    field: usize,
    bounds: Vec<u32>,
    score: u64,
}

impl<A: Family> Builder<A> {
    fn bytes(&self) -> usize {
        self.nodes.len() * size_of::<Node>()
            + self.leaves.len() * size_of::<Leaf>()
            + self.leaf_rows.len() * (size_of::<Row<A>>() + size_of::<u32>())
    }

    /// The subtree of `region`, whose rows (meeting it) are `rows`, in
    /// priority order.
    fn build(&mut self, region: &Region, mut rows: Vec<u32>, depth: u32) -> Result<u32, TooBig> {
        if self.bytes() > self.budget {
            return Err(TooBig);
        }
        if let Some(first) = rows
            .iter()
            .position(|&r| covers(&self.regions[r as usize], region, fields::<A>()))
        {
            rows.truncate(first + 1);
        }
        if rows.len() <= LEAF_ROWS || depth >= MAX_DEPTH {
            return Ok(self.leaf(rows));
        }
        let Some(cut) = self.best_cut(region, &rows) else {
            return Ok(self.leaf(rows));
        };
        // Each child's region and rows; neighbours with the same rows merge.
        let mut children: Vec<(Region, Vec<u32>)> = Vec::with_capacity(WAYS);
        let f = cut.field;
        let mut lo = region[f].0;
        for &hi in cut.bounds.iter().chain(std::iter::once(&region[f].1)) {
            let mut sub = *region;
            sub[f] = (lo, hi);
            let meet: Vec<u32> = rows
                .iter()
                .copied()
                .filter(|&r| {
                    let (a, b) = self.regions[r as usize][f];
                    a <= hi && b >= lo
                })
                .collect();
            match children.last_mut() {
                Some((prev, prev_rows)) if *prev_rows == meet => prev[f].1 = hi,
                _ => children.push((sub, meet)),
            }
            lo = hi.wrapping_add(1);
        }
        if children.len() == 1 {
            return Ok(self.leaf(rows));
        }
        drop(rows);
        let index = self.nodes.len();
        if index >= (1 << (31 - FIELD_BITS)) {
            return Err(TooBig);
        }
        self.nodes.push(Node::EMPTY);
        let mut node = Node::EMPTY;
        let count = children.len();
        for (c, (sub, meet)) in children.into_iter().enumerate() {
            if c + 1 < count {
                node.bounds[c] = biased(sub[f].1);
            }
            node.children[c] = self.build(&sub, meet, depth + 1)?;
        }
        for c in count..WAYS {
            node.children[c] = node.children[count - 1];
        }
        self.nodes[index] = node;
        Ok(((index as u32) << FIELD_BITS) | f as u32)
    }

    fn leaf(&mut self, rows: Vec<u32>) -> u32 {
        let index = self.leaves.len() as u32;
        self.leaves.push(Leaf {
            start: self.leaf_rows.len() as u32,
            len: rows.len() as u32,
        });
        self.leaf_rows.extend(rows);
        LEAF | index
    }

    /// The best cut of `region` over `rows`, if any field separates them.
    fn best_cut(&mut self, region: &Region, rows: &[u32]) -> Option<Cut> {
        let mut best: Option<Cut> = None;
        for f in 0..fields::<A>() {
            if let Some(cut) = self.cut_on(region, rows, f) {
                if best.as_ref().is_none_or(|b| cut.score < b.score) {
                    best = Some(cut);
                }
            }
        }
        best
    }

    /// Cuts `region` on field `f` at the weight quantiles of the
    /// elementary intervals of the rows' endpoints.
    fn cut_on(&mut self, region: &Region, rows: &[u32], f: usize) -> Option<Cut> {
        let (lo, hi) = region[f];
        // Upper ends of the elementary intervals, but the last (`hi`).
        let ends = &mut self.scratch;
        ends.clear();
        for &r in rows {
            let (a, b) = self.regions[r as usize][f];
            if a > lo {
                ends.push(a - 1);
            }
            if b < hi {
                ends.push(b);
            }
        }
        if ends.is_empty() {
            return None;
        }
        ends.sort_unstable();
        ends.dedup();
        let ends = std::mem::take(&mut self.scratch);
        // Rows covering each elementary interval (a difference array).
        let segment = |x: u32| ends.partition_point(|&e| e < x);
        let mut weight = vec![0i64; ends.len() + 2];
        for &r in rows {
            let (a, b) = self.regions[r as usize][f];
            weight[segment(a.max(lo))] += 1;
            weight[segment(b.min(hi)) + 1] -= 1;
        }
        let mut acc = 0i64;
        for w in weight.iter_mut() {
            acc += *w;
            *w = acc;
        }
        let total: i64 = weight[..=ends.len()].iter().sum();
        // Boundaries at the quantiles; each is the end of an interval.
        let mut bounds = Vec::with_capacity(WAYS - 1);
        let mut seen = 0i64;
        for (j, &end) in ends.iter().enumerate() {
            seen += weight[j];
            let want = total * (bounds.len() as i64 + 1) / WAYS as i64;
            if seen >= want && bounds.len() < WAYS - 1 {
                bounds.push(end);
            }
        }
        if bounds.is_empty() {
            bounds.push(ends[ends.len() / 2]);
        }
        // Score: rows in the largest child plus rows per child.
        let child = |x: u32| bounds.partition_point(|&e| e < x);
        let mut per_child = [0u64; WAYS];
        for &r in rows {
            let (a, b) = self.regions[r as usize][f];
            for c in per_child
                .iter_mut()
                .take(child(b.min(hi)) + 1)
                .skip(child(a.max(lo)))
            {
                *c += 1;
            }
        }
        let used = &per_child[..=bounds.len()];
        let largest = *used.iter().max().expect("at least two children");
        let sum: u64 = used.iter().sum();
        self.scratch = ends;
        Some(Cut {
            field: f,
            score: largest * used.len() as u64 + sum,
            bounds,
        })
    }
}

/// Does a row's box hold the whole region?
fn covers(row: &Region, region: &Region, fields: usize) -> bool {
    row[..fields]
        .iter()
        .zip(&region[..fields])
        .all(|(r, g)| r.0 <= g.0 && r.1 >= g.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Action;

    /// A tiny deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_row<A: Family>(rng: &mut Rng, prio: u32, pool: &[A]) -> Row<A> {
        let len = |rng: &mut Rng| [0, 8, 16, 24, A::BITS / 2, A::BITS][rng.below(6) as usize];
        let (sl, dl) = (len(rng), len(rng));
        let src = pool[rng.below(pool.len() as u64) as usize].and(A::mask(sl));
        let dst = pool[rng.below(pool.len() as u64) as usize].and(A::mask(dl));
        let range = |rng: &mut Rng| match rng.below(4) {
            0 => (0, u16::MAX),
            1 => {
                let p = rng.below(8) as u16 * 100;
                (p, 0)
            }
            2 => (1024, u16::MAX - 1024),
            _ => (rng.below(500) as u16, rng.below(300) as u16),
        };
        let (sport, sport_span) = range(rng);
        let (dport, dport_span) = range(rng);
        let proto = [0, 6, 17][rng.below(3) as usize];
        Row {
            src,
            dst,
            sport,
            sport_span,
            dport,
            dport_span,
            prio,
            rule: prio,
            src_len: sl,
            dst_len: dl,
            proto,
            proto_mask: if proto == 0 { 0 } else { 0xff },
            action: Action::Allow,
        }
    }

    fn check<A: Family>(seed: u64, pool: &[A], n: usize) {
        let mut rng = Rng(seed);
        let rows: Vec<Row<A>> = (0..n)
            .map(|i| random_row(&mut rng, 10 * i as u32 + 1, pool))
            .collect();
        let tree = Tree::build(&rows, usize::MAX).expect("no budget");
        for _ in 0..5000 {
            let r = &rows[rng.below(n as u64) as usize];
            let fuzz = |a: A, rng: &mut Rng| {
                if rng.below(2) == 0 {
                    a
                } else {
                    pool[rng.below(pool.len() as u64) as usize]
                }
            };
            let k = PacketKey::new(
                fuzz(r.src, &mut rng),
                fuzz(r.dst, &mut rng),
                [6, 17, 1][rng.below(3) as usize],
                r.sport.wrapping_add(rng.below(3) as u16),
                rng.below(1200) as u16,
            );
            let want = rows
                .iter()
                .filter(|r| r.matches(&k))
                .min_by_key(|r| r.prio)
                .map(|r| r.prio);
            let got = tree.lookup(&k, NO_MATCH).map(|f| f.row.prio);
            assert_eq!(got, want, "{k:?}");
            // A bound above which nothing counts.
            if let Some(p) = want {
                assert!(tree.lookup(&k, p).is_none());
            }
            let mut best = [NO_MATCH];
            let mut found = [0u32; 4];
            let mut w = [[0; 16]; 4];
            w[0] = words(&k);
            tree.lookup_batch(std::slice::from_ref(&k), &w, &mut best, &mut found);
            let batch = (found[0] != u32::MAX).then(|| tree.row(found[0]).row.prio);
            assert_eq!(batch, want);
            if let Some(i) = (found[0] != u32::MAX).then_some(found[0]) {
                let f = tree.row(i);
                assert_eq!(rows[f.origin as usize], *f.row);
            }
        }
    }

    #[test]
    fn matches_a_linear_scan_v4() {
        let pool = [
            0x0a00_0001u32,
            0x0a00_0102,
            0x0a01_0203,
            0xc0a8_0101,
            0x0b00_0001,
        ];
        for seed in 1..6 {
            check::<u32>(seed * 7919, &pool, 400);
        }
    }

    #[test]
    fn matches_a_linear_scan_v6() {
        let pool = [
            0xfd00_0000_0000_0000_0000_0000_0000_0001u128,
            0xfd00_0000_0000_0001_0000_0000_0000_0002,
            0xfd00_0001_0000_0000_0000_0000_0000_0003,
            0x2001_0db8_0000_0000_0000_0000_0000_0001,
        ];
        for seed in 1..4 {
            check::<u128>(seed * 104_729, &pool, 300);
        }
    }

    #[test]
    fn prefix_words() {
        let a = 0x2001_0db8_1234_5678_0000_0000_0000_0001u128;
        assert_eq!(prefix_word(a, 0, 0), (0, u32::MAX));
        assert_eq!(prefix_word(a, 32, 0), (0x2001_0db8, 0x2001_0db8));
        assert_eq!(prefix_word(a, 32, 1), (0, u32::MAX));
        assert_eq!(prefix_word(a, 48, 1), (0x1234_0000, 0x1234_ffff));
        assert_eq!(
            prefix_word(0x0a0b_0c0du32, 24, 0),
            (0x0a0b_0c00, 0x0a0b_0cff)
        );
        assert_eq!(
            prefix_word(0x0a0b_0c0du32, 32, 0),
            (0x0a0b_0c0d, 0x0a0b_0c0d)
        );
    }

    #[test]
    fn over_budget_fails() {
        let mut rng = Rng(42);
        let pool = [1u32, 2, 3, 0x0a00_0000];
        let rows: Vec<Row<u32>> = (0..500)
            .map(|i| random_row(&mut rng, i + 1, &pool))
            .collect();
        assert_eq!(Tree::build(&rows, 1024).err(), Some(TooBig));
    }

    #[test]
    fn empty_and_single() {
        let t = Tree::<u32>::build(&[], usize::MAX).unwrap();
        assert!(t.lookup(&PacketKey::new(1, 2, 6, 3, 4), NO_MATCH).is_none());
        let mut rng = Rng(5);
        let r = random_row(&mut rng, 7, &[0x0a00_0001u32]);
        let t = Tree::build(&[r], usize::MAX).unwrap();
        assert_eq!(t.shape().nodes, 0);
    }
}
