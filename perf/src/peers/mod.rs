//! Side-by-side comparisons with DPDK, for the comparison harness and the
//! `peers` bench: Caracal's policy classifier against `rte_acl`
//! ([`classifier`]) and Caracal's LPM trie against `rte_lpm` / `rte_lpm6`
//! ([`lpm`]), both sides measured in the same process, on the same core,
//! over the same keys, in the same batches.
//!
//! Every comparison is also a correctness test: it counts the keys on
//! which the two sides disagree (and, for the classifier, those on which
//! either disagrees with a linear scan of the rules) and reports them in
//! its result; the tests assert they are 0.
//!
//! Lookup figures are TSC cycles per lookup and million lookups per
//! second on one core, the best of [`ROUNDS`] rounds: the round the other
//! tenants of a shared machine disturbed least. Each side gets its keys
//! in its own native form, converted beforehand, so neither pays for
//! conversion in the timed loop. DPDK's inline lookups are reached
//! through a C shim (one call per batch), and `rte_acl` through a safe
//! wrapper that builds its array of key pointers per batch, as a DPDK
//! application does from its mbufs.
//!
//! The DPDK side runs under an EAL started without hugepages
//! ([`caracal_dpdk_sys::Eal::init`]); with hugepages DPDK's tables would
//! take fewer TLB misses, which favours it on the large LPM tables.

mod classifier;
mod lpm;

use std::hint::black_box;
use std::time::{Duration, Instant};

use caracal_dataplane::policy::classbench::LoadError;
use caracal_dataplane::policy::PolicyError;
use caracal_dpdk_sys::{rdtsc, DpdkError};

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

pub use classifier::{
    acl_key, acl_rule, classifier, uniform_key, ClassifierComparison, ClassifierFigures, SETS,
    SIZES,
};
pub use lpm::{
    lpm, random_routes, tbl8_groups, Family, LpmComparison, LpmFigures, Route, RouteSet,
};

/// Rounds per lookup figure; the best one is reported.
pub const ROUNDS: u32 = 5;

/// How long and how thoroughly to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opts {
    /// Fewer rounds of edits and rebuilds and shorter lookup timings, for
    /// the harness's `--quick` mode and the tests.
    pub quick: bool,
    /// Time spent on each lookup figure (one side, one workload, one
    /// batch size), split over [`ROUNDS`] rounds.
    pub duration: Duration,
    /// Batch sizes to measure lookups in (keys per call).
    pub batches: Vec<usize>,
}

impl Opts {
    /// Full measurement: 1 s per figure, batches of 64 and 256.
    pub fn full() -> Self {
        Opts {
            quick: false,
            duration: Duration::from_secs(1),
            batches: vec![64, 256],
        }
    }

    /// A short run: 20 ms per figure.
    pub fn quick() -> Self {
        Opts {
            quick: true,
            duration: Duration::from_millis(20),
            ..Opts::full()
        }
    }

    /// Our classifier's delete + insert pairs timed.
    fn edits(&self) -> usize {
        if self.quick {
            200
        } else {
            2000
        }
    }

    /// `rte_acl` rebuilds timed per kind of edit (each can take seconds
    /// at 10k rules).
    fn rebuilds(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }

    /// Keys per lookup workload beyond the trace (uniform headers, LPM
    /// addresses).
    fn keys(&self) -> usize {
        if self.quick {
            1 << 16
        } else {
            1 << 20
        }
    }

    /// Keys also checked against a linear scan of the rules.
    fn reference_keys(&self) -> usize {
        if self.quick {
            2_000
        } else {
            20_000
        }
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts::full()
    }
}

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(
        "no ClassBench set {set:?} of {size} rules (sets: acl1, fw1, ipc1; sizes: 1000, 10000)"
    )]
    UnknownSet { set: String, size: usize },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("DPDK: {0}")]
    Dpdk(#[from] DpdkError),
    #[error("Caracal classifier: {0}")]
    Policy(#[from] PolicyError),
}

/// Lookup speed of one side on one workload in one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupFigure {
    /// Which keys: `trace`, `shuffled` or `uniform` for the classifier;
    /// `uniform` or `covered` for the LPM.
    pub workload: String,
    /// Keys per call.
    pub batch: usize,
    /// TSC cycles per lookup.
    pub cycles_per_lookup: f64,
    /// Million lookups per second on one core.
    pub mlookups_per_sec: f64,
}

/// Latency of one kind of rule-set edit, as the caller sees it until the
/// new rules are what lookups use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateFigure {
    /// `incremental` (one rule changed in place, snapshot published) or
    /// `rebuild` (every rule compiled again).
    pub method: String,
    pub samples: usize,
    pub mean_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl UpdateFigure {
    fn new(method: &str, mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let n = times.len();
        UpdateFigure {
            method: method.to_owned(),
            samples: n,
            mean_us: if n == 0 {
                0.0
            } else {
                us(times.iter().sum::<Duration>()) / n as f64
            },
            p99_us: times.get(n * 99 / 100).copied().map_or(0.0, us),
            max_us: times.last().copied().map_or(0.0, us),
        }
    }
}

