//! Interoperability with a real third-party memif peer: DPDK's
//! `dpdk-testpmd` with the `net_memif` PMD, against the real
//! `caracal-dataplane` binary driven over its gRPC API.
//!
//! Two memif interfaces with pod addresses and a route between them;
//! testpmd #1 sends UDP from pod A's address (towards a prefix routed to
//! interface B, Ethernet destination the gateway MAC), Caracal routes it,
//! testpmd #2 counts what arrives:
//!
//! 1. an exact phase: `start tx_first 4` sends exactly 4 bursts of 32
//!    packets; testpmd #2 (rxonly, `set verbose 1`) receives exactly 128,
//!    each 64 bytes, parsed as Ethernet/IPv4/UDP, with the MACs Caracal's
//!    rewrite put on it;
//! 2. a load phase: txonly at full speed for two seconds; every packet
//!    is accounted for: testpmd #1's TX = Caracal's rx on A; Caracal's tx
//!    on B = testpmd #2's RX (packets and bytes); Caracal's tx on B plus
//!    its ring-full drops = its rx on A; no drop reason in the graph;
//! 3. reconnection: testpmd #1 is killed (SIGKILL, no goodbye) and
//!    started again; the same interface serves it and the exact phase
//!    passes again, without restarting the dataplane.
//!
//! Both of Caracal's roles are covered: Caracal as the memif server with
//! testpmd clients (what pods do), and Caracal as the client of testpmd
//! servers (socket files made by testpmd).
//!
//! testpmd is run interactively (`-i`, line-buffered by `stdbuf`) with
//! commands written to its stdin and its output parsed (`show port stats
//! 0`, the packet dump of `set verbose 1`); it runs without hugepages
//! (`--no-huge -m 256`) and with a unique `--file-prefix`. DPDK ≥ 21.11
//! defaults memif sockets to the abstract namespace, so filesystem
//! sockets need `socket-abstract=no`.
//!
//! Needs root (like `pods.rs`) and `dpdk-testpmd` (Debian: `dpdk-dev`,
//! with `librte-net-memif23`). Both missing are skips, unless
//! `CARACAL_REQUIRE_PRIVILEGED=1`, which makes them failures.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::DataplaneClient;
use caracal_proto::dataplane as pb;
use caracal_testsupport::privileged;
use caracal_testsupport::testpmd::{self, Interactive as Testpmd, PortStats};
use common::{block_on, counters, unique, Daemon};

/// Pod A's address, the source testpmd #1 sends from.
const A: &str = "10.65.0.1";
/// Pod B's address and a prefix routed to it.
const B: &str = "10.65.0.2";
const ROUTED: &str = "10.66.0.0/16";
const DST: &str = "10.66.0.7";
/// The MAC testpmd #2's port takes; Caracal writes it as destination.
const RX_MAC: &str = "02:00:00:00:00:02";
/// The pods' gateway (Calico's), testpmd #1's destination MAC.
const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// testpmd's txonly frames, bytes.
const FRAME: u64 = 64;
/// `start tx_first 4`: four bursts of testpmd's default 32.
const EXACT: u64 = 4 * 32;

/// A directory for the sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("memif"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts testpmd #`name` with `vdev` (`net_memif0,...`) in forwarding
/// mode `fwd`, its forwarding core on `cpu` (its main core is the other).
/// If the vdev is a memif server, its socket file goes on drop.
fn start_testpmd(name: &str, vdev: &str, fwd: &str, cpu: usize, extra: &[&str]) -> Testpmd {
    let main = 1 - cpu;
    let socket = vdev
        .split(',')
        .any(|kv| kv == "role=server")
        .then(|| {
            vdev.split(',')
                .find_map(|kv| kv.strip_prefix("socket="))
                .map(PathBuf::from)
        })
        .flatten();
    let cores = format!("{main},{cpu}");
    let main = main.to_string();
    let fwd = format!("--forward-mode={fwd}");
    Testpmd::start(
        name,
        unique(name),
        &[
            "-l",
            &cores,
            "--main-lcore",
            &main,
            "--vdev",
            vdev,
            "--log-level",
            "pmd.net.memif:info",
        ],
        &[&[fwd.as_str()], extra].concat(),
        socket.into_iter().collect(),
    )
}

