//! `ip4-flow`/`ip6-flow` (the flow table, after the route lookup) and
//! `ip4-policy`/`ip6-policy` (policy, for packets without a current flow
//! verdict). Both work on whole vectors.
//!
//! The flow node parses every packet's 5-tuple, looks the vector up in
//! the shared flow table with the staged [`FlowHandle::lookup_batch`],
//! and tracks each hit (counters, TCP state, idle timer: a few atomics).
//! A hit whose verdict was decided under the policy both ports enforce
//! now goes straight to rewrite, or is dropped if denied: an established
//! flow costs the lookup and the tracking, nothing more. A miss, a verdict
//! older than either port's policy, or a reopened TCP connection goes to
//! the policy node.
//!
//! The policy node evaluates the connection in its original direction:
//! egress of the endpoint that opened it and ingress of the one it went
//! to, both must allow. The classifier lookups are batched per endpoint
//! and direction over the vector ([`DirectionRules::classify_batch`]);
//! LOG, PASS and guard rules are followed per packet. The verdict, the
//! deciding rule and the table generation go into the flow (created on a
//! miss), so the rest of the connection, replies included, takes the fast
//! path until policy changes at either end. A port that enforces policy
//! but has none yet passes nothing (fail closed).
//!
//! Not policed: packets the gateway originates (ICMP errors from the
//! graph), and ICMP errors whose quoted packet belongs to an allowed flow.

use std::net::IpAddr;
use std::sync::Arc;

use caracal_wire::{icmpv4, icmpv6, IpProtocol, Ipv4Packet, Ipv6Packet, TcpFlags};

use super::L2_LEN;
use crate::buffer::{BufferCache, BufferIndex, BufferPool, Frame, Meta};
use crate::flow::{
    FlowDir, FlowHandle, FlowHit, FlowId, FlowKey, FlowTable, FlowTableConfig, NewFlow, RuleId,
    Tracked, Verdict, Zone,
};
use crate::graph::{scatter, Context, DropReason, GraphCounters, Next, NodeId};
use crate::policy::log::{LogRecord, PolicyLog};
use crate::policy::{Decision, DirectionRules, Family, Hit, PacketKey, RuleName, DEFAULT_RULE};
use crate::port::PortId;
use crate::tables::{PolicyMode, Tables};

/// Bits of the policy generation a flow verdict keeps (see
/// [`Verdict::generation`]).
const VERDICT_GENERATION_MASK: u64 = (1 << 30) - 1;

/// Policy LOG records one worker queues per second at most.
const LOG_RATE: u32 = 100;
/// How many packets ahead the flow node prefetches while parsing.
const PREFETCH_AHEAD: usize = 4;

/// What one address family's nodes need to know about it.
pub(crate) trait Af {
    type Addr: Family;
    const FLOW: NodeId;
    const POLICY: NodeId;
    const REWRITE: NodeId;
    /// The family's ICMP: protocol number and echo types.
    const ICMP: IpProtocol;
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// Whether an ICMP type is an error (which quotes a packet).
    fn icmp_error(t: u8) -> bool;
    /// Reads the packet's flow (`data` is a validated frame of the family).
    fn parse(data: &[u8], tables: &Tables) -> Parsed<Self::Addr>;
    /// The flow of the packet an ICMP error ([`Class::Related`]) quotes.
    fn quoted(data: &[u8]) -> Option<FlowKey>;
    /// The family's scratch space.
    fn scratch(n: &mut FlowNodes) -> &mut Scratch<Self::Addr>;
}

#[derive(Debug)]
pub(crate) struct V4;
#[derive(Debug)]
pub(crate) struct V6;

/// One packet's flow, as the nodes see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parsed<A> {
    pub key: FlowKey,
    /// The classifier's view: TCP/UDP/SCTP ports, ICMP type and code.
    pub pkey: PacketKey<A>,
    pub tcp_flags: TcpFlags,
    /// IP bytes.
    pub bytes: u32,
    pub class: Class,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Normal,
    /// From the gateway itself: not policed.
    Local,
    /// An ICMP error quoting a packet ([`Af::quoted`]).
    Related,
}

/// What the flow node keeps of a packet between its passes.
#[derive(Debug, Clone, Copy)]
struct Brief {
    tcp_flags: TcpFlags,
    class: Class,
    bytes: u32,
}

