//! Caracal against DPDK, with criterion: the policy classifier against
//! `rte_acl` on ClassBench acl1 (1k rules, its trace, batches of 64), and
//! the LPM trie against `rte_lpm` and `rte_lpm6` (100k random routes from
//! `peers::random_routes`, addresses inside them, batches of 64). Both
//! sides run in the same process on the same keys; the throughput lines
//! are lookups per second.
//!
//! Run: `cargo bench -p caracal-perf --bench peers` (as root: DPDK's EAL
//! starts without hugepages). The fuller comparison — every ClassBench
//! set, cycles per lookup, build and edit times, memory, a million routes
//! — is `caracal_perf::peers`, which the comparison harness runs.

use std::hint::black_box;

use caracal_dataplane::policy::classbench;
use caracal_dataplane::policy::{PacketKey4, RuleSet};
use caracal_dataplane::tables::lpm::{Lpm, LpmKey};
use caracal_dpdk_sys::{AclContext, AclKey, Eal, Lpm4, Lpm6};
use caracal_perf::peers::{self, Family, Route, RouteSet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 64;
const ROUTES: usize = 100_000;

fn eal() -> &'static Eal {
    Eal::init().unwrap_or_else(|e| panic!("{e}"))
}

fn classifier(c: &mut Criterion) {
    let dir = classbench::data_dir();
    let rules = classbench::load_rules(&dir.join("acl1_1k")).unwrap_or_else(|e| panic!("{e}"));
    let trace =
        classbench::load_trace(&dir.join("acl1_1k_trace")).unwrap_or_else(|e| panic!("{e}"));
    let n = rules.len();
    let mut ours = RuleSet::from_rules(classbench::to_rules(&rules)).expect("valid rules");
    ours.compile();
    let ours = ours.snapshot();
    let mut acl = AclContext::new(eal(), n).expect("rte_acl context");
    let acl_rules: Vec<_> = (0..n).map(|i| peers::acl_rule(&rules[i], i, n)).collect();
    acl.build(&acl_rules).expect("rte_acl build");
    let keys: Vec<PacketKey4> = trace.iter().map(|t| t.key).collect();
    let acl_keys: Vec<AclKey> = keys.iter().map(peers::acl_key).collect();
    let per_pass = keys.len() / BATCH * BATCH;

    let mut g = c.benchmark_group(format!(
        "classify acl1_1k trace, batches of {BATCH} (rte_acl {})",
        acl.algorithm().name()
    ));
    g.throughput(Throughput::Elements(per_pass as u64));
    g.bench_function("caracal", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in keys.chunks_exact(BATCH) {
                ours.classify_batch(black_box(chunk), &mut out);
                black_box(&out);
            }
        });
    });
    g.bench_function("rte_acl", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in acl_keys.chunks_exact(BATCH) {
                acl.classify(black_box(chunk), &mut out).expect("built");
                black_box(&out);
            }
        });
    });
    g.finish();
}

/// An address inside each route (its prefix over hashed host bits).
fn covered<A: LpmKey + std::ops::BitOr<Output = A> + std::ops::BitXor<Output = A>>(
    routes: &[Route<A>],
    spread: impl Fn(A) -> A,
) -> Vec<A> {
    routes
        .iter()
        .map(|r| {
            let host = spread(r.prefix);
            r.prefix | (host ^ host.mask(r.len))
        })
        .collect()
}

fn lpm(c: &mut Criterion) {
    let RouteSet::V4(routes4) = peers::random_routes(Family::V4, ROUTES, 1) else {
        unreachable!("asked for IPv4")
    };
    let mut ours4 = Lpm::<u32>::new();
    let mut dpdk4 = Lpm4::new(eal(), ROUTES, peers::tbl8_groups(&routes4) + 256).expect("rte_lpm");
    for r in &routes4 {
        ours4.insert(r.prefix, r.len, r.next_hop);
        dpdk4.add(r.prefix, r.len, r.next_hop).expect("rte_lpm_add");
    }
    let addrs4 = covered(&routes4, |p| p.wrapping_mul(0x9e37_79b1).rotate_left(13));

    let mut g = c.benchmark_group(format!(
        "lpm4 {ROUTES} routes, covered addresses, batches of {BATCH}"
    ));
    g.throughput(Throughput::Elements((addrs4.len() / BATCH * BATCH) as u64));
    g.bench_function("caracal", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in addrs4.chunks_exact(BATCH) {
                for (o, &a) in out.iter_mut().zip(black_box(chunk)) {
                    *o = ours4.lookup(a);
                }
                black_box(&out);
            }
        });
    });
    g.bench_function("rte_lpm", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in addrs4.chunks_exact(BATCH) {
                dpdk4.lookup_bulk(black_box(chunk), &mut out);
                black_box(&out);
            }
        });
    });
    g.finish();

    let RouteSet::V6(routes6) = peers::random_routes(Family::V6, ROUTES, 1) else {
        unreachable!("asked for IPv6")
    };
    let mut ours6 = Lpm::<u128>::new();
    let mut dpdk6 = Lpm6::new(eal(), ROUTES, peers::tbl8_groups(&routes6) + 256).expect("rte_lpm6");
    for r in &routes6 {
        ours6.insert(r.prefix, r.len, r.next_hop);
        dpdk6
            .add(&r.prefix.to_be_bytes(), r.len, r.next_hop)
            .expect("rte_lpm6_add");
    }
    let addrs6 = covered(&routes6, |p| {
        p.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            .rotate_left(29)
    });
    let bytes6: Vec<[u8; 16]> = addrs6.iter().map(|a| a.to_be_bytes()).collect();

    let mut g = c.benchmark_group(format!(
        "lpm6 {ROUTES} routes, covered addresses, batches of {BATCH}"
    ));
    g.throughput(Throughput::Elements((addrs6.len() / BATCH * BATCH) as u64));
    g.bench_function("caracal", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in addrs6.chunks_exact(BATCH) {
                for (o, &a) in out.iter_mut().zip(black_box(chunk)) {
                    *o = ours6.lookup(a);
                }
                black_box(&out);
            }
        });
    });
    g.bench_function("rte_lpm6", |b| {
        let mut out = [None; BATCH];
        b.iter(|| {
            for chunk in bytes6.chunks_exact(BATCH) {
                dpdk6.lookup_bulk(black_box(chunk), &mut out);
                black_box(&out);
            }
        });
    });
    g.finish();
}

criterion_group! {
    name = peers_benches;
    config = Criterion::default().sample_size(20);
    targets = classifier, lpm
}
criterion_main!(peers_benches);
