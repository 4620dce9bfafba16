//! The report: for every hugepage size the kernel supports, its counters
//! per NUMA node and machine-wide, and where hugetlbfs of that size is
//! mounted. Printed as a table or as JSON (`--json`).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::mounts::{hugetlbfs_mount_points, parse_mounts};
use crate::size::PageSize;
use crate::sysfs::{HostFs, NodeId, Pool, PoolCounters};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The kernel's default hugepage size (`Hugepagesize` in
    /// `/proc/meminfo`, whose `HugePages_*` lines are about that size).
    pub default_size: Option<PageSize>,
    /// Whether the kernel has per-node pools (NUMA sysfs).
    pub numa: bool,
    /// One entry per supported size, smallest first.
    pub sizes: Vec<SizeReport>,
}

/// The pages of one size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SizeReport {
    pub size: PageSize,
    pub size_kib: u64,
    /// Machine-wide counters, pages.
    pub total: u64,
    pub free: u64,
    pub surplus: u64,
    /// Pages promised to mappings but not yet faulted in.
    pub reserved: u64,
    /// Per NUMA node; empty without NUMA sysfs.
    pub nodes: Vec<NodeReport>,
    /// Usable hugetlbfs mount points of this size.
    pub mounts: Vec<PathBuf>,
}

/// The pages of one size on one NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub node: u32,
    pub total: u64,
    pub free: u64,
    pub surplus: u64,
}

impl Report {
    /// Reads everything from the host.
    pub fn collect(fs: &HostFs) -> anyhow::Result<Report> {
        let default_size = fs.default_size()?;
        let mounts = parse_mounts(&fs.mounts()?);
        let mut numa = false;
        let mut sizes = Vec::new();
        for size in fs.sizes()? {
            let global = fs.counters(Pool::Global, size)?;
            let mut nodes = Vec::new();
            for id in fs.numa_nodes(size)? {
                let c = fs.counters(Pool::Node(id), size)?;
                nodes.push(NodeReport::new(id, c));
            }
            numa |= !nodes.is_empty();
            sizes.push(SizeReport {
                size,
                size_kib: size.kib(),
                total: global.total,
                free: global.free,
                surplus: global.surplus,
                reserved: fs.reserved(size)?,
                nodes,
                mounts: hugetlbfs_mount_points(&mounts, size, default_size),
            });
        }
        Ok(Report {
            default_size,
            numa,
            sizes,
        })
    }
}

impl NodeReport {
    fn new(id: NodeId, c: PoolCounters) -> NodeReport {
        NodeReport {
            node: id.0,
            total: c.total,
            free: c.free,
            surplus: c.surplus,
        }
    }
}

