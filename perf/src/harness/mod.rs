//! The side-by-side comparison harness behind `caracal-bench`.
//!
//! Every scenario measures Caracal and the peer a user would otherwise
//! pick (dpdk-testpmd, the Linux kernel with nftables, DPDK's `rte_acl`
//! and `rte_lpm`, the reference `bridge` CNI plugin) in the same run, on
//! the same machine, with the same generator, and reports each figure as
//! a [`Row`]: both values and Caracal's advantage as a ratio. Absolute
//! numbers are context; the ratio is the result.
//!
//! A scenario that cannot run records its error instead of rows, and the
//! run as a whole then fails: a harness that silently drops a comparison
//! would report only the ones Caracal wins.

pub mod control_plane;
pub mod kernel;
pub mod lab;
pub mod memif_floor;
pub mod micro;
pub mod plot;
pub mod report;
pub mod sys;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a larger or a smaller value of a metric is the better one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One figure of a scenario, measured on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, e.g. "64 B" or "acl1 10k rules".
    pub case: String,
    /// e.g. "throughput" or "cycles/packet".
    pub metric: String,
    pub unit: String,
    pub ours: f64,
    pub peer: f64,
    pub better: Better,
    /// How many times better Caracal is: `ours / peer` when higher is
    /// better, `peer / ours` when lower is; above 1 means Caracal wins.
    pub advantage: f64,
}

impl Row {
    pub fn new(
        case: impl Into<String>,
        metric: impl Into<String>,
        unit: impl Into<String>,
        better: Better,
        ours: f64,
        peer: f64,
    ) -> Row {
        let advantage = match better {
            Better::Higher => ours / peer,
            Better::Lower => peer / ours,
        };
        Row {
            case: case.into(),
            metric: metric.into(),
            unit: unit.into(),
            ours,
            peer,
            better,
            advantage: if advantage.is_finite() {
                advantage
            } else {
                0.0
            },
        }
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Short name, as `--scenarios` takes it.
    pub id: String,
    pub title: String,
    /// What Caracal is compared with.
    pub peer: String,
    pub rows: Vec<Row>,
    /// How it was measured, and figures that have no peer.
    pub notes: Vec<String>,
    /// Why the scenario could not run; `rows` is then incomplete.
    pub error: Option<String>,
    pub seconds: f64,
}

/// What every scenario gets.
#[derive(Debug, Clone)]
pub struct Options {
    /// The short CI mode: smaller sizes and trials.
    pub quick: bool,
    /// Where `caracal-dataplane`, `caracal-agent`, `caracal` and
    /// `caracalctl` are (normally `target/release`).
    pub bin_dir: PathBuf,
    /// Scratch space for sockets, lab state and logs; removed afterwards.
    pub work_dir: PathBuf,
    /// Length of one timed traffic trial.
    pub trial: Duration,
    /// CPU the device under test is pinned to; the generator takes the
    /// others.
    pub dut_cpu: usize,
}

/// A scenario's body: the peer's name is given by the registry.
pub type ScenarioFn = fn(&Options, &mut Vec<Row>, &mut Vec<String>) -> anyhow::Result<()>;

/// Every scenario, in the order a run takes them.
pub const SCENARIOS: &[(&str, &str, &str, ScenarioFn)] = &[
    (
        "memif-floor",
        "memif I/O floor: two memif ports cross-connected",
        "dpdk-testpmd io forwarding (net_memif)",
        memif_floor::run,
    ),
    (
        "full-path",
        "pod to pod over memif: route + stateful policy + flow table",
        "Linux kernel: veth pods, IP forwarding, nftables",
        kernel::full_path,
    ),
    (
        "classifier",
        "policy classifier on ClassBench rule sets",
        "DPDK rte_acl",
        micro::classifier,
    ),
    (
        "lpm",
        "longest-prefix match, 1M random prefixes",
        "DPDK rte_lpm / rte_lpm6",
        micro::lpm,
    ),
    (
        "cni-add",
        "CNI ADD latency, 100 pods in parallel",
        "containernetworking bridge + host-local plugins",
        control_plane::cni_add,
    ),
    (
        "policy-change",
        "NetworkPolicy change until enforced, with traffic running",
        "Linux kernel: nftables ruleset replace",
        control_plane::policy_change,
    ),
];

/// Runs the named scenarios (all when `only` is empty) one after the
/// other, printing progress to stderr.
pub fn run(opts: &Options, only: &[String]) -> Vec<Scenario> {
    let mut out = Vec::new();
    for &(id, title, peer, body) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == id) {
            continue;
        }
        eprintln!("caracal-bench: == {id}: {title} (vs {peer})");
        let started = std::time::Instant::now();
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        let error = body(opts, &mut rows, &mut notes)
            .err()
            .map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            eprintln!("caracal-bench: {id} FAILED: {e}");
        }
        for r in &rows {
            eprintln!(
                "caracal-bench:   {:<28} {:<18} ours {:>12.3} peer {:>12.3} {:<10} advantage {:.2}x",
                r.case, r.metric, r.ours, r.peer, r.unit, r.advantage
            );
        }
        out.push(Scenario {
            id: id.into(),
            title: title.into(),
            peer: peer.into(),
            rows,
            notes,
            error,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    out
}

/// The `q`-quantile (0..=1) of `samples` by nearest rank; 0 when empty.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantage_reads_the_same_way_for_both_kinds_of_metric() {
        let faster = Row::new("x", "throughput", "Mpps", Better::Higher, 20.0, 10.0);
        assert_eq!(faster.advantage, 2.0);
        let cheaper = Row::new("x", "cycles", "cyc/pkt", Better::Lower, 50.0, 100.0);
        assert_eq!(cheaper.advantage, 2.0);
        let nothing = Row::new("x", "throughput", "Mpps", Better::Higher, 1.0, 0.0);
        assert_eq!(nothing.advantage, 0.0);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut s, 0.5), 50.0);
        assert_eq!(quantile(&mut s, 0.99), 99.0);
        assert_eq!(quantile(&mut s, 1.0), 100.0);
        assert_eq!(quantile(&mut s, 0.0), 1.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }
}
