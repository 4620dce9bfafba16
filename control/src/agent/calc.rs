//! The calculation: from what the agent knows (datastore objects and this
//! node's endpoints) to the dataplane state it wants. Pure and IO-free.
//!
//! Today that is one interface per tap or memif endpoint (see [`memif`]
//! for the latter), carrying the endpoint's addresses (the dataplane
//! installs their host routes with the interface), and the policy of
//! every such interface: the NetworkPolicies compiled by
//! [`policy::calculate`]. Services
//! (load-balancing tables from Services and EndpointSlices) will be
//! computed here from the same inputs, into further fields of
//! [`DataplaneState`].
//!
//! [`desired_state`] computes it all from scratch; the agent keeps a
//! [`Calculator`], which gives the same state from one change to the next
//! at the cost of what changed (see [`policy::incremental`]).

use super::datastore::Objects;
use super::endpoints::{Endpoint, Endpoints, InterfaceKind as EndpointKind};
use super::memif;
use super::model::{DataplaneState, InterfaceKind, InterfaceSpec, TapSpec};
use super::policy::{self, DesiredPolicy, PolicyCalculator};

/// Everything the calculation reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The datastore's objects (pods, namespaces and NetworkPolicies for
    /// policy; services, later).
    pub objects: &'a Objects,
    pub endpoints: &'a Endpoints,
}

/// The dataplane state `inputs` call for.
pub fn desired_state(inputs: Inputs<'_>) -> DataplaneState {
    with_policy(inputs, policy::calculate(inputs.objects, inputs.endpoints))
}

/// The state of `inputs` around their compiled `policy`.
fn with_policy(inputs: Inputs<'_>, policy: DesiredPolicy) -> DataplaneState {
    let mut state = DataplaneState::default();
    for ep in inputs.endpoints.values() {
        if let Some(spec) = interface_of(ep) {
            state.interfaces.insert(spec.name.clone(), spec);
        }
    }
    state.policy = policy;
    // Attachments only for the interfaces the dataplane will have.
    state
        .policy
        .endpoints
        .retain(|name, _| state.interfaces.contains_key(name));
    state
}

/// [`desired_state`] from one set of inputs to the next, the policy
/// updated incrementally.
#[derive(Debug, Default)]
pub struct Calculator {
    policy: PolicyCalculator,
}

impl Calculator {
    pub fn new() -> Self {
        Self::default()
    }

    /// What [`desired_state`] returns for `inputs`.
    pub fn desired_state(&mut self, inputs: Inputs<'_>) -> DataplaneState {
        let policy = self.policy.update(inputs.objects, inputs.endpoints).clone();
        with_policy(inputs, policy)
    }
}

