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
//! The tests take turns (one engine at a time): each generator busy-polls
//! its ports, and two at once on this 2-core machine would starve each
//! other's receivers into ring overflows that are no fault of the ports.
//!
//! Missing root or testpmd is a skip, unless `CARACAL_REQUIRE_PRIVILEGED=1`,
//! which makes it a failure. Rates are never asserted (shared machine).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use caracal_perf::pktgen::{Engine, PktgenConfig, Rate, Report, RunPlan, TrafficSpec};
use caracal_testsupport::{privileged, testpmd, wait_until, Netns};

/// This test's turn (see the module docs); a test that failed while
/// holding it does not block the others.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port from its `caracal-pktgen` spec.
fn port<T: std::str::FromStr>(spec: &str) -> Option<T>
where
    T::Err: std::fmt::Debug,
{
    Some(spec.parse().expect("a valid port spec"))
}

/// A run stopped by count.
fn counted(rate: Rate, count: u64) -> RunPlan {
    RunPlan {
        rate,
        duration: None,
        count: Some(count),
    }
}

/// A name unique to this process and call (prefix `pg`).
fn unique(tag: &str) -> String {
    caracal_testsupport::unique("pg", tag)
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
    let _turn = turn();
    let socket = format!("@{}", unique("memif"));
    let mut cfg = base_config();
    cfg.tx = port(&format!("memif:socket={socket},role=client"));
    cfg.rx = port(&format!("memif:socket={socket},role=server"));
    let mut engine = Engine::open(&cfg).expect("open memif ports");

    // A moderate fixed rate, stopped by count.
    let count = 50_000;
    let r = engine.run(counted(Rate::Pps(200_000.0), count));
    assert_exact(&r, count);
    assert_eq!(r.offered_pps, Some(200_000.0));
    assert_eq!(engine.buffers_in_use(), 0, "both pools whole");

    // Line rate on the same connection: backpressure, never loss.
    let r2 = engine.run(counted(Rate::Line, 200_000));
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
    let _turn = turn();
    let socket = format!("@{}", unique("memif1c"));
    let mut cfg = base_config();
    cfg.tx = port(&format!("memif:socket={socket},role=client"));
    cfg.rx = port(&format!("memif:socket={socket},role=server"));
    cfg.cores = vec![0];
    let mut engine = Engine::open(&cfg).expect("open memif ports");
    let r = engine.run(counted(Rate::Line, 100_000));
    assert_exact(&r, 100_000);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn jumbo_frames_memif_client_to_memif_server() {
    let _turn = turn();
    let socket = format!("@{}", unique("memifj"));
    let mut cfg = base_config();
    cfg.tx = port(&format!("memif:socket={socket},role=client"));
    cfg.rx = port(&format!("memif:socket={socket},role=server"));
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9000);
    let mut engine = Engine::open(&cfg).expect("open memif ports");
    assert_eq!(engine.templates().max_size(), 9000);
    // Line rate: the 2 KiB ring buffers carry each frame as a chain of
    // five descriptors; backpressure, never loss, every byte checked.
    let count = 50_000;
    let r = engine.run(counted(Rate::Line, count));
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![9000]);
    assert_eq!(r.rx.as_ref().unwrap().bytes, count * 9000);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn a_frame_above_the_largest_is_refused() {
    let _turn = turn();
    let socket = format!("@{}", unique("memifbig"));
    let mut cfg = base_config();
    cfg.tx = port(&format!("memif:socket={socket},role=client"));
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9217);
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("9216"), "{err}");
}

/// A namespace holding a veth pair `pg-a`/`pg-b`, both up, with IPv6 off
/// so the kernel sends nothing of its own on them.
fn veth_netns(tag: &str) -> Netns {
    let ns = Netns::without_loopback(unique(tag));
    ns.veth_pair("pg-a", "pg-b");
    ns
}

