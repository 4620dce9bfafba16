//! A server and a client port of ours, connected over a Unix socket in
//! this process: traffic both ways on every queue, chained buffers, IP
//! mode, interrupts and polling, refusals, reconnection, and peers that
//! break the protocol. None of it needs privileges.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::buffer::{BufferPool, BufferPoolConfig, Meta};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique_socket() -> SocketAddress {
    SocketAddress::Abstract(format!(
        "caracal-memif-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

fn config(role: Role, socket: &SocketAddress) -> MemifConfig {
    MemifConfig {
        name: format!("{}-if", role.as_str()),
        socket: socket.clone(),
        role,
        id: 0,
        secret: None,
        queues: 1,
        mode: Mode::Ethernet,
        rx_mode: RxMode::Interrupt,
        ring_size: 0,
        buffer_size: 0,
        peer_mac: EthernetAddress([2, 0, 0, 0, 0, role as u8]),
        mtu: 1500,
        hugepages: false,
    }
}

fn connect(s: &MemifConfig, c: &MemifConfig) -> (Arc<MemifPort>, Arc<MemifPort>) {
    let server = MemifPort::create(s).unwrap();
    let client = MemifPort::create(c).unwrap();
    assert!(
        server.wait_connected(Duration::from_secs(5)),
        "{:?}",
        server.status()
    );
    assert!(
        client.wait_connected(Duration::from_secs(5)),
        "{:?}",
        client.status()
    );
    (server, client)
}

/// A connected server and client, after `tweak` changed their configs.
fn pair(
    tweak: impl FnOnce(&mut MemifConfig, &mut MemifConfig),
) -> (Arc<MemifPort>, Arc<MemifPort>) {
    let socket = unique_socket();
    let (mut s, mut c) = (config(Role::Server, &socket), config(Role::Client, &socket));
    tweak(&mut s, &mut c);
    connect(&s, &c)
}

fn pool() -> Arc<BufferPool> {
    BufferPool::new(&BufferPoolConfig {
        buffers: 4096,
        hugepages: false,
    })
    .unwrap()
}

/// A pool whose buffers hold a 9216-byte jumbo frame.
fn jumbo_pool() -> Arc<BufferPool> {
    BufferPool::with_data_size(
        &BufferPoolConfig {
            buffers: 1024,
            hugepages: false,
        },
        9216,
    )
    .unwrap()
}

/// An Ethernet/IPv4 frame of `len` bytes whose bytes depend on `tag`.
fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ tag).collect();
    f[..6].copy_from_slice(&[0xee; 6]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f
}

fn send(q: &mut dyn PortQueue, cache: &mut BufferCache, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(crate::buffer::FRAME_SIZE) {
        let mut out = Frame::new();
        for f in chunk {
            let mut b = cache.alloc().unwrap();
            let mut p = cache.pool().packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(0), f.len() as u16);
            p.data_mut().copy_from_slice(f);
            out.push(b);
        }
        q.tx_burst(cache, &mut out);
        assert!(out.is_empty());
    }
}

/// Receives until `want` frames came or a second passed.
fn recv(q: &mut dyn PortQueue, cache: &mut BufferCache, want: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let mut out = Frame::new();
        q.rx_burst(PortId(3), cache, &mut out);
        for mut b in out.drain() {
            let p = cache.pool().packet(&mut b);
            assert_eq!(p.meta().rx_port, PortId(3));
            got.push(p.data().to_vec());
            cache.free(b);
        }
    }
    got
}

