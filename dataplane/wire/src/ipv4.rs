//! IPv4 headers (RFC 791) and CIDR prefixes (RFC 4632).
//!
//! [`Ipv4Packet`] is what the forwarding nodes read (addresses, protocol,
//! TTL) and rewrite (TTL, addresses for NAT). Decrementing the TTL patches
//! the header checksum incrementally (RFC 1624) instead of recomputing it.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

use crate::bytes::{read_ipv4, read_u16, write_u16};
use crate::ip::{parse_prefix_len, IpProtocol};
use crate::{checksum, Error, Result};

mod field {
    use crate::bytes::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol share the 16-bit word the checksum update patches.
    pub const TTL_PROTOCOL: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    pub const OPTIONS: usize = 20;
}

/// Length of an IPv4 header without options, in bytes (RFC 791 §3.1).
pub const MIN_HEADER_LEN: usize = field::OPTIONS;

/// Don't Fragment flag within the flags/fragment-offset word (RFC 791 §3.1).
const FLAG_DF: u16 = 0x4000;
/// More Fragments flag within the flags/fragment-offset word.
const FLAG_MF: u16 = 0x2000;
/// Fragment offset within the flags/fragment-offset word, in 8-byte units.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version is 4 and the header and total lengths are
    /// consistent with each other and fit in the buffer. The buffer may be
    /// longer than the total length (Ethernet padding); the payload getters
    /// stop at the total length.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
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
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The former type-of-service byte: DSCP in the upper six bits, ECN in
    /// the lower two (RFC 2474, RFC 3168).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Length of header and payload in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Offset of this fragment's payload in the original payload, in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this is a fragment (more to come, or not the first).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SRC_ADDR)
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.header()) == 0xffff
    }

    /// The options between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The payload, up to the total length (any padding is excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }

    #[inline]
    fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes; it is stored in 4-byte units.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) as u8 & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets the fragment offset in bytes; it is stored in 8-byte units.
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let word = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        let word = (word & !FRAG_OFFSET_MASK) | (value / 8);
        write_u16(self.buffer.as_mut(), field::FLG_OFF, word);
    }

    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    #[inline]
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.0;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over the whole header and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.header());
        self.set_checksum(!sum);
    }

    /// Decrements the TTL by one and patches the header checksum for the
    /// change (RFC 1624 eqn. 3), leaving the rest of the header untouched.
    ///
    /// A router checks the TTL first and drops the packet when it is 1 or 0
    /// (RFC 1812 §5.3.1); called on 0, the TTL wraps to 255.
    #[inline]
    pub fn decrement_ttl_incremental(&mut self) {
        let old = read_u16(self.buffer.as_ref(), field::TTL_PROTOCOL);
        let new = old.wrapping_sub(0x0100);
        write_u16(self.buffer.as_mut(), field::TTL_PROTOCOL, new);
        let sum = checksum::update16(self.checksum(), old, new);
        self.set_checksum(sum);
    }

    /// The payload, up to the total length.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, value: bool) {
        let word = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        let word = if value { word | flag } else { word & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF, word);
    }
}

