//! Driving code for the memif fuzz targets (`dataplane/fuzz`), also run
//! over random inputs by `cargo test` so CI exercises it without a nightly
//! toolchain. Not an API.
//!
//! Both drivers treat the input as a peer's doing: ring headers,
//! descriptors and buffer bytes ([`rings`]), or a sequence of control
//! messages with memory files and eventfds attached ([`control`]). Any
//! access outside a mapped region panics in [`SharedMemory`](crate::port::shm::SharedMemory),
//! so "no crash" also means "no out-of-region read or write"; the drivers
//! further check every received packet's length and that every buffer
//! goes back to the pool. The ring driver receives into a default (2 KiB)
//! or a jumbo pool and transmits frames up to the pool's data room, so
//! descriptor chains are split and gathered, fit or overflow.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU16;
use std::sync::Arc;

use caracal_wire::EthernetAddress;

use super::abi::{self, Message, Ring, MSG_SIZE};
use super::connection::{Connection, Doorbell, OwnBuffers, RxRing, TxRing};
use super::control::{ClientHandshake, ClientStep, ServerHandshake, ServerStep};
use super::region::Region;
use super::{rx, sys, tx, MemifConfig, Mode, Role, RxMode, Settings, SocketAddress};
use crate::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta, DATA_SIZE};

/// Data room of the jumbo pool.
const JUMBO: usize = 9216;
use crate::port::PortId;

/// Bytes of the region the ring drivers lay rings and buffers in.
const REGION: usize = 128 << 10;
/// Bursts run over each ring.
const BURSTS: usize = 3;

const POOL_CONFIG: BufferPoolConfig = BufferPoolConfig {
    buffers: 1024,
    hugepages: false,
};

thread_local! {
    static POOL: Arc<BufferPool> = BufferPool::new(&POOL_CONFIG)
        .expect("a small buffer pool");
    static JUMBO_POOL: Arc<BufferPool> = BufferPool::with_data_size(&POOL_CONFIG, JUMBO)
        .expect("a small jumbo buffer pool");
}

fn pool() -> Arc<BufferPool> {
    POOL.with(Arc::clone)
}

fn jumbo_pool() -> Arc<BufferPool> {
    JUMBO_POOL.with(Arc::clone)
}

/// A sealed memory file of `len` bytes starting with `content`, as a
/// well-behaved client would send it.
fn memory_file(content: &[u8], len: usize) -> Region {
    let region = Region::create(c"caracal-fuzz", len, false).expect("memfd region");
    let n = content.len().min(region.size());
    region.memory().copy_in(0, &content[..n]);
    region
}

fn take_u8(data: &mut &[u8]) -> u8 {
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    *data = rest;
    *first
}

fn take_u16(data: &mut &[u8]) -> u16 {
    u16::from_le_bytes([take_u8(data), take_u8(data)])
}

/// Frames to transmit: assorted lengths up to a full buffer of the pool
/// (several ring buffers, so they are chained), IPv4 and IPv6 and ARP, so
/// IP mode strips some and refuses others.
fn fill_tx(cache: &mut BufferCache, frame: &mut Frame, seed: u8) {
    let room = cache.pool().data_size();
    for i in 0..10usize {
        let Some(mut b) = cache.alloc() else { return };
        let len = [
            60,
            64,
            1514,
            DATA_SIZE,
            14,
            200,
            0,
            1000,
            room,
            room / 2 + 1,
        ][i];
        let mut p = cache.pool().packet(&mut b);
        *p.meta_mut() = Meta::received(PortId(0), len as u16);
        let data = p.data_mut();
        data.fill(seed.wrapping_add(i as u8));
        if len >= 15 {
            let ethertype: u16 = [0x0800, 0x86dd, 0x0806][i % 3];
            data[12..14].copy_from_slice(&ethertype.to_be_bytes());
            data[14] = if ethertype == 0x86dd { 0x60 } else { 0x45 };
        }
        frame.push(b);
    }
}

