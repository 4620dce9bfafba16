//! End to end: the real `caracal-dataplane` and `caracal-agent` binaries,
//! a folder datastore holding two Pods, their network namespaces, and the
//! CNI calls a runtime makes. A pod gets dual-stack addresses from the
//! default pools inside its namespace; the dataplane runs its interface;
//! a killed dataplane is replayed by the agent; a restarted agent changes
//! nothing, and traffic between the pods flows on while it restarts; DEL
//! (twice) removes everything.
//!
//! Needs root (netns, tap) and the dataplane binary next to this test's
//! folder (`target/<profile>/caracal-dataplane`): `cargo test --workspace`
//! builds it, or `cargo build -p caracal-dataplane` first. Skipped when
//! not root, unless `CARACAL_REQUIRE_PRIVILEGED=1`, which makes a missing
//! privilege (or binary) fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::{self, DataplaneClient};
use caracal_proto::agent as pb;
use caracal_proto::agent::agent_client::AgentClient;
use caracal_proto::agent::cni_client::CniClient;
use caracal_proto::dataplane as dp;
use caracal_testsupport::{privileged, skip, wait_until, Netns, Process};
use nix::sys::signal::Signal;
use tonic::transport::Channel;

/// `target/<profile>/caracal-dataplane`, beside the folder of this test.
fn dataplane_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("caracal-dataplane");
    if path.exists() {
        return Some(path);
    }
    let hint = format!(
        "{} is missing: build it first (cargo build -p caracal-dataplane; \
         cargo test --workspace builds it)",
        path.display()
    );
    skip(&hint);
    None
}

/// A name unique to this process and call (prefix `cre`), short enough
/// for a netns.
fn unique(tag: &str) -> String {
    caracal_testsupport::unique("cre", tag)
}

