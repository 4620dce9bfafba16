//! The compiler on literal policies: each NetworkPolicy semantic, checked
//! through the meaning of the output (the [interpreter](super::super::interpret))
//! and, where the names are the contract, its shape; then the minimality
//! of the diff between two calculations.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::*;
use crate::agent::datastore::objects::StoredKind;
use crate::agent::endpoints::{dataplane_interface_name, InterfaceKind};
use crate::agent::policy::diff::{diff, is_empty};
use crate::agent::policy::interpret::{Direction, Interpreter, Packet};

/// Namespaces, pods, policies and this node's endpoints, written
/// literally.
#[derive(Default, Clone)]
struct World {
    objects: BTreeMap<String, Object>,
    endpoints: BTreeMap<String, Endpoint>,
}

impl World {
    fn put(&mut self, object: Object) {
        self.objects.insert(object.key().to_string(), object);
    }

    fn namespace(&mut self, name: &str, labels: Value) -> &mut Self {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels}
        }))
        .unwrap();
        self.put(ns.into_object());
        self
    }

    /// A pod with an endpoint on this node at `ip`; `extra` is merged into
    /// the pod's JSON (say, its `spec`).
    fn pod(&mut self, ns: &str, name: &str, labels: Value, ip: &str, extra: Value) -> &mut Self {
        self.remote_pod(ns, name, labels, &[], extra);
        let ep = Endpoint {
            container_id: format!("c-{ns}-{name}"),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{ns}_{name}"),
            namespace: ns.into(),
            pod: name.into(),
            pod_uid: String::new(),
            ips: vec![format!("{ip}/32").parse().unwrap()],
            interface_kind: InterfaceKind::Tap,
            socket_path: None,
            memif: None,
            dataplane_interface: dataplane_interface_name(ns, name, "eth0"),
            mtu: 1500,
        };
        self.endpoints.insert(format!("{ns}/{name}"), ep);
        self
    }

    /// A pod elsewhere: its addresses are those of its status.
    fn remote_pod(
        &mut self,
        ns: &str,
        name: &str,
        labels: Value,
        ips: &[&str],
        extra: Value,
    ) -> &mut Self {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()},
        });
        merge(&mut pod, extra);
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.put(pod.into_object());
        self
    }

    fn policy(&mut self, ns: &str, name: &str, spec: Value) -> &mut Self {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap();
        self.put(np.into_object());
        self
    }

    fn objects(&self) -> Objects {
        Objects::from_objects(self.objects.values().cloned())
    }

    fn endpoints(&self) -> Endpoints {
        Arc::new(
            self.endpoints
                .values()
                .map(|e| (e.key(), e.clone()))
                .collect(),
        )
    }

    fn compile(&self) -> DesiredPolicy {
        calculate(&self.objects(), &self.endpoints())
    }

    /// The address of `who`: a pod `ns/name` (its first), or an address.
    fn address(&self, who: &str) -> IpAddr {
        if let Some(ep) = self.endpoints.get(who) {
            return ep.ips[0].addr();
        }
        if let Some(Object::Pod(p)) = self.objects.get(&format!("Pod {who}")) {
            return p.status.as_ref().unwrap().pod_ips.as_ref().unwrap()[0]
                .ip
                .parse()
                .unwrap();
        }
        who.parse().unwrap_or_else(|_| panic!("who is {who}?"))
    }

    /// Whether a connection from `src` to `dst` (pods or addresses) on
    /// `protocol`/`port` gets through: egress at the source if it is an
    /// endpoint here, ingress at the destination if it is.
    fn allows(&self, src: &str, dst: &str, protocol: u8, port: u16) -> bool {
        let state = self.compile().to_state();
        let dp = Interpreter::new(&state);
        let packet = Packet {
            src: self.address(src),
            dst: self.address(dst),
            protocol,
            src_port: 40000,
            dst_port: port,
        };
        let iface = |who: &str| {
            self.endpoints
                .get(who)
                .map(|e| e.dataplane_interface.clone())
        };
        iface(src).is_none_or(|i| dp.allows(&i, Direction::Egress, &packet))
            && iface(dst).is_none_or(|i| dp.allows(&i, Direction::Ingress, &packet))
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn none() -> Value {
    json!({})
}

/// Two namespaces: `prod` (team=a) with web, client and other pods, and
/// `dev` (team=b) with a client.
fn base() -> World {
    let mut w = World::default();
    w.namespace("prod", json!({"team": "a"}))
        .namespace("dev", json!({"team": "b"}))
        .pod("prod", "web", json!({"app": "web"}), "10.65.0.1", none())
        .pod(
            "prod",
            "client",
            json!({"app": "client"}),
            "10.65.0.2",
            none(),
        )
        .pod(
            "prod",
            "other",
            json!({"app": "other"}),
            "10.65.0.3",
            none(),
        )
        .pod(
            "dev",
            "client",
            json!({"app": "client"}),
            "10.65.0.4",
            none(),
        );
    w
}

// ------------------------------------------------------------- isolation

#[test]
fn without_policies_everything_is_allowed() {
    let w = base();
    let out = w.compile();
    assert!(out.policies.is_empty() && out.ip_sets.is_empty());
    let ep = &out.endpoints["prod/web"];
    assert!(ep.ingress.is_empty() && ep.egress.is_empty());
    assert_eq!(ep.ingress_default, pb::Action::Allow as i32);
    assert_eq!(ep.egress_default, pb::Action::Allow as i32);
    assert!(w.allows("dev/client", "prod/web", TCP, 80));
    assert!(w.allows("192.0.2.1", "prod/web", UDP, 53));
}

#[test]
fn a_selected_pod_is_isolated_and_others_are_not() {
    let mut w = base();
    w.policy(
        "prod",
        "deny-web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}}),
    );
    let out = w.compile();
    let web = &out.endpoints["prod/web"];
    assert_eq!(
        web.ingress,
        [pb::Tier {
            name: "default".into(),
            policies: vec!["knp.prod.deny-web".into()],
            end_action: pb::Action::Deny as i32,
        }]
    );
    assert!(web.egress.is_empty(), "no egress rules: Ingress only");
    assert!(out.endpoints["prod/other"].ingress.is_empty());
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));
    assert!(w.allows("prod/web", "prod/client", TCP, 80), "egress open");
    assert!(w.allows("prod/client", "prod/other", TCP, 80));
}

