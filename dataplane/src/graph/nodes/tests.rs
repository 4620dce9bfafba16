//! Whole-graph tests: frames pushed through the real nodes with in-memory
//! ports, asserting on what comes out and on the drop counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use caracal_wire::icmpv4::{self, Icmpv4Packet};
use caracal_wire::icmpv6::{self, Icmpv6Packet, NdiscPacket};
use caracal_wire::{
    ArpOperation, ArpPacket, EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet,
    Ipv6Packet, UdpPacket,
};

use crate::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta};
use crate::graph::{Context, DropReason, Graph};
use crate::port::loopback::{LoopbackPort, Sink};
use crate::port::{PortId, PortQueue};
use crate::tables::{AdjPath, Adjacency, Gateway, PortEntry, PortPolicy, Tables};

const GW: EthernetAddress = EthernetAddress([0xee; 6]);
const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);
const MAC_C: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xc]);
const A4: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 1);
const B4: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 2);
const C4: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 3);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2);
const A_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
/// Anycast-ish service prefix reached over ECMP through B and C.
const ECMP_NET: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);

/// Three pods on three loopback ports, plus an ECMP route over B and C.
struct Lab {
    pool: Arc<BufferPool>,
    cache: BufferCache,
    graph: Graph,
    tables: Tables,
}

fn entry(
    port: Arc<LoopbackPort>,
    name: &str,
    mac: EthernetAddress,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
) -> PortEntry {
    let _ = mac;
    PortEntry {
        peer_mac: crate::port::Port::peer_mac(&*port),
        port,
        name: Arc::from(name),
        mtu: 1500,
        ipv4: vec![v4].into(),
        ipv6: v6.into_iter().collect(),
        policy: PortPolicy::default(),
    }
}

impl Lab {
    fn new() -> Self {
        let pool = BufferPool::new(&BufferPoolConfig {
            buffers: 4096,
            hugepages: false,
        })
        .unwrap();
        let cache = pool.cache();
        let mk = |mac| LoopbackPort::new(mac, 1500, Sink::Capture);
        let ports = vec![
            Some(entry(mk(MAC_A), "a", MAC_A, A4, Some(A6))),
            Some(entry(mk(MAC_B), "b", MAC_B, B4, Some(B6))),
            Some(entry(mk(MAC_C), "c", MAC_C, C4, None)),
        ];
        let path = |i: u16, mac| AdjPath {
            port: PortId(i),
            dst_mac: mac,
            mtu: 1500,
        };
        let adjacencies = vec![
            Adjacency::new(&[path(0, MAC_A)]),
            Adjacency::new(&[path(1, MAC_B)]),
            Adjacency::new(&[path(2, MAC_C)]),
            Adjacency::new(&[path(1, MAC_B), path(2, MAC_C)]),
        ];
        let mut t = Tables {
            generation: 1,
            gateway: Gateway::default(),
            adjacencies: adjacencies.into(),
            ports: ports.into(),
            ..Tables::default()
        };
        t.fib4.insert(u32::from(A4), 32, 0);
        t.fib4.insert(u32::from(B4), 32, 1);
        t.fib4.insert(u32::from(C4), 32, 2);
        t.fib4.insert(u32::from(ECMP_NET), 16, 3);
        t.fib6.insert(u128::from(A6), 128, 0);
        t.fib6.insert(u128::from(B6), 128, 1);
        Lab {
            pool,
            cache,
            graph: Graph::new(),
            tables: t,
        }
    }

    /// Runs `frames`, received on port `rx`, through the graph; returns
    /// what each port transmitted.
    fn run(&mut self, rx: u16, frames: Vec<Vec<u8>>) -> Vec<(PortId, Vec<u8>)> {
        self.run_at(crate::graph::NodeId::EthernetInput, rx, frames)
    }

    /// [`Lab::run`] with the frames entering at node `at`.
    fn run_at(
        &mut self,
        at: crate::graph::NodeId,
        rx: u16,
        frames: Vec<Vec<u8>>,
    ) -> Vec<(PortId, Vec<u8>)> {
        let mut input = Frame::new();
        for f in frames {
            let mut b = self.cache.alloc().unwrap();
            let mut p = self.pool.packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(rx), f.len() as u16);
            p.data_mut().copy_from_slice(&f);
            input.push(b);
        }
        *self.graph.frame(at) = input;
        let cx = Context {
            tables: &self.tables,
            now_ns: 1_000_000_000,
        };
        self.graph.run(&self.pool, &mut self.cache, &cx);
        let mut out = Vec::new();
        for mut b in self.graph.output().drain() {
            let p = self.pool.packet(&mut b);
            out.push((p.meta().tx_port, p.data().to_vec()));
            self.cache.free(b);
        }
        out
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.graph.counters.drops[r as usize]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cache.publish();
        if !std::thread::panicking() {
            assert_eq!(self.pool.in_use(), 0, "every buffer back in the pool");
        }
    }
}

