//! The classifier against straightforward references: a property test
//! with random rules, IP-set edits and deletes against a linear scan, and
//! the ClassBench rule sets with their traces against
//! [`classbench::linear_scan`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use proptest::prelude::*;

use super::classbench::{self, BenchRule};
use super::*;

/// The specification, executed literally: every rule tested in turn.
#[derive(Debug, Clone, Default)]
struct Reference {
    rules: Vec<Rule>,
    sets: HashMap<IpSetId, BTreeSet<IpNet>>,
}

impl Reference {
    fn side_matches(&self, m: &AddrMatch, a: IpAddr) -> bool {
        match m {
            AddrMatch::Any => true,
            AddrMatch::Nets(nets) => nets.iter().any(|n| n.contains(a)),
            AddrMatch::Set(id) => self
                .sets
                .get(id)
                .is_some_and(|s| s.iter().any(|n| n.contains(a))),
        }
    }

    fn first(
        &self,
        src: IpAddr,
        dst: IpAddr,
        k: (u8, u16, u16),
        after: Option<u32>,
    ) -> Option<Hit> {
        let (proto, sport, dport) = k;
        self.rules
            .iter()
            .filter(|r| after.is_none_or(|a| r.priority.0 > a))
            .filter(|r| {
                self.side_matches(&r.src, src)
                    && self.side_matches(&r.dst, dst)
                    && r.sport.contains(sport)
                    && r.dport.contains(dport)
                    && r.proto.is_none_or(|p| p == proto)
            })
            .min_by_key(|r| r.priority)
            .map(|r| Hit {
                rule: r.id,
                priority: r.priority,
                action: r.action,
            })
    }

    fn insert(&mut self, rule: Rule) -> bool {
        let taken = self
            .rules
            .iter()
            .any(|r| r.id == rule.id || r.priority == rule.priority);
        if !taken {
            self.rules.push(rule);
        }
        !taken
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Rule),
    Remove(u32),
    SetInsert(IpSetId, IpNet),
    SetRemove(IpSetId, IpNet),
    Publish,
    /// Compile now.
    Compile,
    /// Take a compile job now, install it at the next `Install`.
    TakeJob,
    Install,
}

/// Prefixes from a small pool, so that rules overlap and share tables.
fn net() -> impl Strategy<Value = IpNet> {
    let v4 = (
        0u32..4,
        any::<u8>(),
        prop::sample::select(vec![0u8, 8, 16, 22, 24, 26, 29, 31, 32]),
    )
        .prop_map(|(third, host, len)| {
            IpNet::new(
                IpAddr::from((10 << 24 | third << 8 | u32::from(host)).to_be_bytes()),
                len,
            )
            .unwrap()
        });
    let v6 = (
        0u16..4,
        any::<u8>(),
        prop::sample::select(vec![0u8, 48, 64, 120, 126, 128]),
    )
        .prop_map(|(word, host, len)| {
            let a = (0xfd00u128 << 112) | (u128::from(word) << 8) | u128::from(host);
            IpNet::new(IpAddr::from(a.to_be_bytes()), len).unwrap()
        });
    prop_oneof![3 => v4, 1 => v6]
}

fn addr_match() -> impl Strategy<Value = AddrMatch> {
    prop_oneof![
        2 => Just(AddrMatch::Any),
        3 => prop::collection::vec(net(), 0..3).prop_map(AddrMatch::Nets),
        2 => (0u32..3).prop_map(|s| AddrMatch::Set(IpSetId(s))),
    ]
}

const PORTS: [u16; 8] = [0, 53, 80, 443, 1000, 1024, 2000, 65535];

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        2 => Just(PortRange::ANY),
        2 => prop::sample::select(PORTS.to_vec()).prop_map(PortRange::exact),
        2 => (0u16..2100, 0u16..600).prop_map(|(lo, w)| PortRange::new(lo, lo.saturating_add(w)).unwrap()),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let action = prop::sample::select(vec![Action::Allow, Action::Deny, Action::Log, Action::Pass]);
    (
        (0u32..40, 0u32..60, action),
        (addr_match(), addr_match()),
        (port_range(), port_range()),
        prop::option::of(prop::sample::select(vec![1u8, 6, 17])),
    )
        .prop_map(
            |((id, prio, action), (src, dst), (sport, dport), proto)| Rule {
                id: RuleId(id),
                priority: Priority(prio),
                src,
                dst,
                sport,
                dport,
                proto,
                action,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => rule().prop_map(Op::Insert),
        2 => (0u32..40).prop_map(Op::Remove),
        2 => ((0u32..3).prop_map(IpSetId), net()).prop_map(|(s, n)| Op::SetInsert(s, n)),
        1 => ((0u32..3).prop_map(IpSetId), net()).prop_map(|(s, n)| Op::SetRemove(s, n)),
        1 => Just(Op::Publish),
        1 => Just(Op::Compile),
        1 => Just(Op::TakeJob),
        1 => Just(Op::Install),
    ]
}