/// Ports of a TCP/UDP/SCTP header, TCP flags.
#[inline(always)]
fn l4_ports(proto: IpProtocol, l4: &[u8]) -> ((u16, u16), TcpFlags) {
    let ports = match proto {
        IpProtocol::TCP | IpProtocol::UDP | IpProtocol::SCTP if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        _ => (0, 0),
    };
    let flags = match proto {
        IpProtocol::TCP if l4.len() > 13 => TcpFlags(l4[13]),
        _ => TcpFlags::EMPTY,
    };
    (ports, flags)
}

/// The family-independent part of [`Af::parse`]: for ICMP the type and
/// code (the classifier's ports), the echo identifier (the flow's ports)
/// and whether it is an error; otherwise the transport ports and TCP
/// flags. `key` makes the flow key from the flow's two ports.
#[inline(always)]
fn transport<F: Af>(
    proto: IpProtocol,
    l4: &[u8],
    class: &mut Class,
    key: impl FnOnce(u16, u16) -> FlowKey,
) -> ((u16, u16), TcpFlags, FlowKey) {
    if proto == F::ICMP && l4.len() >= 2 {
        let (t, code) = (l4[0], l4[1]);
        if F::icmp_error(t) && *class == Class::Normal {
            *class = Class::Related;
        }
        let id = echo_id(l4, F::ECHO_REQUEST, F::ECHO_REPLY).unwrap_or(0);
        (
            (u16::from(t), u16::from(code)),
            TcpFlags::EMPTY,
            key(id, id),
        )
    } else {
        let (ports, flags) = l4_ports(proto, l4);
        (ports, flags, key(ports.0, ports.1))
    }
}

/// The flow key of a quoted packet (an ICMP error's payload) from its
/// transport header `l4`: an echo's, or the ports' (`key`).
fn quoted_key<F: Af>(
    proto: IpProtocol,
    l4: &[u8],
    (src, dst): (IpAddr, IpAddr),
    key: impl FnOnce(u16, u16) -> FlowKey,
) -> Option<FlowKey> {
    if proto == F::ICMP {
        let id = echo_id(l4, F::ECHO_REQUEST, F::ECHO_REPLY)?;
        return FlowKey::icmp_echo(Zone::default(), src, dst, id);
    }
    let ((sp, dp), _) = l4_ports(proto, l4);
    Some(key(sp, dp))
}

