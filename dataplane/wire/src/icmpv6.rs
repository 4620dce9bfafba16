//! ICMP for IPv6 (RFC 4443) and the neighbour solicitation and
//! advertisement messages of Neighbor Discovery (RFC 4861).
//!
//! [`Icmpv6Packet`] covers the 8-byte header common to all messages; its
//! checksum includes the IPv6 pseudo-header, so verifying and filling it
//! take the source and destination addresses. [`NdiscPacket`] views the
//! same bytes as a solicitation or advertisement: the dataplane answers
//! solicitations for pod gateway addresses and resolves next hops with
//! its own.

use core::net::Ipv6Addr;

use crate::bytes::{read_ipv6, read_u16, read_u32, write_u16, write_u32};
use crate::ethernet::EthernetAddress;
use crate::ip::IpProtocol;
use crate::{checksum, Error, Result};

/// Destination unreachable (RFC 4443 §3.1); codes below.
pub const DST_UNREACHABLE: u8 = 1;
/// Packet too big (RFC 4443 §3.2); carries the MTU.
pub const PACKET_TOO_BIG: u8 = 2;
/// Time exceeded (RFC 4443 §3.3).
pub const TIME_EXCEEDED: u8 = 3;
/// Parameter problem (RFC 4443 §3.4).
pub const PARAM_PROBLEM: u8 = 4;
/// Echo request (RFC 4443 §4.1).
pub const ECHO_REQUEST: u8 = 128;
/// Echo reply (RFC 4443 §4.2).
pub const ECHO_REPLY: u8 = 129;
/// Router solicitation (RFC 4861 §4.1).
pub const ROUTER_SOLICIT: u8 = 133;
/// Router advertisement (RFC 4861 §4.2).
pub const ROUTER_ADVERT: u8 = 134;
/// Neighbor solicitation (RFC 4861 §4.3).
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor advertisement (RFC 4861 §4.4).
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Redirect (RFC 4861 §4.5).
pub const REDIRECT: u8 = 137;

/// Destination unreachable: no route to destination (RFC 4443 §3.1).
pub const NO_ROUTE: u8 = 0;
/// Destination unreachable: communication administratively prohibited
/// (RFC 4443 §3.1), for packets a network policy drops.
pub const ADMIN_PROHIBITED: u8 = 1;
/// Destination unreachable: address unreachable (RFC 4443 §3.1).
pub const ADDR_UNREACHABLE: u8 = 3;
/// Destination unreachable: port unreachable (RFC 4443 §3.1).
pub const PORT_UNREACHABLE: u8 = 4;
/// Time exceeded: hop limit exceeded in transit (RFC 4443 §3.3).
pub const HOP_LIMIT_EXCEEDED: u8 = 0;

/// Whether `msg_type` is an error message: types 0 to 127 (RFC 4443 §2.1).
/// Errors are never answered with another error (RFC 4443 §2.4 (e)).
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    msg_type < 128
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
    pub const DATA: usize = 8;

    // Neighbor solicitation and advertisement (RFC 4861 §4.3, §4.4).
    pub const NDISC_FLAGS: usize = 4;
    pub const NDISC_TARGET: Field = 8..24;
    pub const NDISC_OPTIONS: usize = 24;
}

/// Length of the ICMPv6 header in bytes.
pub const HEADER_LEN: usize = field::DATA;

/// A read/write view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Icmpv6Packet<T> {
        Icmpv6Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Icmpv6Packet<T>> {
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

    /// Bytes 4..8 as one word: the MTU of [`PACKET_TOO_BIG`], the pointer of
    /// [`PARAM_PROBLEM`], unused (zero) for other errors.
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

    /// Everything after the header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over the pseudo-header and the whole buffer is
    /// correct; the caller slices the buffer to the IPv6 payload.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum(src, dst) == 0xffff
    }

    #[inline]
    fn sum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let data = self.buffer.as_ref();
        // An IPv6 payload is at most 2^32 - 1 bytes (RFC 2675).
        let len = data.len() as u32;
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len),
            checksum::data(data),
        ])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
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
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the pseudo-header and the whole buffer
    /// and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.sum(src, dst);
        self.set_checksum(!sum);
    }
}