/// Port 0's stats, polled every 200 ms until `done` holds.
fn stats_until(t: &mut Testpmd, what: &str, done: impl Fn(&PortStats) -> bool) -> PortStats {
    t.port_stats_until(0, what, Duration::from_millis(200), done)
}

fn memif_vdev(role: &str, socket: &Path, mac: Option<&str>) -> String {
    let mut v = format!(
        "net_memif0,role={role},socket={},socket-abstract=no,id=0",
        socket.display()
    );
    if let Some(mac) = mac {
        v.push_str(&format!(",mac={mac}"));
    }
    v
}

fn add_memif(
    client: &DataplaneClient,
    name: &str,
    socket: &Path,
    role: pb::MemifRole,
    address: &str,
    peer_mac: &str,
) {
    let mut c = client.interfaces.clone();
    let spec = pb::InterfaceSpec {
        name: name.into(),
        addresses: vec![format!("{address}/32")],
        mtu: 1500,
        kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
            socket: socket.display().to_string(),
            role: role as i32,
            peer_mac: peer_mac.into(),
            ..pb::MemifSpec::default()
        })),
        policy_enforced: false,
        xconnect: String::new(),
    };
    block_on(c.add_interface(pb::AddInterfaceRequest { spec: Some(spec) }))
        .unwrap_or_else(|e| panic!("AddInterface {name}: {e}"));
}

fn add_route(client: &DataplaneClient, prefix: &str, via: &str) {
    let mut c = client.routes.clone();
    let route = pb::Route {
        prefix: prefix.into(),
        paths: vec![pb::Path {
            interface: via.into(),
            gateway: String::new(),
        }],
        origin: String::new(),
    };
    block_on(c.add_route(pb::AddRouteRequest { route: Some(route) })).expect("AddRoute");
}

fn interface(client: &DataplaneClient, name: &str) -> pb::Interface {
    let mut c = client.interfaces.clone();
    block_on(c.list_interfaces(pb::ListInterfacesRequest {}))
        .expect("ListInterfaces")
        .into_inner()
        .interfaces
        .into_iter()
        .find(|i| i.spec.as_ref().is_some_and(|s| s.name == name))
        .unwrap_or_else(|| panic!("no interface {name}"))
}

fn port_counters(client: &DataplaneClient, name: &str) -> pb::PortCounters {
    interface(client, name).counters.unwrap_or_default()
}

fn memif_status(client: &DataplaneClient, name: &str) -> pb::MemifStatus {
    interface(client, name).memif.expect("memif status")
}

fn wait_memif(client: &DataplaneClient, name: &str, connected: bool) -> pb::MemifStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = memif_status(client, name);
        if s.connected == connected {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {}: {s:?}",
            if connected {
                "connected"
            } else {
                "disconnected"
            }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the dataplane has forwarded or dropped everything it got
/// on `a`: its tx on `b` plus tx errors equals its rx on `a`.
fn wait_drained(
    client: &DataplaneClient,
    a: &str,
    b: &str,
) -> (pb::PortCounters, pb::PortCounters) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ca, cb) = (port_counters(client, a), port_counters(client, b));
        if cb.tx_packets + cb.tx_errors == ca.rx_packets {
            std::thread::sleep(Duration::from_millis(100));
            let (ca2, cb2) = (port_counters(client, a), port_counters(client, b));
            if (ca2.rx_packets, cb2.tx_packets) == (ca.rx_packets, cb.tx_packets) {
                return (ca, cb);
            }
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "dataplane did not drain: {a} {ca:?}, {b} {cb:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_no_drops(client: &DataplaneClient) {
    let c = counters(client);
    assert!(c.drops.is_empty(), "unexpected drops: {:?}", c.drops);
}

