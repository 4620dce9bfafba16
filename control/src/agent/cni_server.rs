//! `caracal.agent.v1.Cni`: the CNI plugin's requests.
//!
//! ADD looks the pod up in the datastore (waiting briefly if the watch is
//! behind), picks its interface kind and pools from annotations, asks IPAM
//! for addresses under the handle `<container id>.<ifname>`, makes a memif
//! pod's socket folder ([`memif`]), records the endpoint, and returns once
//! the sync loop has made the dataplane run it. A failed ADD undoes what
//! it did: no address, no endpoint, no interface, no socket folder is left
//! behind. DEL undoes an ADD and succeeds when there is
//! nothing to undo. CHECK compares the endpoint, the dataplane's interface
//! and IPAM's record. GC releases every attachment the runtime no longer
//! knows, then leaked addresses of pods the datastore no longer has.
//!
//! Operations on one attachment are serialized; different attachments
//! proceed in parallel. Errors are [`CniError`]s, which become [`Status`]
//! codes only at the gRPC edge.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use caracal_proto::agent as pb;
use caracal_proto::agent::cni_server::Cni;
use k8s_openapi::api::core::v1::Pod;
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info, warn};

use super::calc::interface_of;
use super::context::Context;
use super::datastore::Objects;
use super::endpoints::{
    dataplane_interface_name, Endpoint, EndpointError, EndpointKey, InterfaceKind,
    UnknownInterfaceKind,
};
use super::memif::{self, MemifError};
use super::model::InterfaceSpec;
use super::pools::{self, pool_choice, BadPoolAnnotation};
use super::sync::WaitError;
use crate::ipam::{AssignRequest, HandleInfo, IpPool, Ipam, IpamError, IpamStore};

/// Annotation choosing a pod's interface kind: `tap` (default), `memif`,
/// `vhost-user`.
pub const INTERFACE_ANNOTATION: &str = "caracal.io/interface";
/// The pods' IPv4 gateway (Calico's link-local next hop, RFC 3927).
pub const GATEWAY_V4: &str = "169.254.1.1";
/// The pods' IPv6 gateway: the link-local address of MAC
/// ee:ee:ee:ee:ee:ee (RFC 4291 appendix A).
pub const GATEWAY_V6: &str = "fe80::ecee:eeff:feee:eeee";
/// Smallest and largest pod MTU the dataplane accepts, bytes.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;
/// Smallest MTU of a link that carries IPv6 (RFC 8200 section 5), bytes.
const MIN_IPV6_MTU: u16 = 1280;
/// Attribute names kept with an IPAM handle.
const ATTR_CONTAINER_ID: &str = "containerID";
const ATTR_IFNAME: &str = "ifname";
const ATTR_POD_UID: &str = "podUID";

/// How long the CNI server waits for things outside it.
#[derive(Debug, Clone)]
pub struct CniTimeouts {
    /// For a pod the datastore does not have yet.
    pub pod: Duration,
    /// For the dataplane to run a new attachment.
    pub add: Duration,
    /// For the dataplane to drop a removed attachment (DEL still succeeds
    /// after it: the sync loop finishes the job).
    pub del: Duration,
    /// Handles younger than this are never taken for leaks by GC.
    pub gc_grace: Duration,
}

impl Default for CniTimeouts {
    fn default() -> Self {
        CniTimeouts {
            pod: Duration::from_secs(5),
            add: Duration::from_secs(30),
            del: Duration::from_secs(10),
            gc_grace: Duration::from_secs(60),
        }
    }
}

