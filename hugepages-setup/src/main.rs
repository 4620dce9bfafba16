//! `hugepages-setup`: reserve hugepages per NUMA node, mount hugetlbfs, and
//! report what the kernel has.
//!
//! ```text
//! hugepages-setup [--size 2M|1G] [--pages N | --per-node N] [--node ID]...
//!                 [--shrink] [--best-effort] [--mount DIR | --no-mount] [--json]
//! hugepages-setup report [--json]
//! ```
//!
//! Exit status: 0 on success; 1 on an error; 2 on a usage error; 3 when the
//! kernel granted fewer pages than asked (or refused a write) and
//! `--best-effort` was not given.

#![forbid(unsafe_code)]

mod mounts;
mod plan;
mod report;
mod setup;
mod size;
mod sysfs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::plan::Amount;
use crate::report::Report;
use crate::setup::SetupRequest;
use crate::size::PageSize;
use crate::sysfs::{HostFs, NodeId};

/// Exit status when the kernel granted fewer pages than asked.
const EXIT_SHORT: u8 = 3;

/// Reserve hugepages per NUMA node, mount hugetlbfs, and report.
///
/// Without a subcommand: sets the pools' page counts (when --pages or
/// --per-node is given), reads back what the kernel granted, mounts
/// hugetlbfs of that page size, and prints the report. Counts are never
/// lowered unless --shrink is given, so pages reserved by others stay
/// reserved.
#[derive(Debug, Parser)]
#[command(
    name = "hugepages-setup",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    setup: SetupArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the hugepage counters per size and NUMA node, and the
    /// hugetlbfs mount points; changes nothing.
    Report {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").args(["pages", "per_node"])))]
struct SetupArgs {
    /// Hugepage size, e.g. 2M or 1G [default: the kernel's default size]
    #[arg(long, value_name = "SIZE")]
    size: Option<PageSize>,

    /// Pages in total, spread evenly over the selected NUMA nodes.
    #[arg(long, value_name = "N")]
    pages: Option<u64>,

    /// Pages on each selected NUMA node.
    #[arg(long, value_name = "N")]
    per_node: Option<u64>,

    /// Reserve on this NUMA node (repeatable) [default: every node with
    /// memory].
    #[arg(long = "node", value_name = "ID", requires = "amount")]
    nodes: Vec<u32>,

    /// Set counts exactly, lowering them if needed (pages in use are
    /// released by the kernel once unmapped).
    #[arg(long, requires = "amount")]
    shrink: bool,

    /// Succeed even if the kernel grants fewer pages than asked.
    #[arg(long)]
    best_effort: bool,

    /// Where to mount hugetlbfs of this page size.
    #[arg(long, value_name = "DIR", default_value = "/dev/hugepages")]
    mount: PathBuf,

    /// Do not mount hugetlbfs.
    #[arg(long, conflicts_with = "mount")]
    no_mount: bool,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl SetupArgs {
    fn request(&self) -> SetupRequest {
        let amount = match (self.pages, self.per_node) {
            (Some(n), _) => Some(Amount::Total(n)),
            (None, Some(n)) => Some(Amount::PerPool(n)),
            (None, None) => None,
        };
        SetupRequest {
            size: self.size,
            amount,
            nodes: self.nodes.iter().copied().map(NodeId).collect(),
            shrink: self.shrink,
            best_effort: self.best_effort,
            mount: (!self.no_mount).then(|| self.mount.clone()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fs = HostFs::new("/");
    let result = match &cli.command {
        Some(Command::Report { json }) => report(&fs, *json),
        None => setup(&fs, &cli.setup),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hugepages-setup: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn report(fs: &HostFs, json: bool) -> anyhow::Result<ExitCode> {
    let report = Report::collect(fs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn setup(fs: &HostFs, args: &SetupArgs) -> anyhow::Result<ExitCode> {
    let request = args.request();
    let outcome = setup::run(fs, &request, mounts::mount_hugetlbfs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{outcome}");
    }
    if outcome.complete() {
        return Ok(ExitCode::SUCCESS);
    }
    let summary = format!(
        "the kernel granted {} of the {} {} hugepages asked for",
        outcome.granted_pages(),
        outcome.requested_pages(),
        outcome.size
    );
    if request.best_effort {
        eprintln!("hugepages-setup: warning: {summary}; continuing (--best-effort)");
        return Ok(ExitCode::SUCCESS);
    }
    let hint = if outcome.pools.iter().any(|p| p.error.is_some()) {
        "writing a count failed (see above; writing needs root)"
    } else if outcome.size >= PageSize::SIZE_1G {
        "gigantic pages rarely fit at runtime; reserve them at boot (hugepagesz=1G hugepages=N)"
    } else {
        "memory is too small or too fragmented (echo 1 > /proc/sys/vm/compact_memory may help)"
    };
    eprintln!("hugepages-setup: error: {summary}: {hint}; --best-effort accepts fewer");
    Ok(ExitCode::from(EXIT_SHORT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hugepages-setup").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_setup() {
        let cli = parse(&[
            "--size",
            "1G",
            "--per-node",
            "4",
            "--node",
            "1",
            "--node",
            "0",
            "--no-mount",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.setup.request(),
            SetupRequest {
                size: Some(PageSize::SIZE_1G),
                amount: Some(Amount::PerPool(4)),
                nodes: vec![NodeId(1), NodeId(0)],
                shrink: false,
                best_effort: false,
                mount: None,
            }
        );
        let request = parse(&["--pages", "64", "--best-effort", "--json"])
            .unwrap()
            .setup
            .request();
        assert_eq!(request.amount, Some(Amount::Total(64)));
        assert!(request.best_effort);
        assert_eq!(request.mount, Some(PathBuf::from("/dev/hugepages")));
        let request = parse(&[]).unwrap().setup.request();
        assert_eq!((request.amount, request.size), (None, None));
        let request = parse(&["--mount", "/mnt/huge"]).unwrap().setup.request();
        assert_eq!(request.mount, Some(PathBuf::from("/mnt/huge")));
    }

    #[test]
    fn parses_report() {
        let cli = parse(&["report", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Report { json: true })));
    }

    #[test]
    fn refuses_contradictions() {
        for args in [
            &["--pages", "1", "--per-node", "1"][..],
            &["--node", "0"],
            &["--shrink"],
            &["--mount", "/x", "--no-mount"],
            &["--size", "3M"],
            &["--pages", "-1"],
            &["--pages", "1", "report"],
            &["report", "--pages", "1"],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }
}