/// The flow key of a quoted IPv4 packet.
fn quoted4(q: &[u8]) -> Option<FlowKey> {
    if q.len() < 20 || q[0] >> 4 != 4 {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(q);
    let l4 = q.get(ip.header_len()..)?;
    let (proto, src, dst) = (ip.protocol(), ip.src_addr(), ip.dst_addr());
    quoted_key::<V4>(proto, l4, (src.into(), dst.into()), |sp, dp| {
        FlowKey::v4(Zone::default(), proto, (src, sp), (dst, dp))
    })
}

/// The flow key of a quoted IPv6 packet.
fn quoted6(q: &[u8]) -> Option<FlowKey> {
    if q.len() < 40 || q[0] >> 4 != 6 {
        return None;
    }
    let ip = Ipv6Packet::new_unchecked(q);
    let (proto, src, dst) = (ip.next_header(), ip.src_addr(), ip.dst_addr());
    quoted_key::<V6>(proto, &q[40..], (src.into(), dst.into()), |sp, dp| {
        FlowKey::v6(Zone::default(), proto, (src, sp), (dst, dp))
    })
}

/// The identifier of an echo request or reply.
#[inline(always)]
fn echo_id(icmp: &[u8], request: u8, reply: u8) -> Option<u16> {
    let t = *icmp.first()?;
    if (t == request || t == reply) && icmp.len() >= 6 {
        Some(u16::from_be_bytes([icmp[4], icmp[5]]))
    } else {
        None
    }
}

impl Af for V4 {
    type Addr = u32;
    const FLOW: NodeId = NodeId::Ip4Flow;
    const POLICY: NodeId = NodeId::Ip4Policy;
    const REWRITE: NodeId = NodeId::Ip4Rewrite;
    const ICMP: IpProtocol = IpProtocol::ICMP;
    const ECHO_REQUEST: u8 = icmpv4::ECHO_REQUEST;
    const ECHO_REPLY: u8 = icmpv4::ECHO_REPLY;

    fn icmp_error(t: u8) -> bool {
        icmpv4::is_error(t)
    }

    fn scratch(n: &mut FlowNodes) -> &mut Scratch<u32> {
        &mut n.s4
    }

    fn quoted(data: &[u8]) -> Option<FlowKey> {
        let ip = Ipv4Packet::new_unchecked(&data[L2_LEN..]);
        ip.payload().get(icmpv4::HEADER_LEN..).and_then(quoted4)
    }

    // Inlined so the key goes to the lookup vector from registers.
    #[inline(always)]
    fn parse(data: &[u8], tables: &Tables) -> Parsed<u32> {
        let ip = Ipv4Packet::new_unchecked(&data[L2_LEN..]);
        let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
        // A later fragment has no transport header.
        let l4 = if ip.frag_offset() == 0 {
            ip.payload()
        } else {
            &[]
        };
        let mut class = if src == tables.gateway.ipv4 {
            Class::Local
        } else {
            Class::Normal
        };
        let ((sp, dp), tcp_flags, key) = transport::<Self>(proto, l4, &mut class, |sp, dp| {
            FlowKey::v4(Zone::default(), proto, (src, sp), (dst, dp))
        });
        Parsed {
            key,
            pkey: PacketKey::new(src.into(), dst.into(), proto.0, sp, dp),
            tcp_flags,
            bytes: u32::from(ip.total_len()),
            class,
        }
    }
}

impl Af for V6 {
    type Addr = u128;
    const FLOW: NodeId = NodeId::Ip6Flow;
    const POLICY: NodeId = NodeId::Ip6Policy;
    const REWRITE: NodeId = NodeId::Ip6Rewrite;
    const ICMP: IpProtocol = IpProtocol::ICMPV6;
    const ECHO_REQUEST: u8 = icmpv6::ECHO_REQUEST;
    const ECHO_REPLY: u8 = icmpv6::ECHO_REPLY;

    fn icmp_error(t: u8) -> bool {
        icmpv6::is_error(t)
    }

    fn scratch(n: &mut FlowNodes) -> &mut Scratch<u128> {
        &mut n.s6
    }

    fn quoted(data: &[u8]) -> Option<FlowKey> {
        let ip = Ipv6Packet::new_unchecked(&data[L2_LEN..]);
        ip.payload().get(icmpv6::HEADER_LEN..).and_then(quoted6)
    }

    // Inlined so the key goes to the lookup vector from registers.
    #[inline(always)]
    fn parse(data: &[u8], tables: &Tables) -> Parsed<u128> {
        let ip = Ipv6Packet::new_unchecked(&data[L2_LEN..]);
        let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
        let l4 = ip.payload();
        let mut class = if src == tables.gateway.ipv6 {
            Class::Local
        } else {
            Class::Normal
        };
        let ((sp, dp), tcp_flags, key) = transport::<Self>(proto, l4, &mut class, |sp, dp| {
            FlowKey::v6(Zone::default(), proto, (src, sp), (dst, dp))
        });
        Parsed {
            key,
            pkey: PacketKey::new(src.into(), dst.into(), proto.0, sp, dp),
            tcp_flags,
            bytes: u32::from(ip.payload_len()) + 40,
            class,
        }
    }
}

/// The classifier key of the other direction: addresses and ports
/// swapped, an echo reply seen as its request.
fn reversed<A: Family>(k: &PacketKey<A>) -> PacketKey<A> {
    let icmp_request = match k.proto {
        1 if k.sport == u16::from(icmpv4::ECHO_REPLY) => Some(icmpv4::ECHO_REQUEST),
        58 if k.sport == u16::from(icmpv6::ECHO_REPLY) => Some(icmpv6::ECHO_REQUEST),
        _ => None,
    };
    match icmp_request {
        Some(t) => PacketKey::icmp(k.dst, k.src, k.proto, t, 0),
        None if matches!(k.proto, 1 | 58) => {
            PacketKey::new(k.dst, k.src, k.proto, k.sport, k.dport)
        }
        None => PacketKey::new(k.dst, k.src, k.proto, k.dport, k.sport),
    }
}

/// The generation a verdict about a flow between ports `a` and `b` must
/// not predate; `u64::MAX` if a port is gone.
#[inline]
fn required(tables: &Tables, a: PortId, b: PortId) -> u64 {
    let since = |p: PortId| tables.port(p).map_or(u64::MAX, |e| e.policy.since);
    tables.verdicts_since.max(since(a)).max(since(b))
}

/// Whether verdict `v` still holds: decided at or after `required`
/// (generations compared modulo the bits the verdict keeps).
#[inline]
fn current(v: &Verdict, generation: u64, required: u64) -> bool {
    let age = (generation.wrapping_sub(u64::from(v.generation()))) & VERDICT_GENERATION_MASK;
    required <= generation && age <= generation - required
}

/// The port a routed packet leaves by.
#[inline]
fn tx_port(tables: &Tables, meta: &Meta) -> PortId {
    tables
        .adjacency(meta.adjacency)
        .map_or(PortId::INVALID, |a| a.path(meta.flow_hash).port)
}

/// One evaluation job: a packet's key against one endpoint direction.
#[derive(Debug, Clone, Copy)]
struct Job {
    port: PortId,
    /// The endpoint's ingress (else its egress).
    ingress: bool,
    packet: u16,
}

/// Per-vector scratch space of one family.
#[derive(Debug)]
pub(crate) struct Scratch<A> {
    parsed: Vec<Parsed<A>>,
    /// Per packet: the ports the connection went from and to, and its
    /// first packet's classifier key.
    conns: Vec<(PortId, PortId, PacketKey<A>)>,
    keys: Vec<PacketKey<A>>,
}

impl<A> Default for Scratch<A> {
    fn default() -> Self {
        let n = crate::buffer::FRAME_SIZE;
        Scratch {
            parsed: Vec::with_capacity(n),
            conns: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
        }
    }
}

/// At most [`LOG_RATE`] log lines per second.
#[derive(Debug, Default)]
struct LogLimit {
    second: u64,
    lines: u32,
}

impl LogLimit {
    fn allow(&mut self, now_ns: u64) -> bool {
        let second = now_ns / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.lines = 0;
        }
        self.lines += 1;
        self.lines <= LOG_RATE
    }
}

