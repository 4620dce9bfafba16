//! The AF_XDP port against the kernel: a veth pair inside a uniquely
//! named network namespace, the port on one end (`xdp-a`, no address) and
//! the kernel's IPv4 stack on the other (`xdp-b`, 10.77.0.2/24, with a
//! permanent neighbour entry for 10.77.0.1 at `xdp-a`'s MAC).
//!
//! - UDP datagrams the port sends arrive at a UDP socket bound in the
//!   namespace, exactly once each, in order, payload intact;
//! - UDP datagrams that socket sends to 10.77.0.1 are received by the
//!   port, exactly once each, in order, headers and payload intact;
//! - the port counters agree, no descriptor was bad, every buffer goes
//!   back to the pool, and the XDP program is gone once the port is.
//!
//! Run in the automatic mode (veth: program in driver mode, socket in copy
//! mode) and in skb mode. Needs root (a skip without it, unless
//! `CARACAL_REQUIRE_PRIVILEGED=1`).

mod common;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta};
use caracal_dataplane::port::af_xdp::program::AttachMode;
use caracal_dataplane::port::af_xdp::{AfXdpConfig, AfXdpPort, XdpMode};
use caracal_dataplane::port::tap::run_in_netns;
use caracal_dataplane::port::{Port, PortId, PortKind};
use caracal_testsupport::privileged;
use caracal_wire::{checksum, EthernetAddress};
use common::{netns, Netns};

const PACKETS: usize = 1000;
const BURST: usize = 32;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0xaa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0xbb];
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PORT_A: u16 = 40001;
const PORT_B: u16 = 40002;

/// The veth pair, addressed, in `ns`, with IPv6 off so the kernel sends
/// nothing of its own.
fn veth_pair(ns: &Netns) {
    ns.disable_ipv6();
    let ip = |args: &[&str]| {
        ns.ip_ok(args);
    };
    ip(&[
        "link", "add", "xdp-a", "type", "veth", "peer", "name", "xdp-b",
    ]);
    ip(&["link", "set", "xdp-a", "address", &mac(MAC_A)]);
    ip(&["link", "set", "xdp-b", "address", &mac(MAC_B)]);
    ip(&["addr", "add", "10.77.0.2/24", "dev", "xdp-b"]);
    ip(&["link", "set", "xdp-a", "up"]);
    ip(&["link", "set", "xdp-b", "up"]);
    ip(&[
        "neigh",
        "replace",
        &IP_A.to_string(),
        "lladdr",
        &mac(MAC_A),
        "dev",
        "xdp-b",
        "nud",
        "permanent",
    ]);
}

fn mac(m: [u8; 6]) -> String {
    EthernetAddress(m).to_string()
}

/// Payload `i`: 18 to 1400 bytes derived from `i`, starting with it.
fn payload(i: usize) -> Vec<u8> {
    let len = 18 + (i * 53) % 1383;
    let mut p: Vec<u8> = (0..len).map(|j| (i * 13 + j * 7) as u8).collect();
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// An Ethernet/IPv4/UDP frame from the port's end to the kernel's (UDP
/// checksum 0: none, RFC 768).
fn udp_frame(i: usize) -> Vec<u8> {
    let data = payload(i);
    let mut f = Vec::with_capacity(42 + data.len());
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + data.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&IP_A.octets());
    ip[16..20].copy_from_slice(&IP_B.octets());
    let sum = !checksum::data(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&PORT_A.to_be_bytes());
    f.extend_from_slice(&PORT_B.to_be_bytes());
    f.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&data);
    f
}

