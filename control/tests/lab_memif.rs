//! Memif pods in the lab, end to end through the real binaries
//! (`caracalctl`, `caracal-dataplane`, `caracal-agent`, `caracal`), with
//! DPDK's `dpdk-testpmd` as the memif pod's application:
//!
//! - `lab up` with a tap pod and a memif pod: the memif pod shows
//!   `interface: "memif"` and its `socket` in `lab status --json`, the
//!   socket is there (`<state>/memif/<namespace>-<pod>/memif.sock`), its
//!   netns has only `lo`, and the dataplane runs a memif server (id 0,
//!   Ethernet) with the pod's MAC as peer; `lab probe` leaves it out
//!   while no application is connected;
//! - testpmd connects as the client (`--forward-mode=icmpecho`, which
//!   answers every ICMP echo request and ARP request it gets, whatever
//!   the address): the tap pod pings the memif pod's IPv4 address, and
//!   `lab probe` now shows it answering;
//! - UDP from the tap pod reaches testpmd (its rx counter);
//! - UDP from testpmd (`start tx_first`: one burst of its txonly
//!   datagrams, `--tx-ip=<memif pod>,<tap pod>`, UDP port 9 to port 9,
//!   to the gateway MAC ee:ee:ee:ee:ee:ee) reaches a socket the tap pod
//!   bound to 0.0.0.0:9;
//! - a testpmd that sends from an address that is not the pod's: every
//!   datagram is dropped (`ip4-input/source-not-allowed`), none arrives;
//! - the dataplane is killed: once the supervisor has restarted it, the
//!   agent replays the memif server on the same socket and a new testpmd
//!   is answered again;
//! - `lab down` removes the socket with the rest.
//!
//! testpmd runs interactively (`-i`, line-buffered through `stdbuf`),
//! without hugepages, with a unique `--file-prefix`; commands go to its
//! stdin and `show port stats 0` is parsed, as in the dataplane's
//! `memif_testpmd.rs`.
//!
//! Needs root and `dpdk-testpmd` (Debian: `dpdk-dev`), and the workspace's
//! binaries built (`cargo build`). Missing root or testpmd is a skip,
//! unless `CARACAL_REQUIRE_PRIVILEGED=1`, which makes it a failure.

mod lab_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::DataplaneClient;
use caracal_proto::dataplane as pb;
use caracal_testsupport::testpmd::{self, Interactive as Testpmd};
use lab_support::{in_netns, netns_list, ping, privileged, TestLab};
use serde_json::Value;

/// The pods' gateway MAC (DESIGN §6), testpmd's destination.
const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// testpmd's txonly UDP ports (both 9, "discard", unless `--tx-udp`).
const TXONLY_PORT: u16 = 9;
/// Datagrams of one `start tx_first` burst (testpmd's default burst).
const BURST: u64 = 32;
/// A source address that is no pod's.
const SPOOFED: &str = "10.99.0.1";

/// Starts testpmd as the memif client of `socket` with the port's MAC
/// `mac`, forwarding in icmpecho mode; its txonly bursts go from
/// `tx_ip.0` to `tx_ip.1`. Killed (and its DPDK runtime folder removed)
/// on drop.
fn start_testpmd(socket: &str, mac: &str, tx_ip: (&str, &str)) -> Testpmd {
    let vdev = format!("net_memif0,role=client,socket={socket},socket-abstract=no,id=0,mac={mac}");
    let tx_ip = format!("--tx-ip={},{}", tx_ip.0, tx_ip.1);
    let eth_peer = format!("--eth-peer=0,{GATEWAY_MAC}");
    Testpmd::start(
        "testpmd",
        caracal_testsupport::unique("caracal-labmemif-", "tp"),
        &["-l", "0,1", "--main-lcore", "0", "--vdev", &vdev],
        &["--forward-mode=icmpecho", &tx_ip, &eth_peer],
        Vec::new(),
    )
}

/// Port 0's RX-packets once `done` holds of them (polled, up to 20 s).
fn rx_packets_until(app: &mut Testpmd, what: &str, done: impl Fn(u64) -> bool) -> u64 {
    app.port_stats_until(0, what, Duration::from_millis(100), |s| done(s.rx_packets))
        .rx_packets
}

/// One burst of txonly datagrams, then forwarding stops; how many.
fn send_burst(app: &mut Testpmd) -> u64 {
    app.run("stop");
    let tx0 = app.port_stats(0).tx_packets;
    app.run("start tx_first 1");
    let tx1 = app
        .port_stats_until(0, "a burst sent", Duration::from_millis(100), |s| {
            s.tx_packets > tx0
        })
        .tx_packets;
    app.run("stop");
    tx1 - tx0
}

