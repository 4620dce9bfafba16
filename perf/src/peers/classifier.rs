//! Caracal's policy classifier against `rte_acl` on the ClassBench rule
//! sets: lookup cycles in batches, build time, memory, and the cost of an
//! edit — incremental for ours, a full rebuild for `rte_acl`, which has
//! no other way to change a rule.
//!
//! Rule `i` of a set (0-based, first match wins) is our rule with id and
//! priority `i`, and the `rte_acl` rule with priority `n - i` (highest
//! wins) and userdata `i + 1`; both verdicts map back to `i`.

use std::num::NonZeroU32;
use std::time::Duration;

use caracal_dataplane::policy::classbench::{self, BenchRule};
use caracal_dataplane::policy::{Classifier, Hit, PacketKey4, RuleId, RuleSet};
use caracal_dpdk_sys::{AclContext, AclKey, AclRule, Eal};
use serde::{Deserialize, Serialize};

use super::{lookup_figure, timed, LookupFigure, Opts, PeerError, Rng, UpdateFigure};

/// The ClassBench families the data folder holds.
pub const SETS: [&str; 3] = ["acl1", "fw1", "ipc1"];
/// Their sizes (nominal rule counts; the files hold a little fewer after
/// ClassBench's de-duplication).
pub const SIZES: [usize; 2] = [1000, 10_000];

/// Both classifiers on one rule set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierComparison {
    /// The rule-set file, e.g. `acl1_1k`.
    pub set: String,
    pub rules: usize,
    pub trace_headers: usize,
    pub tsc_hz: u64,
    pub quick: bool,
    /// The `rte_acl` classify code path measured (its default for this
    /// CPU), e.g. `avx512x32`.
    pub rte_acl_algorithm: String,
    pub caracal: ClassifierFigures,
    pub rte_acl: ClassifierFigures,
    /// Keys both classified (every workload, and the trace again after
    /// the edits), and those on which their verdicts differ.
    pub compared: usize,
    pub mismatches: usize,
    /// Keys also checked against a linear scan of the rules, and each
    /// side's disagreements with it.
    pub reference_checked: usize,
    pub reference_mismatches_caracal: usize,
    pub reference_mismatches_rte_acl: usize,
}

/// One classifier's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierFigures {
    /// From the rules to a classifier ready for lookups, ms.
    pub build_ms: f64,
    /// Bytes of the lookup structure (for `rte_acl`: DPDK heap bytes of
    /// the context, its rule array included).
    pub memory_bytes: usize,
    /// Per workload (`trace`, `shuffled`, `uniform`) and batch size.
    pub lookups: Vec<LookupFigure>,
    /// Removing one rule, and adding it back.
    pub delete: UpdateFigure,
    pub insert: UpdateFigure,
}

/// The `rte_acl` form of ClassBench rule `index` of `count`.
pub fn acl_rule(rule: &BenchRule, index: usize, count: usize) -> AclRule {
    assert!(index < count && count < caracal_dpdk_sys::ACL_MAX_PRIORITY as usize);
    AclRule {
        proto: rule.proto,
        proto_mask: rule.proto_mask,
        src: rule.src.addr(),
        src_len: rule.src.prefix_len(),
        dst: rule.dst.addr(),
        dst_len: rule.dst.prefix_len(),
        sport: rule.sport.lo..=rule.sport.hi,
        dport: rule.dport.lo..=rule.dport.hi,
        priority: (count - index) as u32,
        userdata: NonZeroU32::new(index as u32 + 1).expect("index + 1 > 0"),
    }
}

/// The `rte_acl` form of a packet key.
pub fn acl_key(k: &PacketKey4) -> AclKey {
    AclKey::new(k.proto, k.src, k.dst, k.sport, k.dport)
}

/// The rule-set file of `set` at `size` rules.
fn set_name(set: &str, size: usize) -> Result<String, PeerError> {
    let suffix = match size {
        1000 => "1k",
        10_000 => "10k",
        _ => "",
    };
    if suffix.is_empty() || !SETS.contains(&set) {
        return Err(PeerError::UnknownSet {
            set: set.to_owned(),
            size,
        });
    }
    Ok(format!("{set}_{suffix}"))
}