fn eth(dst: EthernetAddress, src: EthernetAddress, ty: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + payload.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst_addr(dst);
    e.set_src_addr(src);
    e.set_ethertype(ty);
    e.payload_mut().copy_from_slice(payload);
    f
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 28 + payload.len()];
    {
        let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len((28 + payload.len()) as u16);
        p.set_dont_frag(true);
        p.set_ttl(ttl);
        p.set_protocol(IpProtocol::UDP);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.fill_checksum();
    }
    {
        let mut u = UdpPacket::new_unchecked(&mut ip[20..]);
        u.set_src_port(sport);
        u.set_dst_port(53);
        u.set_len((8 + payload.len()) as u16);
        u.payload_mut().copy_from_slice(payload);
        u.fill_checksum_v4(&src, &dst);
    }
    eth(GW, MAC_A, EtherType::IPV4, &ip)
}

fn ip6(src: Ipv6Addr, dst: Ipv6Addr, nh: IpProtocol, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40 + payload.len()];
    let mut p = Ipv6Packet::new_unchecked(&mut ip[..]);
    p.set_version(6);
    p.set_payload_len(payload.len() as u16);
    p.set_next_header(nh);
    p.set_hop_limit(hop);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    p.payload_mut().copy_from_slice(payload);
    ip
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload.len()];
    {
        let mut p = UdpPacket::new_unchecked(&mut u[..]);
        p.set_src_port(5000);
        p.set_dst_port(53);
        p.set_len((8 + payload.len()) as u16);
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum_v6(&src, &dst);
    }
    eth(
        GW,
        MAC_A,
        EtherType::IPV6,
        &ip6(src, dst, IpProtocol::UDP, hop, &u),
    )
}

fn ipv4_of(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&frame[14..]).expect("valid IPv4")
}

#[test]
fn ipv4_is_routed_with_ttl_and_macs_rewritten() {
    let mut lab = Lab::new();
    let out = lab.run(0, vec![udp4(A4, B4, 1000, 64, b"hello")]);
    assert_eq!(out.len(), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, PortId(1));
    let e = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(e.dst_addr(), MAC_B);
    assert_eq!(e.src_addr(), GW);
    let ip = ipv4_of(f);
    assert_eq!(ip.ttl(), 63);
    assert!(
        ip.verify_checksum(),
        "incrementally updated checksum is valid"
    );
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum_v4(&A4, &B4));
    assert_eq!(u.payload(), b"hello");
}

#[test]
fn ethernet_padding_is_stripped() {
    let mut lab = Lab::new();
    let mut f = udp4(A4, B4, 1000, 64, b"");
    f.resize(60, 0);
    let out = lab.run(0, vec![f]);
    assert_eq!(out[0].1.len(), 14 + 28);
}

#[test]
fn proxy_arp_answers_for_the_gateway() {
    let mut lab = Lab::new();
    let mut arp = [0u8; 28];
    {
        let mut a = ArpPacket::new_unchecked(&mut arp[..]);
        a.set_hardware_type(1);
        a.set_protocol_type(EtherType::IPV4);
        a.set_hardware_len(6);
        a.set_protocol_len(4);
        a.set_operation(ArpOperation::REQUEST);
        a.set_source_hardware_addr(MAC_A);
        a.set_source_protocol_addr(A4);
        a.set_target_protocol_addr(Ipv4Addr::new(169, 254, 1, 1));
    }
    let req = eth(EthernetAddress::BROADCAST, MAC_A, EtherType::ARP, &arp);
    let mut probe = req.clone();
    ArpPacket::new_unchecked(&mut probe[14..]).set_source_protocol_addr(Ipv4Addr::UNSPECIFIED);
    let out = lab.run(0, vec![req, probe]);
    assert_eq!(out.len(), 1, "the probe gets no answer");
    assert_eq!(lab.drops(DropReason::ArpProbe), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, PortId(0), "answered on the port it came from");
    assert_eq!(
        EthernetFrame::new_checked(&f[..]).unwrap().dst_addr(),
        MAC_A
    );
    let a = ArpPacket::new_checked(&f[14..]).unwrap();
    assert_eq!(a.operation(), ArpOperation::REPLY);
    assert_eq!(a.source_hardware_addr(), GW);
    assert_eq!(a.source_protocol_addr(), Ipv4Addr::new(169, 254, 1, 1));
    assert_eq!(a.target_hardware_addr(), MAC_A);
    assert_eq!(a.target_protocol_addr(), A4);
}

#[test]
fn ttl_expiry_returns_time_exceeded() {
    let mut lab = Lab::new();
    let orig = udp4(A4, B4, 1000, 1, b"payload-bytes");
    let out = lab.run(0, vec![orig.clone()]);
    assert_eq!(out.len(), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, PortId(0));
    let ip = ipv4_of(f);
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Addr::new(169, 254, 1, 1));
    assert_eq!(ip.dst_addr(), A4);
    assert_eq!(ip.protocol(), IpProtocol::ICMP);
    assert_eq!(ip.ttl(), 63, "64, decremented once on the way back");
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), icmpv4::TIME_EXCEEDED);
    assert_eq!(icmp.msg_code(), 0);
    assert_eq!(
        icmp.data(),
        &orig[14..14 + 28],
        "quotes the IP header and 8 bytes"
    );
}

