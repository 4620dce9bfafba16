//! Criterion bench of the memif driver on one core: our client and our
//! server connected in-process over an abstract Unix socket; each
//! iteration is one 256-packet vector transmitted on one side (copied
//! into the shared buffers, buffers freed) and received on the other
//! (copied out into fresh buffers), which then carry the next iteration's
//! vector. Polling mode, so no eventfd is written; 64-byte and 1500-byte
//! frames, in both directions.
//!
//! Run: `cargo bench -p caracal-perf --bench memif`. Criterion reports
//! time per vector and throughput in packets (elements) per second.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta};
use caracal_dataplane::port::memif::{MemifConfig, MemifPort, Mode, Role, RxMode, SocketAddress};
use caracal_dataplane::port::{Port, PortId, PortQueue};
use caracal_perf::frames;
use caracal_wire::EthernetAddress;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const VECTOR: usize = 256;

fn config(role: Role, socket: &SocketAddress) -> MemifConfig {
    MemifConfig {
        name: format!("bench-{}", role.as_str()),
        socket: socket.clone(),
        role,
        id: 0,
        secret: None,
        queues: 1,
        mode: Mode::Ethernet,
        rx_mode: RxMode::Polling,
        ring_size: 1024,
        buffer_size: 2048,
        peer_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        mtu: 1500,
        // A server refuses hugetlbfs regions (see the driver's docs).
        hugepages: false,
    }
}

/// A connected server/client pair and a queue on each.
struct Link {
    // Kept alive for the queues; dropped last.
    _ports: (Arc<MemifPort>, Arc<MemifPort>),
    server: Box<dyn PortQueue>,
    client: Box<dyn PortQueue>,
}

fn link() -> Link {
    let socket = SocketAddress::Abstract(format!("caracal-bench-{}", std::process::id()));
    let server = MemifPort::create(&config(Role::Server, &socket)).expect("memif server");
    let client = MemifPort::create(&config(Role::Client, &socket)).expect("memif client");
    assert!(client.wait_connected(Duration::from_secs(5)));
    assert!(server.wait_connected(Duration::from_secs(5)));
    Link {
        server: server.open_queue(0).unwrap(),
        client: client.open_queue(0).unwrap(),
        _ports: (server, client),
    }
}

/// Fills `frame` with `VECTOR` copies of `template`.
fn fill(cache: &mut BufferCache, frame: &mut Frame, template: &[u8]) {
    for _ in 0..VECTOR {
        let mut b = cache.alloc().expect("buffers");
        let mut p = cache.pool().packet(&mut b);
        *p.meta_mut() = Meta::received(PortId(0), template.len() as u16);
        p.data_mut().copy_from_slice(template);
        frame.push(b);
    }
}

/// One vector across the link: `frame` is sent on `from` and refilled
/// with what arrives on `to`.
#[inline]
fn vector(
    from: &mut dyn PortQueue,
    to: &mut dyn PortQueue,
    cache: &mut BufferCache,
    frame: &mut Frame,
) -> usize {
    from.tx_burst(cache, frame);
    let n = to.rx_burst(PortId(1), cache, frame);
    assert_eq!(n, VECTOR, "every packet crossed");
    n
}

fn bench(c: &mut Criterion) {
    let pool: Arc<BufferPool> = BufferPool::new(&BufferPoolConfig {
        buffers: 4096,
        hugepages: true,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut l = link();
    let src = EthernetAddress([2, 0, 0, 0, 0, 2]);
    for size in [64usize, 1500] {
        let template = frames::udp4(
            src,
            Ipv4Addr::new(10, 65, 0, 1),
            Ipv4Addr::new(10, 65, 0, 2),
            9,
            size,
        );
        let mut frame = Frame::new();
        fill(&mut cache, &mut frame, &template);
        let mut g = c.benchmark_group(format!("memif-{size}B"));
        g.throughput(Throughput::Elements(VECTOR as u64));
        g.bench_function("client-to-server", |b| {
            b.iter(|| vector(&mut *l.client, &mut *l.server, &mut cache, &mut frame))
        });
        g.bench_function("server-to-client", |b| {
            b.iter(|| vector(&mut *l.server, &mut *l.client, &mut cache, &mut frame))
        });
        g.finish();
        for b in frame.drain() {
            cache.free(b);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
