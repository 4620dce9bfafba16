//! UDP datagrams (RFC 768, and RFC 8200 §8.1 for IPv6): the ports the
//! service load balancer rewrites and the checksums it must then keep
//! valid.
//!
//! The checksum covers an IP pseudo-header, so verifying and filling it take
//! the addresses. Over IPv4 a zero checksum means "not computed" and is
//! accepted; over IPv6 it is mandatory. A computed zero is sent as `0xffff`.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{read_u16, write_u16};
use crate::ip::IpProtocol;
use crate::{checksum, Error, Result};

mod field {
    use crate::bytes::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds a header and the length field covers at
    /// least the header and fits in the buffer. Bytes past the length field
    /// are ignored by the getters and by the checksum.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let datagram_len = usize::from(self.len());
        if datagram_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if datagram_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
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
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and payload, in bytes.
    #[expect(
        clippy::len_without_is_empty,
        reason = "named after the header field; the view is not a container"
    )]
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }

    /// Whether the checksum is correct for a datagram from `src` to `dst`,
    /// or absent (zero), which IPv4 allows.
    #[inline]
    pub fn verify_checksum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        self.checksum() == 0 || self.sum_v4(src, dst) == 0xffff
    }

    /// Whether the checksum is correct for a datagram from `src` to `dst`;
    /// zero is invalid over IPv6 (RFC 8200 §8.1).
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.checksum() != 0 && self.sum_v6(src, dst) == 0xffff
    }

    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    #[inline]
    fn sum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> u16 {
        let len = u32::from(self.len());
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, len),
            checksum::data(self.datagram()),
        ])
    }

    #[inline]
    fn sum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let len = u32::from(self.len());
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, len),
            checksum::data(self.datagram()),
        ])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }

    /// Computes the checksum for a datagram from `src` to `dst` over IPv4
    /// and stores it.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let sum = self.sum_v4(src, dst);
        self.set_checksum(transmitted(sum));
    }

    /// Computes the checksum for a datagram from `src` to `dst` over IPv6
    /// and stores it.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum_v6(src, dst);
        self.set_checksum(transmitted(sum));
    }
}