/// Checks a frame the kernel sent to the port and returns its payload.
fn parse_from_kernel(f: &[u8]) -> Vec<u8> {
    assert!(f.len() >= 42, "{} byte frame", f.len());
    assert_eq!(&f[..6], &MAC_A, "destination MAC");
    assert_eq!(&f[6..12], &MAC_B, "source MAC");
    assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4");
    let ip = &f[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[9], 17, "UDP");
    assert_eq!(checksum::data(ip), 0xffff, "IPv4 header checksum");
    assert_eq!(&ip[12..16], &IP_B.octets());
    assert_eq!(&ip[16..20], &IP_A.octets());
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp = &f[34..];
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), PORT_A);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    assert_eq!(udp_len + 20, total);
    // Ethernet pads short frames to 60 bytes; the IP length rules.
    assert!(14 + total <= f.len());
    udp[8..udp_len].to_vec()
}

/// Puts `bytes` in a fresh buffer.
fn buffer_with(cache: &mut BufferCache, bytes: &[u8]) -> caracal_dataplane::buffer::BufferIndex {
    let pool = cache.pool().clone();
    let mut buf = cache.alloc().expect("buffers");
    let mut p = pool.packet(&mut buf);
    *p.meta_mut() = Meta::received(PortId(0), bytes.len() as u16);
    p.data_mut().copy_from_slice(bytes);
    buf
}

