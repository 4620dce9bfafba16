//! `caracal-pktgen` end to end, in-process:
//!
//! - memif: the generator's tx (a memif client) sends to its own rx (a
//!   memif server) in the same process, at a moderate fixed rate and at
//!   line rate; every packet arrives exactly once, in order, with a
//!   latency sample each, and both buffer pools are whole afterwards.
//!   Needs no privilege (abstract sockets).
//! - af_packet: tx on one end of a veth pair, rx on the other, inside a
//!   uniquely named network namespace. Needs root.
//! - af_xdp: the same with AF_XDP sockets on both ends (veth: native XDP,
//!   copy mode), and AF_PACKET tx into AF_XDP rx. Needs root.
//! - jumbo frames (9000 bytes): memif client to memif server (each frame
//!   a chain of 2 KiB ring buffers, gathered whole), and AF_PACKET across
//!   a veth pair raised to `mtu 9000` (refused with a clear error before
//!   that, and refused on AF_XDP, which has no multi-buffer support).
//!   The sink checks every frame's length and payload bytes.
//! - testpmd: Debian's `dpdk-testpmd` in io-forward mode between two
//!   memif servers, the generator a client of each: the "memif I/O floor"
//!   peer of the comparison harness. Needs root and `dpdk-testpmd`.
//!
//! Missing root or testpmd is a skip, unless `CARACAL_REQUIRE_PRIVILEGED=1`,
//! which makes it a failure. Rates are never asserted (shared machine).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caracal_perf::pktgen::{Engine, PktgenConfig, Rate, Report, RunPlan, TrafficSpec};

fn require_privileged() -> bool {
    std::env::var("CARACAL_REQUIRE_PRIVILEGED").as_deref() == Ok("1")
}

/// True when running as root; a skip (or, under
/// `CARACAL_REQUIRE_PRIVILEGED=1`, a failure) otherwise.
fn privileged() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            !require_privileged(),
            "CARACAL_REQUIRE_PRIVILEGED=1 but this test needs root"
        );
        eprintln!("skipped: not root");
    }
    root
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call.
fn unique(tag: &str) -> String {
    format!(
        "pg{}{}-{tag}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run("ip", &["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn base_config() -> PktgenConfig {
    PktgenConfig {
        traffic: TrafficSpec {
            flows: 100,
            ..TrafficSpec::default()
        },
        buffers: 4096,
        hugepages: false,
        drain: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(30),
        ..PktgenConfig::default()
    }
}

/// Every packet sent arrived exactly once, in order, with latency.
fn assert_exact(r: &Report, count: u64) {
    let tx = r.tx.as_ref().expect("tx report");
    let rx = r.rx.as_ref().expect("rx report");
    assert_eq!(tx.packets, count, "{r}");
    assert_eq!(rx.packets, count, "{r}");
    assert_eq!(rx.bytes, tx.bytes, "{r}");
    assert_eq!(
        (rx.lost, rx.reordered, rx.duplicates, rx.stale, rx.corrupt),
        (0, 0, 0, 0, 0),
        "{r}"
    );
    assert_eq!(rx.loss_ratio, 0.0);
    let lat = rx.latency.expect("latency samples");
    assert_eq!(lat.samples, count);
    assert!(lat.min_ns <= lat.p50_ns && lat.p50_ns <= lat.p99_ns && lat.p99_ns <= lat.max_ns);
    assert!(tx.build_ns_per_packet > 0.0);
}

#[test]
fn memif_client_to_memif_server_in_process() {
    let socket = format!("@{}", unique("memif"));
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("memif:socket={socket},role=client")
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("memif:socket={socket},role=server")
            .parse()
            .unwrap(),
    );
    let mut engine = Engine::open(&cfg).expect("open memif ports");

    // A moderate fixed rate, stopped by count.
    let count = 50_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(200_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(r.offered_pps, Some(200_000.0));
    assert_eq!(engine.buffers_in_use(), 0, "both pools whole");

    // Line rate on the same connection: backpressure, never loss.
    let r2 = engine.run(RunPlan {
        rate: Rate::Line,
        duration: None,
        count: Some(200_000),
    });
    assert_exact(&r2, 200_000);
    assert_ne!(r2.run, r.run, "each run has its own id");
    assert_eq!(engine.buffers_in_use(), 0);

    // The JSON has every figure.
    let json = serde_json::to_value(&r2).unwrap();
    for key in ["tx", "rx", "frame_sizes", "mean_frame", "flows"] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert!(json["rx"]["latency"]["p999_ns"].is_u64());
}

/// With one core, one thread sends and receives in turn: at line rate on
/// a loop through memif, nothing is lost (the sender waits on the ring
/// rather than starving the receiver).
#[test]
fn one_core_alternates_tx_and_rx() {
    let socket = format!("@{}", unique("memif1c"));
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("memif:socket={socket},role=client")
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("memif:socket={socket},role=server")
            .parse()
            .unwrap(),
    );
    cfg.cores = vec![0];
    let mut engine = Engine::open(&cfg).expect("open memif ports");
    let r = engine.run(RunPlan {
        rate: Rate::Line,
        duration: None,
        count: Some(100_000),
    });
    assert_exact(&r, 100_000);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn jumbo_frames_memif_client_to_memif_server() {
    let socket = format!("@{}", unique("memifj"));
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("memif:socket={socket},role=client")
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("memif:socket={socket},role=server")
            .parse()
            .unwrap(),
    );
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9000);
    let mut engine = Engine::open(&cfg).expect("open memif ports");
    assert_eq!(engine.templates().max_size(), 9000);
    // Line rate: the 2 KiB ring buffers carry each frame as a chain of
    // five descriptors; backpressure, never loss, every byte checked.
    let count = 50_000;
    let r = engine.run(RunPlan {
        rate: Rate::Line,
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![9000]);
    assert_eq!(r.rx.as_ref().unwrap().bytes, count * 9000);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn a_frame_above_the_largest_is_refused() {
    let socket = format!("@{}", unique("memifbig"));
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("memif:socket={socket},role=client")
            .parse()
            .unwrap(),
    );
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9217);
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("9216"), "{err}");
}

