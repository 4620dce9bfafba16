//! The dataplane's gRPC API (`proto/proto/dataplane.proto`), served on a
//! unix socket.
//!
//! [`convert`] turns requests into the engine's [`model`](crate::model)
//! types (validating them) and answers back into messages; [`service`]
//! implements the services over an [`Engine`]; [`socket`] owns the socket
//! file. [`serve`] puts them together for the binary.

pub mod convert;
pub mod service;
mod socket;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use caracal_proto::dataplane::interfaces_server::InterfacesServer;
use caracal_proto::dataplane::routes_server::RoutesServer;
use caracal_proto::dataplane::stats_server::StatsServer;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tracing::info;

use crate::engine::Engine;
pub use service::DataplaneApi;

/// Serves the API on the unix socket `socket` until `shutdown` completes,
/// then lets in-flight calls finish and returns.
///
/// The socket's directory is created if missing and a stale socket file
/// replaced; the socket has mode 0600 before the first connection is
/// accepted, and is removed when this returns, whether it succeeded or not.
pub async fn serve(
    engine: Arc<Engine>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (listener, socket_file) = socket::bind(socket)?;
    info!(socket = %socket.display(), "API listening");

    let api = DataplaneApi::new(engine);
    let served = Server::builder()
        .add_service(InterfacesServer::new(api.clone()))
        .add_service(RoutesServer::new(api.clone()))
        .add_service(StatsServer::new(api))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .with_context(|| format!("serving the API on {}", socket.display()));

    drop(socket_file);
    info!(socket = %socket.display(), "API stopped");
    served
}

#[cfg(test)]
mod tests {
    //! The API end to end: a real engine (one unpinned worker, no
    //! interfaces, so no privileges needed) served on a scratch socket and
    //! called through the generated clients.

    use super::*;
    use crate::config::{EngineConfig, WorkerMode};
    use caracal_proto::dataplane as pb;
    use caracal_proto::dataplane::interfaces_client::InterfacesClient;
    use caracal_proto::dataplane::routes_client::RoutesClient;
    use caracal_proto::dataplane::stats_client::StatsClient;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use tonic::transport::{Channel, Endpoint, Uri};
    use tonic::Code;

    async fn connect(path: PathBuf) -> Channel {
        Endpoint::from_static("http://dataplane.local")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_the_engine_on_a_private_socket() {
        let dir = std::env::temp_dir().join(format!("caracal-api-e2e-{}", std::process::id()));
        let path = dir.join("dataplane.sock");
        let config = EngineConfig {
            workers: vec![None],
            mode: WorkerMode::Adaptive,
            buffers: 1024,
            hugepages: false,
        };
        let engine = Engine::start(&config).unwrap();

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let (engine, path) = (Arc::clone(&engine), path.clone());
            async move {
                serve(engine, &path, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        while !path.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let channel = connect(path.clone()).await;
        let mut interfaces = InterfacesClient::new(channel.clone());
        let mut routes = RoutesClient::new(channel.clone());
        let mut stats = StatsClient::new(channel);

        let list = interfaces
            .list_interfaces(pb::ListInterfacesRequest {})
            .await
            .unwrap();
        assert!(list.into_inner().interfaces.is_empty());

        let counters = stats
            .get_counters(pb::GetCountersRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(counters.workers.len(), 1);
        assert_eq!(counters.workers[0].core, -1);
        let buffers = counters.buffers.unwrap();
        assert_eq!(buffers.total, 1024);
        assert!(!buffers.hugepages);

        let bad = pb::AddInterfaceRequest {
            spec: Some(pb::InterfaceSpec {
                name: "p".into(),
                addresses: vec!["10.0.0.300/32".into()],
                ..Default::default()
            }),
        };
        let status = interfaces.add_interface(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("spec.addresses[0]: "),
            "{status:?}"
        );

        let via_nowhere = pb::AddRouteRequest {
            route: Some(pb::Route {
                prefix: "10.66.0.0/16".into(),
                paths: vec![pb::Path {
                    interface: "nowhere".into(),
                    gateway: String::new(),
                }],
                origin: String::new(),
            }),
        };
        let status = routes.add_route(via_nowhere).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");

        let deleted = routes
            .delete_route(pb::DeleteRouteRequest {
                prefix: "10.66.0.0/16".into(),
            })
            .await
            .unwrap();
        assert!(!deleted.into_inner().existed);
        let deleted = interfaces
            .delete_interface(pb::DeleteInterfaceRequest {
                name: "nowhere".into(),
            })
            .await
            .unwrap();
        assert!(!deleted.into_inner().existed);

        drop((interfaces, routes, stats));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!path.exists());
        engine.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