#[test]
fn no_route_returns_unreachable_and_errors_are_not_answered_with_errors() {
    let mut lab = Lab::new();
    let out = lab.run(
        0,
        vec![udp4(A4, Ipv4Addr::new(192, 0, 2, 1), 1000, 64, b"x")],
    );
    assert_eq!(out.len(), 1);
    let ip = ipv4_of(&out[0].1);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv4::DEST_UNREACHABLE);
    assert!(icmp.verify_checksum());
    // An ICMP error that itself has nowhere to go is dropped, not answered.
    let mut err = out[0].1.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut err[14..]);
        ip.set_src_addr(A4);
        ip.set_dst_addr(Ipv4Addr::new(192, 0, 2, 1));
        ip.fill_checksum();
    }
    EthernetFrame::new_unchecked(&mut err[..]).set_dst_addr(GW);
    assert!(lab.run(0, vec![err]).is_empty());
    assert_eq!(lab.drops(DropReason::IcmpErrorSuppressed), 1);
}

#[test]
fn mtu_exceeded_with_df_returns_frag_needed() {
    let mut lab = Lab::new();
    let out = lab.run(0, vec![udp4(A4, B4, 1000, 64, &[0u8; 1600])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PortId(0));
    let ip = ipv4_of(&out[0].1);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code()),
        (icmpv4::DEST_UNREACHABLE, icmpv4::FRAG_NEEDED)
    );
    assert_eq!(icmp.next_hop_mtu(), 1500);
}

#[test]
fn malformed_and_spoofed_frames_are_dropped_by_reason() {
    let mut lab = Lab::new();
    let good = udp4(A4, B4, 1000, 64, b"x");
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut bad_version = good.clone();
    bad_version[14] = 0x55;
    let truncated = good[..14 + 12].to_vec();
    let mut too_long = good.clone();
    Ipv4Packet::new_unchecked(&mut too_long[14..]).set_total_len(1000);
    let runt = good[..10].to_vec();
    let spoofed = udp4(Ipv4Addr::new(10, 65, 0, 99), B4, 1000, 64, b"x");
    let mut other_mac = good.clone();
    EthernetFrame::new_unchecked(&mut other_mac[..]).set_dst_addr(MAC_C);
    let mut vlan = good.clone();
    EthernetFrame::new_unchecked(&mut vlan[..]).set_ethertype(EtherType::VLAN);
    let to_gw = udp4(A4, Ipv4Addr::new(169, 254, 1, 1), 1000, 64, b"x");
    let bcast = udp4(A4, Ipv4Addr::BROADCAST, 1000, 64, b"x");
    let out = lab.run(
        0,
        vec![
            bad_csum,
            bad_ihl,
            bad_version,
            truncated,
            too_long,
            runt,
            spoofed,
            other_mac,
            vlan,
            to_gw,
            bcast,
        ],
    );
    assert!(out.is_empty());
    for (r, n) in [
        (DropReason::Ip4BadChecksum, 1),
        (DropReason::Ip4Malformed, 2),
        (DropReason::Ip4Truncated, 2),
        (DropReason::EthTruncated, 1),
        (DropReason::Ip4SourceNotAllowed, 1),
        (DropReason::EthNotForUs, 1),
        (DropReason::EthUnknownType, 1),
        (DropReason::Ip4Local, 1),
        (DropReason::Ip4NotUnicast, 1),
    ] {
        assert_eq!(lab.drops(r), n, "{r:?}");
    }
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_one_path() {
    let mut lab = Lab::new();
    let dst = Ipv4Addr::new(10, 96, 3, 4);
    let frames: Vec<_> = (0..200u16)
        .map(|p| udp4(A4, dst, 10_000 + p, 64, b"x"))
        .collect();
    let first = lab.run(0, frames.clone());
    let again = lab.run(0, frames);
    let ports = |o: &[(PortId, Vec<u8>)]| o.iter().map(|(p, _)| *p).collect::<Vec<_>>();
    assert_eq!(
        ports(&first),
        ports(&again),
        "a flow always takes the same path"
    );
    let via_b = first.iter().filter(|(p, _)| *p == PortId(1)).count();
    assert!(
        (50..=150).contains(&via_b),
        "200 flows split {via_b}/{}",
        200 - via_b
    );
    assert!(first
        .iter()
        .all(|(p, _)| *p == PortId(1) || *p == PortId(2)));
}

#[test]
fn ipv6_is_routed_with_hop_limit_decremented() {
    let mut lab = Lab::new();
    let out = lab.run(0, vec![udp6(A6, B6, 64, b"hello6")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PortId(1));
    let ip = Ipv6Packet::new_checked(&out[0].1[14..]).unwrap();
    assert_eq!(ip.hop_limit(), 63);
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum_v6(&A6, &B6));
    assert_eq!(
        EthernetFrame::new_checked(&out[0].1[..])
            .unwrap()
            .dst_addr(),
        MAC_B
    );
}

fn neighbor_solicit(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![0u8; 32];
    {
        let mut ns = NdiscPacket::new_unchecked(&mut icmp[..]);
        ns.set_target_addr(target);
    }
    icmp[24] = icmpv6::OPT_SOURCE_LLADDR;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(MAC_A.as_bytes());
    {
        let mut p = Icmpv6Packet::new_unchecked(&mut icmp[..]);
        p.set_msg_type(icmpv6::NEIGHBOR_SOLICIT);
        p.set_msg_code(0);
        p.fill_checksum(&src, &dst);
    }
    let dst_mac = caracal_wire::ipv6::multicast_mac(dst);
    eth(
        dst_mac,
        MAC_A,
        EtherType::IPV6,
        &ip6(src, dst, IpProtocol::ICMPV6, 255, &icmp),
    )
}

#[test]
fn neighbour_solicitation_for_the_gateway_is_answered() {
    let mut lab = Lab::new();
    let gw = Gateway::default().ipv6;
    let sn = caracal_wire::ipv6::solicited_node(gw);
    let out = lab.run(
        0,
        vec![
            neighbor_solicit(A_LL, sn, gw),
            neighbor_solicit(Ipv6Addr::UNSPECIFIED, sn, A6),
        ],
    );
    assert_eq!(out.len(), 1, "DAD probes get no answer");
    assert_eq!(lab.drops(DropReason::NdDuplicateAddressDetection), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, PortId(0));
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    assert_eq!(ip.src_addr(), gw);
    assert_eq!(ip.dst_addr(), A_LL);
    assert_eq!(ip.hop_limit(), 255);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&gw, &A_LL));
    assert_eq!(icmp.msg_type(), icmpv6::NEIGHBOR_ADVERT);
    let na = NdiscPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(na.target_addr(), gw);
    assert!(na.solicited_flag() && na.router_flag() && na.override_flag());
    let lladdr = icmpv6::ndisc_option_lladdr(na.options(), icmpv6::OPT_TARGET_LLADDR).unwrap();
    assert_eq!(lladdr, Some(GW));
}

