//! The gRPC services (`Interfaces`, `Routes`, `Stats`, `Policy`) over the
//! engine.
//!
//! Each handler converts its request ([`convert`]), runs the engine call on
//! the blocking pool, and converts the answer back. Engine calls take the
//! engine's lock, may create devices in other namespaces and wait for every
//! worker to pick up a new snapshot: none of that belongs on the async
//! executor that also serves the other clients.

use std::sync::Arc;

use caracal_proto::dataplane as pb;
use caracal_proto::dataplane::interfaces_server::Interfaces;
use caracal_proto::dataplane::policy_server::Policy;
use caracal_proto::dataplane::routes_server::Routes;
use caracal_proto::dataplane::stats_server::Stats;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info, warn};

use super::{convert, policy};
use crate::engine::{Engine, EngineError};
use crate::policy::spec::PolicyBatch;

/// The dataplane's API, one value serving every service. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct DataplaneApi {
    engine: Arc<Engine>,
}

impl DataplaneApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        DataplaneApi { engine }
    }

    /// Runs `call` on the blocking pool. If the client goes away meanwhile,
    /// the call still runs to completion, so a change is never abandoned
    /// half-way; `what` names the call in logs.
    async fn engine<T, F>(&self, what: &'static str, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        match tokio::task::spawn_blocking(move || call(&engine)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let status = convert::engine_error_to_status(err);
                match status.code() {
                    // The client's mistake, answered; nothing wrong here.
                    Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::FailedPrecondition => {
                        debug!(call = what, error = status.message(), "request refused");
                    }
                    _ => warn!(call = what, error = status.message(), "engine call failed"),
                }
                Err(status)
            }
            Err(join) => {
                warn!(call = what, error = %join, "engine call panicked");
                Err(Status::internal(format!(
                    "{what}: the engine call did not complete"
                )))
            }
        }
    }
}

/// Logs a request the API rejected before it reached the engine.
fn rejected(what: &'static str, status: Status) -> Status {
    debug!(call = what, error = status.message(), "request rejected");
    status
}

#[tonic::async_trait]
impl Interfaces for DataplaneApi {
    async fn add_interface(
        &self,
        request: Request<pb::AddInterfaceRequest>,
    ) -> Result<Response<pb::Interface>, Status> {
        const WHAT: &str = "AddInterface";
        let spec = convert::interface_spec_from_proto(request.into_inner().spec)
            .map_err(|s| rejected(WHAT, s))?;
        let info = self.engine(WHAT, move |e| e.add_interface(spec)).await?;
        Ok(Response::new(convert::interface_to_proto(info)))
    }

