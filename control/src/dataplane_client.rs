//! A gRPC client for the dataplane's API on its unix socket, shared by
//! `caracalctl` and the agent's sync loop.
//!
//! [`runtime_delta`] turns two `GetRuntime` answers into what each worker
//! did in between (a benchmark's cycles per packet).
//!
//! gRPC over a unix socket still speaks HTTP/2 with an `http://` URI; the
//! URI's authority is only a placeholder here, since the connector ignores
//! it and dials the socket instead.

use std::path::{Path, PathBuf};

use caracal_proto::dataplane as pb;
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

    /// `GetRuntime`: per worker and per node, raw totals since the start
    /// or the last clear. Compare two with [`runtime_delta`].
    pub async fn runtime(&mut self) -> Result<pb::Runtime, tonic::Status> {
        let reply = self.stats.get_runtime(pb::GetRuntimeRequest {}).await?;
        Ok(reply.into_inner())
    }

    /// `ClearRuntime`: starts `GetRuntime`'s totals from zero.
    pub async fn clear_runtime(&mut self) -> Result<(), tonic::Status> {
        self.stats
            .clear_runtime(pb::ClearRuntimeRequest {})
            .await
            .map(drop)
    }
}

/// What one worker did between two `GetRuntime` answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRuntimeDelta {
    pub worker: u32,
    /// Cycle counter rate, per second.
    pub tsc_hz: u64,
    pub loops: u64,
    pub idle_loops: u64,
    /// Cycles of every loop, and of those that received nothing.
    pub clocks: u64,
    pub idle_clocks: u64,
    /// Every node, `port-input` and `port-output` included, as differences.
    pub nodes: Vec<pb::NodeRuntime>,
}

impl WorkerRuntimeDelta {
    /// The node named `name` (`port-input`, `l2-xconnect`, ...).
    pub fn node(&self, name: &str) -> Option<&pb::NodeRuntime> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Packets received (`port-input` vectors).
    pub fn rx_packets(&self) -> u64 {
        self.node("port-input").map_or(0, |n| n.vectors)
    }

    /// Cycles of the loops that received something.
    pub fn busy_clocks(&self) -> u64 {
        self.clocks.saturating_sub(self.idle_clocks)
    }

    /// The worker's cost per received packet: busy cycles over packets
    /// received (rx, graph, tx and loop overhead together). `None` when
    /// nothing was received.
    pub fn cycles_per_packet(&self) -> Option<f64> {
        let packets = self.rx_packets();
        (packets > 0).then(|| self.busy_clocks() as f64 / packets as f64)
    }
}

/// Per worker of `after`, what it counted since `before` (workers matched
/// by id, nodes by name; a counter that went down, after a clear, counts
/// from zero).
pub fn runtime_delta(before: &pb::Runtime, after: &pb::Runtime) -> Vec<WorkerRuntimeDelta> {
    after
        .workers
        .iter()
        .map(|w| {
            let b = before.workers.iter().find(|b| b.worker == w.worker);
            let d = |now: u64, then: Option<u64>| match then {
                Some(t) if t <= now => now - t,
                _ => now,
            };
            WorkerRuntimeDelta {
                worker: w.worker,
                tsc_hz: after.tsc_hz,
                loops: d(w.loops, b.map(|b| b.loops)),
                idle_loops: d(w.idle_loops, b.map(|b| b.idle_loops)),
                clocks: d(w.clocks, b.map(|b| b.clocks)),
                idle_clocks: d(w.idle_clocks, b.map(|b| b.idle_clocks)),
                nodes: w
                    .nodes
                    .iter()
                    .map(|n| {
                        let m = b.and_then(|b| b.nodes.iter().find(|m| m.name == n.name));
                        pb::NodeRuntime {
                            name: n.name.clone(),
                            calls: d(n.calls, m.map(|m| m.calls)),
                            vectors: d(n.vectors, m.map(|m| m.vectors)),
                            clocks: d(n.clocks, m.map(|m| m.clocks)),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
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

        async fn get_runtime(
            &self,
            _: tonic::Request<pb::GetRuntimeRequest>,
        ) -> Result<tonic::Response<pb::Runtime>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn clear_runtime(
            &self,
            _: tonic::Request<pb::ClearRuntimeRequest>,
        ) -> Result<tonic::Response<pb::ClearRuntimeResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
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

    #[test]
    fn runtime_delta_gives_cycles_per_packet() {
        let node = |name: &str, calls, vectors, clocks| pb::NodeRuntime {
            name: name.into(),
            calls,
            vectors,
            clocks,
        };
        let at = |loops, clocks, idle_clocks, rx, xc| pb::Runtime {
            tsc_hz: 2_000_000_000,
            workers: vec![pb::WorkerRuntime {
                worker: 0,
                core: 1,
                loops,
                idle_loops: 0,
                clocks,
                idle_clocks,
                nodes: vec![
                    node("port-input", loops, rx, 0),
                    node("l2-xconnect", 1, xc, 0),
                ],
            }],
        };
        let before = at(10, 1_000, 400, 100, 100);
        let after = at(20, 11_000, 1_400, 1_100, 1_100);
        let d = &runtime_delta(&before, &after)[0];
        assert_eq!(d.busy_clocks(), 9_000);
        assert_eq!(d.rx_packets(), 1_000);
        assert_eq!(d.cycles_per_packet(), Some(9.0));
        assert_eq!(d.node("l2-xconnect").unwrap().vectors, 1_000);
        // After a clear the totals restart: the new ones are the delta.
        let cleared = at(5, 500, 0, 50, 50);
        assert_eq!(runtime_delta(&after, &cleared)[0].rx_packets(), 50);
        assert_eq!(runtime_delta(&before, &before)[0].cycles_per_packet(), None);
    }

    #[tokio::test]
    async fn names_the_socket_when_nobody_listens() {
        let path = scratch_socket("absent");
        let err = connect(&path).await.unwrap_err();
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}
