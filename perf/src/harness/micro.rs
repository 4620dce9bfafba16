//! Micro-benchmarks against DPDK's own libraries, called in-process
//! through `caracal-dpdk-sys` (see [`crate::peers`]): the policy
//! classifier against `rte_acl` on ClassBench rule sets, the FIB against
//! `rte_lpm`/`rte_lpm6`. Both sides classify the same keys and must agree
//! on every one; a disagreement fails the scenario.

use anyhow::bail;

use super::{Better, Options, Row};
use crate::peers::{self, Family, LookupFigure};

fn peer_opts(opts: &Options) -> peers::Opts {
    if opts.quick {
        peers::Opts::quick()
    } else {
        peers::Opts::full()
    }
}

/// The figure for `workload` at the largest batch measured.
fn lookup<'a>(figures: &'a [LookupFigure], workload: &str) -> Option<&'a LookupFigure> {
    figures
        .iter()
        .filter(|f| f.workload == workload)
        .max_by_key(|f| f.batch)
}

/// One row per workload both sides measured: cycles per lookup at the
/// largest batch.
fn lookup_rows(
    rows: &mut Vec<Row>,
    case: &str,
    workloads: [&str; 2],
    ours: &[LookupFigure],
    peer: &[LookupFigure],
) {
    for workload in workloads {
        if let (Some(o), Some(p)) = (lookup(ours, workload), lookup(peer, workload)) {
            rows.push(Row::new(
                case,
                format!("lookup, {workload}, batch {}", o.batch),
                "cycles/lookup",
                Better::Lower,
                o.cycles_per_lookup,
                p.cycles_per_lookup,
            ));
        }
    }
}

pub fn classifier(
    opts: &Options,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (sets, sizes): (&[&str], &[usize]) = if opts.quick {
        (&["acl1"], &[1000])
    } else {
        (&peers::SETS, &peers::SIZES)
    };
    let popts = peer_opts(opts);
    let mut algorithm = String::new();
    for &set in sets {
        for &size in sizes {
            let c = peers::classifier(set, size, &popts)?;
            if c.mismatches != 0 || c.reference_mismatches_caracal != 0 {
                bail!(
                    "{}: Caracal and rte_acl disagree on {} of {} keys ({} against the linear scan)",
                    c.set,
                    c.mismatches,
                    c.compared,
                    c.reference_mismatches_caracal
                );
            }
            let case = format!("{} ({} rules)", c.set, c.rules);
            lookup_rows(
                rows,
                &case,
                ["trace", "uniform"],
                &c.caracal.lookups,
                &c.rte_acl.lookups,
            );
            rows.push(Row::new(
                &case,
                "rule insert",
                "µs",
                Better::Lower,
                c.caracal.insert.mean_us,
                c.rte_acl.insert.mean_us,
            ));
            rows.push(Row::new(
                &case,
                "build",
                "ms",
                Better::Lower,
                c.caracal.build_ms,
                c.rte_acl.build_ms,
            ));
            rows.push(Row::new(
                &case,
                "memory",
                "KiB",
                Better::Lower,
                c.caracal.memory_bytes as f64 / 1024.0,
                c.rte_acl.memory_bytes as f64 / 1024.0,
            ));
            algorithm.clone_from(&c.rte_acl_algorithm);
        }
    }
    notes.push(format!(
        "Same rules, same keys, one core, TSC cycles per lookup in batches; every key's verdict \
         compared between the two (0 mismatches) and a sample against a linear scan. rte_acl uses \
         its default code path for this CPU ({algorithm}). A rule insert is Caracal's incremental \
         update with a new snapshot published, against rte_acl's only way, a rebuild of the context."
    ));
    Ok(())
}

pub fn lpm(opts: &Options, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let prefixes = if opts.quick { 100_000 } else { 1_000_000 };
    let popts = peer_opts(opts);
    for family in [Family::V4, Family::V6] {
        let c = peers::lpm(family, prefixes, &popts)?;
        if c.mismatches != 0 {
            bail!(
                "{:?}: Caracal and {} disagree on {} of {} addresses",
                family,
                c.dpdk_table,
                c.mismatches,
                c.compared
            );
        }
        let case = format!("{family:?}, {} prefixes", c.prefixes);
        lookup_rows(
            rows,
            &case,
            ["uniform", "covered"],
            &c.caracal.lookups,
            &c.dpdk.lookups,
        );
        rows.push(Row::new(
            &case,
            "build",
            "ms",
            Better::Lower,
            c.caracal.build_ms,
            c.dpdk.build_ms,
        ));
        rows.push(Row::new(
            &case,
            "memory",
            "MiB",
            Better::Lower,
            c.caracal.memory_bytes as f64 / (1024.0 * 1024.0),
            c.dpdk.memory_bytes as f64 / (1024.0 * 1024.0),
        ));
    }
    notes.push(
        "Random prefixes (seeded) of realistic lengths; uniform: random addresses, covered: \
         addresses inside a random route. Every looked-up address compared between the two tables."
            .into(),
    );
    Ok(())
}
