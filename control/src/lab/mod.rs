//! The lab: a whole single-node cluster on one machine (DESIGN §6). Pods
//! are network namespaces; the real `caracal-dataplane` and
//! `caracal-agent` (in `dir:` datastore mode) run under a supervisor; the
//! real `caracal` CNI plugin is run for each pod exactly as a container
//! runtime runs it.
//!
//! State lives in one folder (default `/run/caracal-lab`): the manifests
//! the agent watches (one object per file), the daemons' sockets, logs and
//! pids, memif pods' sockets (`memif/<namespace>-<pod>/memif.sock`), and
//! `lab.json`, the record of the pods the lab made.
//!
//! A memif pod is a network namespace with only `lo` and a socket waiting
//! for its application (say `dpdk-testpmd`, as a memif client); `lab
//! status` shows the socket, and the application talks to the other pods
//! through it once it connects.

pub mod cni;
pub mod manifests;
mod probe;
pub mod state;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use caracal_proto::agent as pb;
use serde::Serialize;

use manifests::{Object, ObjectKey};
use state::{netns_name, LabPod, LabState};

pub use probe::{probe, ProbeReport};

/// Node name the lab's agent runs as.
pub const NODE_NAME: &str = "caracal-lab";
/// Default state folder.
pub const DEFAULT_DIR: &str = "/run/caracal-lab";
/// How long `up`/`apply`/`delete` wait for the daemons.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A lab rooted at a state folder.
#[derive(Debug, Clone)]
pub struct Lab {
    pub dir: PathBuf,
    /// Folder holding `caracal-dataplane`, `caracal-agent` and `caracal`.
    pub bin_dir: PathBuf,
}

/// Signals a process, ignoring one that is already gone.
pub(crate) fn signal_pid(pid: i32, sig: nix::sys::signal::Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What `lab status --json` prints (DESIGN §6).
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub netns: String,
    pub ips: Vec<String>,
    pub interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub ports: Vec<serde_json::Value>,
}