/// Whether an XDP program is attached to `ifname`.
fn has_xdp(ns: &Netns, ifname: &str) -> bool {
    let out = ns.ip_ok(&["link", "show", "dev", ifname]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn both_ways(mode: XdpMode) {
    let ns = netns("xdp");
    veth_pair(&ns);
    let mut cfg = AfXdpConfig::new("xdp-a");
    cfg.netns = Some(ns.path());
    cfg.mode = mode;
    cfg.peer_mac = EthernetAddress(MAC_B);
    let port = AfXdpPort::create(&cfg).unwrap_or_else(|e| panic!("af_xdp on xdp-a: {e}"));
    assert_eq!(port.kind(), PortKind::AfXdp);
    assert_eq!(port.caps().mtu, 1500);
    assert_eq!(port.mac(), EthernetAddress(MAC_A));
    assert!(!port.zero_copy(), "veth has no zero-copy");
    let expected_attach = if mode == XdpMode::Skb {
        AttachMode::Skb
    } else {
        AttachMode::Driver
    };
    assert_eq!(port.attach_mode(), expected_attach);
    assert!(has_xdp(&ns, "xdp-a"), "program attached");
    let mut q = port.open_queue(0).expect("queue 0");
    assert!(port.open_queue(0).is_none(), "a queue is claimed once");
    assert!(q.rx_fd().is_some());

    let pool: Arc<BufferPool> = BufferPool::new(&BufferPoolConfig {
        buffers: 4096,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();

    // The kernel's socket, made in the namespace, used from here.
    let sock = run_in_netns(&ns.path(), || {
        UdpSocket::bind(SocketAddrV4::new(IP_B, PORT_B))
    })
    .expect("enter the namespace")
    .expect("bind the kernel's UDP socket");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Port → kernel.
    let mut buf = vec![0u8; 2048];
    for start in (0..PACKETS).step_by(BURST) {
        let end = (start + BURST).min(PACKETS);
        let mut tx = Frame::new();
        for i in start..end {
            tx.push(buffer_with(&mut cache, &udp_frame(i)));
        }
        q.tx_burst(&mut cache, &mut tx);
        assert!(tx.is_empty());
        for i in start..end {
            let (n, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i}: {e}; {:?}", port.xdp_stats()));
            assert_eq!(from, SocketAddrV4::new(IP_A, PORT_A).into());
            assert!(buf[..n] == payload(i), "datagram {i} differs");
        }
    }
    sock.set_nonblocking(true).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    match sock.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a datagram too many: {other:?}"),
    }
    sock.set_nonblocking(false).unwrap();
    let s = port.stats();
    let bytes: u64 = (0..PACKETS).map(|i| udp_frame(i).len() as u64).sum();
    assert_eq!(
        (s.tx_packets, s.tx_bytes, s.tx_errors),
        (PACKETS as u64, bytes, 0)
    );

    // Kernel → port.
    let mut rx = Frame::new();
    let mut received: Vec<Vec<u8>> = Vec::with_capacity(PACKETS);
    let mut rx_bytes = 0u64;
    let mut poll = |cache: &mut BufferCache, received: &mut Vec<Vec<u8>>| {
        q.rx_burst(PortId(1), cache, &mut rx);
        for mut b in rx.drain() {
            let p = cache.pool().packet(&mut b);
            assert_eq!(p.meta().rx_port, PortId(1));
            rx_bytes += p.len() as u64;
            received.push(parse_from_kernel(p.data()));
            cache.free(b);
        }
    };
    let to = SocketAddrV4::new(IP_A, PORT_A);
    for start in (0..PACKETS).step_by(BURST) {
        let end = (start + BURST).min(PACKETS);
        for i in start..end {
            sock.send_to(&payload(i), to).expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.len() < end {
            assert!(
                Instant::now() < deadline,
                "{} of {end} received; {:?}",
                received.len(),
                port.xdp_stats()
            );
            poll(&mut cache, &mut received);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    poll(&mut cache, &mut received);
    assert_eq!(received.len(), PACKETS, "frames received on xdp-a");
    for (i, got) in received.iter().enumerate() {
        assert!(*got == payload(i), "datagram {i} differs");
    }
    let s = port.stats();
    assert_eq!(s.rx_packets, PACKETS as u64);
    assert_eq!(s.rx_bytes, rx_bytes);
    assert_eq!(s.rx_no_buffer, 0);
    let x = port.xdp_stats();
    assert_eq!(x.bad_descriptors, 0, "{x:?}");
    assert_eq!(x.kernel_rx_dropped + x.kernel_rx_ring_full, 0, "{x:?}");
    assert!(x.tx_kicks > 0, "copy mode needs kicks: {x:?}");

    cache.publish();
    assert_eq!(pool.in_use(), 0, "every buffer is back in the pool");
    drop(q);
    drop(port);
    assert!(!has_xdp(&ns, "xdp-a"), "program detached with the port");
    drop(cache);
    assert_eq!(pool.stats().free, 4096);
}

#[test]
fn udp_both_ways_in_automatic_mode() {
    if !privileged() {
        return;
    }
    both_ways(XdpMode::Auto);
}

#[test]
fn udp_both_ways_in_skb_mode() {
    if !privileged() {
        return;
    }
    both_ways(XdpMode::Skb);
}

#[test]
fn too_long_frames_are_counted_not_sent() {
    if !privileged() {
        return;
    }
    let ns = netns("xdl");
    veth_pair(&ns);
    ns.ip_ok(&["link", "set", "xdp-a", "mtu", "1000"]);
    let mut cfg = AfXdpConfig::new("xdp-a");
    cfg.netns = Some(ns.path());
    cfg.frames = 64;
    let port = AfXdpPort::create(&cfg).unwrap();
    assert_eq!(port.caps().mtu, 1000);
    let mut q = port.open_queue(0).unwrap();
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 128,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut tx = Frame::new();
    for len in [1014, 1015] {
        tx.push(buffer_with(&mut cache, &vec![0x5a; len]));
    }
    q.tx_burst(&mut cache, &mut tx);
    let s = port.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (1, 1));
    // A burst larger than the 32 tx frames sends a prefix of at most 32
    // (31 if the first frame's completion has not come back yet) and
    // counts the rest.
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..40 {
        tx.push(buffer_with(&mut cache, &udp_frame(1)));
    }
    q.tx_burst(&mut cache, &mut tx);
    let s = port.stats();
    let (sent, refused) = (s.tx_packets - 1, s.tx_errors - 1);
    assert!((31..=32).contains(&sent), "{s:?}");
    assert_eq!(sent + refused, 40);
    cache.publish();
    assert_eq!(pool.in_use(), 0);
}
