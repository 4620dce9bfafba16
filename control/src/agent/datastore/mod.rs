//! Where the agent learns about the cluster: a source (the Kubernetes API,
//! or a folder of manifests) feeding one in-memory [`Store`] of typed
//! objects, which advances the agent's revision at every change.
//!
//! Both sources stand behind [`SourceHandle`]: the agent starts one from a
//! [`DatastoreSpec`] and from then on reads only the store.

pub mod crd;
pub mod dir;
pub mod kube;
pub mod manifest;
pub mod objects;
pub mod store;
pub mod validate;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use objects::{Kind, Object, ObjectKey};
pub use store::{Objects, Store};

/// The `--datastore` flag: `kubernetes` or `dir:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreSpec {
    /// The Kubernetes API: in-cluster configuration, or `KUBECONFIG`.
    Kubernetes,
    /// A folder of manifests.
    Dir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid datastore {0:?}: expected \"kubernetes\" or \"dir:PATH\"")]
pub struct BadDatastoreSpec(String);

impl FromStr for DatastoreSpec {
    type Err = BadDatastoreSpec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kubernetes" => Ok(DatastoreSpec::Kubernetes),
            _ => match s.strip_prefix("dir:") {
                Some(path) if !path.is_empty() => Ok(DatastoreSpec::Dir(path.into())),
                _ => Err(BadDatastoreSpec(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for DatastoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatastoreSpec::Kubernetes => f.write_str("kubernetes"),
            DatastoreSpec::Dir(p) => write!(f, "dir:{}", p.display()),
        }
    }
}

/// A running source. Dropping it stops the source.
#[derive(Debug)]
pub struct SourceHandle {
    task: JoinHandle<()>,
    refresh: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

impl SourceHandle {
    fn new(task: JoinHandle<()>, refresh: Option<mpsc::Sender<oneshot::Sender<()>>>) -> Self {
        SourceHandle { task, refresh }
    }

    /// Returns once the store holds what the source holds now, for a
    /// source that can read itself on demand (a folder: whatever was
    /// written before this call is in the store after it). A watch cannot
    /// ask the API server whether it is behind, so for one this returns
    /// at once.
    pub async fn refresh(&self) {
        let Some(tx) = &self.refresh else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_datastore_flag() {
        assert_eq!(
            "kubernetes".parse::<DatastoreSpec>(),
            Ok(DatastoreSpec::Kubernetes)
        );
        assert_eq!(
            "dir:/etc/caracal/manifests".parse::<DatastoreSpec>(),
            Ok(DatastoreSpec::Dir("/etc/caracal/manifests".into()))
        );
        assert!("dir:".parse::<DatastoreSpec>().is_err());
        assert!("etcd".parse::<DatastoreSpec>().is_err());
        assert_eq!(DatastoreSpec::Dir("x".into()).to_string(), "dir:x");
    }
}
