//! The `kubernetes` source: one kube-rs watcher per kind (Namespaces,
//! Nodes, Pods, Services, EndpointSlices, NetworkPolicies and Caracal's
//! IPPools), each with kube's default backoff, feeding the store as a
//! reflector would: a complete listing replaces the kind's objects at
//! once (at start, and after the watch expired — 410 Gone — and was
//! relisted), and each watch event changes one object.
//!
//! The watchers handle resource versions, bookmarks and relists; this
//! module only turns their events into store changes.

use std::fmt::Debug;

use futures::{future, StreamExt as _};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::crd::IPPool;
use super::objects::StoredKind;
use super::store::Store;
use super::SourceHandle;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("no Kubernetes configuration (neither KUBECONFIG nor in-cluster): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// The Kubernetes API source.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    config: watcher::Config,
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source over `client`.
    pub fn new(client: Client) -> Self {
        KubeSource {
            client,
            config: watcher::Config::default(),
        }
    }

    /// A source over the cluster `KUBECONFIG` (or `~/.kube/config`) names,
    /// or else the one this pod runs in.
    pub async fn infer() -> Result<Self, KubeSourceError> {
        let config = kube::Config::infer().await?;
        info!(cluster = %config.cluster_url, "using the Kubernetes API");
        Ok(Self::new(Client::try_from(config)?))
    }

    /// The client the source watches with (IPAM's Kubernetes store uses
    /// it too).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts watching every kind into `store`; stops when the handle is
    /// dropped.
    pub fn start(self, store: Store) -> SourceHandle {
        let KubeSource { client, config } = self;
        let task = tokio::spawn(async move {
            future::join_all([
                follow::<Namespace>(&client, &config, &store),
                follow::<Node>(&client, &config, &store),
                follow::<Pod>(&client, &config, &store),
                follow::<Service>(&client, &config, &store),
                follow::<EndpointSlice>(&client, &config, &store),
                follow::<NetworkPolicy>(&client, &config, &store),
                follow::<IPPool>(&client, &config, &store),
            ])
            .await;
        });
        SourceHandle::new(task, None)
    }
}

/// Watches every object of kind `K` (all namespaces) into `store`, for
/// ever.
fn follow<K>(
    client: &Client,
    config: &watcher::Config,
    store: &Store,
) -> future::BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()> + StoredKind + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api = Api::<K>::all(client.clone());
    let stream = watcher(api, config.clone()).default_backoff();
    let store = store.clone();
    Box::pin(async move {
        let kind = K::KIND;
        let mut listing = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(o)) => listing.push(o.into_object()),
                Ok(watcher::Event::InitDone) => {
                    let n = listing.len();
                    let changed = store.replace_kind(kind, std::mem::take(&mut listing));
                    debug!(%kind, objects = n, changed, "listed");
                }
                Ok(watcher::Event::Apply(o)) => {
                    store.apply(o.into_object());
                }
                Ok(watcher::Event::Delete(o)) => {
                    store.delete(&o.into_object().key());
                }
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    info!(%kind, "watch expired (410 Gone); listing again");
                }
                Err(e) => warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    })
}
