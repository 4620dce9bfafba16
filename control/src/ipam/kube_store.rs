//! The cluster store: the IPAM state as one cluster-scoped custom
//! resource, `IPAMState.caracal.io/v1` named `default`, whose spec is the
//! [`IpamState`].
//!
//! Compare-and-swap is the API server's optimistic concurrency: the
//! revision is the object's `resourceVersion`, a swap is a `PUT` carrying
//! it (or a `POST` when the object does not exist yet), and a
//! `409 Conflict` (or `AlreadyExists`) is a miss.
//!
//! One object keeps every change atomic, as the allocator's whole-state
//! swap needs, at the cost Calico avoids by splitting the state per block:
//! every node contends on the same object, and its size (roughly 150 bytes
//! per pod plus 400 per block) must stay under the API server's request
//! limit (1.5 MiB with etcd's default), which is about ten thousand pods.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};

use super::state::{IpamState, IpamStateResource, Revision};
use super::store::IpamStore;
use super::IpamError;

/// Name of the one `IPAMState` object.
pub const OBJECT_NAME: &str = "default";

/// The definitions of the custom resources IPAM uses, for the deploy
/// manifests.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![IpamStateResource::crd()]
}

/// The IPAM state in a Kubernetes cluster.
#[derive(Clone)]
pub struct KubeStore {
    api: Api<IpamStateResource>,
    name: String,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    pub fn new(client: Client) -> KubeStore {
        KubeStore::with_name(client, OBJECT_NAME)
    }

    /// A store on another object than [`OBJECT_NAME`] (tests, or several
    /// independent IPAM domains in one cluster).
    pub fn with_name(client: Client, name: impl Into<String>) -> KubeStore {
        KubeStore {
            api: Api::all(client),
            name: name.into(),
        }
    }
}

fn api_error(action: &str, name: &str, e: kube::Error) -> IpamError {
    IpamError::Store(format!("{action} IPAMState {name:?}: {e}"))
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl IpamStore for KubeStore {
    async fn load(&self) -> Result<(IpamState, Revision), IpamError> {
        let object = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| api_error("reading", &self.name, e))?;
        let Some(object) = object else {
            return Ok((IpamState::default(), Revision::ABSENT));
        };
        let version = object.metadata.resource_version.ok_or_else(|| {
            IpamError::Store(format!("IPAMState {:?} has no resourceVersion", self.name))
        })?;
        Ok((object.spec, Revision::new(version)))
    }

    async fn compare_and_swap(
        &self,
        expected: Revision,
        new: &IpamState,
    ) -> Result<bool, IpamError> {
        let mut object = IpamStateResource::new(&self.name, new.clone());
        let params = PostParams::default();
        match expected.as_str() {
            None => match self.api.create(&params, &object).await {
                Ok(_) => Ok(true),
                // AlreadyExists: another writer created it first.
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) if status_code(&e) == Some(404) => Err(IpamError::Store(format!(
                    "creating IPAMState {:?}: the API server does not know the resource; \
                     is the ipamstates.caracal.io CRD installed? ({e})",
                    self.name
                ))),
                Err(e) => Err(api_error("creating", &self.name, e)),
            },
            Some(version) => {
                object.metadata.resource_version = Some(version.to_owned());
                match self.api.replace(&self.name, &params, &object).await {
                    Ok(_) => Ok(true),
                    // Conflict: changed since read; NotFound: deleted since
                    // read (the next load starts from scratch).
                    Err(e) if matches!(status_code(&e), Some(409 | 404)) => Ok(false),
                    Err(e) => Err(api_error("writing", &self.name, e)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes accepts only structural schemas: one `type` string per
    /// node, no `anyOf`/`oneOf` carrying types, nullable spelled out.
    fn assert_structural(schema: &serde_json::Value, path: &str) {
        match schema {
            serde_json::Value::Object(map) => {
                if let Some(t) = map.get("type") {
                    assert!(t.is_string(), "{path}: type {t} is not a single string");
                }
                for key in ["anyOf", "oneOf", "allOf", "$ref", "definitions", "$defs"] {
                    assert!(!map.contains_key(key), "{path}: has {key}");
                }
                for (k, v) in map {
                    assert_structural(v, &format!("{path}.{k}"));
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    assert_structural(v, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn crd_is_cluster_scoped_and_structural() {
        let crds = crds();
        assert_eq!(crds.len(), 1);
        let crd = &crds[0];
        assert_eq!(crd.metadata.name.as_deref(), Some("ipamstates.caracal.io"));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, "IPAMState");
        let json = serde_json::to_value(crd).unwrap();
        let schema = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_structural(schema, "schema");
        let spec = &schema["properties"]["spec"]["properties"];
        let allocations = &spec["blocks"]["items"]["properties"]["allocations"]["items"];
        assert_eq!(allocations["type"], "integer");
        assert_eq!(allocations["nullable"], true);
        assert_eq!(
            spec["blocks"]["items"]["properties"]["cidr"]["type"],
            "string"
        );
        assert_eq!(spec["handles"]["type"], "object");
    }
}
