//! A gRPC client for the dataplane's API on its unix socket, shared by
//! `caracalctl` and the agent's sync loop.
//!
//! gRPC over a unix socket still speaks HTTP/2 with an `http://` URI; the
//! URI's authority is only a placeholder here, since the connector ignores
//! it and dials the socket instead.

use std::path::{Path, PathBuf};

use caracal_proto::dataplane::interfaces_client::InterfacesClient;
use caracal_proto::dataplane::policy_client::PolicyClient;
use caracal_proto::dataplane::routes_client::RoutesClient;
use caracal_proto::dataplane::stats_client::StatsClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where `caracal-dataplane` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/caracal/dataplane.sock";

/// The dataplane could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the dataplane at {}", path.display())]
pub struct ConnectError {
    path: PathBuf,
    #[source]
    source: tonic::transport::Error,
}

impl ConnectError {
    /// The socket that was dialled.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens an HTTP/2 channel to the dataplane's API socket. Fails at once if
/// nothing listens there; a channel that later loses its connection
/// redials the same socket on the next call.
pub async fn connect(socket: &Path) -> Result<Channel, ConnectError> {
    let path = socket.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    Endpoint::from_static("http://dataplane.local")
        .connect_with_connector(connector)
        .await
        .map_err(|source| ConnectError {
            path: socket.to_owned(),
            source,
        })
}

/// Clients for every dataplane service over one channel. Cloning is cheap
/// and clones share the connection.
#[derive(Debug, Clone)]
pub struct DataplaneClient {
    pub interfaces: InterfacesClient<Channel>,
    pub routes: RoutesClient<Channel>,
    pub stats: StatsClient<Channel>,
    pub policy: PolicyClient<Channel>,
}

impl DataplaneClient {
    pub fn new(channel: Channel) -> Self {
        DataplaneClient {
            interfaces: InterfacesClient::new(channel.clone()),
            routes: RoutesClient::new(channel.clone()),
            stats: StatsClient::new(channel.clone()),
            policy: PolicyClient::new(channel),
        }
    }

    /// [`connect`]s to `socket` and wraps the channel.
    pub async fn connect(socket: &Path) -> Result<Self, ConnectError> {
        connect(socket).await.map(DataplaneClient::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caracal_proto::dataplane as pb;
    use caracal_proto::dataplane::stats_server::{Stats, StatsServer};
    use tokio_stream::wrappers::UnixListenerStream;

    /// A Stats service that reports a fixed pool size.
    #[derive(Debug)]
    struct FixedStats;

    #[tonic::async_trait]
    impl Stats for FixedStats {
        async fn get_counters(
            &self,
            _: tonic::Request<pb::GetCountersRequest>,
        ) -> Result<tonic::Response<pb::Counters>, tonic::Status> {
            Ok(tonic::Response::new(pb::Counters {
                buffers: Some(pb::BufferPoolStats {
                    total: 42,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }
    }

    fn scratch_socket(tag: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("caracal-client-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[tokio::test]
    async fn calls_a_server_on_a_unix_socket() {
        let path = scratch_socket("ok");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StatsServer::new(FixedStats))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );

        let mut client = DataplaneClient::connect(&path).await.unwrap();
        let counters = client
            .stats
            .get_counters(pb::GetCountersRequest {})
            .await
            .unwrap();
        assert_eq!(counters.into_inner().buffers.unwrap().total, 42);

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn names_the_socket_when_nobody_listens() {
        let path = scratch_socket("absent");
        let err = connect(&path).await.unwrap_err();
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}