#[test]
fn allowing_needs_both_the_sources_egress_and_the_destinations_ingress() {
    let mut w = base();
    w.policy(
        "prod",
        "web-in",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}),
    )
    .policy(
        "prod",
        "client-out",
        json!({
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "other"}}}]}],
        }),
    );
    assert!(
        !w.allows("prod/client", "prod/web", TCP, 80),
        "client egress"
    );
    assert!(w.allows("prod/other", "prod/web", TCP, 80));
    assert!(w.allows("prod/client", "prod/other", TCP, 80));
}

#[test]
fn policies_of_a_pod_add_up() {
    let mut w = base();
    for (name, app) in [("from-client", "client"), ("from-other", "other")] {
        w.policy(
            "prod",
            name,
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": app}}}]}],
            }),
        );
    }
    let out = w.compile();
    assert_eq!(
        out.endpoints["prod/web"].ingress[0].policies,
        ["knp.prod.from-client", "knp.prod.from-other"]
    );
    assert!(w.allows("prod/client", "prod/web", TCP, 80));
    assert!(w.allows("prod/other", "prod/web", TCP, 80));
    assert!(!w.allows("dev/client", "prod/web", TCP, 80));
}

// --------------------------------------------------------- policy types

#[test]
fn policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() {
    let mut w = base();
    w.policy(
        "prod",
        "both",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    );
    let out = w.compile();
    let web = &out.endpoints["prod/web"];
    assert_eq!(web.ingress.len(), 1);
    assert_eq!(web.egress.len(), 1);
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));
    assert!(w.allows("prod/web", "192.0.2.53", UDP, 53));
    assert!(!w.allows("prod/web", "192.0.2.53", TCP, 53));

    // An empty egress list is no egress rule: Ingress only.
    w.policy(
        "prod",
        "both",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "egress": []}),
    );
    assert!(w.compile().endpoints["prod/web"].egress.is_empty());
}

