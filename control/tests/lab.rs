//! The lab end to end, through the real binaries (`caracalctl`,
//! `caracal-dataplane`, `caracal-agent`, `caracal`): six pods in two
//! namespaces, dual-stack, every pod reaching every other over ICMP, TCP
//! and UDP; `lab apply` adds a pod and `lab delete` removes one while the
//! lab runs; a daemon that dies is restarted; `lab down` leaves no netns,
//! tap, process or socket behind, and a second `lab down` succeeds.
//!
//! Needs root. Skipped otherwise, unless `CARACAL_REQUIRE_PRIVILEGED=1`,
//! which makes a missing privilege fail.

mod lab_support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use lab_support::{in_netns, netns_list, ping, privileged, TestLab};
use serde_json::Value;

struct Pod {
    id: String,
    netns: String,
    ips: Vec<IpAddr>,
}

fn pods(status: &Value) -> Vec<Pod> {
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Pod {
            id: format!(
                "{}/{}",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            ),
            netns: p["netns"].as_str().unwrap().to_owned(),
            ips: p["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().parse().unwrap())
                .collect(),
        })
        .collect()
}

/// A TCP connection carrying a message each way and a UDP round trip,
/// from `from` to `to` at `ip`.
fn tcp_udp(from: &Pod, to: &Pod, ip: IpAddr, port: u16) -> Result<(), String> {
    let addr = SocketAddr::new(ip, port);
    let listener =
        in_netns(&to.netns, || TcpListener::bind(addr)).map_err(|e| format!("bind {addr}: {e}"))?;
    let udp_server = in_netns(&to.netns, || UdpSocket::bind(addr))
        .map_err(|e| format!("bind udp {addr}: {e}"))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)?;
        udp_server.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut b = [0u8; 64];
        let (n, peer) = udp_server.recv_from(&mut b)?;
        udp_server.send_to(&b[..n], peer)?;
        Ok(())
    });
    let mut s = in_netns(&from.netns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .map_err(|e| format!("tcp {} -> {addr}: {e}", from.id))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back)
        .map_err(|e| format!("tcp {} -> {addr} read: {e}", from.id))?;
    let unspecified: IpAddr = if ip.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let u = in_netns(&from.netns, || {
        UdpSocket::bind(SocketAddr::new(unspecified, 0))
    })
    .map_err(|e| e.to_string())?;
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    u.send_to(b"ping", addr).map_err(|e| e.to_string())?;
    let mut b = [0u8; 64];
    let (n, _) = u
        .recv_from(&mut b)
        .map_err(|e| format!("udp {} -> {addr}: {e}", from.id))?;
    if &b[..n] != b"ping" {
        return Err("udp reply differs".into());
    }
    server
        .join()
        .unwrap()
        .map_err(|e| format!("server {addr}: {e}"))
}

#[test]
fn lab_of_six_pods_in_two_namespaces() {
    if !privileged() {
        return;
    }
    let lab = TestLab::new("t");
    let mut yaml = String::new();
    for ns in ["x", "y"] {
        yaml += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n---\n",
            lab.ns(ns)
        );
        for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
            yaml += &lab.pod_yaml(ns, name, app);
        }
    }
    std::fs::write(lab.manifests.join("cluster.yaml"), yaml).unwrap();
    let up = lab.ok(&["up", lab.manifests.to_str().unwrap()]);
    assert!(up.contains("6 pods ready"), "{up}");

    let status = lab.status();
    let all = pods(&status);
    assert_eq!(all.len(), 6);
    for p in &all {
        assert_eq!(p.ips.len(), 2, "{} is dual-stack: {:?}", p.id, p.ips);
        assert!(p.ips[0].is_ipv4() != p.ips[1].is_ipv4());
        assert_eq!(p.netns, p.id.replace('/', "_"));
    }
    for (i, from) in all.iter().enumerate() {
        for (j, to) in all.iter().enumerate() {
            if i == j {
                continue;
            }
            for (k, ip) in to.ips.iter().enumerate() {
                assert!(
                    ping(&from.netns, ip),
                    "ping {} -> {} {ip}\n{}",
                    from.id,
                    to.id,
                    lab.logs()
                );
                let port = 20000 + (i * 100 + j * 10 + k) as u16;
                tcp_udp(from, to, *ip, port).unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
            }
        }
    }
    let probe = lab.ok(&["probe"]);
    assert!(probe.contains("60/60 probes answered"), "{probe}");

    // lab apply adds a pod; it reaches the others at once.
    let extra = lab.manifests.join("extra.yaml");
    std::fs::write(&extra, lab.pod_yaml("x", "d", "web")).unwrap();
    lab.ok(&["apply", "-f", extra.to_str().unwrap()]);
    let all = pods(&lab.status());
    assert_eq!(all.len(), 7);
    let d = all
        .iter()
        .find(|p| p.id.ends_with("/d"))
        .expect("new pod listed");
    for ip in &all[0].ips {
        assert!(ping(&d.netns, ip), "new pod reaches {}", all[0].id);
    }
    // A second apply of the same object changes nothing.
    let again = lab.ok(&["apply", "-f", extra.to_str().unwrap()]);
    assert!(again.contains("unchanged"), "{again}");

    // lab delete removes one.
    let gone = lab.manifests.join("gone.yaml");
    std::fs::write(&gone, lab.pod_yaml("y", "c", "db")).unwrap();
    let victim_ips = all
        .iter()
        .find(|p| p.id == format!("{}/c", lab.ns("y")))
        .unwrap()
        .ips
        .clone();
    lab.ok(&["delete", "-f", gone.to_str().unwrap()]);
    let all = pods(&lab.status());
    assert_eq!(all.len(), 6);
    assert!(
        !netns_list().contains(&format!("{}_c", lab.ns("y"))),
        "deleted pod's netns removed"
    );
    assert!(
        !ping(&all[0].netns, &victim_ips[0]),
        "deleted pod unreachable"
    );

    // A daemon that dies is restarted, and the pods work again.
    let dp_pid: i32 = std::fs::read_to_string(lab.state.join("dataplane.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dp_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ping(&all[0].netns, &all[1].ips[0]) {
        assert!(
            Instant::now() < deadline,
            "pods did not recover after the dataplane died\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // lab down removes everything; twice is fine.
    let pids: Vec<i32> = ["supervisor.pid", "agent.pid", "dataplane.pid"]
        .iter()
        .filter_map(|f| {
            std::fs::read_to_string(lab.state.join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    lab.ok(&["down"]);
    lab.ok(&["down"]);
    let list = netns_list();
    assert!(!list.contains(&lab.tag), "netns left behind:\n{list}");
    assert!(!lab.state.exists(), "state folder (sockets) left behind");
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {pid} left behind");
    }
}
