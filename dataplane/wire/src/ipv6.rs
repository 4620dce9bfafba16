//! IPv6 fixed headers (RFC 8200), CIDR prefixes (RFC 4291 §2.3) and the
//! address derivations neighbour discovery needs: solicited-node multicast
//! groups, EUI-64 link-local addresses and multicast MAC addresses.
//!
//! [`Ipv6Packet`] covers the 40-byte fixed header only; extension headers
//! are part of the payload and are walked by the caller from
//! [`Ipv6Packet::next_header`]. Jumbograms (RFC 2675, payload length 0 with
//! a hop-by-hop option) are not supported: their payload reads as empty.

use core::fmt;
use core::net::Ipv6Addr;
use core::str::FromStr;

use crate::bytes::{read_ipv6, read_u16, read_u32, write_u16, write_u32};
use crate::ethernet::EthernetAddress;
use crate::ip::{parse_prefix_len, IpProtocol};
use crate::{Error, Result};

mod field {
    use crate::bytes::Field;

    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: usize = 40;
}

/// Length of the IPv6 fixed header in bytes (RFC 8200 §3).
pub const HEADER_LEN: usize = field::PAYLOAD;

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv6Packet<T> {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv6Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version is 6 and the header and the payload length it
    /// claims fit in the buffer. The buffer may be longer (Ethernet
    /// padding); the payload getters stop at the payload length.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the fixed header in bytes; always [`HEADER_LEN`].
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// DSCP in the upper six bits, ECN in the lower two (RFC 2474, 3168).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// The 20-bit flow label (RFC 6437).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & FLOW_LABEL_MASK
    }

    /// Length of everything after the fixed header, extension headers
    /// included, in bytes.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::SRC_ADDR)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Everything after the fixed header, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TC_FLOW.start];
        *b = (*b & 0x0f) | (value << 4);
    }

    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        let word = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let word = (word & 0xf00f_ffff) | (u32::from(value) << 20);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    /// Sets the flow label; bits above the low 20 are ignored.
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        let word = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let word = (word & !FLOW_LABEL_MASK) | (value & FLOW_LABEL_MASK);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.0;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Everything after the fixed header, up to the payload length.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// The solicited-node multicast group of `addr`, `ff02::1:ffXX:XXXX` with
/// the low 24 bits of `addr` (RFC 4291 §2.7.1): where neighbour
/// solicitations for `addr` are sent.
#[inline]
pub const fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    const PREFIX: u128 = 0xff02_0000_0000_0000_0000_0001_ff00_0000;
    Ipv6Addr::from_bits(PREFIX | (addr.to_bits() & 0x00ff_ffff))
}

/// The link-local address `fe80::/64` with the modified EUI-64 interface
/// identifier of `mac` (RFC 4291 §2.5.1 and App. A): `ff:fe` inserted in the
/// middle and the universal/local bit inverted, so `ee:ee:ee:ee:ee:ee`
/// becomes `fe80::ecee:eeff:feee:eeee`.
#[inline]
pub const fn link_local_from_mac(mac: EthernetAddress) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([a ^ 0x02, b]),
        u16::from_be_bytes([c, 0xff]),
        u16::from_be_bytes([0xfe, d]),
        u16::from_be_bytes([e, f]),
    )
}