#[test]
fn rules_of_a_direction_not_listed_are_ignored() {
    let mut w = base();
    w.policy(
        "prod",
        "egress-only",
        json!({
            "podSelector": {},
            "policyTypes": ["Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        }),
    );
    let out = w.compile();
    let spec = &out.policies["knp.prod.egress-only"];
    assert!(spec.ingress.is_empty() && spec.egress.is_empty());
    assert!(out.ip_sets.is_empty(), "ignored rules make no sets");
    let web = &out.endpoints["prod/web"];
    assert!(web.ingress.is_empty());
    assert_eq!(web.egress[0].policies, ["knp.prod.egress-only"]);
    assert!(
        w.allows("dev/client", "prod/web", TCP, 80),
        "ingress not isolated"
    );
    assert!(
        !w.allows("prod/web", "dev/client", TCP, 80),
        "egress: no rule"
    );
}

// ------------------------------------------------------------ selectors

#[test]
fn a_pod_selector_peer_is_in_the_policys_namespace() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        }),
    );
    assert!(w.allows("prod/client", "prod/web", TCP, 80));
    assert!(!w.allows("dev/client", "prod/web", TCP, 80));
    assert!(!w.allows("prod/other", "prod/web", TCP, 80));
}

#[test]
fn match_expressions_select_with_every_operator() {
    let mut w = World::default();
    w.namespace("ns", json!({}))
        .pod(
            "ns",
            "a",
            json!({"tier": "front", "env": "prod"}),
            "10.65.0.1",
            none(),
        )
        .pod(
            "ns",
            "b",
            json!({"tier": "back", "env": "prod"}),
            "10.65.0.2",
            none(),
        )
        .pod("ns", "c", json!({"tier": "back"}), "10.65.0.3", none())
        .pod("ns", "d", json!({}), "10.65.0.4", none());
    let cases = [
        (
            json!({"key": "tier", "operator": "In", "values": ["front", "x"]}),
            "a",
        ),
        (
            json!({"key": "tier", "operator": "NotIn", "values": ["front"]}),
            "bcd",
        ),
        (json!({"key": "env", "operator": "Exists"}), "ab"),
        (json!({"key": "env", "operator": "DoesNotExist"}), "cd"),
    ];
    for (expr, selected) in cases {
        w.policy(
            "ns",
            "p",
            json!({"podSelector": {"matchExpressions": [expr]}}),
        );
        let out = w.compile();
        let isolated: String = ["a", "b", "c", "d"]
            .into_iter()
            .filter(|p| !out.endpoints[&format!("ns/{p}")].ingress.is_empty())
            .collect();
        assert_eq!(isolated, selected, "{expr}");
    }
    // Requirements are ANDed, matchLabels with them.
    w.policy(
        "ns",
        "p",
        json!({"podSelector": {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}],
        }}),
    );
    let out = w.compile();
    assert!(!out.endpoints["ns/b"].ingress.is_empty());
    assert!(out.endpoints["ns/a"].ingress.is_empty());
    assert!(out.endpoints["ns/c"].ingress.is_empty());
}

#[test]
fn namespace_selectors_alone_and_with_a_pod_selector() {
    let mut w = base();
    w.pod("dev", "tool", json!({"app": "tool"}), "10.65.0.5", none());
    let from = |peer: Value| json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [peer]}]});
    w.policy(
        "prod",
        "p",
        from(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}})),
    );
    assert!(w.allows("dev/client", "prod/web", TCP, 80));
    assert!(w.allows("dev/tool", "prod/web", TCP, 80));
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));

    // Both: pods matching the pod selector in matching namespaces.
    w.policy(
        "prod",
        "p",
        from(json!({
            "namespaceSelector": {"matchLabels": {"team": "b"}},
            "podSelector": {"matchLabels": {"app": "client"}},
        })),
    );
    assert!(w.allows("dev/client", "prod/web", TCP, 80));
    assert!(!w.allows("dev/tool", "prod/web", TCP, 80));
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));

    // Every namespace has its name as a label.
    w.policy(
        "prod",
        "p",
        from(json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}})),
    );
    assert!(w.allows("dev/tool", "prod/web", TCP, 80));
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));
}

