//! The packet graph: VPP-style nodes over vectors of up to 256 packets.
//!
//! Each node implements [`Node`]: per-packet logic that returns a [`Next`]
//! — another node or a drop reason. The shared [`drive`] loop runs a node
//! over its whole input frame, prefetching a few packets ahead and
//! scattering every packet to its next node's frame; drops are counted and
//! freed on the spot. Dispatch is static (a `match` per vector, no `dyn`).
//!
//! Frames received on a cross-connected port (VPP's `l2 xconnect`) enter
//! at `l2-xconnect` instead of `ethernet-input` ([`Graph::rx_frame`]
//! decides once per burst) and leave unchanged by the other port.
//!
//! [`Graph::run`] reads the cycle counter once before the first node and
//! once after each node call, so every node's [`GraphCounters::clocks`]
//! holds the cycles of its calls (plus the dispatcher's few between them),
//! at one counter read per node call, never per packet.
//!
//! A vector never holds more than [`FRAME_SIZE`] packets and every node
//! forwards, rewrites in place or drops each packet one for one, so no
//! frame can overflow however packets fan out: the total number of packets
//! in flight never exceeds the vector that entered.

mod drop;
pub mod nodes;

use std::sync::Arc;

use crate::buffer::{BufferCache, BufferPool, Frame, Packet};
use crate::flow::FlowHandle;
use crate::policy::log::PolicyLog;
use crate::port::PortId;
use crate::tables::Tables;
use crate::worker::cycles;

pub use drop::DropReason;
pub use nodes::{FlowNodes, Nodes};

/// Graph nodes, in dispatch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeId {
    /// Cross-connected ports: frames go out unchanged by the other port.
    L2Xconnect,
    EthernetInput,
    ArpInput,
    Ip6Ndisc,
    Ip4Input,
    Ip6Input,
    Ip4IcmpError,
    Ip6IcmpError,
    Ip4Lookup,
    Ip6Lookup,
    Ip4Flow,
    Ip6Flow,
    Ip4Policy,
    Ip6Policy,
    Ip4Rewrite,
    Ip6Rewrite,
    /// Terminal: the worker transmits what lands here.
    InterfaceOutput,
}

impl NodeId {
    pub const ALL: [NodeId; 17] = [
        NodeId::L2Xconnect,
        NodeId::EthernetInput,
        NodeId::ArpInput,
        NodeId::Ip6Ndisc,
        NodeId::Ip4Input,
        NodeId::Ip6Input,
        NodeId::Ip4IcmpError,
        NodeId::Ip6IcmpError,
        NodeId::Ip4Lookup,
        NodeId::Ip6Lookup,
        NodeId::Ip4Flow,
        NodeId::Ip6Flow,
        NodeId::Ip4Policy,
        NodeId::Ip6Policy,
        NodeId::Ip4Rewrite,
        NodeId::Ip6Rewrite,
        NodeId::InterfaceOutput,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            NodeId::L2Xconnect => "l2-xconnect",
            NodeId::EthernetInput => "ethernet-input",
            NodeId::ArpInput => "arp-input",
            NodeId::Ip6Ndisc => "ip6-ndisc",
            NodeId::Ip4Input => "ip4-input",
            NodeId::Ip6Input => "ip6-input",
            NodeId::Ip4IcmpError => "ip4-icmp-error",
            NodeId::Ip6IcmpError => "ip6-icmp-error",
            NodeId::Ip4Lookup => "ip4-lookup",
            NodeId::Ip6Lookup => "ip6-lookup",
            NodeId::Ip4Flow => "ip4-flow",
            NodeId::Ip6Flow => "ip6-flow",
            NodeId::Ip4Policy => "ip4-policy",
            NodeId::Ip6Policy => "ip6-policy",
            NodeId::Ip4Rewrite => "ip4-rewrite",
            NodeId::Ip6Rewrite => "ip6-rewrite",
            NodeId::InterfaceOutput => "interface-output",
        }
    }
}

/// Where a node sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Node(NodeId),
    Drop(DropReason),
}

