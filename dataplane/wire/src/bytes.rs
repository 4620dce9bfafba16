//! Big-endian loads and stores of header fields at fixed offsets.
//!
//! Each view's `mod field` names its fields as byte ranges; these helpers
//! read and write the network-order integer or address stored there. They
//! index the slice directly, so they are only called where the view's
//! `check_len` has guaranteed the range is in bounds.

use core::net::{Ipv4Addr, Ipv6Addr};
use core::ops::Range;

/// The byte range a header field occupies.
pub(crate) type Field = Range<usize>;

#[inline]
pub(crate) fn read_u16(data: &[u8], field: Field) -> u16 {
    debug_assert_eq!(field.len(), 2);
    u16::from_be_bytes([data[field.start], data[field.start + 1]])
}

#[inline]
pub(crate) fn read_u32(data: &[u8], field: Field) -> u32 {
    debug_assert_eq!(field.len(), 4);
    let at = field.start;
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline]
pub(crate) fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(data: &mut [u8], field: Field, value: u32) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(data: &[u8], field: Field) -> Ipv4Addr {
    Ipv4Addr::from(read_u32(data, field))
}

#[inline]
pub(crate) fn read_ipv6(data: &[u8], field: Field) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&data[field]);
    Ipv6Addr::from(octets)
}
