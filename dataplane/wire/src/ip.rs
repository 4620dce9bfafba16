//! What IPv4 and IPv6 share: the protocol numbers carried in the IPv4
//! `protocol` and IPv6 `next header` fields, and CIDR prefix-length parsing.

use core::fmt;

use crate::{Error, Result};

/// An IANA-assigned Internet protocol number (RFC 790, RFC 8200 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options header (RFC 8200 §4.3).
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    /// Internet Control Message Protocol (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// Transmission Control Protocol (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// User Datagram Protocol (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 Routing header (RFC 8200 §4.4).
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment header (RFC 8200 §4.5).
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// No next header (RFC 8200 §4.7).
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options header (RFC 8200 §4.6).
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
    /// Stream Control Transmission Protocol (RFC 9260).
    pub const SCTP: IpProtocol = IpProtocol(132);
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(value: u8) -> Self {
        IpProtocol(value)
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(value: IpProtocol) -> Self {
        value.0
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            IpProtocol::HOPOPT => "hop-by-hop",
            IpProtocol::ICMP => "icmp",
            IpProtocol::TCP => "tcp",
            IpProtocol::UDP => "udp",
            IpProtocol::IPV6_ROUTE => "ipv6-route",
            IpProtocol::IPV6_FRAG => "ipv6-frag",
            IpProtocol::ICMPV6 => "icmpv6",
            IpProtocol::IPV6_NONXT => "ipv6-nonxt",
            IpProtocol::IPV6_OPTS => "ipv6-opts",
            IpProtocol::SCTP => "sctp",
            IpProtocol(other) => return write!(f, "{other}"),
        };
        f.write_str(name)
    }
}

/// Parses the `/n` part of a CIDR string: one to three decimal digits, at
/// most `max`. Stricter than `u8::from_str`, which also accepts a sign.
pub(crate) fn parse_prefix_len(s: &str, max: u8) -> Result<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Malformed);
    }
    let len = s
        .bytes()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match u8::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(Error::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn protocol_display() {
        assert_eq!(IpProtocol::TCP.to_string(), "tcp");
        assert_eq!(IpProtocol::ICMPV6.to_string(), "icmpv6");
        assert_eq!(IpProtocol(253).to_string(), "253");
        assert_eq!(u8::from(IpProtocol::from(17)), 17);
    }

    #[test]
    fn prefix_len() {
        assert_eq!(parse_prefix_len("0", 32), Ok(0));
        assert_eq!(parse_prefix_len("24", 32), Ok(24));
        assert_eq!(parse_prefix_len("128", 128), Ok(128));
        assert_eq!(parse_prefix_len("33", 32), Err(Error::Malformed));
        assert_eq!(parse_prefix_len("999", 128), Err(Error::Malformed));
        assert_eq!(parse_prefix_len("", 32), Err(Error::Malformed));
        assert_eq!(parse_prefix_len("+8", 32), Err(Error::Malformed));
        assert_eq!(parse_prefix_len("1024", 128), Err(Error::Malformed));
    }
}