/// Why a CNI request failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("pod {namespace}/{name} is not in the datastore")]
    PodNotFound { namespace: String, name: String },
    #[error(transparent)]
    BadPoolAnnotation(#[from] BadPoolAnnotation),
    #[error("pod {pod}: annotation {INTERFACE_ANNOTATION}: {source}")]
    BadInterfaceKind {
        pod: String,
        source: UnknownInterfaceKind,
    },
    #[error(
        "pod {pod}: interface kind {kind} is not supported yet (annotation {INTERFACE_ANNOTATION})"
    )]
    Unsupported { pod: String, kind: InterfaceKind },
    #[error("pod {pod}: {source}")]
    Memif { pod: String, source: MemifError },
    /// Another pod's memif socket has the same path.
    #[error("pod {pod}: memif socket {socket} is pod {owner}'s")]
    SocketTaken {
        pod: String,
        socket: String,
        owner: String,
    },
    #[error("IP pools: {0}")]
    Pools(IpamError),
    #[error("IPAM: {0}")]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    Dataplane(#[from] WaitError),
    /// CHECK: something ADD made is not there.
    #[error("{0}")]
    Missing(String),
    /// CHECK: something ADD made is not as it made it.
    #[error("{0}")]
    Mismatch(String),
}

impl From<CniError> for Status {
    fn from(err: CniError) -> Status {
        let code = match &err {
            CniError::BadRequest(_)
            | CniError::BadPoolAnnotation(_)
            | CniError::BadInterfaceKind { .. }
            | CniError::Unsupported { .. } => Code::InvalidArgument,
            CniError::Memif { source, .. } => match source {
                MemifError::BadAnnotation { .. } | MemifError::PathTooLong { .. } => {
                    Code::InvalidArgument
                }
                MemifError::Folder { .. } => Code::Internal,
            },
            CniError::SocketTaken { .. } => Code::AlreadyExists,
            CniError::NotReady(_) => Code::Unavailable,
            CniError::PodNotFound { .. } | CniError::Missing(_) => Code::NotFound,
            CniError::Pools(_) | CniError::Mismatch(_) => Code::FailedPrecondition,
            CniError::Ipam(e) => match e {
                IpamError::UnknownPool(_) => Code::InvalidArgument,
                IpamError::Exhausted { .. } => Code::ResourceExhausted,
                IpamError::Contention(_) | IpamError::Store(_) => Code::Unavailable,
                IpamError::NoPool { .. } | IpamError::InvalidPool { .. } => {
                    Code::FailedPrecondition
                }
            },
            CniError::Endpoint(_) => Code::Internal,
            CniError::Dataplane(WaitError::Refused { failure, .. }) => failure.code,
            CniError::Dataplane(WaitError::TimedOut { .. }) => Code::Unavailable,
        };
        Status::new(code, err.to_string())
    }
}

/// The `Cni` service over an IPAM with store `S`.
#[derive(Debug)]
pub struct CniService<S> {
    ctx: Arc<Context>,
    ipam: Arc<Ipam<S>>,
    timeouts: CniTimeouts,
    locks: AttachmentLocks,
    /// The pools last given to IPAM.
    applied_pools: Mutex<Option<Vec<IpPool>>>,
}

impl<S: IpamStore> CniService<S> {
    pub fn new(ctx: Arc<Context>, ipam: Arc<Ipam<S>>, timeouts: CniTimeouts) -> Self {
        CniService {
            ctx,
            ipam,
            timeouts,
            locks: AttachmentLocks::default(),
            applied_pools: Mutex::new(None),
        }
    }

    // ------------------------------------------------------------- ADD