/// A namespace holding a veth pair `pg-a`/`pg-b`, both up, with IPv6 off
/// so the kernel sends nothing of its own on them.
fn veth_netns(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    let exec = |args: &[&str]| {
        let mut all = vec!["netns", "exec", &ns.0];
        all.extend_from_slice(args);
        run("ip", &all);
    };
    exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    run(
        "ip",
        &[
            "-n", &ns.0, "link", "add", "pg-a", "type", "veth", "peer", "name", "pg-b",
        ],
    );
    for ifname in ["pg-a", "pg-b"] {
        run("ip", &["-n", &ns.0, "link", "set", ifname, "up"]);
    }
    ns
}

#[test]
fn af_packet_over_a_veth_pair_in_a_netns() {
    if !privileged() {
        return;
    }
    let ns = veth_netns("afp");
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("af_packet:iface=pg-a,netns={}", ns.0)
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("af_packet:iface=pg-b,netns={}", ns.0)
            .parse()
            .unwrap(),
    );
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Imix;
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let count = 20_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(100_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![64, 576, 1500]);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn jumbo_frames_af_packet_over_a_veth_pair_with_mtu_9000() {
    if !privileged() {
        return;
    }
    let ns = veth_netns("afpj");
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("af_packet:iface=pg-a,netns={}", ns.0)
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("af_packet:iface=pg-b,netns={}", ns.0)
            .parse()
            .unwrap(),
    );
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9000);
    // A veth of MTU 1500 cannot: the error says what to do.
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("at most 1514 bytes") && err.contains("mtu 9000"),
        "{err}"
    );
    for ifname in ["pg-a", "pg-b"] {
        run("ip", &["-n", &ns.0, "link", "set", ifname, "mtu", "9000"]);
    }
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let count = 20_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(50_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(r.rx.as_ref().unwrap().bytes, count * 9000);
    // The largest frame the MTU allows (9014 bytes) also goes.
    drop(engine);
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9014);
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let r = engine.run(RunPlan {
        rate: Rate::Pps(50_000.0),
        duration: None,
        count: Some(5_000),
    });
    assert_exact(&r, 5_000);
    assert_eq!(engine.buffers_in_use(), 0);

    // AF_XDP carries one UMEM frame per packet: refused, naming why.
    cfg.tx = Some(format!("af_xdp:iface=pg-a,netns={}", ns.0).parse().unwrap());
    cfg.rx = None;
    drop(engine);
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("multi-buffer"), "{err}");
}

