//! Criterion bench of the flow table (conntrack) on one core.
//!
//! - `lookup-hit`: established flows (half of them seen from the reply
//!   side) looked up in vectors of 256 with the staged `lookup_batch`, at
//!   10 000 and 1 000 000 flows;
//! - `lookup-single`: the same keys one `lookup` at a time (no staging),
//!   to show what the prefetching buys;
//! - `lookup-track`: a vector lookup plus per-packet tracking (counters,
//!   TCP state, idle timer) of every hit;
//! - `miss-insert`: vectors of new flows: the lookup misses, then inserts;
//! - `sweep`: one housekeeping pass over a table of 1 000 000 flows.
//!
//! Before criterion's numbers it prints TSC cycles per lookup and the
//! table's bytes per flow.
//!
//! Run: `cargo bench -p caracal-perf --bench flows`
//! (`CARACAL_BENCH_QUICK=1` for a shorter run).

use caracal_dataplane::worker::cycles as tsc;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_dataplane::flow::{
    FlowHandle, FlowHit, FlowKey, FlowTable, FlowTableConfig, NewFlow, Tracked, Zone,
};
use caracal_perf::rng::Rng;
use caracal_wire::{IpProtocol, TcpFlags};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const VECTOR: usize = 256;
const SEC: u64 = 1_000_000_000;
/// Start of the bench's clock.
const T0: u64 = 1_000 * SEC;

fn quick() -> bool {
    std::env::var_os("CARACAL_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// A pod-to-pod TCP flow: random client address and port, one of a few
/// server ports on a random server.
fn random_key(rng: &mut Rng) -> FlowKey {
    let r = rng.next_u64();
    let client = (
        Ipv4Addr::from(0x0a40_0000 | (r as u32 & 0x3f_ffff)),
        (r >> 32) as u16 | 1024,
    );
    let s = rng.next_u64();
    let server = (
        Ipv4Addr::from(0x0a41_0000 | (s as u32 & 0xffff)),
        [80, 443, 8080, 53][(s >> 40) as usize % 4],
    );
    FlowKey::v4(Zone(0), IpProtocol::TCP, client, server)
}

fn table(capacity: u32) -> Arc<FlowTable> {
    FlowTable::new(&FlowTableConfig {
        capacity,
        max_handles: 4,
        ..FlowTableConfig::default()
    })
    .expect("flow table")
}

/// A table holding `flows` established flows (80 % of its capacity) and
/// lookup keys for all of them in random order, half from the reply side.
///
/// Each step copies the next 256 keys into a vector first (untimed), as the
/// graph's flow node would have them fresh from the packet headers: what
/// is timed is the table, not the streaming of a 48 MB key array.
struct Established {
    table: Arc<FlowTable>,
    handle: FlowHandle,
    keys: Vec<FlowKey>,
    vector: Vec<FlowKey>,
    out: Vec<Option<FlowHit>>,
    next: usize,
}

/// What one step runs on its vector.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `lookup_batch`.
    Lookup,
    /// `lookup` per key.
    Single,
    /// `lookup_batch`, then `track` per hit.
    Track,
}

impl Established {
    fn new(flows: u32) -> Self {
        let table = table(flows / 4 * 5);
        let handle = table.register().unwrap();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(flows));
        let mut keys = Vec::with_capacity(flows as usize);
        while keys.len() < flows as usize {
            let key = random_key(&mut rng);
            let first = NewFlow {
                bytes: 64,
                tcp_flags: TcpFlags::ACK,
                verdict: None,
                forwarding: Some(1),
            };
            if handle.insert(&key, T0, &first).expect("room").created {
                keys.push(if rng.next_u64() & 1 == 0 {
                    key
                } else {
                    key.reverse()
                });
            }
        }
        // Flows a full bucket pair evicted meanwhile (normally none).
        keys.retain(|k| handle.lookup(k).is_some());
        // Random lookup order, so consecutive lookups share no bucket.
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.next_u64() as usize % (i + 1));
        }
        Established {
            table,
            handle,
            keys,
            vector: Vec::with_capacity(VECTOR),
            out: vec![None; VECTOR],
            next: 0,
        }
    }

    /// Loads the next vector of keys (untimed).
    fn load(&mut self) {
        if self.next + VECTOR > self.keys.len() {
            self.next = 0;
        }
        self.vector.clear();
        self.vector
            .extend_from_slice(&self.keys[self.next..self.next + VECTOR]);
        self.next += VECTOR;
    }

    /// Runs `step` on the loaded vector: (TSC cycles, time, packets done).
    #[inline(never)]
    fn run(&mut self, step: Step) -> (u64, Duration, usize) {
        let t = Instant::now();
        let c = tsc();
        let done = match step {
            Step::Lookup => {
                self.handle.lookup_batch(&self.vector, &mut self.out);
                self.out.iter().flatten().count()
            }
            Step::Single => self
                .vector
                .iter()
                .filter(|k| self.handle.lookup(k).is_some())
                .count(),
            Step::Track => {
                self.handle.lookup_batch(&self.vector, &mut self.out);
                let mut ok = 0;
                for hit in self.out.iter().flatten() {
                    let t = self.handle.track(*hit, T0 + SEC, 64, TcpFlags::ACK);
                    ok += usize::from(t == Tracked::Ok);
                }
                ok
            }
        };
        let cycles = tsc() - c;
        let elapsed = t.elapsed();
        self.handle.quiescent();
        assert_eq!(done, VECTOR, "every established flow found");
        (cycles, elapsed, done)
    }

    /// TSC cycles per packet of `step`: the median over `vectors` vectors
    /// (robust to the preemptions of a shared machine).
    fn cycles(&mut self, step: Step, vectors: usize) -> f64 {
        let mut per_vector = Vec::with_capacity(vectors);
        for i in 0..vectors + vectors / 4 {
            self.load();
            let (c, _, n) = self.run(step);
            if i >= vectors / 4 {
                per_vector.push(c as f64 / n as f64);
            }
        }
        per_vector.sort_by(f64::total_cmp);
        per_vector[per_vector.len() / 2]
    }

    /// Criterion time of `iters` steps, loads excluded.
    fn timed(&mut self, step: Step, iters: u64) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            self.load();
            spent += self.run(step).1;
        }
        spent
    }
}