    async fn delete_interface(
        &self,
        request: Request<pb::DeleteInterfaceRequest>,
    ) -> Result<Response<pb::DeleteInterfaceResponse>, Status> {
        const WHAT: &str = "DeleteInterface";
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(rejected(
                WHAT,
                Status::invalid_argument("name: must not be empty"),
            ));
        }
        let existed = self
            .engine(WHAT, move |e| e.delete_interface(&name))
            .await?;
        Ok(Response::new(pb::DeleteInterfaceResponse { existed }))
    }

    async fn list_interfaces(
        &self,
        _: Request<pb::ListInterfacesRequest>,
    ) -> Result<Response<pb::ListInterfacesResponse>, Status> {
        let interfaces = self
            .engine("ListInterfaces", |e| Ok(e.interfaces()))
            .await?;
        Ok(Response::new(pb::ListInterfacesResponse {
            interfaces: interfaces
                .into_iter()
                .map(convert::interface_to_proto)
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Routes for DataplaneApi {
    async fn add_route(
        &self,
        request: Request<pb::AddRouteRequest>,
    ) -> Result<Response<pb::AddRouteResponse>, Status> {
        const WHAT: &str = "AddRoute";
        let route =
            convert::route_from_proto(request.into_inner().route).map_err(|s| rejected(WHAT, s))?;
        let prefix = route.prefix;
        let paths = route.paths.len();
        self.engine(WHAT, move |e| e.add_route(route)).await?;
        // The engine logs interface changes itself, but not route changes.
        info!(%prefix, paths, "route added");
        Ok(Response::new(pb::AddRouteResponse {}))
    }

    async fn delete_route(
        &self,
        request: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        const WHAT: &str = "DeleteRoute";
        let prefix = convert::prefix_from_proto("prefix", &request.into_inner().prefix)
            .map_err(|s| rejected(WHAT, s))?;
        let existed = self.engine(WHAT, move |e| e.delete_route(prefix)).await?;
        if existed {
            info!(%prefix, "route deleted");
        }
        Ok(Response::new(pb::DeleteRouteResponse { existed }))
    }

    async fn list_routes(
        &self,
        _: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let routes = self.engine("ListRoutes", |e| Ok(e.routes())).await?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.into_iter().map(convert::route_to_proto).collect(),
        }))
    }
}

#[tonic::async_trait]
impl Stats for DataplaneApi {
    async fn get_counters(
        &self,
        _: Request<pb::GetCountersRequest>,
    ) -> Result<Response<pb::Counters>, Status> {
        let counters = self.engine("GetCounters", |e| Ok(e.counters())).await?;
        Ok(Response::new(convert::counters_to_proto(counters)))
    }

    async fn get_runtime(
        &self,
        _: Request<pb::GetRuntimeRequest>,
    ) -> Result<Response<pb::Runtime>, Status> {
        let runtime = self.engine("GetRuntime", |e| Ok(e.runtime())).await?;
        Ok(Response::new(convert::runtime_to_proto(runtime)))
    }

    async fn clear_runtime(
        &self,
        _: Request<pb::ClearRuntimeRequest>,
    ) -> Result<Response<pb::ClearRuntimeResponse>, Status> {
        self.engine("ClearRuntime", |e| {
            e.clear_runtime();
            Ok(())
        })
        .await?;
        Ok(Response::new(pb::ClearRuntimeResponse {}))
    }
}

impl DataplaneApi {
    /// Applies a policy batch; database errors about its only entry are
    /// reported without the batch's list name (`list`), as the request
    /// spells its fields.
    async fn apply_policy(
        &self,
        what: &'static str,
        batch: Result<PolicyBatch, Status>,
        list: Option<&'static str>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = batch.map_err(|s| rejected(what, s))?;
        let generation = self
            .engine(what, move |e| e.apply_policy(batch))
            .await
            .map_err(|s| match list {
                Some(list) => policy::strip_batch_field(s, list),
                None => s,
            })?;
        Ok(Response::new(pb::PolicyReply { generation }))
    }
}

#[tonic::async_trait]
impl Policy for DataplaneApi {
    async fn set_ip_set(
        &self,
        request: Request<pb::IpSet>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::set_ip_set_from_proto(request.into_inner());
        self.apply_policy("SetIpSet", batch, Some("set_ip_sets"))
            .await
    }

    async fn update_ip_set(
        &self,
        request: Request<pb::IpSetDelta>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::update_ip_set_from_proto(request.into_inner());
        self.apply_policy("UpdateIpSet", batch, Some("update_ip_sets"))
            .await
    }

    async fn delete_ip_set(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::delete_name(request.into_inner().name).map(|name| PolicyBatch {
            delete_ip_sets: vec![name],
            ..PolicyBatch::default()
        });
        self.apply_policy("DeleteIpSet", batch, Some("delete_ip_sets"))
            .await
    }

    async fn set_policy(
        &self,
        request: Request<pb::PolicySpec>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::set_policy_from_proto(request.into_inner());
        self.apply_policy("SetPolicy", batch, Some("set_policies"))
            .await
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::delete_name(request.into_inner().name).map(|name| PolicyBatch {
            delete_policies: vec![name],
            ..PolicyBatch::default()
        });
        self.apply_policy("DeletePolicy", batch, Some("delete_policies"))
            .await
    }

    async fn set_endpoint_policy(
        &self,
        request: Request<pb::EndpointPolicy>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::set_endpoint_from_proto(request.into_inner());
        self.apply_policy("SetEndpointPolicy", batch, Some("set_endpoints"))
            .await
    }

    async fn apply(
        &self,
        request: Request<pb::PolicyBatch>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        let batch = policy::batch_from_proto(request.into_inner());
        self.apply_policy("Apply", batch, None).await
    }

    async fn get_policy_state(
        &self,
        request: Request<pb::GetPolicyStateRequest>,
    ) -> Result<Response<pb::PolicyState>, Status> {
        let interface = request.into_inner().interface;
        let state = self
            .engine("GetPolicyState", move |e| {
                Ok(e.policy_state((!interface.is_empty()).then_some(interface.as_str())))
            })
            .await?;
        Ok(Response::new(policy::state_to_proto(state)))
    }

    async fn list_flows(
        &self,
        request: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let flows = self
            .engine("ListFlows", move |e| Ok(e.flows(limit)))
            .await?;
        Ok(Response::new(pb::ListFlowsResponse {
            flows: flows.into_iter().map(policy::flow_to_proto).collect(),
        }))
    }

    async fn list_policy_log(
        &self,
        request: Request<pb::ListPolicyLogRequest>,
    ) -> Result<Response<pb::ListPolicyLogResponse>, Status> {
        let limit = request.into_inner().limit as usize;
        let (records, lost) = self
            .engine("ListPolicyLog", move |e| Ok(e.policy_log(limit)))
            .await?;
        Ok(Response::new(pb::ListPolicyLogResponse {
            records: records.iter().map(policy::log_to_proto).collect(),
            lost,
        }))
    }
}