#[test]
fn ipv6_errors_hop_limit_no_route_and_too_big() {
    let mut lab = Lab::new();
    let nowhere = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let out = lab.run(
        0,
        vec![
            udp6(A6, B6, 1, b"expiring"),
            udp6(A6, nowhere, 64, b"lost"),
            udp6(A6, B6, 64, &[0u8; 1500]),
        ],
    );
    assert_eq!(out.len(), 3);
    let mut seen = Vec::new();
    for (port, f) in &out {
        assert_eq!(*port, PortId(0));
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst_addr(), A6);
        assert!(ip.payload().len() + 40 <= 1280);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &A6));
        seen.push((icmp.msg_type(), icmp.rest_of_header()));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![
            (icmpv6::DST_UNREACHABLE, 0),
            (icmpv6::PACKET_TOO_BIG, 1500),
            (icmpv6::TIME_EXCEEDED, 0)
        ]
    );
}

#[test]
fn ipv6_spoofed_source_is_dropped() {
    let mut lab = Lab::new();
    assert!(lab.run(0, vec![udp6(B6, A6, 64, b"x")]).is_empty());
    assert_eq!(lab.drops(DropReason::Ip6SourceNotAllowed), 1);
}

#[test]
fn a_full_vector_is_forwarded() {
    let mut lab = Lab::new();
    let frames: Vec<_> = (0..256u16).map(|p| udp4(A4, B4, p, 64, b"x")).collect();
    let out = lab.run(0, frames);
    assert_eq!(out.len(), 256);
    assert_eq!(
        lab.graph.counters.packets[crate::graph::NodeId::Ip4Rewrite as usize],
        256
    );
}

#[test]
fn loopback_queue_feeds_the_graph() {
    let mut lab = Lab::new();
    let port = LoopbackPort::new(MAC_A, 1500, Sink::Capture);
    port.inject(vec![udp4(A4, B4, 1, 64, b"q")]);
    let mut q = port.queue();
    let mut cache = lab.pool.cache();
    assert_eq!(q.rx_burst(PortId(0), &mut cache, lab.graph.input()), 1);
    let cx = Context {
        tables: &lab.tables,
        now_ns: 0,
    };
    lab.graph.run(&lab.pool, &mut cache, &cx);
    let mut out = std::mem::take(lab.graph.output());
    assert_eq!(out.len(), 1);
    q.tx_burst(&mut cache, &mut out);
    assert_eq!(port.take_captured().len(), 1);
}

// ------------------------------------------------------------------ policy

mod policy {
    //! The flow and policy nodes: verdicts, replies, fail closed,
    //! re-evaluation after a change, related ICMP errors.

    use super::*;
    use crate::graph::NodeId;
    use crate::policy::spec::*;
    use crate::policy::{Action, IpNet, PolicyDb, PortRange};
    use crate::tables::PolicyMode;
    use caracal_wire::{TcpFlags, TcpPacket};

