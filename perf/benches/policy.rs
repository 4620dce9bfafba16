//! Bench of the policy and flow path through the whole graph, one core:
//! UDP from pod A (no policy) to pod B, whose ingress has a tier of 64
//! rules (port-specific CIDR rules that do not match, then one naming an
//! IP set of 1 000 addresses that does), in vectors of 256 64-byte frames
//! (rx copy → ethernet → ip4-input → lookup → flow → [policy] → rewrite →
//! tx).
//!
//! - `established`: 1 024 flows already in the flow table: every packet is
//!   a flow hit with a current verdict and skips policy;
//! - `reevaluated`: the same flows, but B's policy is republished before
//!   every vector (a new generation, as after any change to it), so every
//!   packet goes through the policy node (classifier, verdict update): the
//!   cost of a flow's next packet after a change;
//! - `first-packet` (printed only, it cannot repeat): 2 048 vectors of
//!   flows never seen, each packet a miss, a policy decision and a flow
//!   insert into a table of 1 M flows.
//!
//! Run: `cargo bench -p caracal-perf --bench policy`. It prints TSC cycles
//! per packet for each before criterion's times.

use caracal_dataplane::worker::cycles as tsc;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame};
use caracal_dataplane::flow::{FlowTable, FlowTableConfig};
use caracal_dataplane::graph::{Context, DropReason, Graph, NodeId};
use caracal_dataplane::policy::spec::{
    DefaultAction, EndAction, EndpointPolicySpec, IpSetSpec, PolicyBatch, PolicySpec, RuleSpec,
    TierSpec,
};
use caracal_dataplane::policy::{Action, IpNet, PolicyDb, PortRange};
use caracal_dataplane::port::loopback::{LoopbackPort, LoopbackQueue, Sink};
use caracal_dataplane::port::{Port, PortId, PortQueue};
use caracal_dataplane::tables::{AdjPath, Adjacency, PolicyMode, PortEntry, PortPolicy, Tables};
use caracal_perf::frames;
use caracal_wire::EthernetAddress;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const VECTOR: usize = 256;
const FLOWS: u16 = 1024;
const RULES: u32 = 64;
const SET_MEMBERS: u32 = 1000;
const SRC: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 1);

struct Bench {
    pool: Arc<BufferPool>,
    cache: BufferCache,
    graph: Graph,
    tables: Tables,
    db: PolicyDb,
    rx: LoopbackQueue,
    tx: Box<dyn PortQueue>,
}

/// B's ingress: `RULES - 1` rules that do not match our traffic, then the
/// one that allows it by IP set.
fn policy(version: u32) -> PolicyBatch {
    let mut ingress: Vec<RuleSpec> = (0..RULES - 1)
        .map(|i| {
            let mut r = RuleSpec::new(Action::Allow);
            r.protocol = Some(if i % 2 == 0 { 6 } else { 17 });
            r.source.nets = vec![format!("172.{}.{}.0/24", 16 + i / 256, i % 256)
                .parse()
                .unwrap()];
            r.destination.ports = vec![PortRange::exact(8000 + i as u16)];
            r.id = format!("bench/ingress/{i}");
            r
        })
        .collect();
    let mut set_rule = RuleSpec::new(Action::Allow);
    set_rule.protocol = Some(17);
    set_rule.source.ip_sets = vec!["clients".into()];
    set_rule.destination.ports = vec![PortRange::new(5000, 5999 + version as u16 % 2).unwrap()];
    set_rule.id = "bench/ingress/clients".into();
    ingress.push(set_rule);
    let members: BTreeSet<IpNet> = (0..SET_MEMBERS)
        .map(|i| {
            let a = u32::from(SRC) + i;
            IpNet::new(IpAddr::V4(a.into()), 32).unwrap()
        })
        .collect();
    PolicyBatch {
        set_ip_sets: vec![IpSetSpec {
            name: "clients".into(),
            members,
        }],
        set_policies: vec![PolicySpec {
            name: "bench".into(),
            ingress,
            egress: vec![],
        }],
        set_endpoints: vec![EndpointPolicySpec {
            interface: "b".into(),
            ingress: vec![TierSpec {
                name: "default".into(),
                policies: vec!["bench".into()],
                end_action: EndAction::Deny,
            }],
            egress: vec![],
            ingress_default: DefaultAction::Allow,
            egress_default: DefaultAction::Allow,
        }],
        ..PolicyBatch::default()
    }
}

/// A frame from A to B, UDP `sport` → `dport`.
fn frame(src_mac: EthernetAddress, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = frames::udp4(src_mac, SRC, DST, sport, 64);
    // The UDP checksum goes stale; nothing on this path reads it.
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

fn setup(templates: Vec<Vec<u8>>, flows: u32) -> Bench {
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 8192,
        hugepages: true,
    })
    .unwrap();
    let cache = pool.cache();
    let src_mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let dst_mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
    let a = LoopbackPort::with_templates(src_mac, 1500, Sink::Count, templates);
    let b = LoopbackPort::new(dst_mac, 1500, Sink::Count);
    let entry = |p: Arc<LoopbackPort>, name: &str, ip: Ipv4Addr| PortEntry {
        peer_mac: p.peer_mac(),
        port: p,
        name: Arc::from(name),
        mtu: 1500,
        ipv4: vec![ip].into(),
        ipv6: vec![].into(),
        policy: PortPolicy::default(),
    };
    let mut tables = Tables {
        generation: 1,
        adjacencies: vec![Adjacency::new(&[AdjPath {
            port: PortId(1),
            dst_mac,
            mtu: 1500,
        }])]
        .into(),
        ports: vec![
            Some(entry(a.clone(), "a", SRC)),
            Some(entry(b.clone(), "b", DST)),
        ]
        .into(),
        ..Tables::default()
    };
    tables.fib4.insert(u32::from(DST), 32, 0);
    let table = FlowTable::new(&FlowTableConfig {
        capacity: flows,
        max_handles: 1,
        ..FlowTableConfig::default()
    })
    .unwrap();
    let mut bench = Bench {
        pool,
        cache,
        graph: Graph::with_flows(table.register().unwrap()),
        tables,
        db: PolicyDb::new(),
        rx: a.queue(),
        tx: b.open_queue(0).unwrap(),
    };
    bench.change_policy(0);
    bench
}