/// The dataplane interface of one endpoint; `None` for kinds the
/// dataplane cannot make yet (the CNI server refuses those).
pub fn interface_of(ep: &Endpoint) -> Option<InterfaceSpec> {
    let kind = match ep.interface_kind {
        EndpointKind::Tap => InterfaceKind::Tap(TapSpec {
            netns: ep.netns.clone(),
            ifname: ep.ifname.clone(),
            queues: 0,
            configure: true,
        }),
        EndpointKind::Memif => InterfaceKind::Memif(memif::spec(ep)?),
        EndpointKind::VhostUser => return None,
    };
    Some(InterfaceSpec {
        name: ep.dataplane_interface.clone(),
        addresses: ep.ips.clone(),
        mtu: ep.mtu,
        kind,
        // Pods pass nothing until their policy is in place.
        policy_enforced: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::datastore::Object;
    use crate::agent::endpoints::{dataplane_interface_name, EndpointKey};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn endpoint(pod: &str, kind: EndpointKind, ips: &[&str]) -> Endpoint {
        Endpoint {
            container_id: format!("c-{pod}"),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{pod}"),
            namespace: "default".into(),
            pod: pod.into(),
            pod_uid: String::new(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            interface_kind: kind,
            socket_path: None,
            memif: None,
            dataplane_interface: dataplane_interface_name("default", pod, "eth0"),
            mtu: 1400,
        }
    }

    fn endpoints(list: Vec<Endpoint>) -> Endpoints {
        Arc::new(
            list.into_iter()
                .map(|e| (e.key(), e))
                .collect::<BTreeMap<EndpointKey, _>>(),
        )
    }

    #[test]
    fn each_tap_endpoint_is_a_configured_tap_with_its_addresses() {
        let eps = endpoints(vec![
            endpoint("a", EndpointKind::Tap, &["10.65.0.1/32", "fd00:65::1/128"]),
            endpoint("b", EndpointKind::Tap, &["10.65.0.2/32"]),
        ]);
        let state = desired_state(Inputs {
            objects: &Objects::default(),
            endpoints: &eps,
        });
        assert!(state.routes.is_empty(), "host routes come with interfaces");
        let names: Vec<_> = state.interfaces.keys().cloned().collect();
        assert_eq!(names, ["default/a", "default/b"]);
        assert_eq!(
            state.interfaces["default/a"],
            InterfaceSpec {
                name: "default/a".into(),
                addresses: vec![
                    "10.65.0.1/32".parse().unwrap(),
                    "fd00:65::1/128".parse().unwrap()
                ],
                mtu: 1400,
                kind: InterfaceKind::Tap(TapSpec {
                    netns: "/var/run/netns/a".into(),
                    ifname: "eth0".into(),
                    queues: 0,
                    configure: true,
                }),
                policy_enforced: true,
            }
        );
    }

    #[test]
    fn memif_endpoints_are_memif_servers_and_vhost_user_is_not_programmed_yet() {
        let mut m = endpoint("m", EndpointKind::Memif, &["10.65.0.3/32"]);
        m.socket_path = Some("/run/caracal/memif/default-m/memif.sock".into());
        let mut no_socket = endpoint("n", EndpointKind::Memif, &["10.65.0.4/32"]);
        no_socket.socket_path = None;
        let eps = endpoints(vec![
            m.clone(),
            no_socket,
            endpoint("v", EndpointKind::VhostUser, &["10.65.0.5/32"]),
        ]);
        let state = desired_state(Inputs {
            objects: &Objects::default(),
            endpoints: &eps,
        });
        let names: Vec<_> = state.interfaces.keys().cloned().collect();
        assert_eq!(names, ["default/m"]);
        let spec = &state.interfaces["default/m"];
        assert_eq!(spec.addresses, m.ips);
        assert_eq!(spec.kind, InterfaceKind::Memif(memif::spec(&m).unwrap()));
        let attached: Vec<_> = state.policy.endpoints.keys().cloned().collect();
        assert_eq!(attached, ["default/m"], "no interface, no attachment");
    }

    #[test]
    fn every_interface_has_its_policy_attachment() {
        use crate::agent::datastore::objects::StoredKind;
        let eps = endpoints(vec![endpoint("a", EndpointKind::Tap, &["10.65.0.1/32"])]);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "default"},
        }))
        .unwrap();
        let objects = Objects::from_objects([pod.into_object()]);
        let state = desired_state(Inputs {
            objects: &objects,
            endpoints: &eps,
        });
        let names: Vec<_> = state.policy.endpoints.keys().cloned().collect();
        assert_eq!(names, ["default/a"]);
        let a = &state.policy.endpoints["default/a"];
        assert!(
            a.ingress.is_empty() && a.egress.is_empty(),
            "no policy: open"
        );
    }

    #[test]
    fn the_calculator_gives_what_the_calculation_gives() {
        use crate::agent::datastore::objects::StoredKind;
        let eps = endpoints(vec![
            endpoint("a", EndpointKind::Tap, &["10.65.0.1/32"]),
            endpoint("v", EndpointKind::VhostUser, &["10.65.0.5/32"]),
        ]);
        let pod = |labels: serde_json::Value| -> Object {
            let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "a", "namespace": "default", "labels": labels},
            }))
            .unwrap();
            pod.into_object()
        };
        let np: k8s_openapi::api::networking::v1::NetworkPolicy =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "np", "namespace": "default"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                         "ingress": [{"from": [{"podSelector": {}}]}]},
            }))
            .unwrap();
        let mut calculator = Calculator::new();
        for objects in [
            Objects::from_objects([pod(serde_json::json!({"app": "web"})), np.into_object()]),
            Objects::from_objects([pod(serde_json::json!({"app": "db"}))]),
            Objects::default(),
        ] {
            let inputs = Inputs {
                objects: &objects,
                endpoints: &eps,
            };
            assert_eq!(calculator.desired_state(inputs), desired_state(inputs));
        }
    }

    #[test]
    fn nothing_in_nothing_out() {
        let state = desired_state(Inputs {
            objects: &Objects::default(),
            endpoints: &Endpoints::default(),
        });
        assert_eq!(state, DataplaneState::default());
    }
}