/// Uniform addresses and ports; protocol TCP, UDP, ICMP or random.
pub fn uniform_key(rng: &mut Rng) -> PacketKey4 {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    let proto = match b & 3 {
        0 => 6,
        1 => 17,
        2 => 1,
        _ => (b >> 56) as u8,
    };
    PacketKey4::new(
        a as u32,
        (a >> 32) as u32,
        proto,
        (b >> 8) as u16,
        (b >> 24) as u16,
    )
}

/// Rule indexes of our verdicts.
fn ours(c: &Classifier, keys: &[PacketKey4]) -> Vec<Option<u32>> {
    let mut out = vec![None::<Hit>; keys.len()];
    c.classify_batch(keys, &mut out);
    out.iter().map(|h| h.map(|h| h.rule.0)).collect()
}

/// Rule indexes of `rte_acl`'s verdicts.
fn theirs(acl: &AclContext, keys: &[AclKey]) -> Result<Vec<Option<u32>>, PeerError> {
    let mut out = vec![None; keys.len()];
    acl.classify(keys, &mut out)?;
    Ok(out.iter().map(|u| u.map(|u| u.get() - 1)).collect())
}

fn differences(a: &[Option<u32>], b: &[Option<u32>]) -> usize {
    a.iter().zip(b).filter(|(a, b)| a != b).count()
}