impl Bench {
    /// A new version of B's policy, published as the engine does.
    fn change_policy(&mut self, version: u32) {
        let batch = policy(version);
        self.db.validate(&batch, |i| i == "b").unwrap();
        self.db.apply(batch, |_| vec![IpAddr::V4(DST)]);
        self.tables.generation += 1;
        let mut ports = self.tables.ports.to_vec();
        ports[1].as_mut().unwrap().policy = PortPolicy {
            mode: PolicyMode::Enforced(self.db.endpoint_rules("b").unwrap()),
            since: self.tables.generation,
        };
        self.tables.ports = ports.into();
    }

    /// Republishes B's policy unchanged under a new generation: every
    /// verdict about B goes stale, as after a change.
    fn touch(&mut self) {
        self.tables.generation += 1;
        let mut ports = self.tables.ports.to_vec();
        ports[1].as_mut().unwrap().policy.since = self.tables.generation;
        self.tables.ports = ports.into();
    }

    /// One vector: rx, graph, tx. Returns packets forwarded.
    #[inline]
    fn vector(&mut self, now_ns: u64) -> usize {
        let n = self
            .rx
            .rx_burst(PortId(0), &mut self.cache, self.graph.input());
        let cx = Context {
            tables: &self.tables,
            now_ns,
        };
        self.graph.run(&self.pool, &mut self.cache, &cx);
        let out: &mut Frame = self.graph.output();
        let sent = out.len();
        self.tx.tx_burst(&mut self.cache, out);
        self.graph.flows().quiescent();
        assert_eq!(sent, n, "every packet allowed and forwarded");
        n
    }

    fn policed(&self) -> u64 {
        self.graph.counters.packets[NodeId::Ip4Policy as usize]
    }
}

/// TSC cycles per packet over `vectors` vectors, `before` run first.
fn cycles(b: &mut Bench, vectors: usize, mut before: impl FnMut(&mut Bench, usize)) -> f64 {
    let mut pkts = 0;
    let mut spent = 0;
    for i in 0..vectors {
        before(b, i);
        let t0 = tsc();
        pkts += b.vector(1_000_000_000 + i as u64 * 1000);
        spent += tsc() - t0;
    }
    spent as f64 / pkts as f64
}

fn established_templates() -> Vec<Vec<u8>> {
    let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    (0..FLOWS).map(|i| frame(mac, 10_000 + i, 5001)).collect()
}

fn bench(c: &mut Criterion) {
    let quick = std::env::var_os("CARACAL_BENCH_QUICK").is_some_and(|v| v != "0");
    let vectors = if quick { 2_000 } else { 20_000 };

    let mut b = setup(established_templates(), 1 << 16);
    cycles(&mut b, 100, |_, _| {});
    let policed = b.policed();
    let established = cycles(&mut b, vectors, |_, _| {});
    assert_eq!(b.policed(), policed, "established flows skip policy");
    let reevaluated = cycles(&mut b, vectors, |b, _| b.touch());
    assert_eq!(
        b.policed(),
        policed + (vectors * VECTOR) as u64,
        "every packet re-evaluated"
    );
    b.change_policy(1);
    assert_eq!(b.graph.counters.drops[DropReason::PolicyDenied as usize], 0);

    // Flows never seen: 512 Ki distinct (source port, destination port).
    let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let fresh: Vec<Vec<u8>> = (0..2048 * VECTOR)
        .map(|i| frame(mac, (i % 65_536) as u16, 5000 + (i / 65_536) as u16))
        .collect();
    let mut f = setup(fresh, 1 << 20);
    let first = cycles(&mut f, 2048, |_, _| {});
    assert_eq!(
        f.policed(),
        2048 * VECTOR as u64,
        "every packet a first packet"
    );

    println!(
        "policy (B ingress: {RULES} rules, a {SET_MEMBERS}-address IP set; 64 B UDP, rx copy + graph + tx):\n  \
         established flow  {established:.1} TSC cycles/packet\n  \
         re-evaluated      {reevaluated:.1} TSC cycles/packet (B's policy republished before every vector)\n  \
         first packet      {first:.1} TSC cycles/packet (miss + policy + insert, table 1 M)"
    );

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(VECTOR as u64));
    let mut now = 2_000_000_000u64;
    g.bench_function("established/vector-256", |bencher| {
        bencher.iter(|| {
            now += 1000;
            b.vector(now)
        })
    });
    g.bench_function("reevaluated/vector-256", |bencher| {
        bencher.iter(|| {
            b.touch();
            now += 1000;
            b.vector(now)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
