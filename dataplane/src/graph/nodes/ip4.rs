//! IPv4 forwarding: `ip4-input` (validation, source check), `ip4-lookup`
//! (LPM), `ip4-rewrite` (TTL, checksum, MACs, MTU) and `ip4-icmp-error`
//! (RFC 792 errors built in place in the packet's own buffer).

use std::net::Ipv4Addr;

use caracal_wire::icmpv4::{self, Icmpv4Packet};
use caracal_wire::ipv4::{self, Ipv4Packet};
use caracal_wire::{Error as WireError, EtherType, EthernetFrame, IpProtocol};

use super::{flow_hash, l4_ports, IcmpRateLimit, L2_LEN};
use crate::buffer::{IcmpErrorRequest, Packet};
use crate::graph::{Context, DropReason, Next, Node, NodeId};

/// TTL of the ICMP errors we originate.
const ICMP_ERROR_TTL: u8 = 64;

#[inline]
fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_multicast() || a.is_broadcast() || a.is_unspecified())
}

fn icmp_error(pkt: &mut Packet<'_>, msg_type: u8, code: u8, mtu: u16) -> Next {
    pkt.meta_mut().icmp_error = IcmpErrorRequest {
        msg_type,
        code,
        mtu,
    };
    Next::Node(NodeId::Ip4IcmpError)
}

#[derive(Debug, Default)]
pub struct Ip4Input;

impl Node for Ip4Input {
    const ID: NodeId = NodeId::Ip4Input;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let data = pkt.data();
        let ip = match Ipv4Packet::new_checked(&data[L2_LEN..]) {
            Ok(ip) => ip,
            Err(WireError::Truncated) => return Next::Drop(DropReason::Ip4Truncated),
            Err(WireError::Malformed) => return Next::Drop(DropReason::Ip4Malformed),
        };
        if !ip.verify_checksum() {
            return Next::Drop(DropReason::Ip4BadChecksum);
        }
        let src = ip.src_addr();
        match cx.tables.port(pkt.meta().rx_port) {
            Some(p) if p.owns_ipv4(src) => {}
            _ => return Next::Drop(DropReason::Ip4SourceNotAllowed),
        }
        let dst = ip.dst_addr();
        if !is_unicast(dst) {
            return Next::Drop(DropReason::Ip4NotUnicast);
        }
        if dst == cx.tables.gateway.ipv4 {
            return Next::Drop(DropReason::Ip4Local);
        }
        let ttl = ip.ttl();
        // Strip Ethernet padding: from here on the packet ends where IP does.
        let len = L2_LEN + usize::from(ip.total_len());
        pkt.set_len(len);
        if ttl <= 1 {
            return icmp_error(
                pkt,
                icmpv4::TIME_EXCEEDED,
                icmpv4::TTL_EXCEEDED_IN_TRANSIT,
                0,
            );
        }
        Next::Node(NodeId::Ip4Lookup)
    }
}

#[derive(Debug, Default)]
pub struct Ip4Lookup;

impl Node for Ip4Lookup {
    const ID: NodeId = NodeId::Ip4Lookup;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let ip = Ipv4Packet::new_unchecked(&pkt.data()[L2_LEN..]);
        let dst = ip.dst_addr();
        let Some(adj) = cx.tables.fib4.lookup(u32::from(dst)) else {
            return icmp_error(pkt, icmpv4::DEST_UNREACHABLE, icmpv4::NET_UNREACHABLE, 0);
        };
        let hash = match cx.tables.adjacency(adj) {
            Some(a) if a.is_ecmp() => {
                let ports = l4_ports(ip.protocol(), ip.payload());
                flow_hash(&[
                    u32::from(ip.src_addr()),
                    u32::from(dst),
                    u32::from(ip.protocol().0),
                    ports,
                ])
            }
            _ => 0,
        };
        let meta = pkt.meta_mut();
        meta.adjacency = adj;
        meta.flow_hash = hash;
        Next::Node(NodeId::Ip4Flow)
    }
}

#[derive(Debug, Default)]
pub struct Ip4Rewrite;

impl Node for Ip4Rewrite {
    const ID: NodeId = NodeId::Ip4Rewrite;