fn established(c: &mut Criterion) {
    let vectors = if quick() { 2_000 } else { 20_000 };
    let mut small = (0.0, 0.0);
    for (name, flows) in [("10k", 10_000), ("1M", 1_000_000)] {
        let t = Instant::now();
        let mut e = Established::new(flows);
        let setup = t.elapsed();
        let cap = e.table.capacity();
        println!(
            "flows {name}: {} flows in a table of {cap} ({:.0} bytes per flow of capacity, \
             {:.0} per flow held; {} MiB; {} bucket evictions), filled in {setup:.2?}",
            e.table.len(),
            e.table.bytes_per_flow(),
            e.table.memory_bytes() as f64 / f64::from(e.table.len()),
            e.table.memory_bytes() >> 20,
            e.table.stats().bucket_evictions,
        );
        let hit = e.cycles(Step::Lookup, vectors);
        let single = e.cycles(Step::Single, vectors);
        let track = e.cycles(Step::Track, vectors);
        println!(
            "flows {name}: {hit:.1} TSC cycles/lookup (vector of {VECTOR}, median), {single:.1} one \
             at a time, {track:.1} lookup+track"
        );
        if flows == 10_000 {
            small = (hit, track);
        } else {
            println!(
                "flows 1M keeps {:.2}x the 10k lookup rate, {:.2}x its lookup+track rate",
                small.0 / hit,
                small.1 / track
            );
        }
        let mut g = c.benchmark_group(format!("flows-{name}"));
        g.throughput(Throughput::Elements(VECTOR as u64));
        for (id, step) in [
            ("lookup-hit", Step::Lookup),
            ("lookup-single", Step::Single),
            ("lookup-track", Step::Track),
        ] {
            g.bench_function(id, |b| b.iter_custom(|iters| e.timed(step, iters)));
        }
        g.finish();
    }
}

