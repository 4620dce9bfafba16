//! Pods in network namespaces, wired with taps through the real
//! `caracal-dataplane` binary and its gRPC API, talk to each other: ICMP,
//! TCP (1 MiB echoed and checked byte for byte) and UDP over IPv4 and
//! IPv6; TTL is decremented; unrouted destinations and expired TTLs get
//! ICMP errors; malformed frames are dropped and counted by reason; no
//! buffer leaks; SIGTERM removes the taps.
//!
//! Needs root (netns, tap). Skipped otherwise, unless
//! `CARACAL_REQUIRE_PRIVILEGED=1`, which makes a missing privilege fail.
#![allow(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use caracal_dataplane::port::tap::run_in_netns;
use caracal_testsupport::privileged;
use common::*;

struct TwoPods {
    daemon: Daemon,
    a: Netns,
    b: Netns,
}

const A4: &str = "10.65.0.1";
const B4: &str = "10.65.0.2";
const A6: &str = "fd00:65::1";
const B6: &str = "fd00:65::2";

fn two_pods() -> TwoPods {
    let daemon = Daemon::start(&[]);
    let a = netns("a");
    let b = netns("b");
    let client = daemon.client();
    add_tap_pod(
        &client,
        "default/a",
        &a,
        &[&format!("{A4}/32"), &format!("{A6}/128")],
    );
    add_tap_pod(
        &client,
        "default/b",
        &b,
        &[&format!("{B4}/32"), &format!("{B6}/128")],
    );
    TwoPods { daemon, a, b }
}