/// Receives and transmits a few bursts over `conn` with buffers of
/// `pool`, checking what comes out and that no buffer is lost.
fn exercise(conn: &Connection, seed: u8, pool: Arc<BufferPool>) {
    let before = pool.in_use();
    {
        let mut cache = pool.cache();
        for queue in 0..conn.rx.len().max(conn.tx.len()).max(1) {
            for _ in 0..BURSTS {
                let mut out = Frame::new();
                let mut stats = rx::RxStats::default();
                let result = rx::receive(conn, queue, PortId(1), &mut cache, &mut out, &mut stats);
                assert_eq!(stats.packets as usize, out.len());
                for mut b in out.drain() {
                    let p = pool.packet(&mut b);
                    assert!(
                        !p.is_empty() && p.len() <= pool.data_size(),
                        "packet of {}",
                        p.len()
                    );
                    cache.free(b);
                }
                if result.is_err() {
                    break;
                }
            }
            for _ in 0..BURSTS {
                let mut frame = Frame::new();
                fill_tx(&mut cache, &mut frame, seed);
                let mut stats = tx::TxStats::default();
                let sent = frame.len() as u64;
                let result = tx::transmit(conn, queue, &mut cache, &mut frame, &mut stats);
                assert!(frame.is_empty(), "transmit takes every packet");
                assert_eq!(stats.packets + stats.errors, sent);
                if result.is_err() {
                    break;
                }
            }
        }
    }
    assert_eq!(pool.in_use(), before, "a buffer leaked");
}

fn settings(role: Role, mode: Mode, queues: u16, log2: u8, secret: bool) -> Arc<Settings> {
    let config = MemifConfig {
        name: "fuzz".into(),
        socket: SocketAddress::Abstract("caracal-fuzz".into()),
        role,
        id: 0,
        secret: secret.then(|| "fuzz".into()),
        queues,
        mode,
        rx_mode: RxMode::Interrupt,
        ring_size: 1 << log2,
        buffer_size: 0,
        peer_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        mtu: 1500,
        hugepages: false,
    };
    Arc::new(config.settings().expect("valid fuzz settings"))
}

/// Arbitrary ring contents. Input: log2 ring size, a flags byte (role,
/// mode, jumbo pool), our two ring positions, a client buffer size, then
/// the bytes of the region (ring header first, then descriptors and
/// buffers).
pub fn rings(data: &[u8]) {
    let mut d = data;
    let log2 = take_u8(&mut d) % 9;
    let flags = take_u8(&mut d);
    let rx_position = take_u16(&mut d);
    let tx_position = take_u16(&mut d);
    let buffer = 128 + u32::from(take_u8(&mut d)) % 256;
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let mode = if flags & 2 == 0 {
        Mode::Ethernet
    } else {
        Mode::Ip
    };

    let region = memory_file(d, REGION);
    let small = memory_file(&[0xa5; 256], 4096);
    let ring = Ring::new(region.memory().clone(), 0, log2).expect("ring fits the region");
    // A second view of the same ring for tx, as if the peer aliased them.
    let tx_ring = Ring::new(region.memory().clone(), 0, log2).expect("ring fits");
    let own = (role == Role::Client).then_some(OwnBuffers {
        base: abi::ring_bytes(log2),
        size: buffer,
    });
    let memories = vec![region.memory().clone(), small.memory().clone()];
    let conn = Connection {
        id: 1,
        role,
        mode,
        regions: vec![region, small],
        memories,
        rx: vec![RxRing {
            ring,
            interrupt: Doorbell::new().expect("eventfd"),
            position: AtomicU16::new(rx_position),
            own,
        }],
        tx: vec![TxRing::new(
            tx_ring,
            Doorbell::new().expect("eventfd"),
            tx_position,
            own,
        )],
        peer_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
        gateway_mac: EthernetAddress([0xee; 6]),
        peer_name: String::new(),
        peer_interface: String::new(),
    };
    let pool = if flags & 4 == 0 { pool() } else { jumbo_pool() };
    exercise(&conn, flags, pool);
}