    fn tcp4(
        from: EthernetAddress,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: (u16, u16),
        flags: TcpFlags,
    ) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        {
            let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_total_len(40);
            p.set_ttl(64);
            p.set_protocol(IpProtocol::TCP);
            p.set_src_addr(src);
            p.set_dst_addr(dst);
            p.fill_checksum();
        }
        {
            let mut t = TcpPacket::new_unchecked(&mut ip[20..]);
            t.set_src_port(ports.0);
            t.set_dst_port(ports.1);
            t.set_header_len(20);
            t.set_flags(flags);
            t.set_window_len(1000);
            t.fill_checksum_v4(&src, &dst);
        }
        eth(GW, from, EtherType::IPV4, &ip)
    }

    fn syn() -> TcpFlags {
        TcpFlags::SYN
    }

    fn syn_ack() -> TcpFlags {
        TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0)
    }

    fn ack() -> TcpFlags {
        TcpFlags::ACK
    }

    /// UDP from `src` (sent on the port of `from`) to `dst`.
    fn udp(from: EthernetAddress, src: Ipv4Addr, dst: Ipv4Addr, ports: (u16, u16)) -> Vec<u8> {
        let mut f = udp4(src, dst, ports.0, 64, b"data");
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        let mut u = UdpPacket::new_unchecked(ip.payload_mut());
        u.set_dst_port(ports.1);
        u.fill_checksum_v4(&src, &dst);
        EthernetFrame::new_unchecked(&mut f[..]).set_src_addr(from);
        f
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rule(action: Action, id: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            ..RuleSpec::new(action)
        }
    }

    fn tier(policies: &[&str]) -> Vec<TierSpec> {
        vec![TierSpec {
            name: "default".into(),
            policies: policies.iter().map(|s| s.to_string()).collect(),
            end_action: EndAction::Deny,
        }]
    }

    fn endpoint(name: &str, ingress: &[&str], egress: &[&str]) -> EndpointPolicySpec {
        EndpointPolicySpec {
            interface: name.into(),
            ingress: if ingress.is_empty() {
                vec![]
            } else {
                tier(ingress)
            },
            egress: if egress.is_empty() {
                vec![]
            } else {
                tier(egress)
            },
            ingress_default: DefaultAction::Allow,
            egress_default: DefaultAction::Allow,
        }
    }

    fn addresses(name: &str) -> Vec<std::net::IpAddr> {
        match name {
            "a" => vec![A4.into(), A6.into()],
            "b" => vec![B4.into(), B6.into()],
            _ => vec![C4.into()],
        }
    }

    /// The lab plus a policy database whose endpoints are its ports.
    struct PolicyLab {
        lab: Lab,
        db: PolicyDb,
    }

    impl PolicyLab {
        fn new() -> Self {
            PolicyLab {
                lab: Lab::new(),
                db: PolicyDb::new(),
            }
        }

        /// Applies a batch and publishes it like the engine: a new
        /// generation, and the endpoints that changed enforce it from now.
        fn apply(&mut self, batch: PolicyBatch) {
            self.db
                .validate(&batch, |i| ["a", "b", "c"].contains(&i))
                .unwrap();
            let dirty = self.db.apply(batch, addresses);
            self.lab.tables.generation += 1;
            let mut ports: Vec<_> = self.lab.tables.ports.to_vec();
            for name in dirty {
                let i = ["a", "b", "c"].iter().position(|n| *n == name).unwrap();
                let e = ports[i].as_mut().unwrap();
                e.policy.mode = PolicyMode::Enforced(self.db.endpoint_rules(&name).unwrap());
                e.policy.since = self.lab.tables.generation;
            }
            self.lab.tables.ports = ports.into();
        }

        fn not_ready(&mut self, port: usize) {
            self.lab.tables.generation += 1;
            let mut ports: Vec<_> = self.lab.tables.ports.to_vec();
            let e = ports[port].as_mut().unwrap();
            e.policy.mode = PolicyMode::NotReady;
            e.policy.since = self.lab.tables.generation;
            self.lab.tables.ports = ports.into();
        }

        /// Frames through, sent on `rx`: how many came out.
        fn pass(&mut self, rx: u16, frames: Vec<Vec<u8>>) -> usize {
            self.lab.run(rx, frames).len()
        }

        fn policed(&self) -> u64 {
            self.lab.graph.counters.packets[NodeId::Ip4Policy as usize]
        }
    }

    /// B accepts TCP 80 from A only.
    fn web_policy() -> PolicyBatch {
        let mut r = rule(Action::Allow, "web-from-a");
        r.protocol = Some(6);
        r.source.nets = vec![net("10.65.0.1/32")];
        r.destination.ports = vec![PortRange::exact(80)];
        PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "web".into(),
                ingress: vec![r],
                egress: vec![],
            }],
            set_endpoints: vec![endpoint("b", &["web"], &[])],
            ..PolicyBatch::default()
        }
    }

    #[test]
    fn allowed_connections_and_their_replies_pass_the_rest_is_denied() {
        let mut l = PolicyLab::new();
        l.apply(web_policy());
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), syn())]), 1);
        assert_eq!(
            l.pass(1, vec![tcp4(MAC_B, B4, A4, (80, 40000), syn_ack())]),
            1
        );
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), ack())]), 1);
        // Not port 80; not from A.
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40001, 22), syn())]), 0);
        assert_eq!(l.pass(2, vec![tcp4(MAC_C, C4, B4, (40002, 80), syn())]), 0);
        assert_eq!(l.lab.drops(DropReason::PolicyDenied), 2);
        // B's egress and A's ingress are open: B may open connections.
        assert_eq!(l.pass(1, vec![tcp4(MAC_B, B4, A4, (5555, 80), syn())]), 1);
        // A denied connection stays denied on the fast path.
        let policed = l.policed();
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40001, 22), syn())]), 0);
        assert_eq!(l.policed(), policed, "the flow's deny verdict decided");
        assert_eq!(l.lab.drops(DropReason::PolicyDenied), 3);
    }

    #[test]
    fn established_flows_take_the_fast_path() {
        let mut l = PolicyLab::new();
        l.apply(web_policy());
        let open = |p| tcp4(MAC_A, A4, B4, (p, 80), syn());
        assert_eq!(l.pass(0, (1000..1200).map(open).collect()), 200);
        assert_eq!(l.policed(), 200);
        let data = |p| tcp4(MAC_A, A4, B4, (p, 80), ack());
        assert_eq!(l.pass(0, (1000..1200).map(data).collect()), 200);
        let back = |p| tcp4(MAC_B, B4, A4, (80, p), ack());
        assert_eq!(l.pass(1, (1000..1200).map(back).collect()), 200);
        assert_eq!(l.policed(), 200, "no packet of a known flow was policed");
        assert_eq!(l.lab.graph.counters.packets[NodeId::Ip4Flow as usize], 600);
    }

    #[test]
    fn fail_closed_until_the_policy_arrives() {
        let mut l = PolicyLab::new();
        l.not_ready(1);
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, B4, (1, 53))]), 0);
        assert_eq!(l.pass(1, vec![udp(MAC_B, B4, A4, (1, 53))]), 0);
        assert_eq!(l.lab.drops(DropReason::PolicyNotReady), 2);
        // Neighbour discovery still works.
        let ns = neighbor_solicit(
            B6,
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1),
            l.lab.tables.gateway.ipv6,
        );
        assert_eq!(l.lab.run(1, vec![ns]).len(), 1);
        // Nothing was remembered: the policy decides afresh.
        l.apply(PolicyBatch {
            set_endpoints: vec![endpoint("b", &[], &[])],
            ..PolicyBatch::default()
        });
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, B4, (1, 53))]), 1);
        assert_eq!(l.pass(1, vec![udp(MAC_B, B4, A4, (1, 53))]), 1);
    }

    #[test]
    fn a_change_reevaluates_flows_in_their_original_direction() {
        let mut l = PolicyLab::new();
        l.apply(web_policy());
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), syn())]), 1);
        assert_eq!(
            l.pass(1, vec![tcp4(MAC_B, B4, A4, (80, 40000), syn_ack())]),
            1
        );
        // Port 80 from A now needs TCP from 10.65.0.0/24: still allowed.
        let mut wider = rule(Action::Allow, "web-from-pods");
        wider.protocol = Some(6);
        wider.source.nets = vec![net("10.65.0.0/24")];
        wider.destination.ports = vec![PortRange::exact(80)];
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "web".into(),
                ingress: vec![wider],
                egress: vec![],
            }],
            ..PolicyBatch::default()
        });
        // The reply side's next packet is judged as A -> B:80, allowed.
        let before = l.policed();
        assert_eq!(l.pass(1, vec![tcp4(MAC_B, B4, A4, (80, 40000), ack())]), 1);
        assert_eq!(l.policed(), before + 1, "re-evaluated once");
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), ack())]), 1);
        assert_eq!(l.policed(), before + 1, "then on the fast path again");
        // Now nothing is allowed to B: the connection stops at its next
        // packet, whichever side sends it.
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "web".into(),
                ..PolicySpec::default()
            }],
            ..PolicyBatch::default()
        });
        assert_eq!(l.pass(1, vec![tcp4(MAC_B, B4, A4, (80, 40000), ack())]), 0);
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), ack())]), 0);
        // A change elsewhere (C's policy) does not re-evaluate A-B flows.
        l.apply(PolicyBatch {
            set_endpoints: vec![endpoint("c", &[], &[])],
            ..PolicyBatch::default()
        });
        let before = l.policed();
        assert_eq!(l.pass(0, vec![tcp4(MAC_A, A4, B4, (40000, 80), ack())]), 0);
        assert_eq!(l.policed(), before, "the deny verdict is still current");
    }

    #[test]
    fn egress_and_ingress_must_both_allow() {
        let mut l = PolicyLab::new();
        let mut to_b = rule(Action::Allow, "to-b");
        to_b.destination.nets = vec![net("10.65.0.2/32")];
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "a-out".into(),
                ingress: vec![],
                egress: vec![to_b],
            }],
            set_endpoints: vec![endpoint("a", &[], &["a-out"])],
            ..PolicyBatch::default()
        });
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, B4, (7, 7))]), 1);
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, C4, (7, 7))]), 0);
        // C's ingress denies everything: A -> C fails on both counts, and
        // A -> B still passes.
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "closed".into(),
                ..PolicySpec::default()
            }],
            set_endpoints: vec![endpoint("c", &["closed"], &[])],
            ..PolicyBatch::default()
        });
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, B4, (8, 8))]), 1);
        // Replies to A's allowed flow come back though A's egress would
        // not allow B to open anything to A.
        assert_eq!(l.pass(1, vec![udp(MAC_B, B4, A4, (8, 8))]), 1);
    }

    #[test]
    fn icmp_errors_of_allowed_flows_pass() {
        let mut l = PolicyLab::new();
        // B may send nothing of its own.
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "mute".into(),
                ..PolicySpec::default()
            }],
            set_endpoints: vec![endpoint("b", &[], &["mute"])],
            ..PolicyBatch::default()
        });
        let query = udp(MAC_A, A4, B4, (3333, 53));
        assert_eq!(l.pass(0, vec![query.clone()]), 1);
        // B's port unreachable about it.
        let quote = &query[14..14 + 28];
        let mut icmp = vec![0u8; 8 + quote.len()];
        icmp[8..].copy_from_slice(quote);
        {
            let mut m = Icmpv4Packet::new_unchecked(&mut icmp[..]);
            m.set_msg_type(icmpv4::DEST_UNREACHABLE);
            m.set_msg_code(icmpv4::PORT_UNREACHABLE);
            m.fill_checksum();
        }
        let mut ip = vec![0u8; 20 + icmp.len()];
        let total = ip.len() as u16;
        {
            let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_total_len(total);
            p.set_ttl(64);
            p.set_protocol(IpProtocol::ICMP);
            p.set_src_addr(B4);
            p.set_dst_addr(A4);
            p.payload_mut().copy_from_slice(&icmp);
            p.fill_checksum();
        }
        let error = eth(GW, MAC_B, EtherType::IPV4, &ip);
        assert_eq!(
            l.pass(1, vec![error.clone()]),
            1,
            "related to an allowed flow"
        );
        // The same error about a flow that does not exist is B's own.
        let mut unrelated = error;
        let q = 14 + 20 + 8;
        unrelated[q + 20..q + 22].copy_from_slice(&4444u16.to_be_bytes());
        assert_eq!(l.pass(1, vec![unrelated]), 0);
        assert_eq!(l.pass(1, vec![udp(MAC_B, B4, A4, (53, 3334))]), 0);
    }

    #[test]
    fn log_rules_count_and_go_on() {
        let mut l = PolicyLab::new();
        let mut log = rule(Action::Log, "log-udp");
        log.protocol = Some(17);
        l.apply(PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "p".into(),
                ingress: vec![log, rule(Action::Allow, "all")],
                egress: vec![],
            }],
            set_endpoints: vec![endpoint("b", &["p"], &[])],
            ..PolicyBatch::default()
        });
        assert_eq!(
            l.pass(
                0,
                vec![udp(MAC_A, A4, B4, (1, 2)), udp(MAC_A, A4, B4, (1, 3))]
            ),
            2
        );
        assert_eq!(l.pass(0, vec![udp(MAC_A, A4, B4, (1, 2))]), 1);
        assert_eq!(l.lab.graph.policy_logged(), 2, "first packets only");
        // The records went to the policy log's queue, not to a log line
        // written by the worker; the control side reads them.
        let records = l.lab.graph.policy_log().recent(u64::MAX, 0);
        let got: Vec<_> = records
            .iter()
            .map(|e| {
                let r = &e.record;
                (
                    r.interface.as_deref().unwrap().to_owned(),
                    r.ingress,
                    r.rule.to_string(),
                    r.proto,
                    (r.src, r.sport),
                    (r.dst, r.dport),
                )
            })
            .collect();
        let flow = |dport| {
            (
                "b".to_owned(),
                true,
                "log-udp".to_owned(),
                17,
                (IpAddr::V4(A4), 1),
                (IpAddr::V4(B4), dport),
            )
        };
        assert_eq!(got, [flow(2), flow(3)]);
    }
}

