//! The dataplane's gRPC API (`proto/proto/dataplane.proto`), served on a
//! unix socket.
//!
//! [`convert`] turns requests into the engine's [`model`](crate::model)
//! types (validating them) and answers back into messages, [`policy`]
//! does the same for the policy service's messages; [`service`]
//! implements the services over an [`Engine`]; [`socket`] owns the socket
//! file. [`serve`] puts them together for the binary.

pub mod convert;
pub mod policy;
pub mod service;
mod socket;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use caracal_proto::dataplane::interfaces_server::InterfacesServer;
use caracal_proto::dataplane::policy_server::PolicyServer;
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
        .add_service(PolicyServer::new(api.clone()))
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
    use crate::config::EngineConfig;
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
        let config = EngineConfig::small();
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

        let runtime = stats
            .get_runtime(pb::GetRuntimeRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(runtime.tsc_hz > 0);
        assert_eq!(runtime.workers.len(), 1);
        let names: Vec<&str> = runtime.workers[0]
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names.first(), Some(&"port-input"));
        assert_eq!(names.last(), Some(&"port-output"));
        assert!(names.contains(&"l2-xconnect") && names.contains(&"interface-output"));
        stats
            .clear_runtime(pb::ClearRuntimeRequest {})
            .await
            .unwrap();

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_policy() {
        use caracal_proto::dataplane::policy_client::PolicyClient;

        let dir = std::env::temp_dir().join(format!("caracal-api-policy-{}", std::process::id()));
        let path = dir.join("dataplane.sock");
        let config = EngineConfig::small();
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
        let channel = connect(path.clone()).await;
        let mut interfaces = InterfacesClient::new(channel.clone());
        let mut policy = PolicyClient::new(channel);

        // A memif server needs no privilege: an endpoint to attach to.
        let memif = pb::InterfaceSpec {
            name: "ns/pod".into(),
            addresses: vec!["10.65.0.9/32".into()],
            kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
                socket: format!("@caracal-api-policy-{}", std::process::id()),
                ..Default::default()
            })),
            policy_enforced: true,
            ..Default::default()
        };
        let created = interfaces
            .add_interface(pb::AddInterfaceRequest {
                spec: Some(memif.clone()),
            })
            .await
            .unwrap()
            .into_inner();

        let set = pb::IpSet {
            name: "peers".into(),
            members: vec!["10.65.0.1/32".into(), "10.0.0.0/8".into()],
        };
        let rule = pb::Rule {
            action: pb::Action::Allow as i32,
            protocol: Some(6),
            source: Some(pb::EndpointMatch {
                ip_sets: vec!["peers".into()],
                ..Default::default()
            }),
            destination: Some(pb::EndpointMatch {
                ports: vec![pb::PortRange {
                    first: 80,
                    last: 80,
                }],
                ..Default::default()
            }),
            id: "allow-web".into(),
            ..Default::default()
        };
        let web = pb::PolicySpec {
            name: "web".into(),
            ingress: vec![rule],
            egress: vec![],
        };
        let attach = |interface: &str| pb::EndpointPolicy {
            interface: interface.into(),
            ingress: vec![pb::Tier {
                name: "default".into(),
                policies: vec!["web".into()],
                end_action: pb::Action::Deny as i32,
            }],
            egress: vec![],
            ingress_default: pb::Action::Allow as i32,
            egress_default: pb::Action::Allow as i32,
        };

        // References must resolve; nothing of a refused batch stays.
        let refused = policy
            .apply(pb::PolicyBatch {
                set_ip_sets: vec![set.clone()],
                set_policies: vec![web.clone()],
                set_endpoints: vec![attach("ns/nobody")],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(
            refused.message(),
            "set_endpoints[0].interface: no interface \"ns/nobody\""
        );
        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(state.ip_sets.is_empty() && state.policies.is_empty());

        let missing = policy
            .update_ip_set(pb::IpSetDelta {
                name: "peers".into(),
                add: vec!["10.65.0.2".into()],
                remove: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(missing.message(), "name: no IP set \"peers\"");

        let mut bad = web.clone();
        bad.ingress[0].action = pb::Action::Unspecified as i32;
        let invalid = policy.set_policy(bad).await.unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(
            invalid.message().starts_with("ingress[0].action: "),
            "{invalid:?}"
        );

        // One by one, each call answering with the generation it made.
        let g1 = policy.set_ip_set(set.clone()).await.unwrap().into_inner();
        let g2 = policy.set_policy(web.clone()).await.unwrap().into_inner();
        let g3 = policy
            .set_endpoint_policy(attach("ns/pod"))
            .await
            .unwrap()
            .into_inner();
        assert!(g1.generation < g2.generation && g2.generation < g3.generation);
        policy
            .update_ip_set(pb::IpSetDelta {
                name: "peers".into(),
                add: vec!["10.65.0.2".into()],
                remove: vec!["10.65.0.1/32".into()],
            })
            .await
            .unwrap();
        let in_use = policy
            .delete_ip_set(pb::DeleteRequest {
                name: "peers".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(in_use.code(), Code::FailedPrecondition);

        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest {
                interface: "ns/pod".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(state.generation >= g3.generation);
        assert_eq!(state.endpoints, [attach("ns/pod")]);
        assert_eq!(state.policies, [web]);
        assert_eq!(state.ip_sets.len(), 1);
        assert_eq!(
            state.ip_sets[0].members,
            ["10.0.0.0/8", "10.65.0.2/32"],
            "as set, in the dataplane's spelling"
        );
        let flows = policy
            .list_flows(pb::ListFlowsRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner();
        assert!(flows.flows.is_empty());
        let log = policy
            .list_policy_log(pb::ListPolicyLogRequest { limit: 10 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((log.records.len(), log.lost), (0, 0));

        // Turning fail-closed off changes the interface in place: same
        // port, attachment kept.
        let relaxed = interfaces
            .add_interface(pb::AddInterfaceRequest {
                spec: Some(pb::InterfaceSpec {
                    policy_enforced: false,
                    ..memif
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(relaxed.id, created.id);
        assert!(!relaxed.spec.unwrap().policy_enforced);
        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state.endpoints.len(), 1);

        // Deleting the interface drops its attachment.
        interfaces
            .delete_interface(pb::DeleteInterfaceRequest {
                name: "ns/pod".into(),
            })
            .await
            .unwrap();
        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(state.endpoints.is_empty());
        assert_eq!(state.policies.len(), 1);

        drop((interfaces, policy));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        engine.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What the agent writes reads back equal: its periodic resync, which
    /// compares `GetPolicyState` with what it wants, finds nothing to do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policy_state_reads_back_as_the_agent_wrote_it() {
        use caracal_control::agent::policy::{diff, parse_net, DesiredPolicy};
        use caracal_proto::dataplane::policy_client::PolicyClient;

        let dir = std::env::temp_dir().join(format!("caracal-api-echo-{}", std::process::id()));
        let path = dir.join("dataplane.sock");
        let engine = Engine::start(&EngineConfig::small()).unwrap();
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
        let channel = connect(path.clone()).await;
        let mut interfaces = InterfacesClient::new(channel.clone());
        let mut policy = PolicyClient::new(channel);
        interfaces
            .add_interface(pb::AddInterfaceRequest {
                spec: Some(pb::InterfaceSpec {
                    name: "ns/pod".into(),
                    addresses: vec!["10.65.0.9/32".into(), "fd00:65::9/128".into()],
                    kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
                        socket: format!("@caracal-api-echo-{}", std::process::id()),
                        ..Default::default()
                    })),
                    policy_enforced: true,
                    ..Default::default()
                }),
            })
            .await
            .unwrap();

        // The shapes the agent's compiler emits.
        let from_sets = pb::Rule {
            action: pb::Action::Allow as i32,
            protocol: Some(6),
            source: Some(pb::EndpointMatch {
                ip_sets: vec!["sel:a".into(), "sel:b".into()],
                ..Default::default()
            }),
            destination: Some(pb::EndpointMatch {
                ip_sets: vec!["sel:a:tcp:http:80".into()],
                ports: vec![
                    pb::PortRange { first: 80, last: 0 },
                    pb::PortRange {
                        first: 8000,
                        last: 8080,
                    },
                ],
                ..Default::default()
            }),
            id: "knp.ns.p/ingress/0".into(),
            ..Default::default()
        };
        let block = pb::Rule {
            action: pb::Action::Allow as i32,
            destination: Some(pb::EndpointMatch {
                nets: vec!["0.0.0.0/0".into(), "fd00::/8".into()],
                not_nets: vec!["10.65.0.7/32".into(), "fd00:65::7/128".into()],
                ..Default::default()
            }),
            id: "knp.ns.p/egress/0".into(),
            ..Default::default()
        };
        let nets = |list: &[&str]| list.iter().map(|n| parse_net(n).unwrap()).collect();
        let mut want = DesiredPolicy::default();
        want.ip_sets
            .insert("sel:a".into(), nets(&["10.65.0.1/32", "fd00:65::1/128"]));
        want.ip_sets.insert("sel:b".into(), nets(&[]));
        want.ip_sets
            .insert("sel:a:tcp:http:80".into(), nets(&["10.65.0.9/32"]));
        want.policies.insert(
            "knp.ns.p".into(),
            std::sync::Arc::new(pb::PolicySpec {
                name: "knp.ns.p".into(),
                ingress: vec![from_sets],
                egress: vec![block],
            }),
        );
        let tier = |policies: &[&str]| {
            vec![pb::Tier {
                name: "default".into(),
                policies: policies.iter().map(|p| p.to_string()).collect(),
                end_action: pb::Action::Deny as i32,
            }]
        };
        want.endpoints.insert(
            "ns/pod".into(),
            pb::EndpointPolicy {
                interface: "ns/pod".into(),
                ingress: tier(&["knp.ns.p"]),
                egress: tier(&["knp.ns.p"]),
                ingress_default: pb::Action::Allow as i32,
                egress_default: pb::Action::Deny as i32,
            },
        );
        policy
            .apply(diff(&DesiredPolicy::default(), &want))
            .await
            .unwrap();
        let read = |state: pb::PolicyState| DesiredPolicy::from_state(state);
        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        let have = read(state);
        assert_eq!(have, want);
        assert!(diff::is_empty(&diff(&have, &want)));

        // A member leaves, one joins: the delta reads back too.
        let mut next = want.clone();
        next.ip_sets
            .insert("sel:a".into(), nets(&["10.65.0.2/32", "fd00:65::1/128"]));
        policy.apply(diff(&want, &next)).await.unwrap();
        let state = policy
            .get_policy_state(pb::GetPolicyStateRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read(state), next);

        drop((interfaces, policy));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        engine.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
