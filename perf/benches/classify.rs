//! Bench of the policy classifier (`caracal_dataplane::policy`) on the
//! ClassBench rule sets acl1/fw1/ipc1 at 1k and 10k rules: lookups per
//! second and TSC cycles per lookup in batches of 64 (the given trace, the
//! trace shuffled, and uniformly random headers — traces have strong
//! locality and flatter caches), build time (the tuple space, rule by
//! rule) and compile time (the decision forest), memory, the tuple space's
//! own cycles on the trace before the compile (`TS cyc`), the cycles of
//! one trace key looked up over and over (`1-key`: the walk with
//! everything in L1), and the time to
//! delete a random rule and insert it again, publishing a snapshot after
//! every edit while the previous snapshot is still held (as a worker
//! would): mean per delete, per insert, and the 99th percentile of both.
//! Every set is first checked against a linear scan (the whole trace and
//! as many uniform headers), and again after the edits.
//!
//! Run: `cargo bench -p caracal-perf --bench classify [-- SET_FILTER]`;
//! `CARACAL_BENCH_QUICK=1` (or `-- --quick`) for a short run. The data
//! folder is `$CARACAL_CLASSBENCH` (default `shared/classbench` beside the repository).
//!
//! A custom timing loop (`harness = false`) rather than criterion: the
//! figures wanted are cycles per lookup and per-edit latencies, printed as
//! one table.

use caracal_dataplane::worker::cycles as tsc;
use std::hint::black_box;
use std::time::{Duration, Instant};

use caracal_dataplane::policy::classbench::{self, BenchRule};
use caracal_dataplane::policy::{Classifier, Hit, PacketKey4, RuleId, RuleSet};
use caracal_perf::peers::uniform_key;
use caracal_perf::rng::Rng;

const BATCH: usize = 64;

struct Opts {
    quick: bool,
    filter: Option<String>,
}

impl Opts {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("CARACAL_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
        Opts { quick, filter }
    }

    /// How long each lookup figure is measured.
    fn lookup_time(&self) -> Duration {
        Duration::from_millis(if self.quick { 60 } else { 1000 })
    }

    /// Delete + insert pairs timed per set.
    fn updates(&self) -> usize {
        if self.quick {
            200
        } else {
            5000
        }
    }

    /// Trace headers checked against the linear scan.
    fn checked(&self) -> usize {
        if self.quick {
            5_000
        } else {
            usize::MAX
        }
    }
}

/// (TSC cycles per lookup, million lookups per second) over `keys` in
/// batches of [`BATCH`]: the best of [`ROUNDS`] rounds of at least
/// `time / ROUNDS` each (the best round is the one the other tenants of a
/// shared machine disturbed least).
fn lookups(c: &Classifier, keys: &[PacketKey4], time: Duration) -> (f64, f64) {
    const ROUNDS: u32 = 5;
    let mut out = [None::<Hit>; BATCH];
    let mut pass = || {
        for chunk in keys.chunks_exact(BATCH) {
            c.classify_batch(black_box(chunk), &mut out);
            black_box(&out);
        }
    };
    pass(); // warm up
    let per_pass = keys.len() / BATCH * BATCH;
    let mut best = (f64::MAX, 0.0);
    for _ in 0..ROUNDS {
        let (t0, c0) = (Instant::now(), tsc());
        let mut n = 0usize;
        while t0.elapsed() < time / ROUNDS {
            pass();
            n += per_pass;
        }
        let (secs, cycles) = (t0.elapsed().as_secs_f64(), tsc() - c0);
        let cyc = cycles as f64 / n as f64;
        if cyc < best.0 {
            best = (cyc, n as f64 / secs / 1e6);
        }
    }
    best
}

/// Panics unless the classifier agrees with a linear scan on every key.
fn check(set: &str, c: &Classifier, rules: &[BenchRule], keys: &[PacketKey4]) {
    let mut out = vec![None; keys.len()];
    c.classify_batch(keys, &mut out);
    for (k, got) in keys.iter().zip(&out) {
        let want = classbench::linear_scan(rules, k).map(|i| RuleId(i as u32));
        assert_eq!(got.map(|h| h.rule), want, "{set}: wrong verdict for {k:?}");
    }
}

