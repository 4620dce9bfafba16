//! Putting the agent together: the store and its source, the endpoints,
//! the sync loop, IPAM, and the gRPC services on the agent's socket —
//! until told to stop, when it stops serving (in-flight requests get a
//! grace period), stops its tasks and removes the socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_proto::agent::agent_server::AgentServer;
use caracal_proto::agent::cni_server::CniServer;
use ipnet::IpNet;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::{debug, info, warn};

use super::calc::{self, Inputs};
use super::cni_server::{CniService, CniTimeouts};
use super::context::Context;
use super::datastore::dir::DirSource;
use super::datastore::kube::{KubeSource, KubeSourceError};
use super::datastore::{DatastoreSpec, Store};
use super::endpoints::{EndpointError, EndpointRegistry};
use super::memif;
use super::pools::default_pool;
use super::revision::Revision;
use super::socket::{self, SocketError};
use super::status::AgentService;
use super::sync::{self, DesiredFn, SyncConfig};
use crate::ipam::{FileStore, Ipam, IpamConfig, IpamError, IpamStore, KubeStore};

/// How long in-flight requests may run on after the agent is told to
/// stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub datastore: DatastoreSpec,
    /// This node's name.
    pub node: String,
    /// Where endpoints (`endpoints/`) and, in standalone mode, IPAM
    /// (`ipam/`) keep their state.
    pub state_dir: PathBuf,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The dataplane's API socket.
    pub dataplane_socket: PathBuf,
    /// Standalone mode's pools when the folder defines none; `None` for
    /// no default pool of that family.
    pub default_ipv4_pool: Option<IpNet>,
    pub default_ipv6_pool: Option<IpNet>,
    /// Pod MTU when the CNI configuration sets none, bytes.
    pub mtu: u16,
    /// Where memif pods' sockets go, a folder per pod (see
    /// [`memif`]).
    pub memif_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("manifest folder {}: {reason}", path.display())]
    ManifestDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Kube(#[from] KubeSourceError),
    #[error(transparent)]
    Endpoints(#[from] EndpointError),
    #[error("IPAM: {0}")]
    Ipam(#[from] IpamError),
    #[error("agent socket: {0}")]
    Socket(#[from] SocketError),
    #[error("serving the agent API: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let revision = Revision::new();
    let store = Store::new(revision.clone());
    let endpoints = Arc::new(EndpointRegistry::open(
        config.state_dir.join("endpoints"),
        revision.clone(),
    )?);
    info!(node = %config.node, datastore = %config.datastore,
        endpoints = endpoints.snapshot().len(), "starting");
    // The folders of the memif sockets the dataplane is to serve (gone
    // if /run was emptied by a reboot, say).
    for ep in endpoints.snapshot().values() {
        if let Some(socket) = &ep.socket_path {
            if let Err(e) = memif::create_folder(Path::new(socket)) {
                warn!(key = %ep.key(), error = %e, "cannot make the memif socket folder");
            }
        }
    }

    // Bind first: a second agent on the same socket fails here, before it
    // touches the datastore or the dataplane.
    let (listener, socket_file) = socket::bind(&config.socket)?;

    let (source, kube_client) = match &config.datastore {
        DatastoreSpec::Dir(path) => {
            check_manifest_dir(path)?;
            (DirSource::new(path).start(store.clone()).await, None)
        }
        DatastoreSpec::Kubernetes => {
            let source = KubeSource::infer().await?;
            let client = source.client().clone();
            (source.start(store.clone()), Some(client))
        }
    };

    let (sync, sync_task) = sync::spawn(
        SyncConfig::new(&config.dataplane_socket),
        desired_fn(store.clone(), Arc::clone(&endpoints)),
        revision.subscribe(),
    );

    let default_pools = match config.datastore {
        DatastoreSpec::Dir(_) => [config.default_ipv4_pool, config.default_ipv6_pool]
            .into_iter()
            .flatten()
            .map(default_pool)
            .collect(),
        DatastoreSpec::Kubernetes => Vec::new(),
    };
    let ctx = Arc::new(Context {
        node: config.node.clone(),
        store,
        source,
        endpoints,
        sync,
        default_pools,
        default_mtu: config.mtu,
        memif_dir: config.memif_dir.clone(),
    });

    let served = match kube_client {
        None => {
            let store = FileStore::open(config.state_dir.join("ipam"))?;
            serve(ctx, store, listener, &config.socket, shutdown).await
        }
        Some(client) => {
            serve(
                ctx,
                KubeStore::new(client),
                listener,
                &config.socket,
                shutdown,
            )
            .await
        }
    };
    sync_task.abort();
    drop(socket_file);
    info!("stopped");
    served
}

/// The sync loop's view of the desired state: nothing until the datastore
/// has been listed (so that a restarted agent does not program a partial
/// picture), then the calculation over the latest snapshots, updated from
/// the previous one.
fn desired_fn(store: Store, endpoints: Arc<EndpointRegistry>) -> DesiredFn {
    let calculator = Mutex::new(calc::Calculator::new());
    Arc::new(move || {
        if !store.is_synced() {
            return None;
        }
        // The revision before the snapshots: see `revision`.
        let revision = store.revision().current();
        let started = std::time::Instant::now();
        let objects = store.snapshot();
        let endpoints = endpoints.snapshot();
        let state = calculator
            .lock()
            .expect("calculator poisoned")
            .desired_state(Inputs {
                objects: &objects,
                endpoints: &endpoints,
            });
        debug!(
            revision,
            took_us = started.elapsed().as_micros() as u64,
            "desired state calculated"
        );
        Some((revision, state))
    })
}

fn check_manifest_dir(path: &Path) -> Result<(), AgentError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(AgentError::ManifestDir {
            path: path.to_owned(),
            reason: "not a folder".into(),
        }),
        Err(e) => Err(AgentError::ManifestDir {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Serves both services on `listener` until `shutdown`, then gives
/// in-flight requests [`SHUTDOWN_GRACE`] to finish.
async fn serve<S: IpamStore + 'static>(
    ctx: Arc<Context>,
    ipam_store: S,
    listener: tokio::net::UnixListener,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let ipam = Arc::new(Ipam::new(ipam_store, IpamConfig::default()));
    let cni = CniService::new(Arc::clone(&ctx), ipam, CniTimeouts::default());
    let agent = AgentService::new(ctx);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tonic::transport::Server::builder()
        .add_service(CniServer::new(cni))
        .add_service(AgentServer::new(agent))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        });
    let mut server = std::pin::pin!(server);
    info!(socket = %path.display(), "serving");
    tokio::select! {
        served = &mut server => return served.map_err(AgentError::from),
        () = shutdown => {}
    }
    info!("stopping");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(served) => served.map_err(AgentError::from),
        Err(_) => {
            warn!("requests still running after {SHUTDOWN_GRACE:?}; cut short");
            Ok(())
        }
    }
}
