//! The diff: the operations that take the dataplane from the state it
//! runs to the state the agent wants, in an order the dataplane accepts.
//! Pure and IO-free. (Policy has its own diff, [`policy::diff`], into one
//! atomic batch.)
//!
//! [`policy::diff`]: super::policy::diff()
//!
//! Order: routes go before the interfaces they use, deletes before
//! replaces before adds, so that an address or prefix moving from one
//! object to another is free before it is claimed. An object whose spec
//! is unchanged gets no operation at all: its traffic is not disturbed.

use std::fmt;

use ipnet::IpNet;

use super::model::{DataplaneState, InterfaceSpec, RouteSpec};

/// One change to the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    DeleteRoute(IpNet),
    DeleteInterface(String),
    /// An interface whose spec changed (the dataplane replaces it).
    ReplaceInterface(InterfaceSpec),
    AddInterface(InterfaceSpec),
    /// A route whose paths changed.
    ReplaceRoute(RouteSpec),
    AddRoute(RouteSpec),
}

impl Op {
    /// The name of the interface the op is about, if it is about one.
    pub fn interface(&self) -> Option<&str> {
        match self {
            Op::DeleteInterface(name) => Some(name),
            Op::ReplaceInterface(s) | Op::AddInterface(s) => Some(&s.name),
            Op::DeleteRoute(_) | Op::ReplaceRoute(_) | Op::AddRoute(_) => None,
        }
    }
}

/// `add interface default/a`, `delete route 10.66.0.0/16`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::DeleteRoute(p) => write!(f, "delete route {p}"),
            Op::DeleteInterface(n) => write!(f, "delete interface {n}"),
            Op::ReplaceInterface(s) => write!(f, "replace interface {}", s.name),
            Op::AddInterface(s) => write!(f, "add interface {}", s.name),
            Op::ReplaceRoute(r) => write!(f, "replace route {}", r.prefix),
            Op::AddRoute(r) => write!(f, "add route {}", r.prefix),
        }
    }
}

