//! memif interfaces of a running engine, end to end through the real
//! workers and graph: two memif servers with pod addresses, our own memif
//! clients playing the pods. A pod's UDP packet is routed to the other pod
//! (TTL decremented, MACs rewritten), the gateway answers ARP, spoofed
//! sources are dropped, a pod that goes away and comes back is served
//! again without restarting anything, and deleting the interface tells
//! the pod. Needs no privileges.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_dataplane::buffer::{BufferPool, BufferPoolConfig, Frame, Meta};
use caracal_dataplane::graph::DropReason;
use caracal_dataplane::model::{
    InterfaceKindSpec, InterfaceSpec, MemifMode, MemifRole, MemifRxMode, MemifSpec,
};
use caracal_dataplane::port::memif::{self, MemifConfig, MemifPort, SocketAddress};
use caracal_dataplane::port::{Port, PortId};
use caracal_dataplane::{Engine, EngineConfig, WorkerMode};
use caracal_wire::{
    ArpOperation, ArpPacket, EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet,
    UdpPacket,
};
use common::MemifPeer;

const GATEWAY_MAC: EthernetAddress = EthernetAddress([0xee; 6]);
const A: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);
const A_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xa]);
const B_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xb]);

fn socket(tag: &str) -> String {
    format!("@caracal-memif-e2e-{}-{tag}", std::process::id())
}

fn engine() -> Arc<Engine> {
    Engine::start(&EngineConfig {
        workers: vec![None],
        mode: WorkerMode::Adaptive,
        buffers: 4096,
        hugepages: false,
        flows: 4096,
    })
    .unwrap()
}

/// A pod interface as the agent will create it: memif server, id 0.
fn pod_spec(name: &str, socket: &str, addr: Ipv4Addr, mac: EthernetAddress) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        addresses: vec![format!("{addr}/32").parse().unwrap()],
        mtu: 1500,
        kind: InterfaceKindSpec::Memif(MemifSpec {
            socket: socket.into(),
            role: MemifRole::Server,
            id: 0,
            secret: None,
            queues: 0,
            mode: MemifMode::Ethernet,
            rx_mode: MemifRxMode::Interrupt,
            ring_size: 0,
            buffer_size: 0,
            peer_mac: Some(mac),
        }),
        policy_enforced: false,
        xconnect: None,
    }
}

/// The pod's end: one of our memif clients.
fn connect_pod(socket: &str) -> MemifPeer {
    MemifPeer::connect("eth0", socket, GATEWAY_MAC, Duration::from_secs(5))
}

fn udp4(src_mac: EthernetAddress, src: Ipv4Addr, dst: Ipv4Addr, len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(GATEWAY_MAC);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(EtherType::IPV4);
    let ip_len = len - 14;
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_dscp_ecn(0);
    ip.set_total_len(ip_len as u16);
    ip.set_ident(0);
    ip.set_dont_frag(true);
    ip.set_more_frags(false);
    ip.set_frag_offset(0);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut f[34..]);
    udp.set_src_port(9);
    udp.set_dst_port(9);
    udp.set_len((ip_len - 20) as u16);
    udp.fill_checksum_v4(&src, &dst);
    f
}

fn arp_request(src_mac: EthernetAddress, src: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(EtherType::ARP);
    let mut arp = ArpPacket::new_unchecked(&mut f[14..]);
    arp.set_hardware_type(1);
    arp.set_protocol_type(EtherType::IPV4);
    arp.set_hardware_len(6);
    arp.set_protocol_len(4);
    arp.set_operation(ArpOperation::REQUEST);
    arp.set_source_hardware_addr(src_mac);
    arp.set_source_protocol_addr(src);
    arp.set_target_hardware_addr(EthernetAddress([0; 6]));
    arp.set_target_protocol_addr(target);
    f
}

/// Waits (up to 5 s) until `cond` holds.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    caracal_testsupport::wait_until(what, Duration::from_secs(5), Duration::from_millis(5), cond);
}

