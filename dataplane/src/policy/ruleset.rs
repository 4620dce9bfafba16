//! The control thread's side of a classifier: the rules and IP sets of one
//! endpoint and direction, compiled incrementally into tuple-space rows,
//! and published as [`Classifier`] snapshots.
//!
//! A rule becomes one row per (source prefix, destination prefix) pair of
//! each family (`Any` is the zero-length prefix). A row goes into the
//! first table, in lookup order, whose tuple it fits and whose group for
//! the row's masked key has room ([`GROUP_LIMIT`], far fewer in tables
//! that hash on few bits); failing that, into a new table whose tuple is
//! the row's own coarsened to the coarsest level not yet present (so that
//! later rows of nearby shapes join it), or else into the table of its own
//! tuple. This is TupleMerge's idea (Daly & Torng, ToN 2019) with our own
//! coarsening and limits, tuned on ClassBench with
//! `policy::tests::layout_report`.
//!
//! The writer keeps its bookkeeping (which table holds each row, each
//! table's priorities) outside the snapshot, so a published
//! [`Classifier`] holds nothing but what lookups read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::classifier::{Classifier, Compiled, Half, Space, Stale};
use super::family::Family;
use super::rule::{AddrMatch, IpNet, IpSetId, Prefix, Priority, Rule, RuleId};
use super::table::{Row, Table, Tuple, MIN_CAPACITY};
use super::tree::Forest;
use super::PolicyError;

/// Most rows that may share one masked key in a table before a row looks
/// elsewhere; bounds the rows a probe tests. Rows that differ only in
/// bits no tuple could separate (say, port ranges that are not prefixes)
/// share a key regardless.
const GROUP_LIMIT: usize = 32;
/// The limit in tables that hash on fewer than [`NARROW_BITS`] bits.
const WIDE_GROUP_LIMIT: usize = 2;
const NARROW_BITS: u32 = 8;

/// The rules and IP sets of one classifier, editable in microseconds;
/// [`RuleSet::snapshot`] publishes the current state.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: HashMap<RuleId, Rule>,
    priorities: HashMap<Priority, RuleId>,
    sets: HashMap<IpSetId, IpSet>,
    v4: Writer<u32>,
    v6: Writer<u128>,
}

#[derive(Debug, Clone, Default)]
struct IpSet {
    nets: BTreeSet<IpNet>,
    /// Rules that name the set.
    users: BTreeSet<RuleId>,
}

/// One family's rows: every row in a tuple space, and, once compiled, a
/// forest of the rows at that time with what changed since.
#[derive(Debug, Clone)]
struct Writer<A> {
    all: Tuples<A>,
    compiled: Option<CompiledWriter<A>>,
    /// Row edits so far, and their count when a compile last gave up
    /// (the forest would have outgrown its budget).
    edits: u64,
    gave_up_at: Option<u64>,
}

impl<A> Default for Writer<A> {
    fn default() -> Self {
        Writer {
            all: Tuples::default(),
            compiled: None,
            edits: 0,
            gave_up_at: None,
        }
    }
}

/// The writer's side of a [`Compiled`] forest.
#[derive(Debug, Clone)]
struct CompiledWriter<A> {
    forest: Arc<Forest<A>>,
    /// The rows the forest was built from, and the origin of each by its
    /// identity.
    rows: Arc<[Row<A>]>,
    origin: HashMap<RowId<A>, u32>,
    stale: Arc<Stale>,
    /// Rows added since the build.
    delta: Tuples<A>,
}

/// One tuple space plus the writer's index of it.
#[derive(Debug, Clone)]
struct Tuples<A> {
    space: Arc<Space<A>>,
    /// Per table id: how many rows each priority has there (the first key
    /// is the table's best priority).
    prios: HashMap<u32, BTreeMap<u32, u32>>,
    /// The table holding each row, by row identity.
    rows: HashMap<RowId<A>, u32>,
    next_table: u32,
}

/// A row's identity: its priority (one per rule) and its prefixes.
type RowId<A> = (u32, Prefix<A>, Prefix<A>);

impl<A> Default for Tuples<A> {
    fn default() -> Self {
        Tuples {
            space: Arc::default(),
            prios: HashMap::new(),
            rows: HashMap::new(),
            next_table: 0,
        }
    }
}

impl RuleSet {
    pub fn new() -> Self {
        RuleSet::default()
    }

    /// Builds a rule set from rules, in any order.
    pub fn from_rules(rules: impl IntoIterator<Item = Rule>) -> Result<Self, PolicyError> {
        let mut set = RuleSet::new();
        for r in rules {
            set.insert(r)?;
        }
        Ok(set)
    }