#[test]
fn empty_selectors_select_everything_in_their_scope() {
    let mut w = base();
    let from = |peer: Value| json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [peer]}]});
    // Every pod of the policy's namespace.
    w.policy("prod", "p", from(json!({"podSelector": {}})));
    assert!(w.allows("prod/other", "prod/web", TCP, 80));
    assert!(!w.allows("dev/client", "prod/web", TCP, 80));
    assert!(!w.allows("192.0.2.1", "prod/web", TCP, 80), "pods only");
    // Every pod of every namespace.
    w.policy("prod", "p", from(json!({"namespaceSelector": {}})));
    assert!(w.allows("dev/client", "prod/web", TCP, 80));
    assert!(!w.allows("192.0.2.1", "prod/web", TCP, 80));
    // An empty pod selector selects every pod for isolation too.
    w.policy("prod", "p", json!({"podSelector": {}}));
    let out = w.compile();
    assert!(["prod/web", "prod/client", "prod/other"]
        .iter()
        .all(|p| !out.endpoints[*p].ingress.is_empty()));
    assert!(out.endpoints["dev/client"].ingress.is_empty());
}

#[test]
fn namespaces_without_an_object_still_have_their_name_label() {
    let mut w = World::default();
    w.pod("a", "x", json!({}), "10.65.0.1", none())
        .pod("b", "y", json!({}), "10.65.0.2", none())
        .policy(
            "a",
            "p",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
                {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}]}]}),
        );
    assert!(w.allows("b/y", "a/x", TCP, 80));
}

// ------------------------------------------------------------- ipBlock

#[test]
fn ip_blocks_with_exceptions_match_any_address_pods_included() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.65.0.0/16", "except": ["10.65.0.2/32"]}},
            {"ipBlock": {"cidr": "192.0.2.0/24"}},
        ]}]}),
    );
    assert!(
        w.allows("dev/client", "prod/web", TCP, 80),
        "a pod in the block"
    );
    assert!(!w.allows("prod/client", "prod/web", TCP, 80), "excepted");
    assert!(w.allows("192.0.2.9", "prod/web", TCP, 80));
    assert!(!w.allows("198.51.100.1", "prod/web", TCP, 80));
    let rules = &w.compile().policies["knp.prod.p"].ingress;
    assert_eq!(rules.len(), 2, "one rule per block: exceptions do not mix");
    assert_eq!(
        rules[0].source,
        Some(pb::EndpointMatch {
            nets: vec!["10.65.0.0/16".into()],
            not_nets: vec!["10.65.0.2/32".into()],
            ..Default::default()
        })
    );
}

#[test]
fn egress_to_an_ip_block() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00:65::/64", "except": ["fd00:65::1/128"]}}]}]}),
    );
    assert!(w.allows("prod/web", "fd00:65::2", TCP, 443));
    assert!(!w.allows("prod/web", "fd00:65::1", TCP, 443));
    assert!(!w.allows("prod/web", "192.0.2.1", TCP, 443));
}

// --------------------------------------------------------------- ports

#[test]
fn ports_by_protocol_number_range_and_protocol_alone() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [
            {"port": 80},
            {"port": 8000, "endPort": 8010, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP"},
            {"protocol": "SCTP"},
        ]}]}),
    );
    let cases = [
        (TCP, 80, true),
        (TCP, 81, false),
        (TCP, 8000, true),
        (TCP, 8010, true),
        (TCP, 8011, false),
        (UDP, 80, false),
        (UDP, 53, true),
        (TCP, 53, false),
        (SCTP, 9999, true),
        (1, 0, false),
    ];
    for (protocol, port, want) in cases {
        assert_eq!(
            w.allows("192.0.2.1", "prod/web", protocol, port),
            want,
            "{protocol}/{port}"
        );
    }
    let rules = &w.compile().policies["knp.prod.p"].ingress;
    let shape: Vec<_> = rules
        .iter()
        .map(|r| {
            let ports = r.destination.iter().flat_map(|d| &d.ports);
            (
                r.protocol,
                ports.map(|p| (p.first, p.last)).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (Some(6), vec![(80, 0), (8000, 8010)]),
            (Some(17), vec![(53, 0)]),
            (Some(132), vec![]),
        ],
        "one rule per protocol, ranges together"
    );
    assert!(rules.iter().all(|r| r.id == "knp.prod.p/ingress/0"));
}