/// New flows into a table of 1M capacity kept between empty and 70 % full.
struct Inserter {
    table: Arc<FlowTable>,
    handle: FlowHandle,
    keys: Vec<FlowKey>,
    out: Vec<Option<FlowHit>>,
    next: usize,
    now: u64,
}

impl Inserter {
    const CAPACITY: u32 = 1 << 20;

    fn new() -> Self {
        let table = table(Self::CAPACITY);
        let handle = table.register().unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let fill = Self::CAPACITY as usize / 10 * 7;
        Inserter {
            table,
            handle,
            keys: (0..fill).map(|_| random_key(&mut rng)).collect(),
            out: vec![None; VECTOR],
            next: 0,
            now: T0,
        }
    }

    /// Empties the table once the keys ran out (expire all, reclaim).
    fn reset_if_full(&mut self) {
        if self.next + VECTOR <= self.keys.len() {
            return;
        }
        self.now += 3600 * SEC;
        self.table.sweep(self.now);
        self.handle.quiescent();
        self.table.sweep(self.now);
        self.next = 0;
    }

    /// One vector of new flows: lookup (all miss), insert each.
    fn vector(&mut self) -> usize {
        let keys = &self.keys[self.next..self.next + VECTOR];
        self.next += VECTOR;
        self.handle.lookup_batch(keys, &mut self.out);
        let first = NewFlow {
            bytes: 74,
            tcp_flags: TcpFlags::SYN,
            verdict: None,
            forwarding: Some(1),
        };
        let mut created = 0;
        for (key, hit) in keys.iter().zip(&self.out) {
            if hit.is_none() {
                let ins = self.handle.insert(key, self.now, &first).expect("room");
                created += usize::from(ins.created);
            }
        }
        self.handle.quiescent();
        created
    }
}

fn miss_insert(c: &mut Criterion) {
    let mut ins = Inserter::new();
    let mut cycles = (0u64, 0usize);
    let mut g = c.benchmark_group("flows-1M");
    g.throughput(Throughput::Elements(VECTOR as u64));
    g.bench_function("miss-insert", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                ins.reset_if_full();
                let t = Instant::now();
                let c0 = tsc();
                let created = std::hint::black_box(ins.vector());
                cycles.0 += tsc() - c0;
                spent += t.elapsed();
                cycles.1 += created;
            }
            spent
        })
    });
    g.finish();
    println!(
        "flows miss-insert: {:.1} TSC cycles per new flow (lookup miss + insert, table of {}, \
         0-70 % full)",
        cycles.0 as f64 / cycles.1.max(1) as f64,
        Inserter::CAPACITY,
    );
}

/// One sweep over a table of 1M flows that expires nothing.
fn sweep(c: &mut Criterion) {
    let e = Established::new(1_000_000);
    let mut g = c.benchmark_group("flows-1M");
    g.sample_size(10);
    g.bench_function("sweep", |b| b.iter(|| e.table.sweep(T0 + SEC)));
    g.finish();
}

fn config() -> Criterion {
    let (measure, warm) = if quick() {
        (Duration::from_millis(500), Duration::from_millis(200))
    } else {
        (Duration::from_secs(2), Duration::from_millis(500))
    };
    Criterion::default()
        .measurement_time(measure)
        .warm_up_time(warm)
        .sample_size(if quick() { 10 } else { 20 })
}

criterion_group! {
    name = benches;
    config = config();
    targets = established, miss_insert, sweep
}
criterion_main!(benches);
