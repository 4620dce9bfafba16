//! The AF_PACKET port against the kernel: a veth pair inside a uniquely
//! named network namespace, a port on each end. Frames sent on one end
//! arrive on the other byte for byte, in order, exactly once; the port
//! counters agree; every buffer goes back to the pool.
//!
//! Needs root (a skip without it, unless `CARACAL_REQUIRE_PRIVILEGED=1`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_dataplane::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta};
use caracal_dataplane::port::af_packet::{AfPacketConfig, AfPacketPort};
use caracal_dataplane::port::{Port, PortId, PortKind};
use caracal_testsupport::privileged;
use caracal_wire::EthernetAddress;
use common::{netns, Netns};

/// A local experimental EtherType (IEEE 802): the kernel stack ignores it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const FRAMES: usize = 2000;
const BURST: usize = 32;

/// A veth pair `a`/`b`, both up, in `ns`, with IPv6 off so the kernel
/// sends nothing of its own on them.
fn veth_pair(ns: &Netns) -> (String, String) {
    let (a, b) = ("veth-a".to_owned(), "veth-b".to_owned());
    ns.veth_pair(&a, &b);
    (a, b)
}

/// Frame `i`: varied length (60 to 1514 bytes), contents derived from `i`.
fn frame(i: usize) -> Vec<u8> {
    let len = 60 + (i * 37) % 1455;
    let mut f: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f[14..22].copy_from_slice(&(i as u64).to_be_bytes());
    f
}

/// Copies out and frees what a burst received.
fn drain(rx: &mut Frame, cache: &mut BufferCache, received: &mut Vec<Vec<u8>>) {
    for mut buf in rx.drain() {
        let p = cache.pool().packet(&mut buf);
        assert_eq!(p.meta().rx_port, PortId(1));
        received.push(p.data().to_vec());
        cache.free(buf);
    }
}

#[test]
fn frames_cross_a_veth_pair_exactly_once() {
    if !privileged() {
        return;
    }
    let ns = netns("afp");
    let (a, b) = veth_pair(&ns);
    let port = |ifname: &str| {
        let mut cfg = AfPacketConfig::new(ifname);
        cfg.netns = Some(ns.path());
        cfg.peer_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0xbb]);
        AfPacketPort::create(&cfg).unwrap_or_else(|e| panic!("{ifname}: {e}"))
    };
    let (pa, pb) = (port(&a), port(&b));
    assert_eq!(pa.kind(), PortKind::AfPacket);
    assert_eq!(pa.caps().mtu, 1500);
    let mut qa = pa.open_queue(0).expect("queue 0 of a");
    let mut qb = pb.open_queue(0).expect("queue 0 of b");
    assert!(pa.open_queue(0).is_none(), "a queue is claimed once");
    assert!(qb.rx_fd().is_some());

    let pool: Arc<BufferPool> = BufferPool::new(&BufferPoolConfig {
        buffers: 4096,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut received: Vec<Vec<u8>> = Vec::with_capacity(FRAMES);
    let mut rx = Frame::new();
    for start in (0..FRAMES).step_by(BURST) {
        let mut tx = Frame::new();
        for i in start..(start + BURST).min(FRAMES) {
            let bytes = frame(i);
            let mut buf = cache.alloc().expect("buffers");
            let mut p = pool.packet(&mut buf);
            *p.meta_mut() = Meta::received(PortId(0), bytes.len() as u16);
            p.data_mut().copy_from_slice(&bytes);
            tx.push(buf);
        }
        qa.tx_burst(&mut cache, &mut tx);
        assert!(tx.is_empty());
        // Keep the receive ring from filling while we send.
        qb.rx_burst(PortId(1), &mut cache, &mut rx);
        drain(&mut rx, &mut cache, &mut received);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        qb.rx_burst(PortId(1), &mut cache, &mut rx);
        drain(&mut rx, &mut cache, &mut received);
        if received.len() >= FRAMES {
            // Anything extra would show up within a few block timeouts.
            std::thread::sleep(Duration::from_millis(20));
            qb.rx_burst(PortId(1), &mut cache, &mut rx);
            drain(&mut rx, &mut cache, &mut received);
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }

    let sa = pa.stats();
    assert_eq!(sa.tx_packets, FRAMES as u64, "{sa:?}");
    assert_eq!(sa.tx_errors, 0);
    assert_eq!(received.len(), FRAMES, "frames received on {b}");
    for (i, got) in received.iter().enumerate() {
        assert!(*got == frame(i), "frame {i} differs");
    }
    let bytes: u64 = (0..FRAMES).map(|i| frame(i).len() as u64).sum();
    let sb = pb.stats();
    assert_eq!((sb.rx_packets, sb.rx_bytes), (FRAMES as u64, bytes));
    assert_eq!(sa.tx_bytes, bytes);
    assert_eq!(sb.rx_no_buffer, 0);
    // Nothing came back to the sender.
    let mut back = Frame::new();
    assert_eq!(qa.rx_burst(PortId(0), &mut cache, &mut back), 0);

    cache.publish();
    assert_eq!(pool.in_use(), 0, "every buffer is back in the pool");
    drop((qa, qb));
    drop(cache);
    assert_eq!(pool.stats().free, 4096);
}

#[test]
fn too_long_frames_are_counted_not_sent() {
    if !privileged() {
        return;
    }
    let ns = netns("afl");
    let (a, _b) = veth_pair(&ns);
    ns.ip_ok(&["link", "set", &a, "mtu", "1000"]);
    let mut cfg = AfPacketConfig::new(&a);
    cfg.netns = Some(ns.path());
    let pa = AfPacketPort::create(&cfg).unwrap();
    assert_eq!(pa.caps().mtu, 1000);
    let mut q = pa.open_queue(0).unwrap();
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 64,
        hugepages: false,
    })
    .unwrap();
    let mut cache = pool.cache();
    let mut tx = Frame::new();
    for len in [1014, 1015] {
        let mut buf = cache.alloc().unwrap();
        let mut p = pool.packet(&mut buf);
        *p.meta_mut() = Meta::received(PortId(0), len);
        p.data_mut().fill(0x5a);
        tx.push(buf);
    }
    q.tx_burst(&mut cache, &mut tx);
    let s = pa.stats();
    assert_eq!((s.tx_packets, s.tx_errors), (1, 1));
    cache.publish();
    assert_eq!(pool.in_use(), 0);
}
