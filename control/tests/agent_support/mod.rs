//! Shared scaffolding for the agent's unprivileged tests: a fake
//! dataplane (the dataplane's Interfaces and Routes services over an
//! in-memory table, and its Policy service if asked for, on a unix
//! socket) that records every change asked of it, and small waiting
//! helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_proto::dataplane as pb;
use caracal_proto::dataplane::interfaces_server::{Interfaces, InterfacesServer};
use caracal_proto::dataplane::policy_server::{Policy, PolicyServer};
use caracal_proto::dataplane::routes_server::{Routes, RoutesServer};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The fake's table, and what was asked of it.
#[derive(Debug, Default)]
pub struct Table {
    pub interfaces: BTreeMap<String, pb::Interface>,
    pub routes: BTreeMap<String, pb::Route>,
    pub next_id: u32,
    /// "add default/a", "delete default/a", "add-route 10.0.0.0/8", ...:
    /// every change made (a confirmed, unchanged spec is not a change).
    pub changes: Vec<String>,
    /// AddInterface of a tap whose netns contains this fails with
    /// FailedPrecondition, as the real one does for a missing netns.
    pub refuse_netns: Option<String>,
    /// The Policy service's state; `None`: the fake does not serve it
    /// (UNIMPLEMENTED). [`FakeDataplane::start_with`] serves it unless
    /// started with [`FakeDataplane::start_without_policy`].
    pub policy: Option<PolicyTable>,
    /// The sockets of memif servers, bound as the dataplane binds them
    /// (so in a folder that must exist), by interface.
    pub memif_sockets: BTreeMap<String, std::os::unix::net::UnixListener>,
}

/// What the fake's Policy service holds, and the batches it was sent.
#[derive(Debug, Default)]
pub struct PolicyTable {
    pub ip_sets: BTreeMap<String, BTreeSet<String>>,
    pub policies: BTreeMap<String, pb::PolicySpec>,
    /// Attachments by interface. An interface without one passes nothing
    /// (the fail-closed rule the agent relies on).
    pub endpoints: BTreeMap<String, pb::EndpointPolicy>,
    pub generation: u64,
    /// Every batch applied, in order.
    pub batches: Vec<pb::PolicyBatch>,
    /// A batch that sets a policy of this name is refused
    /// (InvalidArgument).
    pub refuse_policy: Option<String>,
}

impl PolicyTable {
    /// Applies `batch` to a copy and checks the result, as the dataplane
    /// must: attachments for existing interfaces only, deltas of existing
    /// sets, every reference resolved.
    fn apply(
        &self,
        batch: &pb::PolicyBatch,
        interfaces: &BTreeMap<String, pb::Interface>,
    ) -> Result<PolicyTable, Status> {
        if let Some(bad) = &self.refuse_policy {
            if batch.set_policies.iter().any(|p| &p.name == bad) {
                return Err(Status::invalid_argument(format!("policy {bad:?}: refused")));
            }
        }
        let mut next = PolicyTable {
            ip_sets: self.ip_sets.clone(),
            policies: self.policies.clone(),
            endpoints: self.endpoints.clone(),
            ..Default::default()
        };
        for set in &batch.set_ip_sets {
            next.ip_sets
                .insert(set.name.clone(), set.members.iter().cloned().collect());
        }
        for delta in &batch.update_ip_sets {
            let set = next
                .ip_sets
                .get_mut(&delta.name)
                .ok_or_else(|| Status::not_found(format!("IP set {:?}", delta.name)))?;
            for m in &delta.remove {
                set.remove(m);
            }
            set.extend(delta.add.iter().cloned());
        }
        for p in &batch.set_policies {
            next.policies.insert(p.name.clone(), p.clone());
        }
        for e in &batch.set_endpoints {
            if !interfaces.contains_key(&e.interface) {
                return Err(Status::failed_precondition(format!(
                    "no interface {:?}",
                    e.interface
                )));
            }
            next.endpoints.insert(e.interface.clone(), e.clone());
        }
        for p in &batch.delete_policies {
            next.policies.remove(p);
        }
        for s in &batch.delete_ip_sets {
            next.ip_sets.remove(s);
        }
        for e in next.endpoints.values() {
            for t in e.ingress.iter().chain(&e.egress) {
                if let Some(p) = t.policies.iter().find(|p| !next.policies.contains_key(*p)) {
                    return Err(Status::invalid_argument(format!("no policy {p:?}")));
                }
            }
        }
        for p in next.policies.values() {
            for r in p.ingress.iter().chain(&p.egress) {
                for m in r.source.iter().chain(&r.destination) {
                    if let Some(s) = m.ip_sets.iter().find(|s| !next.ip_sets.contains_key(*s)) {
                        return Err(Status::invalid_argument(format!("no IP set {s:?}")));
                    }
                }
            }
        }
        Ok(next)
    }

