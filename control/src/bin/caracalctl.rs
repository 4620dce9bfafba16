//! `caracalctl`: inspect and program a running `caracal-dataplane` through
//! its API socket.
//!
//! ```text
//! caracalctl [--socket PATH] show interfaces|routes|counters|flows|policy-log|runtime [--json]
//! caracalctl show policy NAMESPACE/POD [--json]
//! caracalctl clear runtime
//! caracalctl interface add tap NAME --netns PATH [--ifname IFNAME]
//!            [--address CIDR]... [--mtu N] [--queues N] [--configure]
//!            [--xconnect IFACE]
//! caracalctl interface add memif NAME --memif-socket PATH|@NAME --role server|client
//!            [--id N] [--secret S] [--queues N] [--address CIDR]... [--mtu N]
//!            [--mode ethernet|ip] [--rx-mode interrupt|polling]
//!            [--ring-size N] [--buffer-size N] [--peer-mac MAC] [--xconnect IFACE]
//! caracalctl interface xconnect FROM TO | FROM --off
//! caracalctl interface del NAME
//! caracalctl route add PREFIX --via IFACE[,GATEWAY] [--via ...]
//! caracalctl route del PREFIX
//! ```
//!
//! Arguments are checked for shape here; their meaning (is this a prefix,
//! does that interface exist) is the dataplane's to judge, and its error
//! message is printed as is.

// The binary's root sits in `src/bin/`, where every `.rs` file would be a
// binary of its own; its modules live in the directory named after it.
#[path = "caracalctl/lab.rs"]
mod lab_cmd;
#[path = "caracalctl/policy.rs"]
mod policy;
#[path = "caracalctl/table.rs"]
mod table;
#[path = "caracalctl/view.rs"]
mod view;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use caracal_control::dataplane_client::{DataplaneClient, DEFAULT_SOCKET};
use caracal_proto::dataplane as pb;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use view::{CountersView, InterfaceView, InterfacesView, RouteView, RoutesView, RuntimeView};

