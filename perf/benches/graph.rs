//! Criterion bench of the forwarding graph on an in-memory port: rx burst
//! (64-byte frames copied into buffers) → ethernet-input → ip4/ip6-input →
//! lookup → rewrite → tx burst, one core, full 256-packet vectors, with
//! 10 000 pod host routes in the FIB and destinations spread over them.
//!
//! Run: `cargo bench -p caracal-perf --bench graph`. Besides criterion's
//! time per vector it prints TSC cycles per packet, in all and per node
//! (the graph's own runtime counters, as `caracalctl show runtime` shows
//! them for a running worker): parse (ethernet-input), validate
//! (ip4/ip6-input), route (ip4/ip6-lookup), flow, rewrite.

use caracal_dataplane::worker::cycles as tsc;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame};
use caracal_dataplane::graph::{Context, Graph, GraphCounters, NodeId};
use caracal_dataplane::port::loopback::{LoopbackPort, LoopbackQueue, Sink};
use caracal_dataplane::port::{Port, PortId, PortQueue};
use caracal_dataplane::tables::{AdjPath, Adjacency, PortEntry, PortPolicy, Tables};
use caracal_perf::frames;
use caracal_wire::EthernetAddress;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ROUTES: u32 = 10_000;
const VECTOR: usize = 256;

struct Bench {
    pool: Arc<BufferPool>,
    cache: BufferCache,
    graph: Graph,
    tables: Tables,
    rx: LoopbackQueue,
    tx: Box<dyn PortQueue>,
}

fn setup(v6: bool) -> Bench {
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 8192,
        hugepages: true,
    })
    .unwrap();
    let cache = pool.cache();
    let src_mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
    let dst_mac = EthernetAddress([2, 0, 0, 0, 0, 2]);
    let src4 = Ipv4Addr::new(10, 64, 0, 1);
    let src6 = Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, 1);
    // Destinations cycle over 1 024 of the 10 000 routes.
    let templates: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| {
            let host = i * (ROUTES / 1024);
            if v6 {
                frames::udp6(src_mac, src6, dst6(host), 1000 + i as u16, 64)
            } else {
                frames::udp4(src_mac, src4, dst4(host), 1000 + i as u16, 64)
            }
        })
        .collect();
    let a = LoopbackPort::with_templates(src_mac, 1500, Sink::Count, templates);
    let b = LoopbackPort::new(dst_mac, 1500, Sink::Count);
    let entry = |p: Arc<LoopbackPort>, name: &str| PortEntry {
        peer_mac: p.peer_mac(),
        port: p,
        name: Arc::from(name),
        mtu: 1500,
        ipv4: vec![src4].into(),
        ipv6: vec![src6].into(),
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
        ports: vec![Some(entry(a.clone(), "a")), Some(entry(b.clone(), "b"))].into(),
        ..Tables::default()
    };
    for host in 0..ROUTES {
        tables.fib4.insert(u32::from(dst4(host)), 32, 0);
        tables.fib6.insert(u128::from(dst6(host)), 128, 0);
    }
    let rx = a.queue();
    let tx = b.open_queue(0).unwrap();
    Bench {
        pool,
        cache,
        graph: Graph::new(),
        tables,
        rx,
        tx,
    }
}

fn dst4(host: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 65, 0, 0)) + host)
}

fn dst6(host: u32) -> Ipv6Addr {
    Ipv6Addr::from((0xfd00_0065u128 << 96) | u128::from(host))
}

impl Bench {
    /// One vector: rx, graph, tx. Returns packets forwarded.
    #[inline]
    fn vector(&mut self) -> usize {
        let n = self
            .rx
            .rx_burst(PortId(0), &mut self.cache, self.graph.input());
        let cx = Context {
            tables: &self.tables,
            now_ns: 0,
        };
        self.graph.run(&self.pool, &mut self.cache, &cx);
        let out: &mut Frame = self.graph.output();
        let sent = out.len();
        self.tx.tx_burst(&mut self.cache, out);
        assert_eq!(sent, n, "every packet forwarded");
        n
    }
}

/// TSC cycles per packet of the whole vector loop, and the graph's
/// counters over the same vectors.
fn cycles_per_packet(b: &mut Bench) -> (f64, GraphCounters) {
    const VECTORS: usize = 20_000;
    for _ in 0..1000 {
        b.vector();
    }
    b.graph.counters = GraphCounters::default();
    let t0 = tsc();
    let mut pkts = 0;
    for _ in 0..VECTORS {
        pkts += b.vector();
    }
    ((tsc() - t0) as f64 / pkts as f64, b.graph.counters.clone())
}

/// One line per node that ran: cycles per packet and packets per call.
fn print_nodes(counters: &GraphCounters) {
    for node in NodeId::ALL {
        let i = node as usize;
        if counters.packets[i] == 0 {
            continue;
        }
        println!(
            "    {:<18} {:>7.1} cycles/packet {:>7.1} packets/call",
            node.name(),
            counters.clocks[i] as f64 / counters.packets[i] as f64,
            counters.packets[i] as f64 / counters.calls[i].max(1) as f64
        );
    }
}

fn bench(c: &mut Criterion) {
    for (name, v6) in [("ip4-forward", false), ("ip6-forward", true)] {
        let mut b = setup(v6);
        let (cpp, counters) = cycles_per_packet(&mut b);
        println!(
            "{name}: {cpp:.1} TSC cycles/packet (rx copy + graph + tx, 64 B, {ROUTES} routes)"
        );
        print_nodes(&counters);
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(VECTOR as u64));
        g.bench_function("vector-256", |bencher| bencher.iter(|| b.vector()));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