/// Keys near the pool's addresses and ports, with both families.
#[derive(Debug, Clone)]
struct Probe {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    after: u32,
}

fn probe() -> impl Strategy<Value = Probe> {
    let addr = |v6: bool| {
        (0u32..4, any::<u8>()).prop_map(move |(w, host)| {
            if v6 {
                IpAddr::from(
                    ((0xfd00u128 << 112) | (u128::from(w) << 8) | u128::from(host)).to_be_bytes(),
                )
            } else {
                IpAddr::from((10 << 24 | w << 8 | u32::from(host)).to_be_bytes())
            }
        })
    };
    let port = prop_oneof![prop::sample::select(PORTS.to_vec()), 0u16..2700];
    any::<bool>()
        .prop_flat_map(move |v6| (addr(v6), addr(v6)))
        .prop_flat_map(move |(src, dst)| {
            (
                Just(src),
                Just(dst),
                prop::sample::select(vec![1u8, 6, 17, 47]),
                port.clone(),
                port.clone(),
                0u32..64,
            )
        })
        .prop_map(|(src, dst, proto, sport, dport, after)| Probe {
            src,
            dst,
            proto,
            sport,
            dport,
            after,
        })
}

/// Checks a snapshot against the reference on every probe, batched and one
/// by one, and `classify_after`.
fn check(c: &Classifier, reference: &Reference, probes: &[Probe]) -> Result<(), TestCaseError> {
    let mut keys4 = Vec::new();
    let mut keys6 = Vec::new();
    let mut want4 = Vec::new();
    let mut want6 = Vec::new();
    for p in probes {
        let want = reference.first(p.src, p.dst, (p.proto, p.sport, p.dport), None);
        let after = reference.first(p.src, p.dst, (p.proto, p.sport, p.dport), Some(p.after));
        let (got, got_after) = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let k = PacketKey4::v4(s, d, p.proto, p.sport, p.dport);
                keys4.push(k);
                want4.push(want);
                (c.classify(&k), c.classify_after(&k, Priority(p.after)))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let k = PacketKey6::v6(s, d, p.proto, p.sport, p.dport);
                keys6.push(k);
                want6.push(want);
                (c.classify(&k), c.classify_after(&k, Priority(p.after)))
            }
            _ => unreachable!("probes keep one family"),
        };
        prop_assert_eq!(got, want, "{:?}", p);
        prop_assert_eq!(got_after, after, "after {:?}", p);
    }
    let mut out = vec![None; keys4.len()];
    c.classify_batch(&keys4, &mut out);
    prop_assert_eq!(&out, &want4);
    let mut out = vec![None; keys6.len()];
    c.classify_batch(&keys6, &mut out);
    prop_assert_eq!(&out, &want6);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn matches_linear_scan(ops in prop::collection::vec(op(), 1..80),
                           probes in prop::collection::vec(probe(), 40..80)) {
        let mut rs = RuleSet::new();
        let mut reference = Reference::default();
        // A snapshot published earlier, with the state it was taken in.
        let mut old = (rs.snapshot(), reference.clone());
        let mut job = None;
        for op in ops {
            match op {
                Op::Insert(rule) => {
                    let ok = reference.insert(rule.clone());
                    prop_assert_eq!(rs.insert(rule).is_ok(), ok);
                }
                Op::Remove(id) => {
                    let before = reference.rules.len();
                    reference.rules.retain(|r| r.id != RuleId(id));
                    prop_assert_eq!(rs.remove(RuleId(id)).is_ok(), reference.rules.len() < before);
                }
                Op::SetInsert(set, net) => {
                    let new = reference.sets.entry(set).or_default().insert(net);
                    prop_assert_eq!(rs.set_insert(set, net), new);
                }
                Op::SetRemove(set, net) => {
                    let gone = reference.sets.get_mut(&set).is_some_and(|s| s.remove(&net));
                    prop_assert_eq!(rs.set_remove(set, net), gone);
                }
                Op::Publish => {
                    check(&old.0, &old.1, &probes)?;
                    old = (rs.snapshot(), reference.clone());
                }
                Op::Compile => rs.compile(),
                Op::TakeJob => job = Some(rs.compile_job()),
                Op::Install => {
                    if let Some(j) = job.take() {
                        rs.install(j.run());
                    }
                }
            }
            check(&rs.snapshot(), &reference, &probes[..8])?;
        }
        check(&rs.snapshot(), &reference, &probes)?;
        check(&old.0, &old.1, &probes)?;
        // Emptying the rule set leaves no rows and no tables behind.
        for id in 0..40 {
            let _ = rs.remove(RuleId(id));
        }
        let s = rs.snapshot().stats();
        prop_assert_eq!((s.tables4, s.tables6, s.rows4, s.rows6), (0, 0, 0, 0));
    }
}