/// What every node sees besides the packet.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tables: &'a Tables,
    /// Monotonic time of this poll loop, nanoseconds.
    pub now_ns: u64,
}

/// Per-packet logic of one node.
pub trait Node {
    const ID: NodeId;
    fn process(&mut self, cx: &Context<'_>, pkt: &mut Packet<'_>) -> Next;
}

/// Packets a worker's graph counted, by node and by drop reason.
#[derive(Debug, Clone)]
pub struct GraphCounters {
    /// Vectors each node processed.
    pub calls: [u64; NodeId::COUNT],
    /// Packets each node processed.
    pub packets: [u64; NodeId::COUNT],
    /// Cycles ([`crate::worker::cycles`]) each node spent.
    pub clocks: [u64; NodeId::COUNT],
    pub drops: [u64; DropReason::COUNT],
}

impl Default for GraphCounters {
    fn default() -> Self {
        GraphCounters {
            calls: [0; NodeId::COUNT],
            packets: [0; NodeId::COUNT],
            clocks: [0; NodeId::COUNT],
            drops: [0; DropReason::COUNT],
        }
    }
}

/// How many packets ahead [`drive`] prefetches.
const PREFETCH_AHEAD: usize = 4;

/// Runs `node` over `input`, sending each packet to its next frame.
#[inline(always)]
fn drive<N: Node>(
    node: &mut N,
    input: &mut Frame,
    frames: &mut [Frame; NodeId::COUNT],
    pool: &BufferPool,
    cache: &mut BufferCache,
    cx: &Context<'_>,
    counters: &mut GraphCounters,
) {
    let id = N::ID as usize;
    counters.calls[id] += 1;
    counters.packets[id] += input.len() as u64;
    let mut drain = input.drain();
    while let Some(ahead) = drain.peek_ahead(PREFETCH_AHEAD) {
        pool.prefetch(ahead);
        let mut b = drain.next().expect("peeked further ahead");
        let next = node.process(cx, &mut pool.packet(&mut b));
        scatter(next, b, frames, cache, counters);
    }
    for mut b in drain {
        let next = node.process(cx, &mut pool.packet(&mut b));
        scatter(next, b, frames, cache, counters);
    }
}

#[inline(always)]
pub(crate) fn scatter(
    next: Next,
    b: crate::buffer::BufferIndex,
    frames: &mut [Frame; NodeId::COUNT],
    cache: &mut BufferCache,
    counters: &mut GraphCounters,
) {
    match next {
        Next::Node(n) => frames[n as usize].push(b),
        Next::Drop(r) => {
            counters.drops[r as usize] += 1;
            cache.free(b);
        }
    }
}

/// One worker's graph: node state, a frame per node, counters.
#[derive(Debug)]
pub struct Graph {
    frames: Box<[Frame; NodeId::COUNT]>,
    /// Swapped with a node's frame while the node runs.
    scratch: Box<Frame>,
    nodes: Nodes,
    pub counters: GraphCounters,
}

