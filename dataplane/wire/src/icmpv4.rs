//! ICMP for IPv4 (RFC 792): echo, which the dataplane answers for its own
//! addresses, and the error messages it generates when it drops a packet
//! (unreachable, TTL exceeded, fragmentation needed).
//!
//! The view covers the 8-byte header common to all messages; the meaning of
//! bytes 4..8 depends on the type (identifier and sequence number for echo,
//! next-hop MTU for "fragmentation needed", unused for most errors).

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};
use crate::{checksum, Error, Result};

/// Echo reply (RFC 792).
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable (RFC 792); codes below.
pub const DEST_UNREACHABLE: u8 = 3;
/// Source quench, deprecated (RFC 6633).
pub const SOURCE_QUENCH: u8 = 4;
/// Redirect (RFC 792).
pub const REDIRECT: u8 = 5;
/// Echo request (RFC 792).
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded (RFC 792).
pub const TIME_EXCEEDED: u8 = 11;
/// Parameter problem (RFC 792).
pub const PARAM_PROBLEM: u8 = 12;

/// Destination unreachable: net unreachable (RFC 792).
pub const NET_UNREACHABLE: u8 = 0;
/// Destination unreachable: host unreachable (RFC 792).
pub const HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable: protocol unreachable (RFC 792).
pub const PROTO_UNREACHABLE: u8 = 2;
/// Destination unreachable: port unreachable (RFC 792).
pub const PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable: fragmentation needed and DF set (RFC 792,
/// RFC 1191); carries the next-hop MTU.
pub const FRAG_NEEDED: u8 = 4;
/// Destination unreachable: communication administratively prohibited
/// (RFC 1812 §5.2.7.1), for packets a network policy drops.
pub const ADMIN_PROHIBITED: u8 = 13;
/// Time exceeded: TTL exceeded in transit (RFC 792).
pub const TTL_EXCEEDED_IN_TRANSIT: u8 = 0;

/// Whether `msg_type` is an error message, which quotes the offending
/// packet and must never be answered with another error (RFC 1122
/// §3.2.2).
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
    )
}

mod field {
    use crate::bytes::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Bytes 4..8, whose meaning depends on the type.
    pub const REST_OF_HEADER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ_NO: Field = 6..8;
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const DATA: usize = 8;
}

/// Length of the ICMP header in bytes.
pub const HEADER_LEN: usize = field::DATA;

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds a whole header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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

    /// Length of the header in bytes; always [`HEADER_LEN`].
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8 as one word, whatever the type.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST_OF_HEADER)
    }

    /// Echo identifier (meaningful for echo request and reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request and reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ_NO)
    }

    /// Next-hop MTU in bytes (meaningful for [`FRAG_NEEDED`], RFC 1191 §4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Everything after the header: echo data, or the quoted IP header and
    /// leading payload bytes of an error.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over the whole buffer is correct; the caller
    /// slices the buffer to the IP payload.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets bytes 4..8; errors other than [`FRAG_NEEDED`] and
    /// [`PARAM_PROBLEM`] want zero.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST_OF_HEADER, value);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQ_NO, value);
    }

    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, value);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the whole buffer and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The ICMP part of an echo request from 10.0.0.1 to 10.0.0.2.
    static ECHO_REQUEST_BYTES: [u8; 56] = [
        0x08, 0x00, 0xd6, 0xba, 0x1c, 0x2d, 0x00, 0x01, 0x65, 0x64, 0xa1, 0xb2, 0x00, 0x0c, 0x3f,
        0x21, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c,
        0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    #[test]
    fn parse_echo_request() {
        let icmp = Icmpv4Packet::new_checked(&ECHO_REQUEST_BYTES[..]).unwrap();
        assert_eq!(icmp.msg_type(), ECHO_REQUEST);
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.checksum(), 0xd6ba);
        assert_eq!(icmp.echo_ident(), 0x1c2d);
        assert_eq!(icmp.echo_seq_no(), 1);
        assert_eq!(icmp.rest_of_header(), 0x1c2d_0001);
        assert_eq!(icmp.header_len(), 8);
        assert_eq!(icmp.data(), &ECHO_REQUEST_BYTES[8..]);
        assert!(icmp.verify_checksum());
        assert!(!is_error(icmp.msg_type()));
    }

    #[test]
    fn answer_in_place() {
        let mut bytes = ECHO_REQUEST_BYTES;
        let mut icmp = Icmpv4Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_msg_type(ECHO_REPLY);
        assert!(!icmp.verify_checksum());
        icmp.fill_checksum();
        assert!(icmp.verify_checksum());
        // Type 8 -> 0 moves the checksum by 0x0800.
        assert_eq!(icmp.checksum(), 0xdeba);
        assert_eq!(icmp.echo_ident(), 0x1c2d);
    }

    #[test]
    fn emit_frag_needed() {
        // Header of a "fragmentation needed" error quoting 28 bytes.
        let mut bytes = [0xaau8; 36];
        let mut icmp = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        icmp.set_msg_type(DEST_UNREACHABLE);
        icmp.set_msg_code(FRAG_NEEDED);
        icmp.set_rest_of_header(0);
        icmp.set_next_hop_mtu(1450);
        icmp.data_mut().fill(0);
        icmp.fill_checksum();
        assert_eq!(icmp.next_hop_mtu(), 1450);
        assert!(icmp.verify_checksum());
        assert!(is_error(icmp.msg_type()));
        assert_eq!(
            &bytes[..8],
            &[0x03, 0x04, 0xf7, 0x51, 0x00, 0x00, 0x05, 0xaa]
        );
    }

    #[test]
    fn echo_fields_round_trip() {
        let mut bytes = [0u8; 8];
        let mut icmp = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        icmp.set_echo_ident(0xbeef);
        icmp.set_echo_seq_no(0x0102);
        assert_eq!(bytes, [0, 0, 0, 0, 0xbe, 0xef, 0x01, 0x02]);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO_REQUEST_BYTES[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let short = Icmpv4Packet::new_checked(&ECHO_REQUEST_BYTES[..HEADER_LEN]).unwrap();
        assert!(short.data().is_empty());
        assert!(!short.verify_checksum());
    }

    #[test]
    fn error_types() {
        let errors: std::vec::Vec<u8> = (0..=255).filter(|&t| is_error(t)).collect();
        assert_eq!(errors, [3, 4, 5, 11, 12]);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match Icmpv4Packet::new_checked(&bytes[..]) {
                Ok(icmp) => {
                    let _ = (icmp.msg_type(), icmp.msg_code(), icmp.checksum());
                    let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.next_hop_mtu());
                    let _ = (icmp.rest_of_header(), icmp.data(), icmp.verify_checksum());
                }
                Err(_) => prop_assert!(bytes.len() < HEADER_LEN),
            }
        }
    }
}