#[test]
fn snapshots_cross_threads() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Classifier>();
    let c = RuleSet::from_rules([Rule::new(RuleId(1), Priority(1), Action::Allow)])
        .unwrap()
        .snapshot();
    let worker = std::thread::spawn(move || c.classify(&PacketKey4::new(1, 2, 6, 3, 4)));
    assert_eq!(worker.join().unwrap().unwrap().rule, RuleId(1));
}

/// A deterministic generator for keys (splitmix64).
fn random_keys(n: usize, mut seed: u64) -> Vec<PacketKey4> {
    let mut next = move || {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let (a, b) = (next(), next());
            PacketKey4::new(
                a as u32,
                (a >> 32) as u32,
                [6, 17, 1, 47][(b & 3) as usize],
                (b >> 8) as u16,
                (b >> 24) as u16,
            )
        })
        .collect()
}

/// Every trace header (and random headers) through the classifier and the
/// linear scan; then again after deleting every third rule.
fn cross_check(set: &str) {
    let dir = classbench::data_dir();
    if !dir.join(set).exists() {
        eprintln!(
            "skipping {set}: no ClassBench data in {} (set CARACAL_CLASSBENCH)",
            dir.display()
        );
        return;
    }
    let rules = classbench::load_rules(&dir.join(set)).unwrap();
    let trace = classbench::load_trace(&dir.join(format!("{set}_trace"))).unwrap();
    let mut rs = RuleSet::from_rules(classbench::to_rules(&rules)).unwrap();
    let mut keys: Vec<PacketKey4> = trace.iter().map(|t| t.key).collect();
    keys.extend(random_keys(2000, 7));

    let compare = |c: &Classifier, live: &[(usize, BenchRule)]| {
        let mut out = vec![None; keys.len()];
        c.classify_batch(&keys, &mut out);
        for (k, got) in keys.iter().zip(&out) {
            let want = live
                .iter()
                .find(|(_, r)| r.matches(k))
                .map(|(i, _)| *i as u32);
            assert_eq!(got.map(|h| h.rule.0), want, "{set}: {k:?}");
        }
    };
    let all: Vec<(usize, BenchRule)> = rules.iter().copied().enumerate().collect();
    compare(&rs.snapshot(), &all);
    let full = rs.snapshot();
    for i in (0..rules.len()).step_by(3) {
        rs.remove(RuleId(i as u32)).unwrap();
    }
    let live: Vec<_> = all.iter().copied().filter(|(i, _)| i % 3 != 0).collect();
    compare(&rs.snapshot(), &live);
    compare(&full, &all);
    // The trace's own rule index is a match, just not always the first.
    for t in trace.iter().take(500) {
        assert!(rules[t.rule as usize].matches(&t.key), "{set}: {t:?}");
        assert_eq!(
            classbench::linear_scan(&rules, &t.key).map(|i| i <= t.rule as usize),
            Some(true)
        );
    }
}

#[test]
fn classbench_1k_sets_match_linear_scan() {
    for set in &classbench::SETS[..3] {
        cross_check(set);
    }
}

/// About a billion rule tests in a debug build: run with
/// `cargo test --release -p caracal-dataplane policy -- --ignored`; the
/// benchmark (`cargo bench -p caracal-perf --bench classify`) checks the
/// same on every run.
#[test]
#[ignore = "slow in debug builds; the classify bench checks the 10k sets"]
fn classbench_10k_sets_match_linear_scan() {
    for set in &classbench::SETS[3..] {
        cross_check(set);
    }
}