    /// The state as `GetPolicyState` reports it.
    pub fn state(&self) -> pb::PolicyState {
        pb::PolicyState {
            generation: self.generation,
            ip_sets: self
                .ip_sets
                .iter()
                .map(|(name, members)| pb::IpSet {
                    name: name.clone(),
                    members: members.iter().cloned().collect(),
                })
                .collect(),
            policies: self.policies.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<Table>>);

#[tonic::async_trait]
impl Interfaces for Service {
    async fn add_interface(
        &self,
        req: Request<pb::AddInterfaceRequest>,
    ) -> Result<Response<pb::Interface>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let mut t = self.0.lock().unwrap();
        match &spec.kind {
            Some(pb::interface_spec::Kind::Tap(tap)) => {
                if let Some(bad) = &t.refuse_netns {
                    if tap.netns.contains(bad.as_str()) {
                        return Err(Status::failed_precondition(format!(
                            "netns {:?} does not exist",
                            tap.netns
                        )));
                    }
                }
            }
            Some(pb::interface_spec::Kind::Memif(_)) => {}
            None => return Err(Status::invalid_argument("spec.kind: required")),
        }
        if let Some(existing) = t.interfaces.get(&spec.name) {
            if existing.spec.as_ref() == Some(&spec) {
                return Ok(Response::new(existing.clone()));
            }
        }
        let (kind, mac) = match &spec.kind {
            Some(pb::interface_spec::Kind::Memif(m)) => {
                // A socket left behind (by this interface before, or a
                // fake that was stopped) is replaced, as the real one
                // replaces a stale socket.
                t.memif_sockets.remove(&spec.name);
                let _ = std::fs::remove_file(&m.socket);
                let listener = std::os::unix::net::UnixListener::bind(&m.socket).map_err(|e| {
                    Status::failed_precondition(format!("memif socket {}: {e}", m.socket))
                })?;
                t.memif_sockets.insert(spec.name.clone(), listener);
                let mac = if m.peer_mac.is_empty() {
                    "ff:ff:ff:ff:ff:ff".to_owned()
                } else {
                    m.peer_mac.clone()
                };
                (pb::InterfaceKind::Memif, Some(mac))
            }
            _ => (pb::InterfaceKind::Tap, None),
        };
        t.next_id += 1;
        let id = t.next_id;
        let verb = if t.interfaces.contains_key(&spec.name) {
            "replace"
        } else {
            "add"
        };
        t.changes.push(format!("{verb} {}", spec.name));
        let iface = pb::Interface {
            id,
            spec: Some(spec.clone()),
            kind: kind as i32,
            mac: mac.unwrap_or_else(|| format!("02:00:00:00:00:{:02x}", id % 256)),
            ifindex: if kind == pb::InterfaceKind::Tap {
                id + 1
            } else {
                0
            },
            up: kind == pb::InterfaceKind::Tap,
            ..Default::default()
        };
        t.interfaces.insert(spec.name, iface.clone());
        Ok(Response::new(iface))
    }

    async fn delete_interface(
        &self,
        req: Request<pb::DeleteInterfaceRequest>,
    ) -> Result<Response<pb::DeleteInterfaceResponse>, Status> {
        let name = req.into_inner().name;
        let mut t = self.0.lock().unwrap();
        let existed = t.interfaces.remove(&name).is_some();
        if let Some(listener) = t.memif_sockets.remove(&name) {
            if let Ok(addr) = listener.local_addr() {
                if let Some(path) = addr.as_pathname() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        if existed {
            t.changes.push(format!("delete {name}"));
        }
        // The attachment goes with its interface.
        if let Some(policy) = &mut t.policy {
            policy.endpoints.remove(&name);
        }
        Ok(Response::new(pb::DeleteInterfaceResponse { existed }))
    }

    async fn list_interfaces(
        &self,
        _: Request<pb::ListInterfacesRequest>,
    ) -> Result<Response<pb::ListInterfacesResponse>, Status> {
        let t = self.0.lock().unwrap();
        Ok(Response::new(pb::ListInterfacesResponse {
            interfaces: t.interfaces.values().cloned().collect(),
        }))
    }
}

#[tonic::async_trait]
impl Routes for Service {
    async fn add_route(
        &self,
        req: Request<pb::AddRouteRequest>,
    ) -> Result<Response<pb::AddRouteResponse>, Status> {
        let mut route = req
            .into_inner()
            .route
            .ok_or_else(|| Status::invalid_argument("route: required"))?;
        route.origin = "api".into();
        let mut t = self.0.lock().unwrap();
        t.changes.push(format!("add-route {}", route.prefix));
        t.routes.insert(route.prefix.clone(), route);
        Ok(Response::new(pb::AddRouteResponse {}))
    }

    async fn delete_route(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        let prefix = req.into_inner().prefix;
        let mut t = self.0.lock().unwrap();
        let existed = t.routes.remove(&prefix).is_some();
        if existed {
            t.changes.push(format!("delete-route {prefix}"));
        }
        Ok(Response::new(pb::DeleteRouteResponse { existed }))
    }

    async fn list_routes(
        &self,
        _: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        let t = self.0.lock().unwrap();
        Ok(Response::new(pb::ListRoutesResponse {
            routes: t.routes.values().cloned().collect(),
        }))
    }
}

impl Service {
    fn apply_batch(&self, batch: pb::PolicyBatch) -> Result<Response<pb::PolicyReply>, Status> {
        let mut guard = self.0.lock().unwrap();
        let t = &mut *guard;
        let Some(policy) = &mut t.policy else {
            return Err(Status::unimplemented("no Policy service"));
        };
        let mut next = policy.apply(&batch, &t.interfaces)?;
        next.generation = policy.generation + 1;
        next.batches = std::mem::take(&mut policy.batches);
        next.batches.push(batch.clone());
        next.refuse_policy = policy.refuse_policy.take();
        *policy = next;
        let endpoints: Vec<&str> = batch
            .set_endpoints
            .iter()
            .map(|e| e.interface.as_str())
            .collect();
        t.changes.push(format!("policy [{}]", endpoints.join(" ")));
        Ok(Response::new(pb::PolicyReply {
            generation: t.policy.as_ref().unwrap().generation,
        }))
    }
}

#[tonic::async_trait]
impl Policy for Service {
    async fn set_ip_set(
        &self,
        req: Request<pb::IpSet>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            set_ip_sets: vec![req.into_inner()],
            ..Default::default()
        })
    }

    async fn update_ip_set(
        &self,
        req: Request<pb::IpSetDelta>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            update_ip_sets: vec![req.into_inner()],
            ..Default::default()
        })
    }

    async fn delete_ip_set(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            delete_ip_sets: vec![req.into_inner().name],
            ..Default::default()
        })
    }

    async fn set_policy(
        &self,
        req: Request<pb::PolicySpec>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            set_policies: vec![req.into_inner()],
            ..Default::default()
        })
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            delete_policies: vec![req.into_inner().name],
            ..Default::default()
        })
    }

    async fn set_endpoint_policy(
        &self,
        req: Request<pb::EndpointPolicy>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(pb::PolicyBatch {
            set_endpoints: vec![req.into_inner()],
            ..Default::default()
        })
    }

    async fn apply(
        &self,
        req: Request<pb::PolicyBatch>,
    ) -> Result<Response<pb::PolicyReply>, Status> {
        self.apply_batch(req.into_inner())
    }

    async fn get_policy_state(
        &self,
        req: Request<pb::GetPolicyStateRequest>,
    ) -> Result<Response<pb::PolicyState>, Status> {
        let t = self.0.lock().unwrap();
        let Some(policy) = &t.policy else {
            return Err(Status::unimplemented("no Policy service"));
        };
        let mut state = policy.state();
        let interface = req.into_inner().interface;
        if !interface.is_empty() {
            state.endpoints.retain(|e| e.interface == interface);
            let used: BTreeSet<&String> = state
                .endpoints
                .iter()
                .flat_map(|e| e.ingress.iter().chain(&e.egress))
                .flat_map(|t| &t.policies)
                .collect();
            state.policies.retain(|p| used.contains(&p.name));
            let sets: BTreeSet<String> = state
                .policies
                .iter()
                .flat_map(|p| p.ingress.iter().chain(&p.egress))
                .flat_map(|r| r.source.iter().chain(&r.destination))
                .flat_map(|m| m.ip_sets.iter().chain(&m.not_ip_sets))
                .cloned()
                .collect();
            state.ip_sets.retain(|s| sets.contains(&s.name));
        }
        Ok(Response::new(state))
    }

    async fn list_flows(
        &self,
        _: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        Ok(Response::new(pb::ListFlowsResponse::default()))
    }

    async fn list_policy_log(
        &self,
        _: Request<pb::ListPolicyLogRequest>,
    ) -> Result<Response<pb::ListPolicyLogResponse>, Status> {
        Ok(Response::new(pb::ListPolicyLogResponse::default()))
    }
}