/// What to attach to a control message.
fn attachment(kind: u8, region: &[u8]) -> Option<OwnedFd> {
    match kind & 3 {
        0 => None,
        1 => Some(
            memory_file(region, 64 << 10)
                .fd()
                .try_clone_to_owned()
                .ok()?,
        ),
        2 => Some(OwnedFd::from(File::from(sys::eventfd().ok()?))),
        _ => {
            // An unsealed memory file, which a server must refuse.
            let fd = sys::memfd_create(c"caracal-fuzz", false).ok()?;
            File::from(fd.try_clone().ok()?).set_len(64 << 10).ok()?;
            Some(fd)
        }
    }
}

/// Arbitrary control messages. Input: a flags byte (secret, IP mode), a
/// 16-bit length and that many bytes of region content (what a region fd
/// attached to a message holds), then records of one byte (bit 0: to the
/// client instead of the server; bits 1-2: attach nothing, a sealed
/// memory file, an eventfd, an unsealed file) and 128 message bytes; a
/// short last record is a short message.
pub fn control(data: &[u8]) {
    let mut d = data;
    let flags = take_u8(&mut d);
    let content_len = usize::from(take_u16(&mut d)).min(d.len()).min(64 << 10);
    let (content, mut records) = d.split_at(content_len);
    let mode = if flags & 2 == 0 {
        Mode::Ethernet
    } else {
        Mode::Ip
    };
    let secret = flags & 1 != 0;
    let mut server = Some(ServerHandshake::new(settings(
        Role::Server,
        mode,
        2,
        8,
        secret,
    )));
    let mut client = Some(ClientHandshake::new(settings(
        Role::Client,
        mode,
        2,
        4,
        secret,
    )));
    while let Some((&kind, rest)) = records.split_first() {
        let n = rest.len().min(MSG_SIZE);
        let (bytes, rest) = rest.split_at(n);
        records = rest;
        let Ok(msg) = Message::decode(bytes) else {
            continue;
        };
        // What decodes re-encodes to something that decodes the same.
        assert_eq!(Message::decode(&msg.encode()), Ok(msg));
        let fd = attachment(kind >> 1, content);
        if kind & 1 == 0 {
            let Some(h) = server.as_mut() else { continue };
            match h.on_message(msg, fd, 1) {
                Ok(ServerStep::Reply(_)) => {}
                Ok(ServerStep::Connected(conn, _)) => {
                    exercise(&conn, kind, pool());
                    server = None;
                }
                Err(_) => server = None,
            }
        } else {
            let Some(h) = client.as_mut() else { continue };
            match h.on_message(msg, 1) {
                Ok(ClientStep::Send(out)) => drop(out),
                Ok(ClientStep::Connected(conn)) => {
                    exercise(&conn, kind, jumbo_pool());
                    client = None;
                }
                Err(_) => client = None,
            }
        }
    }
}

/// A record of the [`control`] input.
fn record(to_client: bool, attach: u8, msg: &Message) -> Vec<u8> {
    let mut r = vec![u8::from(to_client) | (attach << 1)];
    r.extend_from_slice(&msg.encode());
    r
}