/// Waits for `cond` on a port, for at most five seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn packets_cross_both_ways_intact_and_are_counted() {
    let (server, client) = pair(|_, _| {});
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    assert!(server.open_queue(0).is_none(), "a queue is handed out once");
    assert!(server.open_queue(1).is_none());

    let up: Vec<_> = (0..300).map(|i| frame(60 + i * 4, i as u8)).collect();
    send(&mut *cq, &mut cache, &up);
    assert_eq!(recv(&mut *sq, &mut cache, up.len()), up);

    let down: Vec<_> = (0..300).map(|i| frame(1514 - i * 3, !(i as u8))).collect();
    send(&mut *sq, &mut cache, &down);
    assert_eq!(recv(&mut *cq, &mut cache, down.len()), down);

    let bytes = |f: &[Vec<u8>]| f.iter().map(|f| f.len() as u64).sum::<u64>();
    let (s, c) = (server.stats(), client.stats());
    assert_eq!((s.rx_packets, s.rx_bytes), (300, bytes(&up)));
    assert_eq!(
        (s.tx_packets, s.tx_bytes, s.tx_errors),
        (300, bytes(&down), 0)
    );
    assert_eq!((c.tx_packets, c.rx_packets), (300, 300));

    let status = server.status();
    assert!(status.connected);
    assert_eq!(status.peer_name, control::APP_NAME);
    assert_eq!(status.peer_interface, "client-if");
    assert_eq!(status.peer_pid, Some(std::process::id()));
    assert_eq!(status.connects, 1);
    assert_eq!(status.rings.len(), 2);
    assert_eq!(status.rings[0].size, DEFAULT_RING_SIZE);
    assert_eq!(client.status().peer_interface, "server-if");
    assert_eq!(client.status().buffer_size, 2048);
    assert_eq!(client.status().regions.len(), 1);

    drop((sq, cq));
    drop(cache);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_full_ring_drops_and_counts_the_rest() {
    let (server, client) = pair(|_, c| c.ring_size = 16);
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    let frames: Vec<_> = (0..40).map(|i| frame(100, i)).collect();
    send(&mut *cq, &mut cache, &frames);
    assert_eq!(client.stats().tx_packets, 16);
    assert_eq!(client.stats().tx_errors, 24);
    assert_eq!(recv(&mut *sq, &mut cache, 16), frames[..16]);
    // Consumed slots are free again.
    send(&mut *cq, &mut cache, &frames[16..32]);
    assert_eq!(recv(&mut *sq, &mut cache, 16), frames[16..32]);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn every_queue_has_its_ring_pair() {
    let (server, client) = pair(|s, c| {
        s.queues = 3;
        c.queues = 3;
    });
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq: Vec<_> = (0..3).map(|i| server.open_queue(i).unwrap()).collect();
    let mut cq: Vec<_> = (0..3).map(|i| client.open_queue(i).unwrap()).collect();
    for i in 0..3 {
        let f = vec![frame(64, i as u8 * 10)];
        send(&mut *cq[i], &mut cache, &f);
        for (j, q) in sq.iter_mut().enumerate() {
            let got = recv(&mut **q, &mut cache, usize::from(i == j));
            assert_eq!(
                got,
                if i == j { f.clone() } else { vec![] },
                "c2s {i} → {j}"
            );
        }
        let f = vec![frame(64, i as u8 * 10 + 1)];
        send(&mut *sq[i], &mut cache, &f);
        assert_eq!(recv(&mut *cq[i], &mut cache, 1), f);
    }
    assert_eq!(server.status().rings.len(), 6);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn queues_share_a_tx_ring_when_the_peer_offers_fewer() {
    // The server offers one ring per direction; the client has two queues.
    let (server, client) = pair(|_, c| c.queues = 2);
    assert_eq!(client.status().rings.len(), 2);
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut c1 = client.open_queue(1).unwrap();
    let f = vec![frame(80, 1), frame(90, 2)];
    send(&mut *c1, &mut cache, &f);
    assert_eq!(recv(&mut *sq, &mut cache, 2), f);
    // Queue 1 has no rx ring: nothing to receive, nothing breaks.
    assert!(recv(&mut *c1, &mut cache, 0).is_empty());
    drop((sq, c1, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn packets_longer_than_a_buffer_are_chained_and_joined() {
    let (server, client) = pair(|_, c| c.buffer_size = 128);
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    let frames: Vec<_> = [60, 128, 129, 1000, 2048]
        .iter()
        .map(|&n| frame(n, n as u8))
        .collect();
    send(&mut *cq, &mut cache, &frames);
    assert_eq!(recv(&mut *sq, &mut cache, frames.len()), frames);
    send(&mut *sq, &mut cache, &frames);
    assert_eq!(recv(&mut *cq, &mut cache, frames.len()), frames);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn jumbo_frames_cross_as_chains_into_a_jumbo_pool() {
    // 2 KiB ring buffers (the default): a 9000-byte frame takes five
    // descriptors each way, and is gathered into one 9216-byte buffer.
    let (server, client) = pair(|s, c| {
        s.mtu = 9000;
        c.mtu = 9000;
    });
    let pool = jumbo_pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    let frames: Vec<_> = [9014, 60, 2048, 2049, 4096, 9216, 9000]
        .iter()
        .map(|&n| frame(n, n as u8))
        .collect();
    for _ in 0..3 {
        send(&mut *cq, &mut cache, &frames);
        assert_eq!(recv(&mut *sq, &mut cache, frames.len()), frames);
        send(&mut *sq, &mut cache, &frames);
        assert_eq!(recv(&mut *cq, &mut cache, frames.len()), frames);
    }
    assert_eq!(server.stats().rx_too_long + client.stats().rx_too_long, 0);
    assert_eq!(server.stats().tx_errors + client.stats().tx_errors, 0);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_chain_longer_than_our_buffer_is_dropped_whole_and_counted() {
    let (server, client) = pair(|_, _| {});
    let (jumbo, small) = (jumbo_pool(), pool());
    let (mut big, mut cache) = (jumbo.cache(), small.cache());
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    // The client sends from a jumbo pool; the server receives into 2 KiB
    // buffers: the 3000-byte chain is skipped, the frames around it come.
    let frames = [frame(100, 1), frame(3000, 2), frame(2048, 3)];
    send(&mut *cq, &mut big, &frames);
    let got = recv(&mut *sq, &mut cache, 2);
    assert_eq!(got, [frames[0].clone(), frames[2].clone()]);
    assert_eq!(server.stats().rx_too_long, 1);
    let status = server.status();
    assert_eq!(
        (status.rx_bad_length, status.peer_faults),
        (1, 0),
        "{status:?}"
    );
    assert!(server.is_connected(), "an honest jumbo frame is no fault");
    assert_eq!(server.stats().rx_packets, 2);
    drop((sq, cq, big, cache));
    assert_eq!(jumbo.in_use() + small.in_use(), 0);
}

#[test]
fn ip_mode_strips_and_restores_the_ethernet_header() {
    let (server, client) = pair(|s, c| {
        s.mode = Mode::Ip;
        c.mode = Mode::Ip;
    });
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    let mut v6 = frame(120, 6);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6[14] = 0x60;
    let mut arp = frame(60, 0);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    send(&mut *cq, &mut cache, &[frame(100, 4), arp, v6.clone()]);
    assert_eq!(
        client.stats().tx_errors,
        1,
        "ARP cannot cross an IP-mode link"
    );
    let got = recv(&mut *sq, &mut cache, 2);
    assert_eq!(got.len(), 2);
    for (g, want) in got.iter().zip([frame(100, 4), v6]) {
        // Our gateway as destination, the configured peer MAC as source.
        assert_eq!(&g[..6], &[0xee; 6]);
        assert_eq!(&g[6..12], &[2, 0, 0, 0, 0, Role::Server as u8]);
        assert_eq!(&g[12..], &want[12..]);
    }
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn mismatched_settings_are_refused_with_a_reason() {
    for (tweak, reason) in [
        (
            Box::new(|_: &mut MemifConfig, c: &mut MemifConfig| c.id = 7)
                as Box<dyn Fn(&mut MemifConfig, &mut MemifConfig)>,
            "no interface with id 7",
        ),
        (
            Box::new(|s: &mut MemifConfig, _: &mut MemifConfig| s.secret = Some("s3cret".into())),
            "secret required",
        ),
        (
            Box::new(|s: &mut MemifConfig, c: &mut MemifConfig| {
                s.secret = Some("s3cret".into());
                c.secret = Some("guess".into());
            }),
            "incorrect secret",
        ),
        (
            Box::new(|_: &mut MemifConfig, c: &mut MemifConfig| c.mode = Mode::Ip),
            "interface 0 is in ethernet mode",
        ),
    ] {
        let socket = unique_socket();
        let (mut s, mut c) = (config(Role::Server, &socket), config(Role::Client, &socket));
        tweak(&mut s, &mut c);
        let server = MemifPort::create(&s).unwrap();
        let client = MemifPort::create(&c).unwrap();
        eventually(reason, || {
            client.status().last_disconnect.contains(reason)
                && server.status().last_disconnect == reason
        });
        assert!(!client.is_connected() && !server.is_connected());
    }
    // With the right secret it connects.
    pair(|s, c| {
        s.secret = Some("s3cret".into());
        c.secret = Some("s3cret".into());
    });
}

#[test]
fn a_second_client_is_told_the_server_is_busy() {
    let socket = unique_socket();
    let (server, first) = connect(
        &config(Role::Server, &socket),
        &config(Role::Client, &socket),
    );
    let second = MemifPort::create(&config(Role::Client, &socket)).unwrap();
    eventually("refusal", || {
        second.status().last_disconnect == "peer disconnected: already connected"
    });
    assert!(first.is_connected() && server.is_connected());
    assert_eq!(server.status().connects, 1);
}

#[test]
fn a_server_takes_a_new_client_after_the_old_one_leaves() {
    let socket = unique_socket();
    let s = config(Role::Server, &socket);
    let c = config(Role::Client, &socket);
    let (server, client) = connect(&s, &c);
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    drop(client);
    eventually("disconnect", || !server.is_connected());
    let status = server.status();
    assert_eq!(status.disconnects, 1);
    assert_eq!(
        status.last_disconnect,
        "peer disconnected: interface deleted"
    );
    // While nobody is connected, tx drops and counts.
    send(&mut *sq, &mut cache, &[frame(64, 1)]);
    assert_eq!(server.stats().tx_errors, 1);

    let client = MemifPort::create(&c).unwrap();
    assert!(client.wait_connected(Duration::from_secs(5)));
    eventually("reconnect", || server.is_connected());
    let mut cq = client.open_queue(0).unwrap();
    send(&mut *cq, &mut cache, &[frame(64, 2)]);
    assert_eq!(recv(&mut *sq, &mut cache, 1), [frame(64, 2)]);
    assert_eq!(server.status().connects, 2);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_client_reconnects_when_the_server_comes_back() {
    let socket = unique_socket();
    let s = config(Role::Server, &socket);
    // The client starts first and retries until the server exists.
    let client = MemifPort::create(&config(Role::Client, &socket)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!client.is_connected());
    let server = MemifPort::create(&s).unwrap();
    assert!(client.wait_connected(Duration::from_secs(5)));
    drop(server);
    eventually("disconnect", || !client.is_connected());
    let server = MemifPort::create(&s).unwrap();
    assert!(client.wait_connected(Duration::from_secs(5)));
    assert!(server.wait_connected(Duration::from_secs(5)));
    let status = client.status();
    assert_eq!((status.connects, status.disconnects), (2, 1));
}

#[test]
fn interrupt_mode_wakes_the_worker_once_per_burst_and_goes_quiet() {
    let (server, client) = pair(|_, _| {});
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    assert!(sq.rx_fd().is_some());
    let epoll = &server.shared.queues[0].epoll;
    // The kick left by the connection's publication clears on an empty poll.
    let mut out = Frame::new();
    sq.rx_burst(PortId(0), &mut cache, &mut out);
    assert!(!epoll.is_ready(), "idle queue is quiet");

    send(&mut *cq, &mut cache, &[frame(64, 1), frame(64, 2)]);
    assert!(epoll.is_ready(), "the peer signalled");
    assert_eq!(sq.rx_burst(PortId(0), &mut cache, &mut out), 2);
    for b in out.drain() {
        cache.free(b);
    }
    // The ring is empty now: the next poll drains the eventfd.
    assert_eq!(sq.rx_burst(PortId(0), &mut cache, &mut out), 0);
    assert!(!epoll.is_ready());
    // Interrupts were not masked on either side.
    assert!(server.status().rings.iter().all(|r| !r.interrupts_masked));
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn polling_mode_masks_the_peers_interrupts() {
    let (server, client) = pair(|s, _| s.rx_mode = RxMode::Polling);
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    assert!(sq.rx_fd().is_none());
    assert!(cq.rx_fd().is_some());
    let rings = server.status().rings;
    assert!(rings[0].interrupts_masked && !rings[1].interrupts_masked);
    send(&mut *cq, &mut cache, &[frame(64, 1)]);
    let conn = server.shared.current().unwrap();
    assert_eq!(
        sys::poll_readable(&[conn.rx[0].interrupt.fd()], Some(Duration::ZERO)).unwrap(),
        [false],
        "the client did not signal"
    );
    assert_eq!(recv(&mut *sq, &mut cache, 1).len(), 1);
    drop((sq, cq, cache, conn));
    assert_eq!(pool.in_use(), 0);
}

/// Breaks the client's side of a ring and checks the server drops the
/// connection over it, counts it, and takes the client back.
fn server_catches(break_ring: impl FnOnce(&Connection)) {
    let (server, client) = pair(|_, _| {});
    let pool = pool();
    let mut cache = pool.cache();
    let mut sq = server.open_queue(0).unwrap();
    let mut cq = client.open_queue(0).unwrap();
    let conn = client.shared.current().unwrap();
    break_ring(&conn);
    drop(conn);
    let mut out = Frame::new();
    sq.rx_burst(PortId(0), &mut cache, &mut out);
    for b in out.drain() {
        cache.free(b);
    }
    eventually("fault", || server.status().peer_faults == 1);
    let status = server.status();
    assert!(
        status.last_disconnect.starts_with("protocol violation: "),
        "{status:?}"
    );
    // The client heard why, reconnects, and traffic flows again.
    eventually("client reconnect", || client.status().connects == 2);
    eventually("server reconnect", || server.is_connected());
    assert!(client
        .status()
        .last_disconnect
        .starts_with("peer disconnected: protocol violation"));
    send(&mut *cq, &mut cache, &[frame(64, 9)]);
    assert_eq!(recv(&mut *sq, &mut cache, 1), [frame(64, 9)]);
    drop((sq, cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_head_more_than_a_ring_ahead_is_a_fault() {
    server_catches(|conn| conn.tx[0].ring.set_head(5000));
}

#[test]
fn a_descriptor_outside_the_region_is_a_fault() {
    server_catches(|conn| {
        let ring = &conn.tx[0].ring;
        ring.set_desc(
            0,
            abi::Descriptor {
                flags: 0,
                region: 0,
                length: 64,
                offset: conn.regions[0].size() as u32 - 10,
                metadata: 0,
            },
        );
        ring.set_head(1);
    });
}

#[test]
fn a_descriptor_naming_a_missing_region_is_a_fault() {
    server_catches(|conn| {
        let ring = &conn.tx[0].ring;
        ring.set_desc(
            0,
            abi::Descriptor {
                region: 1,
                length: 64,
                ..abi::Descriptor::default()
            },
        );
        ring.set_head(1);
    });
}

#[test]
fn a_chain_past_the_published_head_is_a_fault() {
    server_catches(|conn| {
        let ring = &conn.tx[0].ring;
        let mut d = ring.desc(0);
        d.flags = abi::DESC_FLAG_NEXT;
        d.length = 10;
        ring.set_desc(0, d);
        ring.set_head(1);
    });
}

#[test]
fn a_bad_descriptor_inside_a_chain_is_a_fault() {
    server_catches(|conn| {
        let ring = &conn.tx[0].ring;
        let mut first = ring.desc(0);
        first.flags = abi::DESC_FLAG_NEXT;
        first.length = 100;
        ring.set_desc(0, first);
        ring.set_desc(
            1,
            abi::Descriptor {
                flags: 0,
                region: 0,
                length: 64,
                offset: conn.regions[0].size() as u32 - 10,
                metadata: 0,
            },
        );
        ring.set_head(2);
    });
}

#[test]
fn a_chain_running_into_unpublished_slots_is_a_fault() {
    // Every published descriptor says "more follows": the chain would
    // run past the head (and could only end a ring later).
    server_catches(|conn| {
        let ring = &conn.tx[0].ring;
        for slot in 0..8 {
            let mut d = ring.desc(slot);
            d.flags = abi::DESC_FLAG_NEXT;
            d.length = 64;
            ring.set_desc(slot, d);
        }
        ring.set_head(8);
    });
}

#[test]
fn a_client_catches_a_server_overrunning_its_buffers() {
    let (server, client) = pair(|_, _| {});
    let pool = pool();
    let mut cache = pool.cache();
    let mut cq = client.open_queue(0).unwrap();
    let conn = server.shared.current().unwrap();
    let ring = &conn.tx[0].ring;
    ring.set_desc_length(0, 4096, 0);
    ring.set_tail(1);
    drop(conn);
    let mut out = Frame::new();
    cq.rx_burst(PortId(0), &mut cache, &mut out);
    assert!(out.is_empty());
    eventually("fault", || client.status().peer_faults == 1);
    assert!(client
        .status()
        .last_disconnect
        .contains("larger than our 2048-byte buffer"));
    eventually("reconnect", || client.status().connects == 2);
    drop((cq, cache));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let dir = std::env::temp_dir().join(format!("caracal-memif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stale.sock");
    // A socket nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let socket = SocketAddress::Path(path.clone());
    let server = MemifPort::create(&config(Role::Server, &socket)).unwrap();
    assert!(matches!(
        MemifPort::create(&config(Role::Server, &socket)),
        Err(MemifError::SocketInUse(_))
    ));
    let client = MemifPort::create(&config(Role::Client, &socket)).unwrap();
    assert!(client.wait_connected(Duration::from_secs(5)));
    drop(server);
    assert!(!path.exists(), "the server removes its socket file");

    // Any other file is left alone.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(matches!(
        MemifPort::create(&config(Role::Server, &socket)),
        Err(MemifError::SocketInUse(_))
    ));
    assert!(path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_are_validated() {
    let socket = unique_socket();
    let bad = |tweak: fn(&mut MemifConfig)| {
        let mut c = config(Role::Client, &socket);
        tweak(&mut c);
        matches!(MemifPort::create(&c), Err(MemifError::InvalidConfig(_)))
    };
    assert!(bad(|c| c.queues = 0));
    assert!(bad(|c| c.queues = MAX_QUEUES + 1));
    assert!(bad(|c| c.ring_size = 1000));
    assert!(bad(|c| c.ring_size = MAX_RING_SIZE * 2));
    assert!(bad(|c| c.ring_size = 1));
    assert!(bad(|c| c.buffer_size = 64));
    assert!(bad(|c| c.secret = Some("x".repeat(25))));
    assert!(bad(|c| c.mtu = MAX_JUMBO_MTU + 1));
    assert!(!bad(|c| c.mtu = 9000), "jumbo frames travel as chains");
    assert!(bad(|c| {
        c.queues = 256;
        c.ring_size = MAX_RING_SIZE;
        c.buffer_size = 4096;
    }));
    assert!(!bad(|c| c.secret = Some("x".repeat(24))));

    assert_eq!(
        SocketAddress::parse(Path::new("@memif")).unwrap(),
        SocketAddress::Abstract("memif".into())
    );
    assert_eq!(
        SocketAddress::parse(Path::new("/run/memif.sock")).unwrap(),
        SocketAddress::Path("/run/memif.sock".into())
    );
    assert!(SocketAddress::parse(Path::new("memif.sock")).is_err());
    assert!(SocketAddress::parse(Path::new("@")).is_err());
    assert!(SocketAddress::parse(&Path::new("/").join("x".repeat(107))).is_err());
    assert_eq!(
        SocketAddress::Abstract("a".into()).to_string(),
        "@a".to_string()
    );
}

#[test]
fn handshakes_agree_without_a_socket() {
    // The two state machines against each other, descriptors passed by
    // duplication, as the control threads do over the socket.
    let socket = unique_socket();
    let mut sc = config(Role::Server, &socket);
    sc.queues = 2;
    let mut cc = config(Role::Client, &socket);
    cc.queues = 4;
    cc.ring_size = 256;
    let mut server = control::ServerHandshake::new(Arc::new(sc.settings().unwrap()));
    let mut client = control::ClientHandshake::new(Arc::new(cc.settings().unwrap()));
    let mut to_client = server.hello();
    let (sconn, cconn) = loop {
        let control::ClientStep::Send(out) = client.on_message(to_client, 1).unwrap() else {
            panic!("connected before the server agreed")
        };
        match server.on_message(out.msg, out.fd, 1).unwrap() {
            control::ServerStep::Reply(reply) => to_client = reply,
            control::ServerStep::Connected(conn, reply) => {
                let control::ClientStep::Connected(c) = client.on_message(reply, 1).unwrap() else {
                    panic!("client did not connect")
                };
                break (conn, c);
            }
        }
    };
    // Two queues on the server's side bound the client's four.
    assert_eq!((sconn.rx.len(), sconn.tx.len()), (2, 2));
    assert_eq!((cconn.rx.len(), cconn.tx.len()), (2, 2));
    assert_eq!(sconn.rx[0].ring.size(), 256);
    assert_eq!(sconn.peer_interface, "client-if");
    assert_eq!(cconn.peer_interface, "server-if");
    // The client handed every s2c buffer out.
    assert_eq!(sconn.tx[1].ring.head(), 256);
}
