//! `caracal-pktgen`: the poll-mode traffic generator and sink. The
//! options are documented in `caracal_perf::pktgen`; this file only turns
//! the command line into a `PktgenConfig` and prints the `Report`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use caracal_perf::pktgen::rate::{parse_count, parse_duration};
use caracal_perf::pktgen::{
    self, FlowOrder, FrameSizes, IpRange, PktgenConfig, PortRange, PortSpec, Rate, SearchConfig,
    TrafficSpec, L3, L4,
};
use caracal_wire::EthernetAddress;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "caracal-pktgen",
    version,
    about = "Poll-mode traffic generator and sink over memif, AF_PACKET and AF_XDP",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send (and/or receive) at a fixed rate or line rate (the default).
    Run(RunArgs),
    /// RFC 2544 binary search for NDR (no loss) and PDR (loss ≤ --pdr-loss).
    Ndr(NdrArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// line, or e.g. 2Mpps, 500kpps, 10Gbps (layer 1).
    #[arg(long, default_value = "line", value_parser = Rate::parse)]
    rate: Rate,
    /// Stop sending after this long (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop sending after this many packets (e.g. 1M); without
    /// --duration there is no time limit then.
    #[arg(long, value_parser = parse_count)]
    count: Option<u64>,
}

#[derive(Debug, Args)]
struct NdrArgs {
    #[command(flatten)]
    common: Common,
    /// Highest rate tried (pps units, e.g. 10Mpps, or Gbps).
    #[arg(long, value_parser = Rate::parse)]
    max_rate: Rate,
    /// Length of each trial.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    trial: Duration,
    /// Stop when NDR/PDR are bracketed this tightly (default: 1 % of
    /// --max-rate).
    #[arg(long, value_parser = Rate::parse)]
    resolution: Option<Rate>,
    /// PDR loss tolerance, percent.
    #[arg(long, default_value_t = 0.5)]
    pdr_loss: f64,
}

