//! The dataplane's state as the agent reasons about it: interfaces and
//! routes keyed by name and prefix, in domain types, and policy (see
//! [`DesiredPolicy`]), with the dataplane's
//! defaults made explicit so that a spec the agent wants and the spec the
//! dataplane reports compare equal exactly when the dataplane would call
//! them the same (and so leave the interface alone).
//!
//! Conversions to and from the dataplane API's messages live here too:
//! pure functions, no IO.

use std::collections::BTreeMap;
use std::net::IpAddr;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;

use super::policy::DesiredPolicy;

/// MTU the dataplane gives an interface whose spec says 0, bytes.
pub const DATAPLANE_DEFAULT_MTU: u16 = 1500;
/// Tap device name the dataplane uses when a spec leaves it empty.
const DATAPLANE_DEFAULT_IFNAME: &str = "eth0";

/// An interface spec, as the agent wants it or the dataplane runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// The dataplane's key for it: `<namespace>/<pod>` for pods.
    pub name: String,
    /// The endpoint's own addresses (host prefixes), in order.
    pub addresses: Vec<IpNet>,
    /// IP MTU of the pod side, bytes.
    pub mtu: u16,
    pub kind: InterfaceKind,
    /// The dataplane holds the interface closed until its policy
    /// attachment arrives (fail closed); true for pods.
    pub policy_enforced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    Tap(TapSpec),
    Memif(MemifSpec),
    /// Something the agent cannot describe (a kind it does not know, or a
    /// spec it cannot read): never what the agent wants.
    Unknown(String),
}

/// A tap in a pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Path of the network namespace.
    pub netns: String,
    /// Device name inside the namespace.
    pub ifname: String,
    /// Queue pairs; 0 = one per dataplane worker.
    pub queues: u32,
    /// Whether the dataplane also configures the pod side (addresses,
    /// MTU, gateway routes).
    pub configure: bool,
}

/// A memif interface. The API's unspecified enum values are spelled out
/// (server, ethernet, interrupt), as the dataplane reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifSpec {
    /// Control socket: an absolute path, or `@name` (abstract).
    pub socket: String,
    pub role: pb::MemifRole,
    /// Interface id on the socket.
    pub id: u32,
    /// Empty: no secret.
    pub secret: String,
    /// Queue pairs; 0 = one per dataplane worker.
    pub queues: u32,
    pub mode: pb::MemifMode,
    /// Descriptors per ring; 0 = the role's default.
    pub ring_size: u32,
    /// Bytes per buffer (client role); 0 = the default.
    pub buffer_size: u32,
    pub rx_mode: pb::MemifRxMode,
    /// The peer's MAC in lower case; empty = broadcast.
    pub peer_mac: String,
}

impl MemifSpec {
    fn to_proto(&self) -> pb::MemifSpec {
        pb::MemifSpec {
            socket: self.socket.clone(),
            role: self.role as i32,
            id: self.id,
            secret: self.secret.clone(),
            queues: self.queues,
            mode: self.mode as i32,
            ring_size: self.ring_size,
            buffer_size: self.buffer_size,
            rx_mode: self.rx_mode as i32,
            peer_mac: self.peer_mac.clone(),
        }
    }

    /// `m` with its defaults filled in; what cannot be read, as `Err`.
    fn from_proto(m: pb::MemifSpec) -> Result<Self, String> {
        let role = match pb::MemifRole::try_from(m.role) {
            Ok(pb::MemifRole::Unspecified) => pb::MemifRole::Server,
            Ok(r) => r,
            Err(_) => return Err(format!("memif role {}", m.role)),
        };
        let mode = match pb::MemifMode::try_from(m.mode) {
            Ok(pb::MemifMode::Unspecified) => pb::MemifMode::Ethernet,
            Ok(r) => r,
            Err(_) => return Err(format!("memif mode {}", m.mode)),
        };
        let rx_mode = match pb::MemifRxMode::try_from(m.rx_mode) {
            Ok(pb::MemifRxMode::Unspecified) => pb::MemifRxMode::Interrupt,
            Ok(r) => r,
            Err(_) => return Err(format!("memif rx mode {}", m.rx_mode)),
        };
        Ok(MemifSpec {
            socket: m.socket,
            role,
            id: m.id,
            secret: m.secret,
            queues: m.queues,
            mode,
            ring_size: m.ring_size,
            buffer_size: m.buffer_size,
            rx_mode,
            peer_mac: m.peer_mac.to_ascii_lowercase(),
        })
    }
}