impl Lab {
    pub fn new(dir: PathBuf, bin_dir: PathBuf) -> Self {
        Lab { dir, bin_dir }
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    pub fn dataplane_socket(&self) -> PathBuf {
        self.dir.join("dataplane.sock")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The agent's `--memif-dir`.
    pub fn memif_dir(&self) -> PathBuf {
        self.dir.join("memif")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    fn supervisor_pid_file(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }

    fn load_state(&self) -> anyhow::Result<Option<LabState>> {
        LabState::load(&self.state_file())
            .with_context(|| format!("reading {}", self.state_file().display()))
    }

    fn save_state(&self, st: &LabState) -> anyhow::Result<()> {
        st.save(&self.state_file())
            .with_context(|| format!("writing {}", self.state_file().display()))
    }

    fn running(&self) -> bool {
        read_pid(&self.supervisor_pid_file()).is_some_and(pid_alive)
    }

    /// `lab up DIR`: starts everything and creates every pod of `source`.
    pub fn up(&self, source: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        if self.running() {
            bail!(
                "a lab is already running in {} (run `caracalctl lab down` first)",
                self.dir.display()
            );
        }
        let objects = manifests::load(source)?;
        for bin in ["caracal-dataplane", "caracal-agent", "caracal"] {
            let p = self.bin_dir.join(bin);
            if !p.exists() {
                bail!(
                    "{} not found (build with `cargo build --release`, or pass --bin-dir)",
                    p.display()
                );
            }
        }
        // Leftovers of a lab that died without `lab down`.
        self.down(&mut std::io::sink())?;
        std::fs::create_dir_all(self.manifests_dir())
            .with_context(|| format!("creating {}", self.manifests_dir().display()))?;
        let mut st = LabState {
            source: Some(source.to_owned()),
            bin_dir: self.bin_dir.clone(),
            pods: Vec::new(),
        };
        self.save_state(&st)?;
        for obj in objects.values() {
            manifests::store(&self.manifests_dir(), obj)?;
        }
        writeln!(
            out,
            "lab: {} objects from {}",
            objects.len(),
            source.display()
        )?;
        self.start_supervisor()?;
        writeln!(
            out,
            "lab: dataplane and agent starting (logs in {})",
            self.dir.join("logs").display()
        )?;
        let rt = runtime()?;
        rt.block_on(self.wait_agent_ready())?;
        writeln!(out, "lab: agent ready")?;
        let pods: Vec<&Object> = objects.values().filter(|o| o.key.kind == "Pod").collect();
        let mut failed = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            write!(
                out,
                "lab: [{}/{}] pod {}/{} ",
                i + 1,
                pods.len(),
                pod.key.namespace,
                pod.key.name
            )?;
            out.flush()?;
            match self.create_pod(&rt, &mut st, pod) {
                Ok(p) => writeln!(out, "{} {}", p.interface, p.ips.join(" "))?,
                Err(e) => {
                    writeln!(out, "FAILED: {e:#}")?;
                    failed.push(pod.key.to_string());
                }
            }
        }
        rt.block_on(self.wait_synced(0))?;
        if !failed.is_empty() {
            bail!(
                "{} of {} pods failed: {}",
                failed.len(),
                pods.len(),
                failed.join(", ")
            );
        }
        writeln!(out, "lab: up: {} pods ready", pods.len())?;
        Ok(())
    }

    fn start_supervisor(&self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("supervisor.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["lab", "--state-dir"])
            .arg(&self.dir)
            .arg("--bin-dir")
            .arg(&self.bin_dir)
            .arg("supervise")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: it outlives this command and the
            // terminal's Ctrl-C.
            .process_group(0)
            .spawn()
            .context("starting the lab supervisor")?;
        std::fs::write(self.supervisor_pid_file(), child.id().to_string())?;
        Ok(())
    }

    /// Creates the netns and runs CNI ADD for one pod; records it.
    fn create_pod(
        &self,
        rt: &tokio::runtime::Runtime,
        st: &mut LabState,
        pod: &Object,
    ) -> anyhow::Result<LabPod> {
        let (ns, name) = (&pod.key.namespace, &pod.key.name);
        let netns = netns_name(ns, name);
        if let Some(existing) = st.pod(ns, name) {
            return Ok(existing.clone());
        }
        ip(&["netns", "add", &netns])?;
        let _ = ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let container_id = cni::new_container_id();
        let netns_path = format!("/var/run/netns/{netns}");
        let att = cni::Attachment {
            container_id: &container_id,
            netns: &netns_path,
            namespace: ns,
            pod: name,
        };
        let config = cni::network_config(&self.agent_socket(), None);
        let result = match cni::run(&self.bin_dir, "ADD", &att, &config) {
            Ok(r) => cni::parse_add_result(&r),
            Err(e) => {
                // A failed ADD leaves nothing behind; neither does the lab.
                let _ = ip(&["netns", "del", &netns]);
                return Err(e.into());
            }
        };
        let interface = rt
            .block_on(self.agent_status())
            .ok()
            .and_then(|s| {
                s.endpoints
                    .into_iter()
                    .find(|e| e.container_id == container_id)
            })
            .map(|e| e.interface_kind)
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "tap".into());
        let p = LabPod {
            namespace: ns.clone(),
            name: name.clone(),
            netns,
            container_id,
            ips: result.ips,
            interface,
            socket: result.socket,
        };
        st.pods.push(p.clone());
        self.save_state(st)?;
        Ok(p)
    }

    /// Runs CNI DEL for one pod and removes its netns; forgets it.
    fn remove_pod(&self, st: &mut LabState, namespace: &str, name: &str) -> anyhow::Result<()> {
        let Some(i) = st
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        else {
            return Ok(());
        };
        let p = st.pods[i].clone();
        let netns_path = p.netns_path().display().to_string();
        let att = cni::Attachment {
            container_id: &p.container_id,
            netns: &netns_path,
            namespace,
            pod: name,
        };
        let config = cni::network_config(&self.agent_socket(), None);
        let del = cni::run(&st.bin_dir, "DEL", &att, &config);
        let _ = ip(&["netns", "del", &p.netns]);
        st.pods.remove(i);
        self.save_state(st)?;
        del.map(|_| ()).map_err(Into::into)
    }

    /// `lab apply -f PATH`: adds or changes objects, creating new pods.
    pub fn apply(&self, path: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let mut st = self.require_running()?;
        let objects = manifests::load(path)?;
        let rt = runtime()?;
        let before = rt.block_on(self.agent_status())?.datastore_revision;
        let mut changed = false;
        for obj in objects.values() {
            let c = manifests::store(&self.manifests_dir(), obj)?;
            changed |= c;
            writeln!(
                out,
                "{} {}",
                obj.key,
                if c { "configured" } else { "unchanged" }
            )?;
        }
        for pod in objects.values().filter(|o| o.key.kind == "Pod") {
            if st.pod(&pod.key.namespace, &pod.key.name).is_none() {
                let p = self.create_pod(&rt, &mut st, pod)?;
                writeln!(
                    out,
                    "pod {}/{} created: {} {}",
                    p.namespace,
                    p.name,
                    p.interface,
                    p.ips.join(" ")
                )?;
            }
        }
        rt.block_on(self.wait_synced(if changed { before } else { 0 }))?;
        Ok(())
    }

    /// `lab delete -f PATH`: removes objects, deleting their pods.
    pub fn delete(&self, path: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let mut st = self.require_running()?;
        let objects = manifests::load(path)?;
        let rt = runtime()?;
        let before = rt.block_on(self.agent_status())?.datastore_revision;
        let mut changed = false;
        for key in objects.keys() {
            if key.kind == "Pod" {
                self.remove_pod(&mut st, &key.namespace, &key.name)?;
            }
            let removed = manifests::remove(&self.manifests_dir(), key)?;
            changed |= removed;
            writeln!(
                out,
                "{key} {}",
                if removed { "deleted" } else { "not found" }
            )?;
        }
        rt.block_on(self.wait_synced(if changed { before } else { 0 }))?;
        Ok(())
    }

    fn require_running(&self) -> anyhow::Result<LabState> {
        match self.load_state()? {
            Some(st) if self.running() => Ok(st),
            _ => bail!(
                "no lab is running in {} (start one with `caracalctl lab up DIR`)",
                self.dir.display()
            ),
        }
    }

    /// The pods the lab made.
    pub fn pods(&self) -> anyhow::Result<Vec<LabPod>> {
        Ok(self.load_state()?.unwrap_or_default().pods)
    }

    /// `lab probe`: the connectivity matrix. A memif pod is probed once
    /// its application is connected (the dataplane says so), since only
    /// the application can answer.
    pub fn probe(&self) -> anyhow::Result<ProbeReport> {
        let pods = self.pods()?;
        let connected = if pods.iter().any(|p| p.interface != "tap") {
            runtime()?.block_on(self.connected_sockets())
        } else {
            BTreeSet::new()
        };
        let answering: Vec<LabPod> = pods
            .iter()
            .filter(|p| p.interface == "tap" || connected.contains(&p.interface_name()))
            .cloned()
            .collect();
        Ok(probe(&pods, &answering))
    }

    /// The dataplane interfaces with a connected memif peer; none if the
    /// dataplane does not answer.
    async fn connected_sockets(&self) -> BTreeSet<String> {
        let Ok(mut client) =
            crate::dataplane_client::DataplaneClient::connect(&self.dataplane_socket()).await
        else {
            return BTreeSet::new();
        };
        let Ok(list) = client
            .interfaces
            .list_interfaces(caracal_proto::dataplane::ListInterfacesRequest {})
            .await
        else {
            return BTreeSet::new();
        };
        list.into_inner()
            .interfaces
            .into_iter()
            .filter(|i| i.memif.as_ref().is_some_and(|m| m.connected))
            .filter_map(|i| i.spec.map(|s| s.name))
            .collect()
    }

    /// `lab status`: pods and services.
    pub fn status(&self) -> anyhow::Result<StatusReport> {
        let st = self.load_state()?.unwrap_or_default();
        let pods = st
            .pods
            .iter()
            .map(|p| PodStatus {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                netns: p.netns.clone(),
                ips: p.ips.clone(),
                interface: p.interface.clone(),
                socket: p.socket.clone(),
            })
            .collect();
        let objects: BTreeMap<ObjectKey, Object> = if self.manifests_dir().exists() {
            manifests::load(&self.manifests_dir())?
        } else {
            BTreeMap::new()
        };
        let services = objects
            .values()
            .filter(|o| o.key.kind == "Service")
            .map(|o| {
                let spec = &o.value["spec"];
                let mut ips: Vec<String> = spec["clusterIPs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if ips.is_empty() {
                    ips.extend(
                        spec["clusterIP"]
                            .as_str()
                            .filter(|s| *s != "None")
                            .map(str::to_owned),
                    );
                }
                ServiceStatus {
                    namespace: o.key.namespace.clone(),
                    name: o.key.name.clone(),
                    cluster_ips: ips,
                    ports: spec["ports"].as_array().cloned().unwrap_or_default(),
                }
            })
            .collect();
        Ok(StatusReport { pods, services })
    }

    /// `lab down`: removes every pod, daemon, netns and file the lab made.
    /// Safe to run twice, and on a lab that died halfway.
    pub fn down(&self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let st = self.load_state()?;
        if st.is_none() && !self.dir.exists() {
            writeln!(out, "lab: nothing to remove in {}", self.dir.display())?;
            return Ok(());
        }
        let mut st = st.unwrap_or_default();
        if st.bin_dir.as_os_str().is_empty() {
            st.bin_dir = self.bin_dir.clone();
        }
        let agent_up = self.agent_socket().exists() && self.running();
        for p in st.pods.clone() {
            if agent_up {
                if let Err(e) = self.remove_pod(&mut st, &p.namespace, &p.name) {
                    writeln!(out, "lab: CNI DEL {}/{}: {e:#}", p.namespace, p.name)?;
                }
            } else {
                let _ = ip(&["netns", "del", &p.netns]);
            }
            writeln!(out, "lab: pod {}/{} removed", p.namespace, p.name)?;
        }
        if let Some(pid) = read_pid(&self.supervisor_pid_file()) {
            if signal_pid(pid, nix::sys::signal::Signal::SIGTERM) {
                let deadline = Instant::now() + Duration::from_secs(15);
                while pid_alive(pid) && Instant::now() < deadline {
                    reap(pid);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // Daemons the supervisor could not stop (it was killed, say).
        for name in ["agent.pid", "dataplane.pid"] {
            if let Some(pid) = read_pid(&self.dir.join(name)) {
                if signal_pid(pid, nix::sys::signal::Signal::SIGTERM) {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while pid_alive(pid) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        writeln!(out, "lab: down")?;
        Ok(())
    }

    async fn agent(
        &self,
    ) -> anyhow::Result<(
        pb::agent_client::AgentClient<tonic::transport::Channel>,
        pb::cni_client::CniClient<tonic::transport::Channel>,
    )> {
        let ch = crate::dataplane_client::connect(&self.agent_socket()).await?;
        Ok((
            pb::agent_client::AgentClient::new(ch.clone()),
            pb::cni_client::CniClient::new(ch),
        ))
    }

    async fn agent_status(&self) -> anyhow::Result<pb::AgentStatus> {
        let (mut a, _) = self.agent().await?;
        Ok(a.get_status(pb::GetStatusRequest {}).await?.into_inner())
    }

    /// Waits until the agent answers and says it can serve CNI ADDs.
    async fn wait_agent_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("agent socket not there yet");
        while Instant::now() < deadline {
            if let Ok((_, mut cni)) = self.agent().await {
                match cni.status(pb::StatusRequest {}).await {
                    Ok(r) if r.get_ref().ready => return Ok(()),
                    Ok(r) => last = r.into_inner().message,
                    Err(e) => last = e.message().to_owned(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the agent did not become ready in {READY_TIMEOUT:?}: {last} (see {})",
            self.dir.join("logs").display()
        )
    }

    /// Waits until the agent has seen a datastore revision newer than
    /// `after` (0: any) and the dataplane runs it.
    async fn wait_synced(&self, after: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let s = self.agent_status().await?;
            if s.datastore_revision > after
                && s.synced_revision >= s.datastore_revision
                && s.dataplane_connected
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the dataplane did not catch up in {READY_TIMEOUT:?} (datastore revision {}, synced {})",
                    s.datastore_revision,
                    s.synced_revision
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Collects a child's exit status if it is ours (the supervisor, when
/// `lab up` and `lab down` run in one process, as in tests).
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `ip` with `args`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