#[derive(Debug, Args)]
struct Common {
    /// Port to send on: memif:socket=PATH[,role=client|server][,id=N]
    /// [,secret=S][,ring=N], af_packet:iface=NAME[,netns=NS] or
    /// af_xdp:iface=NAME[,netns=NS][,queue=Q][,mode=auto|zc|copy|skb]
    /// [,frames=N].
    #[arg(long)]
    tx: Option<PortSpec>,
    /// Port to receive on (may equal --tx).
    #[arg(long)]
    rx: Option<PortSpec>,
    /// Frame bytes without FCS, up to 9216 (jumbo; the ports' MTUs must
    /// allow it), or "imix" (7×64, 4×576, 1×1500).
    #[arg(long, default_value = "64")]
    size: String,
    #[arg(long)]
    ipv6: bool,
    #[arg(long)]
    tcp: bool,
    /// Number of flows (streams).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Draw the flows' 5-tuples at random (seeded) from the ranges.
    #[arg(long)]
    random_flows: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Source addresses: IP or IP+COUNT.
    #[arg(long)]
    src: Option<String>,
    /// Destination addresses: IP or IP+COUNT.
    #[arg(long)]
    dst: Option<String>,
    /// Source ports: P or P+COUNT.
    #[arg(long, default_value = "1024+64512")]
    sport: String,
    /// Destination ports: P or P+COUNT.
    #[arg(long, default_value = "5001")]
    dport: String,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    src_mac: EthernetAddress,
    /// Destination MAC (Caracal's pod gateway is ee:ee:ee:ee:ee:ee).
    #[arg(long, default_value = "02:00:00:00:00:02")]
    dst_mac: EthernetAddress,
    /// Packets per tx burst.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Cores for the tx and rx threads, e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// How long the sink waits for stragglers after tx stops.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    drain: Duration,
    /// How long to wait for memif peers.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Buffers per pool (tx and rx each).
    #[arg(long, default_value_t = 8192)]
    buffers: u32,
    /// Do not try hugepages for the buffer pools.
    #[arg(long)]
    no_hugepages: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

/// `IP` or `IP+COUNT`.
fn ip_range(s: &str) -> anyhow::Result<IpRange> {
    let (ip, count) = s.split_once('+').unwrap_or((s, "1"));
    Ok(IpRange {
        first: ip.parse().with_context(|| format!("address {ip:?}"))?,
        count: count.parse().with_context(|| format!("count in {s:?}"))?,
    })
}

/// `PORT` or `PORT+COUNT`.
fn port_range(s: &str) -> anyhow::Result<PortRange> {
    let (p, count) = s.split_once('+').unwrap_or((s, "1"));
    Ok(PortRange {
        first: p.parse().with_context(|| format!("port {p:?}"))?,
        count: count.parse().with_context(|| format!("count in {s:?}"))?,
    })
}

fn config(c: &Common) -> anyhow::Result<PktgenConfig> {
    let l3 = if c.ipv6 { L3::Ipv6 } else { L3::Ipv4 };
    let default_addr = |v4: [u8; 4], v6: &str| -> IpAddr {
        match l3 {
            L3::Ipv4 => IpAddr::from(v4),
            L3::Ipv6 => v6.parse().expect("literal"),
        }
    };
    let sizes = if c.size.eq_ignore_ascii_case("imix") {
        FrameSizes::Imix
    } else {
        FrameSizes::Fixed(
            c.size
                .parse()
                .with_context(|| format!("--size {}", c.size))?,
        )
    };
    let traffic = TrafficSpec {
        l3,
        l4: if c.tcp { L4::Tcp } else { L4::Udp },
        sizes,
        flows: c.flows,
        order: if c.random_flows {
            FlowOrder::Random { seed: c.seed }
        } else {
            FlowOrder::Sequential
        },
        src: match &c.src {
            Some(s) => ip_range(s)?,
            None => IpRange::single(default_addr([10, 0, 0, 1], "fd00::1")),
        },
        dst: match &c.dst {
            Some(s) => ip_range(s)?,
            None => IpRange::single(default_addr([10, 1, 0, 1], "fd00:1::1")),
        },
        sport: port_range(&c.sport)?,
        dport: port_range(&c.dport)?,
        src_mac: c.src_mac,
        dst_mac: c.dst_mac,
    };
    if c.tx.is_none() && c.rx.is_none() {
        bail!("give --tx PORT, --rx PORT, or both (see --help)");
    }
    Ok(PktgenConfig {
        tx: c.tx.clone(),
        rx: c.rx.clone(),
        traffic,
        burst: c.burst,
        cores: c.cores.clone(),
        drain: c.drain,
        connect_timeout: c.connect_timeout,
        buffers: c.buffers,
        hugepages: !c.no_hugepages,
        progress: !c.quiet,
        ..PktgenConfig::default()
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Run(cli.run)) {
        Cmd::Run(a) => {
            let mut cfg = config(&a.common)?;
            cfg.rate = a.rate;
            cfg.count = a.count;
            cfg.duration = match (a.duration, a.count) {
                (None, Some(_)) => None,
                (d, _) => Some(d.unwrap_or(Duration::from_secs(10))),
            };
            let report = pktgen::run(&cfg)?;
            if a.common.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Cmd::Ndr(a) => {
            let cfg = config(&a.common)?;
            let templates =
                pktgen::builder::Templates::build(&cfg.traffic, pktgen::builder::MAX_FRAME)?;
            let mean = templates.mean_size();
            let max = a
                .max_rate
                .pps(mean)
                .context("--max-rate must be a rate, not line")?;
            let mut search = SearchConfig::new(max);
            if let Some(r) = a.resolution {
                search.resolution_pps = r.pps(mean).context("--resolution must be a rate")?;
            }
            if !(0.0..100.0).contains(&a.pdr_loss) {
                bail!("--pdr-loss is a percentage below 100");
            }
            search.pdr_loss = a.pdr_loss / 100.0;
            let report = pktgen::ndr(&cfg, &search, a.trial)?;
            if a.common.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "caracal-pktgen",
            "--tx",
            "memif:socket=/run/x.sock,role=client",
            "--rx",
            "memif:socket=/run/y.sock,role=client",
            "--size",
            "64",
            "--flows",
            "1000",
            "--rate",
            "2Mpps",
            "--duration",
            "10s",
            "--json",
        ])
        .unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.run.rate, Rate::Pps(2e6));
        let cfg = config(&cli.run.common).unwrap();
        assert_eq!(cfg.traffic.flows, 1000);
        assert!(cfg.tx.is_some() && cfg.tx != cfg.rx);

        let cli = Cli::try_parse_from([
            "caracal-pktgen",
            "ndr",
            "--tx",
            "af_packet:iface=veth0,netns=lab",
            "--rx",
            "af_packet:iface=veth1,netns=lab",
            "--max-rate",
            "10Mpps",
            "--trial",
            "1s",
            "--ipv6",
            "--tcp",
            "--size",
            "imix",
            "--src",
            "fd00::1+100",
        ])
        .unwrap();
        let Some(Cmd::Ndr(a)) = cli.cmd else {
            panic!("ndr expected")
        };
        assert_eq!(a.max_rate, Rate::Pps(1e7));
        let cfg = config(&a.common).unwrap();
        assert_eq!(cfg.traffic.src.count, 100);
        assert_eq!(cfg.traffic.sizes, FrameSizes::Imix);
    }
}