#[derive(Debug, Parser)]
#[command(
    name = "caracalctl",
    version,
    about = "Inspect and program the Caracal dataplane"
)]
struct Cli {
    /// The dataplane's API socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "CARACAL_DATAPLANE_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show interfaces, routes, counters, runtime statistics...
    Show(ShowArgs),
    /// Reset statistics.
    #[command(subcommand)]
    Clear(ClearWhat),
    /// Create or remove interfaces.
    #[command(subcommand)]
    Interface(InterfaceCommand),
    /// Create or remove routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// A whole single-node cluster on this machine: pods as network
    /// namespaces, wired by the real daemons and CNI plugin.
    Lab(lab_cmd::LabArgs),
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    what: ShowWhat,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum ShowWhat {
    /// Interfaces with their devices, addresses and counters.
    Interfaces,
    /// The FIB: interface host routes and API routes.
    Routes,
    /// Per-worker counters, drops by node and reason, the buffer pool.
    Counters,
    /// The policy of a pod's interface: tiers, policies, rules, IP sets.
    Policy {
        /// NAMESPACE/POD (or POD, in namespace default).
        pod: String,
    },
    /// The flow table, with each flow's verdict and deciding rule.
    Flows,
    /// The newest packets LOG rules matched (first packets of flows).
    PolicyLog,
    /// Per worker and node: calls, packets, cycles per packet (VPP's
    /// `show runtime`).
    Runtime,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
enum ClearWhat {
    /// Start `show runtime` from zero.
    Runtime,
}

#[derive(Debug, Subcommand)]
enum InterfaceCommand {
    /// Create an interface (or confirm one with the same settings).
    #[command(subcommand)]
    Add(AddInterface),
    /// Remove an interface and the routes through it.
    #[command(visible_alias = "delete")]
    Del {
        /// Interface name.
        name: String,
    },
    /// Cross-connect (L2): send every frame FROM receives out of TO,
    /// unchanged. One direction; run it again the other way for both.
    Xconnect {
        /// The receiving interface.
        from: String,
        /// The interface frames leave by.
        #[arg(required_unless_present = "off", conflicts_with = "off")]
        to: Option<String>,
        /// Remove FROM's cross-connect instead.
        #[arg(long)]
        off: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AddInterface {
    /// A kernel tap device inside a network namespace.
    Tap(TapArgs),
    /// A memif (shared-memory) interface, for DPDK, VPP or libmemif peers.
    Memif(MemifArgs),
}

#[derive(Debug, Args)]
struct TapArgs {
    /// Interface name (the agent uses NAMESPACE/POD).
    name: String,
    /// Network namespace: a path such as /proc/PID/ns/net, or a name
    /// under /var/run/netns as `ip netns add` creates.
    #[arg(long, value_name = "PATH")]
    netns: String,
    /// Device name inside the namespace.
    #[arg(long, value_name = "IFNAME", default_value = "eth0")]
    ifname: String,
    /// The pod's own address with its prefix length (repeatable).
    #[arg(long = "address", value_name = "CIDR")]
    addresses: Vec<String>,
    /// IP MTU, bytes.
    #[arg(long, value_name = "N", default_value_t = 1500)]
    mtu: u32,
    /// Queue pairs; 0 for one per worker.
    #[arg(long, value_name = "N", default_value_t = 0)]
    queues: u32,
    /// Also bring the device up inside the namespace with its MTU,
    /// addresses and default routes via the gateway.
    #[arg(long)]
    configure: bool,
    /// Cross-connect: send every received frame out of this interface.
    #[arg(long, value_name = "IFACE")]
    xconnect: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MemifRoleArg {
    /// Listen on the socket; the client brings the shared memory.
    Server,
    /// Connect to the socket (retrying) and create the shared memory.
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MemifModeArg {
    Ethernet,
    Ip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MemifRxModeArg {
    /// The peer signals an eventfd; idle workers sleep.
    Interrupt,
    /// Workers poll the rings; the peer does not signal.
    Polling,
}

#[derive(Debug, Args)]
struct MemifArgs {
    /// Interface name (the agent uses NAMESPACE/POD).
    name: String,
    /// The memif control socket: a filesystem path, or @NAME in the
    /// dataplane's abstract socket namespace. (`--socket` is taken: it
    /// names the dataplane's API socket.)
    #[arg(long = "memif-socket", value_name = "PATH")]
    memif_socket: String,
    #[arg(long, value_enum)]
    role: MemifRoleArg,
    /// Interface id on the socket (both sides must agree).
    #[arg(long, value_name = "N", default_value_t = 0)]
    id: u32,
    /// Shared secret (at most 24 bytes).
    #[arg(long, value_name = "S")]
    secret: Option<String>,
    /// Queue pairs; 0 for one per worker.
    #[arg(long, value_name = "N", default_value_t = 0)]
    queues: u32,
    /// The endpoint's own address with its prefix length (repeatable).
    #[arg(long = "address", value_name = "CIDR")]
    addresses: Vec<String>,
    /// IP MTU, bytes.
    #[arg(long, value_name = "N", default_value_t = 1500)]
    mtu: u32,
    #[arg(long, value_enum, default_value = "ethernet")]
    mode: MemifModeArg,
    #[arg(long, value_enum, default_value = "interrupt")]
    rx_mode: MemifRxModeArg,
    /// Descriptors per ring (a power of two); 0 for the role's default.
    #[arg(long, value_name = "N", default_value_t = 0)]
    ring_size: u32,
    /// Bytes per buffer a client creates; 0 for 2048.
    #[arg(long, value_name = "N", default_value_t = 0)]
    buffer_size: u32,
    /// MAC of the peer's interface (default: broadcast).
    #[arg(long, value_name = "MAC")]
    peer_mac: Option<String>,
    /// Cross-connect: send every received frame out of this interface.
    #[arg(long, value_name = "IFACE")]
    xconnect: Option<String>,
}

impl MemifArgs {
    fn spec(&self) -> anyhow::Result<pb::InterfaceSpec> {
        // The dataplane resolves nothing relative to our directory.
        let socket = if self.memif_socket.starts_with('@') {
            self.memif_socket.clone()
        } else {
            std::path::absolute(&self.memif_socket)
                .with_context(|| format!("--memif-socket {}", self.memif_socket))?
                .into_os_string()
                .into_string()
                .map_err(|p| {
                    anyhow::anyhow!("--memif-socket {}: path is not UTF-8", p.to_string_lossy())
                })?
        };
        Ok(pb::InterfaceSpec {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            mtu: self.mtu,
            kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
                socket,
                role: match self.role {
                    MemifRoleArg::Server => pb::MemifRole::Server,
                    MemifRoleArg::Client => pb::MemifRole::Client,
                } as i32,
                id: self.id,
                secret: self.secret.clone().unwrap_or_default(),
                queues: self.queues,
                mode: match self.mode {
                    MemifModeArg::Ethernet => pb::MemifMode::Ethernet,
                    MemifModeArg::Ip => pb::MemifMode::Ip,
                } as i32,
                ring_size: self.ring_size,
                buffer_size: self.buffer_size,
                rx_mode: match self.rx_mode {
                    MemifRxModeArg::Interrupt => pb::MemifRxMode::Interrupt,
                    MemifRxModeArg::Polling => pb::MemifRxMode::Polling,
                } as i32,
                peer_mac: self.peer_mac.clone().unwrap_or_default(),
            })),
            // Hand-made interfaces pass traffic without policy.
            policy_enforced: false,
            xconnect: self.xconnect.clone().unwrap_or_default(),
        })
    }
}

/// Where `ip netns add NAME` puts its namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";

impl TapArgs {
    fn spec(&self) -> anyhow::Result<pb::InterfaceSpec> {
        Ok(pb::InterfaceSpec {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            mtu: self.mtu,
            kind: Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                netns: netns_path(&self.netns)?,
                ifname: self.ifname.clone(),
                queues: self.queues,
                configure: self.configure,
            })),
            policy_enforced: false,
            xconnect: self.xconnect.clone().unwrap_or_default(),
        })
    }
}

/// The dataplane runs elsewhere in the filesystem's eyes (another working
/// directory), so it is sent an absolute path.
fn netns_path(arg: &str) -> anyhow::Result<String> {
    let path = if arg.contains('/') {
        std::path::absolute(arg).with_context(|| format!("--netns {arg}"))?
    } else {
        Path::new(NETNS_RUN_DIR).join(arg)
    };
    path.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("--netns {}: path is not UTF-8", p.to_string_lossy()))
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Create or replace the route for a prefix.
    Add {
        /// Destination, e.g. 10.65.1.0/26, fd00:65::/64, or a bare address.
        prefix: String,
        /// Output interface and optional next hop; repeat for ECMP.
        #[arg(long, value_name = "IFACE[,GATEWAY]", required = true, value_parser = parse_via)]
        via: Vec<pb::Path>,
    },
    /// Remove the route for a prefix.
    #[command(visible_alias = "delete")]
    Del { prefix: String },
}

