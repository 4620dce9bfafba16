//! IPv6 forwarding: `ip6-input` (validation, source check, steering of
//! neighbour solicitations), `ip6-ndisc` (proxy neighbour advertisements
//! for the gateway, RFC 4861), `ip6-lookup`, `ip6-rewrite` (hop limit,
//! MACs, MTU) and `ip6-icmp-error` (RFC 4443 errors built in place).

use std::net::Ipv6Addr;

use caracal_wire::icmpv6::{self, Icmpv6Packet, NdiscPacket};
use caracal_wire::ipv6::{self, Ipv6Packet};
use caracal_wire::{Error as WireError, EtherType, EthernetFrame, IpProtocol};

use super::{flow_hash, l4_ports, IcmpRateLimit, L2_LEN};
use crate::buffer::{IcmpErrorRequest, Packet};
use crate::graph::{Context, DropReason, Next, Node, NodeId};

/// Hop limit of the ICMPv6 errors we originate.
const ICMP_ERROR_HOP_LIMIT: u8 = 64;
/// RFC 4861 7.1: neighbour discovery messages carry hop limit 255.
const ND_HOP_LIMIT: u8 = 255;
/// RFC 4443 2.4(c): an error message must not exceed the minimum MTU.
const MIN_MTU: usize = 1280;

#[inline]
fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

fn icmp_error(pkt: &mut Packet<'_>, msg_type: u8, code: u8, mtu: u16) -> Next {
    pkt.meta_mut().icmp_error = IcmpErrorRequest {
        msg_type,
        code,
        mtu,
    };
    Next::Node(NodeId::Ip6IcmpError)
}

/// First byte of an ICMPv6 message carried directly in `ip`, if any.
#[inline]
fn icmp_type<T: AsRef<[u8]>>(ip: &Ipv6Packet<T>) -> Option<u8> {
    (ip.next_header() == IpProtocol::ICMPV6)
        .then(|| ip.payload().first().copied())
        .flatten()
}

#[derive(Debug, Default)]
pub struct Ip6Input;

impl Node for Ip6Input {
    const ID: NodeId = NodeId::Ip6Input;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let data = pkt.data();
        let ip = match Ipv6Packet::new_checked(&data[L2_LEN..]) {
            Ok(ip) => ip,
            Err(WireError::Truncated) => return Next::Drop(DropReason::Ip6Truncated),
            Err(WireError::Malformed) => return Next::Drop(DropReason::Ip6Malformed),
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let len = L2_LEN + ipv6::HEADER_LEN + usize::from(ip.payload_len());
        // Neighbour discovery: multicast or link-local, answered locally.
        if dst.is_multicast() || is_link_local(&dst) {
            if icmp_type(&ip) == Some(icmpv6::NEIGHBOR_SOLICIT) {
                pkt.set_len(len);
                return Next::Node(NodeId::Ip6Ndisc);
            }
            return Next::Drop(DropReason::Ip6NotForwarded);
        }
        match cx.tables.port(pkt.meta().rx_port) {
            Some(p) if p.owns_ipv6(src) => {}
            _ => return Next::Drop(DropReason::Ip6SourceNotAllowed),
        }
        if dst == cx.tables.gateway.ipv6 || dst.is_unspecified() || dst.is_loopback() {
            return Next::Drop(DropReason::Ip6Local);
        }
        let hop_limit = ip.hop_limit();
        pkt.set_len(len);
        if hop_limit <= 1 {
            return icmp_error(pkt, icmpv6::TIME_EXCEEDED, icmpv6::HOP_LIMIT_EXCEEDED, 0);
        }
        Next::Node(NodeId::Ip6Lookup)
    }
}

#[derive(Debug, Default)]
pub struct Ip6Ndisc;

/// Neighbour advertisement with a target link-layer address option.
const NA_LEN: usize = 24 + 8;

