//! Pod to pod, full path: Caracal (memif pods, route, stateful policy
//! compiled from NetworkPolicies, flow table) against the Linux kernel as
//! Calico's standard dataplane uses it (veth pods, IP forwarding,
//! conntrack, an nftables ruleset with the same rules), driven by the same
//! generator: memif clients for Caracal's pods, AF_PACKET sockets on the
//! kernel pods' veths.
//!
//! For every rule count and flow count, two phases: a first pass sending
//! each flow once (every packet a new flow: policy evaluated, flow
//! installed — the connection-setup rate), then a timed trial over the
//! same flows (every packet an established flow).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use caracal_control::dataplane_client::{runtime_delta, DataplaneClient};
use caracal_wire::EthernetAddress;

use super::lab::{self, Dataplane, Lab};
use super::memif_floor::{generator_cores, memif_client};
use super::sys::{self, Netns};
use super::{Better, Options, Row};
use crate::pktgen::ports::AfPacketSpec;
use crate::pktgen::{self, FlowOrder, IpRange, PktgenConfig, PortRange, PortSpec, Rate, Report};

/// Two kernel pods routed through a third namespace playing the node:
/// client (veth c0) ↔ router (c1, s1; IP forwarding) ↔ server (s0).
#[derive(Debug)]
pub struct KernelPath {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
}

impl KernelPath {
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);

    pub fn new() -> anyhow::Result<KernelPath> {
        let p = KernelPath {
            client: Netns::new("kc")?,
            router: Netns::new("kr")?,
            server: Netns::new("ks")?,
        };
        for (dev, peer, ns) in [("c1", "c0", &p.client), ("s1", "s0", &p.server)] {
            sys::ip(&[
                "-n",
                &p.router.name,
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                &ns.name,
            ])?;
        }
        for (ns, dev, addr, gw) in [
            (&p.client, "c0", "10.77.0.1/24", Some("10.77.0.254")),
            (&p.router, "c1", "10.77.0.254/24", None),
            (&p.router, "s1", "10.77.1.254/24", None),
            (&p.server, "s0", "10.77.1.1/24", Some("10.77.1.254")),
        ] {
            sys::ip(&["-n", &ns.name, "addr", "add", addr, "dev", dev])?;
            sys::ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
            if let Some(gw) = gw {
                sys::ip(&["-n", &ns.name, "route", "add", "default", "via", gw])?;
            }
        }
        p.router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        Ok(p)
    }

    /// Loads an nftables file in the router.
    pub fn nft(&self, file: &Path) -> anyhow::Result<()> {
        self.router
            .exec("nft", &["-f", &file.display().to_string()])
            .map(drop)
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(ns: &Netns, dev: &str) -> anyhow::Result<EthernetAddress> {
        let text = ns.exec("cat", &[&format!("/sys/class/net/{dev}/address")])?;
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad MAC address {text:?} of {dev}"))?;
        let mac: [u8; 6] = bytes.try_into().ok().context("a MAC has six bytes")?;
        Ok(EthernetAddress(mac))
    }
}

/// The filler rules as an nftables set of (source address, UDP port)
/// pairs, matched by one hash lookup: how an experienced nftables user
/// (and Calico's nftables mode, with its IP sets) writes N such rules,
/// rather than N rules walked one by one.
pub fn filler_set(count: usize) -> String {
    let elements: Vec<String> = (0..count)
        .map(|i| {
            let (addr, port) = lab::filler_source(i);
            format!("{addr} . {port}")
        })
        .collect();
    let mut set = String::from(" set fillers {\n  type ipv4_addr . inet_service\n");
    if !elements.is_empty() {
        set += &format!("  elements = {{ {} }}\n", elements.join(", "));
    }
    set += " }\n";
    set
}

/// Sets a sysctl of the initial namespace for the life of the value, and
/// restores the old value when dropped.
struct Sysctl {
    path: String,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> anyhow::Result<Sysctl> {
        let old = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))?;
        Ok(Sysctl {
            path: path.into(),
            old: old.trim().into(),
        })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

/// One size of the experiment.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Packets per second the path took from the generator, millions.
    taken: f64,
    /// Packets per second received at the far end, millions.
    delivered: f64,
    /// The forwarding worker's TSC cycles per packet (Caracal only).
    cycles: Option<f64>,
}

/// First pass and established trial over `flows` flows.
#[derive(Debug, Clone, Copy)]
struct PathResult {
    first: Phase,
    established: Phase,
}

/// The flows of one run: sources ports over 50 000 values, destination
/// ports from `dport_base` upwards, `flows` tuples in order.
fn traffic(cfg: &mut PktgenConfig, src: Ipv4Addr, dst: Ipv4Addr, flows: u32, dport_base: u16) {
    let t = &mut cfg.traffic;
    t.flows = flows;
    t.order = FlowOrder::Sequential;
    t.src = IpRange::single(IpAddr::V4(src));
    t.dst = IpRange::single(IpAddr::V4(dst));
    t.sport = PortRange {
        first: 10_000,
        count: 50_000,
    };
    t.dport = PortRange {
        first: dport_base,
        count: flows.div_ceil(50_000).max(1),
    };
}