fn run(set: &str, opts: &Opts) {
    let dir = classbench::data_dir();
    let rules = classbench::load_rules(&dir.join(set)).unwrap_or_else(|e| panic!("{e}"));
    let trace =
        classbench::load_trace(&dir.join(format!("{set}_trace"))).unwrap_or_else(|e| panic!("{e}"));
    let policy = classbench::to_rules(&rules);
    let mut rng = Rng(0x5eed ^ rules.len() as u64);

    // Build: every rule inserted one by one, then published.
    let mut build = Duration::MAX;
    let mut rs = RuleSet::new();
    for _ in 0..if opts.quick { 1 } else { 3 } {
        let t = Instant::now();
        rs = RuleSet::from_rules(policy.iter().cloned()).expect("valid rules");
        black_box(rs.snapshot());
        build = build.min(t.elapsed());
    }
    let tuple_space = rs.snapshot();
    let t = Instant::now();
    rs.compile();
    let compile = t.elapsed();
    let c = rs.snapshot();
    let stats = c.stats();

    let trace_keys: Vec<PacketKey4> = trace.iter().map(|t| t.key).collect();
    let mut shuffled = trace_keys.clone();
    rng.shuffle(&mut shuffled);
    let random: Vec<PacketKey4> = (0..trace_keys.len().max(BATCH))
        .map(|_| uniform_key(&mut rng))
        .collect();
    let checked = opts.checked().min(trace_keys.len());
    for c in [&tuple_space, &c] {
        check(set, c, &rules, &shuffled[..checked]);
        check(set, c, &rules, &random[..checked.min(random.len())]);
    }

    let time = opts.lookup_time();
    let (tss_cyc, _) = lookups(&tuple_space, &trace_keys, time);
    drop(tuple_space);
    let (trace_cyc, trace_m) = lookups(&c, &trace_keys, time);
    // One key over and over: the walk's cost with everything in L1.
    let (hot_cyc, _) = lookups(&c, &vec![trace_keys[0]; BATCH * 64], time);
    let (shuf_cyc, shuf_m) = lookups(&c, &shuffled, time);
    let (rand_cyc, rand_m) = lookups(&c, &random, time);

    // Edits: delete a random rule and insert it again, publishing after
    // each edit while a worker still holds the previous snapshot.
    let mut held = rs.snapshot();
    let (mut del, mut ins) = (Vec::new(), Vec::new());
    for _ in 0..opts.updates() {
        let id = RuleId(rng.below(policy.len()) as u32);
        let t = Instant::now();
        let rule = rs.remove(id).expect("rule present");
        held = rs.snapshot();
        black_box(&held);
        del.push(t.elapsed());
        let t = Instant::now();
        rs.insert(rule).expect("reinsert");
        held = rs.snapshot();
        black_box(&held);
        ins.push(t.elapsed());
    }
    drop(held);
    check(
        set,
        &rs.snapshot(),
        &rules,
        &shuffled[..checked.min(20_000)],
    );
    let mean = |d: &[Duration]| d.iter().sum::<Duration>().as_secs_f64() * 1e6 / d.len() as f64;
    let mut all: Vec<Duration> = del.iter().chain(&ins).copied().collect();
    all.sort_unstable();
    let p99 = all[all.len() * 99 / 100].as_secs_f64() * 1e6;

    println!(
        "{set:<9} {:>5} {:>4} {:>3} {:>7.0} {:>7.1} {:>7.1} | {:>6.0} | {:>5.0} | {:>6.0} {:>6.1} | {:>6.0} {:>6.1} | {:>6.0} {:>6.1} | {:>5.2} {:>5.2} {:>6.0}",
        rules.len(),
        stats.tables4,
        stats.trees,
        stats.memory_bytes as f64 / 1024.0,
        build.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e3,
        tss_cyc,
        hot_cyc,
        trace_cyc,
        trace_m,
        shuf_cyc,
        shuf_m,
        rand_cyc,
        rand_m,
        mean(&del),
        mean(&ins),
        p99,
    );
}

fn main() {
    let opts = Opts::from_env();
    let dir = classbench::data_dir();
    if !dir.join(classbench::SETS[0]).exists() {
        println!(
            "classify: no ClassBench data in {} (set CARACAL_CLASSBENCH); skipped",
            dir.display()
        );
        return;
    }
    println!(
        "policy classifier, batches of {BATCH}, one core{}; cyc = TSC cycles/lookup, M/s = million lookups/s",
        if opts.quick { " (quick run)" } else { "" }
    );
    println!(
        "{:<9} {:>5} {:>4} {:>3} {:>7} {:>7} {:>7} | {:>6} | {:>5} | {:>13} | {:>13} | {:>13} | {:>5} {:>5} {:>6}",
        "set",
        "rules",
        "tabl",
        "tre",
        "mem KiB",
        "buildms",
        "compms",
        "TS cyc",
        "1-key",
        "trace cyc M/s",
        "shuf. cyc M/s",
        "random cyc M/s",
        "del µs",
        "ins µs",
        "p99 µs"
    );
    for set in classbench::SETS {
        if opts.filter.as_deref().is_none_or(|f| set.contains(f)) {
            run(set, &opts);
        }
    }
}