/// The operations that turn `actual` into `desired`.
pub fn diff(desired: &DataplaneState, actual: &DataplaneState) -> Vec<Op> {
    let mut delete_routes = Vec::new();
    let mut replace_routes = Vec::new();
    let mut add_routes = Vec::new();
    for (prefix, have) in &actual.routes {
        match desired.routes.get(prefix) {
            None => delete_routes.push(Op::DeleteRoute(*prefix)),
            Some(want) if want != have => replace_routes.push(Op::ReplaceRoute(want.clone())),
            Some(_) => {}
        }
    }
    for (prefix, want) in &desired.routes {
        if !actual.routes.contains_key(prefix) {
            add_routes.push(Op::AddRoute(want.clone()));
        }
    }

    let mut delete_interfaces = Vec::new();
    let mut replace_interfaces = Vec::new();
    let mut add_interfaces = Vec::new();
    for (name, have) in &actual.interfaces {
        match desired.interfaces.get(name) {
            None => delete_interfaces.push(Op::DeleteInterface(name.clone())),
            Some(want) if want != have => {
                replace_interfaces.push(Op::ReplaceInterface(want.clone()));
            }
            Some(_) => {}
        }
    }
    for (name, want) in &desired.interfaces {
        if !actual.interfaces.contains_key(name) {
            add_interfaces.push(Op::AddInterface(want.clone()));
        }
    }

    [
        delete_routes,
        delete_interfaces,
        replace_interfaces,
        add_interfaces,
        replace_routes,
        add_routes,
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::model::{InterfaceKind, PathSpec, TapSpec};

    fn tap(name: &str, addr: &str) -> InterfaceSpec {
        InterfaceSpec {
            name: name.into(),
            addresses: vec![addr.parse().unwrap()],
            mtu: 1500,
            kind: InterfaceKind::Tap(TapSpec {
                netns: format!("/var/run/netns/{}", name.replace('/', "_")),
                ifname: "eth0".into(),
                queues: 0,
                configure: true,
            }),
            policy_enforced: true,
        }
    }

    fn route(prefix: &str, via: &str) -> RouteSpec {
        RouteSpec {
            prefix: prefix.parse().unwrap(),
            paths: vec![PathSpec {
                interface: via.into(),
                gateway: None,
            }],
        }
    }

    fn state(interfaces: &[InterfaceSpec], routes: &[RouteSpec]) -> DataplaneState {
        DataplaneState {
            interfaces: interfaces
                .iter()
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
            routes: routes.iter().map(|r| (r.prefix, r.clone())).collect(),
            ..Default::default()
        }
    }

    fn names(ops: &[Op]) -> Vec<String> {
        ops.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn equal_states_need_nothing() {
        let s = state(
            &[tap("ns/a", "10.65.0.1/32")],
            &[route("10.66.0.0/16", "ns/a")],
        );
        assert_eq!(diff(&s, &s), []);
    }

    #[test]
    fn an_empty_dataplane_gets_everything() {
        let want = state(
            &[tap("ns/b", "10.65.0.2/32"), tap("ns/a", "10.65.0.1/32")],
            &[route("10.66.0.0/16", "ns/a")],
        );
        let ops = diff(&want, &DataplaneState::default());
        assert_eq!(
            names(&ops),
            [
                "add interface ns/a",
                "add interface ns/b",
                "add route 10.66.0.0/16"
            ]
        );
        assert_eq!(ops[0], Op::AddInterface(tap("ns/a", "10.65.0.1/32")));
    }

    #[test]
    fn deletes_go_first_then_replaces_then_adds() {
        // ns/old's address moves to ns/new; ns/a changes its address;
        // the route through ns/old goes, one through ns/a changes.
        let have = state(
            &[
                tap("ns/a", "10.65.0.1/32"),
                tap("ns/old", "10.65.0.9/32"),
                tap("ns/same", "10.65.0.7/32"),
            ],
            &[
                route("10.66.0.0/16", "ns/old"),
                route("10.67.0.0/16", "ns/old"),
            ],
        );
        let want = state(
            &[
                tap("ns/a", "10.65.0.3/32"),
                tap("ns/new", "10.65.0.9/32"),
                tap("ns/same", "10.65.0.7/32"),
            ],
            &[route("10.67.0.0/16", "ns/a")],
        );
        assert_eq!(
            names(&diff(&want, &have)),
            [
                "delete route 10.66.0.0/16",
                "delete interface ns/old",
                "replace interface ns/a",
                "add interface ns/new",
                "replace route 10.67.0.0/16",
            ]
        );
    }

    #[test]
    fn an_unknown_interface_is_replaced_or_removed() {
        let mut odd = tap("ns/a", "10.65.0.1/32");
        odd.kind = InterfaceKind::Unknown("no kind".into());
        let have = state(&[odd, tap("ns/x", "10.65.0.8/32")], &[]);
        let want = state(&[tap("ns/a", "10.65.0.1/32")], &[]);
        assert_eq!(
            names(&diff(&want, &have)),
            ["delete interface ns/x", "replace interface ns/a"]
        );
        assert_eq!(diff(&want, &have)[1].interface(), Some("ns/a"));
    }

    #[test]
    fn address_order_and_mtu_are_part_of_the_spec() {
        let mut a = tap("ns/a", "10.65.0.1/32");
        a.addresses.push("fd00:65::1/128".parse().unwrap());
        let mut reordered = a.clone();
        reordered.addresses.reverse();
        let mut mtu = a.clone();
        mtu.mtu = 9000;
        for other in [reordered, mtu] {
            let ops = diff(&state(&[a.clone()], &[]), &state(&[other], &[]));
            assert_eq!(ops, [Op::ReplaceInterface(a.clone())]);
        }
    }
}
