//! The policy diff: the one [`pb::PolicyBatch`] that takes the dataplane
//! from the policy state it runs to the one the agent wants. Pure.
//!
//! Minimal: an IP set that exists on both sides and changed is updated by
//! its delta, never resent; an unchanged policy or attachment is not
//! sent; what is no longer wanted is deleted. The batch is applied
//! atomically, so its parts need no order among themselves: references
//! (attachment → policy → IP set) only have to hold in the state it leads
//! to.
//!
//! Attachments are never deleted here: an attachment goes with its
//! interface, so one the agent no longer wants is one whose interface it
//! deletes.

use std::collections::BTreeMap;
use std::sync::Arc;

use caracal_proto::dataplane as pb;
use ipnet::IpNet;

use super::{ip_set, DesiredPolicy};

/// The batch that turns `old` into `new` (empty when they are equal).
pub fn diff(old: &DesiredPolicy, new: &DesiredPolicy) -> pb::PolicyBatch {
    let mut batch = pb::PolicyBatch::default();
    for (name, members) in &new.ip_sets {
        match old.ip_sets.get(name) {
            None => batch.set_ip_sets.push(ip_set(name, members)),
            Some(have) if have != members => {
                let strings = |nets: Vec<&IpNet>| nets.iter().map(ToString::to_string).collect();
                batch.update_ip_sets.push(pb::IpSetDelta {
                    name: name.clone(),
                    add: strings(members.difference(have).collect()),
                    remove: strings(have.difference(members).collect()),
                });
            }
            Some(_) => {}
        }
    }
    batch.delete_ip_sets = gone(&old.ip_sets, &new.ip_sets);
    for (name, spec) in &new.policies {
        let same = old
            .policies
            .get(name)
            .is_some_and(|have| Arc::ptr_eq(have, spec) || have == spec);
        if !same {
            batch.set_policies.push((**spec).clone());
        }
    }
    batch.delete_policies = gone(&old.policies, &new.policies);
    for (interface, attachment) in &new.endpoints {
        if old.endpoints.get(interface) != Some(attachment) {
            batch.set_endpoints.push(attachment.clone());
        }
    }
    batch
}

/// The keys of `old` that `new` lacks.
fn gone<V>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<String> {
    old.keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect()
}

/// Whether the batch changes nothing.
pub fn is_empty(batch: &pb::PolicyBatch) -> bool {
    *batch == pb::PolicyBatch::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(list: &[(&str, &[&str])]) -> DesiredPolicy {
        DesiredPolicy {
            ip_sets: list
                .iter()
                .map(|(n, m)| {
                    let members = m.iter().map(|a| a.parse().unwrap()).collect();
                    ((*n).to_owned(), members)
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn equal_states_need_nothing() {
        let s = sets(&[("a", &["10.0.0.1/32"])]);
        assert!(is_empty(&diff(&s, &s)));
    }

    #[test]
    fn sets_are_created_updated_by_delta_and_deleted() {
        let old = sets(&[
            ("changed", &["10.0.0.1/32", "10.0.0.2/32"]),
            ("gone", &["10.0.0.9/32"]),
            ("same", &["10.0.0.3/32"]),
        ]);
        let new = sets(&[
            ("changed", &["10.0.0.2/32", "10.0.0.4/32"]),
            ("new", &[]),
            ("same", &["10.0.0.3/32"]),
        ]);
        let batch = diff(&old, &new);
        assert_eq!(
            batch.set_ip_sets,
            [pb::IpSet {
                name: "new".into(),
                members: vec![]
            }]
        );
        assert_eq!(
            batch.update_ip_sets,
            [pb::IpSetDelta {
                name: "changed".into(),
                add: vec!["10.0.0.4/32".into()],
                remove: vec!["10.0.0.1/32".into()],
            }]
        );
        assert_eq!(batch.delete_ip_sets, ["gone"]);
        assert!(batch.set_policies.is_empty() && batch.set_endpoints.is_empty());
    }

    #[test]
    fn policies_and_attachments_are_sent_when_new_or_changed() {
        let policy = |name: &str, id: &str| pb::PolicySpec {
            name: name.into(),
            ingress: vec![pb::Rule {
                action: pb::Action::Allow as i32,
                id: id.into(),
                ..Default::default()
            }],
            egress: vec![],
        };
        let attach = |iface: &str, policies: &[&str]| pb::EndpointPolicy {
            interface: iface.into(),
            ingress: vec![pb::Tier {
                name: "default".into(),
                policies: policies.iter().map(|p| (*p).to_owned()).collect(),
                end_action: pb::Action::Deny as i32,
            }],
            ..Default::default()
        };
        let mut old = DesiredPolicy::default();
        for p in [policy("a", "a/0"), policy("b", "b/0"), policy("c", "c/0")] {
            old.policies.insert(p.name.clone(), Arc::new(p));
        }
        old.endpoints.insert("ns/x".into(), attach("ns/x", &["a"]));
        old.endpoints
            .insert("ns/gone".into(), attach("ns/gone", &["a"]));
        let mut new = old.clone();
        new.policies.remove("c");
        new.policies
            .insert("b".into(), Arc::new(policy("b", "b/1")));
        new.policies
            .insert("d".into(), Arc::new(policy("d", "d/0")));
        new.endpoints.remove("ns/gone");
        new.endpoints
            .insert("ns/x".into(), attach("ns/x", &["a", "d"]));
        new.endpoints.insert("ns/y".into(), attach("ns/y", &["b"]));
        let batch = diff(&old, &new);
        let names: Vec<&str> = batch.set_policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        assert_eq!(batch.delete_policies, ["c"]);
        let ifaces: Vec<&str> = batch
            .set_endpoints
            .iter()
            .map(|e| e.interface.as_str())
            .collect();
        assert_eq!(ifaces, ["ns/x", "ns/y"], "ns/gone goes with its interface");
    }
}
