//! Runs the real `hugepages-setup` binary against this host's kernel.
//!
//! `report --json` only reads, so it runs everywhere. Reserving writes
//! sysfs and mounts, so it needs root: without root the test prints
//! "skipped: not root", or fails when `CARACAL_REQUIRE_PRIVILEGED=1`.
//!
//! Other processes may use hugepages while these tests run, so every
//! comparison with the kernel's own counters is retried until a sample is
//! stable, and reservation only ever asks for the counts already there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use caracal_testsupport::privileged;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hugepages-setup");

fn run(args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .output()
        .expect("run hugepages-setup");
    assert!(
        output.status.success(),
        "hugepages-setup {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn run_json(args: &[&str]) -> Value {
    let output = run(args);
    serde_json::from_slice(&output.stdout).expect("hugepages-setup printed JSON")
}

fn u64_at(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {value}"))
}

/// `HugePages_Total` and `HugePages_Free` from `/proc/meminfo`.
fn meminfo_counts() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/meminfo"));
        line[name.len()..]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad line {line:?}"))
    };
    (field("HugePages_Total:"), field("HugePages_Free:"))
}

/// The entry of `report` for the kernel's default size.
fn default_size_entry(report: &Value) -> Value {
    let default = report["default_size"]
        .as_str()
        .expect("the host has a default hugepage size");
    let sizes = report["sizes"].as_array().expect("sizes");
    sizes
        .iter()
        .find(|s| s["size"] == default)
        .expect("the default size is listed")
        .clone()
}

#[test]
fn report_matches_proc_meminfo() {
    for _ in 0..10 {
        let before = meminfo_counts();
        let report = run_json(&["report", "--json"]);
        if meminfo_counts() != before {
            continue; // Someone changed the pools meanwhile; sample again.
        }
        let entry = default_size_entry(&report);
        assert_eq!(
            (u64_at(&entry, "total"), u64_at(&entry, "free")),
            before,
            "report: {entry}"
        );
        let nodes = entry["nodes"].as_array().expect("nodes");
        assert_eq!(report["numa"].as_bool(), Some(!nodes.is_empty()));
        if !nodes.is_empty() {
            let sum = |key| nodes.iter().map(|n| u64_at(n, key)).sum::<u64>();
            assert_eq!((sum("total"), sum("free")), before, "nodes: {nodes:?}");
        }
        return;
    }
    panic!("/proc/meminfo's hugepage counts never held still across a report");
}

#[test]
fn report_lists_the_hugetlbfs_mounts() {
    let report = run_json(&["report", "--json"]);
    let listed: Vec<&str> = report["sizes"]
        .as_array()
        .expect("sizes")
        .iter()
        .flat_map(|s| {
            s["mounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .map(|m| m.as_str().expect("path"))
        })
        .collect();
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    for path in listed {
        let escaped = path.replace(' ', "\\040");
        assert!(
            mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(&escaped) && l.contains(" hugetlbfs ")),
            "{path} is not a hugetlbfs mount in /proc/mounts"
        );
    }
}

/// Unmounts and removes a scratch mount point when dropped.
struct ScratchMount {
    dir: tempfile::TempDir,
}

impl ScratchMount {
    /// The mount point, spelt as `/proc/mounts` will show it.
    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path())
            .expect("resolve temp dir")
            .join("hugepages")
    }
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        let path = self.path();
        if is_mount_point(&path) {
            let status = Command::new("umount").arg(&path).status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("could not unmount {}: {status:?}", path.display());
            }
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let path = path.to_str().expect("utf-8 path");
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path))
}

/// Sets every pool of the default size to the count it already has (the
/// persistent count: total minus surplus) and mounts a scratch hugetlbfs:
/// the real write and mount paths, without taking pages from anyone.
#[test]
fn reserving_the_current_count_changes_nothing() {
    if !privileged() {
        return;
    }
    let scratch = ScratchMount {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let mount_dir = scratch.path();
    let mount_dir = mount_dir.to_str().expect("utf-8 path");

    let report = run_json(&["report", "--json"]);
    let entry = default_size_entry(&report);
    let size = entry["size"].as_str().expect("size").to_owned();
    let persistent = |pool: &Value| u64_at(pool, "total") - u64_at(pool, "surplus");

    // (node, count) per pool; `None` is the machine-wide pool.
    let pools: Vec<(Option<String>, u64)> =
        match entry["nodes"].as_array().expect("nodes").as_slice() {
            [] => vec![(None, persistent(&entry))],
            nodes => nodes
                .iter()
                .map(|n| (Some(u64_at(n, "node").to_string()), persistent(n)))
                .collect(),
        };
    for (i, (node, count)) in pools.iter().enumerate() {
        let count = count.to_string();
        let mut args = vec!["--size", &size, "--mount", mount_dir, "--json"];
        match node {
            Some(node) => args.extend(["--node", node, "--per-node", &count]),
            None => args.extend(["--pages", &count]),
        }
        let outcome = run_json(&args);
        let pool = &outcome["pools"][0];
        assert_eq!(
            outcome["pools"].as_array().map(Vec::len),
            Some(1),
            "{outcome}"
        );
        assert_eq!(pool["error"], Value::Null, "{outcome}");
        // Someone else may have raised the count meanwhile; we never lower it.
        assert!(
            u64_at(pool, "target") >= u64_at(pool, "before"),
            "{outcome}"
        );
        assert!(
            u64_at(pool, "granted") >= u64_at(pool, "target"),
            "{outcome}"
        );
        assert_eq!(outcome["shortfall"], 0, "{outcome}");
        let action = if i == 0 { "mounted" } else { "already-mounted" };
        assert_eq!(outcome["mount"]["action"], action, "{outcome}");
    }

    // Running again is a no-op for the mount too.
    let outcome = run_json(&["--size", &size, "--mount", mount_dir, "--json"]);
    assert_eq!(outcome["mount"]["action"], "already-mounted", "{outcome}");
    assert!(is_mount_point(Path::new(mount_dir)));
    let listed = default_size_entry(&outcome["report"])["mounts"].clone();
    assert!(
        listed
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m == mount_dir),
        "{listed}"
    );
}