/// A route the agent adds through the routes API (origin "api"); the
/// host routes that come with interfaces are not routes in this sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: IpNet,
    pub paths: Vec<PathSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PathSpec {
    pub interface: String,
    pub gateway: Option<IpAddr>,
}

/// Everything the agent programs into the dataplane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataplaneState {
    pub interfaces: BTreeMap<String, InterfaceSpec>,
    pub routes: BTreeMap<IpNet, RouteSpec>,
    /// IP sets, policies, and an attachment for every interface.
    pub policy: DesiredPolicy,
}

/// Reads an address as the dataplane writes it: with a prefix length, or
/// bare for a host prefix.
fn parse_prefix(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl InterfaceSpec {
    pub fn to_proto(&self) -> pb::InterfaceSpec {
        let kind = match &self.kind {
            InterfaceKind::Tap(t) => Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                netns: t.netns.clone(),
                ifname: t.ifname.clone(),
                queues: t.queues,
                configure: t.configure,
            })),
            InterfaceKind::Memif(m) => Some(pb::interface_spec::Kind::Memif(m.to_proto())),
            InterfaceKind::Unknown(_) => None,
        };
        pb::InterfaceSpec {
            name: self.name.clone(),
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            mtu: u32::from(self.mtu),
            kind,
            policy_enforced: self.policy_enforced,
            // Pods are never cross-connected.
            xconnect: String::new(),
        }
    }

    /// The spec the dataplane reports, with its defaults filled in. What
    /// cannot be read makes the kind [`InterfaceKind::Unknown`].
    pub fn from_proto(spec: pb::InterfaceSpec) -> Self {
        let mut unreadable = Vec::new();
        let addresses = spec
            .addresses
            .iter()
            .filter_map(|a| {
                let parsed = parse_prefix(a);
                if parsed.is_none() {
                    unreadable.push(format!("address {a:?}"));
                }
                parsed
            })
            .collect();
        let mtu = match spec.mtu {
            0 => DATAPLANE_DEFAULT_MTU,
            n => u16::try_from(n).unwrap_or_else(|_| {
                unreadable.push(format!("mtu {n}"));
                0
            }),
        };
        let kind = match spec.kind {
            _ if !unreadable.is_empty() => {
                InterfaceKind::Unknown(format!("unreadable {}", unreadable.join(", ")))
            }
            Some(pb::interface_spec::Kind::Tap(t)) => InterfaceKind::Tap(TapSpec {
                netns: t.netns,
                ifname: if t.ifname.is_empty() {
                    DATAPLANE_DEFAULT_IFNAME.to_owned()
                } else {
                    t.ifname
                },
                queues: t.queues,
                configure: t.configure,
            }),
            Some(pb::interface_spec::Kind::Memif(m)) => {
                MemifSpec::from_proto(m).map_or_else(InterfaceKind::Unknown, InterfaceKind::Memif)
            }
            None => InterfaceKind::Unknown("no kind".into()),
        };
        InterfaceSpec {
            name: spec.name,
            addresses,
            mtu,
            kind,
            policy_enforced: spec.policy_enforced,
        }
    }
}

impl RouteSpec {
    pub fn to_proto(&self) -> pb::Route {
        pb::Route {
            prefix: self.prefix.to_string(),
            paths: self
                .paths
                .iter()
                .map(|p| pb::Path {
                    interface: p.interface.clone(),
                    gateway: p.gateway.map(|g| g.to_string()).unwrap_or_default(),
                })
                .collect(),
            origin: String::new(),
        }
    }