    /// The current state as an immutable classifier: a few reference-count
    /// increments. Later edits copy what they touch and leave it alone.
    pub fn snapshot(&self) -> Classifier {
        Classifier {
            v4: self.v4.half(),
            v6: self.v6.half(),
        }
    }

    /// True if [`RuleSet::compile`] would speed lookups up (rules changed
    /// since the last compile, or there was none).
    pub fn wants_compile(&self) -> bool {
        self.v4.wants_compile() || self.v6.wants_compile()
    }

    /// Row edits so far (grows with every change; compare two readings to
    /// tell whether the rule set changed in between).
    pub fn edits(&self) -> u64 {
        self.v4.edits + self.v6.edits
    }

    /// True if the rows changed since the last compile are at least an
    /// eighth of all rows: lookups have lost much of the forest's speed.
    pub fn much_changed(&self) -> bool {
        let (changed, rows) = [self.v4.changed(), self.v6.changed()]
            .into_iter()
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        changed > 0 && changed * 8 >= rows
    }

    /// The rows to compile, taken now; [`CompileJob::run`] may run on any
    /// thread while this rule set goes on taking edits, and
    /// [`RuleSet::install`] then takes the result.
    pub fn compile_job(&self) -> CompileJob {
        CompileJob {
            v4: self.v4.rows(),
            v6: self.v6.rows(),
        }
    }

    /// Installs compiled trees: lookups use them for the rows they were
    /// built from, and the tuple space for the edits made since the job
    /// was taken.
    pub fn install(&mut self, compiled: CompiledRules) {
        self.v4.install(compiled.v4);
        self.v6.install(compiled.v6);
    }

    /// Compiles in place ([`RuleSet::compile_job`], run, install).
    pub fn compile(&mut self) {
        let job = self.compile_job();
        self.install(job.run());
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(&id)
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// Adds a rule. Its id and priority must be unused.
    pub fn insert(&mut self, rule: Rule) -> Result<(), PolicyError> {
        if self.rules.contains_key(&rule.id) {
            return Err(PolicyError::DuplicateRule(rule.id));
        }
        if rule.priority == Priority::MAX {
            return Err(PolicyError::ReservedPriority);
        }
        if let Some(&holder) = self.priorities.get(&rule.priority) {
            return Err(PolicyError::DuplicatePriority(rule.priority, holder));
        }
        for r in [rule.sport, rule.dport] {
            if r.lo > r.hi {
                return Err(PolicyError::PortRange(r.lo, r.hi));
            }
        }
        for side in [&rule.src, &rule.dst] {
            if let AddrMatch::Set(id) = side {
                self.sets.entry(*id).or_default().users.insert(rule.id);
            }
        }
        let rows4 = self.rows::<u32>(&rule);
        let rows6 = self.rows::<u128>(&rule);
        rows4.iter().for_each(|r| self.v4.insert(r));
        rows6.iter().for_each(|r| self.v6.insert(r));
        self.priorities.insert(rule.priority, rule.id);
        self.rules.insert(rule.id, rule);
        Ok(())
    }

    /// Removes a rule and returns it.
    pub fn remove(&mut self, id: RuleId) -> Result<Rule, PolicyError> {
        let rule = self.rules.remove(&id).ok_or(PolicyError::UnknownRule(id))?;
        let rows4 = self.rows::<u32>(&rule);
        let rows6 = self.rows::<u128>(&rule);
        rows4.iter().for_each(|r| self.v4.remove(r));
        rows6.iter().for_each(|r| self.v6.remove(r));
        self.priorities.remove(&rule.priority);
        for side in [&rule.src, &rule.dst] {
            if let AddrMatch::Set(set) = side {
                if let Some(s) = self.sets.get_mut(set) {
                    s.users.remove(&id);
                    if s.users.is_empty() && s.nets.is_empty() {
                        self.sets.remove(set);
                    }
                }
            }
        }
        Ok(rule)
    }

    /// Inserts or replaces the rule with `rule.id`; returns the old one.
    /// On error the old rule stays in place.
    pub fn upsert(&mut self, rule: Rule) -> Result<Option<Rule>, PolicyError> {
        let old = self
            .rules
            .contains_key(&rule.id)
            .then(|| self.remove(rule.id));
        let old = old.transpose()?;
        if let Err(e) = self.insert(rule) {
            if let Some(o) = old {
                self.insert(o).expect("reinserting the rule just removed");
            }
            return Err(e);
        }
        Ok(old)
    }

    /// Adds a prefix to an IP set (creating the set), and the rows it adds
    /// to every rule that names the set. False if it was already there.
    pub fn set_insert(&mut self, set: IpSetId, net: IpNet) -> bool {
        if !self.sets.entry(set).or_default().nets.insert(net) {
            return false;
        }
        match net {
            IpNet::V4(p) => {
                let rows = self.set_rows(set, p);
                rows.iter().for_each(|r| self.v4.insert(r));
            }
            IpNet::V6(p) => {
                let rows = self.set_rows(set, p);
                rows.iter().for_each(|r| self.v6.insert(r));
            }
        }
        true
    }

    /// Removes a prefix from an IP set, and its rows from every rule that
    /// names the set. False if it was not there.
    pub fn set_remove(&mut self, set: IpSetId, net: IpNet) -> bool {
        if !self.sets.get(&set).is_some_and(|s| s.nets.contains(&net)) {
            return false;
        }
        // The rows are computed while the prefix is still a member.
        match net {
            IpNet::V4(p) => {
                let rows = self.set_rows(set, p);
                rows.iter().for_each(|r| self.v4.remove(r));
            }
            IpNet::V6(p) => {
                let rows = self.set_rows(set, p);
                rows.iter().for_each(|r| self.v6.remove(r));
            }
        }
        let s = self.sets.get_mut(&set).expect("checked above");
        s.nets.remove(&net);
        if s.users.is_empty() && s.nets.is_empty() {
            self.sets.remove(&set);
        }
        true
    }

    /// The prefixes of an IP set.
    pub fn set_members(&self, set: IpSetId) -> impl Iterator<Item = IpNet> + '_ {
        self.sets
            .get(&set)
            .into_iter()
            .flat_map(|s| s.nets.iter().copied())
    }

