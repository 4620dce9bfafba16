//! What the agent's servers share: the node's identity and defaults, the
//! datastore, the endpoints and the sync loop, and the readiness rule
//! built from them.

use std::path::PathBuf;
use std::sync::Arc;

use super::datastore::{SourceHandle, Store};
use super::endpoints::EndpointRegistry;
use super::pools;
use super::sync::SyncHandle;
use crate::ipam::IpPool;

#[derive(Debug)]
pub struct Context {
    /// This node's name.
    pub node: String,
    pub store: Store,
    pub source: SourceHandle,
    pub endpoints: Arc<EndpointRegistry>,
    pub sync: SyncHandle,
    /// Pools to use when the datastore defines none (standalone mode).
    pub default_pools: Vec<IpPool>,
    /// MTU of pod interfaces when the CNI configuration sets none, bytes.
    pub default_mtu: u16,
    /// Folder of the memif pods' socket folders.
    pub memif_dir: PathBuf,
}

impl Context {
    /// The pools in force, and why any IPPool object was left out.
    pub fn pools(&self) -> (Vec<IpPool>, Vec<String>) {
        pools::pools(&self.store.snapshot(), &self.default_pools)
    }

    /// Whether the agent can serve ADDs: the dataplane is connected, the
    /// datastore has been listed, and an enabled pool exists. If not, why.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.sync.status().connected {
            why.push("the dataplane is not connected".to_owned());
        }
        let unsynced = self.store.unsynced_kinds();
        if !unsynced.is_empty() {
            let kinds: Vec<&str> = unsynced.iter().map(|k| k.name()).collect();
            why.push(format!(
                "the datastore has not listed {} yet",
                kinds.join(", ")
            ));
        } else if !self.pools().0.iter().any(|p| !p.disabled) {
            why.push("no enabled IP pool exists".to_owned());
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}
