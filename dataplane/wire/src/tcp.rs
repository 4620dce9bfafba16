//! TCP segment headers (RFC 9293 §3.1): ports and flags for the service load
//! balancer and connection tracking, and the checksum they must keep valid
//! after a rewrite.
//!
//! TCP has no length field of its own, so the view and its checksum cover
//! the whole buffer: the caller slices the segment to the IP payload.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::ops::{BitAnd, BitOr, BitOrAssign};

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};
use crate::ip::IpProtocol;
use crate::{checksum, Error, Result};

mod field {
    use crate::bytes::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in the upper four bits, reserved bits below.
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

/// Length of a TCP header without options, in bytes.
pub const MIN_HEADER_LEN: usize = field::OPTIONS;

/// The control bits of a segment (RFC 9293 §3.1, RFC 3168 §6.1 for ECE and
/// CWR).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flags set.
    pub const EMPTY: TcpFlags = TcpFlags(0);

    /// Whether every flag in `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag in `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;

    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Display for TcpFlags {
    /// Names of the set flags joined by `|`, `SYN|ACK`; `-` if none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, &str); 8] = [
            (TcpFlags::FIN, "FIN"),
            (TcpFlags::SYN, "SYN"),
            (TcpFlags::RST, "RST"),
            (TcpFlags::PSH, "PSH"),
            (TcpFlags::ACK, "ACK"),
            (TcpFlags::URG, "URG"),
            (TcpFlags::ECE, "ECE"),
            (TcpFlags::CWR, "CWR"),
        ];
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut separator = "";
        for (flag, name) in NAMES {
            if self.contains(flag) {
                write!(f, "{separator}{name}")?;
                separator = "|";
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the data offset is at least five words and the header it
    /// describes fits in the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes, options included (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The receive window, in bytes before window scaling (RFC 7323).
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The urgent pointer, an offset from the sequence number in bytes.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over the IPv4 pseudo-header and the whole
    /// buffer is correct.
    #[inline]
    pub fn verify_checksum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        self.sum_v4(src, dst) == 0xffff
    }

    /// Whether the checksum over the IPv6 pseudo-header and the whole
    /// buffer is correct.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum_v6(src, dst) == 0xffff
    }