/// The lab's dataplane, for what only it can tell.
struct Dataplane {
    rt: tokio::runtime::Runtime,
    client: DataplaneClient,
}

impl Dataplane {
    fn connect(socket: &Path) -> Dataplane {
        Dataplane::try_connect(socket).expect("connect to the lab's dataplane")
    }

    fn try_connect(socket: &Path) -> Option<Dataplane> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(DataplaneClient::connect(socket)).ok()?;
        Some(Dataplane { rt, client })
    }

    /// Whether the dataplane runs interface `name`.
    fn has(&self, name: &str) -> bool {
        let mut c = self.client.interfaces.clone();
        self.rt
            .block_on(c.list_interfaces(pb::ListInterfacesRequest {}))
            .is_ok_and(|r| {
                r.into_inner()
                    .interfaces
                    .iter()
                    .any(|i| i.spec.as_ref().is_some_and(|s| s.name == name))
            })
    }

    fn interface(&self, name: &str) -> pb::Interface {
        let mut c = self.client.interfaces.clone();
        self.rt
            .block_on(c.list_interfaces(pb::ListInterfacesRequest {}))
            .expect("ListInterfaces")
            .into_inner()
            .interfaces
            .into_iter()
            .find(|i| i.spec.as_ref().is_some_and(|s| s.name == name))
            .unwrap_or_else(|| panic!("the dataplane has no interface {name}"))
    }

    /// Waits for connection number `connects` of `name`'s memif.
    fn wait_connected(&self, name: &str, connects: u64) -> pb::MemifStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.interface(name).memif.expect("memif status");
            if status.connected && status.connects >= connects {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no application connected: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Drops counted for `node`/`reason`, over all workers.
    fn drops(&self, node: &str, reason: &str) -> u64 {
        let mut c = self.client.stats.clone();
        self.rt
            .block_on(c.get_counters(pb::GetCountersRequest {}))
            .expect("GetCounters")
            .into_inner()
            .drops
            .iter()
            .filter(|d| d.node == node && d.reason == reason)
            .map(|d| d.count)
            .sum()
    }
}

fn pod<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

fn ipv4(pod: &Value) -> Ipv4Addr {
    pod["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i.as_str()?.parse().ok())
        .expect("an IPv4 address")
}

/// Datagrams that reach `socket` until it has been quiet for 1 s, with
/// their source.
fn drain(socket: &UdpSocket) -> Vec<(SocketAddr, usize)> {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        got.push((from, n));
    }
    got
}