    pub async fn add(&self, req: pb::CniRequest) -> Result<pb::CniResult, CniError> {
        let key = attachment_key(&req.container_id, &req.ifname)?;
        if req.pod_namespace.is_empty() || req.pod_name.is_empty() {
            return Err(CniError::BadRequest(
                "pod_namespace and pod_name are required (K8S_POD_NAMESPACE, K8S_POD_NAME)".into(),
            ));
        }
        let _lock = self.locks.lock(&key).await;

        if let Some(existing) = self.ctx.endpoints.get(&key) {
            return self.add_again(existing, &req).await;
        }
        self.ctx.readiness().map_err(CniError::NotReady)?;
        self.ctx.source.refresh().await;
        let (objects, pod) = self.find_pod(&req.pod_namespace, &req.pod_name).await?;
        let pod_name = format!("{}/{}", req.pod_namespace, req.pod_name);
        let kind = interface_kind(&pod, &pod_name)?;
        let dataplane_interface =
            dataplane_interface_name(&req.pod_namespace, &req.pod_name, &key.ifname);
        let (socket_path, memif) = match kind {
            InterfaceKind::Tap if req.netns.is_empty() => {
                return Err(CniError::BadRequest(
                    "netns is required for a tap interface".into(),
                ))
            }
            InterfaceKind::Tap => (None, None),
            // The netns, if any, is the pod's; a memif pod has no kernel
            // interface in it.
            InterfaceKind::Memif => {
                let memif_error = |source| CniError::Memif {
                    pod: pod_name.clone(),
                    source,
                };
                let options = memif::options(&pod).map_err(memif_error)?;
                let socket = memif::socket_path(
                    &self.ctx.memif_dir,
                    &req.pod_namespace,
                    &req.pod_name,
                    &key.ifname,
                )
                .map_err(memif_error)?
                .to_string_lossy()
                .into_owned();
                self.check_socket_free(&socket, &dataplane_interface, &pod_name)?;
                (Some(socket), Some(options))
            }
            InterfaceKind::VhostUser => {
                return Err(CniError::Unsupported {
                    pod: pod_name,
                    kind,
                })
            }
        };
        let mtu = self.mtu(req.mtu)?;
        let choice = pool_choice(&pod, objects.namespace(&req.pod_namespace))?;
        self.apply_pools(&objects)?;

        let handle = key.handle();
        let assign = AssignRequest {
            handle: handle.clone(),
            node: self.ctx.node.clone(),
            node_labels: pools::node_labels(&objects, &self.ctx.node),
            namespace: req.pod_namespace.clone(),
            pod: req.pod_name.clone(),
            ipv4_pools: choice.ipv4,
            ipv6_pools: choice.ipv6,
            attrs: [
                (ATTR_CONTAINER_ID.to_owned(), key.container_id.clone()),
                (ATTR_IFNAME.to_owned(), key.ifname.clone()),
                (ATTR_POD_UID.to_owned(), req.pod_uid.clone()),
            ]
            .into(),
        };
        let assigned = self.ipam.auto_assign(&assign).await.inspect_err(|e| {
            warn!(pod = %pod_name, error = %e, "no addresses");
        })?;
        // From here on a failure releases what was taken.
        let ips: Vec<_> = assigned.ipv4.into_iter().chain(assigned.ipv6).collect();
        if ips.iter().any(|ip| ip.addr().is_ipv6()) && mtu < MIN_IPV6_MTU {
            self.release(&key).await;
            return Err(CniError::BadRequest(format!(
                "mtu {mtu} is below IPv6's minimum of {MIN_IPV6_MTU} (RFC 8200)"
            )));
        }
        if let Some(socket) = &socket_path {
            // Before the dataplane binds the socket in it.
            if let Err(source) = memif::create_folder(Path::new(socket)) {
                self.release(&key).await;
                return Err(CniError::Memif {
                    pod: pod_name,
                    source,
                });
            }
        }
        let endpoint = Endpoint {
            container_id: key.container_id.clone(),
            ifname: key.ifname.clone(),
            netns: req.netns.clone(),
            namespace: req.pod_namespace.clone(),
            pod: req.pod_name.clone(),
            pod_uid: req.pod_uid.clone(),
            ips,
            interface_kind: kind,
            socket_path: socket_path.clone(),
            memif,
            dataplane_interface,
            mtu,
        };
        match self.attach(endpoint).await {
            Ok(result) => {
                info!(pod = %pod_name, container = %key.container_id,
                    ips = ?result.ips.iter().map(|i| &i.address).collect::<Vec<_>>(), "attached");
                Ok(result)
            }
            Err(e) => {
                warn!(pod = %pod_name, container = %key.container_id, error = %e,
                    "ADD failed; undoing it");
                self.detach(&key).await;
                if let Some(socket) = &socket_path {
                    self.release_socket(socket);
                }
                Err(e)
            }
        }
    }

