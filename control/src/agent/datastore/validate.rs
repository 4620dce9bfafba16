//! Checks on an object's values beyond what its type already enforces,
//! for manifests read from a folder (the API server does these checks for
//! objects that come from a cluster). A failed check names the field by
//! its path in the object, as `kubectl` does.

use std::collections::BTreeSet;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::crd::IPPool;
use super::objects::{Kind, Object};
use crate::agent::policy::selector::Selector;

/// Why an object was refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Path of the field, e.g. `spec.containers[0].ports[1].containerPort`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks `object`; the first problem found is the answer.
pub fn validate(object: &Object) -> Result<(), Invalid> {
    let meta = object.metadata();
    let kind = object.kind();
    match meta.name.as_deref() {
        None | Some("") => return Err(invalid("metadata.name", "required")),
        Some(name) => {
            let ok = if kind == Kind::Namespace {
                is_dns_label(name)
            } else {
                is_dns_subdomain(name)
            };
            if !ok {
                return Err(invalid(
                    "metadata.name",
                    format!("invalid value {name:?}: must be a lowercase RFC 1123 name"),
                ));
            }
        }
    }
    if kind.namespaced() {
        if let Some(ns) = meta.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
            return Err(invalid(
                "metadata.namespace",
                format!("invalid value {ns:?}: must be a lowercase RFC 1123 label"),
            ));
        }
    }
    match object {
        Object::Pod(p) => pod(p),
        Object::Service(s) => service(s),
        Object::EndpointSlice(e) => endpoint_slice(e),
        Object::NetworkPolicy(n) => network_policy(n),
        Object::IpPool(p) => ip_pool(p),
        Object::Namespace(_) | Object::Node(_) => Ok(()),
    }
}

fn pod(pod: &Pod) -> Result<(), Invalid> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let mut names = BTreeSet::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let field = |f: &str| format!("spec.containers[{ci}].ports[{pi}].{f}");
            port_number(field("containerPort"), p.container_port)?;
            if let Some(hp) = p.host_port.filter(|&hp| hp != 0) {
                port_number(field("hostPort"), hp)?;
            }
            protocol(field("protocol"), p.protocol.as_deref())?;
            if let Some(name) = &p.name {
                port_name(field("name"), name)?;
                if !names.insert(name.clone()) {
                    return Err(invalid(field("name"), format!("duplicate value {name:?}")));
                }
            }
        }
    }
    Ok(())
}

fn service(svc: &Service) -> Result<(), Invalid> {
    let Some(spec) = &svc.spec else {
        return Ok(());
    };
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        port_number(field("port"), p.port)?;
        protocol(field("protocol"), p.protocol.as_deref())?;
        if let Some(target) = &p.target_port {
            int_or_name(field("targetPort"), target)?;
        }
        if let Some(np) = p.node_port.filter(|&np| np != 0) {
            port_number(field("nodePort"), np)?;
        }
    }
    Ok(())
}

fn endpoint_slice(slice: &EndpointSlice) -> Result<(), Invalid> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
        return Err(invalid(
            "addressType",
            format!(
                "unsupported value {:?}: expected IPv4, IPv6 or FQDN",
                slice.address_type
            ),
        ));
    }
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        if let Some(port) = p.port {
            port_number(format!("ports[{i}].port"), port)?;
        }
        protocol(format!("ports[{i}].protocol"), p.protocol.as_deref())?;
    }
    Ok(())
}

