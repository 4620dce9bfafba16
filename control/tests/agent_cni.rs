//! The whole agent in-process — folder datastore, file IPAM, endpoints,
//! sync loop, gRPC API on its socket — against a fake dataplane: the CNI
//! operations and the status API as the plugin and the lab use them.
//! Unprivileged: the fake makes no devices.

mod agent_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::{until, FakeDataplane, Table};
use caracal_control::agent::datastore::DatastoreSpec;
use caracal_control::agent::{self, AgentConfig};
use caracal_control::ipam::{FileStore, Ipam, IpamConfig};
use caracal_proto::agent as pb;
use caracal_proto::agent::agent_client::AgentClient;
use caracal_proto::agent::cni_client::CniClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

const PODS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: m
  annotations: {caracal.io/interface: memif}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: v
  annotations: {caracal.io/interface: vhost-user}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: badpool
  annotations: {caracal.io/ipv4pools: 'default-ipv4-ippool'}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: nopool
  annotations: {caracal.io/ipv4pools: '[\"no-such-pool\"]'}
spec: {containers: [{name: c, image: x}]}
";

/// An agent running in this process, stopped on [`TestAgent::stop`].
struct TestAgent {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

impl TestAgent {
    async fn start(root: &Path) -> TestAgent {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let socket = root.join("agent.sock");
        let config = AgentConfig {
            datastore: DatastoreSpec::Dir(root.join("manifests")),
            node: "node-1".into(),
            state_dir: root.join("state"),
            socket: socket.clone(),
            dataplane_socket: root.join("dp.sock"),
            default_ipv4_pool: Some("10.65.0.0/16".parse().unwrap()),
            default_ipv6_pool: Some("fd00:65::/48".parse().unwrap()),
            mtu: 1500,
            memif_dir: root.join("memif"),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::run(config, async {
            let _ = stopped.await;
        }));
        until("agent socket", || socket.exists()).await;
        TestAgent {
            socket,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> Channel {
        caracal_control::dataplane_client::connect(&self.socket)
            .await
            .unwrap()
    }

    async fn cni(&self) -> CniClient<Channel> {
        CniClient::new(self.channel().await)
    }

    async fn status(&self) -> pb::AgentStatus {
        AgentClient::new(self.channel().await)
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn wait_ready(&self) {
        let mut cni = self.cni().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = cni.status(pb::StatusRequest {}).await.unwrap().into_inner();
            if s.ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready: {}",
                s.message
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_synced(&self) -> pb::AgentStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.status().await;
            if s.dataplane_connected && s.synced_revision >= s.datastore_revision {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "not synced: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "socket removed on exit");
    }
}

fn request(container_id: &str, pod: &str) -> pb::CniRequest {
    pb::CniRequest {
        container_id: container_id.into(),
        netns: format!("/var/run/netns/{pod}"),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: pod.into(),
        pod_uid: format!("uid-{pod}"),
        network: "caracal".into(),
        mtu: 0,
        prev_ips: vec![],
    }
}

fn setup() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("manifests")).unwrap();
    std::fs::write(root.path().join("manifests/pods.yaml"), PODS).unwrap();
    root
}

async fn ipam_handles(root: &Path) -> Vec<String> {
    let ipam = Ipam::new(
        FileStore::open(root.join("state/ipam")).unwrap(),
        IpamConfig::default(),
    );
    let mut handles: Vec<String> = ipam
        .handles()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.handle)
        .collect();
    handles.sort();
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_del_and_status() {
    let root = setup();
    let dp = FakeDataplane::start(&root.path().join("dp.sock")).await;
    let agent = TestAgent::start(root.path()).await;
    agent.wait_ready().await;
    let mut cni = agent.cni().await;

    // ADD: dual-stack from the default pools, gateway and default routes,
    // the dataplane's MAC, and the dataplane runs it before the reply.
    let result = cni.add(request("ca", "a")).await.unwrap().into_inner();
    assert_eq!(result.interface_name, "eth0");
    assert_eq!(result.sandbox, "/var/run/netns/a");
    assert_eq!(result.interface_kind, "tap");
    assert_eq!(result.mtu, 1500);
    let ips: Vec<&str> = result.ips.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(
        ips[0].starts_with("10.65.") && ips[0].ends_with("/32"),
        "{ips:?}"
    );
    assert!(
        ips[1].starts_with("fd00:65:") && ips[1].ends_with("/128"),
        "{ips:?}"
    );
    assert_eq!(result.ips[0].gateway, "169.254.1.1");
    assert_eq!(result.ips[1].gateway, "fe80::ecee:eeff:feee:eeee");
    let routes: Vec<(&str, &str)> = result
        .routes
        .iter()
        .map(|r| (r.dst.as_str(), r.gw.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("0.0.0.0/0", "169.254.1.1"),
            ("::/0", "fe80::ecee:eeff:feee:eeee")
        ]
    );
    let iface = dp.interface("default/a").expect("the dataplane runs it");
    assert_eq!(result.mac, iface.mac);
    let spec = iface.spec.unwrap();
    assert_eq!(spec.addresses, ips);
    let Some(caracal_proto::dataplane::interface_spec::Kind::Tap(tap)) = spec.kind else {
        panic!("not a tap")
    };
    assert_eq!(
        (tap.netns.as_str(), tap.ifname.as_str(), tap.configure),
        ("/var/run/netns/a", "eth0", true)
    );

    let status = agent.wait_synced().await;
    assert_eq!(status.endpoints.len(), 1);
    let ep = &status.endpoints[0];
    assert_eq!((ep.namespace.as_str(), ep.name.as_str()), ("default", "a"));
    assert_eq!(ep.dataplane_interface, "default/a");
    assert_eq!(ep.ips, ips);

    // ADD again: the same answer, nothing changed.
    let changes = dp.changes();
    let again = cni.add(request("ca", "a")).await.unwrap().into_inner();
    assert_eq!(again, result);
    assert_eq!(dp.changes(), changes);

    // CHECK: fine as made; wrong previous addresses; unknown attachment.
    let mut check = request("ca", "a");
    check.prev_ips = ips.iter().map(|s| s.to_string()).collect();
    cni.check(check.clone()).await.unwrap();
    check.prev_ips = vec!["10.99.0.1/32".into()];
    let err = cni.check(check).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = cni.check(request("nobody", "a")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // The dataplane lost the interface behind the agent's back: CHECK sees it.
    dp.table.lock().unwrap().interfaces.remove("default/a");
    let err = cni.check(request("ca", "a")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("default/a"), "{err:?}");

    // A manifest written now is in the very next status, then synced.
    let before = agent.status().await.datastore_revision;
    std::fs::write(
        root.path().join("manifests/more.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late}\nspec: {containers: []}\n",
    )
    .unwrap();
    assert!(agent.status().await.datastore_revision > before);
    agent.wait_synced().await;
    // ...and the periodic or changed-triggered resync has put default/a back.
    until("default/a restored", || dp.interface("default/a").is_some()).await;

    // DEL, twice, the second with no netns: both succeed; all is gone.
    cni.del(request("ca", "a")).await.unwrap();
    assert!(dp.interface("default/a").is_none());
    let mut bare = request("ca", "a");
    bare.netns.clear();
    cni.del(bare).await.unwrap();
    assert!(ipam_handles(root.path()).await.is_empty());
    assert!(agent.wait_synced().await.endpoints.is_empty());

    agent.stop().await;
    dp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_adds_leave_nothing_behind() {
    let root = setup();
    let dp = FakeDataplane::start_with(
        &root.path().join("dp.sock"),
        Table {
            refuse_netns: Some("missing".into()),
            ..Default::default()
        },
    )
    .await;
    let agent = TestAgent::start(root.path()).await;
    agent.wait_ready().await;
    let mut cni = agent.cni().await;

    let cases = [
        (
            request("cv", "v"),
            Code::InvalidArgument,
            "vhost-user is not supported yet",
        ),
        (
            request("cb", "badpool"),
            Code::InvalidArgument,
            "caracal.io/ipv4pools",
        ),
        (
            request("cn", "nopool"),
            Code::InvalidArgument,
            "no-such-pool",
        ),
        (request("cx", "ghost"), Code::NotFound, "default/ghost"),
        (
            pb::CniRequest {
                netns: "/var/run/netns/missing".into(),
                ..request("cd", "b")
            },
            Code::FailedPrecondition,
            "does not exist",
        ),
        (
            pb::CniRequest {
                mtu: 100_000,
                ..request("cu", "b")
            },
            Code::InvalidArgument,
            "mtu",
        ),
        (request("../x", "b"), Code::InvalidArgument, "container id"),
    ];
    for (req, code, text) in cases {
        let who = format!("{} {}", req.container_id, req.pod_name);
        let err = cni.add(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{who}: {err:?}");
        assert!(err.message().contains(text), "{who}: {err:?}");
    }
    let status = agent.wait_synced().await;
    assert!(status.endpoints.is_empty(), "{:?}", status.endpoints);
    assert!(dp.interface_names().is_empty());
    assert!(ipam_handles(root.path()).await.is_empty());
    assert!(std::fs::read_dir(root.path().join("state/endpoints"))
        .unwrap()
        .next()
        .is_none());

    agent.stop().await;
    dp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_restarts_of_either_side() {
    let root = setup();
    let dp_socket = root.path().join("dp.sock");
    let dp = FakeDataplane::start(&dp_socket).await;
    let agent = TestAgent::start(root.path()).await;
    agent.wait_ready().await;
    let mut cni = agent.cni().await;
    let b = cni.add(request("cb", "b")).await.unwrap().into_inner();
    cni.add(request("cc", "c")).await.unwrap();
    assert_eq!(dp.interface_names(), ["default/b", "default/c"]);

    // GC: what the runtime does not list goes.
    let released = cni
        .gc(pb::GcRequest {
            valid_attachments: vec![pb::Attachment {
                container_id: "cb".into(),
                ifname: "eth0".into(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .released;
    let released: Vec<_> = released.iter().map(|a| a.container_id.as_str()).collect();
    assert_eq!(released, ["cc"]);
    assert_eq!(dp.interface_names(), ["default/b"]);
    assert_eq!(ipam_handles(root.path()).await, ["cb.eth0"]);

    // Agent restart: it remembers b and changes nothing.
    let changes = dp.changes();
    agent.stop().await;
    let agent = TestAgent::start(root.path()).await;
    let status = agent.wait_synced().await;
    assert_eq!(status.endpoints.len(), 1);
    assert_eq!(status.endpoints[0].container_id, "cb");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dp.changes(), changes, "nothing touched");
    let mut cni = agent.cni().await;
    assert_eq!(cni.add(request("cb", "b")).await.unwrap().into_inner(), b);

    // Dataplane restart: the agent replays b.
    dp.stop().await;
    let dp = FakeDataplane::start(&dp_socket).await;
    until("replayed", || dp.interface_names() == ["default/b"]).await;
    let status = agent.wait_synced().await;
    assert!(status.dataplane_connected);
    let mut check = request("cb", "b");
    check.prev_ips = b.ips.iter().map(|i| i.address.clone()).collect();
    cni.check(check).await.unwrap();

    agent.stop().await;
    dp.stop().await;
}

/// Memif pods of the tests below, beside [`PODS`].
const MEMIF_PODS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: s
  annotations:
    caracal.io/interface: memif
    caracal.io/memif-secret: sesame
    caracal.io/memif-queues: '2'
    caracal.io/memif-ring-size: '2048'
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: badring
  annotations: {caracal.io/interface: memif, caracal.io/memif-ring-size: '1000'}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: m-x
  annotations: {caracal.io/interface: memif}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: x
  namespace: default-m
  annotations: {caracal.io/interface: memif}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long
  annotations: {caracal.io/interface: memif}
spec: {containers: [{name: c, image: x}]}
";
/// A pod name that makes too long a socket path.
const LONG: &str =
    "long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long.long";

fn memif_spec(iface: &caracal_proto::dataplane::Interface) -> caracal_proto::dataplane::MemifSpec {
    match iface.spec.as_ref().and_then(|s| s.kind.clone()) {
        Some(caracal_proto::dataplane::interface_spec::Kind::Memif(m)) => m,
        other => panic!("not a memif: {other:?}"),
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memif_pods_get_a_server_socket_in_a_folder_of_their_own() {
    let root = setup();
    std::fs::write(root.path().join("manifests/memif.yaml"), MEMIF_PODS).unwrap();
    let dp_socket = root.path().join("dp.sock");
    let dp = FakeDataplane::start(&dp_socket).await;
    let agent = TestAgent::start(root.path()).await;
    agent.wait_ready().await;
    let mut cni = agent.cni().await;

    // ADD: a memif server on <memif dir>/<namespace>-<pod>/memif.sock,
    // made after its folder (the fake binds it as the dataplane does);
    // the pod's MAC, no kernel interface.
    let socket = root.path().join("memif/default-m/memif.sock");
    let result = cni.add(request("cm", "m")).await.unwrap().into_inner();
    assert_eq!(result.interface_kind, "memif");
    assert_eq!(result.socket_path, socket.display().to_string());
    assert_eq!(result.sandbox, "/var/run/netns/m");
    assert_eq!(result.ips.len(), 2);
    assert_eq!(result.ips[0].gateway, "169.254.1.1");
    assert_eq!(
        result.mac,
        caracal_control::agent::memif::pod_mac("default/m")
    );
    assert!(is_socket(&socket), "the dataplane's socket");
    let iface = dp.interface("default/m").expect("the dataplane runs it");
    let m = memif_spec(&iface);
    assert_eq!(m.socket, result.socket_path);
    assert_eq!(
        (m.role, m.id, m.mode, m.secret.as_str(), m.peer_mac.as_str()),
        (
            caracal_proto::dataplane::MemifRole::Server as i32,
            0,
            caracal_proto::dataplane::MemifMode::Ethernet as i32,
            "",
            result.mac.as_str()
        )
    );
    let ips: Vec<&str> = result.ips.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(iface.spec.as_ref().unwrap().addresses, ips);
    let status = agent.wait_synced().await;
    let ep = &status.endpoints[0];
    assert_eq!(
        (ep.interface_kind.as_str(), ep.socket_path.as_str()),
        ("memif", result.socket_path.as_str())
    );

    // The annotations' secret, queues and ring size.
    let s = cni.add(request("cs", "s")).await.unwrap().into_inner();
    let m = memif_spec(&dp.interface("default/s").unwrap());
    assert_eq!(
        (m.secret.as_str(), m.queues, m.ring_size),
        ("sesame", 2, 2048)
    );
    assert!(s.socket_path.ends_with("/default-s/memif.sock"));

    // ADD again: the same answer; CHECK: fine, and not without its socket.
    assert_eq!(
        cni.add(request("cm", "m")).await.unwrap().into_inner(),
        result
    );
    let mut check = request("cm", "m");
    check.prev_ips = ips.iter().map(|s| s.to_string()).collect();
    cni.check(check.clone()).await.unwrap();
    std::fs::remove_file(&socket).unwrap();
    let err = cni.check(check.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("memif socket"), "{err:?}");

    // A dataplane restart replays the memif, socket and all.
    dp.stop().await;
    let dp = FakeDataplane::start(&dp_socket).await;
    until("replayed", || {
        dp.interface_names() == ["default/m", "default/s"]
    })
    .await;
    agent.wait_synced().await;
    assert!(is_socket(&socket));
    cni.check(check).await.unwrap();

    // Refused: a bad annotation, a socket path that does not fit, one
    // that another pod's has; nothing is left behind.
    cni.add(request("cx", "m-x")).await.unwrap();
    let mut taken = request("ct", "x");
    taken.pod_namespace = "default-m".into();
    for (req, code, text) in [
        (
            request("cr", "badring"),
            Code::InvalidArgument,
            "caracal.io/memif-ring-size",
        ),
        (request("cl", LONG), Code::InvalidArgument, "unix socket"),
        (taken, Code::AlreadyExists, "default/m-x"),
    ] {
        let who = req.container_id.clone();
        let err = cni.add(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{who}: {err:?}");
        assert!(err.message().contains(text), "{who}: {err:?}");
    }
    assert_eq!(
        ipam_handles(root.path()).await,
        ["cm.eth0", "cs.eth0", "cx.eth0"]
    );
    let mut folders: Vec<String> = std::fs::read_dir(root.path().join("memif"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ["default-m", "default-m-x", "default-s"]);

    // DEL: interface, socket, folder and addresses go; twice is fine. GC
    // removes the folder of the attachments it releases.
    cni.del(request("cm", "m")).await.unwrap();
    cni.del(request("cm", "m")).await.unwrap();
    assert!(dp.interface("default/m").is_none());
    assert!(!socket.parent().unwrap().exists(), "folder removed");
    cni.gc(pb::GcRequest {
        valid_attachments: vec![pb::Attachment {
            container_id: "cs".into(),
            ifname: "eth0".into(),
        }],
    })
    .await
    .unwrap();
    assert_eq!(dp.interface_names(), ["default/s"]);
    assert!(!root.path().join("memif/default-m-x").exists());
    assert!(is_socket(&root.path().join("memif/default-s/memif.sock")));
    assert_eq!(ipam_handles(root.path()).await, ["cs.eth0"]);

    agent.stop().await;
    dp.stop().await;
}