    #[inline]
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let meta = *pkt.meta();
        let Some(adj) = cx.tables.adjacency(meta.adjacency) else {
            return icmp_error(pkt, icmpv4::DEST_UNREACHABLE, icmpv4::NET_UNREACHABLE, 0);
        };
        let path = *adj.path(meta.flow_hash);
        let data = pkt.data_mut();
        let mut ip = Ipv4Packet::new_unchecked(&mut data[L2_LEN..]);
        if ip.total_len() > path.mtu {
            if ip.dont_frag() {
                return icmp_error(pkt, icmpv4::DEST_UNREACHABLE, icmpv4::FRAG_NEEDED, path.mtu);
            }
            return Next::Drop(DropReason::Ip4FragmentationNeeded);
        }
        ip.decrement_ttl_incremental();
        let mut eth = EthernetFrame::new_unchecked(&mut data[..]);
        eth.set_dst_addr(path.dst_mac);
        eth.set_src_addr(cx.tables.gateway.mac);
        pkt.meta_mut().tx_port = path.port;
        Next::Node(NodeId::InterfaceOutput)
    }
}

#[derive(Debug, Default)]
pub struct Ip4IcmpError {
    limit: IcmpRateLimit,
}

/// Ethernet + IPv4 + ICMP header bytes put in front of the quoted packet.
const ERROR_HEADERS: usize = L2_LEN + ipv4::MIN_HEADER_LEN + icmpv4::HEADER_LEN;

impl Node for Ip4IcmpError {
    const ID: NodeId = NodeId::Ip4IcmpError;

    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next {
        let req = pkt.meta().icmp_error;
        let (orig_src, quote_len) = {
            let ip = Ipv4Packet::new_unchecked(&pkt.data()[L2_LEN..]);
            let src = ip.src_addr();
            // RFC 1812 4.3.2.7: no error about an ICMP error, a non-initial
            // fragment, or a packet from a non-unicast source.
            let about_error = ip.protocol() == IpProtocol::ICMP
                && ip.payload().first().is_none_or(|&t| icmpv4::is_error(t));
            if about_error || ip.frag_offset() != 0 || !is_unicast(src) {
                return Next::Drop(DropReason::IcmpErrorSuppressed);
            }
            // The IP header and the first 8 bytes of its payload (RFC 792).
            (src, (ip.header_len() + 8).min(usize::from(ip.total_len())))
        };
        if !self.limit.allow(cx.now_ns) {
            return Next::Drop(DropReason::IcmpErrorRateLimited);
        }
        // The quote stays where it is; the new headers go in front of it,
        // into the old Ethernet header and the headroom.
        let grow = ERROR_HEADERS - L2_LEN;
        if !pkt.prepend(grow) {
            return Next::Drop(DropReason::IcmpErrorNoHeadroom);
        }
        pkt.set_len(ERROR_HEADERS + quote_len);
        let gw = cx.tables.gateway.ipv4;
        let data = pkt.data_mut();
        EthernetFrame::new_unchecked(&mut data[..]).set_ethertype(EtherType::IPV4);
        let mut ip = Ipv4Packet::new_unchecked(&mut data[L2_LEN..]);
        ip.set_version(4);
        ip.set_header_len(ipv4::MIN_HEADER_LEN);
        ip.set_dscp_ecn(0);
        ip.set_total_len((ipv4::MIN_HEADER_LEN + icmpv4::HEADER_LEN + quote_len) as u16);
        ip.set_ident(0);
        ip.set_dont_frag(false);
        ip.set_more_frags(false);
        ip.set_frag_offset(0);
        ip.set_ttl(ICMP_ERROR_TTL);
        ip.set_protocol(IpProtocol::ICMP);
        ip.set_src_addr(gw);
        ip.set_dst_addr(orig_src);
        ip.fill_checksum();
        let mut icmp = Icmpv4Packet::new_unchecked(&mut data[L2_LEN + ipv4::MIN_HEADER_LEN..]);
        icmp.set_msg_type(req.msg_type);
        icmp.set_msg_code(req.code);
        // Rest of header: unused, or the next-hop MTU (RFC 1191).
        icmp.set_rest_of_header(0);
        icmp.set_next_hop_mtu(req.mtu);
        icmp.fill_checksum();
        Next::Node(NodeId::Ip4Lookup)
    }
}
