//! The nodes of the forwarding graph.
//!
//! `l2-xconnect` sends frames of a cross-connected port out of its peer
//! untouched; `ethernet-input` classifies frames; `arp-input` and `ip6-ndisc` answer
//! for the pod gateway; `ip4-input`/`ip6-input` validate and check the
//! source; `*-lookup` does the longest-prefix match; `*-flow` finds the
//! packet's connection in the flow table and `*-policy` decides those
//! without a current verdict; `*-rewrite` decrements
//! TTL/hop limit and writes the Ethernet header; `*-icmp-error` turns a
//! packet into the ICMP error about it, in place.

mod arp;
mod ethernet;
mod flow;
mod ip4;
mod ip6;
mod l2;

pub use arp::ArpInput;
pub use ethernet::EthernetInput;
pub use flow::FlowNodes;
pub(crate) use flow::{V4, V6};
pub use ip4::{Ip4IcmpError, Ip4Input, Ip4Lookup, Ip4Rewrite};
pub use ip6::{Ip6IcmpError, Ip6Input, Ip6Lookup, Ip6Ndisc, Ip6Rewrite};
pub use l2::L2Xconnect;

/// Bytes of the Ethernet header in front of every IP packet in the graph.
pub const L2_LEN: usize = caracal_wire::ethernet::HEADER_LEN;

/// State of every node of one worker's graph.
#[derive(Debug)]
pub struct Nodes {
    pub xconnect: L2Xconnect,
    pub ethernet: EthernetInput,
    pub arp: ArpInput,
    pub ndisc: Ip6Ndisc,
    pub ip4_input: Ip4Input,
    pub ip6_input: Ip6Input,
    pub ip4_icmp_error: Ip4IcmpError,
    pub ip6_icmp_error: Ip6IcmpError,
    pub ip4_lookup: Ip4Lookup,
    pub ip6_lookup: Ip6Lookup,
    pub ip4_rewrite: Ip4Rewrite,
    pub ip6_rewrite: Ip6Rewrite,
    /// `ip4-flow`, `ip6-flow`, `ip4-policy`, `ip6-policy`.
    pub flows: FlowNodes,
}

impl Nodes {
    pub fn new(flows: FlowNodes) -> Self {
        Nodes {
            xconnect: L2Xconnect,
            ethernet: EthernetInput,
            arp: ArpInput,
            ndisc: Ip6Ndisc,
            ip4_input: Ip4Input,
            ip6_input: Ip6Input,
            ip4_icmp_error: Ip4IcmpError::default(),
            ip6_icmp_error: Ip6IcmpError::default(),
            ip4_lookup: Ip4Lookup,
            ip6_lookup: Ip6Lookup,
            ip4_rewrite: Ip4Rewrite,
            ip6_rewrite: Ip6Rewrite,
            flows,
        }
    }
}

/// Mixes a flow's addresses and ports into the hash ECMP spreads by.
#[inline]
pub(crate) fn flow_hash(words: &[u32]) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &w in words {
        h = (h ^ u64::from(w)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    }
    (h >> 32) as u32
}

/// Ports of a TCP/UDP/SCTP header at the start of `l4`, as one word, or 0.
#[inline]
pub(crate) fn l4_ports(proto: caracal_wire::IpProtocol, l4: &[u8]) -> u32 {
    use caracal_wire::IpProtocol;
    match proto {
        IpProtocol::TCP | IpProtocol::UDP | IpProtocol::SCTP if l4.len() >= 4 => {
            u32::from_be_bytes([l4[0], l4[1], l4[2], l4[3]])
        }
        _ => 0,
    }
}

/// Token bucket limiting the ICMP errors one worker generates.
#[derive(Debug)]
pub struct IcmpRateLimit {
    tokens: u32,
    last_ns: u64,
}

impl IcmpRateLimit {
    /// Errors per second per worker.
    const RATE: u64 = 10_000;
    const BURST: u32 = 256;

    #[inline]
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let refill = now_ns.saturating_sub(self.last_ns) * Self::RATE / 1_000_000_000;
        if refill > 0 {
            self.tokens = (u64::from(self.tokens) + refill).min(u64::from(Self::BURST)) as u32;
            self.last_ns = now_ns;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Default for IcmpRateLimit {
    fn default() -> Self {
        IcmpRateLimit {
            tokens: Self::BURST,
            last_ns: 0,
        }
    }
}

#[cfg(test)]
mod tests;
