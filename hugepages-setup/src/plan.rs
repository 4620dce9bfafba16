//! The reservation plan: from what was asked (`--pages`, `--per-node`,
//! `--node`, `--shrink`) and each pool's current persistent count, the
//! count to write to each pool. Pure; `setup` does the IO.
//!
//! Without `--shrink` a count is never lowered: pages reserved by someone
//! else stay theirs, and asking for fewer than there are already is a
//! no-op. With `--shrink` the counts are set exactly; the kernel releases
//! only free pages and turns pages in use into surplus, freed on unmap.

use anyhow::bail;
use serde::Serialize;

use crate::sysfs::{NodeId, Pool};

/// How many pages were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Amount {
    /// This many in total over the selected pools, spread evenly.
    #[serde(rename = "total")]
    Total(u64),
    /// This many in each selected pool.
    #[serde(rename = "per_node")]
    PerPool(u64),
}

/// One pool's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub pool: Pool,
    /// Persistent count before.
    pub current: u64,
    /// Persistent count to write.
    pub target: u64,
}

/// The pools named by `--node` (all of `available` when none is named),
/// in order and without repeats.
pub fn select_pools(available: &[Pool], nodes: &[NodeId]) -> anyhow::Result<Vec<Pool>> {
    if nodes.is_empty() {
        return Ok(available.to_vec());
    }
    if available == [Pool::Global] {
        bail!("--node needs per-node hugepage pools, and this kernel has no NUMA sysfs (/sys/devices/system/node)");
    }
    let mut selected = Vec::with_capacity(nodes.len());
    for &id in nodes {
        let pool = Pool::Node(id);
        if !available.contains(&pool) {
            let known: Vec<String> = available
                .iter()
                .filter_map(|p| p.node())
                .map(|n| n.to_string())
                .collect();
            bail!(
                "NUMA node {id} has no hugepage pool of this size (nodes with memory: {})",
                known.join(", ")
            );
        }
        selected.push(pool);
    }
    selected.sort();
    selected.dedup();
    Ok(selected)
}

/// The count for each pool in `current` (pool, persistent count).
pub fn plan(current: &[(Pool, u64)], amount: Amount, shrink: bool) -> Vec<Step> {
    let counts: Vec<u64> = current.iter().map(|&(_, count)| count).collect();
    let targets = match (amount, shrink) {
        (Amount::PerPool(n), true) => vec![n; counts.len()],
        (Amount::PerPool(n), false) => counts.iter().map(|&c| c.max(n)).collect(),
        (Amount::Total(n), true) => fill(&vec![0; counts.len()], n),
        (Amount::Total(n), false) => fill(&counts, n),
    };
    current
        .iter()
        .zip(targets)
        .map(|(&(pool, current), target)| Step {
            pool,
            current,
            target,
        })
        .collect()
}

