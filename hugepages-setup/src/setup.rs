//! The setup command: size the pools, read back what the kernel granted,
//! mount hugetlbfs, and gather the outcome with a fresh report.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::mounts::{mount_state, parse_mounts, MountState};
use crate::plan::{plan, select_pools, Amount};
use crate::report::Report;
use crate::size::PageSize;
use crate::sysfs::{HostFs, NodeId};

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    /// `None`: the kernel's default size.
    pub size: Option<PageSize>,
    /// `None`: leave the counts alone (mount and report only).
    pub amount: Option<Amount>,
    /// Empty: every node with memory.
    pub nodes: Vec<NodeId>,
    pub shrink: bool,
    pub best_effort: bool,
    /// `None`: do not mount.
    pub mount: Option<PathBuf>,
}

/// What happened, as printed (and as `--json` serializes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub size: PageSize,
    /// `{"total": N}`, `{"per_node": N}`, or null when no count was given.
    pub request: Option<Amount>,
    pub best_effort: bool,
    /// One entry per pool written.
    pub pools: Vec<PoolOutcome>,
    /// Pages asked for but not granted, summed over pools.
    pub shortfall: u64,
    pub mount: Option<MountOutcome>,
    /// The state after setup.
    pub report: Report,
}

/// One pool's resize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolOutcome {
    /// NUMA node, or null for the machine-wide pool (no NUMA sysfs).
    pub node: Option<u32>,
    /// Persistent count before, pages.
    pub before: u64,
    /// Persistent count written, pages.
    pub target: u64,
    /// Persistent count read back, pages.
    pub granted: u64,
    /// Why writing the count failed, if it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountOutcome {
    pub path: PathBuf,
    pub action: MountAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountAction {
    Mounted,
    AlreadyMounted,
}

impl Outcome {
    /// Whether every pool got what was asked.
    pub fn complete(&self) -> bool {
        self.shortfall == 0 && self.pools.iter().all(|p| p.error.is_none())
    }

    pub fn requested_pages(&self) -> u64 {
        self.pools.iter().map(|p| p.target).sum()
    }

    pub fn granted_pages(&self) -> u64 {
        self.pools.iter().map(|p| p.granted.min(p.target)).sum()
    }
}

/// Runs the setup against `fs`, mounting with `mount` (which, on a real
/// host, is [`crate::mounts::mount_hugetlbfs`]).
pub fn run(
    fs: &HostFs,
    request: &SetupRequest,
    mount: impl FnOnce(&Path, PageSize) -> anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    let supported = fs.sizes()?;
    if supported.is_empty() {
        bail!("this kernel has no hugepage support (no /sys/kernel/mm/hugepages)");
    }
    let size = match request.size {
        Some(size) => size,
        None => fs.default_size()?.unwrap_or(supported[0]),
    };
    if !supported.contains(&size) {
        let names: Vec<String> = supported.iter().map(PageSize::to_string).collect();
        bail!(
            "this kernel has no {size} hugepages (supported sizes: {})",
            names.join(", ")
        );
    }

    let mut pools = Vec::new();
    if let Some(amount) = request.amount {
        let selected = select_pools(&fs.pools(size)?, &request.nodes)?;
        let mut current = Vec::with_capacity(selected.len());
        for pool in selected {
            current.push((pool, fs.counters(pool, size)?.persistent()));
        }
        for step in plan(&current, amount, request.shrink) {
            // Written even when unchanged: the kernel treats that as a no-op.
            let error = fs
                .write_count(step.pool, size, step.target)
                .err()
                .map(|e| format!("{e:#}"));
            let granted = fs.counters(step.pool, size)?.persistent();
            pools.push(PoolOutcome {
                node: step.pool.node().map(|n| n.0),
                before: step.current,
                target: step.target,
                granted,
                error,
            });
        }
    }
    let shortfall = pools
        .iter()
        .map(|p| p.target.saturating_sub(p.granted))
        .sum();

    let mount = match &request.mount {
        Some(dir) => Some(ensure_mounted(fs, dir, size, mount)?),
        None => None,
    };

    Ok(Outcome {
        size,
        request: request.amount,
        best_effort: request.best_effort,
        pools,
        shortfall,
        mount,
        report: Report::collect(fs)?,
    })
}

