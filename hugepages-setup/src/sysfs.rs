//! The kernel's hugepage files: per-node pools under
//! `/sys/devices/system/node/nodeN/hugepages/`, the machine-wide pools
//! under `/sys/kernel/mm/hugepages/`, `/proc/meminfo` and `/proc/mounts`.
//!
//! Every path is taken relative to a root directory (`/` on a real host) so
//! that tests can run against a fake tree in a temporary directory.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::size::PageSize;

const NODES_DIR: &str = "sys/devices/system/node";
const GLOBAL_DIR: &str = "sys/kernel/mm/hugepages";
const MEMINFO: &str = "proc/meminfo";
const MOUNTS: &str = "proc/mounts";

/// A NUMA node number, as in `/sys/devices/system/node/node<N>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One pool of hugepages of a given size that the kernel lets us size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    /// The pages of one NUMA node.
    Node(NodeId),
    /// All pages of the machine; used when the kernel has no NUMA sysfs.
    Global,
}

impl Pool {
    pub fn node(self) -> Option<NodeId> {
        match self {
            Pool::Node(id) => Some(id),
            Pool::Global => None,
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::Node(id) => write!(f, "node {id}"),
            Pool::Global => f.write_str("all nodes"),
        }
    }
}

/// A pool's counters, in pages, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounters {
    /// `nr_hugepages`: every page of the pool, surplus included.
    pub total: u64,
    /// `free_hugepages`: pages not mapped by anyone.
    pub free: u64,
    /// `surplus_hugepages`: pages beyond the persistent count, handed out
    /// by overcommit or left over from lowering the count while in use;
    /// the kernel releases them once they are freed.
    pub surplus: u64,
}

impl PoolCounters {
    /// The persistent count: what writing `nr_hugepages` sets.
    pub fn persistent(&self) -> u64 {
        self.total.saturating_sub(self.surplus)
    }
}