    /// One side of a rule as prefixes of family `A`, sorted, no duplicates.
    fn side<A: Family>(&self, m: &AddrMatch) -> Vec<Prefix<A>> {
        match m {
            AddrMatch::Any => vec![Prefix::ANY],
            AddrMatch::Nets(nets) => {
                let mut v: Vec<_> = nets.iter().filter_map(|&n| A::prefix(n)).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            AddrMatch::Set(id) => self
                .sets
                .get(id)
                .map(|s| s.nets.iter().filter_map(|&n| A::prefix(n)).collect())
                .unwrap_or_default(),
        }
    }

    /// The rows of family `A` a rule compiles to.
    fn rows<A: Family>(&self, rule: &Rule) -> Vec<Row<A>> {
        let dst = self.side::<A>(&rule.dst);
        let mut rows = Vec::new();
        for s in self.side::<A>(&rule.src) {
            rows.extend(dst.iter().map(|&d| row(rule, s, d)));
        }
        rows
    }

    /// The rows that member `p` of `set` contributes, over all rules naming
    /// the set (`p` must be a member).
    fn set_rows<A: Family>(&self, set: IpSetId, p: Prefix<A>) -> Vec<Row<A>> {
        let mut rows = Vec::new();
        let Some(s) = self.sets.get(&set) else {
            return rows;
        };
        for id in &s.users {
            let rule = &self.rules[id];
            let in_src = rule.src == AddrMatch::Set(set);
            if in_src {
                rows.extend(self.side(&rule.dst).into_iter().map(|d| row(rule, p, d)));
            }
            if rule.dst == AddrMatch::Set(set) {
                // With the set on both sides, (p, p) came from the source.
                let srcs = self.side(&rule.src).into_iter();
                rows.extend(
                    srcs.filter(|&s| !(in_src && s == p))
                        .map(|s| row(rule, s, p)),
                );
            }
        }
        rows
    }
}

/// The rows of a rule set at one moment, to be compiled off the control
/// thread.
#[derive(Debug)]
pub struct CompileJob {
    v4: Vec<Row<u32>>,
    v6: Vec<Row<u128>>,
}

/// A compile's result, for [`RuleSet::install`].
#[derive(Debug)]
pub struct CompiledRules {
    v4: Option<(Forest<u32>, Vec<Row<u32>>)>,
    v6: Option<(Forest<u128>, Vec<Row<u128>>)>,
}

/// Bytes a forest may take: 1 KiB per row (the ClassBench sets at 10k
/// rules take 230–450 bytes per row), and at least 8 MiB (fw1 at 1k rules
/// takes 7.5 MiB in one tree, and 4× the lookup time in four).
pub(super) fn forest_budget(rows: usize) -> usize {
    (rows * 1024).max(8 << 20)
}

impl CompileJob {
    /// Builds the trees (milliseconds to a few hundred for 10k rows).
    pub fn run(self) -> CompiledRules {
        fn build<A: Family>(rows: Vec<Row<A>>) -> Option<(Forest<A>, Vec<Row<A>>)> {
            let forest = Forest::build(&rows, forest_budget(rows.len())).ok()?;
            Some((forest, rows))
        }
        CompiledRules {
            v4: build(self.v4),
            v6: build(self.v6),
        }
    }

