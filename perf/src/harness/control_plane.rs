//! Control-plane scenarios: how long a pod waits for its network (CNI ADD,
//! 100 pods at once, as a node does when a Deployment scales up), and how
//! long a NetworkPolicy change takes to be enforced on live traffic.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use caracal_control::lab::cni::{self, Attachment};
use serde_json::json;

use super::kernel::KernelPath;
use super::lab::{self, Dataplane, Lab};
use super::sys::{self, Netns};
use super::{quantile, Better, Options, Row};

/// Where Debian's containernetworking-plugins puts the reference plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Times `command` for every attachment, all started at once from their
/// own threads; returns the latencies in milliseconds.
fn parallel_cni(
    plugin: &Path,
    cni_path: &Path,
    command: &'static str,
    config: &serde_json::Value,
    pods: &[(String, String)],
    namespace: &str,
    netns: &[Netns],
) -> anyhow::Result<Vec<f64>> {
    let barrier = Arc::new(Barrier::new(pods.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .zip(netns)
            .map(|((pod, container_id), ns)| {
                let barrier = Arc::clone(&barrier);
                s.spawn(move || {
                    let path = ns.path();
                    let att = Attachment {
                        container_id,
                        netns: &path,
                        namespace,
                        pod,
                    };
                    barrier.wait();
                    let started = Instant::now();
                    cni::run_plugin(plugin, cni_path, command, &att, config)
                        .with_context(|| format!("CNI {command} of {pod}"))?;
                    Ok(started.elapsed().as_secs_f64() * 1e3)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("CNI thread panicked"))
            .collect()
    })
}

/// ADD then DEL for `count` pods with one plugin; returns the ADD
/// latencies in milliseconds.
fn add_and_del(
    plugin: &Path,
    cni_path: &Path,
    config: &serde_json::Value,
    namespace: &str,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let pods: Vec<(String, String)> = (0..count)
        .map(|i| (format!("p{i}"), cni::new_container_id()))
        .collect();
    let netns = (0..count)
        .map(|_| Netns::new("cni"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let adds = parallel_cni(plugin, cni_path, "ADD", config, &pods, namespace, &netns);
    // Always DEL, also after a failed ADD: nothing may be left behind.
    let dels = parallel_cni(plugin, cni_path, "DEL", config, &pods, namespace, &netns);
    let adds = adds?;
    dels?;
    Ok(adds)
}

/// CNI ADD latency p50/p99 with `count` pods added at once: the caracal
/// plugin against a running lab's agent, and the reference bridge plugin
/// with host-local IPAM.
pub fn cni_add(opts: &Options, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    let count = if opts.quick { 20 } else { 100 };
    let bridge = Path::new(REFERENCE_PLUGINS).join("bridge");
    if !bridge.exists() {
        bail!(
            "{} not found: install Debian's containernetworking-plugins (scripts/install-deps.sh does)",
            bridge.display()
        );
    }

    // Caracal: the namespace and the pods are in the datastore before
    // the runtime asks, as in a cluster.
    let namespace = Lab::namespace_name("cni");
    let source = opts.work_dir.join("cni-add");
    std::fs::create_dir_all(&source)?;
    std::fs::write(source.join("ns.yaml"), lab::namespace_yaml(&namespace))?;
    let lab = Lab::up(opts, "cni", &source, &Dataplane::adaptive())?;
    let pods: String = (0..count)
        .map(|i| lab::pod_yaml(&namespace, &format!("p{i}"), "bench", None))
        .collect();
    std::fs::write(lab.manifests_dir().join("bench-pods.yaml"), pods)?;
    let config = cni::network_config(&lab.agent_socket(), None);
    let ours = add_and_del(
        &lab.bin_dir().join("caracal"),
        lab.bin_dir(),
        &config,
        &namespace,
        count,
    );
    drop(lab);
    let mut ours = ours?;

    let bridge_name = format!("cbbr{}", std::process::id() % 100_000);
    let host_local = opts.work_dir.join("host-local");
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "cbench",
        "type": "bridge",
        "bridge": bridge_name,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "subnet": "10.98.0.0/16",
            "dataDir": host_local,
        },
    });
    let peer = add_and_del(
        &bridge,
        Path::new(REFERENCE_PLUGINS),
        &config,
        &namespace,
        count,
    );
    let _ = sys::ip(&["link", "del", &bridge_name]);
    let mut peer = peer?;

    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(Row::new(
            format!("{count} pods at once"),
            format!("ADD latency {name}"),
            "ms",
            Better::Lower,
            quantile(&mut ours, q),
            quantile(&mut peer, q),
        ));
    }
    notes.push(format!(
        "Each pod's netns exists before the clock starts; {count} threads then run the plugin binary \
         at once, exactly as a container runtime does (CNI_* environment, config on stdin). \
         Caracal: pod in the agent's datastore, IPAM block affinity, tap created in the netns, \
         dataplane programmed and policy state installed before ADD returns. Peer: bridge + \
         host-local (veth into a Linux bridge, no policy)."
    ));
    Ok(())
}

/// UDP datagrams sent every `interval` from one netns to another, and the
/// arrival time of each one that gets through.
struct UdpProbe {
    stop: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl UdpProbe {
    const PORT: u16 = 5001;

    fn start(
        client_netns: String,
        server_netns: String,
        server: Ipv4Addr,
    ) -> anyhow::Result<UdpProbe> {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let rx = {
            let (stop, arrivals) = (Arc::clone(&stop), Arc::clone(&arrivals));
            std::thread::spawn(move || -> anyhow::Result<()> {
                sys::enter_netns(&server_netns)?;
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, Self::PORT))?;
                sock.set_read_timeout(Some(Duration::from_millis(20)))?;
                let _ = ready_tx.send(());
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if sock.recv(&mut buf).is_ok() {
                        arrivals.lock().expect("probe lock").push(Instant::now());
                    }
                }
                Ok(())
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the probe's receiver did not start")?;
        let tx = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> anyhow::Result<()> {
                sys::enter_netns(&client_netns)?;
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                let to = SocketAddr::from((server, Self::PORT));
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A denied datagram may come back as an ICMP error;
                    // the next send reports it: not a failure here.
                    let _ = sock.send_to(&seq.to_be_bytes(), to);
                    seq += 1;
                    std::thread::sleep(Duration::from_micros(500));
                }
                Ok(())
            })
        };
        Ok(UdpProbe {
            stop,
            arrivals,
            threads: vec![rx, tx],
        })
    }

    fn arrivals_after(&self, t: Instant) -> Vec<Instant> {
        let a = self.arrivals.lock().expect("probe lock");
        a.iter().copied().filter(|&x| x > t).collect()
    }

    /// Waits until datagrams arrive again; returns when the first one
    /// after `t0` did.
    fn first_after(&self, t0: Instant, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = t0 + timeout;
        loop {
            if let Some(&first) = self.arrivals_after(t0).first() {
                return Ok(first);
            }
            if Instant::now() > deadline {
                bail!("traffic did not resume within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until nothing has arrived for `quiet`; returns the last
    /// arrival after `t0` (or `t0` when nothing arrived after it).
    fn last_before_quiet(
        &self,
        t0: Instant,
        quiet: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let deadline = t0 + timeout;
        loop {
            let last = self.arrivals_after(t0).last().copied().unwrap_or(t0);
            if last.elapsed() >= quiet {
                return Ok(last);
            }
            if Instant::now() > deadline {
                bail!("traffic did not stop within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("probe thread panicked")?;
        }
        Ok(())
    }
}

/// The policy change latencies of one side, milliseconds.
#[derive(Debug, Default)]
struct Latencies {
    deny: Vec<f64>,
    allow: Vec<f64>,
}

/// Alternately removes and restores the client's allow rule through
/// `change(allowed)` and times, on the probe's traffic, when the change
/// took effect.
fn toggle(
    probe: &UdpProbe,
    rounds: usize,
    mut change: impl FnMut(bool) -> anyhow::Result<()>,
) -> anyhow::Result<Latencies> {
    const QUIET: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_secs(30);
    let mut l = Latencies::default();
    probe.first_after(Instant::now(), TIMEOUT)?;
    for _ in 0..rounds {
        let t0 = Instant::now();
        change(false)?;
        let last = probe.last_before_quiet(t0, QUIET, TIMEOUT)?;
        l.deny.push(last.duration_since(t0).as_secs_f64() * 1e3);
        let t0 = Instant::now();
        change(true)?;
        let first = probe.first_after(t0, TIMEOUT)?;
        l.allow.push(first.duration_since(t0).as_secs_f64() * 1e3);
    }
    Ok(l)
}

fn caracal_policy_change(
    opts: &Options,
    policies: usize,
    rounds: usize,
) -> anyhow::Result<Latencies> {
    let namespace = Lab::namespace_name("pol");
    let source = opts.work_dir.join(format!("policy-{policies}"));
    std::fs::create_dir_all(&source)?;
    let mut yaml = lab::namespace_yaml(&namespace);
    yaml += &lab::pod_yaml(&namespace, "client", "client", None);
    yaml += &lab::pod_yaml(&namespace, "server", "server", None);
    std::fs::write(source.join("pods.yaml"), yaml)?;
    let fillers = lab::filler_policies_yaml(&namespace, "server", policies);
    std::fs::write(source.join("fillers.yaml"), fillers)?;
    let lab = Lab::up(
        opts,
        &format!("pol{policies}"),
        &source,
        &Dataplane::adaptive(),
    )?;
    let client = lab.pod("client")?;
    let server = lab.pod("server")?;
    let allow = lab::ingress_policy_yaml(
        &namespace,
        "allow-client",
        "server",
        &format!("{}/32", client.ipv4()?),
        (UdpProbe::PORT, UdpProbe::PORT),
    );
    // The agent watches this folder: writing or removing the file is the
    // change (what `lab apply` does, without waiting for it).
    let allow_file: PathBuf = lab.manifests_dir().join("bench-allow-client.yaml");
    std::fs::write(&allow_file, &allow)?;
    let probe = UdpProbe::start(client.netns_path(), server.netns_path(), server.ipv4()?)?;
    let result = toggle(&probe, rounds, |allowed| {
        if allowed {
            let tmp = allow_file.with_extension("tmp");
            std::fs::write(&tmp, &allow)?;
            std::fs::rename(&tmp, &allow_file)?;
        } else {
            std::fs::remove_file(&allow_file)?;
        }
        Ok(())
    });
    probe.stop()?;
    drop(lab);
    result
}

/// The kernel side: client and server netns routed through a router
/// netns whose nftables forward chain holds the same rules (the fillers
/// as one set); a change rewrites the server's chain in one `nft -f`
/// transaction, as Calico's iptables/nftables dataplanes rewrite a
/// policy chain.
fn kernel_policy_change(
    policies: usize,
    rounds: usize,
    work_dir: &Path,
) -> anyhow::Result<Latencies> {
    let path = KernelPath::new()?;
    let chain = |allowed: bool| -> String {
        let mut c = String::from(
            "flush chain inet cbench to-server\ntable inet cbench {\n chain to-server {\n  ip saddr . udp dport @fillers accept\n",
        );
        if allowed {
            c += &format!(
                "  ip saddr {} udp dport {} accept\n",
                KernelPath::CLIENT,
                UdpProbe::PORT
            );
        }
        c += "  drop\n }\n}\n";
        c
    };
    let rules = work_dir.join(format!("nft-{policies}.nft"));
    std::fs::write(
        &rules,
        format!(
            "table inet cbench {{\n{} chain to-server {{\n }}\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n  ip daddr {} jump to-server\n }}\n}}\n{}",
            super::kernel::filler_set(policies),
            KernelPath::SERVER,
            chain(true)
        ),
    )?;
    path.nft(&rules)?;
    let probe = UdpProbe::start(path.client.path(), path.server.path(), KernelPath::SERVER)?;
    let result = toggle(&probe, rounds, |allowed| {
        std::fs::write(&rules, chain(allowed))?;
        path.nft(&rules)
    });
    probe.stop()?;
    result
}

/// NetworkPolicy change → enforced on live traffic, p50/p99, at 1k and
/// 10k policies (100 in quick mode).
pub fn policy_change(
    opts: &Options,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (sizes, rounds): (&[usize], usize) = if opts.quick {
        (&[100], 2)
    } else {
        (&[1000, 10_000], 10)
    };
    for &policies in sizes {
        let mut ours = caracal_policy_change(opts, policies, rounds)?;
        let mut peer = kernel_policy_change(policies, rounds, &opts.work_dir)?;
        for (what, o, p) in [
            ("deny", &mut ours.deny, &mut peer.deny),
            ("allow", &mut ours.allow, &mut peer.allow),
        ] {
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                rows.push(Row::new(
                    format!("{policies} policies"),
                    format!("{what} enforced {name}"),
                    "ms",
                    Better::Lower,
                    quantile(o, q),
                    quantile(p, q),
                ));
            }
        }
    }
    notes.push(format!(
        "A UDP datagram every 0.5 ms from a client pod to a server pod selected by N NetworkPolicies \
         (one ipBlock + port rule each); the change removes or restores the policy that admits the \
         client. Caracal: the manifest leaves or enters the agent's watched folder; the clock stops \
         at the last datagram through (deny: existing flows are re-evaluated) or the first one \
         through (allow). Kernel: the same rules in a router netns's nftables chain (the N \
         ipBlock rules as one set of address . port pairs), the chain rewritten in one `nft -f` \
         transaction. {rounds} rounds per size."
    ));
    Ok(())
}