#[test]
fn no_ports_is_every_protocol() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    assert!(w.allows("prod/client", "prod/web", 1, 0));
    assert!(w.allows("prod/client", "prod/web", UDP, 9));
    let rule = &w.compile().policies["knp.prod.p"].ingress[0];
    assert_eq!((rule.protocol, rule.destination.as_ref()), (None, None));
}

fn with_ports(ports: Value) -> Value {
    json!({"spec": {"containers": [{"name": "c", "ports": ports}]}})
}

#[test]
fn ingress_named_ports_resolve_on_each_selected_pod() {
    let mut w = base();
    w.pod(
        "prod",
        "web2",
        json!({"app": "web"}),
        "10.65.0.10",
        with_ports(json!([{"name": "http", "containerPort": 9090}])),
    )
    .pod(
        "prod",
        "web",
        json!({"app": "web"}),
        "10.65.0.1",
        with_ports(json!([
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ])),
    )
    .pod("prod", "web3", json!({"app": "web"}), "10.65.0.11", none())
    .policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [
            {"port": "http"}, {"port": "dns", "protocol": "UDP"}, {"port": "dns"},
        ]}]}),
    );
    assert!(w.allows("prod/client", "prod/web", TCP, 8080));
    assert!(!w.allows("prod/client", "prod/web", TCP, 9090));
    assert!(w.allows("prod/client", "prod/web2", TCP, 9090));
    assert!(!w.allows("prod/client", "prod/web2", TCP, 8080));
    assert!(w.allows("prod/client", "prod/web", UDP, 53));
    assert!(!w.allows("prod/client", "prod/web", TCP, 53), "dns is UDP");
    for port in [53, 8080, 9090] {
        assert!(
            !w.allows("prod/client", "prod/web3", TCP, port),
            "no named port"
        );
    }
    let out = w.compile();
    let names: Vec<&String> = out.ip_sets.keys().collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let base_name = names[0].split(':').take(2).collect::<Vec<_>>().join(":");
    assert_eq!(
        names,
        [
            &format!("{base_name}:tcp:http:8080"),
            &format!("{base_name}:tcp:http:9090"),
            &format!("{base_name}:udp:dns:53"),
        ]
    );
    assert_eq!(
        out.ip_sets[names[1]],
        ["10.65.0.10/32".parse().unwrap()].into()
    );
}

#[test]
fn egress_named_ports_resolve_on_each_destination_pod() {
    let mut w = base();
    w.pod(
        "dev",
        "api",
        json!({"app": "api"}),
        "10.65.0.20",
        with_ports(json!([{"name": "http", "containerPort": 8080}])),
    )
    .pod(
        "dev",
        "api2",
        json!({"app": "api"}),
        "10.65.0.21",
        with_ports(json!([{"name": "http", "containerPort": 8081}])),
    )
    .pod(
        "prod",
        "local-api",
        json!({"app": "other"}),
        "10.65.0.22",
        with_ports(json!([{"name": "http", "containerPort": 8080}])),
    )
    .policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}],
             "ports": [{"port": "http"}]},
            {"to": [{"ipBlock": {"cidr": "10.65.0.0/16"}}], "ports": [{"port": "http"}]},
        ]}),
    );
    assert!(w.allows("prod/client", "dev/api", TCP, 8080));
    assert!(!w.allows("prod/client", "dev/api", TCP, 8081));
    assert!(w.allows("prod/client", "dev/api2", TCP, 8081));
    // The block's named port: any pod in it with that port, nothing else.
    assert!(w.allows("prod/client", "prod/local-api", TCP, 8080));
    assert!(!w.allows("prod/client", "prod/web", TCP, 8080));
    assert!(!w.allows("prod/client", "10.65.9.9", TCP, 8080));
    let rules = &w.compile().policies["knp.prod.p"].egress;
    assert_eq!(rules.len(), 4, "two groups per rule");
    let block = &rules[2].destination.as_ref().unwrap();
    assert_eq!(block.nets, ["10.65.0.0/16"]);
    assert_eq!(block.ip_sets.len(), 1);
    assert_eq!(
        block.ports,
        [pb::PortRange {
            first: 8080,
            last: 0
        }]
    );
}

#[test]
fn a_named_port_nobody_has_allows_nothing() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "nope"}]}]}),
    );
    assert!(w.compile().policies["knp.prod.p"].ingress.is_empty());
    assert!(!w.allows("prod/client", "prod/web", TCP, 80));
}

