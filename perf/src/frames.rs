//! Builders for the test frames benches send: Ethernet + IPv4/IPv6 + UDP
//! with valid checksums, addressed to the pod gateway MAC.

use std::net::{Ipv4Addr, Ipv6Addr};

use caracal_wire::{
    EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket,
};

/// The gateway MAC every pod sends to.
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0xee; 6]);

/// An Ethernet/IPv4/UDP frame of `frame_len` bytes (at least 42).
pub fn udp4(
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let frame_len = frame_len.max(42);
    let mut f = vec![0u8; frame_len];
    ethernet(&mut f, src_mac, EtherType::IPV4);
    let ip_len = frame_len - 14;
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len(ip_len as u16);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut f[34..]);
    udp.set_src_port(sport);
    udp.set_dst_port(5001);
    udp.set_len((ip_len - 20) as u16);
    udp.fill_checksum_v4(&src, &dst);
    f
}

/// An Ethernet/IPv6/UDP frame of `frame_len` bytes (at least 62).
pub fn udp6(
    src_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let frame_len = frame_len.max(62);
    let mut f = vec![0u8; frame_len];
    ethernet(&mut f, src_mac, EtherType::IPV6);
    let payload_len = frame_len - 54;
    let mut ip = Ipv6Packet::new_unchecked(&mut f[14..]);
    ip.set_version(6);
    ip.set_payload_len(payload_len as u16);
    ip.set_next_header(IpProtocol::UDP);
    ip.set_hop_limit(64);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    let mut udp = UdpPacket::new_unchecked(&mut f[54..]);
    udp.set_src_port(sport);
    udp.set_dst_port(5001);
    udp.set_len(payload_len as u16);
    udp.fill_checksum_v6(&src, &dst);
    f
}

fn ethernet(f: &mut [u8], src_mac: EthernetAddress, ty: EtherType) {
    let mut e = EthernetFrame::new_unchecked(f);
    e.set_dst_addr(GATEWAY_MAC);
    e.set_src_addr(src_mac);
    e.set_ethertype(ty);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let f = udp4(mac, s, d, 1, 64);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(UdpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum_v4(&s, &d));
        let (s6, d6) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let f = udp6(mac, s6, d6, 1, 64);
        assert_eq!(f.len(), 64);
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert!(UdpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum_v6(&s6, &d6));
    }
}