/// The flow and policy nodes' state: the worker's flow table handle and
/// scratch space for one vector.
#[derive(Debug)]
pub struct FlowNodes {
    handle: FlowHandle,
    tokens: Vec<BufferIndex>,
    keys: Vec<FlowKey>,
    briefs: Vec<Brief>,
    hits: Vec<Option<FlowHit>>,
    jobs: Vec<Job>,
    first: Vec<Option<Hit>>,
    s4: Scratch<u32>,
    s6: Scratch<u128>,
    log_limit: LogLimit,
    /// Where the records of LOG rule matches go (the engine's, shared by
    /// its workers).
    log: Arc<PolicyLog>,
    /// Packets LOG rules matched (including records not written).
    pub logged: u64,
}

impl FlowNodes {
    pub fn new(handle: FlowHandle) -> Self {
        let n = crate::buffer::FRAME_SIZE;
        FlowNodes {
            handle,
            tokens: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            briefs: Vec::with_capacity(n),
            hits: Vec::with_capacity(n),
            jobs: Vec::with_capacity(2 * n),
            first: Vec::with_capacity(2 * n),
            s4: Scratch::default(),
            s6: Scratch::default(),
            log_limit: LogLimit::default(),
            log: Arc::default(),
            logged: 0,
        }
    }

    /// Sends LOG records to `log` (the engine's) from now on.
    pub fn set_log(&mut self, log: Arc<PolicyLog>) {
        self.log = log;
    }

    /// Where LOG records go.
    pub fn log(&self) -> &Arc<PolicyLog> {
        &self.log
    }

    /// A private table, for graphs that run without an engine (tests,
    /// benches).
    pub fn private(capacity: u32) -> Self {
        let table = FlowTable::new(&FlowTableConfig {
            capacity,
            max_handles: 2,
            ..FlowTableConfig::default()
        })
        .expect("a valid flow table configuration");
        Self::new(table.register().expect("a fresh table has handles"))
    }

    pub fn handle(&mut self) -> &mut FlowHandle {
        &mut self.handle
    }

