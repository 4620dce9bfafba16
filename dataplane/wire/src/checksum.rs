//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! [`data`] and [`combine`] return the ones-complement *sum*, folded to 16
//! bits but not complemented, so partial sums (a pseudo-header, a header, a
//! payload) can be computed separately and combined. A header's stored
//! checksum is the complement of the sum over the header with the checksum
//! field zeroed; a received header is intact when the sum over it, checksum
//! included, is `0xffff`.
//!
//! [`update16`] and [`update32`] patch a stored checksum after one field
//! changes, without touching the rest of the packet: this is what a router
//! uses when it decrements the TTL or rewrites an address.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::ip::IpProtocol;

/// Folds a wide ones-complement accumulator into 16 bits with end-around
/// carry.
#[inline]
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    sum as u16
}

/// The ones-complement sum of `bytes` taken as big-endian 16-bit words
/// (RFC 1071 §4.1), folded but not complemented. An odd trailing byte is
/// padded with a zero byte.
///
/// Sums 32-bit words into a 64-bit accumulator and folds once at the end:
/// since 2^16 ≡ 1 (mod 2^16 − 1), the sum of 32-bit words folds to the same
/// value as the sum of their 16-bit halves (RFC 1071 §2(B)).
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        sum += u64::from(u32::from_be_bytes([w[4], w[5], w[6], w[7]]));
    }
    // At most seven bytes remain; pad them with zeros to whole 32-bit words.
    // The remainder starts at an offset divisible by eight, so its 16-bit
    // words keep their alignment.
    let rest = words.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]));
    sum += u64::from(u32::from_be_bytes([tail[4], tail[5], tail[6], tail[7]]));
    fold(sum)
}

/// The ones-complement sum of partial sums, folded but not complemented.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The sum over the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): source and
/// destination address, protocol, and the upper-layer length in bytes.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, proto: IpProtocol, length: u32) -> u16 {
    let sum = u64::from(src.to_bits())
        + u64::from(dst.to_bits())
        + u64::from(proto.0)
        + u64::from(length);
    fold(sum)
}

/// The sum over the IPv6 pseudo-header (RFC 8200 §8.1): source and
/// destination address, the 32-bit upper-layer length in bytes, and the
/// next-header value of the upper-layer protocol.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, proto: IpProtocol, length: u32) -> u16 {
    let mut sum = u64::from(proto.0) + u64::from(length);
    for addr in [src.to_bits(), dst.to_bits()] {
        for shift in [96, 64, 32, 0] {
            sum += u64::from((addr >> shift) as u32);
        }
    }
    fold(sum)
}

/// The stored checksum after one 16-bit word of the covered data changes
/// from `old` to `new`: RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`.
///
/// Equals a full recomputation whenever the covered data is not all zeros
/// (always the case for an IP header, whose version field is non-zero).
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!checksum) + u64::from(!old) + u64::from(new);
    !fold(sum)
}

/// The stored checksum after one aligned 32-bit field (an IPv4 address, a
/// port pair) changes from `old` to `new`: [`update16`] applied to both
/// halves at once.
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let (old_hi, old_lo) = ((old >> 16) as u16, old as u16);
    let (new_hi, new_lo) = ((new >> 16) as u16, new as u16);
    let sum = u64::from(!checksum)
        + u64::from(!old_hi)
        + u64::from(!old_lo)
        + u64::from(new_hi)
        + u64::from(new_lo);
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// RFC 1071 §3 sums 16-bit words one at a time; the reference the fast
    /// path is checked against.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        // Byte order independence: the swapped sum is the swapped input's.
        let swapped = [0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6];
        assert_eq!(data(&swapped), 0xf2dd);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn carries_wrap_around() {
        assert_eq!(data(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(data(&[0xff; 1500]), 0xffff);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(combine(&[]), 0);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = dd2f, m = 5555 -> m' = 3285 gives HC' = 0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = Ipv4Addr::new(192, 168, 1, 10);
        let dst = Ipv4Addr::new(192, 168, 1, 20);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 6, 0, 40]);
        assert_eq!(
            pseudo_header_v4(&src, &dst, IpProtocol::TCP, 40),
            reference_sum(&bytes)
        );
    }

    #[test]
    fn pseudo_header_v6_matches_bytes() {
        let src: Ipv6Addr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ffab:cdef".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 1, 0, 32, 0, 0, 0, 58]);
        assert_eq!(
            pseudo_header_v6(&src, &dst, IpProtocol::ICMPV6, 0x10020),
            reference_sum(&bytes)
        );
    }

    /// Data that is not all zeros: RFC 1624's update is exact only then.
    fn nonzero_words() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 8..128).prop_map(|mut v| {
            let len = v.len() & !3;
            v.truncate(len);
            v[0] |= 0x40;
            v
        })
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(data(&bytes), reference_sum(&bytes));
        }

        #[test]
        fn split_sums_combine(bytes in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..150) {
            // Splitting at an even offset keeps word alignment.
            let at = (at * 2).min(bytes.len() & !1);
            let (a, b) = bytes.split_at(at);
            prop_assert_eq!(combine(&[data(a), data(b)]), reference_sum(&bytes));
        }

        #[test]
        fn update16_matches_recompute(mut bytes in nonzero_words(), at in 0usize..64, new in any::<u16>()) {
            let at = (at * 2) % bytes.len();
            prop_assume!(at != 0 || new & 0x4000 != 0);
            let before = !data(&bytes);
            let old = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            bytes[at..at + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update16(before, old, new), !data(&bytes));
        }

        #[test]
        fn update32_matches_recompute(mut bytes in nonzero_words(), at in 0usize..32, new in any::<u32>()) {
            let at = (at * 4) % bytes.len();
            prop_assume!(at != 0 || new & 0x4000_0000 != 0);
            let before = !data(&bytes);
            let old = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            bytes[at..at + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update32(before, old, new), !data(&bytes));
        }
    }
}