/// The Ethernet address an IPv6 multicast group maps to: `33:33` followed
/// by the low 32 bits of the group (RFC 2464 §7).
#[inline]
pub const fn multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// An IPv6 address with a prefix length (`fd00:10:244:1::7/64` keeps its
/// interface bits; see [`network`](Self::network)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv6Cidr {
    address: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// Pairs `address` with `prefix_len`; fails with `Malformed` if the
    /// prefix is longer than 128 bits.
    #[inline]
    pub const fn new(address: Ipv6Addr, prefix_len: u8) -> Result<Ipv6Cidr> {
        if prefix_len > 128 {
            return Err(Error::Malformed);
        }
        Ok(Ipv6Cidr {
            address,
            prefix_len,
        })
    }

    /// The address as given, interface bits included.
    #[inline]
    pub const fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// The prefix length in bits, 0 to 128.
    #[inline]
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address with its interface bits cleared.
    #[inline]
    pub const fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.address.to_bits() & self.mask())
    }

    /// Whether `addr` falls within the prefix.
    #[inline]
    pub const fn contains(&self, addr: Ipv6Addr) -> bool {
        (addr.to_bits() ^ self.address.to_bits()) & self.mask() == 0
    }

    #[inline]
    const fn mask(&self) -> u128 {
        match u128::MAX.checked_shl(128 - self.prefix_len as u32) {
            Some(mask) => mask,
            None => 0,
        }
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = Error;

    /// Parses `addr/n`, or a bare address as a /128.
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, parse_prefix_len(len, 128)?),
            None => (s, 128),
        };
        let addr = addr.parse().map_err(|_| Error::Malformed)?;
        Ipv6Cidr::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    /// A UDP datagram from [fd00::1]:40000 to [fd00::2]:53, flow label
    /// 0x12345, hop limit 64.
    static UDP_PACKET: [u8; 60] = [
        0x60, 0x01, 0x23, 0x45, 0x00, 0x14, 0x11, 0x40, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x00, 0x35, 0x00,
        0x14, 0xec, 0x59, 0x63, 0x61, 0x72, 0x61, 0x63, 0x61, 0x6c, 0x20, 0x64, 0x6e, 0x73, 0x3f,
    ];

    const SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    #[test]
    fn parse_udp_packet() {
        let ip = Ipv6Packet::new_checked(&UDP_PACKET[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.payload_len(), 20);
        assert_eq!(ip.next_header(), IpProtocol::UDP);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr(), SRC);
        assert_eq!(ip.dst_addr(), DST);
        assert_eq!(ip.header_len(), 40);
        assert_eq!(ip.payload(), &UDP_PACKET[40..]);
    }

    #[test]
    fn emit_udp_packet() {
        let mut bytes = [0u8; 60];
        let mut ip = Ipv6Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0x12345);
        ip.set_payload_len(20);
        ip.set_next_header(IpProtocol::UDP);
        ip.set_hop_limit(64);
        ip.set_src_addr(SRC);
        ip.set_dst_addr(DST);
        ip.payload_mut().copy_from_slice(&UDP_PACKET[40..]);
        assert_eq!(bytes, UDP_PACKET);
    }

    #[test]
    fn traffic_class_and_flow_label_are_independent() {
        let mut bytes = UDP_PACKET;
        let mut ip = Ipv6Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_traffic_class(0xb9);
        assert_eq!(ip.traffic_class(), 0xb9);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.version(), 6);
        ip.set_flow_label(0xfff_ffff);
        assert_eq!(ip.flow_label(), 0xf_ffff);
        assert_eq!(ip.traffic_class(), 0xb9);
        assert_eq!(ip.version(), 6);
        assert_eq!(&bytes[..4], &[0x6b, 0x9f, 0xff, 0xff]);
    }

    #[test]
    fn padding_is_excluded() {
        let mut bytes = [0u8; 70];
        bytes[..60].copy_from_slice(&UDP_PACKET);
        let ip = Ipv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.payload(), &UDP_PACKET[40..]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..UDP_PACKET.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&UDP_PACKET[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn wrong_version() {
        for first in [0x40, 0x00, 0x70, 0xf0] {
            let mut bytes = UDP_PACKET;
            bytes[0] = first;
            assert_eq!(
                Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
                Error::Malformed
            );
        }
    }

    #[test]
    fn payload_len_beyond_buffer() {
        let mut bytes = UDP_PACKET;
        bytes[5] = 21;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
        bytes[4] = 0xff;
        assert_eq!(
            Ipv6Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn derived_addresses() {
        let mac = EthernetAddress([0xee; 6]);
        let ll = link_local_from_mac(mac);
        assert_eq!(ll, "fe80::ecee:eeff:feee:eeee".parse::<Ipv6Addr>().unwrap());
        let ll = link_local_from_mac(EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(ll, "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap());

        let snm = solicited_node("fd00:10:244::abcd:1234".parse().unwrap());
        assert_eq!(snm, "ff02::1:ffcd:1234".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            multicast_mac(snm),
            EthernetAddress([0x33, 0x33, 0xff, 0xcd, 0x12, 0x34])
        );
        assert_eq!(
            multicast_mac(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
            EthernetAddress([0x33, 0x33, 0, 0, 0, 1])
        );
    }

    #[test]
    fn cidr() {
        let cidr: Ipv6Cidr = "fd00:10:244:1::7/64".parse().unwrap();
        assert_eq!(cidr.prefix_len(), 64);
        assert_eq!(
            cidr.address(),
            "fd00:10:244:1::7".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            cidr.network(),
            "fd00:10:244:1::".parse::<Ipv6Addr>().unwrap()
        );
        assert!(cidr.contains("fd00:10:244:1:ffff::1".parse().unwrap()));
        assert!(!cidr.contains("fd00:10:244:2::1".parse().unwrap()));
        assert_eq!(cidr.to_string(), "fd00:10:244:1::7/64");

        let any: Ipv6Cidr = "::/0".parse().unwrap();
        assert!(any.contains(Ipv6Addr::LOCALHOST));
        let host: Ipv6Cidr = "fd00::1".parse().unwrap();
        assert_eq!(host.prefix_len(), 128);
        assert!(host.contains(SRC) && !host.contains(DST));

        assert_eq!(Ipv6Cidr::new(SRC, 129), Err(Error::Malformed));
        for bad in [
            "fd00::/129",
            "fd00::/",
            "10.0.0.0/8",
            "fd00::/1/2",
            "fd00:::/64",
        ] {
            assert_eq!(bad.parse::<Ipv6Cidr>(), Err(Error::Malformed), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..96), v6 in any::<bool>()) {
            if v6 && !bytes.is_empty() {
                bytes[0] = 0x60 | (bytes[0] & 0x0f);
            }
            if let Ok(ip) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = (ip.version(), ip.traffic_class(), ip.flow_label(), ip.next_header());
                let _ = (ip.hop_limit(), ip.src_addr(), ip.dst_addr());
                prop_assert_eq!(ip.payload().len(), usize::from(ip.payload_len()));
            }
        }

        #[test]
        fn cidr_round_trips(addr in any::<u128>(), len in 0u8..=128) {
            let cidr = Ipv6Cidr::new(Ipv6Addr::from(addr), len).unwrap();
            prop_assert_eq!(cidr.to_string().parse::<Ipv6Cidr>(), Ok(cidr));
            prop_assert!(cidr.contains(cidr.network()));
        }

        #[test]
        fn solicited_node_keeps_low_24_bits(addr in any::<u128>()) {
            let group = solicited_node(Ipv6Addr::from(addr));
            prop_assert_eq!(group.to_bits() & 0xff_ffff, addr & 0xff_ffff);
            prop_assert!(group.is_multicast());
        }
    }
}