/// Flows a [`Graph::new`] graph's private flow table holds.
const PRIVATE_FLOWS: u32 = 1 << 16;

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    /// A graph with a flow table of its own (for tests and benches).
    pub fn new() -> Self {
        Self::with_flow_nodes(FlowNodes::private(PRIVATE_FLOWS))
    }

    /// A graph on a shared flow table (a worker's).
    pub fn with_flows(flows: FlowHandle) -> Self {
        Self::with_flow_nodes(FlowNodes::new(flows))
    }

    fn with_flow_nodes(flows: FlowNodes) -> Self {
        Graph {
            frames: Box::new(std::array::from_fn(|_| Frame::new())),
            scratch: Box::default(),
            nodes: Nodes::new(flows),
            counters: GraphCounters::default(),
        }
    }

    /// The flow table handle: the worker announces quiescent points on it.
    pub fn flows(&mut self) -> &mut FlowHandle {
        self.nodes.flows.handle()
    }

    /// Packets policy LOG rules matched so far.
    pub fn policy_logged(&self) -> u64 {
        self.nodes.flows.logged
    }

    /// Sends the records of LOG rule matches to `log` (the engine's).
    pub fn set_policy_log(&mut self, log: Arc<PolicyLog>) {
        self.nodes.flows.set_log(log);
    }

    /// Where the records of LOG rule matches go.
    pub fn policy_log(&self) -> &Arc<PolicyLog> {
        self.nodes.flows.log()
    }

    /// The frame received packets go into (ethernet-input's).
    pub fn input(&mut self) -> &mut Frame {
        &mut self.frames[NodeId::EthernetInput as usize]
    }

    /// The input frame of node `id` (tests feed nodes directly).
    #[cfg(test)]
    pub(crate) fn frame(&mut self, id: NodeId) -> &mut Frame {
        &mut self.frames[id as usize]
    }

    /// The frame packets received on `port` go into: `l2-xconnect`'s when
    /// the port is cross-connected, else ethernet-input's. Once per burst.
    #[inline]
    pub fn rx_frame(&mut self, tables: &Tables, port: PortId) -> &mut Frame {
        let id = if tables.xconnect(port).is_some() {
            NodeId::L2Xconnect
        } else {
            NodeId::EthernetInput
        };
        &mut self.frames[id as usize]
    }

    /// Packets ready to transmit; `meta.tx_port` says where.
    pub fn output(&mut self) -> &mut Frame {
        &mut self.frames[NodeId::InterfaceOutput as usize]
    }

    /// Runs nodes until every packet is dropped or in the output frame.
    pub fn run(&mut self, pool: &BufferPool, cache: &mut BufferCache, cx: &Context<'_>) {
        let mut t = cycles();
        loop {
            let mut ran = false;
            for id in NodeId::ALL {
                if id == NodeId::InterfaceOutput || self.frames[id as usize].is_empty() {
                    continue;
                }
                ran = true;
                std::mem::swap(&mut *self.scratch, &mut self.frames[id as usize]);
                let (input, frames, counters) =
                    (&mut *self.scratch, &mut *self.frames, &mut self.counters);
                let n = &mut self.nodes;
                match id {
                    NodeId::L2Xconnect => {
                        drive(&mut n.xconnect, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::EthernetInput => {
                        drive(&mut n.ethernet, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::ArpInput => drive(&mut n.arp, input, frames, pool, cache, cx, counters),
                    NodeId::Ip6Ndisc => {
                        drive(&mut n.ndisc, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip4Input => {
                        drive(&mut n.ip4_input, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip6Input => {
                        drive(&mut n.ip6_input, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip4IcmpError => drive(
                        &mut n.ip4_icmp_error,
                        input,
                        frames,
                        pool,
                        cache,
                        cx,
                        counters,
                    ),
                    NodeId::Ip6IcmpError => drive(
                        &mut n.ip6_icmp_error,
                        input,
                        frames,
                        pool,
                        cache,
                        cx,
                        counters,
                    ),
                    NodeId::Ip4Lookup => {
                        drive(&mut n.ip4_lookup, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip6Lookup => {
                        drive(&mut n.ip6_lookup, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip4Flow => n
                        .flows
                        .run_flow::<nodes::V4>(input, frames, pool, cache, cx, counters),
                    NodeId::Ip6Flow => n
                        .flows
                        .run_flow::<nodes::V6>(input, frames, pool, cache, cx, counters),
                    NodeId::Ip4Policy => n
                        .flows
                        .run_policy::<nodes::V4>(input, frames, pool, cache, cx, counters),
                    NodeId::Ip6Policy => n
                        .flows
                        .run_policy::<nodes::V6>(input, frames, pool, cache, cx, counters),
                    NodeId::Ip4Rewrite => {
                        drive(&mut n.ip4_rewrite, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::Ip6Rewrite => {
                        drive(&mut n.ip6_rewrite, input, frames, pool, cache, cx, counters)
                    }
                    NodeId::InterfaceOutput => unreachable!("output is the worker's"),
                }
                let now = cycles();
                counters.clocks[id as usize] += now.wrapping_sub(t);
                t = now;
                debug_assert!(self.scratch.is_empty());
            }
            if !ran {
                return;
            }
        }
    }
}