/// Times `pass` (which looks up `per_pass` keys) for `duration`, in
/// [`ROUNDS`] rounds after one warm-up pass: (cycles per key, million keys
/// per second) of the best round.
fn measure(duration: Duration, per_pass: usize, mut pass: impl FnMut()) -> (f64, f64) {
    pass();
    let round = duration / ROUNDS;
    let mut best = (f64::MAX, 0.0);
    for _ in 0..ROUNDS {
        let (t0, c0) = (Instant::now(), rdtsc());
        let mut n = 0usize;
        loop {
            pass();
            n += per_pass;
            if t0.elapsed() >= round {
                break;
            }
        }
        let (secs, cycles) = (t0.elapsed().as_secs_f64(), rdtsc() - c0);
        let cyc = cycles as f64 / n as f64;
        if cyc < best.0 {
            best = (cyc, n as f64 / secs / 1e6);
        }
    }
    best
}

/// A lookup figure of `lookup` over `keys` in batches of `batch` (the
/// keys that fill a last, partial batch are left out).
fn lookup_figure<K, R: Copy + Default>(
    workload: &str,
    batch: usize,
    duration: Duration,
    keys: &[K],
    mut lookup: impl FnMut(&[K], &mut [R]),
) -> LookupFigure {
    let mut out = vec![R::default(); batch];
    let per_pass = keys.len() / batch * batch;
    assert!(per_pass > 0, "fewer keys than one batch");
    let (cycles_per_lookup, mlookups_per_sec) = measure(duration, per_pass, || {
        for chunk in keys.chunks_exact(batch) {
            lookup(black_box(chunk), &mut out);
            black_box(&out);
        }
    });
    LookupFigure {
        workload: workload.to_owned(),
        batch,
        cycles_per_lookup,
        mlookups_per_sec,
    }
}

/// Wall time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both comparisons run and both sides agree on every key. (Times
    /// are not asserted: they depend on the machine and its load.)
    #[test]
    fn classifier_acl1_1k_agrees_with_rte_acl() {
        let r = classifier("acl1", 1000, &Opts::quick()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.rules, 942);
        assert!(r.compared >= 2 * r.trace_headers, "{r:?}");
        assert_eq!(r.mismatches, 0, "{r:?}");
        assert!(r.reference_checked > 0);
        assert_eq!(r.reference_mismatches_caracal, 0, "{r:?}");
        assert_eq!(r.reference_mismatches_rte_acl, 0, "{r:?}");
        assert_eq!(r.caracal.lookups.len(), 3 * Opts::quick().batches.len());
        assert_eq!(r.rte_acl.lookups.len(), r.caracal.lookups.len());
        assert_eq!(r.rte_acl.delete.method, "rebuild");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"rte_acl_algorithm\""), "{json}");
    }

    #[test]
    fn lpm_v4_agrees_with_rte_lpm() {
        let r = lpm(Family::V4, 100_000, &Opts::quick()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.prefixes, 100_000);
        assert!(r.compared > 0);
        assert_eq!(r.mismatches, 0, "{r:?}");
        assert!(r.hits > r.compared / 4, "covered addresses hit: {r:?}");
        serde_json::to_string(&r).unwrap();
    }

    #[test]
    fn lpm_v6_agrees_with_rte_lpm6() {
        let r = lpm(Family::V6, 20_000, &Opts::quick()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.mismatches, 0, "{r:?}");
        assert!(r.hits > r.compared / 4, "covered addresses hit: {r:?}");
    }

    /// The figures: every ClassBench set and a million routes of each
    /// family, printed as JSON lines. `CARACAL_PEERS_QUICK=1` for a short
    /// run. Measure in release:
    /// `cargo test --release -p caracal-perf --lib peers::tests::report -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a test: minutes in release"]
    fn report() {
        let quick = std::env::var("CARACAL_PEERS_QUICK").is_ok_and(|v| v != "0");
        let opts = if quick { Opts::quick() } else { Opts::full() };
        for size in SIZES {
            for set in SETS {
                let r = classifier(set, size, &opts).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.mismatches, 0, "{r:?}");
                println!("{}", serde_json::to_string(&r).unwrap());
            }
        }
        for family in [Family::V4, Family::V6] {
            let r = lpm(family, 1_000_000, &opts).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.mismatches, 0, "{r:?}");
            println!("{}", serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn unknown_set() {
        assert!(matches!(
            classifier("acl2", 1000, &Opts::quick()),
            Err(PeerError::UnknownSet { .. })
        ));
    }
}