/// Phase 1: exactly 128 packets from testpmd #1 reach testpmd #2, intact
/// and rewritten. Counters are compared as deltas.
fn exact_phase(client: &DataplaneClient, tx: &mut Testpmd, rx: &mut Testpmd) {
    let (a0, b0) = (
        port_counters(client, "pod-a"),
        port_counters(client, "pod-b"),
    );
    let rx0 = rx.port_stats(0);
    let tx0 = tx.port_stats(0);
    let seen = rx.output_len();
    tx.run("start tx_first 4");
    let tx1 = stats_until(tx, "128 packets sent", |s| {
        s.tx_packets >= tx0.tx_packets + EXACT
    });
    tx.run("stop");
    assert_eq!(
        tx1.tx_packets - tx0.tx_packets,
        EXACT,
        "testpmd #1 sent 4 bursts"
    );
    let rx1 = stats_until(rx, "128 packets received", |s| {
        s.rx_packets >= rx0.rx_packets + EXACT
    });
    assert_eq!(rx1.rx_packets - rx0.rx_packets, EXACT);
    assert_eq!(rx1.rx_bytes - rx0.rx_bytes, EXACT * FRAME);

    // Every packet testpmd #2 dumped: gateway source MAC, the MAC we
    // gave as destination, 64 bytes in one segment, and it parses as
    // IPv4/UDP.
    let dump = rx.since(seen);
    let want = format!(
        "src={} - dst={} - pool=mb_pool_0 - type=0x0800 - length=64 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV4 L4_UDP",
        GATEWAY_MAC.to_uppercase(),
        RX_MAC.to_uppercase()
    );
    let good = dump
        .lines()
        .filter(|l| l.trim_start().starts_with(&want))
        .count();
    let all = dump
        .lines()
        .filter(|l| l.trim_start().starts_with("src="))
        .count();
    assert_eq!(
        (good, all),
        (EXACT as usize, EXACT as usize),
        "dump:\n{dump}"
    );

    let (a1, b1) = wait_drained(client, "pod-a", "pod-b");
    assert_eq!(a1.rx_packets - a0.rx_packets, EXACT);
    assert_eq!(a1.rx_bytes - a0.rx_bytes, EXACT * FRAME);
    assert_eq!(b1.tx_packets - b0.tx_packets, EXACT);
    assert_eq!(b1.tx_bytes - b0.tx_bytes, EXACT * FRAME);
    assert_eq!(b1.tx_errors, b0.tx_errors);
    assert_no_drops(client);
}

/// Phase 2: testpmd #1 sends as fast as it can for two seconds; every
/// packet is accounted for on both sides.
fn load_phase(client: &DataplaneClient, tx: &mut Testpmd, rx: &mut Testpmd) {
    rx.run("set verbose 0");
    let (a0, b0) = (
        port_counters(client, "pod-a"),
        port_counters(client, "pod-b"),
    );
    let (tx0, rx0) = (tx.port_stats(0), rx.port_stats(0));
    tx.run("set fwd txonly");
    tx.run("start");
    std::thread::sleep(Duration::from_secs(2));
    tx.run("stop");
    let tx1 = tx.port_stats(0);
    let (a1, b1) = wait_drained(client, "pod-a", "pod-b");
    let rx1 = stats_until(rx, "testpmd #2 caught up", |s| {
        s.rx_packets - rx0.rx_packets == b1.tx_packets - b0.tx_packets
    });
    let sent = tx1.tx_packets - tx0.tx_packets;
    let received = rx1.rx_packets - rx0.rx_packets;
    let ring_full = b1.tx_errors - b0.tx_errors;
    eprintln!(
        "load: testpmd #1 sent {sent} in 2 s ({} pps), Caracal forwarded {}, \
         dropped {ring_full} on a full ring, testpmd #2 received {received}",
        sent / 2,
        b1.tx_packets - b0.tx_packets
    );
    assert!(sent > EXACT, "testpmd #1 sent only {sent}");
    assert!(received > 0);
    assert_eq!(
        a1.rx_packets - a0.rx_packets,
        sent,
        "Caracal rx = testpmd tx"
    );
    assert_eq!(a1.rx_bytes - a0.rx_bytes, tx1.tx_bytes - tx0.tx_bytes);
    assert_eq!(
        b1.tx_packets - b0.tx_packets,
        received,
        "testpmd rx = Caracal tx"
    );
    assert_eq!(b1.tx_bytes - b0.tx_bytes, rx1.rx_bytes - rx0.rx_bytes);
    assert_eq!(rx1.rx_bytes - rx0.rx_bytes, received * FRAME);
    assert_eq!(received + ring_full, sent, "nothing lost unaccounted");
    assert_no_drops(client);
}

fn tx_extra() -> Vec<String> {
    vec![
        format!("--tx-ip={A},{DST}"),
        format!("--eth-peer=0,{GATEWAY_MAC}"),
    ]
}

