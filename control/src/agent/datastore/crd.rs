//! Caracal's own Kubernetes kinds (`caracal.io/v1`), defined with kube's
//! `CustomResource` derive so that their CRD manifests are generated from
//! the same types the agent reads (`caracal-agent --print-crds`).
//!
//! An `IPPool` is a range pods take their addresses from, carved into
//! per-node blocks; cluster-scoped, like Calico's:
//!
//! ```yaml
//! apiVersion: caracal.io/v1
//! kind: IPPool
//! metadata: {name: default-ipv4-ippool}
//! spec: {cidr: 10.65.0.0/16, blockSize: 26, natOutgoing: true}
//! ```

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The range of an IP pool and how it is handed out.
#[derive(
    CustomResource, Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "caracal.io",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// The pool's range, e.g. "10.65.0.0/16" or "fd00:65::/48", without
    /// host bits.
    pub cidr: String,
    /// Prefix length of the per-node blocks: default 26 for IPv4 (20..=32),
    /// 122 for IPv6 (116..=128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// Masquerade traffic from the pool to outside every pool.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A disabled pool hands out no new addresses.
    #[serde(default)]
    pub disabled: bool,
    /// Calico-style selector of the nodes that may take blocks from the
    /// pool; empty or "all()" means every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
}

/// The CRD manifests of every kind above, as one multi-document YAML text.
pub fn crd_manifests() -> String {
    use kube::CustomResourceExt as _;
    let crd = serde_yaml::to_string(&IPPool::crd()).expect("a CRD serializes");
    format!("---\n{crd}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource as _;

    #[test]
    fn crd_is_cluster_scoped_caracal_io_v1() {
        let text = crd_manifests();
        assert!(text.contains("name: ippools.caracal.io"), "{text}");
        assert!(text.contains("scope: Cluster"), "{text}");
        assert!(text.contains("blockSize"), "{text}");
        assert_eq!(IPPool::api_version(&()), "caracal.io/v1");
        assert_eq!(IPPool::kind(&()), "IPPool");
    }
}
