//! A stand-in for `caracal-agent`'s `Cni` service: a tonic server on a
//! scratch unix socket, run on its own thread, that records every request
//! and answers like the agent would for a dual-stack node.
//!
//! Pod names steer it: `memif-*` pods get a memif interface; `invalid-*`,
//! `exhausted-*` and `flaky-*` pods fail ADD with `InvalidArgument`,
//! `ResourceExhausted` and `Unavailable`; `broken-*` pods get an address
//! without a prefix length, which the plugin must refuse and undo.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use caracal_proto::agent as pb;
use caracal_proto::agent::cni_server::{Cni, CniServer};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The addresses every pod gets.
pub const POD_IPS: [&str; 2] = ["10.65.0.5/32", "fd00:65::5/128"];
pub const POD_MAC: &str = "02:ca:ca:00:00:05";

/// One request as the agent received it.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Add(pb::CniRequest),
    Del(pb::CniRequest),
    Check(pb::CniRequest),
    Gc(pb::GcRequest),
    Status,
}

#[derive(Debug, Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    /// (container id, ifname) → addresses.
    attached: Mutex<BTreeMap<(String, String), Vec<String>>>,
    /// `None` when ready, else why not.
    not_ready: Option<String>,
}

impl State {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<State>);

#[tonic::async_trait]
impl Cni for Service {
    async fn add(&self, req: Request<pb::CniRequest>) -> Result<Response<pb::CniResult>, Status> {
        let req = req.into_inner();
        self.0.record(Call::Add(req.clone()));
        let pod = req.pod_name.as_str();
        if pod.starts_with("invalid") {
            return Err(Status::invalid_argument("unknown network"));
        }
        if pod.starts_with("exhausted") {
            return Err(Status::resource_exhausted("pool 10.65.0.0/16 is full"));
        }
        if pod.starts_with("flaky") {
            return Err(Status::unavailable("datastore not synced yet"));
        }
        let (kind, socket_path, sandbox) = if pod.starts_with("memif") {
            let socket = format!("/run/caracal/memif/{}-{pod}.sock", req.pod_namespace);
            ("memif", socket, String::new())
        } else {
            ("tap", String::new(), req.netns.clone())
        };
        self.0.attached.lock().unwrap().insert(
            (req.container_id.clone(), req.ifname.clone()),
            POD_IPS.map(String::from).to_vec(),
        );
        let mut ips: Vec<pb::CniIp> = POD_IPS
            .iter()
            .map(|a| pb::CniIp {
                address: (*a).into(),
                gateway: String::new(),
            })
            .collect();
        if pod.starts_with("broken") {
            ips[0].address = "10.65.0.5".into();
        }
        Ok(Response::new(pb::CniResult {
            interface_name: req.ifname.clone(),
            mac: POD_MAC.into(),
            sandbox,
            interface_kind: kind.into(),
            socket_path,
            mtu: if req.mtu == 0 { 1500 } else { req.mtu },
            ips,
            routes: vec![
                pb::CniRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: "169.254.1.1".into(),
                },
                pb::CniRoute {
                    dst: "::/0".into(),
                    gw: "fe80::ecee:eeff:feee:eeee".into(),
                },
            ],
        }))
    }

    async fn del(&self, req: Request<pb::CniRequest>) -> Result<Response<pb::DelResponse>, Status> {
        let req = req.into_inner();
        self.0.record(Call::Del(req.clone()));
        self.0
            .attached
            .lock()
            .unwrap()
            .remove(&(req.container_id, req.ifname));
        Ok(Response::new(pb::DelResponse {}))
    }

    async fn check(
        &self,
        req: Request<pb::CniRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let req = req.into_inner();
        self.0.record(Call::Check(req.clone()));
        let attached = self.0.attached.lock().unwrap();
        match attached.get(&(req.container_id.clone(), req.ifname.clone())) {
            None => Err(Status::not_found(format!(
                "no attachment {}/{}",
                req.container_id, req.ifname
            ))),
            Some(ips) if *ips != req.prev_ips => Err(Status::failed_precondition(format!(
                "addresses {ips:?}, prevResult says {:?}",
                req.prev_ips
            ))),
            Some(_) => Ok(Response::new(pb::CheckResponse {})),
        }
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        let req = req.into_inner();
        self.0.record(Call::Gc(req.clone()));
        let mut released = Vec::new();
        self.0.attached.lock().unwrap().retain(|(id, ifname), _| {
            let valid = req
                .valid_attachments
                .iter()
                .any(|v| v.container_id == *id && v.ifname == *ifname);
            if !valid {
                released.push(pb::Attachment {
                    container_id: id.clone(),
                    ifname: ifname.clone(),
                });
            }
            valid
        });
        Ok(Response::new(pb::GcResponse { released }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.0.record(Call::Status);
        Ok(Response::new(pb::StatusResponse {
            ready: self.0.not_ready.is_none(),
            message: self.0.not_ready.clone().unwrap_or_default(),
        }))
    }
}

/// A running fake agent; stops and removes its socket when dropped.
#[derive(Debug)]
pub struct FakeAgent {
    pub socket: PathBuf,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// An agent ready to serve ADDs.
    pub fn start() -> FakeAgent {
        FakeAgent::with_state(State::default())
    }

    /// An agent that answers STATUS with "not ready" and `why`.
    pub fn not_ready(why: &str) -> FakeAgent {
        FakeAgent::with_state(State {
            not_ready: Some(why.into()),
            ..State::default()
        })
    }

    fn with_state(state: State) -> FakeAgent {
        let socket = scratch_socket("agent");
        // Bound before start returns, so the plugin never races the server.
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(state);
        let service = Service(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(CniServer::new(service))
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeAgent {
            socket,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The attachments the agent holds, as (container id, ifname).
    pub fn attachments(&self) -> Vec<(String, String)> {
        self.state
            .attached
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A fresh socket path no one listens on.
pub fn scratch_socket(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("caracal-cni-{tag}-{}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}
