//! ARP packets (RFC 826) for IPv4 over Ethernet: the only kind the
//! dataplane answers (proxy ARP for pod gateways) or sends (next-hop
//! resolution).
//!
//! The view assumes the 28-byte Ethernet/IPv4 layout; check
//! [`ArpPacket::is_ethernet_ipv4`] before trusting the address getters.

use core::net::Ipv4Addr;

use crate::bytes::{read_ipv4, read_u16, write_u16};
use crate::ethernet::{EtherType, EthernetAddress};
use crate::{Error, Result};

/// An ARP opcode (RFC 826; IANA "ARP Operation Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Operation(pub u16);

impl Operation {
    /// "Who has the target protocol address?" (RFC 826).
    pub const REQUEST: Operation = Operation(1);
    /// "The target protocol address is at this hardware address" (RFC 826).
    pub const REPLY: Operation = Operation(2);
}

/// Hardware type of Ethernet (IANA "Hardware Types", RFC 826).
pub const HARDWARE_ETHERNET: u16 = 1;

/// Length of an Ethernet/IPv4 ARP packet in bytes.
pub const PACKET_LEN: usize = field::TPA.end;

mod field {
    use crate::bytes::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    // Offsets below hold for hlen 6 and plen 4 only.
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds [`PACKET_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds a whole Ethernet/IPv4 ARP packet. Trailing
    /// bytes (Ethernet padding) are allowed.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the packet in bytes; always [`PACKET_LEN`].
    #[inline]
    pub fn header_len(&self) -> usize {
        PACKET_LEN
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// Hardware address length in bytes.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length in bytes.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn operation(&self) -> Operation {
        Operation(read_u16(self.buffer.as_ref(), field::OPER))
    }

    #[inline]
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    #[inline]
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SPA)
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::TPA)
    }

    /// Whether the packet maps IPv4 to Ethernet addresses, the only layout
    /// this view's address offsets describe.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HARDWARE_ETHERNET
            && self.protocol_type() == EtherType::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value.0);
    }

    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    #[inline]
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(self.buffer.as_mut(), field::OPER, value.0);
    }

    #[inline]
    pub fn set_source_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(addr.as_bytes());
    }

    #[inline]
    pub fn set_source_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(addr.as_bytes());
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// "Who has 10.0.0.2? Tell 10.0.0.1", from 52:54:00:12:34:56.
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    const SENDER_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const GATEWAY_MAC: EthernetAddress = EthernetAddress([0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);

    #[test]
    fn parse_request() {
        let arp = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert!(arp.is_ethernet_ipv4());
        assert_eq!(arp.hardware_type(), HARDWARE_ETHERNET);
        assert_eq!(arp.protocol_type(), EtherType::IPV4);
        assert_eq!(arp.hardware_len(), 6);
        assert_eq!(arp.protocol_len(), 4);
        assert_eq!(arp.operation(), Operation::REQUEST);
        assert_eq!(arp.source_hardware_addr(), SENDER_MAC);
        assert_eq!(arp.source_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(arp.target_hardware_addr(), EthernetAddress([0; 6]));
        assert_eq!(arp.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(arp.header_len(), PACKET_LEN);
    }

    #[test]
    fn answer_in_place() {
        let mut bytes = REQUEST;
        let mut arp = ArpPacket::new_checked(&mut bytes[..]).unwrap();
        let (sha, spa) = (arp.source_hardware_addr(), arp.source_protocol_addr());
        let tpa = arp.target_protocol_addr();
        arp.set_operation(Operation::REPLY);
        arp.set_target_hardware_addr(sha);
        arp.set_target_protocol_addr(spa);
        arp.set_source_hardware_addr(GATEWAY_MAC);
        arp.set_source_protocol_addr(tpa);
        assert_eq!(
            bytes,
            [
                0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
                0x0a, 0x00, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01,
            ]
        );
    }

    #[test]
    fn emit_header_fields() {
        let mut bytes = [0u8; PACKET_LEN];
        let mut arp = ArpPacket::new_unchecked(&mut bytes[..]);
        arp.set_hardware_type(HARDWARE_ETHERNET);
        arp.set_protocol_type(EtherType::IPV4);
        arp.set_hardware_len(6);
        arp.set_protocol_len(4);
        arp.set_operation(Operation::REQUEST);
        arp.set_source_hardware_addr(SENDER_MAC);
        arp.set_source_protocol_addr(Ipv4Addr::new(10, 0, 0, 1));
        arp.set_target_protocol_addr(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(bytes, REQUEST);
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn not_ethernet_ipv4() {
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = REQUEST;
            bytes[at] = value;
            assert!(!ArpPacket::new_checked(&bytes[..])
                .unwrap()
                .is_ethernet_ipv4());
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            match ArpPacket::new_checked(&bytes[..]) {
                Ok(arp) => {
                    let _ = (arp.hardware_type(), arp.protocol_type(), arp.operation());
                    let _ = (arp.source_hardware_addr(), arp.source_protocol_addr());
                    let _ = (arp.target_hardware_addr(), arp.target_protocol_addr());
                    let _ = arp.is_ethernet_ipv4();
                }
                Err(_) => prop_assert!(bytes.len() < PACKET_LEN),
            }
        }
    }
}
