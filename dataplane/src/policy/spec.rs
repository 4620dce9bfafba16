//! The policy API's objects (`policy.proto`) in domain types: IP sets,
//! policies of ordered rules, and the per-endpoint attachment of tiers of
//! policies. The gRPC layer validates requests into these (every field
//! checked, errors naming the field); [`PolicyDb`](super::PolicyDb) keeps
//! them and compiles them into classifiers; the test interpreter reads them
//! literally.
//!
//! Semantics (the header of `policy.proto` is normative): per endpoint and
//! direction, tiers in order, within a tier its policies in order, within
//! a policy its rules in order; the first ALLOW or DENY rule that matches
//! decides, LOG records and goes on, PASS skips to the next tier; a tier
//! with a policy but no deciding rule ends with its end action; no tier
//! (or every tier passed) gives the endpoint's default for the direction.

use std::collections::BTreeSet;

use super::rule::{Action, IpNet, PortRange};

/// IP protocol numbers the rules treat specially (IANA).
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    /// Protocols with ports.
    pub fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | SCTP)
    }

    pub fn is_icmp(p: u8) -> bool {
        matches!(p, ICMP | ICMPV6)
    }
}

/// A named list of addresses and prefixes (members may overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSetSpec {
    pub name: String,
    pub members: BTreeSet<IpNet>,
}

/// Members to add to and remove from an existing IP set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSetDelta {
    pub name: String,
    pub add: Vec<IpNet>,
    pub remove: Vec<IpNet>,
}

/// Restricts a rule to one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

/// One side (source or destination) of a rule. Every non-empty field must
/// match; within a list any entry may.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SideSpec {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    pub ip_sets: Vec<String>,
    pub not_ip_sets: Vec<String>,
    /// Only in rules whose protocol has ports (TCP, UDP, SCTP).
    pub ports: Vec<PortRange>,
    pub not_ports: Vec<PortRange>,
}

impl SideSpec {
    pub fn is_any(&self) -> bool {
        *self == SideSpec::default()
    }
}

/// ICMP type and code: an absent type matches any (and then so does the
/// code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IcmpSpec {
    pub icmp_type: Option<u8>,
    pub code: Option<u8>,
}

impl IcmpSpec {
    pub fn matches(&self, icmp_type: u8, code: u8) -> bool {
        self.icmp_type.is_none_or(|t| t == icmp_type) && self.code.is_none_or(|c| c == code)
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    pub action: Action,
    /// `None`: any protocol.
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    /// `None`: both families.
    pub ip_version: Option<IpVersion>,
    pub source: SideSpec,
    pub destination: SideSpec,
    /// Only in ICMP (1) and ICMPv6 (58) rules.
    pub icmp: Option<IcmpSpec>,
    pub not_icmp: Option<IcmpSpec>,
    /// Reported in flow logs; may be empty.
    pub id: String,
}

impl RuleSpec {
    /// A rule with `action` that matches every packet.
    pub fn new(action: Action) -> Self {
        RuleSpec {
            action,
            protocol: None,
            not_protocol: None,
            ip_version: None,
            source: SideSpec::default(),
            destination: SideSpec::default(),
            icmp: None,
            not_icmp: None,
            id: String::new(),
        }
    }
}

/// Ingress (traffic to the endpoint) or egress (from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A named list of rules for each direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySpec {
    pub name: String,
    pub ingress: Vec<RuleSpec>,
    pub egress: Vec<RuleSpec>,
}

impl PolicySpec {
    pub fn rules(&self, dir: Direction) -> &[RuleSpec] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What a tier does when none of its policies' rules decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndAction {
    Deny,
    Pass,
}

/// What an endpoint does with traffic no tier decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierSpec {
    pub name: String,
    /// Policy names, in evaluation order.
    pub policies: Vec<String>,
    pub end_action: EndAction,
}

/// The tiers and defaults of one interface (endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPolicySpec {
    /// Dataplane interface name.
    pub interface: String,
    pub ingress: Vec<TierSpec>,
    pub egress: Vec<TierSpec>,
    pub ingress_default: DefaultAction,
    pub egress_default: DefaultAction,
}

impl EndpointPolicySpec {
    pub fn tiers(&self, dir: Direction) -> &[TierSpec] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn default_action(&self, dir: Direction) -> DefaultAction {
        match dir {
            Direction::Ingress => self.ingress_default,
            Direction::Egress => self.egress_default,
        }
    }

    /// Whether `policy` is in any tier of either direction.
    pub fn uses(&self, policy: &str) -> bool {
        self.ingress
            .iter()
            .chain(&self.egress)
            .any(|t| t.policies.iter().any(|p| p == policy))
    }
}

/// Many changes applied as one: in this order, sets, set deltas,
/// policies, attachments, then the deletions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyBatch {
    pub set_ip_sets: Vec<IpSetSpec>,
    pub update_ip_sets: Vec<IpSetDelta>,
    pub set_policies: Vec<PolicySpec>,
    pub set_endpoints: Vec<EndpointPolicySpec>,
    pub delete_policies: Vec<String>,
    pub delete_ip_sets: Vec<String>,
}

impl PolicyBatch {
    pub fn is_empty(&self) -> bool {
        *self == PolicyBatch::default()
    }
}

/// Everything the policy database holds (or the part one interface uses),
/// as `GetPolicyState` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyStateSpec {
    /// The generation of the tables that enforce this state.
    pub generation: u64,
    pub ip_sets: Vec<IpSetSpec>,
    pub policies: Vec<PolicySpec>,
    pub endpoints: Vec<EndpointPolicySpec>,
}