/// Our classifier and `rte_acl` on ClassBench set `set` (`acl1`, `fw1`,
/// `ipc1`) of `size` rules (1000 or 10 000), with its trace, the trace
/// shuffled, and as many uniform headers (traces have strong locality and
/// flatter caches).
pub fn classifier(set: &str, size: usize, opts: &Opts) -> Result<ClassifierComparison, PeerError> {
    let name = set_name(set, size)?;
    let eal = Eal::init()?;
    let dir = classbench::data_dir();
    let bench_rules = classbench::load_rules(&dir.join(&name))?;
    let trace = classbench::load_trace(&dir.join(format!("{name}_trace")))?;
    let n = bench_rules.len();
    let policy = classbench::to_rules(&bench_rules);
    let acl_rules: Vec<AclRule> = (0..n).map(|i| acl_rule(&bench_rules[i], i, n)).collect();

    let mut rng = Rng(0x5eed ^ n as u64);
    let trace_keys: Vec<PacketKey4> = trace.iter().map(|t| t.key).collect();
    let mut shuffled = trace_keys.clone();
    rng.shuffle(&mut shuffled);
    let uniform: Vec<PacketKey4> = (0..trace_keys.len())
        .map(|_| uniform_key(&mut rng))
        .collect();
    let workloads: [(&str, &[PacketKey4]); 3] = [
        ("trace", &trace_keys),
        ("shuffled", &shuffled),
        ("uniform", &uniform),
    ];
    let acl_workloads: Vec<(&str, Vec<AclKey>)> = workloads
        .iter()
        .map(|(w, keys)| (*w, keys.iter().map(acl_key).collect()))
        .collect();

    // Build: ours inserts every rule, compiles its decision trees and
    // publishes a snapshot; rte_acl creates a context, adds the rules and
    // compiles them.
    let (rs, our_build) = timed(|| {
        RuleSet::from_rules(policy.iter().cloned()).map(|mut rs| {
            rs.compile();
            std::hint::black_box(rs.snapshot());
            rs
        })
    });
    let mut rs = rs?;
    let c = rs.snapshot();
    let (acl, acl_build) =
        timed(|| AclContext::new(eal, n).and_then(|mut acl| acl.build(&acl_rules).map(|()| acl)));
    let mut acl = acl?;

    // Agreement on every key of every workload, and with a linear scan
    // on a sample.
    let (mut compared, mut mismatches) = (0, 0);
    for ((_, keys), (_, acl_keys)) in workloads.iter().zip(&acl_workloads) {
        let (a, b) = (ours(&c, keys), theirs(&acl, acl_keys)?);
        compared += keys.len();
        mismatches += differences(&a, &b);
    }
    let sample: Vec<PacketKey4> = shuffled
        .iter()
        .take(opts.reference_keys() / 2)
        .chain(uniform.iter().take(opts.reference_keys() / 2))
        .copied()
        .collect();
    let reference: Vec<Option<u32>> = sample
        .iter()
        .map(|k| classbench::linear_scan(&bench_rules, k).map(|i| i as u32))
        .collect();
    let sample_acl: Vec<AclKey> = sample.iter().map(acl_key).collect();
    let reference_mismatches_caracal = differences(&ours(&c, &sample), &reference);
    let reference_mismatches_rte_acl = differences(&theirs(&acl, &sample_acl)?, &reference);

    // Lookups.
    let mut our_lookups = Vec::new();
    let mut acl_lookups = Vec::new();
    for ((w, keys), (_, acl_keys)) in workloads.iter().zip(&acl_workloads) {
        for &batch in &opts.batches {
            our_lookups.push(lookup_figure(
                w,
                batch,
                opts.duration,
                keys,
                |k, out: &mut [Option<Hit>]| c.classify_batch(k, out),
            ));
            acl_lookups.push(lookup_figure(
                w,
                batch,
                opts.duration,
                acl_keys,
                |k, out: &mut [Option<NonZeroU32>]| {
                    acl.classify(k, out).expect("built context");
                },
            ));
        }
    }
    let caracal_memory = c.stats().memory_bytes;
    let acl_memory = acl.memory_bytes();
    drop(c);

    // Edits. Ours: delete a random rule and insert it again, publishing a
    // snapshot after each edit while the previous one is still held (as a
    // worker would hold it). rte_acl: compile the rules without it, then
    // with it again.
    let mut held = rs.snapshot();
    let (mut del, mut ins) = (Vec::new(), Vec::new());
    for _ in 0..opts.edits() {
        let id = RuleId(rng.below(n) as u32);
        let (rule, t) = timed(|| {
            let rule = rs.remove(id);
            held = rs.snapshot();
            rule
        });
        let rule = rule?;
        del.push(t);
        let (r, t) = timed(|| {
            let r = rs.insert(rule);
            held = rs.snapshot();
            r
        });
        r?;
        ins.push(t);
    }
    drop(held);
    let (mut acl_del, mut acl_ins) = (Vec::new(), Vec::new());
    let mut without = acl_rules.clone();
    for _ in 0..opts.rebuilds() {
        let i = rng.below(n);
        let removed = without.remove(i);
        let (r, t) = timed(|| acl.build(&without));
        r?;
        acl_del.push(t);
        without.insert(i, removed);
        let (r, t) = timed(|| acl.build(&without));
        r?;
        acl_ins.push(t);
    }

    // Both again on the trace, after the edits.
    let c = rs.snapshot();
    let a = ours(&c, &trace_keys);
    let b = theirs(&acl, &acl_workloads[0].1)?;
    compared += trace_keys.len();
    mismatches += differences(&a, &b);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(ClassifierComparison {
        set: name,
        rules: n,
        trace_headers: trace_keys.len(),
        tsc_hz: eal.tsc_hz(),
        quick: opts.quick,
        rte_acl_algorithm: acl.algorithm().name().to_owned(),
        caracal: ClassifierFigures {
            build_ms: ms(our_build),
            memory_bytes: caracal_memory,
            lookups: our_lookups,
            delete: UpdateFigure::new("incremental", del),
            insert: UpdateFigure::new("incremental", ins),
        },
        rte_acl: ClassifierFigures {
            build_ms: ms(acl_build),
            memory_bytes: acl_memory,
            lookups: acl_lookups,
            delete: UpdateFigure::new("rebuild", acl_del),
            insert: UpdateFigure::new("rebuild", acl_ins),
        },
        compared,
        mismatches,
        reference_checked: sample.len(),
        reference_mismatches_caracal,
        reference_mismatches_rte_acl,
    })
}