#[test]
fn af_packet_over_a_veth_pair_in_a_netns() {
    let _turn = turn();
    if !privileged() {
        return;
    }
    let ns = veth_netns("afp");
    let mut cfg = base_config();
    cfg.tx = port(&format!("af_packet:iface=pg-a,netns={}", ns.name()));
    cfg.rx = port(&format!("af_packet:iface=pg-b,netns={}", ns.name()));
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Imix;
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let count = 20_000;
    let r = engine.run(counted(Rate::Pps(100_000.0), count));
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![64, 576, 1500]);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn jumbo_frames_af_packet_over_a_veth_pair_with_mtu_9000() {
    let _turn = turn();
    if !privileged() {
        return;
    }
    let ns = veth_netns("afpj");
    let mut cfg = base_config();
    cfg.tx = port(&format!("af_packet:iface=pg-a,netns={}", ns.name()));
    cfg.rx = port(&format!("af_packet:iface=pg-b,netns={}", ns.name()));
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9000);
    // A veth of MTU 1500 cannot: the error says what to do.
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("at most 1514 bytes") && err.contains("mtu 9000"),
        "{err}"
    );
    for ifname in ["pg-a", "pg-b"] {
        ns.ip_ok(&["link", "set", ifname, "mtu", "9000"]);
    }
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let count = 20_000;
    let r = engine.run(counted(Rate::Pps(50_000.0), count));
    assert_exact(&r, count);
    assert_eq!(r.rx.as_ref().unwrap().bytes, count * 9000);
    // The largest frame the MTU allows (9014 bytes) also goes.
    drop(engine);
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Fixed(9014);
    let mut engine = Engine::open(&cfg).expect("open af_packet ports");
    let r = engine.run(counted(Rate::Pps(50_000.0), 5_000));
    assert_exact(&r, 5_000);
    assert_eq!(engine.buffers_in_use(), 0);

    // AF_XDP carries one UMEM frame per packet: refused, naming why.
    cfg.tx = port(&format!("af_xdp:iface=pg-a,netns={}", ns.name()));
    cfg.rx = None;
    drop(engine);
    let err = Engine::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("multi-buffer"), "{err}");
}

#[test]
fn af_xdp_over_a_veth_pair_in_a_netns() {
    let _turn = turn();
    if !privileged() {
        return;
    }
    let ns = veth_netns("axdp");
    let mut cfg = base_config();
    cfg.tx = port(&format!("af_xdp:iface=pg-a,netns={}", ns.name()));
    cfg.rx = port(&format!("af_xdp:iface=pg-b,netns={}", ns.name()));
    cfg.traffic.sizes = caracal_perf::pktgen::FrameSizes::Imix;
    let mut engine = Engine::open(&cfg).expect("open af_xdp ports");
    let count = 20_000;
    let r = engine.run(counted(Rate::Pps(100_000.0), count));
    assert_exact(&r, count);
    assert_eq!(r.frame_sizes, vec![64, 576, 1500]);
    // A second run on the same sockets (a search runs many).
    let r = engine.run(counted(Rate::Pps(200_000.0), count));
    assert_exact(&r, count);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn af_packet_into_af_xdp() {
    let _turn = turn();
    if !privileged() {
        return;
    }
    let ns = veth_netns("pxdp");
    let mut cfg = base_config();
    cfg.tx = port(&format!("af_packet:iface=pg-a,netns={}", ns.name()));
    cfg.rx = port(&format!("af_xdp:iface=pg-b,netns={},mode=copy", ns.name()));
    let mut engine = Engine::open(&cfg).expect("open the ports");
    let count = 20_000;
    let r = engine.run(counted(Rate::Pps(100_000.0), count));
    assert_exact(&r, count);
    assert_eq!(engine.buffers_in_use(), 0);
}

#[test]
fn through_testpmd_io_forwarding_between_two_memifs() {
    let _turn = turn();
    if !privileged() || !testpmd::available() {
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
    // Forwards between the two memif servers (io) until killed on drop.
    let child = Command::new(testpmd::TESTPMD)
        .args(testpmd::eal_args(&prefix))
        .args(["-l", "0,1", "--main-lcore", "0"])
        .args(["--vdev", &vdev(0, &a), "--vdev", &vdev(1, &b)])
        .args(["--", "--forward-mode=io", "--total-num-mbufs=16384"])
        // Non-interactive testpmd forwards until a line arrives on stdin.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dpdk-testpmd");
    let _testpmd = testpmd::Guard::new(child, prefix, vec![a.clone(), b.clone()]);
    wait_until(
        "testpmd made no sockets",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || a.exists() && b.exists(),
    );

    let mut cfg = base_config();
    cfg.tx = port(&format!("memif:socket={},role=client", a.display()));
    cfg.rx = port(&format!("memif:socket={},role=client", b.display()));
    let mut engine = Engine::open(&cfg).expect("connect to testpmd");
    // A low rate. testpmd drops what it cannot put on a full ring, and on
    // a busy 2-core machine its forwarding core (like ours) can be
    // descheduled for tens of milliseconds, so exactness is asserted for
    // the accounting, not for the absence of loss.
    let count = 10_000;
    let r = engine.run(counted(Rate::Pps(10_000.0), count));
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
