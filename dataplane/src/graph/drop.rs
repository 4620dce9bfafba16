//! Drop reasons: every packet the graph discards is counted under one of
//! these, per worker. Reasons are data, not log lines.

macro_rules! drop_reasons {
    ($( $variant:ident => ($node:literal, $name:literal, $desc:literal), )*) => {
        /// Why a packet was dropped. Each reason belongs to the node that
        /// decides it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order (`ALL[r as usize] == r`).
            pub const ALL: &'static [DropReason] = &[$( DropReason::$variant, )*];
            pub const COUNT: usize = Self::ALL.len();

            /// The graph node that drops for this reason.
            pub fn node(self) -> &'static str {
                match self { $( DropReason::$variant => $node, )* }
            }

            /// Stable, machine-readable name (unique within its node).
            pub fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// What happened, for people.
            pub fn description(self) -> &'static str {
                match self { $( DropReason::$variant => $desc, )* }
            }
        }
    };
}

drop_reasons! {
    XconnectRemoved => ("l2-xconnect", "not-cross-connected", "the receive interface is no longer cross-connected"),
    EthTruncated => ("ethernet-input", "truncated", "frame shorter than an Ethernet header"),
    EthNotForUs => ("ethernet-input", "not-for-us", "unicast to another MAC address"),
    EthUnknownType => ("ethernet-input", "unknown-ethertype", "EtherType not handled"),
    ArpMalformed => ("arp-input", "malformed", "truncated or not Ethernet/IPv4 ARP"),
    ArpNotRequest => ("arp-input", "not-request", "ARP reply or unknown opcode"),
    ArpProbe => ("arp-input", "probe-or-gratuitous", "ARP probe or gratuitous ARP, not answered"),
    Ip4Truncated => ("ip4-input", "truncated", "IPv4 header or total length beyond the frame"),
    Ip4Malformed => ("ip4-input", "malformed", "bad IPv4 version, IHL or total length"),
    Ip4BadChecksum => ("ip4-input", "bad-checksum", "IPv4 header checksum mismatch"),
    Ip4SourceNotAllowed => ("ip4-input", "source-not-allowed", "source address is not the endpoint's own (spoofed)"),
    Ip4NotUnicast => ("ip4-input", "not-unicast", "multicast, broadcast or reserved destination"),
    Ip4Local => ("ip4-input", "local", "addressed to the gateway itself"),
    Ip4NoRoute => ("ip4-lookup", "no-route", "no route to destination (ICMP error not sent)"),
    Ip4FragmentationNeeded => ("ip4-rewrite", "mtu-exceeded", "larger than the output MTU and fragmentation is not supported"),
    Ip6Truncated => ("ip6-input", "truncated", "IPv6 header or payload length beyond the frame"),
    Ip6Malformed => ("ip6-input", "malformed", "bad IPv6 version"),
    Ip6SourceNotAllowed => ("ip6-input", "source-not-allowed", "source address is not the endpoint's own (spoofed)"),
    Ip6NotForwarded => ("ip6-input", "not-forwarded", "multicast or link-local traffic other than neighbour discovery"),
    Ip6Local => ("ip6-input", "local", "addressed to the gateway itself"),
    NdMalformed => ("ip6-ndisc", "malformed", "truncated or invalid neighbour solicitation"),
    NdBadChecksum => ("ip6-ndisc", "bad-checksum", "ICMPv6 checksum mismatch"),
    NdNotSolicitation => ("ip6-ndisc", "not-solicitation", "ICMPv6 message other than a neighbour solicitation"),
    NdDuplicateAddressDetection => ("ip6-ndisc", "dad", "duplicate address detection probe, not answered"),
    NdOwnAddress => ("ip6-ndisc", "own-address", "solicitation for the endpoint's own address"),
    IcmpErrorSuppressed => ("icmp-error", "suppressed", "no ICMP error about an ICMP error, a fragment or a non-unicast source"),
    IcmpErrorRateLimited => ("icmp-error", "rate-limited", "ICMP error rate limit reached"),
    IcmpErrorNoHeadroom => ("icmp-error", "no-headroom", "no room to build the ICMP error"),
    PolicyDenied => ("policy", "denied", "denied by policy"),
    PolicyNotReady => ("policy", "not-ready", "policy not ready: the endpoint enforces policy and has none yet (fail closed)"),
    TxPortDown => ("interface-output", "port-down", "output interface gone or not yet ready"),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn names_are_unique_per_node() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(
                seen.insert((r.node(), r.name())),
                "duplicate {}/{}",
                r.node(),
                r.name()
            );
            assert!(!r.description().is_empty());
        }
    }
}