/// Splits `IFACE[,GATEWAY]` at its last comma (interface names are the
/// client's and might hold one; addresses never do).
fn parse_via(s: &str) -> Result<pb::Path, String> {
    let (interface, gateway) = match s.rsplit_once(',') {
        Some((i, g)) => (i, g),
        None => (s, ""),
    };
    if interface.is_empty() || (s.contains(',') && gateway.is_empty()) {
        return Err(format!("expected IFACE[,GATEWAY], got {s:?}"));
    }
    Ok(pb::Path {
        interface: interface.to_owned(),
        gateway: gateway.to_owned(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The lab drives processes and runtimes of its own.
        Command::Lab(lab) => lab_cmd::run(lab),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("caracalctl: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause that only
/// repeats the message before it (transport errors wrap their io error
/// and print it as their own).
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut dp = DataplaneClient::connect(&cli.socket).await?;
    match cli.command {
        Command::Show(show) => {
            let (json, table) = match show.what {
                ShowWhat::Interfaces => {
                    let list = dp
                        .interfaces
                        .list_interfaces(pb::ListInterfacesRequest {})
                        .await;
                    let view = InterfacesView {
                        interfaces: rpc(list)?.interfaces.into_iter().map(Into::into).collect(),
                    };
                    (
                        to_json(&view)?,
                        view::interfaces_table(&view.interfaces).to_string(),
                    )
                }
                ShowWhat::Routes => {
                    let list = dp.routes.list_routes(pb::ListRoutesRequest {}).await;
                    let view = RoutesView {
                        routes: rpc(list)?.routes.into_iter().map(RouteView::from).collect(),
                    };
                    (
                        to_json(&view)?,
                        view::routes_table(&view.routes).to_string(),
                    )
                }
                ShowWhat::Counters => {
                    let counters = dp.stats.get_counters(pb::GetCountersRequest {}).await;
                    let view = CountersView::from(rpc(counters)?);
                    (to_json(&view)?, view::counters_text(&view))
                }
                ShowWhat::Policy { pod } => {
                    let interface = policy::interface_of(&pod);
                    let req = pb::GetPolicyStateRequest {
                        interface: interface.clone(),
                    };
                    let state = rpc(dp.policy.get_policy_state(req).await)?;
                    let view = policy::PolicyView::new(&interface, &state).with_context(|| {
                        format!("no policy for interface {interface}: is {pod} on this node?")
                    })?;
                    (to_json(&view)?, policy::policy_text(&view))
                }
                ShowWhat::Runtime => {
                    let view = RuntimeView::from(rpc(dp
                        .stats
                        .get_runtime(pb::GetRuntimeRequest {})
                        .await)?);
                    (to_json(&view)?, view::runtime_text(&view))
                }
                ShowWhat::Flows => {
                    let list = dp
                        .policy
                        .list_flows(pb::ListFlowsRequest { limit: 0 })
                        .await;
                    let view = policy::FlowsView {
                        flows: rpc(list)?.flows.into_iter().map(Into::into).collect(),
                    };
                    (
                        to_json(&view)?,
                        policy::flows_table(&view.flows).to_string(),
                    )
                }
                ShowWhat::PolicyLog => {
                    let list = dp
                        .policy
                        .list_policy_log(pb::ListPolicyLogRequest { limit: 0 })
                        .await;
                    let view = policy::PolicyLogView::from(rpc(list)?);
                    (to_json(&view)?, policy::policy_log_text(&view))
                }
            };
            emit(if show.json { &json } else { &table })
        }
        Command::Interface(InterfaceCommand::Add(add)) => {
            let spec = match add {
                AddInterface::Tap(tap) => tap.spec()?,
                AddInterface::Memif(memif) => memif.spec()?,
            };
            add_and_show(&mut dp, spec).await
        }
        Command::Clear(ClearWhat::Runtime) => {
            rpc(dp.stats.clear_runtime(pb::ClearRuntimeRequest {}).await)?;
            Ok(())
        }
        Command::Interface(InterfaceCommand::Xconnect { from, to, off: _ }) => {
            // AddInterface with the same spec but this field changes the
            // interface in place.
            let list = rpc(dp
                .interfaces
                .list_interfaces(pb::ListInterfacesRequest {})
                .await)?;
            let mut spec = list
                .interfaces
                .into_iter()
                .filter_map(|i| i.spec)
                .find(|s| s.name == from)
                .with_context(|| format!("no interface {from:?}"))?;
            spec.xconnect = to.unwrap_or_default();
            add_and_show(&mut dp, spec).await
        }
        Command::Interface(InterfaceCommand::Del { name }) => {
            let req = pb::DeleteInterfaceRequest { name: name.clone() };
            if !rpc(dp.interfaces.delete_interface(req).await)?.existed {
                eprintln!("caracalctl: no interface {name:?}; nothing to remove");
            }
            Ok(())
        }
        Command::Route(RouteCommand::Add { prefix, via }) => {
            let route = pb::Route {
                prefix,
                paths: via,
                origin: String::new(),
            };
            rpc(dp
                .routes
                .add_route(pb::AddRouteRequest { route: Some(route) })
                .await)?;
            Ok(())
        }
        Command::Route(RouteCommand::Del { prefix }) => {
            let req = pb::DeleteRouteRequest {
                prefix: prefix.clone(),
            };
            if !rpc(dp.routes.delete_route(req).await)?.existed {
                eprintln!("caracalctl: no route for {prefix}; nothing to remove");
            }
            Ok(())
        }
        Command::Lab(_) => unreachable!("main runs the lab outside the runtime"),
    }
}

/// The reply of a call, or the dataplane's own message for its failure.
/// `AddInterface` (which also changes one in place) and the interface
/// as the dataplane now has it.
async fn add_and_show(dp: &mut DataplaneClient, spec: pb::InterfaceSpec) -> anyhow::Result<()> {
    let added = dp
        .interfaces
        .add_interface(pb::AddInterfaceRequest { spec: Some(spec) })
        .await;
    let view = InterfaceView::from(rpc(added)?);
    emit(&view::interfaces_table(&[view]).to_string())
}

fn rpc<T>(reply: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    match reply {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.message().is_empty() => {
            Err(anyhow::anyhow!("{}", status.code().description()))
        }
        Err(status) => Err(anyhow::anyhow!("{}", status.message())),
    }
}

fn to_json(view: &impl Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(view).context("encoding JSON")?;
    text.push('\n');
    Ok(text)
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an
/// error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("caracalctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn parse_err(args: &[&str]) -> String {
        let argv = std::iter::once("caracalctl").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_err().to_string()
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn show_takes_json_before_or_after_the_object() {
        for args in [["show", "routes", "--json"], ["show", "--json", "routes"]] {
            let Command::Show(show) = parse(&args).command else {
                panic!("{args:?}")
            };
            assert!(show.json);
            assert_eq!(show.what, ShowWhat::Routes);
        }
        let Command::Show(show) = parse(&["show", "counters"]).command else {
            panic!()
        };
        assert!(!show.json);
    }

    #[test]
    fn runtime_is_shown_and_cleared() {
        let Command::Show(show) = parse(&["show", "runtime", "--json"]).command else {
            panic!()
        };
        assert_eq!(show.what, ShowWhat::Runtime);
        assert!(show.json);
        let Command::Clear(what) = parse(&["clear", "runtime"]).command else {
            panic!()
        };
        assert_eq!(what, ClearWhat::Runtime);
    }

    #[test]
    fn interface_xconnect_sets_or_removes_one_direction() {
        let Command::Interface(InterfaceCommand::Xconnect { from, to, off }) =
            parse(&["interface", "xconnect", "a", "b"]).command
        else {
            panic!()
        };
        assert_eq!((from.as_str(), to.as_deref(), off), ("a", Some("b"), false));
        let Command::Interface(InterfaceCommand::Xconnect { to, off, .. }) =
            parse(&["interface", "xconnect", "a", "--off"]).command
        else {
            panic!()
        };
        assert_eq!((to, off), (None, true));
        assert!(parse_err(&["interface", "xconnect", "a"]).contains("required"));
        assert!(parse_err(&["interface", "xconnect", "a", "b", "--off"]).contains("cannot be used"));
        let Command::Interface(InterfaceCommand::Add(AddInterface::Memif(m))) = parse(&[
            "interface",
            "add",
            "memif",
            "in",
            "--memif-socket",
            "@in",
            "--role",
            "server",
            "--xconnect",
            "out",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(m.spec().unwrap().xconnect, "out");
    }

    #[test]
    fn show_policy_takes_a_pod() {
        let Command::Show(show) = parse(&["show", "policy", "prod/web", "--json"]).command else {
            panic!()
        };
        assert!(show.json);
        assert_eq!(
            show.what,
            ShowWhat::Policy {
                pod: "prod/web".into()
            }
        );
        assert!(parse_err(&["show", "policy"]).contains("<POD>"));
    }

    #[test]
    fn socket_flag_works_after_the_subcommand() {
        let cli = parse(&["show", "interfaces", "--socket", "/tmp/dp.sock"]);
        assert_eq!(cli.socket, Path::new("/tmp/dp.sock"));
    }

    #[test]
    fn interface_add_tap_builds_the_spec() {
        let cli = parse(&[
            "interface",
            "add",
            "tap",
            "default/web-0",
            "--netns",
            "/var/run/netns/web",
            "--address",
            "10.65.0.5/32",
            "--address",
            "fd00:65::5/128",
            "--mtu",
            "9000",
            "--queues",
            "2",
            "--configure",
        ]);
        let Command::Interface(InterfaceCommand::Add(AddInterface::Tap(tap))) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            tap.spec().unwrap(),
            pb::InterfaceSpec {
                policy_enforced: false,
                xconnect: String::new(),
                name: "default/web-0".into(),
                addresses: vec!["10.65.0.5/32".into(), "fd00:65::5/128".into()],
                mtu: 9000,
                kind: Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                    netns: "/var/run/netns/web".into(),
                    ifname: "eth0".into(),
                    queues: 2,
                    configure: true,
                })),
            }
        );
    }

    #[test]
    fn interface_add_tap_defaults() {
        let cli = parse(&["interface", "add", "tap", "p", "--netns", "/proc/1/ns/net"]);
        let Command::Interface(InterfaceCommand::Add(AddInterface::Tap(tap))) = cli.command else {
            panic!()
        };
        let spec = tap.spec().unwrap();
        assert_eq!(spec.mtu, 1500);
        assert!(spec.addresses.is_empty());
        let Some(pb::interface_spec::Kind::Tap(t)) = spec.kind else {
            panic!()
        };
        assert_eq!(
            (t.ifname.as_str(), t.queues, t.configure),
            ("eth0", 0, false)
        );
    }

    #[test]
    fn interface_add_memif_builds_the_spec() {
        let cli = parse(&[
            "interface",
            "add",
            "memif",
            "default/dpdk-0",
            "--memif-socket",
            "/run/caracal/memif/dpdk-0.sock",
            "--role",
            "client",
            "--id",
            "3",
            "--secret",
            "s3cret",
            "--queues",
            "2",
            "--address",
            "10.65.0.6/32",
            "--mode",
            "ip",
            "--rx-mode",
            "polling",
            "--ring-size",
            "4096",
            "--buffer-size",
            "9216",
            "--peer-mac",
            "02:00:00:00:00:01",
        ]);
        let Command::Interface(InterfaceCommand::Add(AddInterface::Memif(m))) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            m.spec().unwrap(),
            pb::InterfaceSpec {
                policy_enforced: false,
                xconnect: String::new(),
                name: "default/dpdk-0".into(),
                addresses: vec!["10.65.0.6/32".into()],
                mtu: 1500,
                kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
                    socket: "/run/caracal/memif/dpdk-0.sock".into(),
                    role: pb::MemifRole::Client as i32,
                    id: 3,
                    secret: "s3cret".into(),
                    queues: 2,
                    mode: pb::MemifMode::Ip as i32,
                    ring_size: 4096,
                    buffer_size: 9216,
                    rx_mode: pb::MemifRxMode::Polling as i32,
                    peer_mac: "02:00:00:00:00:01".into(),
                })),
            }
        );
    }

    #[test]
    fn interface_add_memif_defaults_and_socket_forms() {
        let cli = parse(&[
            "interface",
            "add",
            "memif",
            "p",
            "--memif-socket",
            "@memif-p",
            "--role",
            "server",
        ]);
        let Command::Interface(InterfaceCommand::Add(AddInterface::Memif(m))) = cli.command else {
            panic!()
        };
        let spec = m.spec().unwrap();
        let Some(pb::interface_spec::Kind::Memif(memif)) = spec.kind else {
            panic!()
        };
        assert_eq!(memif.socket, "@memif-p");
        assert_eq!((memif.id, memif.queues, memif.ring_size), (0, 0, 0));
        assert_eq!(memif.mode, pb::MemifMode::Ethernet as i32);
        assert_eq!(memif.rx_mode, pb::MemifRxMode::Interrupt as i32);
        assert!(memif.secret.is_empty() && memif.peer_mac.is_empty());

        let cli = parse(&[
            "interface",
            "add",
            "memif",
            "p",
            "--memif-socket",
            "rel.sock",
            "--role",
            "server",
        ]);
        let Command::Interface(InterfaceCommand::Add(AddInterface::Memif(m))) = cli.command else {
            panic!()
        };
        let Some(pb::interface_spec::Kind::Memif(memif)) = m.spec().unwrap().kind else {
            panic!()
        };
        assert!(memif.socket.starts_with('/') && memif.socket.ends_with("/rel.sock"));
    }

    #[test]
    fn interface_add_memif_needs_socket_and_role() {
        let add = ["interface", "add", "memif", "p"];
        let err = |rest: &[&str]| parse_err(&[&add[..], rest].concat());
        assert!(err(&["--role", "server"]).contains("--memif-socket"));
        assert!(err(&["--memif-socket", "/s"]).contains("--role"));
        assert!(err(&["--memif-socket", "/s", "--role", "master"]).contains("invalid value"));
        // The API socket keeps its flag beside the memif one.
        let cli = parse(
            &[
                &add[..],
                &[
                    "--memif-socket",
                    "/m",
                    "--role",
                    "client",
                    "--socket",
                    "/api",
                ],
            ]
            .concat(),
        );
        assert_eq!(cli.socket, Path::new("/api"));
    }

    #[test]
    fn interface_add_tap_needs_netns() {
        assert!(parse_err(&["interface", "add", "tap", "p"]).contains("--netns"));
    }

    #[test]
    fn netns_names_and_relative_paths_become_absolute() {
        assert_eq!(netns_path("web").unwrap(), "/var/run/netns/web");
        assert_eq!(netns_path("/proc/7/ns/net").unwrap(), "/proc/7/ns/net");
        let relative = netns_path("./ns/web").unwrap();
        assert!(
            relative.starts_with('/') && relative.ends_with("/ns/web"),
            "{relative}"
        );
    }

    #[test]
    fn interface_del_and_delete() {
        for verb in ["del", "delete"] {
            let cli = parse(&["interface", verb, "default/web-0"]);
            let Command::Interface(InterfaceCommand::Del { name }) = cli.command else {
                panic!()
            };
            assert_eq!(name, "default/web-0");
        }
    }

    #[test]
    fn route_add_with_ecmp_paths() {
        let cli = parse(&[
            "route",
            "add",
            "10.66.0.0/16",
            "--via",
            "uplink0,192.168.1.1",
            "--via",
            "default/web-0",
            "--via",
            "uplink1,fe80::1",
        ]);
        let Command::Route(RouteCommand::Add { prefix, via }) = cli.command else {
            panic!()
        };
        assert_eq!(prefix, "10.66.0.0/16");
        let via: Vec<(&str, &str)> = via
            .iter()
            .map(|p| (p.interface.as_str(), p.gateway.as_str()))
            .collect();
        assert_eq!(
            via,
            [
                ("uplink0", "192.168.1.1"),
                ("default/web-0", ""),
                ("uplink1", "fe80::1")
            ]
        );
    }

    #[test]
    fn route_add_needs_a_well_formed_via() {
        assert!(parse_err(&["route", "add", "10.0.0.0/8"]).contains("--via"));
        for bad in [",10.0.0.1", "eth0,", ""] {
            let err = parse_err(&["route", "add", "10.0.0.0/8", "--via", bad]);
            assert!(err.contains("expected IFACE[,GATEWAY]"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn route_del_takes_a_prefix() {
        let Command::Route(RouteCommand::Del { prefix }) = parse(&["route", "del", "::/0"]).command
        else {
            panic!()
        };
        assert_eq!(prefix, "::/0");
    }

    #[test]
    fn describe_drops_repeated_causes() {
        /// Prints its source's message as its own, as transport errors do.
        #[derive(Debug)]
        struct Echo(io::Error);
        impl std::fmt::Display for Echo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Echo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Echo(io::Error::from(io::ErrorKind::NotFound)))
            .context("connecting");
        assert_eq!(err.chain().count(), 3);
        assert_eq!(describe(&err), "connecting: entity not found");
    }

    #[test]
    fn rpc_errors_carry_the_status_message() {
        let err = rpc::<()>(Err(tonic::Status::invalid_argument("route.prefix: bad"))).unwrap_err();
        assert_eq!(err.to_string(), "route.prefix: bad");
        let err = rpc::<()>(Err(tonic::Status::unavailable(""))).unwrap_err();
        assert_eq!(err.to_string(), tonic::Code::Unavailable.description());
    }
}