    /// ADD of an attachment that exists: the same result, once the
    /// dataplane runs it (in a new namespace if the runtime says so).
    async fn add_again(
        &self,
        mut existing: Endpoint,
        req: &pb::CniRequest,
    ) -> Result<pb::CniResult, CniError> {
        if !req.netns.is_empty() && req.netns != existing.netns {
            info!(key = %existing.key(), netns = %req.netns, "attachment moved to a new netns");
            existing.netns.clone_from(&req.netns);
            self.record(existing.clone()).await?;
        }
        if !self.ctx.sync.status().connected {
            return Err(CniError::NotReady("the dataplane is not connected".into()));
        }
        let revision = self.ctx.store.revision().current();
        let status = self
            .ctx
            .sync
            .wait_for_interface(revision, &existing.dataplane_interface, self.timeouts.add)
            .await?;
        Ok(result(&existing, mac_of(&status.interfaces, &existing)))
    }

    /// Records `endpoint` and waits for the dataplane to run it.
    async fn attach(&self, endpoint: Endpoint) -> Result<pb::CniResult, CniError> {
        for old in self.record(endpoint.clone()).await? {
            info!(old = %old.key(), new = %endpoint.key(),
                "a new sandbox of the pod takes over its interface");
        }
        let revision = self.ctx.store.revision().current();
        let status = self
            .ctx
            .sync
            .wait_for_interface(revision, &endpoint.dataplane_interface, self.timeouts.add)
            .await?;
        Ok(result(&endpoint, mac_of(&status.interfaces, &endpoint)))
    }

    /// Records `endpoint` (durably: file and folder syncs) on a blocking
    /// thread, so that a burst of ADDs neither stalls the runtime's
    /// workers nor waits for one sync at a time.
    async fn record(&self, endpoint: Endpoint) -> Result<Vec<Endpoint>, CniError> {
        let ctx = Arc::clone(&self.ctx);
        tokio::task::spawn_blocking(move || ctx.endpoints.insert(endpoint))
            .await
            .expect("an endpoint write does not panic")
            .map_err(Into::into)
    }

