//! What `caracalctl show` prints. The API's answers are turned into plain
//! views first; `--json` serialises the views (their field names are the
//! stable machine interface, independent of the protobuf), and the human
//! tables are rendered from the same views.

use caracal_proto::dataplane as pb;
use serde::Serialize;

use crate::table::{Align, Table};

// ---------------------------------------------------------------- interfaces

/// `show interfaces --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfacesView {
    pub interfaces: Vec<InterfaceView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceView {
    pub name: String,
    /// Index in the dataplane's interface table.
    pub id: u32,
    /// `tap`, `memif`, or `unknown` for a kind this caracalctl predates.
    pub kind: String,
    /// Taps: always. Memif: a peer is connected.
    pub up: bool,
    /// IP MTU, bytes.
    pub mtu: u32,
    /// MAC of the pod side.
    pub mac: String,
    /// Kernel ifindex inside its namespace (taps), 0 otherwise.
    pub ifindex: u32,
    pub addresses: Vec<String>,
    /// L2 cross-connect: the interface every received frame leaves by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xconnect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tap: Option<TapView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memif: Option<MemifView>,
    pub counters: PortCountersView,
}

/// A memif interface: its settings and its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemifView {
    /// Filesystem path, or `@name` (abstract).
    pub socket: String,
    /// `server` or `client`.
    pub role: String,
    pub id: u32,
    /// Whether a secret is set (its value is never shown).
    pub secret: bool,
    /// Requested queues; 0 means one per worker.
    pub queues: u32,
    /// `ethernet` or `ip`.
    pub mode: String,
    /// `interrupt` or `polling`.
    pub rx_mode: String,
    /// Requested descriptors per ring; 0 means the role's default.
    pub ring_size: u32,
    pub connected: bool,
    /// The peer's application and interface names, while connected.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer_interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<u32>,
    pub rings: Vec<MemifRingView>,
    /// Shared memory regions, bytes each.
    pub region_sizes: Vec<u64>,
    pub connects: u64,
    pub disconnects: u64,
    /// Connections closed because the peer broke the protocol.
    pub peer_faults: u64,
    pub rx_bad_length: u64,
    /// Why the last connection, or attempt, ended.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_disconnect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemifRingView {
    /// `rx` (the peer produces) or `tx` (the dataplane produces).
    pub direction: String,
    pub index: u32,
    pub size: u32,
    pub head: u32,
    pub tail: u32,
    pub interrupts_masked: bool,
}

impl MemifView {
    fn new(spec: pb::MemifSpec, status: pb::MemifStatus) -> Self {
        let role = match pb::MemifRole::try_from(spec.role) {
            Ok(pb::MemifRole::Client) => "client",
            _ => "server",
        };
        let mode = match pb::MemifMode::try_from(spec.mode) {
            Ok(pb::MemifMode::Ip) => "ip",
            _ => "ethernet",
        };
        let rx_mode = match pb::MemifRxMode::try_from(spec.rx_mode) {
            Ok(pb::MemifRxMode::Polling) => "polling",
            _ => "interrupt",
        };
        MemifView {
            socket: spec.socket,
            role: role.to_owned(),
            id: spec.id,
            secret: !spec.secret.is_empty(),
            queues: spec.queues,
            mode: mode.to_owned(),
            rx_mode: rx_mode.to_owned(),
            ring_size: spec.ring_size,
            connected: status.connected,
            peer_name: status.peer_name,
            peer_interface: status.peer_interface,
            peer_pid: Some(status.peer_pid).filter(|&p| p != 0),
            rings: status
                .rings
                .into_iter()
                .map(|r| MemifRingView {
                    direction: r.direction,
                    index: r.index,
                    size: r.size,
                    head: r.head,
                    tail: r.tail,
                    interrupts_masked: r.interrupts_masked,
                })
                .collect(),
            region_sizes: status.region_sizes,
            connects: status.connects,
            disconnects: status.disconnects,
            peer_faults: status.peer_faults,
            rx_bad_length: status.rx_bad_length,
            last_disconnect: status.last_disconnect,
        }
    }