fn rx_mpps(r: &Report) -> f64 {
    r.rx.as_ref().map_or(0.0, |rx| rx.pps / 1e6)
}

fn tx_mpps(r: &Report) -> f64 {
    r.tx.as_ref().map_or(0.0, |tx| tx.pps / 1e6)
}

/// Both phases with one generator; `runtime` reads the DUT's counters
/// (Caracal) before and after each phase.
fn phases(
    opts: &Options,
    cfg: &PktgenConfig,
    flows: u32,
    mut runtime: impl FnMut() -> anyhow::Result<Option<caracal_proto::dataplane::Runtime>>,
) -> anyhow::Result<PathResult> {
    let mut engine = pktgen::Engine::open(cfg)?;
    let cycles = |a: Option<caracal_proto::dataplane::Runtime>,
                  b: Option<caracal_proto::dataplane::Runtime>| {
        a.zip(b).and_then(|(a, b)| {
            runtime_delta(&a, &b)
                .first()
                .and_then(|w| w.cycles_per_packet())
        })
    };
    let before = runtime()?;
    let first = engine.run(pktgen::RunPlan {
        rate: Rate::Line,
        duration: Some(Duration::from_secs(120)),
        count: Some(u64::from(flows)),
    });
    let after_first = runtime()?;
    let established = engine.run(pktgen::RunPlan {
        rate: Rate::Line,
        duration: Some(opts.trial),
        count: None,
    });
    let after = runtime()?;
    Ok(PathResult {
        first: Phase {
            taken: tx_mpps(&first),
            delivered: rx_mpps(&first),
            cycles: cycles(before, after_first.clone()),
        },
        established: Phase {
            taken: tx_mpps(&established),
            delivered: rx_mpps(&established),
            cycles: cycles(after_first, after),
        },
    })
}