/// Seed inputs (fuzz target, file name, bytes): complete, well-formed
/// exchanges and full rings, so the fuzzer starts deep inside both paths.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    // A server's view of a whole client handshake: one region holding a
    // c2s and an s2c ring of 16 descriptors, then connect.
    let log2 = 4u8;
    let ring_bytes = abi::ring_bytes(log2);
    let mut region = vec![0u8; 2 * ring_bytes + 32 * 1024];
    for r in 0..2 {
        let base = r * ring_bytes;
        region[base..base + 4].copy_from_slice(&abi::COOKIE.to_le_bytes());
        for slot in 0..16usize {
            let d = base + abi::RING_HEADER_SIZE + slot * abi::DESC_SIZE;
            let offset = (2 * ring_bytes + (r * 16 + slot) * 1024) as u32;
            region[d + 4..d + 8].copy_from_slice(&60u32.to_le_bytes());
            region[d + 8..d + 12].copy_from_slice(&offset.to_le_bytes());
        }
    }
    // Three packets published on the c2s ring.
    region[6..8].copy_from_slice(&3u16.to_le_bytes());
    // Sixteen empty buffers handed out on the s2c ring.
    region[ring_bytes + 6..ring_bytes + 8].copy_from_slice(&16u16.to_le_bytes());
    let content = &region[..];
    let mut server = vec![0u8];
    server.extend_from_slice(&(content.len() as u16).to_le_bytes());
    server.extend_from_slice(content);
    let init = Message::Init(abi::Init {
        version: abi::VERSION,
        id: 0,
        mode: abi::MODE_ETHERNET,
        secret: abi::Secret::default(),
        name: abi::Name::new("fuzz-client"),
    });
    server.extend(record(false, 0, &init));
    server.extend(record(
        false,
        1,
        &Message::AddRegion(abi::AddRegion {
            index: 0,
            size: region.len() as u64,
        }),
    ));
    for (flags, index) in [(abi::ADD_RING_FLAG_C2S, 0u32), (0, 1)] {
        server.extend(record(
            false,
            2,
            &Message::AddRing(abi::AddRing {
                flags,
                index: 0,
                region: 0,
                offset: index * ring_bytes as u32,
                log2_ring_size: log2,
                private_hdr_size: 0,
            }),
        ));
    }
    server.extend(record(false, 0, &Message::Connect(abi::Name::new("c"))));
    seeds.push(("memif_control", "server-handshake.bin", server));

    // A client's view of a server: hello, acks, connected.
    let mut client = vec![0u8, 0, 0];
    client.extend(record(
        true,
        0,
        &Message::Hello(abi::Hello {
            name: abi::Name::new("fuzz-server"),
            min_version: abi::VERSION,
            max_version: abi::VERSION,
            max_region: 0,
            max_s2c_ring: 1,
            max_c2s_ring: 1,
            max_log2_ring_size: 10,
        }),
    ));
    for _ in 0..6 {
        client.extend(record(true, 0, &Message::Ack));
    }
    client.extend(record(true, 0, &Message::Connected(abi::Name::new("s"))));
    seeds.push(("memif_control", "client-handshake.bin", client));

    // Rings: a server receiving three packets, one chained.
    let ring_region = |role_flags: u8, head: u16, tail: u16, descs: &[(u16, u16, u32, u32)]| {
        let mut v = vec![4u8, role_flags];
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.push(0);
        let mut region = vec![0u8; abi::ring_bytes(4) + 16 * 256];
        region[..4].copy_from_slice(&abi::COOKIE.to_le_bytes());
        region[6..8].copy_from_slice(&head.to_le_bytes());
        region[64..66].copy_from_slice(&tail.to_le_bytes());
        for (slot, &(flags, reg, length, offset)) in descs.iter().enumerate() {
            let d = abi::RING_HEADER_SIZE + slot * abi::DESC_SIZE;
            region[d..d + 2].copy_from_slice(&flags.to_le_bytes());
            region[d + 2..d + 4].copy_from_slice(&reg.to_le_bytes());
            region[d + 4..d + 8].copy_from_slice(&length.to_le_bytes());
            region[d + 8..d + 12].copy_from_slice(&offset.to_le_bytes());
        }
        for (i, b) in region[abi::ring_bytes(4)..].iter_mut().enumerate() {
            *b = i as u8;
        }
        v.extend_from_slice(&region);
        v
    };
    let base = abi::ring_bytes(4) as u32;
    seeds.push((
        "memif_rings",
        "server-three-packets.bin",
        ring_region(
            0,
            4,
            0,
            &[
                (0, 0, 60, base),
                (abi::DESC_FLAG_NEXT, 0, 100, base + 256),
                (0, 1, 50, 0),
                (0, 0, 1514, base + 512),
            ],
        ),
    ));
    seeds.push((
        "memif_rings",
        "client-full-ring.bin",
        ring_region(1, 16, 16, &[(0, 0, 128, 0); 16]),
    ));
    seeds.push((
        "memif_rings",
        "ip-mode.bin",
        ring_region(2, 1, 0, &[(0, 0, 20, base + 0x45)]),
    ));
    // Chains: nine 256-byte segments (2304 bytes, more than a default
    // buffer) then a single packet, received into a default pool (the
    // chain is dropped) and into a jumbo pool (it is gathered).
    let mut chain: Vec<(u16, u16, u32, u32)> = (0..9)
        .map(|i| (abi::DESC_FLAG_NEXT, 0, 256, base + 256 * i))
        .collect();
    chain[8].0 = 0;
    chain.push((0, 0, 64, base + 2560));
    seeds.push((
        "memif_rings",
        "server-long-chain.bin",
        ring_region(0, 10, 0, &chain),
    ));
    seeds.push((
        "memif_rings",
        "server-long-chain-jumbo.bin",
        ring_region(4, 10, 0, &chain),
    ));
    // A chain whose last published descriptor still says "more".
    let mut open_chain = chain.clone();
    open_chain[9].0 = abi::DESC_FLAG_NEXT;
    seeds.push((
        "memif_rings",
        "server-unfinished-chain.bin",
        ring_region(4, 10, 0, &open_chain),
    ));
    seeds
}