fn network_policy(np: &NetworkPolicy) -> Result<(), Invalid> {
    let Some(spec) = &np.spec else {
        return Ok(());
    };
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            return Err(invalid(
                format!("spec.policyTypes[{i}]"),
                format!("unsupported value {t:?}: expected Ingress or Egress"),
            ));
        }
    }
    if let Some(s) = &spec.pod_selector {
        label_selector("spec.podSelector", s)?;
    }
    let ingress = spec.ingress.iter().flatten().enumerate().map(|(i, r)| {
        let rule = format!("spec.ingress[{i}]");
        (
            format!("{rule}.from"),
            rule,
            r.from.as_deref(),
            r.ports.as_deref(),
        )
    });
    let egress = spec.egress.iter().flatten().enumerate().map(|(i, r)| {
        let rule = format!("spec.egress[{i}]");
        (
            format!("{rule}.to"),
            rule,
            r.to.as_deref(),
            r.ports.as_deref(),
        )
    });
    for (peers_field, rule, peers, ports) in ingress.chain(egress) {
        for (j, peer) in peers.into_iter().flatten().enumerate() {
            network_policy_peer(&format!("{peers_field}[{j}]"), peer)?;
        }
        for (j, p) in ports.into_iter().flatten().enumerate() {
            let field = |f: &str| format!("{rule}.ports[{j}].{f}");
            protocol(field("protocol"), p.protocol.as_deref())?;
            if let Some(port) = &p.port {
                int_or_name(field("port"), port)?;
            }
            if let Some(end) = p.end_port {
                port_number(field("endPort"), end)?;
                match &p.port {
                    Some(IntOrString::Int(start)) if *start <= end => {}
                    _ => {
                        return Err(invalid(
                            field("endPort"),
                            "needs a numeric port no greater than it",
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

fn label_selector(field: &str, selector: &LabelSelector) -> Result<(), Invalid> {
    Selector::new(selector)
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

/// A peer is selectors, or an ipBlock whose exceptions lie in its CIDR.
fn network_policy_peer(field: &str, peer: &NetworkPolicyPeer) -> Result<(), Invalid> {
    let Some(block) = &peer.ip_block else {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return Err(invalid(
                field,
                "must set podSelector, namespaceSelector or ipBlock",
            ));
        }
        if let Some(s) = &peer.pod_selector {
            label_selector(&format!("{field}.podSelector"), s)?;
        }
        if let Some(s) = &peer.namespace_selector {
            label_selector(&format!("{field}.namespaceSelector"), s)?;
        }
        return Ok(());
    };
    if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
        return Err(invalid(
            field,
            "ipBlock cannot be set with podSelector or namespaceSelector",
        ));
    }
    let cidr: IpNet = block.cidr.parse().map_err(|_| {
        invalid(
            format!("{field}.ipBlock.cidr"),
            format!("invalid CIDR {:?}", block.cidr),
        )
    })?;
    for (k, e) in block.except.iter().flatten().enumerate() {
        let except_field = || format!("{field}.ipBlock.except[{k}]");
        let except: IpNet = e
            .parse()
            .map_err(|_| invalid(except_field(), format!("invalid CIDR {e:?}")))?;
        if !cidr.trunc().contains(&except) {
            return Err(invalid(
                except_field(),
                format!("{e} is not within {}", block.cidr),
            ));
        }
    }
    Ok(())
}

fn ip_pool(pool: &IPPool) -> Result<(), Invalid> {
    pool_range(&pool.spec.cidr, pool.spec.block_size)
        .map(|_| ())
        .map_err(|(field, reason)| invalid(field, reason))
}

/// A pool's CIDR and block size, checked as Calico checks them: no host
/// bits, and a block size within the family's range and no shorter than
/// the pool. The block size defaults to /26 (IPv4) or /122 (IPv6). On
/// error, the field (`spec.cidr` or `spec.blockSize`) and why.
pub fn pool_range(
    cidr: &str,
    block_size: Option<u8>,
) -> Result<(IpNet, u8), (&'static str, String)> {
    let net: IpNet = cidr
        .parse()
        .map_err(|_| ("spec.cidr", format!("invalid CIDR {cidr:?}")))?;
    if net.trunc() != net {
        return Err((
            "spec.cidr",
            format!("{cidr} has host bits set (the network is {})", net.trunc()),
        ));
    }
    let (default, range) = match net {
        IpNet::V4(_) => (26, 20..=32),
        IpNet::V6(_) => (122, 116..=128),
    };
    let block = block_size.unwrap_or(default);
    if !range.contains(&block) {
        return Err((
            "spec.blockSize",
            format!(
                "{block} is outside {}..={} for this family",
                range.start(),
                range.end()
            ),
        ));
    }
    if block < net.prefix_len() {
        return Err((
            "spec.blockSize",
            format!("/{block} blocks do not fit in the pool {net}"),
        ));
    }
    Ok((net, block))
}

fn port_number(field: String, port: i32) -> Result<(), Invalid> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("invalid value {port}: must be between 1 and 65535"),
        ))
    }
}

fn protocol(field: String, protocol: Option<&str>) -> Result<(), Invalid> {
    match protocol {
        None | Some("TCP" | "UDP" | "SCTP") => Ok(()),
        Some(p) => Err(invalid(
            field,
            format!("unsupported value {p:?}: expected TCP, UDP or SCTP"),
        )),
    }
}

fn int_or_name(field: String, value: &IntOrString) -> Result<(), Invalid> {
    match value {
        IntOrString::Int(n) => port_number(field, *n),
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => port_number(field, n),
            Err(_) => port_name(field, name),
        },
    }
}

/// An IANA service name (RFC 6335 section 5.1), as a named port must be.
fn port_name(field: String, name: &str) -> Result<(), Invalid> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "invalid value {name:?}: a port name is 1-15 lowercase letters, digits and \
                 single inner hyphens, with at least one letter"
            ),
        ))
    }
}

