//! `caracal.agent.v1.Agent`: the agent's own status, for `caracalctl` and
//! the lab.
//!
//! `datastore_revision` is the agent's [revision](super::revision): it
//! advances with every change of the datastore's objects (a changed
//! manifest file counts, even when its objects come out the same) and of
//! this node's endpoints. `synced_revision` is the revision whose desired
//! state the dataplane has acknowledged in full (0 while the dataplane is
//! away).
//!
//! `GetStatus` first brings the store up to date with a source that can
//! read itself on demand (a folder of manifests), so that a caller that
//! wrote manifests before asking sees a revision that includes them. The
//! caller then waits for `synced_revision` to reach `datastore_revision`
//! to know that the dataplane runs what it wrote.

use std::sync::Arc;

use caracal_proto::agent as pb;
use caracal_proto::agent::agent_server::Agent;
use tonic::{Request, Response, Status};

use super::context::Context;
use super::endpoints::Endpoint;

/// The `Agent` service.
#[derive(Debug, Clone)]
pub struct AgentService {
    ctx: Arc<Context>,
}

impl AgentService {
    pub fn new(ctx: Arc<Context>) -> Self {
        AgentService { ctx }
    }
}

/// An endpoint as the API shows it.
pub fn endpoint_to_proto(ep: &Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        namespace: ep.namespace.clone(),
        name: ep.pod.clone(),
        container_id: ep.container_id.clone(),
        ifname: ep.ifname.clone(),
        netns: ep.netns.clone(),
        ips: ep.ips.iter().map(ToString::to_string).collect(),
        interface_kind: ep.interface_kind.as_str().to_owned(),
        socket_path: ep.socket_path.clone().unwrap_or_default(),
        dataplane_interface: ep.dataplane_interface.clone(),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        self.ctx.source.refresh().await;
        // The revision before the sync status: the sync can only have
        // caught up further in between, never claim more than it did.
        let datastore_revision = self.ctx.store.revision().current();
        let sync = self.ctx.sync.status();
        let endpoints = self.ctx.endpoints.snapshot();
        Ok(Response::new(pb::AgentStatus {
            datastore_revision,
            synced_revision: sync.synced_revision,
            dataplane_connected: sync.connected,
            endpoints: endpoints.values().map(endpoint_to_proto).collect(),
        }))
    }
}