// ------------------------------------------------------------- l2 xconnect

mod xconnect {
    //! Cross-connected loopback ports: what one receives, the other sends,
    //! byte for byte, without touching the Ethernet or IP nodes.

    use super::*;
    use crate::buffer::DATA_SIZE;
    use crate::graph::NodeId;
    use crate::port::Port;

    /// Two ports, `a` (0) and `b` (1), cross-connected both ways.
    fn lab() -> (Lab, Arc<LoopbackPort>, Arc<LoopbackPort>) {
        let mut lab = Lab::new();
        let a = LoopbackPort::new(MAC_A, 1500, Sink::Capture);
        let b = LoopbackPort::new(MAC_B, 1500, Sink::Capture);
        lab.tables.ports = vec![
            Some(entry(a.clone(), "a", MAC_A, A4, None)),
            Some(entry(b.clone(), "b", MAC_B, B4, None)),
        ]
        .into();
        lab.tables.xconnects = vec![Some(PortId(1)), Some(PortId(0))].into();
        (lab, a, b)
    }

    /// Receives everything `from` has queued, a burst at a time, runs the
    /// graph and transmits by each packet's `tx_port`, as a worker does.
    fn forward(lab: &mut Lab, ports: &[Arc<LoopbackPort>], from: u16) {
        let mut rx = ports[usize::from(from)].queue();
        let mut tx: Vec<Box<dyn PortQueue>> =
            ports.iter().map(|p| p.open_queue(0).unwrap()).collect();
        loop {
            let input = lab.graph.rx_frame(&lab.tables, PortId(from));
            if rx.rx_burst(PortId(from), &mut lab.cache, input) == 0 {
                return;
            }
            let cx = Context {
                tables: &lab.tables,
                now_ns: 0,
            };
            lab.graph.run(&lab.pool, &mut lab.cache, &cx);
            for mut b in lab.graph.output().drain() {
                let port = lab.pool.packet(&mut b).meta().tx_port;
                let mut one = Frame::new();
                one.push(b);
                tx[port.index()].tx_burst(&mut lab.cache, &mut one);
            }
        }
    }