fn ping(ns: &Netns, args: &[&str]) -> String {
    let mut cmd = vec!["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2"];
    cmd.extend_from_slice(args);
    let out = ns.exec(&cmd);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pods_exchange_icmp_tcp_udp_over_both_families() {
    if !privileged() {
        return;
    }
    let pods = two_pods();
    let client = pods.daemon.client();

    // ICMP echo, with the TTL decremented once by the dataplane (Linux
    // sends 64; the reply arrives with 63).
    for dst in [B4, B6] {
        let out = ping(&pods.a, &[dst]);
        assert!(out.contains(" 0% packet loss"), "ping {dst}:\n{out}");
        assert!(
            out.contains("ttl=63"),
            "TTL/hop limit decremented once:\n{out}"
        );
    }

    for (a, b) in [(A4, B4), (A6, B6)] {
        tcp_echo_1mib(&pods, a, b);
        udp_request_response(&pods, a, b);
    }

    assert_no_buffer_in_use(&client);
}

/// Sends 1 MiB from pod a to pod b over TCP; b echoes it; a checks it.
fn tcp_echo_1mib(pods: &TwoPods, a: &str, b: &str) {
    let server_addr = SocketAddr::new(b.parse().unwrap(), 5001);
    let listener = run_in_netns(&pods.b.path(), || TcpListener::bind(server_addr))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
            total += n;
        }
        (total, peer)
    });
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut s = run_in_netns(&pods.a.path(), || {
        TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("connect {server_addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = s.try_clone().unwrap();
    let expect = data.clone();
    let rx = std::thread::spawn(move || {
        let mut back = vec![0u8; expect.len()];
        reader.read_exact(&mut back).unwrap();
        back == expect
    });
    s.write_all(&data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(rx.join().unwrap(), "{a} -> {b}: echoed 1 MiB differs");
    let (total, peer) = server.join().unwrap();
    assert_eq!(total, data.len());
    assert_eq!(
        peer.ip().to_string(),
        a,
        "server sees the pod's own address"
    );
}

fn udp_request_response(pods: &TwoPods, a: &str, b: &str) {
    let server_addr = SocketAddr::new(b.parse().unwrap(), 5002);
    let server = run_in_netns(&pods.b.path(), || UdpSocket::bind(server_addr))
        .unwrap()
        .unwrap();
    let client_addr = SocketAddr::new(a.parse().unwrap(), 0);
    let client = run_in_netns(&pods.a.path(), || UdpSocket::bind(client_addr))
        .unwrap()
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..20u8 {
        let msg = vec![i; 100 + usize::from(i) * 50];
        client.send_to(&msg, server_addr).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
        server.send_to(&buf[..n], from).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..], "{a} <-> {b} UDP round trip {i}");
    }
}

#[test]
fn unrouted_and_expiring_packets_get_icmp_errors() {
    if !privileged() {
        return;
    }
    let pods = two_pods();
    let out = ping(&pods.a, &["-c", "1", "10.66.0.1"]);
    assert!(
        out.contains("From 169.254.1.1") && out.contains("Unreachable"),
        "{out}"
    );
    let out = ping(&pods.a, &["-c", "1", "fd00:66::1"]);
    assert!(
        out.contains("From fe80::ecee:eeff:feee:eeee") && out.contains("unreachable"),
        "{out}"
    );
    let out = ping(&pods.a, &["-c", "1", "-t", "1", B4]);
    assert!(
        out.contains("From 169.254.1.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
    let out = ping(&pods.a, &["-c", "1", "-t", "1", B6]);
    assert!(
        out.contains("From fe80::ecee:eeff:feee:eeee") && out.contains("Time exceeded"),
        "{out}"
    );
    assert_no_buffer_in_use(&pods.daemon.client());
}

/// Raw frames sent out of a pod's eth0 with an AF_PACKET socket.
fn send_raw_frames(ns: &Netns, frames: &[Vec<u8>]) {
    run_in_netns(&ns.path(), || {
        // SAFETY: plain socket syscalls on a descriptor we own; every
        // pointer passed points at a live, correctly sized local.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            assert!(ifindex > 0);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            let r = libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            for f in frames {
                let n = libc::send(fd, f.as_ptr().cast(), f.len(), 0);
                assert_eq!(
                    n,
                    f.len() as isize,
                    "send: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    })
    .unwrap();
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    if !privileged() {
        return;
    }
    let pods = two_pods();
    let client = pods.daemon.client();
    let mac = pods_mac(&pods.a);
    let good = caracal_perf_frame(mac);
    let mut bad_checksum = good.clone();
    bad_checksum[14 + 10] ^= 0x55;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let truncated = good[..14 + 16].to_vec();
    let mut spoofed = good.clone();
    spoofed[14 + 12..14 + 16].copy_from_slice(&[10, 65, 0, 77]);
    fix_ip_checksum(&mut spoofed);

    let before = counters(&client);
    send_raw_frames(
        &pods.a,
        &[
            bad_checksum.clone(),
            bad_ihl,
            truncated,
            spoofed,
            bad_checksum,
        ],
    );
    let reasons = [
        ("bad-checksum", 2),
        ("malformed", 1),
        ("truncated", 1),
        ("source-not-allowed", 1),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let after = counters(&client);
        let deltas: Vec<u64> = reasons
            .iter()
            .map(|(r, _)| drops(&after, "ip4-input", r) - drops(&before, "ip4-input", r))
            .collect();
        if deltas == reasons.iter().map(|(_, n)| *n).collect::<Vec<_>>() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "drop deltas {deltas:?}, want {reasons:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The dataplane is still forwarding.
    let out = ping(&pods.a, &[B4]);
    assert!(out.contains(" 0% packet loss"), "{out}");
    assert_no_buffer_in_use(&client);
}

/// The MAC of eth0 inside a namespace.
fn pods_mac(ns: &Netns) -> [u8; 6] {
    let out = ns.exec(&["cat", "/sys/class/net/eth0/address"]);
    let s = String::from_utf8(out.stdout).unwrap();
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *m = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// A valid Ethernet/IPv4/UDP frame from pod a to pod b.
fn caracal_perf_frame(src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28 + 4];
    f[..6].copy_from_slice(&[0xee; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&32u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 65, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 65, 0, 2]);
    ip[20..22].copy_from_slice(&4000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&4001u16.to_be_bytes());
    ip[24..26].copy_from_slice(&12u16.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[14 + 10] = 0;
    f[14 + 11] = 0;
    let sum = caracal_wire::checksum::data(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&(!sum).to_be_bytes());
}

#[test]
fn sigterm_removes_the_taps() {
    if !privileged() {
        return;
    }
    let mut pods = two_pods();
    assert!(pods
        .a
        .exec(&["ip", "link", "show", "eth0"])
        .status
        .success());
    assert!(pods.daemon.stop(), "dataplane exits 0 on SIGTERM");
    for ns in [&pods.a, &pods.b] {
        let out = ns.exec(&["ip", "link", "show", "eth0"]);
        assert!(!out.status.success(), "tap still present in {}", ns.name());
    }
    assert!(!pods.daemon.socket.exists(), "API socket removed");
}