/// Neighbor advertisement flag: the sender is a router (RFC 4861 §4.4).
const FLAG_ROUTER: u8 = 0x80;
/// Neighbor advertisement flag: sent in response to a solicitation.
const FLAG_SOLICITED: u8 = 0x40;
/// Neighbor advertisement flag: override an existing cache entry.
const FLAG_OVERRIDE: u8 = 0x20;

/// Source link-layer address option (RFC 4861 §4.6.1).
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// Target link-layer address option (RFC 4861 §4.6.1).
pub const OPT_TARGET_LLADDR: u8 = 2;

/// Length of a neighbor solicitation or advertisement before its options,
/// in bytes (RFC 4861 §4.3, §4.4).
pub const NDISC_HEADER_LEN: usize = field::NDISC_OPTIONS;

/// A read/write view of a neighbor solicitation or advertisement, starting
/// at the ICMPv6 header. The type, code and checksum are read and written
/// through [`Icmpv6Packet`] over the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdiscPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NdiscPacket<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> NdiscPacket<T> {
        NdiscPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the fixed part of the message.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<NdiscPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the fixed part of the message. The options
    /// are checked when they are walked, by [`ndisc_option_lladdr`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < NDISC_HEADER_LEN {
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

    /// Length of the message before its options in bytes; always
    /// [`NDISC_HEADER_LEN`].
    #[inline]
    pub fn header_len(&self) -> usize {
        NDISC_HEADER_LEN
    }

    /// The address being solicited or advertised.
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::NDISC_TARGET)
    }

    /// The R flag of an advertisement.
    #[inline]
    pub fn router_flag(&self) -> bool {
        self.buffer.as_ref()[field::NDISC_FLAGS] & FLAG_ROUTER != 0
    }

    /// The S flag of an advertisement.
    #[inline]
    pub fn solicited_flag(&self) -> bool {
        self.buffer.as_ref()[field::NDISC_FLAGS] & FLAG_SOLICITED != 0
    }

    /// The O flag of an advertisement.
    #[inline]
    pub fn override_flag(&self) -> bool {
        self.buffer.as_ref()[field::NDISC_FLAGS] & FLAG_OVERRIDE != 0
    }

    /// The options after the fixed part, as type-length-value records.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NDISC_OPTIONS..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdiscPacket<T> {
    #[inline]
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::NDISC_TARGET].copy_from_slice(&addr.octets());
    }

    /// Writes the R, S and O flags and clears the reserved bits of the
    /// flags byte (a solicitation wants all three false).
    #[inline]
    pub fn set_flags(&mut self, router: bool, solicited: bool, override_: bool) {
        let mut flags = 0;
        if router {
            flags |= FLAG_ROUTER;
        }
        if solicited {
            flags |= FLAG_SOLICITED;
        }
        if override_ {
            flags |= FLAG_OVERRIDE;
        }
        self.buffer.as_mut()[field::NDISC_FLAGS] = flags;
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::NDISC_OPTIONS..]
    }
}

