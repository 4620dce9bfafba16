//! IPAM across processes: 200 CNI-ADD-like allocations, each in its own
//! process, against one file store, never hand out an address twice.
//!
//! The test binary is its own child: the test re-executes itself with
//! `CARACAL_IPAM_CHILD` set, and the child allocates one handle, prints
//! the result and exits. Two node names are used, one of them busy enough
//! to run out of blocks, so the run claims blocks for both nodes and
//! borrows across them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caracal_control::ipam::{
    AssignRequest, FileStore, IpPool, Ipam, IpamConfig, IpamState, IpamStore,
};
use ipnet::IpNet;

const CHILD_ENV: &str = "CARACAL_IPAM_CHILD";
const RESULT_PREFIX: &str = "ipam-result:";
const TEST_NAME: &str = "ipam_two_hundred_processes_get_distinct_addresses";
const CHILDREN: usize = 200;

fn pools() -> Vec<IpPool> {
    let pool = |name: &str, cidr: &str| IpPool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        block_size: 0,
        node_selector: "all()".into(),
        disabled: false,
        nat_outgoing: false,
    };
    // 254 and 255 usable addresses, four blocks of 64 each.
    vec![pool("v4", "10.77.0.0/24"), pool("v6", "fd00:77::/120")]
}

/// Most pods land on n1, which needs more than the three blocks left
/// after n2 claims one; n2 is light.
fn node_of(index: usize) -> &'static str {
    if index.is_multiple_of(40) {
        "n2"
    } else {
        "n1"
    }
}

fn pod_of(index: usize) -> String {
    format!("pod-{index}")
}

fn ipam(dir: &Path) -> Ipam<FileStore> {
    let ipam = Ipam::new(FileStore::open(dir).unwrap(), IpamConfig::default());
    ipam.set_pools(pools()).unwrap();
    ipam
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The child: `CARACAL_IPAM_CHILD=<dir>|<index>`.
fn child(spec: &str) {
    let (dir, index) = spec.rsplit_once('|').expect("dir|index");
    let index: usize = index.parse().unwrap();
    let req = AssignRequest {
        handle: format!("container-{index}.eth0"),
        node: node_of(index).into(),
        namespace: "default".into(),
        pod: pod_of(index),
        ..AssignRequest::default()
    };
    let assigned = runtime()
        .block_on(ipam(Path::new(dir)).auto_assign(&req))
        .unwrap();
    println!(
        "{RESULT_PREFIX}{index} {} {}",
        assigned.ipv4.unwrap(),
        assigned.ipv6.unwrap()
    );
}

#[test]
fn ipam_two_hundred_processes_get_distinct_addresses() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..CHILDREN)
        .map(|index| {
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{}|{index}", dir.path().display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    // What each child says it got.
    let mut reported: BTreeMap<usize, (IpNet, IpNet)> = BTreeMap::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // The harness may print its own text on the same line first.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(RESULT_PREFIX).map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no result from child:\n{stdout}"));
        let fields: Vec<&str> = line.split(' ').collect();
        let index: usize = fields[0].parse().unwrap();
        reported.insert(
            index,
            (fields[1].parse().unwrap(), fields[2].parse().unwrap()),
        );
    }
    let elapsed = started.elapsed();
    eprintln!("{CHILDREN} allocating processes took {elapsed:?}");

    assert_eq!(reported.len(), CHILDREN);
    let v4: BTreeSet<IpNet> = reported.values().map(|(a, _)| *a).collect();
    let v6: BTreeSet<IpNet> = reported.values().map(|(_, b)| *b).collect();
    assert_eq!(v4.len(), CHILDREN, "IPv4 addresses are distinct");
    assert_eq!(v6.len(), CHILDREN, "IPv6 addresses are distinct");
    assert!(!v4.contains(&"10.77.0.0/32".parse().unwrap()));
    assert!(!v4.contains(&"10.77.0.255/32".parse().unwrap()));
    assert!(!v6.contains(&"fd00:77::/128".parse().unwrap()));

    let rt = runtime();
    let ipam = ipam(dir.path());
    let (state, _) = rt.block_on(ipam.store().load()).unwrap();
    state.check().unwrap();
    check_blocks_and_handles(&state, &reported);
    check_release_and_cooldown(&rt, &ipam, &reported);
    check_gc(&rt, &ipam);
}

