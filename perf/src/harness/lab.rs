//! A lab (DESIGN §6) for one scenario, driven through the real
//! `caracalctl lab` commands: its own state folder, a namespace named
//! after this process so that parallel runs do not collide, `lab down`
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use serde::Deserialize;

use super::Options;

/// A pod as `lab status --json` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub netns: String,
    pub ips: Vec<String>,
    pub interface: String,
    #[serde(default)]
    pub socket: Option<String>,
}

impl Pod {
    /// The pod's first IPv4 address.
    pub fn ipv4(&self) -> anyhow::Result<std::net::Ipv4Addr> {
        self.ips
            .iter()
            .find_map(|a| a.parse().ok())
            .with_context(|| format!("pod {}/{} has no IPv4 address", self.namespace, self.name))
    }

    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns)
    }
}

#[derive(Debug, Deserialize)]
struct Status {
    pods: Vec<Pod>,
}

/// How the lab's dataplane runs.
#[derive(Debug, Clone)]
pub struct Dataplane {
    /// `--workers` (a count or a CPU list such as "1-1").
    pub workers: String,
    /// `--mode`: "poll" or "adaptive".
    pub mode: &'static str,
    /// `--flows`: flow table capacity.
    pub flows: u32,
}

impl Dataplane {
    /// One unpinned worker that sleeps when idle, as the lab runs by default.
    pub fn adaptive() -> Dataplane {
        Dataplane {
            workers: "1".into(),
            mode: "adaptive",
            flows: 256 * 1024,
        }
    }

    /// One worker busy-polling on `cpu`, as a benchmarked node runs.
    pub fn pinned(cpu: usize, flows: u32) -> Dataplane {
        Dataplane {
            workers: format!("{cpu}-{cpu}"),
            mode: "poll",
            flows,
        }
    }
}

/// A running lab, taken down when dropped.
#[derive(Debug)]
pub struct Lab {
    state_dir: PathBuf,
    bin_dir: PathBuf,
    /// The Kubernetes namespace every object of this lab lives in.
    pub namespace: String,
}

impl Lab {
    /// The namespace name a scenario's manifests should use.
    pub fn namespace_name(tag: &str) -> String {
        format!("cb{}-{tag}", std::process::id())
    }

    /// `lab up` over the manifests in `source` (which must put every
    /// object in `namespace`).
    pub fn up(
        opts: &Options,
        tag: &str,
        source: &Path,
        dataplane: &Dataplane,
    ) -> anyhow::Result<Lab> {
        let lab = Lab {
            state_dir: opts.work_dir.join(format!("lab-{tag}")),
            bin_dir: opts.bin_dir.clone(),
            namespace: Lab::namespace_name(tag),
        };
        let mut cmd = lab.command();
        cmd.env(
            caracal_control::lab::supervisor::WORKERS_ENV,
            &dataplane.workers,
        )
        .env(caracal_control::lab::supervisor::MODE_ENV, dataplane.mode)
        .env(
            caracal_control::lab::supervisor::FLOWS_ENV,
            dataplane.flows.to_string(),
        )
        .arg("up")
        .arg(source);
        lab.run(cmd)?;
        Ok(lab)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("caracalctl"));
        cmd.arg("lab")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--bin-dir")
            .arg(&self.bin_dir)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, mut cmd: Command) -> anyhow::Result<String> {
        let out = cmd.output().context("cannot run caracalctl")?;
        if !out.status.success() {
            bail!(
                "caracalctl lab: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lab apply -f PATH`: returns once the dataplane runs the new state.
    pub fn apply(&self, path: &Path) -> anyhow::Result<()> {
        let mut cmd = self.command();
        cmd.args(["apply", "-f"]).arg(path);
        self.run(cmd).map(drop)
    }

    /// `lab delete -f PATH`.
    pub fn delete(&self, path: &Path) -> anyhow::Result<()> {
        let mut cmd = self.command();
        cmd.args(["delete", "-f"]).arg(path);
        self.run(cmd).map(drop)
    }

    pub fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let mut cmd = self.command();
        cmd.args(["status", "--json"]);
        let text = self.run(cmd)?;
        let status: Status = serde_json::from_str(&text).context("reading `lab status --json`")?;
        Ok(status.pods)
    }

    pub fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        self.pods()?
            .into_iter()
            .find(|p| p.name == name)
            .with_context(|| format!("the lab has no pod {name}"))
    }

    /// The folder the agent watches: a manifest written here (one object
    /// per file) is what `lab apply` would store.
    pub fn manifests_dir(&self) -> PathBuf {
        self.state_dir.join("manifests")
    }

    /// The agent's CNI socket and the plugin's folder, to run CNI
    /// commands as a container runtime does.
    pub fn agent_socket(&self) -> PathBuf {
        caracal_control::lab::Lab::new(self.state_dir.clone(), self.bin_dir.clone()).agent_socket()
    }

    /// The dataplane's API socket.
    pub fn dataplane_socket(&self) -> PathBuf {
        caracal_control::lab::Lab::new(self.state_dir.clone(), self.bin_dir.clone())
            .dataplane_socket()
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut cmd = self.command();
        cmd.arg("down");
        if let Err(e) = self.run(cmd) {
            eprintln!("caracal-bench: lab down: {e:#}");
        }
    }
}

/// A Namespace manifest.
pub fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n---\n")
}

/// A Pod manifest with one label `app` and, when given, the interface
/// annotation.
pub fn pod_yaml(namespace: &str, name: &str, app: &str, interface: Option<&str>) -> String {
    let annotations = interface
        .map(|i| format!("  annotations: {{caracal.io/interface: {i}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: {app}}}\n{annotations}spec:\n  containers:\n  - name: c\n    image: none\n---\n"
    )
}

/// A NetworkPolicy selecting pods `app` and admitting UDP from `cidr` to
/// ports `ports.0..=ports.1`.
pub fn ingress_policy_yaml(
    namespace: &str,
    name: &str,
    app: &str,
    cidr: &str,
    ports: (u16, u16),
) -> String {
    let end_port = if ports.1 > ports.0 {
        format!(", endPort: {}", ports.1)
    } else {
        String::new()
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  podSelector:\n    matchLabels: {{app: {app}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {cidr}}}\n    ports:\n    - {{protocol: UDP, port: {}{end_port}}}\n---\n",
        ports.0
    )
}

/// The `i`-th filler rule's source address and port: addresses that send
/// nothing, so that a filler never matches the benchmark's traffic but
/// the classifier must still hold and search it.
pub fn filler_source(i: usize) -> (std::net::Ipv4Addr, u16) {
    (
        std::net::Ipv4Addr::new(172, 16, (i / 250) as u8, (i % 250) as u8 + 1),
        1000 + (i % 50_000) as u16,
    )
}

/// `count` filler policies selecting pods `app`, one rule each.
pub fn filler_policies_yaml(namespace: &str, app: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            let (addr, port) = filler_source(i);
            ingress_policy_yaml(
                namespace,
                &format!("filler-{i}"),
                app,
                &format!("{addr}/32"),
                (port, port),
            )
        })
        .collect()
}
