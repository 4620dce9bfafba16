//! The rule model the control side hands to the classifier: ids,
//! priorities, actions, address prefixes and IP sets, port ranges, and the
//! 5-tuple key a packet is classified by.
//!
//! These are slow-path, owned values (they allocate); the classifier
//! compiles them into its own compact rows.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::family::Family;
use super::PolicyError;

/// A rule's identity, chosen by the control side and reported back with
/// every verdict (flow logs name the rule that decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u32);

/// Evaluation order: lower values are tried first, and the first matching
/// rule wins. Unique within one classifier; [`Priority::MAX`] is reserved.
///
/// Priorities are sparse so a rule can be placed between two others
/// without renumbering (e.g. tier, policy order and rule index packed into
/// bit fields by the control side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u32);

impl Priority {
    /// Reserved: marks an empty slot inside the classifier.
    pub const MAX: Priority = Priority(u32::MAX);
}

/// An IP set's identity (a named list of prefixes, such as the addresses of
/// the pods a selector picks), kept up to date incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpSetId(pub u32);

/// What a matching rule decides, with Calico's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Log the packet and go on with the next rule: the caller resumes with
    /// [`Classifier::classify_after`](super::Classifier::classify_after).
    Log,
    /// Skip the rest of this tier: the caller resumes after the tier's
    /// last priority with
    /// [`Classifier::classify_after`](super::Classifier::classify_after).
    Pass,
}

/// An address prefix of one family: the address with its host bits
/// cleared, and the prefix length in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix<A> {
    addr: A,
    len: u8,
}

impl<A: Family> Prefix<A> {
    /// The prefix that matches every address of the family.
    pub const ANY: Prefix<A> = Prefix {
        addr: A::ZERO,
        len: 0,
    };

    /// The prefix `addr/len`, host bits cleared.
    pub fn new(addr: A, len: u8) -> Result<Self, PolicyError> {
        if len > A::BITS {
            return Err(PolicyError::PrefixLength(len));
        }
        Ok(Prefix {
            addr: addr.and(A::mask(len)),
            len,
        })
    }

    pub fn addr(self) -> A {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(self) -> u8 {
        self.len
    }

    /// True for the zero-length prefix.
    pub fn is_any(self) -> bool {
        self.len == 0
    }

    pub fn contains(self, a: A) -> bool {
        a.and(A::mask(self.len)) == self.addr
    }
}

/// An IPv4 or IPv6 prefix, as written in a policy (`10.0.0.0/8`,
/// `fd00::/64`; a bare address is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpNet {
    V4(Prefix<u32>),
    V6(Prefix<u128>),
}

impl IpNet {
    /// `addr/len` with the host bits cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PolicyError> {
        Ok(match addr {
            IpAddr::V4(a) => IpNet::V4(Prefix::new(u32::from(a), len)?),
            IpAddr::V6(a) => IpNet::V6(Prefix::new(u128::from(a), len)?),
        })
    }

    pub fn contains(self, a: IpAddr) -> bool {
        match (self, a) {
            (IpNet::V4(p), IpAddr::V4(a)) => p.contains(u32::from(a)),
            (IpNet::V6(p), IpAddr::V6(a)) => p.contains(u128::from(a)),
            _ => false,
        }
    }
}

impl From<Prefix<u32>> for IpNet {
    fn from(p: Prefix<u32>) -> Self {
        IpNet::V4(p)
    }
}

impl From<Prefix<u128>> for IpNet {
    fn from(p: Prefix<u128>) -> Self {
        IpNet::V6(p)
    }
}

impl FromStr for IpNet {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::BadNet(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len = len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        IpNet::new(addr, len)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNet::V4(p) => write!(f, "{}/{}", Ipv4Addr::from(p.addr), p.len),
            IpNet::V6(p) => write!(f, "{}/{}", Ipv6Addr::from(p.addr), p.len),
        }
    }
}

/// What a rule requires of an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum AddrMatch {
    /// Any address of either family.
    #[default]
    Any,
    /// An address in any of these prefixes (an empty list matches nothing).
    Nets(Vec<IpNet>),
    /// An address in the named IP set, whose members change through
    /// [`RuleSet::set_insert`](super::RuleSet::set_insert) and
    /// [`RuleSet::set_remove`](super::RuleSet::set_remove) without
    /// touching the rule (an empty or unknown set matches nothing).
    Set(IpSetId),
}

/// An inclusive range of ports. For ICMP and ICMPv6 rules the source range
/// holds the type and the destination range the code (see
/// [`PacketKey::icmp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// `lo..=hi`.
    pub fn new(lo: u16, hi: u16) -> Result<Self, PolicyError> {
        if lo > hi {
            return Err(PolicyError::PortRange(lo, hi));
        }
        Ok(PortRange { lo, hi })
    }

    pub const fn exact(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::ANY
    }
}

