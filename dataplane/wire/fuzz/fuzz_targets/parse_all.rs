//! Feeds arbitrary bytes to every view in caracal-wire and reads every
//! field: `new_checked` must either fail or return a view whose getters
//! cannot panic.
//!
//! Each view is tried on the raw input, then the input is walked as an
//! Ethernet frame down to the transport header, the way the dataplane's
//! input nodes do, so the seed frames reach the inner parsers.

#![no_main]

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use caracal_wire::{
    icmpv4, icmpv6, ArpPacket, EtherType, EthernetFrame, Icmpv4Packet, Icmpv6Packet, IpProtocol,
    Ipv4Packet, Ipv6Packet, NdiscPacket, TcpPacket, UdpPacket,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ethernet(data);
    arp(data);
    ipv4(data);
    ipv6(data);
    icmpv4(data);
    icmpv6(data, &Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST);
    ndisc(data);
    udp(data, Addrs::V4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
    tcp(data, Addrs::V6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED));

    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let l3 = &data[frame.header_len()..];
    let l4 = match frame.ethertype() {
        EtherType::ARP => return arp(l3),
        EtherType::IPV4 => ipv4(l3),
        EtherType::IPV6 => ipv6(l3),
        _ => None,
    };
    if let Some((proto, payload, addrs)) = l4 {
        transport(proto, payload, addrs);
    }
});

/// The addresses a transport checksum covers.
#[derive(Clone, Copy)]
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn transport(proto: IpProtocol, payload: &[u8], addrs: Addrs) {
    match (proto, addrs) {
        (IpProtocol::UDP, _) => udp(payload, addrs),
        (IpProtocol::TCP, _) => tcp(payload, addrs),
        (IpProtocol::ICMP, Addrs::V4(..)) => icmpv4(payload),
        (IpProtocol::ICMPV6, Addrs::V6(src, dst)) => {
            icmpv6(payload, &src, &dst);
            ndisc(payload);
        }
        _ => {}
    }
}

fn ethernet(data: &[u8]) {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return;
    };
    let dst = frame.dst_addr();
    black_box(dst.is_broadcast() || dst.is_multicast() || dst.is_unicast());
    black_box(frame.src_addr());
    black_box(frame.ethertype());
    black_box(frame.payload());
}

fn arp(data: &[u8]) {
    let Ok(arp) = ArpPacket::new_checked(data) else {
        return;
    };
    black_box(arp.hardware_type());
    black_box(arp.protocol_type());
    black_box(arp.hardware_len());
    black_box(arp.protocol_len());
    black_box(arp.operation());
    black_box(arp.is_ethernet_ipv4());
    black_box(arp.source_hardware_addr());
    black_box(arp.source_protocol_addr());
    black_box(arp.target_hardware_addr());
    black_box(arp.target_protocol_addr());
}

/// Reads every IPv4 field; returns what the transport layer needs.
fn ipv4(data: &[u8]) -> Option<(IpProtocol, &[u8], Addrs)> {
    let ip = Ipv4Packet::new_checked(data).ok()?;
    black_box(ip.version());
    black_box(ip.dscp_ecn());
    black_box(ip.ident());
    black_box(ip.dont_frag());
    black_box(ip.more_frags());
    black_box(ip.frag_offset());
    black_box(ip.is_fragment());
    black_box(ip.ttl());
    black_box(ip.checksum());
    black_box(ip.verify_checksum());
    black_box(ip.options());
    black_box(ip.payload());
    // Sliced from `data` rather than taken from `ip.payload()`, whose
    // borrow ends with the view.
    let payload = &data[ip.header_len()..usize::from(ip.total_len())];
    let addrs = Addrs::V4(ip.src_addr(), ip.dst_addr());
    Some((ip.protocol(), payload, addrs))
}

/// Reads every IPv6 field; returns what the transport layer needs.
fn ipv6(data: &[u8]) -> Option<(IpProtocol, &[u8], Addrs)> {
    let ip = Ipv6Packet::new_checked(data).ok()?;
    black_box(ip.version());
    black_box(ip.traffic_class());
    black_box(ip.flow_label());
    black_box(ip.hop_limit());
    black_box(ip.payload());
    let end = ip.header_len() + usize::from(ip.payload_len());
    let payload = &data[ip.header_len()..end];
    let addrs = Addrs::V6(ip.src_addr(), ip.dst_addr());
    Some((ip.next_header(), payload, addrs))
}

fn icmpv4(data: &[u8]) {
    let Ok(icmp) = Icmpv4Packet::new_checked(data) else {
        return;
    };
    black_box(icmpv4::is_error(icmp.msg_type()));
    black_box(icmp.msg_code());
    black_box(icmp.checksum());
    black_box(icmp.rest_of_header());
    black_box(icmp.echo_ident());
    black_box(icmp.echo_seq_no());
    black_box(icmp.next_hop_mtu());
    black_box(icmp.data());
    black_box(icmp.verify_checksum());
}

fn icmpv6(data: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    let Ok(icmp) = Icmpv6Packet::new_checked(data) else {
        return;
    };
    black_box(icmpv6::is_error(icmp.msg_type()));
    black_box(icmp.msg_code());
    black_box(icmp.checksum());
    black_box(icmp.rest_of_header());
    black_box(icmp.echo_ident());
    black_box(icmp.echo_seq_no());
    black_box(icmp.data());
    black_box(icmp.verify_checksum(src, dst));
}

fn ndisc(data: &[u8]) {
    let Ok(nd) = NdiscPacket::new_checked(data) else {
        return;
    };
    black_box(nd.target_addr());
    black_box(nd.router_flag());
    black_box(nd.solicited_flag());
    black_box(nd.override_flag());
    for opt_type in [icmpv6::OPT_SOURCE_LLADDR, icmpv6::OPT_TARGET_LLADDR] {
        let _ = black_box(icmpv6::ndisc_option_lladdr(nd.options(), opt_type));
    }
}

fn udp(data: &[u8], addrs: Addrs) {
    let Ok(udp) = UdpPacket::new_checked(data) else {
        return;
    };
    black_box(udp.src_port());
    black_box(udp.dst_port());
    black_box(udp.checksum());
    black_box(udp.payload());
    black_box(match addrs {
        Addrs::V4(src, dst) => udp.verify_checksum_v4(&src, &dst),
        Addrs::V6(src, dst) => udp.verify_checksum_v6(&src, &dst),
    });
}

fn tcp(data: &[u8], addrs: Addrs) {
    let Ok(tcp) = TcpPacket::new_checked(data) else {
        return;
    };
    black_box(tcp.src_port());
    black_box(tcp.dst_port());
    black_box(tcp.seq_number());
    black_box(tcp.ack_number());
    black_box(tcp.flags());
    black_box(tcp.window_len());
    black_box(tcp.checksum());
    black_box(tcp.urgent_at());
    black_box(tcp.options());
    black_box(tcp.payload());
    black_box(match addrs {
        Addrs::V4(src, dst) => tcp.verify_checksum_v4(&src, &dst),
        Addrs::V6(src, dst) => tcp.verify_checksum_v6(&src, &dst),
    });
}