fn caracal(opts: &Options, rules: usize, flow_counts: &[u32]) -> anyhow::Result<Vec<PathResult>> {
    let namespace = Lab::namespace_name(&format!("fp{rules}"));
    let source = opts.work_dir.join(format!("full-path-{rules}"));
    std::fs::create_dir_all(&source)?;
    let mut yaml = lab::namespace_yaml(&namespace);
    yaml += &lab::pod_yaml(&namespace, "client", "client", Some("memif"));
    yaml += &lab::pod_yaml(&namespace, "server", "server", Some("memif"));
    std::fs::write(source.join("pods.yaml"), yaml)?;
    // rules - 1 fillers, then the rule that admits the client.
    let policies = lab::filler_policies_yaml(&namespace, "server", rules.saturating_sub(1));
    std::fs::write(source.join("fillers.yaml"), policies)?;
    let max_flows = flow_counts.iter().copied().max().unwrap_or(0);
    let lab = Lab::up(
        opts,
        &format!("fp{rules}"),
        &source,
        &Dataplane::pinned(opts.dut_cpu, (max_flows * 2).max(256 * 1024)),
    )?;
    let client = lab.pod("client")?;
    let server = lab.pod("server")?;
    let (client_ip, server_ip) = (client.ipv4()?, server.ipv4()?);
    let allow = opts.work_dir.join(format!("allow-{rules}.yaml"));
    std::fs::write(
        &allow,
        lab::ingress_policy_yaml(
            &namespace,
            "allow-client",
            "server",
            &format!("{client_ip}/32"),
            (1024, 65535),
        ),
    )?;
    lab.apply(&allow)?;
    let memif = |socket: Option<String>| -> anyhow::Result<PortSpec> {
        let socket = socket.context("a memif pod without a socket")?;
        Ok(memif_client(Path::new(&socket)))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut api = rt.block_on(DataplaneClient::connect(&lab.dataplane_socket()))?;
    let mut out = Vec::new();
    for (i, &flows) in flow_counts.iter().enumerate() {
        let mut cfg = PktgenConfig {
            tx: Some(memif(client.socket.clone())?),
            rx: Some(memif(server.socket.clone())?),
            cores: generator_cores(opts),
            hugepages: false,
            ..PktgenConfig::default()
        };
        cfg.traffic.dst_mac = crate::frames::GATEWAY_MAC;
        traffic(&mut cfg, client_ip, server_ip, flows, 2000 + 100 * i as u16);
        out.push(phases(opts, &cfg, flows, || {
            Ok(Some(rt.block_on(api.runtime())?))
        })?);
    }
    drop(lab);
    Ok(out)
}

fn kernel(opts: &Options, rules: usize, flow_counts: &[u32]) -> anyhow::Result<Vec<PathResult>> {
    let path = KernelPath::new()?;
    // Calico's shape: established traffic accepted by conntrack first,
    // new connections to the pod through its policy chain.
    let nft = format!(
        "table inet cbench {{\n{}  chain forward {{\n  type filter hook forward priority 0; policy accept;\n  ct state established,related accept\n  ip daddr {} jump to-server\n }}\n chain to-server {{\n  ip saddr . udp dport @fillers accept\n  ip saddr {} udp dport 1024-65535 accept\n  drop\n }}\n}}\n",
        filler_set(rules.saturating_sub(1)),
        KernelPath::SERVER,
        KernelPath::CLIENT
    );
    let file = opts.work_dir.join(format!("kernel-{rules}.nft"));
    std::fs::write(&file, nft)?;
    path.nft(&file)?;
    // The server pod drops what arrives (no ICMP port-unreachable storm).
    let sink = opts.work_dir.join("kernel-sink.nft");
    std::fs::write(
        &sink,
        "table inet sink {\n chain input {\n  type filter hook input priority 0; policy accept;\n  udp dport 1024-65535 drop\n }\n}\n",
    )?;
    path.server
        .exec("nft", &["-f", &sink.display().to_string()])?;
    let max_flows = flow_counts.iter().copied().max().unwrap_or(0);
    let _max = Sysctl::set(
        "/proc/sys/net/netfilter/nf_conntrack_max",
        &(max_flows * 2).max(262_144).to_string(),
    )?;
    let _buckets = Sysctl::set(
        "/sys/module/nf_conntrack/parameters/hashsize",
        &max_flows.next_power_of_two().max(65_536).to_string(),
    )?;
    let router_mac = KernelPath::mac(&path.router, "c1")?;
    let client_mac = KernelPath::mac(&path.client, "c0")?;
    let cores = {
        // The kernel forwards in the softirq of the sending CPU: the tx
        // thread's core is the kernel's forwarding core.
        let mut c = generator_cores(opts);
        c.push(opts.dut_cpu);
        c
    };
    let mut out = Vec::new();
    for (i, &flows) in flow_counts.iter().enumerate() {
        let mut cfg = PktgenConfig {
            tx: Some(PortSpec::AfPacket(AfPacketSpec {
                iface: "c0".into(),
                netns: Some(path.client.name.clone()),
            })),
            rx: Some(PortSpec::AfPacket(AfPacketSpec {
                iface: "s0".into(),
                netns: Some(path.server.name.clone()),
            })),
            cores: cores.clone(),
            hugepages: false,
            ..PktgenConfig::default()
        };
        cfg.traffic.src_mac = client_mac;
        cfg.traffic.dst_mac = router_mac;
        traffic(
            &mut cfg,
            KernelPath::CLIENT,
            KernelPath::SERVER,
            flows,
            2000 + 100 * i as u16,
        );
        out.push(phases(opts, &cfg, flows, || Ok(None))?);
    }
    Ok(out)
}

pub fn full_path(
    opts: &Options,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (rule_counts, flow_counts): (&[usize], &[u32]) = if opts.quick {
        (&[100], &[10_000])
    } else {
        (&[1_000, 10_000], &[10_000, 1_000_000])
    };
    for &rules in rule_counts {
        let ours = caracal(opts, rules, flow_counts)?;
        let peer = kernel(opts, rules, flow_counts)?;
        for ((o, p), flows) in ours.iter().zip(&peer).zip(flow_counts) {
            let case = format!("{rules} rules, {flows} flows");
            for (phase, o, p) in [
                ("first packet", o.first, p.first),
                ("established", o.established, p.established),
            ] {
                rows.push(Row::new(
                    &case,
                    format!("{phase}, taken"),
                    "Mpps",
                    Better::Higher,
                    o.taken,
                    p.taken,
                ));
                rows.push(Row::new(
                    &case,
                    format!("{phase}, delivered"),
                    "Mpps",
                    Better::Higher,
                    o.delivered,
                    p.delivered,
                ));
            }
            notes.push(format!(
                "{case}: Caracal's worker spent {} TSC cycles per first packet and {} per established packet.",
                o.first.cycles.map_or("?".into(), |c| format!("{c:.0}")),
                o.established.cycles.map_or("?".into(), |c| format!("{c:.0}")),
            ));
        }
    }
    notes.push(format!(
        "64-byte UDP from a client pod to a server pod whose ingress holds N rules (N-1 NetworkPolicies \
         that never match, then the one admitting the client). Caracal: memif pods in the lab, one \
         worker polling CPU {} with caracal-pktgen's memif clients on the other core (one thread \
         alternating tx and rx). Kernel: veth pods through a forwarding namespace with conntrack \
         (established accepted first, as Calico does) and the same N rules in nftables, the N-1 \
         ipBlock rules as one set of address . port pairs; caracal-pktgen over AF_PACKET (tx and rx \
         threads on both cores; the sending thread also carries the kernel's forwarding in softirq). \
         One-way UDP never becomes ESTABLISHED in conntrack (that takes a reply), so every kernel \
         packet goes through the chain; Caracal's flow entry is established by the first packet. \
         First packet: every flow once, at line rate; established: {:?} over the same flows. \
         Taken: the rate the path accepted from the generator; delivered: what reached the far end.",
        opts.dut_cpu, opts.trial
    ));
    Ok(())
}