impl Node for Ip6Ndisc {
    const ID: NodeId = NodeId::Ip6Ndisc;

    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let gw = cx.tables.gateway;
        let (src, target) = {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[L2_LEN..]);
            if ip.hop_limit() != ND_HOP_LIMIT {
                return Next::Drop(DropReason::NdMalformed);
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                return Next::Drop(DropReason::NdMalformed);
            };
            if !icmp.verify_checksum(&src, &dst) {
                return Next::Drop(DropReason::NdBadChecksum);
            }
            if icmp.msg_type() != icmpv6::NEIGHBOR_SOLICIT || icmp.msg_code() != 0 {
                return Next::Drop(DropReason::NdNotSolicitation);
            }
            let Ok(ns) = NdiscPacket::new_checked(ip.payload()) else {
                return Next::Drop(DropReason::NdMalformed);
            };
            let target = ns.target_addr();
            if target.is_multicast()
                || icmpv6::ndisc_option_lladdr(ns.options(), icmpv6::OPT_SOURCE_LLADDR).is_err()
            {
                return Next::Drop(DropReason::NdMalformed);
            }
            // RFC 4862 duplicate address detection: stay silent so the
            // pod keeps its address.
            if src.is_unspecified() {
                return Next::Drop(DropReason::NdDuplicateAddressDetection);
            }
            if cx
                .tables
                .port(pkt.meta().rx_port)
                .is_some_and(|p| p.owns_ipv6(target))
            {
                return Next::Drop(DropReason::NdOwnAddress);
            }
            (src, target)
        };
        let eth_src = EthernetFrame::new_unchecked(pkt.data()).src_addr();
        if !pkt.set_len(L2_LEN + ipv6::HEADER_LEN + NA_LEN) {
            return Next::Drop(DropReason::NdMalformed);
        }
        let data = pkt.data_mut();
        let mut eth = EthernetFrame::new_unchecked(&mut data[..]);
        eth.set_dst_addr(eth_src);
        eth.set_src_addr(gw.mac);
        eth.set_ethertype(EtherType::IPV6);
        let mut ip = Ipv6Packet::new_unchecked(&mut data[L2_LEN..]);
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_len(NA_LEN as u16);
        ip.set_next_header(IpProtocol::ICMPV6);
        ip.set_hop_limit(ND_HOP_LIMIT);
        ip.set_src_addr(gw.ipv6);
        ip.set_dst_addr(src);
        let icmp_bytes = &mut data[L2_LEN + ipv6::HEADER_LEN..];
        {
            let mut na = NdiscPacket::new_unchecked(&mut icmp_bytes[..]);
            na.set_flags(true, true, true);
            na.set_target_addr(target);
        }
        // Target link-layer address option (RFC 4861 4.6.1).
        icmp_bytes[24] = icmpv6::OPT_TARGET_LLADDR;
        icmp_bytes[25] = 1;
        icmp_bytes[26..32].copy_from_slice(gw.mac.as_bytes());
        let mut icmp = Icmpv6Packet::new_unchecked(&mut icmp_bytes[..]);
        icmp.set_msg_type(icmpv6::NEIGHBOR_ADVERT);
        icmp.set_msg_code(0);
        icmp.fill_checksum(&gw.ipv6, &src);
        let rx = pkt.meta().rx_port;
        pkt.meta_mut().tx_port = rx;
        Next::Node(NodeId::InterfaceOutput)
    }
}

#[derive(Debug, Default)]
pub struct Ip6Lookup;

impl Node for Ip6Lookup {
    const ID: NodeId = NodeId::Ip6Lookup;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let ip = Ipv6Packet::new_unchecked(&pkt.data()[L2_LEN..]);
        let dst = ip.dst_addr();
        let Some(adj) = cx.tables.fib6.lookup(u128::from(dst)) else {
            return icmp_error(pkt, icmpv6::DST_UNREACHABLE, icmpv6::NO_ROUTE, 0);
        };
        let hash = match cx.tables.adjacency(adj) {
            Some(a) if a.is_ecmp() => {
                let s = u128::from(ip.src_addr());
                let d = u128::from(dst);
                let ports = l4_ports(ip.next_header(), ip.payload());
                flow_hash(&[
                    (s >> 96) as u32 ^ (s >> 64) as u32 ^ (s >> 32) as u32 ^ s as u32,
                    (d >> 96) as u32 ^ (d >> 64) as u32 ^ (d >> 32) as u32 ^ d as u32,
                    ip.flow_label() ^ u32::from(ip.next_header().0),
                    ports,
                ])
            }
            _ => 0,
        };
        let meta = pkt.meta_mut();
        meta.adjacency = adj;
        meta.flow_hash = hash;
        Next::Node(NodeId::Ip6Flow)
    }
}