fn ensure_mounted(
    fs: &HostFs,
    dir: &Path,
    size: PageSize,
    mount: impl FnOnce(&Path, PageSize) -> anyhow::Result<()>,
) -> anyhow::Result<MountOutcome> {
    // /proc/mounts shows absolute paths with symlinks resolved, and
    // resolving needs the directory to exist; we would create it to mount
    // on it anyway.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let default_size = fs.default_size()?;
    let state = mount_state(&parse_mounts(&fs.mounts()?), &dir, size, default_size);
    let action = match state {
        MountState::Mounted => MountAction::AlreadyMounted,
        MountState::Occupied(what) => bail!(
            "{} already has {what} mounted on it; choose another directory with --mount DIR, or --no-mount",
            dir.display()
        ),
        MountState::Absent => {
            mount(&dir, size)?;
            if mount_state(&parse_mounts(&fs.mounts()?), &dir, size, default_size) != MountState::Mounted {
                bail!("mounted hugetlbfs on {}, but /proc/mounts does not show it there", dir.display());
            }
            MountAction::Mounted
        }
    };
    Ok(MountOutcome { path: dir, action })
}

impl fmt::Display for PoolOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "node {n}: ")?,
            None => f.write_str("all nodes: ")?,
        }
        if let Some(error) = &self.error {
            return write!(
                f,
                "{} -> {} pages FAILED: {error}",
                self.before, self.target
            );
        }
        if self.before == self.target {
            write!(f, "{} pages, unchanged", self.target)?;
        } else {
            write!(f, "{} -> {} pages", self.before, self.target)?;
        }
        if self.granted < self.target {
            write!(
                f,
                ": the kernel granted only {} (short by {})",
                self.granted,
                self.target - self.granted
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.request {
            Some(Amount::Total(n)) => {
                writeln!(f, "{} hugepages: {n} in total asked for", self.size)?
            }
            Some(Amount::PerPool(n)) => {
                writeln!(f, "{} hugepages: {n} per node asked for", self.size)?
            }
            None => {}
        }
        for pool in &self.pools {
            writeln!(f, "  {pool}")?;
        }
        if let Some(m) = &self.mount {
            let verb = match m.action {
                MountAction::Mounted => "mounted",
                MountAction::AlreadyMounted => "already mounted",
            };
            writeln!(
                f,
                "hugetlbfs (pagesize={}) {verb} at {}",
                self.size,
                m.path.display()
            )?;
        }
        if self.request.is_some() || self.mount.is_some() {
            writeln!(f)?;
        }
        self.report.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::fake::FakeHost;
    use crate::sysfs::{Pool, PoolCounters};

    fn request(amount: Option<Amount>) -> SetupRequest {
        SetupRequest {
            size: None,
            amount,
            nodes: vec![],
            shrink: false,
            best_effort: false,
            mount: None,
        }
    }

    fn no_mount(_: &Path, _: PageSize) -> anyhow::Result<()> {
        panic!("must not mount")
    }

    fn count(host: &FakeHost, pool: Pool, size: PageSize) -> u64 {
        host.fs().counters(pool, size).unwrap().total
    }

    #[test]
    fn reserves_per_node() {
        let host = FakeHost::new(2);
        let (n0, n1) = (Pool::Node(NodeId(0)), Pool::Node(NodeId(1)));
        host.set(
            n1,
            PageSize::SIZE_2M,
            PoolCounters {
                total: 100,
                free: 100,
                surplus: 0,
            },
        );
        let outcome = run(&host.fs(), &request(Some(Amount::PerPool(64))), no_mount).unwrap();
        assert_eq!(outcome.size, PageSize::SIZE_2M);
        assert_eq!(
            outcome.pools,
            [
                PoolOutcome {
                    node: Some(0),
                    before: 0,
                    target: 64,
                    granted: 64,
                    error: None
                },
                PoolOutcome {
                    node: Some(1),
                    before: 100,
                    target: 100,
                    granted: 100,
                    error: None
                },
            ]
        );
        assert!(outcome.complete());
        assert_eq!(
            (outcome.requested_pages(), outcome.granted_pages()),
            (164, 164)
        );
        assert_eq!(count(&host, n0, PageSize::SIZE_2M), 64);
        assert_eq!(count(&host, n1, PageSize::SIZE_2M), 100);
    }

    #[test]
    fn reserves_on_named_nodes_and_sizes_only() {
        let host = FakeHost::new(3);
        let mut req = request(Some(Amount::Total(5)));
        req.size = Some(PageSize::SIZE_1G);
        req.nodes = vec![NodeId(2), NodeId(0)];
        let outcome = run(&host.fs(), &req, no_mount).unwrap();
        let targets: Vec<_> = outcome.pools.iter().map(|p| (p.node, p.target)).collect();
        assert_eq!(targets, [(Some(0), 3), (Some(2), 2)]);
        assert_eq!(count(&host, Pool::Node(NodeId(1)), PageSize::SIZE_1G), 0);
        assert_eq!(count(&host, Pool::Node(NodeId(0)), PageSize::SIZE_2M), 0);
    }

    #[test]
    fn uses_the_global_pool_without_numa() {
        let host = FakeHost::new(0);
        let outcome = run(&host.fs(), &request(Some(Amount::PerPool(8))), no_mount).unwrap();
        assert_eq!(outcome.pools[0].node, None);
        assert_eq!(count(&host, Pool::Global, PageSize::SIZE_2M), 8);
        assert_eq!(outcome.report.sizes[0].total, 8);
    }

    #[test]
    fn keeps_surplus_out_of_the_persistent_count() {
        // 10 pages, 4 of them surplus: asking for the current count (6)
        // must write 6, not 10, or the surplus would become persistent.
        let host = FakeHost::new(1);
        let n0 = Pool::Node(NodeId(0));
        host.set(
            n0,
            PageSize::SIZE_2M,
            PoolCounters {
                total: 10,
                free: 0,
                surplus: 4,
            },
        );
        let outcome = run(&host.fs(), &request(Some(Amount::PerPool(6))), no_mount).unwrap();
        assert_eq!(outcome.pools[0].before, 6);
        assert_eq!(outcome.pools[0].target, 6);
        assert_eq!(
            std::fs::read_to_string(host.fs().count_path(n0, PageSize::SIZE_2M)).unwrap(),
            "6\n"
        );
    }

    #[test]
    fn records_write_failures() {
        let host = FakeHost::new(1);
        let n0 = Pool::Node(NodeId(0));
        // A file that reads as a number but that even root cannot write
        // (a 0444 sysctl) stands in for a pool the kernel refuses to resize.
        let path = host.fs().count_path(n0, PageSize::SIZE_2M);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/proc/sys/kernel/ngroups_max", &path).unwrap();
        let mut req = request(Some(Amount::PerPool(1)));
        req.shrink = true;
        let outcome = run(&host.fs(), &req, no_mount).unwrap();
        let error = outcome.pools[0].error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("writing 1 to ") && error.contains("nr_hugepages"),
            "{error}"
        );
        assert!(!outcome.complete());
    }

    #[test]
    fn refuses_unsupported_sizes_and_unknown_nodes() {
        let host = FakeHost::new(1);
        let mut req = request(Some(Amount::PerPool(1)));
        req.size = Some("16M".parse().unwrap());
        let err = run(&host.fs(), &req, no_mount).unwrap_err().to_string();
        assert!(
            err.contains("no 16M hugepages (supported sizes: 2M, 1G)"),
            "{err}"
        );
        req.size = None;
        req.nodes = vec![NodeId(1)];
        assert!(run(&host.fs(), &req, no_mount).is_err());
        assert_eq!(count(&host, Pool::Node(NodeId(0)), PageSize::SIZE_2M), 0);
    }

    #[test]
    fn mounts_once() {
        let host = FakeHost::new(1);
        let dir = host.dir.path().join("mnt/huge");
        let mut req = request(None);
        req.mount = Some(dir.clone());
        let fake_mount = |d: &Path, size: PageSize| {
            let line = format!(
                "hugetlbfs {} hugetlbfs rw,relatime,pagesize={size} 0 0\n",
                d.display()
            );
            let mounts = host.fs().mounts().unwrap() + &line;
            host.write("proc/mounts", &mounts);
            Ok(())
        };
        let outcome = run(&host.fs(), &req, fake_mount).unwrap();
        let canonical = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(
            outcome.mount,
            Some(MountOutcome {
                path: canonical.clone(),
                action: MountAction::Mounted
            })
        );
        assert_eq!(
            outcome.report.sizes[0].mounts,
            std::slice::from_ref(&canonical)
        );
        assert!(outcome.pools.is_empty());

        let again = run(&host.fs(), &req, no_mount).unwrap();
        assert_eq!(
            again.mount,
            Some(MountOutcome {
                path: canonical,
                action: MountAction::AlreadyMounted
            })
        );

        // The same directory for another size is taken.
        req.size = Some(PageSize::SIZE_1G);
        let err = run(&host.fs(), &req, no_mount).unwrap_err().to_string();
        assert!(
            err.contains("already has hugetlbfs with 2M pages mounted"),
            "{err}"
        );
    }

    #[test]
    fn notices_a_mount_that_did_not_happen() {
        let host = FakeHost::new(1);
        let mut req = request(None);
        req.mount = Some(host.dir.path().join("mnt"));
        let err = run(&host.fs(), &req, |_: &Path, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not show it"), "{err}");
    }

    fn shortfall_outcome() -> Outcome {
        let host = FakeHost::new(2);
        let report = Report::collect(&host.fs()).unwrap();
        Outcome {
            size: PageSize::SIZE_2M,
            request: Some(Amount::Total(128)),
            best_effort: true,
            pools: vec![
                PoolOutcome {
                    node: Some(0),
                    before: 0,
                    target: 64,
                    granted: 64,
                    error: None,
                },
                PoolOutcome {
                    node: Some(1),
                    before: 10,
                    target: 64,
                    granted: 40,
                    error: None,
                },
            ],
            shortfall: 24,
            mount: Some(MountOutcome {
                path: "/dev/hugepages".into(),
                action: MountAction::AlreadyMounted,
            }),
            report,
        }
    }

    #[test]
    fn renders_the_outcome() {
        let outcome = shortfall_outcome();
        assert!(!outcome.complete());
        assert_eq!(
            (outcome.requested_pages(), outcome.granted_pages()),
            (128, 104)
        );
        let text = outcome.to_string();
        let head = "\
2M hugepages: 128 in total asked for
  node 0: 0 -> 64 pages
  node 1: 10 -> 64 pages: the kernel granted only 40 (short by 24)
hugetlbfs (pagesize=2M) already mounted at /dev/hugepages

SIZE ";
        assert!(text.starts_with(head), "{text}");
        let failed = PoolOutcome {
            node: None,
            before: 1,
            target: 2,
            granted: 1,
            error: Some("denied".into()),
        };
        assert_eq!(failed.to_string(), "all nodes: 1 -> 2 pages FAILED: denied");
        let same = PoolOutcome {
            node: Some(3),
            before: 2,
            target: 2,
            granted: 2,
            error: None,
        };
        assert_eq!(same.to_string(), "node 3: 2 pages, unchanged");
    }

    #[test]
    fn serializes_the_outcome() {
        let json = serde_json::to_value(shortfall_outcome()).unwrap();
        assert_eq!(json["size"], "2M");
        assert_eq!(json["request"], serde_json::json!({"total": 128}));
        assert_eq!(json["shortfall"], 24);
        assert_eq!(
            json["pools"][1],
            serde_json::json!({"node": 1, "before": 10, "target": 64, "granted": 40, "error": null})
        );
        assert_eq!(
            json["mount"],
            serde_json::json!({"path": "/dev/hugepages", "action": "already-mounted"})
        );
        assert_eq!(json["report"]["sizes"][0]["size"], "2M");
        let per_node = serde_json::to_value(Amount::PerPool(3)).unwrap();
        assert_eq!(per_node, serde_json::json!({"per_node": 3}));
    }
}