/// The host's hugepage files under `root`.
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    pub fn new(root: impl Into<PathBuf>) -> HostFs {
        HostFs { root: root.into() }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Hugepage sizes the kernel supports, smallest first.
    pub fn sizes(&self) -> anyhow::Result<Vec<PageSize>> {
        let dir = self.path(GLOBAL_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A kernel without hugetlbfs support has no such directory.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut sizes = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            if let Some(size) = entry
                .file_name()
                .to_str()
                .and_then(PageSize::from_sysfs_dir_name)
            {
                sizes.push(size);
            }
        }
        sizes.sort();
        Ok(sizes)
    }

    /// NUMA nodes that hold pages of `size`, in order; empty when the
    /// kernel has no NUMA sysfs. Nodes without memory have no hugepage
    /// directory and are left out.
    pub fn numa_nodes(&self, size: PageSize) -> anyhow::Result<Vec<NodeId>> {
        let dir = self.path(NODES_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut nodes = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let Some(id) = entry.file_name().to_str().and_then(parse_node_dir_name) else {
                continue;
            };
            if self.pool_dir(Pool::Node(id), size).is_dir() {
                nodes.push(id);
            }
        }
        nodes.sort();
        Ok(nodes)
    }

    /// The pools that can be sized for `size`: one per NUMA node, or the
    /// machine-wide pool when there is no NUMA sysfs.
    pub fn pools(&self, size: PageSize) -> anyhow::Result<Vec<Pool>> {
        let nodes = self.numa_nodes(size)?;
        if nodes.is_empty() {
            Ok(vec![Pool::Global])
        } else {
            Ok(nodes.into_iter().map(Pool::Node).collect())
        }
    }

    fn pool_dir(&self, pool: Pool, size: PageSize) -> PathBuf {
        match pool {
            Pool::Node(id) => self
                .path(NODES_DIR)
                .join(format!("node{id}"))
                .join("hugepages")
                .join(size.sysfs_dir_name()),
            Pool::Global => self.path(GLOBAL_DIR).join(size.sysfs_dir_name()),
        }
    }

    /// The file whose value is the pool's page count; writing it resizes
    /// the pool.
    pub fn count_path(&self, pool: Pool, size: PageSize) -> PathBuf {
        self.pool_dir(pool, size).join("nr_hugepages")
    }

    pub fn counters(&self, pool: Pool, size: PageSize) -> anyhow::Result<PoolCounters> {
        let dir = self.pool_dir(pool, size);
        Ok(PoolCounters {
            total: read_count(&dir.join("nr_hugepages"))?,
            free: read_count(&dir.join("free_hugepages"))?,
            surplus: read_count(&dir.join("surplus_hugepages"))?,
        })
    }

    /// Pages of `size` promised to mappings but not yet faulted in
    /// (`resv_hugepages`); the kernel counts them machine-wide only.
    pub fn reserved(&self, size: PageSize) -> anyhow::Result<u64> {
        read_count(&self.pool_dir(Pool::Global, size).join("resv_hugepages"))
    }

    /// Asks the kernel to make the pool's persistent count `count`. The
    /// kernel may grant fewer (memory too small or too fragmented); read
    /// the counters back to learn what it did.
    pub fn write_count(&self, pool: Pool, size: PageSize, count: u64) -> anyhow::Result<()> {
        let path = self.count_path(pool, size);
        fs::write(&path, format!("{count}\n"))
            .with_context(|| format!("writing {count} to {}", path.display()))
    }

    /// The default hugepage size (`Hugepagesize` in `/proc/meminfo`), which
    /// is also the size of a hugetlbfs mount without `pagesize=`.
    pub fn default_size(&self) -> anyhow::Result<Option<PageSize>> {
        let path = self.path(MEMINFO);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        parse_default_size(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The text of `/proc/mounts`.
    pub fn mounts(&self) -> anyhow::Result<String> {
        let path = self.path(MOUNTS);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

fn parse_node_dir_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node")?;
    // `u32::from_str` takes a leading '+', which no node directory has.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(NodeId)
}

fn read_count(path: &Path) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| {
        format!(
            "{}: expected a page count, found {:?}",
            path.display(),
            text.trim()
        )
    })
}

/// Finds `Hugepagesize:       2048 kB` in the text of `/proc/meminfo`.
fn parse_default_size(meminfo: &str) -> anyhow::Result<Option<PageSize>> {
    let Some(line) = meminfo.lines().find(|l| l.starts_with("Hugepagesize:")) else {
        return Ok(None);
    };
    let value = line["Hugepagesize:".len()..].trim();
    let Some(kib) = value.strip_suffix("kB").map(str::trim) else {
        bail!("unexpected Hugepagesize line {line:?}");
    };
    match kib.parse().ok().and_then(PageSize::from_kib) {
        Some(size) => Ok(Some(size)),
        None => bail!("unexpected Hugepagesize line {line:?}"),
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake `/sys` and `/proc` in a temporary directory.

    use super::*;

    #[derive(Debug)]
    pub struct FakeHost {
        pub dir: tempfile::TempDir,
    }

    impl FakeHost {
        /// An empty tree: no hugepage support at all.
        pub fn empty() -> FakeHost {
            FakeHost {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        /// A host with 2M (default) and 1G pages, and `nodes` NUMA nodes
        /// (0 means no NUMA sysfs), every pool empty.
        pub fn new(nodes: u32) -> FakeHost {
            let host = FakeHost::empty();
            host.write(
                "proc/meminfo",
                "MemTotal:       16384000 kB\nHugepagesize:       2048 kB\n",
            );
            host.write("proc/mounts", "sysfs /sys sysfs rw,relatime 0 0\n");
            for size in [PageSize::SIZE_2M, PageSize::SIZE_1G] {
                host.set(Pool::Global, size, PoolCounters::default());
                host.write(
                    &format!("{GLOBAL_DIR}/{}/resv_hugepages", size.sysfs_dir_name()),
                    "0\n",
                );
                for id in 0..nodes {
                    host.set(Pool::Node(NodeId(id)), size, PoolCounters::default());
                }
            }
            if nodes > 0 {
                // Files beside the node directories that must be ignored.
                host.write(
                    &format!("{NODES_DIR}/online"),
                    &format!("0-{}\n", nodes - 1),
                );
                host.write(&format!("{NODES_DIR}/power/control"), "auto\n");
            }
            host
        }

        pub fn fs(&self) -> HostFs {
            HostFs::new(self.dir.path())
        }

        pub fn write(&self, relative: &str, contents: &str) {
            let path = self.dir.path().join(relative);
            fs::create_dir_all(path.parent().expect("relative path has a parent")).expect("mkdir");
            fs::write(path, contents).expect("write fake file");
        }

        /// Sets a pool's counters (and the machine-wide sums, as the kernel
        /// would, when `pool` is a node).
        pub fn set(&self, pool: Pool, size: PageSize, counters: PoolCounters) {
            let fs = self.fs();
            let dir = fs.pool_dir(pool, size);
            let dir = dir
                .strip_prefix(self.dir.path())
                .expect("under root")
                .to_str()
                .expect("utf-8");
            self.write(
                &format!("{dir}/nr_hugepages"),
                &format!("{}\n", counters.total),
            );
            self.write(
                &format!("{dir}/free_hugepages"),
                &format!("{}\n", counters.free),
            );
            self.write(
                &format!("{dir}/surplus_hugepages"),
                &format!("{}\n", counters.surplus),
            );
            if let Pool::Node(_) = pool {
                let mut sum = PoolCounters::default();
                for node in fs.numa_nodes(size).expect("nodes") {
                    let c = fs.counters(Pool::Node(node), size).expect("counters");
                    sum.total += c.total;
                    sum.free += c.free;
                    sum.surplus += c.surplus;
                }
                self.set(Pool::Global, size, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    #[test]
    fn finds_sizes_and_nodes() {
        let host = FakeHost::new(2);
        let fs = host.fs();
        assert_eq!(
            fs.sizes().unwrap(),
            vec![PageSize::SIZE_2M, PageSize::SIZE_1G]
        );
        assert_eq!(
            fs.numa_nodes(PageSize::SIZE_2M).unwrap(),
            vec![NodeId(0), NodeId(1)]
        );
        assert_eq!(
            fs.pools(PageSize::SIZE_1G).unwrap(),
            vec![Pool::Node(NodeId(0)), Pool::Node(NodeId(1))]
        );
        assert_eq!(fs.default_size().unwrap(), Some(PageSize::SIZE_2M));
    }

    #[test]
    fn orders_nodes_numerically_and_skips_memoryless_ones() {
        let host = FakeHost::new(11);
        // A CPU-only node has a directory but no hugepages in it.
        host.write(&format!("{NODES_DIR}/node11/cpulist"), "4-7\n");
        host.write(&format!("{NODES_DIR}/nodefoo/x"), "");
        let nodes = host.fs().numa_nodes(PageSize::SIZE_2M).unwrap();
        assert_eq!(nodes, (0..11).map(NodeId).collect::<Vec<_>>());
    }

    #[test]
    fn falls_back_to_the_global_pool_without_numa_sysfs() {
        let host = FakeHost::new(0);
        assert_eq!(
            host.fs().pools(PageSize::SIZE_2M).unwrap(),
            vec![Pool::Global]
        );
    }

    #[test]
    fn no_hugepage_support_means_no_sizes() {
        let host = FakeHost::empty();
        assert_eq!(host.fs().sizes().unwrap(), vec![]);
        assert_eq!(host.fs().default_size().unwrap(), None);
    }

    #[test]
    fn reads_and_writes_counters() {
        let host = FakeHost::new(2);
        let fs = host.fs();
        let node1 = Pool::Node(NodeId(1));
        host.set(
            node1,
            PageSize::SIZE_2M,
            PoolCounters {
                total: 70,
                free: 60,
                surplus: 6,
            },
        );
        let c = fs.counters(node1, PageSize::SIZE_2M).unwrap();
        assert_eq!(
            c,
            PoolCounters {
                total: 70,
                free: 60,
                surplus: 6
            }
        );
        assert_eq!(c.persistent(), 64);
        assert_eq!(
            fs.counters(Pool::Global, PageSize::SIZE_2M).unwrap().total,
            70
        );

        fs.write_count(node1, PageSize::SIZE_2M, 128).unwrap();
        let path = fs.count_path(node1, PageSize::SIZE_2M);
        assert!(
            path.ends_with("sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages")
        );
        assert_eq!(fs::read_to_string(path).unwrap(), "128\n");
    }

    #[test]
    fn reports_bad_files_with_their_path() {
        let host = FakeHost::new(1);
        host.write(
            &format!("{NODES_DIR}/node0/hugepages/hugepages-2048kB/free_hugepages"),
            "lots\n",
        );
        let err = host
            .fs()
            .counters(Pool::Node(NodeId(0)), PageSize::SIZE_2M)
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("node0/hugepages/hugepages-2048kB/free_hugepages"),
            "{message}"
        );
        assert!(message.contains("\"lots\""), "{message}");
    }

    #[test]
    fn parses_meminfo() {
        let text = "HugePages_Total:      0\nHugepagesize:    1048576 kB\nHugetlb:    0 kB\n";
        assert_eq!(parse_default_size(text).unwrap(), Some(PageSize::SIZE_1G));
        assert_eq!(parse_default_size("MemTotal: 1 kB\n").unwrap(), None);
        assert!(parse_default_size("Hugepagesize: 3 kB\n").is_err());
        assert!(parse_default_size("Hugepagesize: 2048\n").is_err());
    }

    #[test]
    fn node_dir_names() {
        assert_eq!(parse_node_dir_name("node0"), Some(NodeId(0)));
        assert_eq!(parse_node_dir_name("node12"), Some(NodeId(12)));
        for name in ["node", "node+1", "nodes", "online", "has_memory"] {
            assert_eq!(parse_node_dir_name(name), None, "{name}");
        }
    }
}