/// `ip -o addr show dev eth0` inside `ns`; empty when there is no eth0.
fn eth0_addresses(ns: &Netns) -> String {
    let out = ns.ip(&["-o", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn eth0_ifindex(ns: &Netns) -> Option<String> {
    let out = ns.ip(&["-o", "link", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Starts a daemon, stopped (SIGTERM, SIGKILL after 15 s) on drop.
fn spawn(name: &'static str, program: &Path, args: &[String]) -> Process {
    let child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    Process::new(name, child, Duration::from_secs(15))
}

async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Lab {
    dir: tempfile::TempDir,
    dataplane_bin: PathBuf,
}

impl Lab {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn start_dataplane(&self) -> Process {
        let d = spawn(
            "caracal-dataplane",
            &self.dataplane_bin,
            &[
                "--socket".into(),
                self.path("dp.sock"),
                "--workers".into(),
                "1".into(),
                "--mode".into(),
                "adaptive".into(),
                "--buffers".into(),
                "4096".into(),
            ],
        );
        wait_for_file(Path::new(&self.path("dp.sock")));
        d
    }

    fn start_agent(&self) -> Process {
        let d = spawn(
            "caracal-agent",
            Path::new(env!("CARGO_BIN_EXE_caracal-agent")),
            &[
                "--datastore".into(),
                format!("dir:{}", self.path("manifests")),
                "--node".into(),
                "e2e".into(),
                "--state-dir".into(),
                self.path("state"),
                "--socket".into(),
                self.path("agent.sock"),
                "--dataplane-socket".into(),
                self.path("dp.sock"),
            ],
        );
        wait_for_file(Path::new(&self.path("agent.sock")));
        d
    }

    async fn agent(&self) -> Channel {
        dataplane_client::connect(Path::new(&self.path("agent.sock")))
            .await
            .expect("connect to the agent")
    }

    async fn status(&self) -> pb::AgentStatus {
        AgentClient::new(self.agent().await)
            .get_status(pb::GetStatusRequest {})
            .await
            .expect("GetStatus")
            .into_inner()
    }

    async fn synced(&self) -> bool {
        let s = self.status().await;
        s.dataplane_connected && s.synced_revision >= s.datastore_revision
    }

    async fn dataplane_interfaces(&self) -> Vec<dp::Interface> {
        let mut c = DataplaneClient::connect(Path::new(&self.path("dp.sock")))
            .await
            .expect("connect to the dataplane");
        c.interfaces
            .list_interfaces(dp::ListInterfacesRequest {})
            .await
            .expect("ListInterfaces")
            .into_inner()
            .interfaces
    }
}

fn wait_for_file(path: &Path) {
    wait_until(
        &format!("{} did not appear", path.display()),
        Duration::from_secs(20),
        Duration::from_millis(20),
        || path.exists(),
    );
}

const MANIFESTS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {containers: [{name: c, image: busybox}]}
";

fn request(container_id: &str, pod: &str, ns: &Netns) -> pb::CniRequest {
    pb::CniRequest {
        container_id: container_id.into(),
        netns: ns.path().display().to_string(),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: pod.into(),
        pod_uid: format!("uid-{pod}"),
        network: "caracal".into(),
        mtu: 0,
        prev_ips: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_wired_through_the_real_daemons_survives_their_restarts() {
    if !privileged() {
        return;
    }
    let Some(dataplane_bin) = dataplane_binary() else {
        return;
    };
    let lab = Lab {
        dir: tempfile::tempdir().unwrap(),
        dataplane_bin,
    };
    std::fs::create_dir(lab.dir.path().join("manifests")).unwrap();
    std::fs::write(lab.dir.path().join("manifests/pods.yaml"), MANIFESTS).unwrap();
    let ns = Netns::new(unique("web"));
    let client_ns = Netns::new(unique("cli"));
    let mut dataplane = lab.start_dataplane();
    let mut agent = lab.start_agent();

    until("agent ready", || async {
        let mut cni = CniClient::new(lab.agent().await);
        cni.status(pb::StatusRequest {})
            .await
            .is_ok_and(|r| r.into_inner().ready)
    })
    .await;

    let add = request(&unique("web").replace('-', ""), "web", &ns);
    let add_client = request(&unique("cli").replace('-', ""), "client", &client_ns);
    let mut cni = CniClient::new(lab.agent().await);
    let result = cni.add(add.clone()).await.expect("ADD").into_inner();
    cni.add(add_client.clone()).await.expect("ADD client");
    let ips: Vec<String> = result
        .ips
        .iter()
        .map(|i| i.address.split('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(ips.len(), 2, "{result:?}");
    assert!(ips[0].starts_with("10.65."), "{ips:?}");
    assert!(ips[1].starts_with("fd00:65:"), "{ips:?}");

    // Inside the pod: eth0 with both addresses, and the MAC reported.
    let addrs = eth0_addresses(&ns);
    for ip in &ips {
        assert!(addrs.contains(&format!(" {ip}/")), "{ip} not in:\n{addrs}");
    }
    let link = ns.ip_ok(&["link", "show", "dev", "eth0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains(&result.mac),
        "mac {}",
        result.mac
    );
    let names: Vec<String> = lab
        .dataplane_interfaces()
        .await
        .into_iter()
        .filter_map(|i| i.spec.map(|s| s.name))
        .collect();
    assert_eq!(names, ["default/client", "default/web"]);
    let status = lab.status().await;
    assert!(status.dataplane_connected);
    assert!(
        status.synced_revision >= status.datastore_revision,
        "{status:?}"
    );
    assert_eq!(status.endpoints.len(), 2);

    // The dataplane dies: its tap goes with it. Restarted, it gets the
    // pod's interface back from the agent.
    assert!(!dataplane.stop_with(Signal::SIGKILL));
    until("eth0 gone with the dataplane", || async {
        eth0_addresses(&ns).is_empty()
    })
    .await;
    dataplane = lab.start_dataplane();
    until("replayed and synced", || async { lab.synced().await }).await;
    until("eth0 back", || async {
        let addrs = eth0_addresses(&ns);
        ips.iter().all(|ip| addrs.contains(&format!(" {ip}/")))
    })
    .await;

    // The agent restarts: it changes nothing (same devices, same
    // dataplane interfaces), and the pods talk all along.
    let ifindex = eth0_ifindex(&ns);
    let id_before: Vec<u32> = lab
        .dataplane_interfaces()
        .await
        .iter()
        .map(|i| i.id)
        .collect();
    let pinger = {
        let (from, to) = (client_ns.name().to_owned(), ips[0].clone());
        std::thread::spawn(move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &from, "ping", "-n", "-c", "30", "-i", "0.05", "-W", "1", &to,
                ])
                .output()
                .expect("ping")
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.stop_with(Signal::SIGTERM), "agent exits 0 on SIGTERM");
    assert!(
        !lab.dir.path().join("agent.sock").exists(),
        "socket removed"
    );
    agent = lab.start_agent();
    until("agent synced after restart", || async {
        lab.synced().await
    })
    .await;
    let ping = pinger.join().unwrap();
    let ping = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.contains(" 0% packet loss"),
        "traffic disturbed:\n{ping}"
    );
    assert_eq!(lab.status().await.endpoints.len(), 2);
    assert_eq!(eth0_ifindex(&ns), ifindex);
    let id_after: Vec<u32> = lab
        .dataplane_interfaces()
        .await
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(id_after, id_before);

    // CHECK passes; DEL twice (the second without a netns) succeeds and
    // leaves nothing.
    let mut cni = CniClient::new(lab.agent().await);
    let mut check = add.clone();
    check.prev_ips = result.ips.iter().map(|i| i.address.clone()).collect();
    cni.check(check).await.expect("CHECK");
    cni.del(add.clone()).await.expect("DEL");
    let mut bare = add.clone();
    bare.netns.clear();
    cni.del(bare).await.expect("second DEL");
    cni.del(add_client.clone()).await.expect("DEL client");
    cni.del(add_client).await.expect("second DEL client");
    assert!(eth0_addresses(&ns).is_empty());
    assert!(eth0_addresses(&client_ns).is_empty());
    assert!(lab.dataplane_interfaces().await.is_empty());
    assert!(lab.status().await.endpoints.is_empty());

    assert!(agent.stop_with(Signal::SIGTERM));
    assert!(dataplane.stop_with(Signal::SIGTERM));
}