    /// The lines of the Device column, below the kind line.
    fn device_lines(&self, lines: &mut Vec<String>) {
        lines.push(format!("{} id {} {}", self.role, self.id, self.mode));
        lines.push(format!("socket {}", self.socket));
        if self.connected {
            let pid = self
                .peer_pid
                .map(|p| format!(" pid {p}"))
                .unwrap_or_default();
            lines.push(format!(
                "peer {} ({}){pid}",
                self.peer_name, self.peer_interface
            ));
            for r in &self.rings {
                lines.push(format!(
                    "{} ring {}: {} slots head {} tail {}{}",
                    r.direction,
                    r.index,
                    r.size,
                    r.head,
                    r.tail,
                    if r.interrupts_masked { " polled" } else { "" }
                ));
            }
            let regions: Vec<String> = self
                .region_sizes
                .iter()
                .map(|&b| format!("{} KiB", b.div_ceil(1024)))
                .collect();
            lines.push(format!("regions {}", regions.join(", ")));
        } else {
            lines.push(if self.role == "server" {
                "waiting for a client".to_owned()
            } else {
                "connecting".to_owned()
            });
        }
        if !self.last_disconnect.is_empty() {
            lines.push(format!("last down: {}", self.last_disconnect));
        }
    }

    fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("connects", self.connects),
            ("disconnects", self.disconnects),
            ("peer faults", self.peer_faults),
            ("rx bad length", self.rx_bad_length),
        ]
        .into_iter()
        .filter(|&(_, n)| n != 0)
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapView {
    pub netns: String,
    pub ifname: String,
    /// Requested queues; 0 means one per worker.
    pub queues: u32,
    pub configure: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PortCountersView {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub rx_no_buffer: u64,
    pub rx_too_long: u64,
}

impl From<pb::PortCounters> for PortCountersView {
    fn from(c: pb::PortCounters) -> Self {
        PortCountersView {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            tx_errors: c.tx_errors,
            rx_no_buffer: c.rx_no_buffer,
            rx_too_long: c.rx_too_long,
        }
    }
}

impl PortCountersView {
    /// The non-zero counters with their labels, as VPP's `show interface`
    /// lists them.
    fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("rx packets", self.rx_packets),
            ("rx bytes", self.rx_bytes),
            ("tx packets", self.tx_packets),
            ("tx bytes", self.tx_bytes),
            ("tx errors", self.tx_errors),
            ("rx no-buffer", self.rx_no_buffer),
            ("rx too long", self.rx_too_long),
        ]
        .into_iter()
        .filter(|&(_, n)| n != 0)
        .collect()
    }
}

impl From<pb::Interface> for InterfaceView {
    fn from(i: pb::Interface) -> Self {
        let spec = i.spec.unwrap_or_default();
        let kind = match pb::InterfaceKind::try_from(i.kind) {
            Ok(pb::InterfaceKind::Tap) => "tap",
            Ok(pb::InterfaceKind::Memif) => "memif",
            _ => "unknown",
        };
        let (mut tap, mut memif) = (None, None);
        match spec.kind {
            Some(pb::interface_spec::Kind::Tap(t)) => {
                tap = Some(TapView {
                    netns: t.netns,
                    ifname: t.ifname,
                    queues: t.queues,
                    configure: t.configure,
                })
            }
            Some(pb::interface_spec::Kind::Memif(m)) => {
                memif = Some(MemifView::new(m, i.memif.unwrap_or_default()))
            }
            None => {}
        }
        InterfaceView {
            name: spec.name,
            id: i.id,
            kind: kind.to_owned(),
            up: i.up,
            mtu: spec.mtu,
            mac: i.mac,
            ifindex: i.ifindex,
            addresses: spec.addresses,
            xconnect: Some(spec.xconnect).filter(|x| !x.is_empty()),
            tap,
            memif,
            counters: i.counters.unwrap_or_default().into(),
        }
    }
}