    /// Rows to compile.
    pub fn rows(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn row<A: Family>(rule: &Rule, src: Prefix<A>, dst: Prefix<A>) -> Row<A> {
    Row {
        src: src.addr(),
        dst: dst.addr(),
        sport: rule.sport.lo,
        sport_span: rule.sport.hi - rule.sport.lo,
        dport: rule.dport.lo,
        dport_span: rule.dport.hi - rule.dport.lo,
        prio: rule.priority.0,
        rule: rule.id.0,
        src_len: src.prefix_len(),
        dst_len: dst.prefix_len(),
        proto: rule.proto.unwrap_or(0),
        proto_mask: if rule.proto.is_some() { 0xff } else { 0 },
        action: rule.action,
    }
}

fn row_id<A: Family>(r: &Row<A>) -> RowId<A> {
    let p = |addr, len| Prefix::new(addr, len).expect("a row holds a valid prefix");
    (r.prio, p(r.src, r.src_len), p(r.dst, r.dst_len))
}

/// Coarsening levels of a new table's tuple, coarsest first: address
/// lengths rounded down to a multiple of the address width divided by
/// these (IPv4: 16, 8, 4 bits; IPv6: 64, 32, 16).
const LEVELS: [u8; 3] = [2, 4, 8];

/// The tuple of a new table at coarsening `level` for a row of tuple `t`.
/// Ports are hashed only when exact (a range's common prefix rarely tells
/// rules apart); the coarsest level also ignores the source port and the
/// protocol, so one table takes the TCP, UDP and any-protocol rules of a
/// prefix pair.
fn coarsen<A: Family>(t: Tuple, level: usize) -> Tuple {
    let step = A::BITS / LEVELS[level];
    let exact = |l: u8| if l == 16 { 16 } else { 0 };
    let coarsest = level == 0;
    Tuple {
        src: t.src - t.src % step,
        dst: t.dst - t.dst % step,
        sport: if coarsest { 0 } else { exact(t.sport) },
        dport: exact(t.dport),
        proto: if coarsest { 0 } else { t.proto },
    }
}

/// How many rows may share a masked key in a table of tuple `t`: every
/// key that reaches a table hashing on few bits lands in one of few groups
/// and tests its rows, so those tables stay sparse.
fn group_limit(t: Tuple) -> usize {
    let bits = [t.src, t.dst, t.sport, t.dport, t.proto].map(u32::from);
    if bits.iter().sum::<u32>() < NARROW_BITS {
        WIDE_GROUP_LIMIT
    } else {
        GROUP_LIMIT
    }
}

impl<A: Family> Writer<A> {
    fn insert(&mut self, row: &Row<A>) {
        self.edits += 1;
        self.all.insert(row);
        if let Some(c) = &mut self.compiled {
            let id = row_id(row);
            // The forest's own row back again: it counts once more.
            if let Some(&o) = c.origin.get(&id) {
                if c.rows[o as usize] == *row && c.stale.contains(o) {
                    Arc::make_mut(&mut c.stale).set(o, false);
                    return;
                }
            }
            c.delta.insert(row);
        }
    }

    fn remove(&mut self, row: &Row<A>) {
        self.edits += 1;
        self.all.remove(row);
        if let Some(c) = &mut self.compiled {
            let id = row_id(row);
            if c.delta.rows.contains_key(&id) {
                c.delta.remove(row);
            } else if let Some(&o) = c.origin.get(&id) {
                let marked = Arc::make_mut(&mut c.stale).set(o, true);
                debug_assert!(marked, "a live row of the forest");
            }
        }
    }

    /// What a lookup reads.
    fn half(&self) -> Half<A> {
        Half {
            space: self.all.space.clone(),
            compiled: self.compiled.as_ref().map(|c| Compiled {
                forest: c.forest.clone(),
                stale: c.stale.clone(),
                delta: c.delta.space.clone(),
            }),
        }
    }

    /// True if a compile would help lookups: rows changed since the last
    /// one, or none yet and the tuple space has more than a couple of
    /// tables (a forest answers in a few node steps whatever the shapes;
    /// one or two tables answer in one or two probes). After a compile
    /// gave up, only once a quarter of the rows have changed.
    fn wants_compile(&self) -> bool {
        if let Some(at) = self.gave_up_at {
            let rows = self.all.rows.len() as u64;
            return self.edits - at > rows / 4 + 16;
        }
        match &self.compiled {
            Some(c) => c.stale.count() > 0 || !c.delta.rows.is_empty(),
            None => self.all.space.tables.len() > 2,
        }
    }

    /// Rows changed since the last compile (added plus removed), and all
    /// rows.
    fn changed(&self) -> (usize, usize) {
        let changed = self
            .compiled
            .as_ref()
            .map_or(0, |c| c.delta.rows.len() + c.stale.count());
        (changed, self.all.rows.len())
    }

    /// Every current row.
    fn rows(&self) -> Vec<Row<A>> {
        self.all
            .space
            .tables
            .iter()
            .flat_map(|t| t.rows())
            .copied()
            .collect()
    }

    /// Takes a forest built from `rows` (some time ago): the rows it lacks
    /// go into a fresh delta, the rows since removed are marked stale.
    fn install(&mut self, built: Option<(Forest<A>, Vec<Row<A>>)>) {
        let Some((forest, rows)) = built else {
            self.compiled = None;
            self.gave_up_at = Some(self.edits);
            return;
        };
        self.gave_up_at = None;
        let origin: HashMap<RowId<A>, u32> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (row_id(r), i as u32))
            .collect();
        let mut stale = Stale::new(rows.len());
        let mut delta = Tuples::default();
        let mut live = vec![false; rows.len()];
        for r in self.rows() {
            match origin.get(&row_id(&r)) {
                Some(&o) if rows[o as usize] == r => live[o as usize] = true,
                _ => delta.insert(&r),
            }
        }
        for (o, _) in live.iter().enumerate().filter(|(_, l)| !**l) {
            stale.set(o as u32, true);
        }
        self.compiled = Some(CompiledWriter {
            forest: Arc::new(forest),
            rows: rows.into(),
            origin,
            stale: Arc::new(stale),
            delta,
        });
    }
}

impl<A: Family> Tuples<A> {
    fn insert(&mut self, row: &Row<A>) {
        let id = self.place(row);
        let space = Arc::make_mut(&mut self.space);
        let t = table_mut(space, id);
        if t.is_full() {
            *t = t.resized(t.capacity() * 2);
        }
        t.insert(*row);
        let prios = self.prios.entry(id).or_default();
        *prios.entry(row.prio).or_default() += 1;
        let best = *prios.keys().next().expect("just added");
        if best != t.min_prio {
            t.min_prio = best;
            sort(space);
        }
        let clash = self.rows.insert(row_id(row), id);
        debug_assert!(clash.is_none(), "rows are unique per rule and prefix pair");
    }