// ------------------------------------------------------------ pods' IPs

#[test]
fn pods_without_usable_addresses_contribute_nothing() {
    let mut w = base();
    w.remote_pod(
        "dev",
        "remote",
        json!({"app": "client"}),
        &["10.66.0.7", "fd00:66::7"],
        none(),
    )
    .remote_pod(
        "dev",
        "host",
        json!({"app": "client"}),
        &["192.168.1.10"],
        json!({"spec": {"hostNetwork": true}}),
    )
    .remote_pod(
        "dev",
        "done",
        json!({"app": "client"}),
        &["10.66.0.8"],
        json!({"status": {"phase": "Succeeded"}}),
    )
    .remote_pod("dev", "pending", json!({"app": "client"}), &[], none())
    .policy(
        "prod",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "client"}}}
        ]}]}),
    );
    let out = w.compile();
    assert_eq!(out.ip_sets.len(), 1);
    let members: Vec<String> = out
        .ip_sets
        .values()
        .next()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        members,
        [
            "10.65.0.2/32",
            "10.65.0.4/32",
            "10.66.0.7/32",
            "fd00:66::7/128"
        ],
        "local endpoints, and other nodes' pods by status"
    );
    assert!(w.allows("dev/remote", "prod/web", TCP, 80));
    assert!(!w.allows("192.168.1.10", "prod/web", TCP, 80));
    assert!(!w.allows("10.66.0.8", "prod/web", TCP, 80));
}

#[test]
fn a_local_pods_endpoint_addresses_win_over_its_status() {
    let mut w = base();
    w.pod(
        "dev",
        "client",
        json!({"app": "client"}),
        "10.65.0.4",
        json!({"status": {"podIPs": [{"ip": "10.65.9.9"}]}}),
    )
    .policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    );
    let out = w.compile();
    assert!(!out
        .ip_sets
        .values()
        .any(|s| s.contains(&"10.65.9.9/32".parse().unwrap())));
}

#[test]
fn an_endpoint_without_its_pod_passes_nothing() {
    let mut w = base();
    w.objects.remove("Pod prod/web");
    let web = &w.compile().endpoints["prod/web"];
    assert!(web.ingress.is_empty() && web.egress.is_empty());
    assert_eq!(web.ingress_default, pb::Action::Deny as i32);
    assert_eq!(web.egress_default, pb::Action::Deny as i32);
}

// -------------------------------------------------------------- names

#[test]
fn sets_are_shared_by_equal_selector_pairs_and_named_by_them() {
    let mut w = base();
    let from = |peer: Value| json!({"podSelector": {}, "ingress": [{"from": [peer]}]});
    w.policy(
        "prod",
        "a",
        from(json!({"podSelector": {"matchLabels": {"app": "client"}}})),
    )
    .policy(
        "prod",
        "b",
        from(json!({"podSelector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["client"]}]}})),
    )
    .policy(
        "dev",
        "c",
        from(json!({"podSelector": {"matchLabels": {"app": "client"}}})),
    );
    let out = w.compile();
    assert_eq!(out.ip_sets.len(), 2, "prod's and dev's");
    let set = |p: &str| {
        out.policies[p].ingress[0]
            .source
            .as_ref()
            .unwrap()
            .ip_sets
            .clone()
    };
    assert_eq!(set("knp.prod.a"), set("knp.prod.b"));
    assert_ne!(set("knp.prod.a"), set("knp.dev.c"));
    let name = &set("knp.prod.a")[0];
    assert!(name.starts_with("sel:") && name.len() == 4 + 24, "{name}");
    // Stable: a pinned value, so a change of naming is a conscious one.
    let scope = PodScope {
        namespaces: Namespaces::Named("prod".into()),
        pods: Some(Selector::everything()),
    };
    assert_eq!(scope.set_name(), scope.clone().set_name());
    assert_eq!(scope.set_name(), PINNED_SET_NAME);
    assert_eq!(w.compile(), out, "deterministic");
}

/// `sel:` and the hash of `{"namespaces":{"Named":"prod"},"pods":{"requirements":[]}}`.
const PINNED_SET_NAME: &str = "sel:2b163c7a5bc460bc64b6a618";

#[test]
fn rule_ids_name_the_networkpolicy_rule() {
    let mut w = base();
    w.policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [
            {"from": [{"podSelector": {}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]},
            {"ports": [{"port": 1}]},
        ], "egress": [{}]}),
    );
    let spec = &w.compile().policies["knp.prod.p"];
    let ids: Vec<&str> = spec
        .ingress
        .iter()
        .chain(&spec.egress)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "knp.prod.p/ingress/0",
            "knp.prod.p/ingress/0",
            "knp.prod.p/ingress/1",
            "knp.prod.p/egress/0"
        ]
    );
}