    #[test]
    fn frames_of_every_size_leave_unchanged_by_the_peer() {
        let (mut lab, a, b) = lab();
        // Every length a buffer holds, not even an Ethernet header needed,
        // with bytes that differ from frame to frame.
        let frames: Vec<Vec<u8>> = (1..=DATA_SIZE)
            .map(|len| (0..len).map(|i| (i * 7 + len) as u8).collect())
            .collect();
        a.inject(frames.clone());
        forward(&mut lab, &[a.clone(), b.clone()], 0);
        let got = b.take_captured();
        assert_eq!(got.len(), frames.len());
        assert!(got == frames, "frames changed or reordered");
        assert!(a.take_captured().is_empty());

        // The other direction is its own cross-connect.
        let back = udp4(A4, B4, 9, 64, b"back");
        b.inject([back.clone()]);
        forward(&mut lab, &[a.clone(), b.clone()], 1);
        assert_eq!(a.take_captured(), [back]);

        let c = &lab.graph.counters;
        let n = frames.len() as u64 + 1;
        assert_eq!(c.packets[NodeId::L2Xconnect as usize], n);
        let bursts = frames.len().div_ceil(crate::buffer::FRAME_SIZE) as u64 + 1;
        assert_eq!(c.calls[NodeId::L2Xconnect as usize], bursts);
        assert!(c.clocks[NodeId::L2Xconnect as usize] > 0);
        for id in [NodeId::EthernetInput, NodeId::Ip4Input, NodeId::Ip6Input] {
            assert_eq!(c.calls[id as usize], 0, "{}", id.name());
            assert_eq!(c.clocks[id as usize], 0, "{}", id.name());
        }
        assert!(c.drops.iter().all(|&d| d == 0));
        // Lab's drop checks that every buffer is back in the pool.
    }