/// The stored state matches what the children reported; every block is
/// claimed by one of the two nodes; some address was borrowed.
fn check_blocks_and_handles(state: &IpamState, reported: &BTreeMap<usize, (IpNet, IpNet)>) {
    assert_eq!(state.handles.len(), CHILDREN);
    for (index, (a, b)) in reported {
        let record = &state.handles[&format!("container-{index}.eth0")];
        assert_eq!(record.addresses, vec![a.addr(), b.addr()]);
        assert_eq!(record.node, node_of(*index));
    }
    // 200 addresses of 64-address blocks: all four blocks of each family.
    assert_eq!(state.blocks.len(), 8);
    let mut block_owners = BTreeSet::new();
    for block in &state.blocks {
        let owner = block.affinity.as_deref().expect("every block is claimed");
        block_owners.insert(owner);
        assert!(
            state
                .affinities
                .iter()
                .any(|a| a.node == owner && a.cidr == block.cidr),
            "affinity recorded for {}",
            block.cidr
        );
    }
    assert_eq!(block_owners, BTreeSet::from(["n1", "n2"]));
    let borrowed = state
        .handles
        .values()
        .flat_map(|h| h.addresses.iter().map(move |a| (h, *a)))
        .filter(|(h, addr)| {
            let block = &state.blocks[state.block_index_of(*addr).unwrap()];
            block.affinity.as_deref() != Some(h.node.as_str())
        })
        .count();
    assert!(borrowed > 0, "some node borrowed from the other's blocks");
}

/// Releasing by handle returns the addresses; new pods do not get them
/// back while they cool down.
fn check_release_and_cooldown(
    rt: &tokio::runtime::Runtime,
    ipam: &Ipam<FileStore>,
    reported: &BTreeMap<usize, (IpNet, IpNet)>,
) {
    let mut released = BTreeSet::new();
    for index in 0..10 {
        let handle = format!("container-{index}.eth0");
        let addrs = rt.block_on(ipam.release_by_handle(&handle)).unwrap();
        let (a, b) = reported[&index];
        assert_eq!(addrs, vec![a.addr(), b.addr()]);
        released.extend(addrs);
        assert!(rt
            .block_on(ipam.release_by_handle(&handle))
            .unwrap()
            .is_empty());
    }
    for index in 1000..1010 {
        let req = AssignRequest {
            handle: format!("container-{index}.eth0"),
            node: "n1".into(),
            pod: pod_of(index),
            ..AssignRequest::default()
        };
        let got = rt.block_on(ipam.auto_assign(&req)).unwrap();
        for addr in [got.ipv4.unwrap().addr(), got.ipv6.unwrap().addr()] {
            assert!(
                !released.contains(&addr),
                "{addr} reused during its cool-down"
            );
        }
    }
}

/// GC releases exactly the handles whose pod no longer exists.
fn check_gc(rt: &tokio::runtime::Runtime, ipam: &Ipam<FileStore>) {
    let live: BTreeSet<String> = (0..CHILDREN).step_by(2).map(pod_of).collect();
    let before = rt.block_on(ipam.handles()).unwrap();
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|h| !live.contains(&h.pod))
        .map(|h| h.handle.clone())
        .collect();
    let gone = rt.block_on(ipam.gc(|h| live.contains(&h.pod))).unwrap();
    let gone: BTreeSet<String> = gone.into_iter().map(|h| h.handle).collect();
    assert_eq!(gone, expected);
    // The odd pods from 10 on (0..10 were released already), and the ten
    // pods created after them, which are not in the live list either.
    assert_eq!(gone.len(), 95 + 10);
    let after = rt.block_on(ipam.handles()).unwrap();
    assert_eq!(after.len(), before.len() - gone.len());
    assert!(after.iter().all(|h| live.contains(&h.pod)));
    let used: u64 = rt
        .block_on(ipam.usage())
        .unwrap()
        .pools
        .iter()
        .map(|p| p.used)
        .sum();
    let held: usize = after.iter().map(|h| h.addresses.len()).sum();
    assert_eq!(used, held as u64);
    let addresses: BTreeSet<IpAddr> = after.iter().flat_map(|h| h.addresses.clone()).collect();
    assert_eq!(addresses.len(), held);
    assert!(rt
        .block_on(ipam.gc(|h| live.contains(&h.pod)))
        .unwrap()
        .is_empty());
    // Timestamps are real.
    assert!(after
        .iter()
        .all(|h| h.created.elapsed().unwrap() < Duration::from_secs(600)));
}
