//! Which IP pools exist and which ones a pod may use. Pure.
//!
//! Pools are the datastore's `IPPool` objects; in standalone (`dir:`)
//! mode, a folder without any gets the default pools instead (IPv4 and
//! IPv6, so that a lab is dual-stack unless told otherwise). A pod's pools
//! come from its annotations `caracal.io/ipv4pools` and
//! `caracal.io/ipv6pools` (JSON lists of pool names or CIDRs), family by
//! family, else from its namespace's, else every pool of the family that
//! selects the node.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::datastore::validate::pool_range;
use super::datastore::Objects;
use crate::ipam::IpPool;

/// Annotation listing a pod's (or namespace's) IPv4 pools.
pub const IPV4_POOLS_ANNOTATION: &str = "caracal.io/ipv4pools";
/// Annotation listing a pod's (or namespace's) IPv6 pools.
pub const IPV6_POOLS_ANNOTATION: &str = "caracal.io/ipv6pools";

/// Name of the default IPv4 pool of standalone mode.
pub const DEFAULT_IPV4_POOL_NAME: &str = "default-ipv4-ippool";
/// Name of the default IPv6 pool of standalone mode.
pub const DEFAULT_IPV6_POOL_NAME: &str = "default-ipv6-ippool";
/// Range of the default IPv4 pool.
pub const DEFAULT_IPV4_POOL: &str = "10.65.0.0/16";
/// Range of the default IPv6 pool (a ULA prefix, RFC 4193).
pub const DEFAULT_IPV6_POOL: &str = "fd00:65::/48";

/// The default pool of a family with range `cidr`, named as Calico names
/// its defaults.
pub fn default_pool(cidr: IpNet) -> IpPool {
    let name = match cidr {
        IpNet::V4(_) => DEFAULT_IPV4_POOL_NAME,
        IpNet::V6(_) => DEFAULT_IPV6_POOL_NAME,
    };
    IpPool {
        name: name.to_owned(),
        cidr,
        block_size: 0,
        node_selector: String::new(),
        disabled: false,
        nat_outgoing: true,
    }
}

/// The pools `objects` define, or `defaults` when they define none. An
/// IPPool that cannot be used is left out, with the reason in the second
/// list.
pub fn pools(objects: &Objects, defaults: &[IpPool]) -> (Vec<IpPool>, Vec<String>) {
    let mut pools = Vec::new();
    let mut problems = Vec::new();
    let mut any = false;
    for p in objects.ip_pools() {
        any = true;
        let name = p.metadata.name.clone().unwrap_or_default();
        match pool_range(&p.spec.cidr, p.spec.block_size) {
            Ok((cidr, block_size)) => pools.push(IpPool {
                name,
                cidr,
                block_size,
                node_selector: p.spec.node_selector.clone().unwrap_or_default(),
                disabled: p.spec.disabled,
                nat_outgoing: p.spec.nat_outgoing,
            }),
            Err((field, reason)) => problems.push(format!("IPPool {name}: {field}: {reason}")),
        }
    }
    if !any {
        pools = defaults.to_vec();
    }
    (pools, problems)
}

/// The pools a pod may take addresses from, per family; `None` = any pool
/// of the family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolChoice {
    pub ipv4: Option<Vec<String>>,
    pub ipv6: Option<Vec<String>>,
}

/// An annotation that is not a JSON list of strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{owner}: annotation {annotation}: expected a JSON list of pool names or CIDRs, got {value:?}: {reason}")]
pub struct BadPoolAnnotation {
    /// `pod default/x` or `namespace default`.
    pub owner: String,
    pub annotation: &'static str,
    pub value: String,
    pub reason: String,
}

