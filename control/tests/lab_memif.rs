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

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::DataplaneClient;
use caracal_proto::dataplane as pb;
use lab_support::{in_netns, netns_list, ping, privileged, TestLab};
use serde_json::Value;

const TESTPMD: &str = "dpdk-testpmd";
/// The pods' gateway MAC (DESIGN §6), testpmd's destination.
const GATEWAY_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// testpmd's txonly UDP ports (both 9, "discard", unless `--tx-udp`).
const TXONLY_PORT: u16 = 9;
/// Datagrams of one `start tx_first` burst (testpmd's default burst).
const BURST: u64 = 32;
/// A source address that is no pod's.
const SPOOFED: &str = "10.99.0.1";

fn testpmd_available() -> bool {
    let found = Command::new(TESTPMD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    assert!(
        std::env::var("CARACAL_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "CARACAL_REQUIRE_PRIVILEGED=1 but {TESTPMD} is not installed (apt-get install dpdk-dev)"
    );
    eprintln!("skipped: {TESTPMD} is not installed");
    false
}

/// One interactive dpdk-testpmd, the memif client of one socket; killed
/// (and its DPDK runtime folder removed) on drop.
struct Testpmd {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
    prefix: String,
}

impl Testpmd {
    /// Starts testpmd on `socket` with the port's MAC `mac`, forwarding
    /// in icmpecho mode; its txonly bursts go from `tx_ip.0` to `tx_ip.1`.
    fn start(socket: &str, mac: &str, tx_ip: (&str, &str)) -> Testpmd {
        let prefix = format!("caracal-labmemif-{}-{}", std::process::id(), unique());
        let vdev =
            format!("net_memif0,role=client,socket={socket},socket-abstract=no,id=0,mac={mac}");
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "-eL",
                TESTPMD,
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--file-prefix",
                &prefix,
            ])
            .args(["-l", "0,1", "--main-lcore", "0", "--vdev", &vdev])
            .args([
                "--",
                "-i",
                "--total-num-mbufs=16384",
                "--forward-mode=icmpecho",
            ])
            .arg(format!("--tx-ip={},{}", tx_ip.0, tx_ip.1))
            .arg(format!("--eth-peer=0,{GATEWAY_MAC}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {TESTPMD}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            // Raw chunks, not lines: the prompt ends without a newline.
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        let t = Testpmd {
            child,
            stdin,
            output,
            prefix,
        };
        t.wait_for(0, "testpmd> ");
        t
    }

    /// Waits until `text` appears after byte `from`; returns the position
    /// after it.
    fn wait_for(&self, from: usize, text: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.output.lock().unwrap()[from..].find(text) {
                return from + at + text.len();
            }
            assert!(
                Instant::now() < deadline,
                "testpmd: no {text:?}; output:\n{}",
                self.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a command and returns its output, up to the next prompt.
    fn run(&mut self, line: &str) -> String {
        let from = self.output.lock().unwrap().len();
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .expect("testpmd stdin");
        let end = self.wait_for(from, "testpmd> ");
        self.output.lock().unwrap()[from..end].to_owned()
    }

    /// Port 0's (RX-packets, TX-packets).
    fn packets(&mut self) -> (u64, u64) {
        let text = self.run("show port stats 0");
        let field = |name: &str| -> u64 {
            let at = text
                .find(name)
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
            text[at + name.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad {name} in:\n{text}"))
        };
        (field("RX-packets:"), field("TX-packets:"))
    }

    /// Polls the stats until `done` holds (or 20 s pass).
    fn packets_until(&mut self, what: &str, done: impl Fn((u64, u64)) -> bool) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.packets();
            if done(p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "testpmd: {what} never happened; (rx, tx) = {p:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One burst of txonly datagrams, then forwarding stops.
    fn send_burst(&mut self) -> u64 {
        self.run("stop");
        let (_, tx0) = self.packets();
        self.run("start tx_first 1");
        let (_, tx1) = self.packets_until("a burst sent", |(_, tx)| tx > tx0);
        self.run("stop");
        tx1 - tx0
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
    if !privileged() || !testpmd_available() {
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
    let mut app = Testpmd::start(&socket, &mac, (&m_ip.to_string(), &a_ip.to_string()));
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
    let (rx0, _) = app.packets();
    let sender = in_netns(&a_netns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    const SENT: u64 = 20;
    for i in 0..SENT {
        sender
            .send_to(format!("datagram {i}").as_bytes(), (m_ip, 7777))
            .unwrap();
    }
    let (rx1, _) = app.packets_until("20 datagrams received", |(rx, _)| rx >= rx0 + SENT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.packets().0, rx1, "nothing else arrived");
    assert_eq!(rx1 - rx0, SENT);

    // UDP from testpmd: one burst reaches the tap pod's socket on port 9.
    let receiver = in_netns(&a_netns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, TXONLY_PORT))
    })
    .unwrap();
    let spoofed0 = dp.drops("ip4-input", "source-not-allowed");
    let sent = app.send_burst();
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
    let mut app = Testpmd::start(&socket, &mac, (SPOOFED, &a_ip.to_string()));
    dp.wait_connected(&name, 2);
    let sent = app.send_burst();
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
    let mut app = Testpmd::start(&socket, &mac, (&m_ip.to_string(), &a_ip.to_string()));
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