#[test]
fn af_xdp_over_a_veth_pair_in_a_netns() {
    if !privileged() {
        return;
    }
    let ns = veth_netns("axdp");
    let mut cfg = base_config();
    cfg.tx = Some(format!("af_xdp:iface=pg-a,netns={}", ns.0).parse().unwrap());
    cfg.rx = Some(format!("af_xdp:iface=pg-b,netns={}", ns.0).parse().unwrap());
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Imix;
    let mut engine = Engine::open(&cfg).expect("open af_xdp ports");
    let count = 20_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(100_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![64, 576, 1500]);
    // A second run on the same sockets (a search runs many).
    let r = engine.run(RunPlan {
        rate: Rate::Pps(200_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn af_packet_into_af_xdp() {
    if !privileged() {
        return;
    }
    let ns = veth_netns("pxdp");
    let mut cfg = base_config();
    cfg.tx = Some(
        format!("af_packet:iface=pg-a,netns={}", ns.0)
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("af_xdp:iface=pg-b,netns={},mode=copy", ns.0)
            .parse()
            .unwrap(),
    );
    let mut engine = Engine::open(&cfg).expect("open the ports");
    let count = 20_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(100_000.0),
        duration: None,
        count: Some(count),
    });
    assert_exact(&r, count);
    assert_eq!(engine.buffers_in_use(), 0);
}

/// dpdk-testpmd with two memif servers, forwarding between them (io),
/// killed and cleaned up on drop.
struct Testpmd {
    child: Child,
    prefix: String,
    sockets: Vec<PathBuf>,
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

fn testpmd_available() -> bool {
    let found = Command::new("dpdk-testpmd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !require_privileged(),
            "CARACAL_REQUIRE_PRIVILEGED=1 but dpdk-testpmd is not installed"
        );
        eprintln!("skipped: dpdk-testpmd is not installed");
    }
    found
}

#[test]
fn through_testpmd_io_forwarding_between_two_memifs() {
    if !privileged() || !testpmd_available() {
        return;
    }
    let dir = std::env::temp_dir().join(unique("tp"));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.sock"), dir.join("b.sock"));
    let prefix = unique("testpmd");
    let vdev = |n: u32, s: &Path| {
        format!(
            "net_memif{n},role=server,socket={},socket-abstract=no,id=0",
            s.display()
        )
    };
    let child = Command::new("dpdk-testpmd")
        .args([
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--file-prefix",
            &prefix,
        ])
        .args(["-l", "0,1", "--main-lcore", "0"])
        .args(["--vdev", &vdev(0, &a), "--vdev", &vdev(1, &b)])
        .args(["--", "--forward-mode=io", "--total-num-mbufs=16384"])
        // Non-interactive testpmd forwards until a line arrives on stdin.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dpdk-testpmd");
    let _testpmd = Testpmd {
        child,
        prefix,
        sockets: vec![a.clone(), b.clone()],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(a.exists() && b.exists()) {
        assert!(Instant::now() < deadline, "testpmd made no sockets");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut cfg = base_config();
    cfg.tx = Some(
        format!("memif:socket={},role=client", a.display())
            .parse()
            .unwrap(),
    );
    cfg.rx = Some(
        format!("memif:socket={},role=client", b.display())
            .parse()
            .unwrap(),
    );
    let mut engine = Engine::open(&cfg).expect("connect to testpmd");
    // A low rate. testpmd drops what it cannot put on a full ring, and on
    // a busy 2-core machine its forwarding core (like ours) can be
    // descheduled for tens of milliseconds, so exactness is asserted for
    // the accounting, not for the absence of loss.
    let count = 10_000;
    let r = engine.run(RunPlan {
        rate: Rate::Pps(10_000.0),
        duration: None,
        count: Some(count),
    });
    let tx = r.tx.as_ref().unwrap();
    let rx = r.rx.as_ref().unwrap();
    assert_eq!(tx.packets, count, "{r}");
    assert_eq!(
        rx.packets + rx.lost,
        count,
        "every packet accounted for: {r}"
    );
    assert_eq!((rx.duplicates, rx.stale, rx.foreign), (0, 0, 0), "{r}");
    assert_eq!(rx.bytes, rx.packets * 64, "frames intact in length");
    assert!(rx.packets >= count * 9 / 10, "testpmd forwarded: {r}");
    if rx.lost > 0 {
        eprintln!("testpmd dropped {} of {count} (busy machine)", rx.lost);
    }
    assert_eq!(rx.latency.unwrap().samples, rx.packets);
    // And at line rate the path works end to end (loss allowed: testpmd
    // drops what our rx ring cannot take).
    let r = engine.run(RunPlan {
        rate: Rate::Line,
        duration: Some(Duration::from_millis(500)),
        count: None,
    });
    let rx = r.rx.as_ref().unwrap();
    assert!(rx.packets > 0 && rx.duplicates == 0 && rx.stale == 0, "{r}");
    assert!(rx.packets <= r.tx.as_ref().unwrap().packets);
    assert_eq!(engine.buffers_in_use(), 0);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
