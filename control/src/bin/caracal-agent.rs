//! `caracal-agent`: the node agent.
//!
//! Watches the datastore, serves the CNI plugin and keeps the dataplane
//! running this node's pods; see [`caracal_control::agent`]. On SIGTERM or
//! SIGINT it stops serving, removes its socket and exits 0.
//!
//! ```text
//! caracal-agent --datastore kubernetes|dir:PATH [--node NAME]
//!               [--state-dir DIR] [--socket PATH] [--dataplane-socket PATH]
//!               [--default-ipv4-pool CIDR|none] [--default-ipv6-pool CIDR|none]
//!               [--mtu BYTES] [--memif-dir DIR]
//! caracal-agent --print-crds
//! ```

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use caracal_control::agent::datastore::crd::crd_manifests;
use caracal_control::agent::datastore::DatastoreSpec;
use caracal_control::agent::pools::{DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL};
use caracal_control::agent::{self, AgentConfig};
use clap::Parser;
use ipnet::IpNet;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

#[derive(Debug, Parser)]
#[command(name = "caracal-agent", version, about = "Caracal's node agent")]
struct Cli {
    /// Where objects come from: `kubernetes` (in-cluster configuration or
    /// KUBECONFIG) or `dir:PATH` (a folder of YAML/JSON manifests).
    #[arg(long, value_name = "SOURCE", required_unless_present = "print_crds")]
    datastore: Option<DatastoreSpec>,

    /// This node's name [default: the hostname].
    #[arg(long, value_name = "NAME", env = "NODENAME")]
    node: Option<String>,

    /// Folder for the agent's state (endpoints; IPAM in dir: mode).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/caracal")]
    state_dir: PathBuf,

    /// Unix socket of the agent's API (CNI and status), mode 0600.
    #[arg(long, value_name = "PATH", default_value = "/run/caracal/agent.sock")]
    socket: PathBuf,

    /// Unix socket of the dataplane's API.
    #[arg(long, value_name = "PATH", default_value = caracal_control::dataplane_client::DEFAULT_SOCKET)]
    dataplane_socket: PathBuf,

    /// IPv4 pool of dir: mode when the folder defines no IPPool
    /// (`default-ipv4-ippool`); `none` for no IPv4 pool.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_IPV4_POOL)]
    default_ipv4_pool: String,

    /// IPv6 pool of dir: mode when the folder defines no IPPool
    /// (`default-ipv6-ippool`); `none` for no IPv6 pool.
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_IPV6_POOL)]
    default_ipv6_pool: String,

    /// Pod MTU when the CNI configuration sets none, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1500,
          value_parser = clap::value_parser!(u16).range(576..=9000))]
    mtu: u16,

    /// Folder for memif pods' sockets: `<DIR>/<namespace>-<pod>/memif.sock`
    /// (an absolute path; socket paths are limited to 107 bytes).
    #[arg(long, value_name = "DIR", default_value = caracal_control::agent::memif::DEFAULT_DIR,
          value_parser = absolute_dir)]
    memif_dir: PathBuf,

    /// Print the CustomResourceDefinitions of the caracal.io kinds (YAML)
    /// and exit.
    #[arg(long)]
    print_crds: bool,
}

/// A `--default-ipvN-pool` value: a CIDR of `family`, or `none`.
fn default_pool(flag: &str, value: &str, v4: bool) -> anyhow::Result<Option<IpNet>> {
    if value == "none" {
        return Ok(None);
    }
    let net: IpNet = value
        .parse()
        .with_context(|| format!("--{flag}: invalid CIDR {value:?}"))?;
    if matches!(net, IpNet::V4(_)) != v4 {
        bail!(
            "--{flag}: {net} is not an {} range",
            if v4 { "IPv4" } else { "IPv6" }
        );
    }
    if net.trunc() != net {
        bail!(
            "--{flag}: {net} has host bits set (the network is {})",
            net.trunc()
        );
    }
    Ok(Some(net))
}

fn absolute_dir(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("{value:?} is not an absolute path"))
    }
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname (set --node)")?;
    let name = name.trim();
    if name.is_empty() {
        bail!("the hostname is empty; set --node");
    }
    Ok(name.to_owned())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_crds {
        print!("{}", crds()?);
        return Ok(());
    }
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = AgentConfig {
        datastore: cli.datastore.expect("required unless --print-crds"),
        node: match cli.node {
            Some(n) => n,
            None => hostname()?,
        },
        state_dir: cli.state_dir,
        socket: cli.socket,
        dataplane_socket: cli.dataplane_socket,
        default_ipv4_pool: default_pool("default-ipv4-pool", &cli.default_ipv4_pool, true)?,
        default_ipv6_pool: default_pool("default-ipv6-pool", &cli.default_ipv6_pool, false)?,
        mtu: cli.mtu,
        memif_dir: cli.memif_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("creating the async runtime")?;
    runtime.block_on(async {
        // Take over the signals before there is anything to clean up.
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let shutdown = async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            info!("{name}: shutting down");
        };
        agent::run(config, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })
}

/// The CRDs of every caracal.io kind: the agent's IPPool and IPAM's own.
fn crds() -> anyhow::Result<String> {
    let mut out = crd_manifests();
    for crd in caracal_control::ipam::crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).context("serializing a CRD")?);
    }
    Ok(out)
}