/// Raises `counts` until they sum to `total`, always adding to the
/// smallest, so the pools end up as even as they can without lowering any;
/// ties go to the first pools. Counts already summing to `total` or more
/// are returned unchanged. From all zeros this is the even split.
fn fill(counts: &[u64], total: u64) -> Vec<u64> {
    let sum_at = |level: u64| {
        counts
            .iter()
            .map(|&c| c.max(level))
            .fold(0u64, u64::saturating_add)
    };
    if counts.is_empty() || sum_at(0) >= total {
        return counts.to_vec();
    }
    // The lowest level that, raising every smaller pool to it, reaches the
    // total. sum_at(total) >= total, and sum_at is monotonic.
    let (mut low, mut high) = (0, total);
    while low < high {
        let mid = low + (high - low) / 2;
        if sum_at(mid) >= total {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    let level = low;
    // Raise everyone to level - 1 (falls short, as level is the lowest),
    // then the first pools below level get one more page each.
    let mut targets: Vec<u64> = counts.iter().map(|&c| c.max(level - 1)).collect();
    let mut missing = total - targets.iter().sum::<u64>();
    for (target, &count) in targets.iter_mut().zip(counts) {
        if missing == 0 {
            break;
        }
        if count < level {
            *target += 1;
            missing -= 1;
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(counts: &[u64]) -> Vec<(Pool, u64)> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (Pool::Node(NodeId(i as u32)), c))
            .collect()
    }

    fn targets(counts: &[u64], amount: Amount, shrink: bool) -> Vec<u64> {
        plan(&nodes(counts), amount, shrink)
            .iter()
            .map(|s| s.target)
            .collect()
    }

    #[test]
    fn total_is_split_evenly_first_nodes_take_the_remainder() {
        assert_eq!(targets(&[0, 0], Amount::Total(64), false), [32, 32]);
        assert_eq!(targets(&[0, 0, 0], Amount::Total(64), false), [22, 21, 21]);
        assert_eq!(
            targets(&[0, 0, 0, 0], Amount::Total(2), false),
            [1, 1, 0, 0]
        );
        assert_eq!(targets(&[0], Amount::Total(64), false), [64]);
        assert_eq!(targets(&[0, 0], Amount::Total(0), false), [0, 0]);
    }

    #[test]
    fn total_tops_up_the_smallest_pools_without_lowering() {
        assert_eq!(targets(&[100, 0], Amount::Total(128), false), [100, 28]);
        assert_eq!(targets(&[10, 0, 4], Amount::Total(20), false), [10, 5, 5]);
        assert_eq!(targets(&[10, 0, 4], Amount::Total(21), false), [10, 6, 5]);
        assert_eq!(targets(&[10, 0, 4], Amount::Total(31), false), [11, 10, 10]);
        // Enough already: nothing changes, nothing is lowered.
        assert_eq!(targets(&[100, 0], Amount::Total(64), false), [100, 0]);
        assert_eq!(targets(&[40, 40], Amount::Total(80), false), [40, 40]);
    }

    #[test]
    fn total_with_shrink_is_exact() {
        assert_eq!(targets(&[100, 0], Amount::Total(64), true), [32, 32]);
        assert_eq!(targets(&[7, 9], Amount::Total(0), true), [0, 0]);
    }

    #[test]
    fn fill_always_reaches_the_total_exactly() {
        let cases: &[&[u64]] = &[
            &[0, 0, 0],
            &[5, 1, 9, 0],
            &[3],
            &[1, 1, 1, 1, 1],
            &[0, 17, 2],
        ];
        for &counts in cases {
            let start: u64 = counts.iter().sum();
            for total in start..start + 40 {
                let filled = fill(counts, total);
                assert_eq!(filled.iter().sum::<u64>(), total, "{counts:?} to {total}");
                assert!(
                    filled.iter().zip(counts).all(|(f, c)| f >= c),
                    "{counts:?} lowered: {filled:?}"
                );
                // Even: every pool that grew is within one of the smallest grown-to level.
                let raised: Vec<u64> = filled
                    .iter()
                    .zip(counts)
                    .filter(|(f, c)| f > c)
                    .map(|(f, _)| *f)
                    .collect();
                if let (Some(lo), Some(hi)) = (raised.iter().min(), raised.iter().max()) {
                    assert!(hi - lo <= 1, "{counts:?} to {total}: {filled:?}");
                }
            }
        }
    }

    #[test]
    fn per_pool_never_lowers_unless_told() {
        assert_eq!(targets(&[0, 100], Amount::PerPool(64), false), [64, 100]);
        assert_eq!(targets(&[0, 100], Amount::PerPool(64), true), [64, 64]);
        // Asking for what is there is a no-op.
        assert_eq!(targets(&[12, 3], Amount::PerPool(0), false), [12, 3]);
    }

    #[test]
    fn steps_keep_pool_and_current() {
        let steps = plan(&[(Pool::Global, 5)], Amount::PerPool(8), false);
        assert_eq!(
            steps,
            [Step {
                pool: Pool::Global,
                current: 5,
                target: 8
            }]
        );
    }

    #[test]
    fn selects_named_nodes() {
        let available = [
            Pool::Node(NodeId(0)),
            Pool::Node(NodeId(1)),
            Pool::Node(NodeId(3)),
        ];
        assert_eq!(select_pools(&available, &[]).unwrap(), available);
        assert_eq!(
            select_pools(&available, &[NodeId(3), NodeId(1), NodeId(3)]).unwrap(),
            [Pool::Node(NodeId(1)), Pool::Node(NodeId(3))]
        );
        let err = select_pools(&available, &[NodeId(2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("node 2") && err.contains("0, 1, 3"), "{err}");
        let err = select_pools(&[Pool::Global], &[NodeId(0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no NUMA sysfs"), "{err}");
    }
}