/// An RFC 1123 label: 1-63 lowercase alphanumerics or '-', alphanumeric at
/// both ends.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(port_name("f".into(), "http").is_ok());
        assert!(port_name("f".into(), "8080").is_err());
        assert!(port_name("f".into(), "a--b").is_err());
        assert!(port_name("f".into(), "much-too-long-name").is_err());
    }

    #[test]
    fn network_policy_peers_and_selectors() {
        use crate::agent::datastore::objects::StoredKind;
        let check = |spec: serde_json::Value| {
            let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": spec,
            }))
            .unwrap();
            validate(&np.into_object()).map_err(|e| e.to_string())
        };
        let good = serde_json::json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            {"namespaceSelector": {}, "podSelector": {"matchExpressions": [
                {"key": "a", "operator": "NotIn", "values": ["x"]}]}},
        ]}]});
        assert_eq!(check(good), Ok(()));
        let cases = [
            (
                serde_json::json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
                "spec.podSelector: matchExpressions[0].operator: unsupported value \"Is\"",
            ),
            (
                serde_json::json!({"ingress": [{"from": [{}]}]}),
                "spec.ingress[0].from[0]: must set podSelector, namespaceSelector or ipBlock",
            ),
            (
                serde_json::json!({"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}, "podSelector": {}}]}]}),
                "spec.egress[0].to[0]: ipBlock cannot be set",
            ),
            (
                serde_json::json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
                "spec.egress[0].to[0].ipBlock.cidr: invalid CIDR",
            ),
            (
                serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]}),
                "spec.ingress[0].from[0].ipBlock.except[0]: 11.0.0.0/8 is not within 10.0.0.0/8",
            ),
            (
                serde_json::json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]}),
                "spec.ingress[0].from[0].namespaceSelector: matchExpressions[0].values: must be non-empty for In",
            ),
        ];
        for (spec, want) in cases {
            let err = check(spec).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn pool_ranges() {
        assert_eq!(
            pool_range("10.65.0.0/16", None).unwrap(),
            ("10.65.0.0/16".parse().unwrap(), 26)
        );
        assert_eq!(pool_range("fd00:65::/48", None).unwrap().1, 122);
        assert_eq!(pool_range("10.65.0.1/16", None).unwrap_err().0, "spec.cidr");
        assert_eq!(pool_range("bogus", None).unwrap_err().0, "spec.cidr");
        assert_eq!(
            pool_range("10.65.0.0/16", Some(12)).unwrap_err().0,
            "spec.blockSize"
        );
        assert_eq!(
            pool_range("10.65.0.0/28", Some(26)).unwrap_err().0,
            "spec.blockSize"
        );
    }
}