/// Finds the first link-layer address option of type `opt_type`
/// ([`OPT_SOURCE_LLADDR`] or [`OPT_TARGET_LLADDR`]) in `options` and
/// returns its Ethernet address.
///
/// Every option is validated, also those after a match, because RFC 4861
/// §4.6 requires the whole message to be dropped if any option has length
/// zero: that is `Malformed`, an option running past the end `Truncated`,
/// and a link-layer address option too short for an Ethernet address
/// `Malformed`.
pub fn ndisc_option_lladdr(options: &[u8], opt_type: u8) -> Result<Option<EthernetAddress>> {
    let mut found = None;
    let mut rest = options;
    while !rest.is_empty() {
        let [kind, units, ..] = *rest else {
            return Err(Error::Truncated);
        };
        // The length counts 8-octet units, type and length bytes included.
        let len = usize::from(units) * 8;
        if len == 0 {
            return Err(Error::Malformed);
        }
        let Some((option, tail)) = rest.split_at_checked(len) else {
            return Err(Error::Truncated);
        };
        if kind == opt_type && found.is_none() {
            // One unit holds type, length and a 6-byte address; a longer
            // option would be for another link layer.
            let [_, _, a, b, c, d, e, f, ..] = *option else {
                return Err(Error::Malformed);
            };
            found = Some(EthernetAddress([a, b, c, d, e, f]));
        }
        rest = tail;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6::{link_local_from_mac, solicited_node};
    use proptest::prelude::*;

    /// A neighbor solicitation for fe80::5054:ff:feab:cdef from
    /// fe80::5054:ff:fe12:3456 (MAC 52:54:00:12:34:56, in a source
    /// link-layer address option), sent to ff02::1:ffab:cdef.
    static SOLICITATION: [u8; 32] = [
        0x87, 0x00, 0x85, 0x9a, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0xab, 0xcd, 0xef, 0x01, 0x01, 0x52, 0x54, 0x00, 0x12,
        0x34, 0x56,
    ];

    const SENDER_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const TARGET_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    fn sender() -> Ipv6Addr {
        link_local_from_mac(SENDER_MAC)
    }

    fn target() -> Ipv6Addr {
        link_local_from_mac(TARGET_MAC)
    }

    #[test]
    fn parse_solicitation() {
        let dst = solicited_node(target());
        let icmp = Icmpv6Packet::new_checked(&SOLICITATION[..]).unwrap();
        assert_eq!(icmp.msg_type(), NEIGHBOR_SOLICIT);
        assert_eq!(icmp.msg_code(), 0);
        assert_eq!(icmp.checksum(), 0x859a);
        assert!(icmp.verify_checksum(&sender(), &dst));
        assert!(!icmp.verify_checksum(&sender(), &target()));
        assert!(!is_error(icmp.msg_type()));

        let ns = NdiscPacket::new_checked(&SOLICITATION[..]).unwrap();
        assert_eq!(ns.target_addr(), target());
        assert!(!ns.router_flag() && !ns.solicited_flag() && !ns.override_flag());
        assert_eq!(ns.header_len(), 24);
        assert_eq!(ns.options(), &SOLICITATION[24..]);
        assert_eq!(
            ndisc_option_lladdr(ns.options(), OPT_SOURCE_LLADDR),
            Ok(Some(SENDER_MAC))
        );
        assert_eq!(
            ndisc_option_lladdr(ns.options(), OPT_TARGET_LLADDR),
            Ok(None)
        );
    }

    #[test]
    fn answer_with_advertisement() {
        let mut bytes = SOLICITATION;
        let src = target();
        let dst = sender();
        {
            let mut na = NdiscPacket::new_checked(&mut bytes[..]).unwrap();
            na.set_flags(true, true, true);
            let option = na.options_mut();
            option[0] = OPT_TARGET_LLADDR;
            option[2..8].copy_from_slice(TARGET_MAC.as_bytes());
        }
        let mut icmp = Icmpv6Packet::new_checked(&mut bytes[..]).unwrap();
        icmp.set_msg_type(NEIGHBOR_ADVERT);
        icmp.fill_checksum(&src, &dst);
        assert!(icmp.verify_checksum(&src, &dst));

        let na = NdiscPacket::new_checked(&bytes[..]).unwrap();
        assert!(na.router_flag() && na.solicited_flag() && na.override_flag());
        assert_eq!(na.target_addr(), target());
        assert_eq!(
            ndisc_option_lladdr(na.options(), OPT_TARGET_LLADDR),
            Ok(Some(TARGET_MAC))
        );
        assert_eq!(bytes[4], 0xe0);

        let mut na = NdiscPacket::new_checked(&mut bytes[..]).unwrap();
        na.set_flags(false, true, false);
        assert!(!na.router_flag() && na.solicited_flag() && !na.override_flag());
        na.set_target_addr(dst);
        assert_eq!(na.target_addr(), dst);
    }

    #[test]
    fn echo_request() {
        // Echo request from fd00::1 to fd00::2, ident 0x0042, seq 7, "ping".
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        let mut bytes = [0u8; 12];
        let mut icmp = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        icmp.set_msg_type(ECHO_REQUEST);
        icmp.set_msg_code(0);
        icmp.set_echo_ident(0x42);
        icmp.set_echo_seq_no(7);
        icmp.data_mut().copy_from_slice(b"ping");
        icmp.fill_checksum(&src, &dst);
        let icmp = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert!(icmp.verify_checksum(&src, &dst));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x42, 7));
        assert_eq!(icmp.rest_of_header(), 0x0042_0007);
        assert_eq!(icmp.data(), b"ping");
        assert_eq!(icmp.header_len(), 8);
    }

    #[test]
    fn packet_too_big() {
        let mut bytes = [0u8; 8];
        let mut icmp = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        icmp.set_msg_type(PACKET_TOO_BIG);
        icmp.set_rest_of_header(1280);
        assert!(is_error(icmp.msg_type()));
        assert_eq!(bytes, [2, 0, 0, 0, 0, 0, 0x05, 0x00]);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv6Packet::new_checked(&SOLICITATION[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        for len in 0..NDISC_HEADER_LEN {
            assert_eq!(
                NdiscPacket::new_checked(&SOLICITATION[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let bare = NdiscPacket::new_checked(&SOLICITATION[..NDISC_HEADER_LEN]).unwrap();
        assert_eq!(
            ndisc_option_lladdr(bare.options(), OPT_SOURCE_LLADDR),
            Ok(None)
        );
    }

    #[test]
    fn option_walk_errors() {
        let lladdr = |options: &[u8]| ndisc_option_lladdr(options, OPT_SOURCE_LLADDR);
        // Cut inside the option: the one byte left cannot hold type and length.
        assert_eq!(lladdr(&[0x01]), Err(Error::Truncated));
        // Cut after the length: the option claims 8 bytes.
        for len in 2..8 {
            assert_eq!(lladdr(&SOLICITATION[24..24 + len]), Err(Error::Truncated));
        }
        // Zero length, first or after a valid option.
        assert_eq!(
            lladdr(&[0x01, 0x00, 0, 0, 0, 0, 0, 0]),
            Err(Error::Malformed)
        );
        let mut two = [0u8; 16];
        two[..8].copy_from_slice(&SOLICITATION[24..]);
        two[8] = 14;
        assert_eq!(lladdr(&two), Err(Error::Malformed));
        // Length running past the end.
        assert_eq!(
            lladdr(&[0x01, 0x02, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated)
        );
        // An unrelated option (nonce, RFC 3971) before the address is skipped.
        two[8..].copy_from_slice(&SOLICITATION[24..]);
        two[..8].copy_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(lladdr(&two), Ok(Some(SENDER_MAC)));
        // The first of two address options wins.
        let mut dup = [0u8; 16];
        dup[..8].copy_from_slice(&SOLICITATION[24..]);
        dup[8..].copy_from_slice(&[1, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(lladdr(&dup), Ok(Some(SENDER_MAC)));
        assert_eq!(lladdr(&[]), Ok(None));
    }

    #[test]
    fn error_types() {
        assert!(is_error(DST_UNREACHABLE) && is_error(PARAM_PROBLEM) && is_error(0));
        assert!(is_error(127) && !is_error(ECHO_REQUEST) && !is_error(REDIRECT));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let addr = Ipv6Addr::LOCALHOST;
            match Icmpv6Packet::new_checked(&bytes[..]) {
                Ok(icmp) => {
                    let _ = (icmp.msg_type(), icmp.msg_code(), icmp.checksum());
                    let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.rest_of_header());
                    let _ = (icmp.data(), icmp.verify_checksum(&addr, &addr));
                }
                Err(_) => prop_assert!(bytes.len() < HEADER_LEN),
            }
            match NdiscPacket::new_checked(&bytes[..]) {
                Ok(nd) => {
                    let _ = (nd.target_addr(), nd.router_flag(), nd.solicited_flag());
                    let _ = nd.override_flag();
                    let _ = ndisc_option_lladdr(nd.options(), OPT_SOURCE_LLADDR);
                }
                Err(_) => prop_assert!(bytes.len() < NDISC_HEADER_LEN),
            }
        }

        #[test]
        fn option_walk_never_panics(options in proptest::collection::vec(any::<u8>(), 0..64), kind in 0u8..4) {
            let _ = ndisc_option_lladdr(&options, kind);
        }

        #[test]
        fn filled_checksum_verifies(
            data in proptest::collection::vec(any::<u8>(), 8..64),
            src in any::<u128>(),
            dst in any::<u128>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut data = data;
            let mut icmp = Icmpv6Packet::new_checked(&mut data[..]).unwrap();
            icmp.fill_checksum(&src, &dst);
            prop_assert!(icmp.verify_checksum(&src, &dst));
        }
    }
}