/// `show interfaces`: one block per interface, its device details and
/// non-zero counters on the lines below its name.
pub fn interfaces_table(interfaces: &[InterfaceView]) -> Table {
    let mut t = Table::new(&[
        ("Name", Align::Left),
        ("Idx", Align::Right),
        ("State", Align::Left),
        ("MTU", Align::Right),
        ("Device", Align::Left),
        ("Addresses", Align::Left),
        ("Counter", Align::Left),
        ("Count", Align::Right),
    ]);
    for i in interfaces {
        let mut device = Vec::new();
        let mut counters = i.counters.nonzero();
        match (&i.tap, &i.memif) {
            (Some(tap), _) => {
                device.push(format!("{} {} ifindex {}", i.kind, tap.ifname, i.ifindex));
                device.push(format!("mac {}", i.mac));
                device.push(format!("netns {}", tap.netns));
            }
            (None, Some(memif)) => {
                device.push(i.kind.clone());
                memif.device_lines(&mut device);
                device.push(format!("peer mac {}", i.mac));
                counters.extend(memif.nonzero());
            }
            (None, None) => {
                device.push(i.kind.clone());
                device.push(format!("mac {}", i.mac));
            }
        }
        if let Some(x) = &i.xconnect {
            device.push(format!("l2 xconnect -> {x}"));
        }
        t.row(vec![
            i.name.as_str().into(),
            i.id.to_string().into(),
            if i.up { "up" } else { "down" }.into(),
            i.mtu.to_string().into(),
            device.into(),
            i.addresses.clone().into(),
            counters
                .iter()
                .map(|(label, _)| label.to_string())
                .collect::<Vec<_>>()
                .into(),
            counters
                .iter()
                .map(|(_, n)| n.to_string())
                .collect::<Vec<_>>()
                .into(),
        ]);
    }
    t
}

// -------------------------------------------------------------------- routes