    /// The pod, from a snapshot of the store taken once it has it.
    async fn find_pod(&self, namespace: &str, name: &str) -> Result<(Objects, Pod), CniError> {
        let mut changes = self.ctx.store.revision().subscribe();
        let deadline = tokio::time::Instant::now() + self.timeouts.pod;
        loop {
            let objects = self.ctx.store.snapshot();
            if let Some(pod) = objects.pod(namespace, name) {
                let pod = pod.clone();
                return Ok((objects, pod));
            }
            debug!(pod = %format!("{namespace}/{name}"), "waiting for the pod to reach the datastore");
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(CniError::PodNotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                }
            }
        }
    }

    /// Refuses a memif socket path that another pod's endpoint has (two
    /// pods whose `<namespace>-<pod>` spell the same).
    fn check_socket_free(
        &self,
        socket: &str,
        dataplane_interface: &str,
        pod: &str,
    ) -> Result<(), CniError> {
        match self.ctx.endpoints.snapshot().values().find(|e| {
            e.socket_path.as_deref() == Some(socket) && e.dataplane_interface != dataplane_interface
        }) {
            Some(owner) => Err(CniError::SocketTaken {
                pod: pod.to_owned(),
                socket: socket.to_owned(),
                owner: format!("{}/{}", owner.namespace, owner.pod),
            }),
            None => Ok(()),
        }
    }

    /// Removes a memif socket and its folder unless an endpoint (a newer
    /// sandbox of the same pod) still has it.
    fn release_socket(&self, socket: &str) {
        let in_use = self
            .ctx
            .endpoints
            .snapshot()
            .values()
            .any(|e| e.socket_path.as_deref() == Some(socket));
        if !in_use {
            memif::remove_folder(Path::new(socket));
        }
    }

    fn mtu(&self, requested: u32) -> Result<u16, CniError> {
        let mtu = match requested {
            0 => u32::from(self.ctx.default_mtu),
            n => n,
        };
        if !MTU_RANGE.contains(&mtu) {
            return Err(CniError::BadRequest(format!(
                "mtu {mtu} is outside {}..={}",
                MTU_RANGE.start(),
                MTU_RANGE.end()
            )));
        }
        Ok(mtu as u16)
    }

    /// Gives IPAM the pools the datastore defines now, if they changed.
    fn apply_pools(&self, objects: &Objects) -> Result<(), CniError> {
        let (pools, problems) = pools::pools(objects, &self.ctx.default_pools);
        for p in problems {
            warn!("{p}");
        }
        let mut applied = self.applied_pools.lock().expect("poisoned");
        if applied.as_ref() == Some(&pools) {
            return Ok(());
        }
        self.ipam
            .set_pools(pools.clone())
            .map_err(CniError::Pools)?;
        info!(pools = ?pools.iter().map(|p| format!("{} {}", p.name, p.cidr)).collect::<Vec<_>>(),
            "IP pools");
        *applied = Some(pools);
        Ok(())
    }

    // ------------------------------------------------------------- DEL

    pub async fn del(&self, req: pb::CniRequest) -> Result<(), CniError> {
        let key = attachment_key(&req.container_id, &req.ifname)?;
        let _lock = self.locks.lock(&key).await;
        self.remove(&key).await
    }

    /// Removes the endpoint of `key` and releases its addresses, then
    /// waits (a while) for the dataplane to drop its interface.
    async fn remove(&self, key: &EndpointKey) -> Result<(), CniError> {
        let removed = self.ctx.endpoints.remove(key)?;
        let revision = self.ctx.store.revision().current();
        let released = self.ipam.release_by_handle(&key.handle()).await?;
        if let Some(ep) = &removed {
            info!(pod = %format!("{}/{}", ep.namespace, ep.pod), container = %key.container_id,
                ips = ?released, "detached");
            if self.ctx.sync.status().connected {
                let wait = self
                    .ctx
                    .sync
                    .wait_for_interface(revision, &ep.dataplane_interface, self.timeouts.del)
                    .await;
                if let Err(e) = wait {
                    warn!(key = %key, error = %e,
                        "the dataplane has not dropped the interface yet; the sync loop will");
                }
            }
            if let Some(socket) = &ep.socket_path {
                self.release_socket(socket);
            }
        } else if !released.is_empty() {
            info!(key = %key, ips = ?released, "released addresses of an unknown attachment");
        }
        Ok(())
    }

    /// Undoes a failed ADD, as far as it can; the failure it reports is
    /// the ADD's.
    async fn detach(&self, key: &EndpointKey) {
        if let Err(e) = self.remove(key).await {
            warn!(key = %key, error = %e, "cannot fully undo the failed ADD");
        }
    }

    /// Releases the addresses of `key` (after an ADD failed before its
    /// endpoint was recorded).
    async fn release(&self, key: &EndpointKey) {
        if let Err(e) = self.ipam.release_by_handle(&key.handle()).await {
            warn!(key = %key, error = %e, "cannot release the addresses of a failed ADD");
        }
    }

    // ----------------------------------------------------------- CHECK

    pub async fn check(&self, req: pb::CniRequest) -> Result<(), CniError> {
        let key = attachment_key(&req.container_id, &req.ifname)?;
        let _lock = self.locks.lock(&key).await;
        let ep = self
            .ctx
            .endpoints
            .get(&key)
            .ok_or_else(|| CniError::Missing(format!("no attachment {key} on this node")))?;

        let addresses: BTreeSet<IpAddr> = ep.ips.iter().map(|ip| ip.addr()).collect();
        if !req.prev_ips.is_empty() {
            let prev = req
                .prev_ips
                .iter()
                .map(|s| parse_ip(s))
                .collect::<Result<BTreeSet<_>, _>>()?;
            if prev != addresses {
                return Err(CniError::Mismatch(format!(
                    "attachment {key} has addresses {addresses:?}, the previous result {prev:?}"
                )));
            }
        }

        let handle = self.ipam.get_by_handle(&key.handle()).await?;
        let held: BTreeSet<IpAddr> = handle
            .map(|h| h.addresses.into_iter().collect())
            .unwrap_or_default();
        if held != addresses {
            return Err(CniError::Mismatch(format!(
                "IPAM holds {held:?} for attachment {key}, which has {addresses:?}"
            )));
        }

        let conn = self
            .ctx
            .sync
            .connection()
            .ok_or_else(|| CniError::NotReady("the dataplane is not connected".into()))?;
        let listing = conn.list().await.map_err(|s| {
            CniError::NotReady(format!("cannot list the dataplane: {}", s.message()))
        })?;
        let iface = listing
            .interfaces
            .into_iter()
            .filter_map(|i| i.spec)
            .find(|s| s.name == ep.dataplane_interface)
            .ok_or_else(|| {
                CniError::Missing(format!(
                    "the dataplane has no interface {:?}",
                    ep.dataplane_interface
                ))
            })?;
        let have = InterfaceSpec::from_proto(iface);
        if Some(&have) != interface_of(&ep).as_ref() {
            return Err(CniError::Mismatch(format!(
                "the dataplane's interface {:?} is not as attached: {have:?}",
                ep.dataplane_interface
            )));
        }
        if let Some(socket) = &ep.socket_path {
            if !memif::socket_exists(Path::new(socket)) {
                return Err(CniError::Missing(format!(
                    "the memif socket {socket} of attachment {key} is gone"
                )));
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------- GC

    pub async fn gc(&self, req: pb::GcRequest) -> Result<Vec<EndpointKey>, CniError> {
        let valid: HashSet<EndpointKey> = req
            .valid_attachments
            .iter()
            .map(|a| EndpointKey::new(&a.container_id, &a.ifname))
            .collect();
        let mut released = BTreeSet::new();

        // Attachments the runtime no longer has: endpoints first...
        let stale: Vec<EndpointKey> = self
            .ctx
            .endpoints
            .snapshot()
            .keys()
            .filter(|k| !valid.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            let _lock = self.locks.lock(&key).await;
            self.remove(&key).await?;
            released.insert(key);
        }
        // ...then addresses of this node held for attachments without an
        // endpoint (an ADD that died half-way).
        let young = SystemTime::now() - self.timeouts.gc_grace;
        for h in self.ipam.handles().await? {
            let key = handle_key(&h);
            if h.node != self.ctx.node || valid.contains(&key) || h.created > young {
                continue;
            }
            let _lock = self.locks.lock(&key).await;
            if self.ctx.endpoints.get(&key).is_none() {
                self.ipam.release_by_handle(&h.handle).await?;
                released.insert(key);
            }
        }

        // Leaks anywhere: addresses of pods the datastore no longer has.
        if self.ctx.store.is_synced() {
            let objects = self.ctx.store.snapshot();
            let endpoints = self.ctx.endpoints.snapshot();
            let leaked = self
                .ipam
                .gc(|h| {
                    let key = handle_key(h);
                    valid.contains(&key)
                        || endpoints.contains_key(&key)
                        || h.created > young
                        || objects.pod(&h.namespace, &h.pod).is_some()
                })
                .await?;
            for h in leaked {
                info!(handle = %h.handle, node = %h.node, pod = %format!("{}/{}", h.namespace, h.pod),
                    ips = ?h.addresses, "released leaked addresses");
                released.insert(handle_key(&h));
            }
        }
        Ok(released.into_iter().collect())
    }
}

// ------------------------------------------------------------------ gRPC

#[tonic::async_trait]
impl<S: IpamStore + 'static> Cni for CniService<S> {
    async fn add(&self, req: Request<pb::CniRequest>) -> Result<Response<pb::CniResult>, Status> {
        Ok(Response::new(
            CniService::add(self, req.into_inner()).await?,
        ))
    }

    async fn del(&self, req: Request<pb::CniRequest>) -> Result<Response<pb::DelResponse>, Status> {
        CniService::del(self, req.into_inner()).await?;
        Ok(Response::new(pb::DelResponse {}))
    }

    async fn check(
        &self,
        req: Request<pb::CniRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        CniService::check(self, req.into_inner()).await?;
        Ok(Response::new(pb::CheckResponse {}))
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        let released = CniService::gc(self, req.into_inner()).await?;
        Ok(Response::new(pb::GcResponse {
            released: released
                .into_iter()
                .map(|k| pb::Attachment {
                    container_id: k.container_id,
                    ifname: k.ifname,
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (ready, message) = match self.ctx.readiness() {
            Ok(()) => (true, "ready".to_owned()),
            Err(why) => (false, why),
        };
        Ok(Response::new(pb::StatusResponse { ready, message }))
    }
}

// --------------------------------------------------------------- helpers

/// The attachment a request names, checked: a container id of letters,
/// digits, `_`, `.` and `-` starting with a letter or digit (the CNI
/// spec's rule), and a valid Linux interface name.
fn attachment_key(container_id: &str, ifname: &str) -> Result<EndpointKey, CniError> {
    let id_ok = container_id
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !id_ok {
        return Err(CniError::BadRequest(format!(
            "invalid container id {container_id:?}: letters, digits, '_', '.' and '-', \
             starting with a letter or digit"
        )));
    }
    // The kernel's rules (dev_valid_name), IFNAMSIZ included.
    let if_ok = !ifname.is_empty()
        && ifname.len() < 16
        && ifname != "."
        && ifname != ".."
        && !ifname.contains(['/', ':'])
        && !ifname.chars().any(|c| c.is_whitespace() || c.is_control());
    if !if_ok {
        return Err(CniError::BadRequest(format!(
            "invalid interface name {ifname:?}"
        )));
    }
    Ok(EndpointKey::new(container_id, ifname))
}

/// The attachment an IPAM handle belongs to: from its attributes, else
/// from its name `<container id>.<ifname>`.
fn handle_key(h: &HandleInfo) -> EndpointKey {
    match (h.attrs.get(ATTR_CONTAINER_ID), h.attrs.get(ATTR_IFNAME)) {
        (Some(id), Some(ifname)) => EndpointKey::new(id, ifname),
        _ => match h.handle.split_once('.') {
            Some((id, ifname)) => EndpointKey::new(id, ifname),
            None => EndpointKey::new(&h.handle, ""),
        },
    }
}

fn interface_kind(pod: &Pod, pod_name: &str) -> Result<InterfaceKind, CniError> {
    match pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INTERFACE_ANNOTATION))
    {
        None => Ok(InterfaceKind::Tap),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|source| CniError::BadInterfaceKind {
                pod: pod_name.to_owned(),
                source,
            }),
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, CniError> {
    let addr = text.split_once('/').map_or(text, |(a, _)| a);
    addr.parse()
        .map_err(|_| CniError::BadRequest(format!("prev_ips: invalid address {text:?}")))
}

fn mac_of(
    interfaces: &std::collections::BTreeMap<String, caracal_proto::dataplane::Interface>,
    ep: &Endpoint,
) -> String {
    interfaces
        .get(&ep.dataplane_interface)
        .map(|i| i.mac.clone())
        .unwrap_or_default()
}

/// The CNI result of an endpoint whose pod side has MAC `mac`.
pub fn result(ep: &Endpoint, mac: String) -> pb::CniResult {
    let has_v4 = ep.ips.iter().any(|ip| ip.addr().is_ipv4());
    let has_v6 = ep.ips.iter().any(|ip| ip.addr().is_ipv6());
    let mut routes = Vec::new();
    if has_v4 {
        routes.push(pb::CniRoute {
            dst: "0.0.0.0/0".into(),
            gw: GATEWAY_V4.into(),
        });
    }
    if has_v6 {
        routes.push(pb::CniRoute {
            dst: "::/0".into(),
            gw: GATEWAY_V6.into(),
        });
    }
    pb::CniResult {
        interface_name: ep.ifname.clone(),
        mac,
        sandbox: ep.netns.clone(),
        interface_kind: ep.interface_kind.as_str().to_owned(),
        socket_path: ep.socket_path.clone().unwrap_or_default(),
        mtu: u32::from(ep.mtu),
        ips: ep
            .ips
            .iter()
            .map(|ip| pb::CniIp {
                address: ip.to_string(),
                gateway: if ip.addr().is_ipv4() {
                    GATEWAY_V4
                } else {
                    GATEWAY_V6
                }
                .into(),
            })
            .collect(),
        routes,
    }
}

/// One async lock per attachment, made on demand and dropped when no one
/// holds or waits for it.
#[derive(Debug, Default)]
struct AttachmentLocks(Mutex<HashMap<EndpointKey, Arc<tokio::sync::Mutex<()>>>>);

impl AttachmentLocks {
    async fn lock(&self, key: &EndpointKey) -> AttachmentGuard<'_> {
        let lock = Arc::clone(
            self.0
                .lock()
                .expect("poisoned")
                .entry(key.clone())
                .or_default(),
        );
        let guard = lock.lock_owned().await;
        AttachmentGuard {
            locks: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }
}

#[derive(Debug)]
struct AttachmentGuard<'a> {
    locks: &'a AttachmentLocks,
    key: EndpointKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AttachmentGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().expect("poisoned");
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn attachment_keys_are_checked() {
        assert!(attachment_key("abc-123_x.y", "eth0").is_ok());
        for (id, ifname) in [
            ("", "eth0"),
            ("../x", "eth0"),
            (".x", "eth0"),
            ("a/b", "eth0"),
            ("abc", ""),
            ("abc", "a/b"),
            ("abc", "much-too-long-name"),
            ("abc", ".."),
        ] {
            assert!(attachment_key(id, ifname).is_err(), "{id:?} {ifname:?}");
        }
    }

    #[test]
    fn interface_kinds_from_annotations() {
        let pod = |value: Option<&str>| Pod {
            metadata: ObjectMeta {
                annotations: value
                    .map(|v| [(INTERFACE_ANNOTATION.to_owned(), v.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(interface_kind(&pod(None), "p").unwrap(), InterfaceKind::Tap);
        assert_eq!(
            interface_kind(&pod(Some("memif")), "p").unwrap(),
            InterfaceKind::Memif
        );
        let err = interface_kind(&pod(Some("veth")), "ns/p").unwrap_err();
        assert_eq!(Status::from(err).code(), Code::InvalidArgument);
        let unsupported = CniError::Unsupported {
            pod: "ns/p".into(),
            kind: InterfaceKind::VhostUser,
        };
        let status = Status::from(unsupported);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("vhost-user is not supported yet"));
    }

    #[test]
    fn results_carry_gateways_and_default_routes_per_family() {
        let ep = Endpoint {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/p".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: String::new(),
            ips: vec![
                "10.65.0.5/32".parse().unwrap(),
                "fd00:65::5/128".parse().unwrap(),
            ],
            interface_kind: InterfaceKind::Tap,
            socket_path: None,
            memif: None,
            dataplane_interface: "ns/p".into(),
            mtu: 1500,
        };
        let r = result(&ep, "02:00:00:00:00:01".into());
        assert_eq!(r.ips[0].gateway, GATEWAY_V4);
        assert_eq!(r.ips[1].address, "fd00:65::5/128");
        assert_eq!(r.ips[1].gateway, GATEWAY_V6);
        let dsts: Vec<_> = r.routes.iter().map(|r| r.dst.as_str()).collect();
        assert_eq!(dsts, ["0.0.0.0/0", "::/0"]);
        assert_eq!((r.sandbox.as_str(), r.mtu), ("/var/run/netns/p", 1500));
    }

    #[test]
    fn handle_keys_come_from_attributes_or_the_name() {
        let mut h = HandleInfo {
            handle: "abc.eth0".into(),
            node: "n".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            addresses: vec![],
            attrs: Default::default(),
            created: SystemTime::now(),
        };
        assert_eq!(handle_key(&h), EndpointKey::new("abc", "eth0"));
        h.attrs.insert(ATTR_CONTAINER_ID.into(), "a.b".into());
        h.attrs.insert(ATTR_IFNAME.into(), "net1".into());
        assert_eq!(handle_key(&h), EndpointKey::new("a.b", "net1"));
    }
}