    /// A route the dataplane reports, if it is one the routes API added
    /// (origin "api") and it can be read.
    pub fn from_proto(route: &pb::Route) -> Option<Self> {
        if route.origin != "api" {
            return None;
        }
        let prefix = parse_prefix(&route.prefix)?;
        let paths = route
            .paths
            .iter()
            .map(|p| {
                let gateway = match p.gateway.as_str() {
                    "" => None,
                    g => Some(g.parse().ok()?),
                };
                Some(PathSpec {
                    interface: p.interface.clone(),
                    gateway,
                })
            })
            .collect::<Option<Vec<_>>>()
            // An unreadable path still names a route the agent may have
            // to delete; an empty path list never equals a wanted route.
            .unwrap_or_default();
        Some(RouteSpec { prefix, paths })
    }
}

impl DataplaneState {
    /// What the dataplane's `ListInterfaces` and `ListRoutes` describe
    /// (policy is read apart: see [`sync`](super::sync)).
    pub fn from_listing(interfaces: &[pb::Interface], routes: &[pb::Route]) -> Self {
        DataplaneState {
            interfaces: interfaces
                .iter()
                .filter_map(|i| i.spec.clone())
                .map(InterfaceSpec::from_proto)
                .map(|s| (s.name.clone(), s))
                .collect(),
            routes: routes
                .iter()
                .filter_map(RouteSpec::from_proto)
                .map(|r| (r.prefix, r))
                .collect(),
            policy: DesiredPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(name: &str) -> InterfaceSpec {
        InterfaceSpec {
            name: name.into(),
            addresses: vec![
                "10.65.0.5/32".parse().unwrap(),
                "fd00:65::5/128".parse().unwrap(),
            ],
            mtu: 1500,
            kind: InterfaceKind::Tap(TapSpec {
                netns: "/var/run/netns/x".into(),
                ifname: "eth0".into(),
                queues: 0,
                configure: true,
            }),
            policy_enforced: true,
        }
    }

    #[test]
    fn a_spec_survives_the_round_trip_through_the_api() {
        let spec = tap("default/a");
        assert_eq!(InterfaceSpec::from_proto(spec.to_proto()), spec);
    }

    #[test]
    fn the_dataplane_defaults_and_spellings_compare_equal() {
        let mut reported = tap("default/a").to_proto();
        reported.mtu = 0;
        reported.addresses = vec!["10.65.0.5".into(), "fd00:0065:0::5/128".into()];
        if let Some(pb::interface_spec::Kind::Tap(t)) = &mut reported.kind {
            t.ifname.clear();
        }
        assert_eq!(InterfaceSpec::from_proto(reported), tap("default/a"));
    }

    #[test]
    fn what_cannot_be_read_is_unknown() {
        let mut reported = tap("default/a").to_proto();
        reported.addresses.push("bogus".into());
        let spec = InterfaceSpec::from_proto(reported);
        assert!(matches!(spec.kind, InterfaceKind::Unknown(ref why) if why.contains("bogus")));
        let mut no_kind = tap("default/b").to_proto();
        no_kind.kind = None;
        assert!(matches!(
            InterfaceSpec::from_proto(no_kind).kind,
            InterfaceKind::Unknown(_)
        ));
    }

    #[test]
    fn only_api_routes_are_the_agents() {
        let routes = [
            pb::Route {
                prefix: "10.65.0.5/32".into(),
                paths: vec![pb::Path {
                    interface: "default/a".into(),
                    gateway: String::new(),
                }],
                origin: "interface".into(),
            },
            pb::Route {
                prefix: "10.66.0.0/16".into(),
                paths: vec![pb::Path {
                    interface: "uplink".into(),
                    gateway: "192.0.2.1".into(),
                }],
                origin: "api".into(),
            },
        ];
        let state = DataplaneState::from_listing(&[], &routes);
        let prefixes: Vec<String> = state.routes.keys().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["10.66.0.0/16"]);
        let r = &state.routes[&"10.66.0.0/16".parse().unwrap()];
        assert_eq!(r.paths[0].gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.to_proto().paths, routes[1].paths);
    }
}