    #[inline]
    fn sum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> u16 {
        let data = self.buffer.as_ref();
        // A segment is bounded by the IP payload length, far below 2^32.
        let len = data.len() as u32;
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, len),
            checksum::data(data),
        ])
    }

    #[inline]
    fn sum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let data = self.buffer.as_ref();
        let len = data.len() as u32;
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, IpProtocol::TCP, len),
            checksum::data(data),
        ])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes; it is stored in 4-byte units and
    /// the reserved bits are kept.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0f) | (((value / 4) as u8) << 4);
    }

    #[inline]
    pub fn set_flags(&mut self, value: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = value.0;
    }

    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes the checksum for a segment from `src` to `dst` over IPv4
    /// and stores it.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let sum = self.sum_v4(src, dst);
        self.set_checksum(!sum);
    }

    /// Computes the checksum for a segment from `src` to `dst` over IPv6
    /// and stores it.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum_v6(src, dst);
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    /// A SYN from 192.168.1.10:54321 to 192.168.1.20:80 with MSS 1460,
    /// SACK permitted, timestamps and window scale 7.
    static SYN: [u8; 40] = [
        0xd4, 0x31, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x56, 0x1a, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x0a, 0x1b,
        0x2c, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

    #[test]
    fn parse_syn() {
        let tcp = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(tcp.src_port(), 54321);
        assert_eq!(tcp.dst_port(), 80);
        assert_eq!(tcp.seq_number(), 0x1234_5678);
        assert_eq!(tcp.ack_number(), 0);
        assert_eq!(tcp.header_len(), 40);
        assert_eq!(tcp.flags(), TcpFlags::SYN);
        assert!(tcp.flags().contains(TcpFlags::SYN));
        assert!(!tcp.flags().contains(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(tcp.window_len(), 64240);
        assert_eq!(tcp.checksum(), 0x561a);
        assert_eq!(tcp.urgent_at(), 0);
        assert_eq!(tcp.options(), &SYN[20..]);
        assert!(tcp.payload().is_empty());
        assert!(tcp.verify_checksum_v4(&SRC, &DST));
        assert!(!tcp.verify_checksum_v4(&SRC, &Ipv4Addr::new(192, 168, 1, 21)));
    }

    #[test]
    fn emit_syn() {
        let mut bytes = [0u8; 40];
        let mut tcp = TcpPacket::new_unchecked(&mut bytes[..]);
        tcp.set_src_port(54321);
        tcp.set_dst_port(80);
        tcp.set_seq_number(0x1234_5678);
        tcp.set_ack_number(0);
        tcp.set_header_len(40);
        tcp.set_flags(TcpFlags::SYN);
        tcp.set_window_len(64240);
        tcp.set_urgent_at(0);
        tcp.options_mut().copy_from_slice(&SYN[20..]);
        tcp.fill_checksum_v4(&SRC, &DST);
        assert_eq!(bytes, SYN);
    }

    #[test]
    fn rewrite_port_incrementally() {
        // What a load balancer does: rewrite the destination port and patch
        // the checksum without summing the segment again.
        let mut bytes = SYN;
        let mut tcp = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        let old = tcp.dst_port();
        tcp.set_dst_port(8080);
        let patched = checksum::update16(tcp.checksum(), old, 8080);
        tcp.set_checksum(patched);
        assert!(tcp.verify_checksum_v4(&SRC, &DST));
        tcp.fill_checksum_v4(&SRC, &DST);
        assert_eq!(tcp.checksum(), patched);
    }

    #[test]
    fn data_over_ipv6() {
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        let mut bytes = [0u8; 25];
        let mut tcp = TcpPacket::new_unchecked(&mut bytes[..]);
        tcp.set_header_len(20);
        tcp.set_flags(TcpFlags::PSH | TcpFlags::ACK);
        tcp.payload_mut().copy_from_slice(b"hello");
        tcp.fill_checksum_v6(&src, &dst);
        let tcp = TcpPacket::new_checked(&bytes[..]).unwrap();
        assert!(tcp.verify_checksum_v6(&src, &dst));
        assert!(!tcp.verify_checksum_v6(&src, &Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3)));
        assert_eq!(tcp.payload(), b"hello");
        assert!(tcp.options().is_empty());
        assert!(tcp.flags().intersects(TcpFlags::ACK | TcpFlags::RST));
    }

    #[test]
    fn flags() {
        let mut flags = TcpFlags::SYN;
        flags |= TcpFlags::ACK;
        assert_eq!(flags, TcpFlags(0x12));
        assert_eq!(flags.to_string(), "SYN|ACK");
        assert_eq!(std::format!("{flags:?}"), "TcpFlags(SYN|ACK)");
        assert_eq!(TcpFlags::EMPTY.to_string(), "-");
        assert_eq!(flags & TcpFlags::ACK, TcpFlags::ACK);
        assert!(flags.contains(TcpFlags::EMPTY));
        assert!(!flags.intersects(TcpFlags::FIN | TcpFlags::RST));
        assert!(TcpFlags::default().is_empty());
        assert_eq!(
            (TcpFlags::ECE | TcpFlags::CWR | TcpFlags::URG).to_string(),
            "URG|ECE|CWR"
        );
    }

    #[test]
    fn set_header_len_keeps_reserved_bits() {
        let mut bytes = SYN;
        bytes[12] |= 0x01;
        let mut tcp = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        tcp.set_header_len(20);
        assert_eq!(tcp.header_len(), 20);
        assert_eq!(bytes[12], 0x51);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..SYN.len() {
            assert_eq!(
                TcpPacket::new_checked(&SYN[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn bad_data_offset() {
        for (offset, error) in [
            (0x00, Some(Error::Malformed)),
            (0x40, Some(Error::Malformed)),
            (0x50, None),
            (0xb0, Some(Error::Truncated)),
            (0xf0, Some(Error::Truncated)),
        ] {
            let mut bytes = SYN;
            bytes[12] = offset;
            assert_eq!(
                TcpPacket::new_checked(&bytes[..]).err(),
                error,
                "{offset:#x}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(tcp) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (tcp.src_port(), tcp.dst_port(), tcp.seq_number(), tcp.ack_number());
                let _ = (tcp.flags(), tcp.window_len(), tcp.checksum(), tcp.urgent_at());
                prop_assert_eq!(tcp.options().len() + MIN_HEADER_LEN, tcp.header_len());
                prop_assert_eq!(tcp.payload().len() + tcp.header_len(), bytes.len());
                let _ = tcp.verify_checksum_v4(&SRC, &DST);
                let _ = tcp.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST);
            }
        }

        #[test]
        fn incremental_address_rewrite_equals_recompute(
            mut segment in proptest::collection::vec(any::<u8>(), 20..80),
            new_dst in any::<u32>(),
        ) {
            // DNAT: the destination address is in the pseudo-header only,
            // so the TCP checksum is patched with update32.
            segment[12] = 0x50;
            let new_dst = Ipv4Addr::from(new_dst);
            let mut tcp = TcpPacket::new_checked(&mut segment[..]).unwrap();
            tcp.fill_checksum_v4(&SRC, &DST);
            let patched = checksum::update32(tcp.checksum(), DST.to_bits(), new_dst.to_bits());
            tcp.fill_checksum_v4(&SRC, &new_dst);
            prop_assert_eq!(patched, tcp.checksum());
        }
    }
}
