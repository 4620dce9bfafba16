//! Runtime statistics, like VPP's `show runtime`: per worker and per node,
//! how often it ran (calls), how many packets it handled (vectors) and the
//! time-stamp-counter cycles it spent, read once per node call or burst,
//! never per packet.
//!
//! Besides the graph's nodes a worker counts two pseudo-nodes, its rx
//! bursts (`port-input`, every poll, empty or not) and its tx bursts
//! (`port-output`), and its poll loop: iterations, iterations that received
//! nothing, and the cycles of both. The worker accumulates in plain
//! integers ([`LoopStats`] here, [`GraphCounters`](crate::graph::GraphCounters)
//! in the graph) and publishes them into the relaxed atomics of its
//! [`WorkerCounters`](super::WorkerCounters): graph counters once per
//! vector, loop counters once per loop. The counters only grow and have
//! one writer; clearing is the reader's business (the engine keeps a
//! baseline).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use super::sys::cycles;
use super::{store, WorkerShared};
use crate::graph::NodeId;
use crate::model::{NodeRuntime, WorkerRuntime};

/// Name of the rx-burst pseudo-node (VPP: `<driver>-input`).
pub const PORT_INPUT: &str = "port-input";
/// Name of the tx-burst pseudo-node (VPP: `<driver>-output`/`-tx`).
pub const PORT_OUTPUT: &str = "port-output";

/// Calls, packets and cycles of one kind of burst.
#[derive(Debug, Default, Clone, Copy)]
pub struct Work {
    pub calls: u64,
    pub vectors: u64,
    pub clocks: u64,
}

impl Work {
    #[inline]
    pub fn add(&mut self, calls: u64, vectors: usize, clocks: u64) {
        self.calls += calls;
        self.vectors += vectors as u64;
        self.clocks += clocks;
    }
}

/// What the poll loop counts, in the worker's own integers.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopStats {
    /// Loop iterations.
    pub loops: u64,
    /// Iterations that received no packet.
    pub idle_loops: u64,
    /// Cycles of all iterations (sleeping in epoll included).
    pub clocks: u64,
    /// Cycles of the iterations that received nothing.
    pub idle_clocks: u64,
    /// Rx bursts.
    pub input: Work,
    /// Tx bursts.
    pub output: Work,
}

/// [`Work`] as published.
#[derive(Debug, Default)]
pub struct AtomicWork {
    pub calls: AtomicU64,
    pub vectors: AtomicU64,
    pub clocks: AtomicU64,
}

impl AtomicWork {
    #[inline]
    fn publish(&self, w: &Work) {
        store(&self.calls, w.calls);
        store(&self.vectors, w.vectors);
        store(&self.clocks, w.clocks);
    }

    fn row(&self, name: &'static str) -> NodeRuntime {
        NodeRuntime {
            name,
            calls: self.calls.load(Ordering::Relaxed),
            vectors: self.vectors.load(Ordering::Relaxed),
            clocks: self.clocks.load(Ordering::Relaxed),
        }
    }
}

/// [`LoopStats`] as published.
#[derive(Debug, Default)]
pub struct AtomicLoopStats {
    pub loops: AtomicU64,
    pub idle_loops: AtomicU64,
    pub clocks: AtomicU64,
    pub idle_clocks: AtomicU64,
    pub input: AtomicWork,
    pub output: AtomicWork,
}

impl AtomicLoopStats {
    #[inline]
    pub fn publish(&self, s: &LoopStats) {
        store(&self.loops, s.loops);
        store(&self.idle_loops, s.idle_loops);
        store(&self.clocks, s.clocks);
        store(&self.idle_clocks, s.idle_clocks);
        self.input.publish(&s.input);
        self.output.publish(&s.output);
    }
}

impl WorkerShared {
    /// The worker's runtime counters as last published: `port-input`, the
    /// graph's nodes in dispatch order, `port-output`.
    pub fn runtime(&self) -> WorkerRuntime {
        let c = &self.counters;
        let l = &c.runtime;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut nodes = Vec::with_capacity(NodeId::COUNT + 2);
        nodes.push(l.input.row(PORT_INPUT));
        nodes.extend(NodeId::ALL.iter().map(|&id| NodeRuntime {
            name: id.name(),
            calls: load(&c.node_calls[id as usize]),
            vectors: load(&c.node_packets[id as usize]),
            clocks: load(&c.node_clocks[id as usize]),
        }));
        nodes.push(l.output.row(PORT_OUTPUT));
        WorkerRuntime {
            worker: self.id,
            core: self.core,
            loops: load(&l.loops),
            idle_loops: load(&l.idle_loops),
            clocks: load(&l.clocks),
            idle_clocks: load(&l.idle_clocks),
            nodes,
        }
    }
}

/// How long [`cycles_per_second`] counts cycles against the monotonic
/// clock.
const CALIBRATION: Duration = Duration::from_millis(20);

/// The rate of [`cycles`], per second: calibrated once against
/// CLOCK_MONOTONIC (the first call takes about 20 ms), rather than taken
/// from the nominal frequency in /proc/cpuinfo, which the TSC need not
/// match. 10⁹ where [`cycles`] counts nanoseconds.
pub fn cycles_per_second() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return 1_000_000_000;
        }
        let (t0, c0) = (Instant::now(), cycles());
        std::thread::sleep(CALIBRATION);
        let (c1, t1) = (cycles(), Instant::now());
        let ns = t1.duration_since(t0).as_nanos().max(1);
        (u128::from(c1.wrapping_sub(c0)) * 1_000_000_000 / ns) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_advance_at_the_calibrated_rate() {
        let hz = cycles_per_second();
        assert!(hz >= 100_000_000, "{hz} Hz");
        let (t0, c0) = (Instant::now(), cycles());
        std::thread::sleep(Duration::from_millis(30));
        let (c1, t1) = (cycles(), Instant::now());
        let measured = (c1 - c0) as f64 / t1.duration_since(t0).as_secs_f64();
        // A shared VM is noisy; the rate is right within 10 %.
        assert!(
            (measured / hz as f64 - 1.0).abs() < 0.1,
            "{measured} vs {hz}"
        );
    }
}