/// The checksum field for a computed sum: its complement, except that zero
/// (meaning "no checksum") is sent as its ones-complement twin `0xffff`
/// (RFC 768).
#[inline]
fn transmitted(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        checksum => checksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// [fd00::1]:40000 -> [fd00::2]:53, payload "caracal dns?".
    static DATAGRAM_V6: [u8; 20] = [
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x14, 0xec, 0x59, 0x63, 0x61, 0x72, 0x61, 0x63, 0x61, 0x6c,
        0x20, 0x64, 0x6e, 0x73, 0x3f,
    ];

    /// 10.1.2.3:68 -> 10.1.2.4:67, payload "hello".
    static DATAGRAM_V4: [u8; 13] = [
        0x00, 0x44, 0x00, 0x43, 0x00, 0x0d, 0xa3, 0x72, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 4);

    #[test]
    fn parse_v6() {
        let udp = UdpPacket::new_checked(&DATAGRAM_V6[..]).unwrap();
        assert_eq!(udp.src_port(), 40000);
        assert_eq!(udp.dst_port(), 53);
        assert_eq!(udp.len(), 20);
        assert_eq!(udp.checksum(), 0xec59);
        assert_eq!(udp.header_len(), 8);
        assert_eq!(udp.payload(), b"caracal dns?");
        assert!(udp.verify_checksum_v6(&SRC6, &DST6));
        assert!(!udp.verify_checksum_v6(&DST6, &DST6));
    }

    #[test]
    fn parse_v4() {
        let udp = UdpPacket::new_checked(&DATAGRAM_V4[..]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (68, 67));
        assert_eq!(udp.payload(), b"hello");
        assert!(udp.verify_checksum_v4(&SRC4, &DST4));
        assert!(!udp.verify_checksum_v4(&SRC4, &SRC4));
    }

    #[test]
    fn emit_v6() {
        let mut bytes = [0u8; 20];
        let mut udp = UdpPacket::new_unchecked(&mut bytes[..]);
        udp.set_src_port(40000);
        udp.set_dst_port(53);
        udp.set_len(20);
        udp.payload_mut().copy_from_slice(b"caracal dns?");
        udp.fill_checksum_v6(&SRC6, &DST6);
        assert_eq!(bytes, DATAGRAM_V6);
    }

    #[test]
    fn emit_v4() {
        let mut bytes = DATAGRAM_V4;
        let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        udp.set_checksum(0x1234);
        udp.fill_checksum_v4(&SRC4, &DST4);
        assert_eq!(bytes, DATAGRAM_V4);
    }

    #[test]
    fn zero_checksum() {
        let mut bytes = DATAGRAM_V6;
        let mut udp = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        udp.set_checksum(0);
        assert!(
            udp.verify_checksum_v4(&SRC4, &DST4),
            "absent is fine over IPv4"
        );
        assert!(!udp.verify_checksum_v6(&SRC6, &DST6), "mandatory over IPv6");
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Pick the payload word so the complemented sum comes out zero.
        let mut bytes = [0u8; 10];
        let mut udp = UdpPacket::new_unchecked(&mut bytes[..]);
        udp.set_len(10);
        let partial = checksum::combine(&[
            checksum::pseudo_header_v4(&SRC4, &DST4, IpProtocol::UDP, 10),
            checksum::data(udp.datagram()),
        ]);
        udp.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        udp.fill_checksum_v4(&SRC4, &DST4);
        assert_eq!(udp.checksum(), 0xffff);
        assert!(udp.verify_checksum_v4(&SRC4, &DST4));
    }

    #[test]
    fn padding_is_excluded() {
        let mut bytes = [0xeeu8; 24];
        bytes[..20].copy_from_slice(&DATAGRAM_V6);
        let udp = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(udp.payload(), b"caracal dns?");
        assert!(udp.verify_checksum_v6(&SRC6, &DST6));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..DATAGRAM_V6.len() {
            assert_eq!(
                UdpPacket::new_checked(&DATAGRAM_V6[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn bad_length_field() {
        for (hi, lo, error) in [
            (0x00, 0x00, Error::Malformed),
            (0x00, 0x07, Error::Malformed),
            (0x00, 0x15, Error::Truncated),
            (0xff, 0xff, Error::Truncated),
        ] {
            let mut bytes = DATAGRAM_V6;
            bytes[4] = hi;
            bytes[5] = lo;
            assert_eq!(UdpPacket::new_checked(&bytes[..]).unwrap_err(), error);
        }
        let mut header_only = DATAGRAM_V6;
        header_only[5] = 8;
        assert!(UdpPacket::new_checked(&header_only[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(udp) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (udp.src_port(), udp.dst_port(), udp.checksum());
                prop_assert_eq!(udp.payload().len() + HEADER_LEN, usize::from(udp.len()));
                let _ = udp.verify_checksum_v4(&SRC4, &DST4);
                let _ = udp.verify_checksum_v6(&SRC6, &DST6);
            }
        }

        #[test]
        fn filled_checksum_verifies(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = std::vec![0u8; HEADER_LEN + payload.len()];
            bytes[HEADER_LEN..].copy_from_slice(&payload);
            let mut udp = UdpPacket::new_unchecked(&mut bytes[..]);
            udp.set_len(u16::try_from(HEADER_LEN + payload.len()).unwrap());
            udp.fill_checksum_v4(&SRC4, &DST4);
            prop_assert!(udp.checksum() != 0);
            prop_assert!(udp.verify_checksum_v4(&SRC4, &DST4));
            udp.fill_checksum_v6(&SRC6, &DST6);
            prop_assert!(udp.verify_checksum_v6(&SRC6, &DST6));
        }
    }
}