fn drops(engine: &Engine, reason: DropReason) -> u64 {
    engine
        .counters()
        .total_drops()
        .iter()
        .filter(|(r, _)| *r == reason)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn pods_on_memif_are_routed_answered_policed_and_reconnected() {
    let engine = engine();
    let (sa, sb) = (socket("a"), socket("b"));
    engine
        .add_interface(pod_spec("default/a", &sa, A, A_MAC))
        .unwrap();
    engine
        .add_interface(pod_spec("default/b", &sb, B, B_MAC))
        .unwrap();
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 2048,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut a = connect_pod(&sa);
    let mut b = connect_pod(&sb);
    let wait = Duration::from_secs(2);

    // A → B, routed by the dataplane.
    let sent: Vec<_> = (0..50)
        .map(|i| udp4(A_MAC, A, B, 60 + i * 20, i as u8))
        .collect();
    a.send(&mut cache, &sent);
    let got = b.recv(&mut cache, sent.len(), wait);
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.iter().zip(&sent) {
        let eth = EthernetFrame::new_checked(&g[..]).unwrap();
        assert_eq!(eth.dst_addr(), B_MAC, "rewritten to the pod's MAC");
        assert_eq!(eth.src_addr(), GATEWAY_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());
        assert_eq!(&g[34..], &s[34..], "payload intact");
    }

    // The gateway answers ARP.
    a.send(
        &mut cache,
        &[arp_request(A_MAC, A, Ipv4Addr::new(169, 254, 1, 1))],
    );
    let reply = a.recv(&mut cache, 1, wait);
    assert_eq!(reply.len(), 1);
    let eth = EthernetFrame::new_checked(&reply[0][..]).unwrap();
    let arp = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(arp.operation(), ArpOperation::REPLY);
    assert_eq!(arp.source_hardware_addr(), GATEWAY_MAC);

    // A source other than the pod's own is dropped.
    a.send(
        &mut cache,
        &[udp4(A_MAC, Ipv4Addr::new(10, 65, 0, 9), B, 60, 0)],
    );
    assert!(b.recv(&mut cache, 1, Duration::from_millis(300)).is_empty());
    assert_eq!(drops(&engine, DropReason::Ip4SourceNotAllowed), 1);

    let info = engine
        .interfaces()
        .into_iter()
        .find(|i| i.spec.name == "default/b")
        .unwrap();
    let status = info.memif.expect("memif status");
    assert!(status.connected && info.up);
    assert_eq!(status.peer_interface, "eth0");
    assert_eq!(info.stats.tx_packets, 50);

    // Pod A goes away and comes back; the dataplane serves it again.
    drop(a);
    wait_until("the dataplane notices pod a left", || {
        !engine
            .interfaces()
            .iter()
            .any(|i| i.spec.name == "default/a" && i.up)
    });
    let mut a = connect_pod(&sa);
    a.send(&mut cache, &[udp4(A_MAC, A, B, 100, 7)]);
    assert_eq!(b.recv(&mut cache, 1, wait).len(), 1);

    // Deleting the interface disconnects the pod.
    assert!(engine.delete_interface("default/b").unwrap());
    wait_until("pod b disconnected", || !b.port.is_connected());
    assert_eq!(
        b.port.status().last_disconnect,
        "peer disconnected: interface deleted"
    );
    drop((a, b, cache));
    assert_eq!(pool.in_use(), 0);
    engine.shutdown();
    assert_eq!(
        engine.pool().in_use(),
        0,
        "no buffer leaked in the dataplane"
    );
}

#[test]
fn a_memif_client_interface_reaches_a_server_pod() {
    // The other role: the dataplane connects to a pod that listens.
    let engine = engine();
    let path = socket("srv");
    let pod = MemifPort::create(&MemifConfig {
        name: "eth0".into(),
        socket: SocketAddress::parse(path.as_ref()).unwrap(),
        role: memif::Role::Server,
        id: 3,
        secret: Some("pod-secret".into()),
        queues: 1,
        mode: memif::Mode::Ethernet,
        rx_mode: memif::RxMode::Polling,
        ring_size: 0,
        buffer_size: 0,
        peer_mac: GATEWAY_MAC,
        mtu: 1500,
        hugepages: false,
    })
    .unwrap();
    let mut spec = pod_spec("default/c", &path, A, A_MAC);
    if let InterfaceKindSpec::Memif(m) = &mut spec.kind {
        m.role = MemifRole::Client;
        m.id = 3;
        m.secret = Some("pod-secret".into());
    }
    engine.add_interface(spec.clone()).unwrap();
    assert!(pod.wait_connected(Duration::from_secs(5)));
    // Idempotent: the same spec again changes nothing.
    engine.add_interface(spec).unwrap();
    assert_eq!(pod.status().connects, 1);
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 512,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut q = pod.open_queue(0).unwrap();
    let mut out = Frame::new();
    let mut b = cache.alloc().unwrap();
    let arp = arp_request(A_MAC, A, Ipv4Addr::new(169, 254, 1, 1));
    let mut p = cache.pool().packet(&mut b);
    *p.meta_mut() = Meta::received(PortId(0), arp.len() as u16);
    p.data_mut().copy_from_slice(&arp);
    out.push(b);
    q.tx_burst(&mut cache, &mut out);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    while n == 0 && Instant::now() < deadline {
        n = q.rx_burst(PortId(0), &mut cache, &mut out);
    }
    assert_eq!(n, 1, "the gateway answered through the client interface");
    for b in out.drain() {
        cache.free(b);
    }
    drop((q, cache));
    engine.shutdown();
    wait_until("the pod sees the dataplane leave", || !pod.is_connected());
    assert_eq!(
        pod.status().last_disconnect,
        "peer disconnected: interface deleted"
    );
    assert_eq!(pool.in_use(), 0);
}