#[derive(Debug, Default)]
pub struct Ip6Rewrite;

impl Node for Ip6Rewrite {
    const ID: NodeId = NodeId::Ip6Rewrite;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let meta = *pkt.meta();
        let Some(adj) = cx.tables.adjacency(meta.adjacency) else {
            return icmp_error(pkt, icmpv6::DST_UNREACHABLE, icmpv6::NO_ROUTE, 0);
        };
        let path = *adj.path(meta.flow_hash);
        if pkt.len() - L2_LEN > usize::from(path.mtu) {
            return icmp_error(pkt, icmpv6::PACKET_TOO_BIG, 0, path.mtu);
        }
        let data = pkt.data_mut();
        let mut ip = Ipv6Packet::new_unchecked(&mut data[L2_LEN..]);
        let hop_limit = ip.hop_limit();
        ip.set_hop_limit(hop_limit - 1);
        let mut eth = EthernetFrame::new_unchecked(&mut data[..]);
        eth.set_dst_addr(path.dst_mac);
        eth.set_src_addr(cx.tables.gateway.mac);
        pkt.meta_mut().tx_port = path.port;
        Next::Node(NodeId::InterfaceOutput)
    }
}

#[derive(Debug, Default)]
pub struct Ip6IcmpError {
    limit: IcmpRateLimit,
}

/// Ethernet + IPv6 + ICMPv6 header bytes put in front of the quoted packet.
const ERROR_HEADERS: usize = L2_LEN + ipv6::HEADER_LEN + icmpv6::HEADER_LEN;

impl Node for Ip6IcmpError {
    const ID: NodeId = NodeId::Ip6IcmpError;

    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let req = pkt.meta().icmp_error;
        let orig_src = {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[L2_LEN..]);
            let src = ip.src_addr();
            // RFC 4443 2.4(e): no error about an error or to a
            // non-unicast source.
            let about_error = icmp_type(&ip).is_some_and(icmpv6::is_error)
                || (ip.next_header() == IpProtocol::ICMPV6 && ip.payload().is_empty());
            if about_error || src.is_multicast() || src.is_unspecified() {
                return Next::Drop(DropReason::IcmpErrorSuppressed);
            }
            src
        };
        if !self.limit.allow(cx.now_ns) {
            return Next::Drop(DropReason::IcmpErrorRateLimited);
        }
        let quote_len = (pkt.len() - L2_LEN).min(MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN);
        if !pkt.prepend(ERROR_HEADERS - L2_LEN) {
            return Next::Drop(DropReason::IcmpErrorNoHeadroom);
        }
        pkt.set_len(ERROR_HEADERS + quote_len);
        let gw = cx.tables.gateway.ipv6;
        let data = pkt.data_mut();
        EthernetFrame::new_unchecked(&mut data[..]).set_ethertype(EtherType::IPV6);
        let mut ip = Ipv6Packet::new_unchecked(&mut data[L2_LEN..]);
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_len((icmpv6::HEADER_LEN + quote_len) as u16);
        ip.set_next_header(IpProtocol::ICMPV6);
        ip.set_hop_limit(ICMP_ERROR_HOP_LIMIT);
        ip.set_src_addr(gw);
        ip.set_dst_addr(orig_src);
        let icmp_bytes = &mut data[L2_LEN + ipv6::HEADER_LEN..];
        let mut icmp = Icmpv6Packet::new_unchecked(icmp_bytes);
        // Unused, or the MTU for "packet too big" (RFC 4443 3.2).
        icmp.set_rest_of_header(u32::from(req.mtu));
        icmp.set_msg_type(req.msg_type);
        icmp.set_msg_code(req.code);
        icmp.fill_checksum(&gw, &orig_src);
        Next::Node(NodeId::Ip6Lookup)
    }
}