    /// `ip4-flow` / `ip6-flow` over one vector.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_flow<F: Af>(
        &mut self,
        input: &mut Frame,
        frames: &mut [Frame; NodeId::COUNT],
        pool: &BufferPool,
        cache: &mut BufferCache,
        cx: &Context<'_>,
        counters: &mut GraphCounters,
    ) {
        count_call(counters, F::FLOW, input.len());
        let tables = cx.tables;
        self.tokens.clear();
        self.keys.clear();
        self.briefs.clear();
        self.tokens.extend(input.drain());
        for i in 0..self.tokens.len() {
            if let Some(ahead) = self.tokens.get(i + PREFETCH_AHEAD) {
                pool.prefetch(ahead.get());
            }
            let p = pool.packet(&mut self.tokens[i]);
            let parsed = F::parse(p.data(), tables);
            self.keys.push(parsed.key);
            self.briefs.push(Brief {
                tcp_flags: parsed.tcp_flags,
                class: parsed.class,
                bytes: parsed.bytes,
            });
        }
        self.hits.clear();
        self.hits.resize(self.keys.len(), None);
        self.handle.lookup_batch(&self.keys, &mut self.hits);
        for (i, mut b) in self.tokens.drain(..).enumerate() {
            let brief = self.briefs[i];
            let mut p = pool.packet(&mut b);
            let m = p.meta_mut();
            m.tx_port = tx_port(tables, m);
            let next = match brief.class {
                Class::Local => Next::Node(F::REWRITE),
                Class::Related
                    if F::quoted(p.data())
                        .is_some_and(|k| related_allowed(&self.handle, tables, &k, p.meta())) =>
                {
                    Next::Node(F::REWRITE)
                }
                _ => {
                    let m = p.meta_mut();
                    let (flow, dir, next) =
                        fast_path::<F>(&self.handle, tables, self.hits[i], brief, m, cx.now_ns);
                    m.flow = flow;
                    m.flow_dir = dir as u8;
                    next
                }
            };
            scatter(next, b, frames, cache, counters);
        }
    }

    /// `ip4-policy` / `ip6-policy` over one vector.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_policy<F: Af>(
        &mut self,
        input: &mut Frame,
        frames: &mut [Frame; NodeId::COUNT],
        pool: &BufferPool,
        cache: &mut BufferCache,
        cx: &Context<'_>,
        counters: &mut GraphCounters,
    ) {
        count_call(counters, F::POLICY, input.len());
        let tables = cx.tables;
        let mut s = std::mem::take(F::scratch(self));
        s.parsed.clear();
        s.conns.clear();
        self.tokens.clear();
        self.tokens.extend(input.drain());
        self.jobs.clear();
        for (i, b) in self.tokens.iter_mut().enumerate() {
            let p = pool.packet(b);
            let m = *p.meta();
            let parsed = F::parse(p.data(), tables);
            // The connection as its first packet went: who sent it, to whom.
            let reply = m.flow != Meta::NO_FLOW && m.flow_dir == FlowDir::Reply as u8;
            let conn = if reply {
                (m.tx_port, m.rx_port, reversed(&parsed.pkey))
            } else {
                (m.rx_port, m.tx_port, parsed.pkey)
            };
            s.parsed.push(parsed);
            s.conns.push(conn);
            for (port, ingress) in [(conn.0, false), (conn.1, true)] {
                if rules_of(tables, port, ingress).is_some() {
                    self.jobs.push(Job {
                        port,
                        ingress,
                        packet: i as u16,
                    });
                }
            }
        }
        // The first lookups, batched per endpoint direction.
        self.jobs
            .sort_unstable_by_key(|j| (j.port, j.ingress, j.packet));
        self.first.clear();
        self.first.resize(self.jobs.len(), None);
        let mut start = 0;
        while start < self.jobs.len() {
            let (port, ingress) = (self.jobs[start].port, self.jobs[start].ingress);
            let end = start
                + self.jobs[start..]
                    .iter()
                    .take_while(|j| j.port == port && j.ingress == ingress)
                    .count();
            s.keys.clear();
            s.keys.extend(
                self.jobs[start..end]
                    .iter()
                    .map(|j| s.conns[usize::from(j.packet)].2),
            );
            if let Some(rules) = rules_of(tables, port, ingress) {
                rules.classify_batch(&s.keys, &mut self.first[start..end]);
            }
            start = end;
        }
        for (i, mut b) in self.tokens.drain(..).enumerate() {
            let meta = *pool.packet(&mut b).meta();
            let (from, to, key) = s.conns[i];
            let ready = |p: PortId| {
                matches!(
                    mode(tables, p),
                    Some(PolicyMode::Open | PolicyMode::Enforced(_))
                )
            };
            let next = if !ready(from) || !ready(to) {
                Next::Drop(DropReason::PolicyNotReady)
            } else {
                let mut decide = |ingress: bool, port: PortId| -> Decision {
                    let Some(rules) = rules_of(tables, port, ingress) else {
                        return Decision {
                            allow: true,
                            rule: DEFAULT_RULE,
                        };
                    };
                    let j = self
                        .jobs
                        .binary_search_by_key(&(port, ingress, i as u16), |j| {
                            (j.port, j.ingress, j.packet)
                        })
                        .expect("a job per enforced direction");
                    let (logged, limit, log) = (&mut self.logged, &mut self.log_limit, &self.log);
                    rules.resolve(&key, self.first[j], |rule| {
                        *logged += 1;
                        if limit.allow(cx.now_ns) {
                            log.push(log_record(tables, port, ingress, rules, rule, &key, cx));
                        }
                    })
                };
                let egress = decide(false, from);
                let ingress = decide(true, to);
                let (allow, rule) = combine(egress, ingress);
                let allow = record(&self.handle, &s.parsed[i], &meta, allow, rule, cx);
                if allow {
                    Next::Node(F::REWRITE)
                } else {
                    Next::Drop(DropReason::PolicyDenied)
                }
            };
            scatter(next, b, frames, cache, counters);
        }
        *F::scratch(self) = s;
    }
}