/// `show routes --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutesView {
    pub routes: Vec<RouteView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteView {
    pub prefix: String,
    /// `interface` (host route of an interface address) or `api`.
    pub origin: String,
    pub paths: Vec<PathView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathView {
    pub interface: String,
    /// Next hop; absent when the destination is on the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

impl From<pb::Route> for RouteView {
    fn from(r: pb::Route) -> Self {
        RouteView {
            prefix: r.prefix,
            origin: r.origin,
            paths: r
                .paths
                .into_iter()
                .map(|p| PathView {
                    interface: p.interface,
                    gateway: Some(p.gateway).filter(|g| !g.is_empty()),
                })
                .collect(),
        }
    }
}

/// `show routes`: one line per path, ECMP paths stacked under their prefix.
pub fn routes_table(routes: &[RouteView]) -> Table {
    let mut t = Table::new(&[
        ("Prefix", Align::Left),
        ("Origin", Align::Left),
        ("Interface", Align::Left),
        ("Gateway", Align::Left),
    ]);
    for r in routes {
        t.row(vec![
            r.prefix.as_str().into(),
            r.origin.as_str().into(),
            r.paths
                .iter()
                .map(|p| p.interface.clone())
                .collect::<Vec<_>>()
                .into(),
            r.paths
                .iter()
                .map(|p| p.gateway.clone().unwrap_or_else(|| "on-link".to_owned()))
                .collect::<Vec<_>>()
                .into(),
        ]);
    }
    t
}

// ------------------------------------------------------------------ counters

/// `show counters --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountersView {
    pub workers: Vec<WorkerView>,
    pub buffers: BuffersView,
    /// Drops summed over workers, reasons that counted at least once.
    pub drops: Vec<DropView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    pub worker: u32,
    /// CPU the worker is pinned to; absent when it is not pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<u32>,
    pub vectors: u64,
    pub packets: u64,
    pub drops: Vec<DropView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropView {
    pub node: String,
    pub reason: String,
    pub description: String,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BuffersView {
    pub total: u64,
    pub free: u64,
    pub in_use: u64,
    /// Bytes per buffer, as the dataplane reports it.
    pub buffer_size: u32,
    pub hugepages: bool,
}

impl From<pb::DropCounter> for DropView {
    fn from(d: pb::DropCounter) -> Self {
        DropView {
            node: d.node,
            reason: d.reason,
            description: d.description,
            count: d.count,
        }
    }
}

impl From<pb::Counters> for CountersView {
    fn from(c: pb::Counters) -> Self {
        let b = c.buffers.unwrap_or_default();
        CountersView {
            workers: c
                .workers
                .into_iter()
                .map(|w| WorkerView {
                    worker: w.worker,
                    core: u32::try_from(w.core).ok(),
                    vectors: w.vectors,
                    packets: w.packets,
                    drops: w.drops.into_iter().map(DropView::from).collect(),
                })
                .collect(),
            buffers: BuffersView {
                total: b.total,
                free: b.free,
                in_use: b.in_use,
                buffer_size: b.buffer_size,
                hugepages: b.hugepages,
            },
            drops: c.drops.into_iter().map(DropView::from).collect(),
        }
    }
}

/// `show counters`: a line per worker, the drop counters (like VPP's
/// `show errors`), and the buffer pool.
pub fn counters_text(c: &CountersView) -> String {
    let mut workers = Table::new(&[
        ("Worker", Align::Right),
        ("Core", Align::Right),
        ("Vectors", Align::Right),
        ("Packets", Align::Right),
        ("Packets/vector", Align::Right),
        ("Drops", Align::Right),
    ]);
    for w in &c.workers {
        let per_vector = if w.vectors == 0 {
            0.0
        } else {
            w.packets as f64 / w.vectors as f64
        };
        workers.row(vec![
            w.worker.to_string().into(),
            w.core
                .map_or_else(|| "-".to_owned(), |c| c.to_string())
                .into(),
            w.vectors.to_string().into(),
            w.packets.to_string().into(),
            format!("{per_vector:.2}").into(),
            w.drops
                .iter()
                .map(|d| d.count)
                .sum::<u64>()
                .to_string()
                .into(),
        ]);
    }

    let mut text = workers.to_string();
    text.push('\n');
    if c.drops.is_empty() {
        text.push_str("No drops.\n");
    } else {
        let mut drops = Table::new(&[
            ("Count", Align::Right),
            ("Node", Align::Left),
            ("Reason", Align::Left),
            ("Description", Align::Left),
        ]);
        for d in &c.drops {
            drops.row(vec![
                d.count.to_string().into(),
                d.node.as_str().into(),
                d.reason.as_str().into(),
                d.description.as_str().into(),
            ]);
        }
        text.push_str(&drops.to_string());
    }
    text.push('\n');
    let b = &c.buffers;
    text.push_str(&format!(
        "Buffers: {} total, {} in use, {} free; {} bytes each, {}\n",
        b.total,
        b.in_use,
        b.free,
        b.buffer_size,
        if b.hugepages {
            "hugepages"
        } else {
            "ordinary pages"
        },
    ));
    text
}

// ------------------------------------------------------------------- runtime

/// `show runtime --json`: the raw totals, every node, plus the averages
/// the table shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuntimeView {
    /// Cycles per second of the counter the clocks are in.
    pub tsc_hz: u64,
    pub workers: Vec<WorkerRuntimeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRuntimeView {
    pub worker: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<u32>,
    pub loops: u64,
    pub idle_loops: u64,
    pub clocks: u64,
    pub idle_clocks: u64,
    /// Share of the cycles spent in loops that received nothing, percent.
    pub idle_percent: f64,
    /// Busy cycles (all but idle loops) per received packet.
    pub clocks_per_packet: f64,
    pub nodes: Vec<NodeRuntimeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRuntimeView {
    pub name: String,
    pub calls: u64,
    pub vectors: u64,
    pub clocks: u64,
    /// Clocks per packet (per call when it handled none).
    pub clocks_per_packet: f64,
    pub vectors_per_call: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl From<pb::Runtime> for RuntimeView {
    fn from(r: pb::Runtime) -> Self {
        RuntimeView {
            tsc_hz: r.tsc_hz,
            workers: r
                .workers
                .into_iter()
                .map(|w| {
                    let rx = w
                        .nodes
                        .iter()
                        .find(|n| n.name == "port-input")
                        .map_or(0, |n| n.vectors);
                    WorkerRuntimeView {
                        worker: w.worker,
                        core: u32::try_from(w.core).ok(),
                        loops: w.loops,
                        idle_loops: w.idle_loops,
                        clocks: w.clocks,
                        idle_clocks: w.idle_clocks,
                        idle_percent: 100.0 * ratio(w.idle_clocks, w.clocks),
                        clocks_per_packet: ratio(w.clocks.saturating_sub(w.idle_clocks), rx),
                        nodes: w
                            .nodes
                            .into_iter()
                            .map(|n| NodeRuntimeView {
                                clocks_per_packet: if n.vectors == 0 {
                                    ratio(n.clocks, n.calls)
                                } else {
                                    ratio(n.clocks, n.vectors)
                                },
                                vectors_per_call: ratio(n.vectors, n.calls),
                                name: n.name,
                                calls: n.calls,
                                vectors: n.vectors,
                                clocks: n.clocks,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// `show runtime`: per worker a header line (loops, idle share, TSC rate)
/// and a table of the nodes that ran, like VPP's, with a total line: every
/// node's calls, the packets received, and the busy cycles per packet.
pub fn runtime_text(r: &RuntimeView) -> String {
    let mut text = String::new();
    for w in &r.workers {
        if !text.is_empty() {
            text.push('\n');
        }
        let core = w
            .core
            .map_or_else(|| "unpinned".to_owned(), |c| format!("core {c}"));
        let seconds = ratio(w.clocks, r.tsc_hz);
        text.push_str(&format!(
            "Worker {} ({core}): {:.1} s, {} loops, {} idle, {:.1}% idle time, TSC {:.3} GHz\n",
            w.worker,
            seconds,
            w.loops,
            w.idle_loops,
            w.idle_percent,
            r.tsc_hz as f64 / 1e9,
        ));
        let mut t = Table::new(&[
            ("Name", Align::Left),
            ("Calls", Align::Right),
            ("Vectors", Align::Right),
            ("Clocks/pkt", Align::Right),
            ("Vectors/Call", Align::Right),
        ]);
        for n in w.nodes.iter().filter(|n| n.calls > 0) {
            t.row(vec![
                n.name.as_str().into(),
                n.calls.to_string().into(),
                n.vectors.to_string().into(),
                format!("{:.2e}", n.clocks_per_packet).into(),
                format!("{:.2}", n.vectors_per_call).into(),
            ]);
        }
        let rx = w
            .nodes
            .iter()
            .find(|n| n.name == "port-input")
            .map_or(0, |n| n.vectors);
        t.row(vec![
            "total (busy loops)".into(),
            w.nodes
                .iter()
                .map(|n| n.calls)
                .sum::<u64>()
                .to_string()
                .into(),
            rx.to_string().into(),
            format!("{:.2e}", w.clocks_per_packet).into(),
            "".into(),
        ]);
        text.push_str(&t.to_string());
    }
    if text.is_empty() {
        text.push_str("No workers.\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap_interface() -> pb::Interface {
        pb::Interface {
            id: 1,
            spec: Some(pb::InterfaceSpec {
                policy_enforced: false,
                xconnect: String::new(),
                name: "default/web-0".into(),
                addresses: vec!["10.65.0.5/32".into(), "fd00:65::5/128".into()],
                mtu: 1500,
                kind: Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                    netns: "/var/run/netns/default_web-0".into(),
                    ifname: "eth0".into(),
                    queues: 0,
                    configure: true,
                })),
            }),
            kind: pb::InterfaceKind::Tap as i32,
            mac: "02:fe:00:00:00:01".into(),
            ifindex: 2,
            up: true,
            counters: Some(pb::PortCounters {
                rx_packets: 12,
                rx_bytes: 1008,
                tx_packets: 0,
                tx_bytes: 0,
                tx_errors: 3,
                rx_no_buffer: 0,
                rx_too_long: 2,
            }),
            memif: None,
        }
    }

    fn memif_interface(connected: bool) -> pb::Interface {
        let status = pb::MemifStatus {
            connected,
            peer_name: if connected {
                "DPDK 22.11.11".into()
            } else {
                String::new()
            },
            peer_interface: if connected {
                "net_memif0".into()
            } else {
                String::new()
            },
            peer_pid: if connected { 4242 } else { 0 },
            rings: if connected {
                vec![
                    pb::MemifRing {
                        direction: "rx".into(),
                        index: 0,
                        size: 1024,
                        head: 300,
                        tail: 300,
                        interrupts_masked: false,
                    },
                    pb::MemifRing {
                        direction: "tx".into(),
                        index: 0,
                        size: 1024,
                        head: 1324,
                        tail: 300,
                        interrupts_masked: true,
                    },
                ]
            } else {
                vec![]
            },
            region_sizes: if connected { vec![4_456_704] } else { vec![] },
            hugepages: false,
            buffer_size: 0,
            connects: 2,
            disconnects: 1,
            peer_faults: 0,
            rx_bad_length: 0,
            last_disconnect: "peer closed the socket".into(),
        };
        pb::Interface {
            id: 2,
            spec: Some(pb::InterfaceSpec {
                policy_enforced: false,
                xconnect: String::new(),
                name: "default/dpdk-0".into(),
                addresses: vec!["10.65.0.6/32".into()],
                mtu: 1500,
                kind: Some(pb::interface_spec::Kind::Memif(pb::MemifSpec {
                    socket: "/run/caracal/memif/dpdk-0.sock".into(),
                    role: pb::MemifRole::Server as i32,
                    id: 0,
                    secret: "hunter2".into(),
                    queues: 1,
                    mode: pb::MemifMode::Ethernet as i32,
                    ring_size: 0,
                    buffer_size: 0,
                    rx_mode: pb::MemifRxMode::Interrupt as i32,
                    peer_mac: String::new(),
                })),
            }),
            kind: pb::InterfaceKind::Memif as i32,
            mac: "ff:ff:ff:ff:ff:ff".into(),
            ifindex: 0,
            up: connected,
            counters: Some(pb::PortCounters {
                rx_packets: 300,
                ..pb::PortCounters::default()
            }),
            memif: Some(status),
        }
    }

    #[test]
    fn memif_rows_show_connection_rings_and_counters() {
        let view = InterfaceView::from(memif_interface(true));
        assert_eq!(
            interfaces_table(&[view]).to_string(),
            "Name            Idx  State   MTU  Device                                           Addresses     Counter      Count\n\
             default/dpdk-0    2  up     1500  memif                                            10.65.0.6/32  rx packets     300\n\
             \x20                                 server id 0 ethernet                                           connects         2\n\
             \x20                                 socket /run/caracal/memif/dpdk-0.sock                          disconnects      1\n\
             \x20                                 peer DPDK 22.11.11 (net_memif0) pid 4242\n\
             \x20                                 rx ring 0: 1024 slots head 300 tail 300\n\
             \x20                                 tx ring 0: 1024 slots head 1324 tail 300 polled\n\
             \x20                                 regions 4353 KiB\n\
             \x20                                 last down: peer closed the socket\n\
             \x20                                 peer mac ff:ff:ff:ff:ff:ff\n"
        );
        let down = InterfaceView::from(memif_interface(false));
        let text = interfaces_table(&[down]).to_string();
        assert!(text.contains(" down "), "{text}");
        assert!(text.contains("waiting for a client"), "{text}");

        let mut xc = memif_interface(false);
        xc.spec.as_mut().unwrap().xconnect = "memif-b".into();
        let view = InterfaceView::from(xc);
        assert_eq!(view.xconnect.as_deref(), Some("memif-b"));
        let text = interfaces_table(&[view]).to_string();
        assert!(text.contains("l2 xconnect -> memif-b"), "{text}");
    }

    #[test]
    fn memif_json_never_shows_the_secret() {
        let json = serde_json::to_value(InterfaceView::from(memif_interface(true))).unwrap();
        assert_eq!(json["kind"], "memif");
        assert_eq!(json["memif"]["secret"], true);
        assert_eq!(json["memif"]["role"], "server");
        assert_eq!(json["memif"]["peer_pid"], 4242);
        assert_eq!(json["memif"]["rings"][1]["head"], 1324);
        assert_eq!(json["memif"]["region_sizes"][0], 4_456_704);
        assert!(!json.to_string().contains("hunter2"));
        assert!(json.get("tap").is_none());
    }

    #[test]
    fn interface_table_stacks_device_addresses_and_counters() {
        let view = InterfaceView::from(tap_interface());
        assert_eq!(
            interfaces_table(&[view]).to_string(),
            "Name           Idx  State   MTU  Device                              Addresses       Counter      Count\n\
             default/web-0    1  up     1500  tap eth0 ifindex 2                  10.65.0.5/32    rx packets      12\n\
             \x20                                mac 02:fe:00:00:00:01               fd00:65::5/128  rx bytes      1008\n\
             \x20                                netns /var/run/netns/default_web-0                  tx errors        3\n\
             \x20                                                                                    rx too long      2\n"
        );
    }

    #[test]
    fn interface_json_is_flat_and_stable() {
        let view = InterfacesView {
            interfaces: vec![tap_interface().into()],
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"interfaces": [{
                "name": "default/web-0", "id": 1, "kind": "tap", "up": true, "mtu": 1500,
                "mac": "02:fe:00:00:00:01", "ifindex": 2,
                "addresses": ["10.65.0.5/32", "fd00:65::5/128"],
                "tap": {"netns": "/var/run/netns/default_web-0", "ifname": "eth0",
                        "queues": 0, "configure": true},
                "counters": {"rx_packets": 12, "rx_bytes": 1008, "tx_packets": 0,
                             "tx_bytes": 0, "tx_errors": 3, "rx_no_buffer": 0, "rx_too_long": 2}
            }]})
        );
    }

    fn routes() -> Vec<RouteView> {
        vec![
            pb::Route {
                prefix: "10.65.0.5/32".into(),
                paths: vec![pb::Path {
                    interface: "default/web-0".into(),
                    gateway: String::new(),
                }],
                origin: "interface".into(),
            }
            .into(),
            pb::Route {
                prefix: "10.66.0.0/16".into(),
                paths: vec![
                    pb::Path {
                        interface: "uplink0".into(),
                        gateway: "192.168.1.1".into(),
                    },
                    pb::Path {
                        interface: "uplink1".into(),
                        gateway: "192.168.2.1".into(),
                    },
                ],
                origin: "api".into(),
            }
            .into(),
        ]
    }

    #[test]
    fn route_table_stacks_ecmp_paths() {
        assert_eq!(
            routes_table(&routes()).to_string(),
            "Prefix        Origin     Interface      Gateway\n\
             10.65.0.5/32  interface  default/web-0  on-link\n\
             10.66.0.0/16  api        uplink0        192.168.1.1\n\
             \x20                        uplink1        192.168.2.1\n"
        );
    }

    #[test]
    fn route_json_omits_on_link_gateways() {
        let json = serde_json::to_value(RoutesView { routes: routes() }).unwrap();
        assert_eq!(
            json["routes"][0],
            serde_json::json!({"prefix": "10.65.0.5/32", "origin": "interface",
                               "paths": [{"interface": "default/web-0"}]})
        );
        assert_eq!(json["routes"][1]["paths"][1]["gateway"], "192.168.2.1");
    }

    fn counters() -> pb::Counters {
        let bad_csum = pb::DropCounter {
            node: "ip4-input".into(),
            reason: "bad-checksum".into(),
            description: "IPv4 header checksum is wrong".into(),
            count: 5,
        };
        let no_route = pb::DropCounter {
            node: "ip4-lookup".into(),
            reason: "no-route".into(),
            description: "no route to the destination".into(),
            count: 120,
        };
        pb::Counters {
            workers: vec![
                pb::WorkerCounters {
                    worker: 0,
                    core: 2,
                    vectors: 10,
                    packets: 405,
                    drops: vec![bad_csum.clone(), no_route.clone()],
                },
                pb::WorkerCounters {
                    worker: 1,
                    core: -1,
                    vectors: 0,
                    packets: 0,
                    drops: vec![],
                },
            ],
            buffers: Some(pb::BufferPoolStats {
                total: 16384,
                free: 16000,
                in_use: 384,
                buffer_size: 2048,
                hugepages: true,
            }),
            drops: vec![bad_csum, no_route],
        }
    }

    #[test]
    fn counters_text_has_workers_drops_and_pool() {
        assert_eq!(
            counters_text(&counters().into()),
            "Worker  Core  Vectors  Packets  Packets/vector  Drops\n\
             \x20    0     2       10      405           40.50    125\n\
             \x20    1     -        0        0            0.00      0\n\
             \n\
             Count  Node        Reason        Description\n\
             \x20   5  ip4-input   bad-checksum  IPv4 header checksum is wrong\n\
             \x20 120  ip4-lookup  no-route      no route to the destination\n\
             \n\
             Buffers: 16384 total, 384 in use, 16000 free; 2048 bytes each, hugepages\n"
        );
    }

    #[test]
    fn counters_text_says_when_nothing_dropped() {
        let c = pb::Counters {
            workers: vec![],
            buffers: None,
            drops: vec![],
        };
        let text = counters_text(&c.into());
        assert!(text.contains("\nNo drops.\n"), "{text}");
        assert!(text.ends_with("ordinary pages\n"), "{text}");
    }

    #[test]
    fn counters_json_leaves_out_unpinned_core() {
        let json = serde_json::to_value(CountersView::from(counters())).unwrap();
        assert_eq!(json["workers"][0]["core"], 2);
        assert!(json["workers"][1].get("core").is_none());
        assert_eq!(json["buffers"]["in_use"], 384);
        assert_eq!(json["drops"][1]["reason"], "no-route");
    }

    fn runtime() -> pb::Runtime {
        let node = |name: &str, calls, vectors, clocks| pb::NodeRuntime {
            name: name.into(),
            calls,
            vectors,
            clocks,
        };
        pb::Runtime {
            tsc_hz: 2_500_000_000,
            workers: vec![pb::WorkerRuntime {
                worker: 0,
                core: -1,
                loops: 1000,
                idle_loops: 900,
                clocks: 5_000_000_000,
                idle_clocks: 4_000_000_000,
                nodes: vec![
                    node("port-input", 1000, 25_600, 512_000),
                    node("l2-xconnect", 100, 25_600, 51_200),
                    node("ethernet-input", 0, 0, 0),
                    node("port-output", 100, 25_600, 768_000),
                ],
            }],
        }
    }

    #[test]
    fn runtime_text_lists_nodes_that_ran_with_a_total() {
        let text = runtime_text(&RuntimeView::from(runtime()));
        assert!(
            text.starts_with("Worker 0 (unpinned): 2.0 s, 1000 loops, 900 idle, 80.0% idle time, TSC 2.500 GHz\n"),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("Name"), "{text}");
        assert!(lines[2].starts_with("port-input"), "{text}");
        assert!(lines[2].ends_with("2.00e1         25.60"), "{text}");
        assert!(lines[3].starts_with("l2-xconnect"), "{text}");
        assert!(!text.contains("ethernet-input"), "{text}");
        assert!(lines[4].starts_with("port-output"), "{text}");
        // 10⁹ busy cycles over 25 600 packets.
        assert!(lines[5].starts_with("total (busy loops)"), "{text}");
        assert!(
            lines[5].contains("25600") && lines[5].contains("3.91e4"),
            "{text}"
        );
    }

    #[test]
    fn runtime_json_keeps_raw_totals_and_every_node() {
        let json = serde_json::to_value(RuntimeView::from(runtime())).unwrap();
        let w = &json["workers"][0];
        assert_eq!(w["clocks"], 5_000_000_000u64);
        assert_eq!(w["idle_clocks"], 4_000_000_000u64);
        assert!(w.get("core").is_none());
        assert_eq!(w["nodes"].as_array().unwrap().len(), 4);
        assert_eq!(w["nodes"][1]["name"], "l2-xconnect");
        assert_eq!(w["nodes"][1]["clocks_per_packet"], 2.0);
        assert_eq!(json["tsc_hz"], 2_500_000_000u64);
    }
}