/// The pools `pod` may use, from its annotations or its namespace's.
pub fn pool_choice(
    pod: &Pod,
    namespace: Option<&Namespace>,
) -> Result<PoolChoice, BadPoolAnnotation> {
    let pod_owner = format!(
        "pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let choose = |annotation: &'static str| -> Result<Option<Vec<String>>, BadPoolAnnotation> {
        if let Some(list) = annotated_pools(&pod.metadata, annotation, &pod_owner)? {
            return Ok(Some(list));
        }
        match namespace {
            Some(ns) => {
                let owner = format!(
                    "namespace {}",
                    ns.metadata.name.as_deref().unwrap_or_default()
                );
                annotated_pools(&ns.metadata, annotation, &owner)
            }
            None => Ok(None),
        }
    };
    Ok(PoolChoice {
        ipv4: choose(IPV4_POOLS_ANNOTATION)?,
        ipv6: choose(IPV6_POOLS_ANNOTATION)?,
    })
}

fn annotated_pools(
    meta: &ObjectMeta,
    annotation: &'static str,
    owner: &str,
) -> Result<Option<Vec<String>>, BadPoolAnnotation> {
    let Some(value) = meta.annotations.as_ref().and_then(|a| a.get(annotation)) else {
        return Ok(None);
    };
    let bad = |reason: String| BadPoolAnnotation {
        owner: owner.to_owned(),
        annotation,
        value: value.clone(),
        reason,
    };
    let list: Vec<String> = serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
    if let Some(empty) = list.iter().position(|s| s.trim().is_empty()) {
        return Err(bad(format!("entry {empty} is empty")));
    }
    Ok(Some(list))
}

/// The labels of node `name`, if the datastore has it.
pub fn node_labels(objects: &Objects, name: &str) -> BTreeMap<String, String> {
    objects
        .node(name)
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::datastore::crd::{IPPool, IPPoolSpec};
    use crate::agent::datastore::objects::StoredKind;

    fn meta(name: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn ippool(name: &str, cidr: &str) -> IPPool {
        IPPool {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: IPPoolSpec {
                cidr: cidr.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn defaults_apply_only_without_any_ippool() {
        let defaults = [
            default_pool(DEFAULT_IPV4_POOL.parse().unwrap()),
            default_pool(DEFAULT_IPV6_POOL.parse().unwrap()),
        ];
        let (p, problems) = pools(&Objects::default(), &defaults);
        assert_eq!(p, defaults);
        assert!(problems.is_empty());
        assert_eq!(p[1].name, "default-ipv6-ippool");

        let objects = Objects::from_objects([
            ippool("a", "10.70.0.0/16").into_object(),
            ippool("bad", "10.71.0.1/16").into_object(),
        ]);
        let (p, problems) = pools(&objects, &defaults);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].block_size), ("a", 26));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("IPPool bad: spec.cidr"));
    }

    #[test]
    fn the_pods_annotation_wins_family_by_family() {
        let ns = Namespace {
            metadata: meta(
                "ns",
                &[
                    (IPV4_POOLS_ANNOTATION, r#"["ns-v4"]"#),
                    (IPV6_POOLS_ANNOTATION, r#"["fd00:66::/48"]"#),
                ],
            ),
            ..Default::default()
        };
        let pod = Pod {
            metadata: meta(
                "p",
                &[(IPV4_POOLS_ANNOTATION, r#"["pod-v4", "10.9.0.0/16"]"#)],
            ),
            ..Default::default()
        };
        let choice = pool_choice(&pod, Some(&ns)).unwrap();
        assert_eq!(
            choice.ipv4,
            Some(vec!["pod-v4".into(), "10.9.0.0/16".into()])
        );
        assert_eq!(choice.ipv6, Some(vec!["fd00:66::/48".into()]));
        let bare = Pod {
            metadata: meta("p", &[]),
            ..Default::default()
        };
        assert_eq!(pool_choice(&bare, None).unwrap(), PoolChoice::default());
    }

    #[test]
    fn a_bad_annotation_names_its_owner() {
        let pod = Pod {
            metadata: meta("p", &[(IPV6_POOLS_ANNOTATION, "pool-a")]),
            ..Default::default()
        };
        let err = pool_choice(&pod, None).unwrap_err();
        assert_eq!(err.owner, "pod ns/p");
        assert!(err.to_string().contains("caracal.io/ipv6pools"), "{err}");
    }
}