/// Checks `fd` is open (used by tests to show no descriptor leaks).
#[cfg(test)]
fn is_open(fd: std::os::fd::RawFd) -> bool {
    std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seeds_run_clean() {
        for (target, name, data) in seeds() {
            match target {
                "memif_rings" => rings(&data),
                "memif_control" => control(&data),
                other => panic!("unknown target {other} for {name}"),
            }
        }
    }

    #[test]
    fn seed_corpus_on_disk_runs_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut ran = 0;
        for target in ["memif_rings", "memif_control"] {
            let entries = std::fs::read_dir(dir.join(target))
                .unwrap_or_else(|e| panic!("corpus/{target}: {e}"));
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                match target {
                    "memif_rings" => rings(&data),
                    _ => control(&data),
                }
                ran += 1;
            }
        }
        assert!(ran >= seeds().len(), "the seed corpus is on disk");
    }

    /// Writes the seeds into the fuzz crate's corpus directory:
    /// `cargo test -p caracal-dataplane -- --ignored write_seed_corpus`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (target, name, data) in seeds() {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            std::fs::write(dir.join(target).join(name), data).unwrap();
        }
    }

    #[test]
    fn the_server_seed_reaches_a_connection() {
        let (_, _, data) = seeds()
            .into_iter()
            .find(|s| s.1 == "server-handshake.bin")
            .unwrap();
        // Replay by hand to see the handshake complete.
        let mut d = &data[..];
        take_u8(&mut d);
        let len = usize::from(take_u16(&mut d));
        let (content, mut records) = d.split_at(len);
        let mut h = ServerHandshake::new(settings(Role::Server, Mode::Ethernet, 2, 8, false));
        let mut connected = None;
        while let Some((&kind, rest)) = records.split_first() {
            let (bytes, rest) = rest.split_at(MSG_SIZE);
            records = rest;
            let msg = Message::decode(bytes).unwrap();
            match h
                .on_message(msg, attachment(kind >> 1, content), 1)
                .unwrap()
            {
                ServerStep::Reply(reply) => assert_eq!(reply, Message::Ack),
                ServerStep::Connected(conn, _) => connected = Some(conn),
            }
        }
        let conn = connected.expect("handshake completes");
        assert_eq!((conn.rx.len(), conn.tx.len()), (1, 1));
        let fds: Vec<_> = conn
            .rx
            .iter()
            .map(|r| std::os::fd::AsRawFd::as_raw_fd(&r.interrupt.fd()))
            .collect();
        let pool = pool();
        let mut cache = pool.cache();
        let mut out = Frame::new();
        let mut stats = rx::RxStats::default();
        rx::receive(&conn, 0, PortId(1), &mut cache, &mut out, &mut stats).unwrap();
        assert_eq!(stats.packets, 3);
        for b in out.drain() {
            cache.free(b);
        }
        drop(conn);
        assert!(
            fds.iter().all(|&fd| !is_open(fd)),
            "eventfds closed with the connection"
        );
    }

    /// Replays a rings seed by hand and returns what one rx burst did.
    fn receive_seed(
        name: &str,
    ) -> (
        Result<(), super::super::connection::PeerFault>,
        rx::RxStats,
        Vec<usize>,
    ) {
        let (_, _, data) = seeds().into_iter().find(|s| s.1 == name).unwrap();
        let mut d = &data[..];
        let log2 = take_u8(&mut d);
        let flags = take_u8(&mut d);
        d = &d[5..];
        let region = memory_file(d, REGION);
        let ring = Ring::new(region.memory().clone(), 0, log2).unwrap();
        let tx_ring = Ring::new(region.memory().clone(), 0, log2).unwrap();
        let memories = vec![region.memory().clone()];
        let conn = Connection {
            id: 1,
            role: Role::Server,
            mode: Mode::Ethernet,
            regions: vec![region],
            memories,
            rx: vec![RxRing {
                ring,
                interrupt: Doorbell::new().unwrap(),
                position: AtomicU16::new(0),
                own: None,
            }],
            tx: vec![TxRing::new(tx_ring, Doorbell::new().unwrap(), 0, None)],
            peer_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            gateway_mac: EthernetAddress([0xee; 6]),
            peer_name: String::new(),
            peer_interface: String::new(),
        };
        let pool = if flags & 4 == 0 { pool() } else { jumbo_pool() };
        let mut cache = pool.cache();
        let mut out = Frame::new();
        let mut stats = rx::RxStats::default();
        let result = rx::receive(&conn, 0, PortId(1), &mut cache, &mut out, &mut stats);
        let lens = out
            .drain()
            .map(|mut b| {
                let len = pool.packet(&mut b).len();
                cache.free(b);
                len
            })
            .collect();
        (result, stats, lens)
    }

    #[test]
    fn chains_are_gathered_when_they_fit_and_dropped_when_not() {
        let (result, stats, lens) = receive_seed("server-long-chain-jumbo.bin");
        assert!(result.is_ok());
        assert_eq!((lens, stats.too_long), (vec![2304, 64], 0));
        let (result, stats, lens) = receive_seed("server-long-chain.bin");
        assert!(result.is_ok());
        assert_eq!(
            (lens, stats.too_long),
            (vec![64], 1),
            "dropped whole, not cut"
        );
        let (result, stats, lens) = receive_seed("server-unfinished-chain.bin");
        assert!(matches!(
            result,
            Err(super::super::connection::PeerFault::UnfinishedChain { ring: 0 })
        ));
        assert_eq!((lens, stats.too_long), (vec![2304], 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_rings_never_escape_their_regions(data in prop::collection::vec(any::<u8>(), 0..6000)) {
            rings(&data);
        }

        #[test]
        fn arbitrary_control_messages_never_crash_a_handshake(
            records in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 128)), 0..12),
            content in prop::collection::vec(any::<u8>(), 0..2048),
            flags in any::<u8>(),
        ) {
            let mut data = vec![flags];
            data.extend_from_slice(&(content.len() as u16).to_le_bytes());
            data.extend_from_slice(&content);
            for (kind, mut msg) in records {
                // Mostly valid types, so the handshakes go somewhere.
                msg[0] %= 10;
                msg[1] = 0;
                data.push(kind);
                data.extend_from_slice(&msg);
            }
            control(&data);
        }

        #[test]
        fn mutated_seeds_never_crash(seed in 0usize..5, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
            let all = seeds();
            let (target, _, mut data) = all[seed % all.len()].clone();
            for (at, value) in flips {
                let n = data.len();
                data[at % n] = value;
            }
            match target {
                "memif_rings" => rings(&data),
                _ => control(&data),
            }
        }
    }
}