/// A fake dataplane serving on a unix socket until stopped.
#[derive(Debug)]
pub struct FakeDataplane {
    pub table: Arc<Mutex<Table>>,
    pub socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeDataplane {
    /// Starts with an empty table (as a freshly started dataplane).
    pub async fn start(socket: &Path) -> Self {
        Self::start_with(socket, Table::default()).await
    }

    /// Starts with `table`, serving the Policy service (empty unless
    /// `table.policy` says otherwise).
    pub async fn start_with(socket: &Path, mut table: Table) -> Self {
        table.policy.get_or_insert_with(PolicyTable::default);
        Self::launch(socket, table).await
    }

    /// Starts without the Policy service (UNIMPLEMENTED).
    pub async fn start_without_policy(socket: &Path) -> Self {
        Self::launch(socket, Table::default()).await
    }

    async fn launch(socket: &Path, table: Table) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let with_policy = table.policy.is_some();
        let table = Arc::new(Mutex::new(table));
        let service = Service(Arc::clone(&table));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(InterfacesServer::new(service.clone()))
                .add_service(RoutesServer::new(service.clone()))
                .add_optional_service(with_policy.then(|| PolicyServer::new(service)))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeDataplane {
            table,
            socket: socket.to_owned(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving (connections close) and removes the socket; returns
    /// the table as it was.
    pub async fn stop(mut self) -> Table {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = std::fs::remove_file(&self.socket);
        std::mem::take(&mut *self.table.lock().unwrap())
    }

    pub fn interface_names(&self) -> Vec<String> {
        self.table
            .lock()
            .unwrap()
            .interfaces
            .keys()
            .cloned()
            .collect()
    }

    pub fn changes(&self) -> Vec<String> {
        self.table.lock().unwrap().changes.clone()
    }

    pub fn interface(&self, name: &str) -> Option<pb::Interface> {
        self.table.lock().unwrap().interfaces.get(name).cloned()
    }

    /// The Policy service's state (panics if the fake has none).
    pub fn policy_state(&self) -> pb::PolicyState {
        self.table.lock().unwrap().policy.as_ref().unwrap().state()
    }

    /// The policy batches applied so far.
    pub fn policy_batches(&self) -> Vec<pb::PolicyBatch> {
        let t = self.table.lock().unwrap();
        t.policy.as_ref().unwrap().batches.clone()
    }
}

/// Waits (up to 20 s) until `cond` holds.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