    fn remove(&mut self, row: &Row<A>) {
        let Some(id) = self.rows.remove(&row_id(row)) else {
            debug_assert!(false, "removing a row that was never added");
            return;
        };
        let space = Arc::make_mut(&mut self.space);
        let t = table_mut(space, id);
        let removed = t.remove(row);
        debug_assert!(removed);
        let prios = self.prios.get_mut(&id).expect("table has an index");
        let n = prios.get_mut(&row.prio).expect("row counted");
        *n -= 1;
        if *n == 0 {
            prios.remove(&row.prio);
        }
        match prios.keys().next() {
            None => {
                self.prios.remove(&id);
                space.tables.retain(|t| t.id != id);
            }
            Some(&best) => {
                if t.is_sparse() {
                    *t = t.resized(t.capacity() / 2);
                }
                if best != t.min_prio {
                    t.min_prio = best;
                    sort(space);
                }
            }
        }
    }

    /// The id of the table a new row goes into, made if need be: the
    /// first table in lookup order that fits the row and has room in its
    /// group, else a new table at the coarsest level not yet present, else
    /// the table of the row's own tuple.
    fn place(&mut self, row: &Row<A>) -> u32 {
        let own = row.tuple();
        let tables = &self.space.tables;
        if let Some(t) = tables
            .iter()
            .find(|t| t.tuple.fits(own) && t.group_len(row) < group_limit(t.tuple))
        {
            return t.id;
        }
        let find = |tuple: Tuple| tables.iter().find(|t| t.tuple == tuple).map(|t| t.id);
        let fresh = (0..LEVELS.len())
            .map(|level| coarsen::<A>(own, level))
            .chain([own])
            .find(|&t| find(t).is_none());
        let Some(tuple) = fresh else {
            // Crowded, but no table can tell these rows apart better.
            return find(own).expect("every level exists");
        };
        let id = self.next_table;
        self.next_table += 1;
        Arc::make_mut(&mut self.space)
            .tables
            .push(Table::new(id, tuple, MIN_CAPACITY));
        id
    }
}

fn table_mut<A>(space: &mut Space<A>, id: u32) -> &mut Table<A> {
    space
        .tables
        .iter_mut()
        .find(|t| t.id == id)
        .expect("the writer indexes only live tables")
}

/// Restores the lookup order: best priority first.
fn sort<A>(space: &mut Space<A>) {
    space.tables.sort_by_key(|t| (t.min_prio, t.id));
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::rule::{Action, PacketKey, PacketKey4, PacketKey6, PortRange};
    use super::*;

    fn nets(s: &[&str]) -> AddrMatch {
        AddrMatch::Nets(s.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn rule(id: u32, prio: u32, action: Action) -> Rule {
        Rule::new(RuleId(id), Priority(prio), action)
    }

    fn k4(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> PacketKey4 {
        PacketKey::v4(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            proto,
            sport,
            dport,
        )
    }

    fn verdict(c: &Classifier, k: &PacketKey4) -> Option<u32> {
        c.classify(k).map(|h| h.rule.0)
    }

    #[test]
    fn first_match_wins() {
        let rs = RuleSet::from_rules([
            rule(1, 10, Action::Allow)
                .with_src(nets(&["10.0.0.0/8"]))
                .with_dport(PortRange::exact(80))
                .with_proto(6),
            rule(2, 20, Action::Deny).with_src(nets(&["10.1.0.0/16"])),
            rule(3, 30, Action::Allow).with_dport(PortRange::new(1000, 2000).unwrap()),
            rule(4, 40, Action::Deny),
        ])
        .unwrap();
        let c = rs.snapshot();
        assert_eq!(verdict(&c, &k4("10.1.2.3", "1.1.1.1", 6, 5, 80)), Some(1));
        assert_eq!(verdict(&c, &k4("10.1.2.3", "1.1.1.1", 17, 5, 80)), Some(2));
        assert_eq!(
            verdict(&c, &k4("10.2.2.3", "1.1.1.1", 17, 5, 1500)),
            Some(3)
        );
        assert_eq!(
            verdict(&c, &k4("10.2.2.3", "1.1.1.1", 17, 5, 2001)),
            Some(4)
        );
        let hit = c.classify(&k4("10.1.2.3", "1.1.1.1", 6, 5, 80)).unwrap();
        assert_eq!(hit.action, Action::Allow);
        assert_eq!(hit.priority, Priority(10));
    }

    #[test]
    fn batch_equals_single_lookups() {
        let mut rs = RuleSet::new();
        for i in 0..200u32 {
            let net = format!("10.{}.{}.0/{}", i % 7, i % 13, 16 + i % 17);
            rs.insert(
                rule(i, 1000 - i, Action::Allow)
                    .with_dst(nets(&[&net]))
                    .with_dport(PortRange::new(i as u16 * 10, i as u16 * 10 + 15).unwrap()),
            )
            .unwrap();
        }
        let c = rs.snapshot();
        let keys: Vec<PacketKey4> = (0..300u32)
            .map(|i| {
                let dst = Ipv4Addr::new(10, (i % 7) as u8, (i % 13) as u8, i as u8);
                PacketKey::v4(Ipv4Addr::LOCALHOST, dst, 6, 1, (i * 7 % 2000) as u16)
            })
            .collect();
        let mut out = vec![None; keys.len()];
        c.classify_batch(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            assert_eq!(*o, c.classify(k));
        }
        assert!(out.iter().any(Option::is_some));
    }

    #[test]
    fn families_are_separate() {
        let rs = RuleSet::from_rules([
            rule(1, 1, Action::Deny).with_src(nets(&["fd00::/64"])),
            rule(2, 2, Action::Allow).with_dst(nets(&["10.0.0.0/8", "fd01::/16"])),
            rule(3, 3, Action::Log),
        ])
        .unwrap();
        let c = rs.snapshot();
        let k6 = |s: &str, d: &str| PacketKey6::v6(s.parse().unwrap(), d.parse().unwrap(), 6, 1, 2);
        assert_eq!(
            c.classify(&k6("fd00::1", "fd01::1")).unwrap().rule,
            RuleId(1)
        );
        assert_eq!(
            c.classify(&k6("fd02::1", "fd01::1")).unwrap().rule,
            RuleId(2)
        );
        assert_eq!(
            c.classify(&k6("fd02::1", "fd02::1")).unwrap().rule,
            RuleId(3)
        );
        assert_eq!(verdict(&c, &k4("1.1.1.1", "10.0.0.1", 6, 1, 2)), Some(2));
        assert_eq!(verdict(&c, &k4("1.1.1.1", "11.0.0.1", 6, 1, 2)), Some(3));
        let s = c.stats();
        assert_eq!((s.rows4, s.rows6), (2, 3));
    }

    #[test]
    fn classify_after_resumes_past_log_and_pass() {
        let rs = RuleSet::from_rules([
            rule(1, 10, Action::Log),
            rule(2, 20, Action::Pass).with_proto(17),
            rule(3, 30, Action::Deny).with_proto(17),
            rule(4, 100, Action::Allow),
        ])
        .unwrap();
        let c = rs.snapshot();
        let k = k4("1.1.1.1", "2.2.2.2", 17, 1, 2);
        let first = c.classify(&k).unwrap();
        assert_eq!(first.action, Action::Log);
        let next = c.classify_after(&k, first.priority).unwrap();
        assert_eq!(next.action, Action::Pass);
        // The tier ends at priority 99: go on with the next tier.
        assert_eq!(c.classify_after(&k, Priority(99)).unwrap().rule, RuleId(4));
        assert_eq!(c.classify_after(&k, Priority(100)), None);
    }

    #[test]
    fn icmp_type_and_code() {
        let rs = RuleSet::from_rules([
            rule(1, 1, Action::Allow).with_icmp(1, Some(8), Some(0)),
            rule(2, 2, Action::Deny).with_icmp(1, None, None),
        ])
        .unwrap();
        let c = rs.snapshot();
        let icmp = |t, code| PacketKey4::icmp(1, 2, 1, t, code);
        assert_eq!(verdict(&c, &icmp(8, 0)), Some(1));
        assert_eq!(verdict(&c, &icmp(8, 1)), Some(2));
        assert_eq!(verdict(&c, &icmp(0, 0)), Some(2));
        assert_eq!(verdict(&c, &k4("0.0.0.1", "0.0.0.2", 6, 8, 0)), None);
    }

    #[test]
    fn rejects_bad_rules() {
        let mut rs = RuleSet::new();
        rs.insert(rule(1, 1, Action::Allow)).unwrap();
        assert_eq!(
            rs.insert(rule(1, 2, Action::Allow)),
            Err(PolicyError::DuplicateRule(RuleId(1)))
        );
        assert_eq!(
            rs.insert(rule(2, 1, Action::Allow)),
            Err(PolicyError::DuplicatePriority(Priority(1), RuleId(1)))
        );
        assert_eq!(
            rs.insert(rule(2, u32::MAX, Action::Allow)),
            Err(PolicyError::ReservedPriority)
        );
        let mut bad = rule(2, 2, Action::Allow);
        bad.sport = PortRange { lo: 9, hi: 8 };
        assert_eq!(rs.insert(bad), Err(PolicyError::PortRange(9, 8)));
        assert_eq!(
            rs.remove(RuleId(7)),
            Err(PolicyError::UnknownRule(RuleId(7)))
        );
        assert_eq!(rs.len(), 1);
    }

    #[test]
    fn upsert_replaces_and_restores() {
        let mut rs = RuleSet::new();
        rs.insert(rule(1, 1, Action::Deny)).unwrap();
        rs.insert(rule(2, 2, Action::Allow)).unwrap();
        let old = rs.upsert(rule(1, 3, Action::Allow)).unwrap();
        assert_eq!(old.unwrap().priority, Priority(1));
        // Priority 2 is taken: the old rule 1 stays.
        assert!(rs.upsert(rule(1, 2, Action::Deny)).is_err());
        assert_eq!(rs.get(RuleId(1)).unwrap().priority, Priority(3));
        let k = k4("1.1.1.1", "2.2.2.2", 6, 1, 2);
        assert_eq!(verdict(&rs.snapshot(), &k), Some(2));
    }

    #[test]
    fn ip_sets_update_every_user() {
        let set = IpSetId(7);
        let mut rs = RuleSet::new();
        rs.insert(
            rule(1, 1, Action::Allow)
                .with_src(AddrMatch::Set(set))
                .with_proto(6),
        )
        .unwrap();
        rs.insert(
            rule(2, 2, Action::Deny)
                .with_src(AddrMatch::Set(set))
                .with_dst(AddrMatch::Set(set)),
        )
        .unwrap();
        let k = k4("10.0.0.5", "10.0.0.5", 17, 1, 2);
        assert_eq!(
            verdict(&rs.snapshot(), &k),
            None,
            "an empty set matches nothing"
        );
        let before = rs.snapshot();
        assert!(rs.set_insert(set, "10.0.0.0/24".parse().unwrap()));
        assert!(!rs.set_insert(set, "10.0.0.0/24".parse().unwrap()));
        let c = rs.snapshot();
        assert_eq!(verdict(&c, &k), Some(2));
        assert_eq!(verdict(&c, &k4("10.0.0.5", "9.9.9.9", 6, 1, 2)), Some(1));
        assert_eq!(
            verdict(&before, &k),
            None,
            "published snapshots never change"
        );
        assert!(rs.set_insert(set, "192.168.0.0/16".parse().unwrap()));
        let c = rs.snapshot();
        assert_eq!(
            verdict(&c, &k4("192.168.1.1", "10.0.0.1", 17, 1, 2)),
            Some(2)
        );
        assert_eq!(c.stats().rows4, 2 + 4);
        assert!(rs.set_remove(set, "10.0.0.0/24".parse().unwrap()));
        assert!(!rs.set_remove(set, "10.0.0.0/24".parse().unwrap()));
        let c = rs.snapshot();
        assert_eq!(verdict(&c, &k), None);
        assert_eq!(
            verdict(&c, &k4("192.168.1.1", "192.168.9.9", 17, 1, 2)),
            Some(2)
        );
        assert_eq!(c.stats().rows4, 2);
        rs.remove(RuleId(1)).unwrap();
        rs.remove(RuleId(2)).unwrap();
        assert_eq!(rs.snapshot().stats().rows4, 0);
        assert_eq!(rs.set_members(set).count(), 1, "the set outlives its users");
    }

    #[test]
    fn compile_state_tracks_edits() {
        let mut rs = RuleSet::new();
        for i in 0..24u32 {
            let net = format!("10.{i}.{i}.0/{}", [8, 16, 24, 32][i as usize % 4]);
            let mut r = rule(i, i, Action::Allow).with_src(nets(&[&net]));
            if i % 3 == 0 {
                r = r.with_dport(PortRange::exact(80)).with_proto(6);
            }
            rs.insert(r).unwrap();
        }
        assert!(rs.snapshot().stats().tables4 > 2);
        assert!(rs.wants_compile(), "nothing compiled yet");
        assert!(!rs.much_changed());
        let edits = rs.edits();
        rs.compile();
        assert!(!rs.wants_compile());
        assert_eq!(rs.edits(), edits, "a compile is not an edit");
        let removed = rs.remove(RuleId(0)).unwrap();
        assert!(rs.wants_compile() && !rs.much_changed(), "1 of 24 rows");
        rs.insert(removed).unwrap();
        assert!(!rs.wants_compile(), "the forest's own row is back");
        for id in 0..3 {
            rs.remove(RuleId(id)).unwrap();
        }
        assert!(rs.much_changed(), "3 of 21 rows");
        assert_eq!(rs.edits(), edits + 5);
    }

    #[test]
    fn crowded_keys_spill_into_new_tables() {
        // One host with many small source-port ranges: the coarse table
        // (ports not hashed) takes GROUP_LIMIT of them, the rest go to a
        // table of their exact tuple, which tells the ranges apart.
        let mut rs = RuleSet::new();
        for i in 0..50u16 {
            let r = rule(i.into(), i.into(), Action::Allow)
                .with_src(nets(&["10.0.0.1/32"]))
                .with_sport(PortRange::new(2 * i, 2 * i + 1).unwrap());
            rs.insert(r).unwrap();
        }
        let c = rs.snapshot();
        assert_eq!(c.stats().tables4, 2);
        for i in 0..50u16 {
            let k = k4("10.0.0.1", "1.1.1.1", 6, 2 * i + 1, 2);
            assert_eq!(verdict(&c, &k), Some(i.into()));
        }
        for i in 0..50 {
            rs.remove(RuleId(i)).unwrap();
        }
        let s = rs.snapshot().stats();
        assert_eq!((s.tables4, s.rows4), (0, 0));
    }
}