// ----------------------------------------------------------- malformed

#[test]
fn what_the_api_server_refuses_allows_nothing() {
    let mut w = base();
    let only =
        |rule: Value| json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [rule]});
    for rule in [
        json!({"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}),
        json!({"from": [{"ipBlock": {"cidr": "10.65.0.0/33"}}]}),
        json!({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}]}),
        json!({"from": [{}]}),
        json!({"ports": [{"endPort": 90}]}),
        json!({"ports": [{"port": "http", "endPort": 90}]}),
        json!({"ports": [{"port": 90, "endPort": 80}]}),
        json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
    ] {
        w.policy("prod", "p", only(rule.clone()));
        assert!(!w.allows("prod/client", "prod/web", TCP, 80), "{rule}");
        assert!(!w.allows("prod/client", "prod/web", TCP, 90), "{rule}");
    }
}

// ------------------------------------------------------ diff minimality

/// The batch from `before` to `after`.
fn batch(before: &World, after: &World) -> pb::PolicyBatch {
    diff(&before.compile(), &after.compile())
}

fn policy_world() -> World {
    let mut w = base();
    w.policy(
        "prod",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"app": "client"}}},
            {"namespaceSelector": {"matchLabels": {"team": "b"}}},
        ]}]}),
    );
    w
}

#[test]
fn a_peers_label_change_only_updates_sets() {
    let before = policy_world();
    let mut after = before.clone();
    after.pod(
        "prod",
        "other",
        json!({"app": "client"}),
        "10.65.0.3",
        none(),
    );
    let b = batch(&before, &after);
    assert_eq!(
        b,
        pb::PolicyBatch {
            update_ip_sets: vec![pb::IpSetDelta {
                name: b.update_ip_sets[0].name.clone(),
                add: vec!["10.65.0.3/32".into()],
                remove: vec![],
            }],
            ..Default::default()
        }
    );
    assert!(is_empty(&diff(&after.compile(), &after.compile())));
}

#[test]
fn a_selected_pods_label_change_touches_its_endpoint_and_sets_only() {
    let before = policy_world();
    let mut after = before.clone();
    // web becomes a client: no longer selected, now in the client set.
    after.pod("prod", "web", json!({"app": "client"}), "10.65.0.1", none());
    let b = batch(&before, &after);
    assert!(b.set_policies.is_empty() && b.delete_policies.is_empty());
    assert!(b.set_ip_sets.is_empty() && b.delete_ip_sets.is_empty());
    assert_eq!(b.update_ip_sets.len(), 1);
    assert_eq!(b.update_ip_sets[0].add, ["10.65.0.1/32"]);
    assert_eq!(b.set_endpoints.len(), 1);
    assert_eq!(b.set_endpoints[0].interface, "prod/web");
    assert!(b.set_endpoints[0].ingress.is_empty());
}

#[test]
fn a_new_pod_gets_its_attachment_and_joins_its_sets() {
    let before = policy_world();
    let mut after = before.clone();
    after
        .pod("dev", "new", json!({"app": "x"}), "10.65.0.30", none())
        .pod("prod", "web2", json!({"app": "web"}), "10.65.0.31", none());
    let b = batch(&before, &after);
    assert!(b.set_policies.is_empty() && b.set_ip_sets.is_empty());
    let updates: Vec<(&[String], &[String])> = b
        .update_ip_sets
        .iter()
        .map(|d| (&d.add[..], &d.remove[..]))
        .collect();
    assert_eq!(
        updates,
        [(&["10.65.0.30/32".to_owned()][..], &[][..])],
        "the team=b set"
    );
    let ifaces: Vec<&str> = b
        .set_endpoints
        .iter()
        .map(|e| e.interface.as_str())
        .collect();
    assert_eq!(ifaces, ["dev/new", "prod/web2"]);
    assert_eq!(b.set_endpoints[1].ingress[0].policies, ["knp.prod.web"]);
}