#[test]
fn a_memif_pod_served_by_testpmd() {
    if !privileged() || !testpmd::available() {
        return;
    }
    let lab = TestLab::new("m");
    let ns = lab.ns("x");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n{}\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: m\n  namespace: {ns}\n  annotations:\n    \
         caracal.io/interface: memif\nspec:\n  containers:\n  - {{name: app, image: dpdk}}\n",
        lab.pod_yaml("x", "a", "web")
    );
    std::fs::write(lab.manifests.join("pods.yaml"), yaml).unwrap();
    let up = lab.ok(&["up", lab.manifests.to_str().unwrap()]);
    assert!(up.contains("2 pods ready"), "{up}");

    // Status: the tap pod as ever; the memif pod with its socket.
    let status = lab.status();
    let (a, m) = (pod(&status, "a"), pod(&status, "m"));
    assert_eq!(a["interface"], "tap");
    assert!(a.get("socket").is_none(), "{a}");
    assert_eq!(m["interface"], "memif");
    let socket = m["socket"]
        .as_str()
        .expect("the memif pod's socket")
        .to_owned();
    assert_eq!(
        PathBuf::from(&socket),
        lab.state
            .join("memif")
            .join(format!("{ns}-m"))
            .join("memif.sock")
    );
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &std::fs::metadata(&socket).unwrap().file_type()
    ));
    let m_netns = m["netns"].as_str().unwrap();
    let links = Command::new("ip")
        .args(["-n", m_netns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(
        links.lines().count(),
        1,
        "only lo in the memif pod's netns:\n{links}"
    );
    assert!(links.contains("lo:"), "{links}");

    let dp = Dataplane::connect(&lab.state.join("dataplane.sock"));
    let name = format!("{ns}/m");
    let iface = dp.interface(&name);
    let Some(pb::interface_spec::Kind::Memif(spec)) =
        iface.spec.as_ref().and_then(|s| s.kind.clone())
    else {
        panic!("{name} is not a memif: {iface:?}")
    };
    assert_eq!(spec.socket, socket);
    assert_eq!(
        (spec.role, spec.id, spec.mode),
        (
            pb::MemifRole::Server as i32,
            0,
            pb::MemifMode::Ethernet as i32
        )
    );
    assert!(spec.secret.is_empty());
    let mac = iface.mac.clone();
    assert_eq!(spec.peer_mac, mac);

    // No application yet: nothing probes the memif pod.
    let probe = lab.json(&["probe"]);
    assert!(
        probe["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["to"] != name.as_str()),
        "{probe}"
    );
    assert_eq!(probe["unprobed"], serde_json::json!([name]));

    // testpmd connects and answers pings.
    let (a_ip, m_ip) = (ipv4(a), ipv4(m));
    let a_netns = a["netns"].as_str().unwrap().to_owned();
    let mut app = start_testpmd(&socket, &mac, (&m_ip.to_string(), &a_ip.to_string()));
    let memif = dp.wait_connected(&name, 1);
    assert!(memif.peer_name.starts_with("DPDK"), "{memif:?}");
    app.run("start");
    assert!(
        ping(&a_netns, &IpAddr::V4(m_ip)),
        "ping {m_ip} from the tap pod\n{}",
        lab.logs()
    );
    let probe = lab.json(&["probe"]);
    let to_m: Vec<&Value> = probe["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["to"] == name.as_str())
        .collect();
    assert!(
        to_m.iter()
            .any(|r| r["address"] == m_ip.to_string().as_str() && r["ok"] == true),
        "the probe reaches the memif pod's IPv4 address: {probe}"
    );
    assert_eq!(probe["unprobed"], serde_json::json!([]));

    // UDP from the tap pod: testpmd receives every datagram.
    let rx0 = app.port_stats(0).rx_packets;
    let sender = in_netns(&a_netns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    const SENT: u64 = 20;
    for i in 0..SENT {
        sender
            .send_to(format!("datagram {i}").as_bytes(), (m_ip, 7777))
            .unwrap();
    }
    let rx1 = rx_packets_until(&mut app, "20 datagrams received", |rx| rx >= rx0 + SENT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.port_stats(0).rx_packets, rx1, "nothing else arrived");
    assert_eq!(rx1 - rx0, SENT);

    // UDP from testpmd: one burst reaches the tap pod's socket on port 9.
    let receiver = in_netns(&a_netns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, TXONLY_PORT))
    })
    .unwrap();
    let spoofed0 = dp.drops("ip4-input", "source-not-allowed");
    let sent = send_burst(&mut app);
    assert_eq!(sent, BURST);
    let got = drain(&receiver);
    assert_eq!(
        got.len() as u64,
        sent,
        "every datagram testpmd sent arrived: {got:?}\n{}",
        lab.logs()
    );
    assert!(
        got.iter()
            .all(|(from, _)| *from == SocketAddr::from((m_ip, TXONLY_PORT))),
        "{got:?}"
    );
    assert_eq!(dp.drops("ip4-input", "source-not-allowed"), spoofed0);

    // An application that sends from another address: all dropped.
    drop(app);
    let mut app = start_testpmd(&socket, &mac, (SPOOFED, &a_ip.to_string()));
    dp.wait_connected(&name, 2);
    let sent = send_burst(&mut app);
    assert_eq!(sent, BURST);
    let got = drain(&receiver);
    assert!(got.is_empty(), "spoofed datagrams arrived: {got:?}");
    let spoofed = dp.drops("ip4-input", "source-not-allowed") - spoofed0;
    assert_eq!(spoofed, BURST, "counted as source-not-allowed");
    drop(app);

    // The dataplane dies; the agent replays the memif server on the same
    // socket once it is back, and a new application is served.
    let pid: i32 = std::fs::read_to_string(lab.state.join("dataplane.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dp = loop {
        std::thread::sleep(Duration::from_millis(200));
        let back = std::fs::read_to_string(lab.state.join("dataplane.pid"))
            .is_ok_and(|p| p.trim() != pid.to_string())
            && Dataplane::try_connect(&lab.state.join("dataplane.sock"))
                .is_some_and(|d| d.has(&name));
        if back {
            break Dataplane::connect(&lab.state.join("dataplane.sock"));
        }
        assert!(
            Instant::now() < deadline,
            "the memif pod was not replayed\n{}",
            lab.logs()
        );
    };
    let mut app = start_testpmd(&socket, &mac, (&m_ip.to_string(), &a_ip.to_string()));
    dp.wait_connected(&name, 1);
    app.run("start");
    assert!(
        ping(&a_netns, &IpAddr::V4(m_ip)),
        "ping {m_ip} after the dataplane's restart\n{}",
        lab.logs()
    );
    drop(app);

    // lab down takes the socket with it.
    lab.ok(&["down"]);
    assert!(!Path::new(&socket).exists(), "memif socket left behind");
    assert!(!netns_list().contains(&lab.tag), "netns left behind");
}