/// Tuning aid: per ClassBench set, the table count and the tables probed
/// and rows tested per lookup (trace and uniform headers), which predict
/// the cycles per lookup better than a noisy timing; then the compiled
/// forest: its trees' shapes, build time and memory, and the nodes walked
/// and leaf rows tested per lookup. With `POLICY_LAYOUT_TABLES=1`, every
/// table. Run with
/// `cargo test -p caracal-dataplane policy::tests::layout_report -- --ignored --nocapture`.
#[test]
#[ignore = "a report, not a check"]
fn layout_report() {
    let dir = classbench::data_dir();
    let tables = std::env::var_os("POLICY_LAYOUT_TABLES").is_some();
    for set in classbench::SETS {
        let Ok(rules) = classbench::load_rules(&dir.join(set)) else {
            continue;
        };
        let trace = classbench::load_trace(&dir.join(format!("{set}_trace"))).unwrap();
        let c = RuleSet::from_rules(classbench::to_rules(&rules))
            .unwrap()
            .snapshot();
        let random = random_keys(20_000, 3);
        // Mean tables probed and rows tested, with the batch's early exit.
        let cost = |keys: &[PacketKey4]| {
            let (mut probed, mut tested) = (0, 0);
            for k in keys {
                let best = c.classify(k).map_or(u32::MAX, |h| h.priority.0);
                for t in c.v4.space.tables.iter().take_while(|t| t.min_prio <= best) {
                    probed += 1;
                    tested += t.probe_cost(k);
                }
            }
            (
                probed as f64 / keys.len() as f64,
                tested as f64 / keys.len() as f64,
            )
        };
        let trace: Vec<_> = trace.iter().map(|t| t.key).collect();
        let (tp, tt) = cost(&trace);
        let (rp, rt) = cost(&random);
        println!(
            "{set:9} {:3} tables | trace: {tp:4.1} tables {tt:4.1} rows | uniform: {rp:4.1} tables {rt:4.1} rows",
            c.v4.space.tables.len()
        );
        forest_report(&c, &trace, &random);
        for t in c.v4.space.tables.iter().filter(|_| tables) {
            let mut groups = HashMap::new();
            for r in t.rows() {
                *groups.entry(t.masked(r)).or_insert(0) += 1;
            }
            let tested = random.iter().map(|k| t.probe_cost(k)).sum::<usize>();
            println!(
                "  {:?}: {} rows, best priority {}, {} keys, largest group {}, {:.2} rows/uniform key",
                t.tuple,
                t.len,
                t.min_prio,
                groups.len(),
                groups.values().max().unwrap_or(&0),
                tested as f64 / random.len() as f64
            );
        }
    }
}

/// The forest half of [`layout_report`].
fn forest_report(c: &Classifier, trace: &[PacketKey4], random: &[PacketKey4]) {
    use super::table::NO_MATCH;
    use super::tree::{words, Forest};
    let rows: Vec<_> =
        c.v4.space
            .tables
            .iter()
            .flat_map(|t| t.rows())
            .copied()
            .collect();
    let start = std::time::Instant::now();
    let forest = Forest::build(&rows, super::ruleset::forest_budget(rows.len())).unwrap();
    let built = start.elapsed();
    let cost = |keys: &[PacketKey4]| {
        let (mut nodes, mut rows) = (0, 0);
        for k in keys {
            let mut best = NO_MATCH;
            for t in forest.trees() {
                let (n, r) = t.walk_cost(&words(k), k, best);
                nodes += n;
                rows += r;
                if let Some(f) = t.lookup(k, best) {
                    best = f.row.prio;
                }
            }
        }
        (
            nodes as f64 / keys.len() as f64,
            rows as f64 / keys.len() as f64,
        )
    };
    let (tn, tr) = cost(trace);
    let (un, ur) = cost(random);
    println!(
        "          forest {:?} {:.1} ms {} KiB | trace: {tn:4.1} nodes {tr:4.1} rows | uniform: {un:4.1} nodes {ur:4.1} rows",
        forest.trees().iter().map(|t| t.shape()).collect::<Vec<_>>(),
        built.as_secs_f64() * 1e3,
        forest.memory_bytes() / 1024
    );
}