#[test]
fn a_namespace_label_change_only_updates_namespace_selector_sets() {
    let before = policy_world();
    let mut after = before.clone();
    after.namespace("prod", json!({"team": "b"}));
    let b = batch(&before, &after);
    assert!(b.set_policies.is_empty() && b.set_endpoints.is_empty());
    assert!(b.set_ip_sets.is_empty() && b.delete_ip_sets.is_empty());
    assert_eq!(b.update_ip_sets.len(), 1);
    assert_eq!(
        b.update_ip_sets[0].add,
        ["10.65.0.1/32", "10.65.0.2/32", "10.65.0.3/32"]
    );
}

#[test]
fn a_new_policy_brings_its_sets_and_the_attachments_it_changes() {
    let before = policy_world();
    let mut after = before.clone();
    after.policy(
        "dev",
        "lockdown",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
    );
    let b = batch(&before, &after);
    let names: Vec<&str> = b.set_policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["knp.dev.lockdown"]);
    assert!(b.set_ip_sets.is_empty() && b.update_ip_sets.is_empty());
    let ifaces: Vec<&str> = b
        .set_endpoints
        .iter()
        .map(|e| e.interface.as_str())
        .collect();
    assert_eq!(ifaces, ["dev/client"]);
    // And it goes the same way.
    let back = batch(&after, &before);
    assert_eq!(back.delete_policies, ["knp.dev.lockdown"]);
    assert_eq!(back.set_endpoints.len(), 1);
}

#[test]
fn a_changed_policy_is_resent_and_its_unused_sets_deleted() {
    let before = policy_world();
    let mut after = before.clone();
    after.policy(
        "prod",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"app": "other"}}},
        ]}]}),
    );
    let b = batch(&before, &after);
    assert_eq!(b.set_policies.len(), 1);
    assert_eq!(b.set_ip_sets.len(), 1);
    assert_eq!(b.delete_ip_sets.len(), 2);
    assert!(b.set_endpoints.is_empty(), "same attachment");
}

// ------------------------------------------------------------ the example

#[test]
fn the_demo_policies_do_what_their_comment_says() {
    use crate::agent::datastore::manifest;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut w = World::default();
    for file in [
        "demo/namespaces.yaml",
        "demo/pods.yaml",
        "policies/demo.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let parsed = manifest::parse(file, &text);
        assert!(parsed.problems.is_empty(), "{file}: {:?}", parsed.problems);
        for (_, object) in parsed.objects {
            w.put(object);
        }
    }
    let pods: Vec<(String, String)> = w
        .objects
        .values()
        .filter_map(|o| match o {
            Object::Pod(p) => Some((
                p.metadata.namespace.clone().unwrap(),
                p.metadata.name.clone().unwrap(),
            )),
            _ => None,
        })
        .collect();
    for (i, (ns, name)) in pods.iter().enumerate() {
        let object = w.objects.remove(&format!("Pod {ns}/{name}")).unwrap();
        let Object::Pod(pod) = object else {
            unreachable!()
        };
        let ip = format!("10.65.0.{}", i + 1);
        w.pod(
            ns,
            name,
            json!(pod.metadata.labels),
            &ip,
            json!({"spec": pod.spec}),
        );
    }
    let cases = [
        ("frontend/web-1", "backend/api-1", 9000, true),
        ("frontend/web-1", "backend/api-1", 80, false),
        ("frontend/client", "backend/api-1", 9000, false),
        ("192.0.2.1", "backend/api-2", 9000, false),
        ("192.0.2.1", "frontend/web-2", 80, true),
        ("frontend/client", "frontend/web-1", 80, true),
        ("frontend/client", "192.0.2.1", 443, false),
        ("frontend/web-1", "frontend/web-2", 22, false),
    ];
    for (src, dst, port, want) in cases {
        assert_eq!(w.allows(src, dst, TCP, port), want, "{src} -> {dst}:{port}");
    }
}