#[test]
fn testpmd_clients_talk_through_a_caracal_memif_server() {
    if !privileged() || !testpmd::available() {
        return;
    }
    let dir = TempDir::new();
    let (sock_a, sock_b) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
    let daemon = Daemon::start(&[]);
    let client = daemon.client();
    add_memif(&client, "pod-a", &sock_a, pb::MemifRole::Server, A, "");
    add_memif(&client, "pod-b", &sock_b, pb::MemifRole::Server, B, RX_MAC);
    add_route(&client, ROUTED, "pod-b");
    assert!(
        sock_a.exists() && sock_b.exists(),
        "the server made its sockets"
    );

    let mut rx = start_testpmd(
        "rx",
        &memif_vdev("client", &sock_b, Some(RX_MAC)),
        "rxonly",
        0,
        &[],
    );
    let extra = tx_extra();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut tx = start_testpmd("tx", &memif_vdev("client", &sock_a, None), "io", 1, &extra);
    let status = wait_memif(&client, "pod-a", true);
    assert!(status.peer_name.starts_with("DPDK"), "{status:?}");
    assert_eq!(status.peer_interface, "net_memif0");
    assert_eq!(status.rings.len(), 2);
    wait_memif(&client, "pod-b", true);
    rx.run("set verbose 1");
    rx.run("start");

    exact_phase(&client, &mut tx, &mut rx);
    load_phase(&client, &mut tx, &mut rx);

    // testpmd #1 crashes; the server notices, keeps listening, and
    // serves its successor.
    tx.kill();
    let status = wait_memif(&client, "pod-a", false);
    assert_eq!(status.last_disconnect, "peer closed the socket");
    let mut tx = start_testpmd("tx2", &memif_vdev("client", &sock_a, None), "io", 1, &extra);
    let status = wait_memif(&client, "pod-a", true);
    assert_eq!((status.connects, status.disconnects), (2, 1));
    rx.run("set verbose 1");
    exact_phase(&client, &mut tx, &mut rx);
    assert_eq!(memif_status(&client, "pod-a").peer_faults, 0);

    drop(tx);
    drop(rx);
    common::assert_no_buffer_in_use(&client);
}

#[test]
fn a_caracal_memif_client_talks_to_testpmd_servers() {
    if !privileged() || !testpmd::available() {
        return;
    }
    let dir = TempDir::new();
    let (sock_a, sock_b) = (dir.0.join("a.sock"), dir.0.join("b.sock"));
    let daemon = Daemon::start(&[]);
    let client = daemon.client();

    let mut rx = start_testpmd(
        "srx",
        &memif_vdev("server", &sock_b, Some(RX_MAC)),
        "rxonly",
        0,
        &[],
    );
    let extra = tx_extra();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut tx = start_testpmd("stx", &memif_vdev("server", &sock_a, None), "io", 1, &extra);
    add_memif(&client, "pod-a", &sock_a, pb::MemifRole::Client, A, "");
    add_memif(&client, "pod-b", &sock_b, pb::MemifRole::Client, B, RX_MAC);
    add_route(&client, ROUTED, "pod-b");
    let status = wait_memif(&client, "pod-a", true);
    assert!(status.peer_name.starts_with("DPDK"), "{status:?}");
    assert_eq!(status.region_sizes.len(), 1, "our client made one region");
    wait_memif(&client, "pod-b", true);
    rx.run("set verbose 1");
    rx.run("start");

    exact_phase(&client, &mut tx, &mut rx);
    load_phase(&client, &mut tx, &mut rx);

    // The server dies; our client retries until a new one listens.
    tx.kill();
    wait_memif(&client, "pod-a", false);
    let _ = std::fs::remove_file(&sock_a);
    std::thread::sleep(Duration::from_millis(300));
    let mut tx = start_testpmd(
        "stx2",
        &memif_vdev("server", &sock_a, None),
        "io",
        1,
        &extra,
    );
    let status = wait_memif(&client, "pod-a", true);
    assert_eq!((status.connects, status.disconnects), (2, 1));
    rx.run("set verbose 1");
    exact_phase(&client, &mut tx, &mut rx);

    drop(tx);
    drop(rx);
    common::assert_no_buffer_in_use(&client);
}