    #[test]
    fn without_the_setting_frames_go_to_ethernet_input() {
        let (mut lab, a, b) = lab();
        lab.tables.xconnects = vec![None, Some(PortId(0))].into();
        a.inject([udp4(A4, B4, 1, 64, b"routed")]);
        forward(&mut lab, &[a.clone(), b.clone()], 0);
        let c = &lab.graph.counters;
        assert_eq!(c.packets[NodeId::L2Xconnect as usize], 0);
        assert_eq!(c.packets[NodeId::EthernetInput as usize], 1);
        assert_eq!(c.packets[NodeId::Ip4Input as usize], 1);
    }

    #[test]
    fn a_missing_peer_is_port_down_and_a_removed_setting_a_drop() {
        let (mut lab, _a, _b) = lab();
        lab.tables.xconnects = vec![Some(PortId::INVALID)].into();
        let out = lab.run_at(NodeId::L2Xconnect, 0, vec![vec![1, 2, 3]]);
        // The worker counts what leaves by INVALID as interface-output
        // port-down.
        assert_eq!(out, [(PortId::INVALID, vec![1, 2, 3])]);

        lab.tables.xconnects = Arc::from([]);
        let out = lab.run_at(NodeId::L2Xconnect, 0, vec![vec![4]]);
        assert!(out.is_empty());
        assert_eq!(lab.drops(DropReason::XconnectRemoved), 1);
    }
}

#[test]
fn every_node_that_runs_counts_cycles() {
    let mut lab = Lab::new();
    let frames: Vec<_> = (0..256u16).map(|p| udp4(A4, B4, p, 64, b"x")).collect();
    lab.run(0, frames);
    let c = &lab.graph.counters;
    for id in crate::graph::NodeId::ALL {
        let i = id as usize;
        assert_eq!(c.calls[i] > 0, c.clocks[i] > 0, "{}", id.name());
    }
    assert!(c.clocks[crate::graph::NodeId::Ip4Lookup as usize] > 0);
}