/// One rule: every field must match (fields are ANDed), and among the
/// matching rules the one with the lowest [`Priority`] decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub id: RuleId,
    pub priority: Priority,
    pub src: AddrMatch,
    pub dst: AddrMatch,
    /// Source port, or ICMP type.
    pub sport: PortRange,
    /// Destination port, or ICMP code.
    pub dport: PortRange,
    /// IP protocol number (RFC 790 / IANA), `None` for any.
    pub proto: Option<u8>,
    pub action: Action,
}

impl Rule {
    /// A rule matching every packet; narrow it with the `with_*` methods.
    pub fn new(id: RuleId, priority: Priority, action: Action) -> Self {
        Rule {
            id,
            priority,
            src: AddrMatch::Any,
            dst: AddrMatch::Any,
            sport: PortRange::ANY,
            dport: PortRange::ANY,
            proto: None,
            action,
        }
    }

    pub fn with_src(mut self, src: AddrMatch) -> Self {
        self.src = src;
        self
    }

    pub fn with_dst(mut self, dst: AddrMatch) -> Self {
        self.dst = dst;
        self
    }

    pub fn with_sport(mut self, sport: PortRange) -> Self {
        self.sport = sport;
        self
    }

    pub fn with_dport(mut self, dport: PortRange) -> Self {
        self.dport = dport;
        self
    }

    pub fn with_proto(mut self, proto: u8) -> Self {
        self.proto = Some(proto);
        self
    }

    /// ICMP (`proto` 1) or ICMPv6 (58) with an optional type and code.
    pub fn with_icmp(mut self, proto: u8, icmp_type: Option<u8>, code: Option<u8>) -> Self {
        let field = |v: Option<u8>| v.map_or(PortRange::ANY, |v| PortRange::exact(v.into()));
        self.proto = Some(proto);
        self.sport = field(icmp_type);
        self.dport = field(code);
        self
    }
}

/// The header fields a packet is classified by, as the packet carries them
/// (not canonicalised like the flow table's key), for one address family
/// (`u32` for IPv4, `u128` for IPv6; addresses in host order).
///
/// Packets without ports carry 0 in both; ICMP and ICMPv6 packets carry
/// the type in `sport` and the code in `dport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PacketKey<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

pub type PacketKey4 = PacketKey<u32>;
pub type PacketKey6 = PacketKey<u128>;

impl<A: Family> PacketKey<A> {
    pub fn new(src: A, dst: A, proto: u8, sport: u16, dport: u16) -> Self {
        PacketKey {
            src,
            dst,
            sport,
            dport,
            proto,
        }
    }

    /// An ICMP/ICMPv6 key: the type travels in `sport`, the code in `dport`.
    pub fn icmp(src: A, dst: A, proto: u8, icmp_type: u8, code: u8) -> Self {
        PacketKey::new(src, dst, proto, icmp_type.into(), code.into())
    }
}

impl PacketKey4 {
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Self {
        PacketKey::new(src.into(), dst.into(), proto, sport, dport)
    }
}

impl PacketKey6 {
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Self {
        PacketKey::new(src.into(), dst.into(), proto, sport, dport)
    }
}

/// The verdict for one key: the first matching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hit {
    pub rule: RuleId,
    pub priority: Priority,
    pub action: Action,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_and_clear_host_bits() {
        let n: IpNet = "10.1.2.3/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert!(n.contains("10.1.200.7".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let h: IpNet = "fd00::1".parse().unwrap();
        assert_eq!(h.to_string(), "fd00::1/128");
        let any: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("255.255.255.255".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0/8".parse::<IpNet>().is_err());
        assert!("fd00::/129".parse::<IpNet>().is_err());
    }

    #[test]
    fn port_ranges() {
        assert!(PortRange::new(10, 9).is_err());
        let r = PortRange::new(1024, 65535).unwrap();
        assert!(r.contains(1024) && r.contains(65535) && !r.contains(1023));
        assert!(PortRange::ANY.contains(0));
    }

    #[test]
    fn icmp_maps_onto_ports() {
        let r = Rule::new(RuleId(1), Priority(1), Action::Allow).with_icmp(1, Some(8), None);
        assert_eq!(r.sport, PortRange::exact(8));
        assert_eq!(r.dport, PortRange::ANY);
        let k = PacketKey4::icmp(1, 2, 1, 8, 0);
        assert_eq!((k.sport, k.dport, k.proto), (8, 0, 1));
    }
}