/// Stores a decision in the packet's flow (creating it on a miss);
/// returns whether the packet passes.
fn record<A>(
    handle: &FlowHandle,
    parsed: &Parsed<A>,
    meta: &Meta,
    allow: bool,
    rule: u32,
    cx: &Context<'_>,
) -> bool {
    let verdict = Verdict::new(allow, RuleId(rule), cx.tables.generation);
    if meta.flow != Meta::NO_FLOW {
        handle.set_verdict(FlowId(meta.flow), Some(verdict));
        return allow;
    }
    let first = NewFlow {
        bytes: parsed.bytes,
        tcp_flags: parsed.tcp_flags,
        verdict: Some(verdict),
        forwarding: None,
    };
    match handle.insert(&parsed.key, cx.now_ns, &first) {
        Ok(ins) if !ins.created => {
            // Another worker created the flow meanwhile (maybe from
            // the other end): its verdict, if current, speaks for the
            // connection.
            handle.track(ins.hit, cx.now_ns, parsed.bytes, parsed.tcp_flags);
            let req = required(cx.tables, meta.rx_port, meta.tx_port);
            match handle.verdict(ins.hit.id) {
                Some(v) if current(&v, cx.tables.generation, req) => v.allowed,
                _ => {
                    // Our decision took this packet for the first; it
                    // speaks for the flow only if the flow agrees.
                    if ins.hit.dir == FlowDir::Original {
                        handle.set_verdict(ins.hit.id, Some(verdict));
                    }
                    allow
                }
            }
        }
        // Created, or not remembered (table full, a TCP segment that
        // cannot open a flow): the decision holds for this packet.
        Ok(_) | Err(_) => allow,
    }
}

fn count_call(counters: &mut GraphCounters, id: NodeId, n: usize) {
    counters.calls[id as usize] += 1;
    counters.packets[id as usize] += n as u64;
}

fn mode(tables: &Tables, port: PortId) -> Option<&PolicyMode> {
    tables.port(port).map(|e| &e.policy.mode)
}

fn rules_of(tables: &Tables, port: PortId, ingress: bool) -> Option<&DirectionRules> {
    match mode(tables, port)? {
        PolicyMode::Enforced(r) => Some(if ingress { &r.ingress } else { &r.egress }),
        _ => None,
    }
}

/// Both ends must allow; the rule reported is the one that denied, else
/// the most specific that allowed (ingress before egress, a rule before
/// a default).
fn combine(egress: Decision, ingress: Decision) -> (bool, u32) {
    if !egress.allow {
        (false, egress.rule)
    } else if !ingress.allow {
        (false, ingress.rule)
    } else if ingress.rule != DEFAULT_RULE {
        (true, ingress.rule)
    } else {
        (true, egress.rule)
    }
}

