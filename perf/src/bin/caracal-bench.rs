//! `caracal-bench`: the side-by-side comparison harness (see
//! `caracal_perf::harness`). One command runs every scenario, each against
//! its peer in the same run, and writes `results.json`, `results.md` and
//! SVG plots.
//!
//! ```text
//! sudo target/release/caracal-bench                    # full run → perf/results/
//! sudo target/release/caracal-bench --quick --out /tmp/r   # CI's short mode
//! sudo target/release/caracal-bench --scenarios lpm,classifier
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use caracal_perf::harness::{self, report};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "caracal-bench",
    version,
    about = "Caracal side by side with testpmd, the kernel, rte_acl, rte_lpm and the bridge CNI"
)]
struct Cli {
    /// Small sizes and short trials (under two minutes): proves the
    /// harness works; not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Where results.json, results.md and the plots go.
    #[arg(long, value_name = "DIR", default_value = "perf/results")]
    out: PathBuf,
    /// Comma-separated scenarios to run (default: all): memif-floor,
    /// full-path, classifier, lpm, cni-add, policy-change.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Where the release binaries are.
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds per traffic trial (default 10, quick 2).
    #[arg(long)]
    trial: Option<f64>,
    /// CPU the device under test is pinned to; the generator uses the
    /// others.
    #[arg(long, default_value_t = 1)]
    dut_cpu: usize,
    /// Keep the other scenarios of the run already in --out (re-run some
    /// scenarios of a full run); the report lists both commands.
    #[arg(long)]
    merge: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("caracal-bench needs root (network namespaces, memif sockets, nftables)");
    }
    for s in &cli.scenarios {
        if !harness::SCENARIOS.iter().any(|(id, ..)| id == s) {
            let known: Vec<&str> = harness::SCENARIOS.iter().map(|(id, ..)| *id).collect();
            bail!("unknown scenario {s:?}; known: {}", known.join(", "));
        }
    }
    let bin_dir = std::path::absolute(&cli.bin_dir)?;
    for bin in [
        "caracal-dataplane",
        "caracal-agent",
        "caracal",
        "caracalctl",
        "caracal-pktgen",
    ] {
        if !bin_dir.join(bin).exists() {
            bail!(
                "{} not found: build with `cargo build --release` first, or pass --bin-dir",
                bin_dir.join(bin).display()
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("caracal-bench-")
        .tempdir()
        .context("creating a scratch folder")?;
    let opts = harness::Options {
        quick: cli.quick,
        bin_dir,
        work_dir: work.path().to_owned(),
        trial: Duration::from_secs_f64(cli.trial.unwrap_or(if cli.quick { 2.0 } else { 10.0 })),
        dut_cpu: cli.dut_cpu,
    };
    let started = std::time::Instant::now();
    let scenarios = harness::run(&opts, &cli.scenarios);
    let mut run = report::Run {
        date: report::command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        commit: report::command_line("git", &["rev-parse", "--short", "HEAD"]),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick: cli.quick,
        machine: report::Machine::describe(),
        scenarios,
    };
    if cli.merge {
        let previous = cli.out.join("results.json");
        if previous.exists() {
            let text = std::fs::read_to_string(&previous)?;
            let old: report::Run = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", previous.display()))?;
            run = run.merged_into(old);
        }
    }
    run.write(&cli.out)?;
    eprintln!(
        "caracal-bench: {} scenarios in {:.0} s; results in {}",
        run.scenarios.len(),
        started.elapsed().as_secs_f64(),
        cli.out.display()
    );
    if !run.complete() {
        let failed: Vec<&str> = run
            .scenarios
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| s.id.as_str())
            .collect();
        bail!("scenarios that did not complete: {}", failed.join(", "));
    }
    Ok(())
}