/// An IPv4 address with a prefix length, such as a pod subnet or an
/// interface address (`10.244.1.7/24` keeps its host bits; see
/// [`network`](Self::network)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    address: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// Pairs `address` with `prefix_len`; fails with `Malformed` if the
    /// prefix is longer than 32 bits.
    #[inline]
    pub const fn new(address: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr> {
        if prefix_len > 32 {
            return Err(Error::Malformed);
        }
        Ok(Ipv4Cidr {
            address,
            prefix_len,
        })
    }

    /// The address as given, host bits included.
    #[inline]
    pub const fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The prefix length in bits, 0 to 32.
    #[inline]
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The prefix as a mask, `255.255.255.0` for /24.
    #[inline]
    pub const fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.mask())
    }

    /// The address with its host bits cleared.
    #[inline]
    pub const fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.address.to_bits() & self.mask())
    }

    /// Whether `addr` falls within the prefix.
    #[inline]
    pub const fn contains(&self, addr: Ipv4Addr) -> bool {
        (addr.to_bits() ^ self.address.to_bits()) & self.mask() == 0
    }

    #[inline]
    const fn mask(&self) -> u32 {
        match u32::MAX.checked_shl(32 - self.prefix_len as u32) {
            Some(mask) => mask,
            None => 0,
        }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    /// Parses `a.b.c.d/n`, or a bare address as a /32.
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, parse_prefix_len(len, 32)?),
            None => (s, 32),
        };
        let addr = addr.parse().map_err(|_| Error::Malformed)?;
        Ipv4Cidr::new(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    /// An ICMP echo request from 10.0.0.1 to 10.0.0.2, TTL 64, DF set.
    static ECHO: [u8; 76] = [
        0x45, 0x00, 0x00, 0x4c, 0x3e, 0x5f, 0x40, 0x00, 0x40, 0x01, 0xe8, 0x4f, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0xd6, 0xba, 0x1c, 0x2d, 0x00, 0x01, 0x65, 0x64,
        0xa1, 0xb2, 0x00, 0x0c, 0x3f, 0x21, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
        0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36,
        0x37,
    ];

    #[test]
    fn parse_echo() {
        let ip = Ipv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.dscp_ecn(), 0);
        assert_eq!(ip.total_len(), 76);
        assert_eq!(ip.ident(), 0x3e5f);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), IpProtocol::ICMP);
        assert_eq!(ip.checksum(), 0xe84f);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(ip.verify_checksum());
        assert!(ip.options().is_empty());
        assert_eq!(ip.payload(), &ECHO[20..]);
    }

    #[test]
    fn emit_echo_header() {
        let mut bytes = ECHO;
        bytes[..20].fill(0);
        let mut ip = Ipv4Packet::new_unchecked(&mut bytes[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_dscp_ecn(0);
        ip.set_total_len(76);
        ip.set_ident(0x3e5f);
        ip.set_dont_frag(true);
        ip.set_more_frags(false);
        ip.set_frag_offset(0);
        ip.set_ttl(64);
        ip.set_protocol(IpProtocol::ICMP);
        ip.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        ip.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        ip.fill_checksum();
        assert_eq!(bytes, ECHO);
    }

    #[test]
    fn fragment_fields() {
        let mut bytes = ECHO;
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.set_dont_frag(false);
        ip.set_more_frags(true);
        ip.set_frag_offset(1480);
        assert!(!ip.dont_frag());
        assert!(ip.more_frags());
        assert_eq!(ip.frag_offset(), 1480);
        assert!(ip.is_fragment());
        assert_eq!(&bytes[6..8], &[0x20, 0xb9]);
        assert!(!Ipv4Packet::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn decrement_ttl_matches_recompute() {
        let mut bytes = ECHO;
        let mut ip = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        ip.decrement_ttl_incremental();
        assert_eq!(ip.ttl(), 63);
        assert!(ip.verify_checksum());
        let incremental = ip.checksum();
        ip.fill_checksum();
        assert_eq!(ip.checksum(), incremental);
        assert_eq!(incremental, 0xe94f);
    }

    #[test]
    fn options_and_padding() {
        // A Router Alert option (RFC 2113) makes a 24-byte header; 6 bytes
        // of Ethernet padding follow the 28-byte packet.
        let mut bytes = [0u8; 34];
        bytes[..20].copy_from_slice(&ECHO[..20]);
        bytes[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        let mut ip = Ipv4Packet::new_unchecked(&mut bytes[..]);
        ip.set_header_len(24);
        ip.set_total_len(28);
        ip.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        ip.fill_checksum();
        let ip = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(ip.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(ip.payload(), &[1, 2, 3, 4]);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ECHO.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&ECHO[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let with = |at: usize, value: u8| {
            let mut bytes = ECHO;
            bytes[at] = value;
            Ipv4Packet::new_checked(bytes).err()
        };
        assert_eq!(with(0, 0x65), Some(Error::Malformed), "version 6");
        assert_eq!(with(0, 0x05), Some(Error::Malformed), "version 0");
        assert_eq!(with(0, 0x44), Some(Error::Malformed), "IHL 4");
        assert_eq!(with(0, 0x40), Some(Error::Malformed), "IHL 0");
        assert_eq!(with(0, 0x4f), None, "IHL 15 fits in 76 bytes");
        assert_eq!(with(3, 0x13), Some(Error::Malformed), "total < header");
        assert_eq!(with(3, 0x4d), Some(Error::Truncated), "total > buffer");
        assert_eq!(with(2, 0x01), Some(Error::Truncated), "total > buffer");
        let mut long_header = [0u8; 40];
        long_header[..20].copy_from_slice(&ECHO[..20]);
        long_header[0] = 0x4f;
        long_header[3] = 40;
        assert_eq!(
            Ipv4Packet::new_checked(&long_header[..]).unwrap_err(),
            Error::Truncated,
            "IHL 15 needs 60 bytes"
        );
    }

    #[test]
    fn cidr() {
        let cidr: Ipv4Cidr = "10.244.1.7/24".parse().unwrap();
        assert_eq!(cidr.address(), Ipv4Addr::new(10, 244, 1, 7));
        assert_eq!(cidr.prefix_len(), 24);
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(cidr.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(cidr.contains(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(cidr.to_string(), "10.244.1.7/24");

        let any = Ipv4Cidr::new(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
        assert!(any.contains(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(any.network(), Ipv4Addr::UNSPECIFIED);

        let host: Ipv4Cidr = "192.168.0.1".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains(Ipv4Addr::new(192, 168, 0, 1)));
        assert!(!host.contains(Ipv4Addr::new(192, 168, 0, 2)));

        assert_eq!(
            Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 33),
            Err(Error::Malformed)
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "10.0.0.0/-1",
            "fd00::/8",
            "",
        ] {
            assert_eq!(bad.parse::<Ipv4Cidr>(), Err(Error::Malformed), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(ip) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (ip.version(), ip.dscp_ecn(), ip.ident(), ip.dont_frag());
                let _ = (ip.more_frags(), ip.frag_offset(), ip.ttl(), ip.protocol());
                let _ = (ip.checksum(), ip.src_addr(), ip.dst_addr(), ip.verify_checksum());
                prop_assert_eq!(ip.options().len() + 20, ip.header_len());
                prop_assert_eq!(ip.payload().len() + ip.header_len(), usize::from(ip.total_len()));
            }
        }

        #[test]
        fn never_panics_when_version_and_ihl_are_plausible(
            mut bytes in proptest::collection::vec(any::<u8>(), 20..96),
            ihl in 5u8..16,
        ) {
            // Arbitrary bytes rarely pass the version check; force it so the
            // length checks are exercised too.
            bytes[0] = 0x40 | ihl;
            if let Ok(ip) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (ip.options(), ip.payload(), ip.verify_checksum());
            }
        }

        #[test]
        fn incremental_ttl_equals_recompute(
            mut header in proptest::array::uniform20(any::<u8>()),
            ttl in 1u8..=255,
        ) {
            header[0] = 0x45;
            header[2..4].copy_from_slice(&20u16.to_be_bytes());
            header[8] = ttl;
            let mut ip = Ipv4Packet::new_checked(&mut header[..]).unwrap();
            ip.fill_checksum();
            ip.decrement_ttl_incremental();
            prop_assert_eq!(ip.ttl(), ttl - 1);
            let incremental = ip.checksum();
            ip.fill_checksum();
            prop_assert_eq!(incremental, ip.checksum());
        }

        #[test]
        fn cidr_round_trips(addr in any::<u32>(), len in 0u8..=32) {
            let cidr = Ipv4Cidr::new(Ipv4Addr::from(addr), len).unwrap();
            prop_assert_eq!(cidr.to_string().parse::<Ipv4Cidr>(), Ok(cidr));
            prop_assert!(cidr.contains(cidr.network()));
            prop_assert!(cidr.contains(cidr.address()));
        }
    }
}