/// The fast path of one packet: its flow (or [`Meta::NO_FLOW`]), its
/// direction there, and where it goes.
#[inline]
fn fast_path<F: Af>(
    handle: &FlowHandle,
    tables: &Tables,
    hit: Option<FlowHit>,
    brief: Brief,
    meta: &Meta,
    now_ns: u64,
) -> (u32, FlowDir, Next) {
    let to_policy = Next::Node(F::POLICY);
    let Some(hit) = hit else {
        return (Meta::NO_FLOW, FlowDir::Original, to_policy);
    };
    match handle.track(hit, now_ns, brief.bytes, brief.tcp_flags) {
        Tracked::Gone => (Meta::NO_FLOW, FlowDir::Original, to_policy),
        // A new connection on the tuple, opened by this packet's sender.
        Tracked::Reopened => (hit.id.0, FlowDir::Original, to_policy),
        Tracked::Ok | Tracked::Ignored | Tracked::Invalid => {
            let req = required(tables, meta.rx_port, meta.tx_port);
            match handle.verdict(hit.id) {
                Some(v) if current(&v, tables.generation, req) => {
                    let next = if v.allowed {
                        Next::Node(F::REWRITE)
                    } else {
                        Next::Drop(DropReason::PolicyDenied)
                    };
                    (hit.id.0, hit.dir, next)
                }
                _ => (hit.id.0, hit.dir, to_policy),
            }
        }
    }
}

/// Whether an ICMP error quoting a packet of flow `quoted` may pass: the
/// flow exists and is allowed under current policy.
fn related_allowed(handle: &FlowHandle, tables: &Tables, quoted: &FlowKey, meta: &Meta) -> bool {
    let Some(hit) = handle.lookup(quoted) else {
        return false;
    };
    let req = required(tables, meta.rx_port, meta.tx_port);
    handle
        .verdict(hit.id)
        .is_some_and(|v| v.allowed && current(&v, tables.generation, req))
}

/// The record of a packet a LOG rule matched: names shared with the
/// snapshot, nothing allocated.
fn log_record<A: Family>(
    tables: &Tables,
    port: PortId,
    ingress: bool,
    rules: &DirectionRules,
    rule: RuleName,
    key: &PacketKey<A>,
    cx: &Context<'_>,
) -> LogRecord {
    LogRecord {
        at_ns: cx.now_ns,
        interface: tables.port(port).map(|e| e.name.clone()),
        ingress,
        rule: rules.log_name_shared(rule),
        proto: key.proto,
        src: key.src.to_ip(),
        sport: key.sport,
        dst: key.dst.to_ip(),
        dport: key.dport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_generations_compare_modulo_what_the_flow_keeps() {
        // The flow table keeps exactly the bits this node assumes.
        let v = Verdict::new(true, RuleId(0), VERDICT_GENERATION_MASK + 1);
        assert_eq!(v.generation(), 0);
        let v = Verdict::new(true, RuleId(0), 5);
        assert!(current(&v, 7, 5));
        assert!(current(&v, 5, 0));
        assert!(!current(&v, 7, 6), "a port changed after the decision");
        assert!(
            !current(&v, 4, 0),
            "decided in the future: another snapshot"
        );
        // Across the wrap of the kept bits.
        let big = VERDICT_GENERATION_MASK + 1;
        let v = Verdict::new(false, RuleId(1), big + 1);
        assert!(current(&v, big + 3, big));
        assert!(!current(&v, big + 3, big + 2));
    }

    #[test]
    fn reversed_keys_swap_ends_and_see_echo_replies_as_requests() {
        let k = PacketKey::<u32>::new(1, 2, 6, 1000, 80);
        assert_eq!(reversed(&k), PacketKey::new(2, 1, 6, 80, 1000));
        let reply = PacketKey::<u32>::icmp(1, 2, 1, icmpv4::ECHO_REPLY, 0);
        assert_eq!(
            reversed(&reply),
            PacketKey::icmp(2, 1, 1, icmpv4::ECHO_REQUEST, 0)
        );
        let unreachable = PacketKey::<u128>::icmp(1, 2, 58, 1, 4);
        assert_eq!(reversed(&unreachable), PacketKey::icmp(2, 1, 58, 1, 4));
    }
}