/// A table with a row per size and node and a machine-wide row per size,
/// then the mount points.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sizes.is_empty() {
            return writeln!(
                f,
                "this kernel supports no hugepages (no /sys/kernel/mm/hugepages)"
            );
        }
        writeln!(
            f,
            "{:<6} {:<5} {:>8} {:>8} {:>8} {:>8}",
            "SIZE", "NODE", "TOTAL", "FREE", "SURPLUS", "RESERVED"
        )?;
        for s in &self.sizes {
            let size = if Some(s.size) == self.default_size {
                format!("{}*", s.size)
            } else {
                s.size.to_string()
            };
            for n in &s.nodes {
                writeln!(
                    f,
                    "{size:<6} {:<5} {:>8} {:>8} {:>8} {:>8}",
                    n.node, n.total, n.free, n.surplus, "-"
                )?;
            }
            writeln!(
                f,
                "{size:<6} {:<5} {:>8} {:>8} {:>8} {:>8}",
                "all", s.total, s.free, s.surplus, s.reserved
            )?;
        }
        if let Some(size) = self.default_size {
            writeln!(f, "* default size ({size})")?;
        }
        writeln!(f, "hugetlbfs mounts:")?;
        let mut any = false;
        for s in &self.sizes {
            for m in &s.mounts {
                writeln!(f, "  {} (pagesize={})", m.display(), s.size)?;
                any = true;
            }
        }
        if !any {
            writeln!(f, "  none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeHost;

    fn busy_two_node_host() -> FakeHost {
        let host = FakeHost::new(2);
        let counters = |total, free, surplus| PoolCounters {
            total,
            free,
            surplus,
        };
        host.set(
            Pool::Node(NodeId(0)),
            PageSize::SIZE_2M,
            counters(64, 60, 0),
        );
        host.set(
            Pool::Node(NodeId(1)),
            PageSize::SIZE_2M,
            counters(34, 32, 2),
        );
        host.set(Pool::Node(NodeId(1)), PageSize::SIZE_1G, counters(1, 1, 0));
        host.write(
            "sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages",
            "3\n",
        );
        host.write(
            "proc/mounts",
            "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
             hugetlbfs /mnt/huge-1G hugetlbfs rw,relatime,pagesize=1024M 0 0\n",
        );
        host
    }

    #[test]
    fn collects_per_node_and_global_counters() {
        let host = busy_two_node_host();
        let report = Report::collect(&host.fs()).unwrap();
        assert_eq!(report.default_size, Some(PageSize::SIZE_2M));
        assert!(report.numa);
        let two_m = &report.sizes[0];
        assert_eq!(
            (
                two_m.size,
                two_m.total,
                two_m.free,
                two_m.surplus,
                two_m.reserved
            ),
            (PageSize::SIZE_2M, 98, 92, 2, 3)
        );
        assert_eq!(
            two_m.nodes,
            [
                NodeReport {
                    node: 0,
                    total: 64,
                    free: 60,
                    surplus: 0
                },
                NodeReport {
                    node: 1,
                    total: 34,
                    free: 32,
                    surplus: 2
                }
            ]
        );
        assert_eq!(two_m.mounts, [PathBuf::from("/dev/hugepages")]);
        let one_g = &report.sizes[1];
        assert_eq!((one_g.size, one_g.total), (PageSize::SIZE_1G, 1));
        assert_eq!(one_g.mounts, [PathBuf::from("/mnt/huge-1G")]);
    }

    #[test]
    fn renders_a_table() {
        let report = Report::collect(&busy_two_node_host().fs()).unwrap();
        let expected = "\
SIZE   NODE     TOTAL     FREE  SURPLUS RESERVED
2M*    0           64       60        0        -
2M*    1           34       32        2        -
2M*    all         98       92        2        3
1G     0            0        0        0        -
1G     1            1        1        0        -
1G     all          1        1        0        0
* default size (2M)
hugetlbfs mounts:
  /dev/hugepages (pagesize=2M)
  /mnt/huge-1G (pagesize=1G)
";
        assert_eq!(report.to_string(), expected);
    }

    #[test]
    fn renders_without_numa_or_mounts() {
        let report = Report::collect(&FakeHost::new(0).fs()).unwrap();
        assert!(!report.numa);
        let text = report.to_string();
        assert!(
            text.contains("2M*    all          0        0        0        0\n"),
            "{text}"
        );
        assert!(!text.contains("2M*    0 "), "{text}");
        assert!(text.ends_with("hugetlbfs mounts:\n  none\n"), "{text}");
    }

    #[test]
    fn renders_a_kernel_without_hugepages() {
        let report = Report::collect(&FakeHost::empty().fs()).unwrap_err();
        // /proc/mounts is missing in the empty tree; with it, there is simply nothing to show.
        assert!(format!("{report:#}").contains("proc/mounts"));
        let host = FakeHost::empty();
        host.write("proc/mounts", "");
        let report = Report::collect(&host.fs()).unwrap();
        assert_eq!(
            report,
            Report {
                default_size: None,
                numa: false,
                sizes: vec![]
            }
        );
        assert!(report.to_string().contains("supports no hugepages"));
    }

    #[test]
    fn serializes_to_json() {
        let report = Report::collect(&busy_two_node_host().fs()).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        let expected = serde_json::json!({
            "default_size": "2M",
            "numa": true,
            "sizes": [
                {
                    "size": "2M", "size_kib": 2048, "total": 98, "free": 92, "surplus": 2, "reserved": 3,
                    "nodes": [
                        {"node": 0, "total": 64, "free": 60, "surplus": 0},
                        {"node": 1, "total": 34, "free": 32, "surplus": 2}
                    ],
                    "mounts": ["/dev/hugepages"]
                },
                {
                    "size": "1G", "size_kib": 1048576, "total": 1, "free": 1, "surplus": 0, "reserved": 0,
                    "nodes": [
                        {"node": 0, "total": 0, "free": 0, "surplus": 0},
                        {"node": 1, "total": 1, "free": 1, "surplus": 0}
                    ],
                    "mounts": ["/mnt/huge-1G"]
                }
            ]
        });
        assert_eq!(json, expected);
    }
}
