//! Shared scaffolding for the agent's unprivileged tests: a fake
//! dataplane (the dataplane's Interfaces and Routes services over an
//! in-memory table, on a unix socket) that records every change asked of
//! it, and small waiting helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_proto::dataplane as pb;
use caracal_proto::dataplane::interfaces_server::{Interfaces, InterfacesServer};
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
        let Some(pb::interface_spec::Kind::Tap(tap)) = &spec.kind else {
            return Err(Status::invalid_argument("spec.kind: only taps"));
        };
        let mut t = self.0.lock().unwrap();
        if let Some(bad) = &t.refuse_netns {
            if tap.netns.contains(bad.as_str()) {
                return Err(Status::failed_precondition(format!(
                    "netns {:?} does not exist",
                    tap.netns
                )));
            }
        }
        if let Some(existing) = t.interfaces.get(&spec.name) {
            if existing.spec.as_ref() == Some(&spec) {
                return Ok(Response::new(existing.clone()));
            }
        }
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
            kind: pb::InterfaceKind::Tap as i32,
            mac: format!("02:00:00:00:00:{:02x}", id % 256),
            ifindex: id + 1,
            up: true,
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
        if existed {
            t.changes.push(format!("delete {name}"));
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

    pub async fn start_with(socket: &Path, table: Table) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let table = Arc::new(Mutex::new(table));
        let service = Service(Arc::clone(&table));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(InterfacesServer::new(service.clone()))
                .add_service(RoutesServer::new(service))
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
}

/// Waits (up to 20 s) until `cond` holds.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
