//! Zero-copy views over the packet headers the dataplane reads and rewrites.
//!
//! Every view wraps a buffer (`&[u8]`, `&mut [u8]`, or anything that is
//! `AsRef<[u8]>`) without copying it. `new_checked` validates the lengths a
//! header claims once, up front, so that no getter or in-bounds setter can
//! panic afterwards; the accessors then read and write single fields with
//! plain big-endian loads and stores, cheap enough for the per-packet path.
//! `new_unchecked` skips the validation for buffers the caller has already
//! sized (for example when building a header in place); accessors on such a
//! view may panic if the buffer is too short.
//!
//! Setters that change a length field (`set_header_len`, `set_total_len`,
//! `set_payload_len`, `set_len`) can break the invariant `new_checked`
//! established; call `check_len` again before trusting the view.
//!
//! The crate is `no_std`, has no dependencies and contains no `unsafe`.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

mod bytes;

pub use arp::{ArpPacket, Operation as ArpOperation};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::{Icmpv6Packet, NdiscPacket};
pub use ip::IpProtocol;
pub use ipv4::{Ipv4Cidr, Ipv4Packet};
pub use ipv6::{Ipv6Cidr, Ipv6Packet};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;

use core::fmt;

/// Why a buffer could not be viewed as a packet, or a string parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length the header
    /// claims.
    Truncated,
    /// A field holds a value the format forbids (wrong version, a header
    /// length below the minimum, a zero option length, an unparsable string).
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Malformed => f.write_str("malformed packet"),
        }
    }
}

impl core::error::Error for Error {}

/// The result of parsing a packet or an address.
pub type Result<T> = core::result::Result<T, Error>;
