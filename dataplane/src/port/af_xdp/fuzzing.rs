//! Driving code for the `af_xdp_rings` fuzz target (`dataplane/fuzz`),
//! also run over random inputs by `cargo test` so CI exercises it without
//! a nightly toolchain. Not an API.
//!
//! The input plays a kernel that breaks the ring protocol: arbitrary
//! producer and consumer indices on the four rings, arbitrary rx
//! descriptors and completion addresses, need-wakeup flags at random.
//! The rings and the UMEM are anonymous memory laid out as the kernel
//! lays them out (no socket, no privileges), driven through the queue's
//! own `rx_burst`/`tx_burst`. Any access outside the UMEM panics in
//! `port::shm::SharedMemory`, and ring slots are masked, so "no
//! crash" already means "nothing outside the mappings was touched"; the
//! driver further checks that
//!
//! - every received packet comes from inside one rx frame the kernel
//!   held (each rx frame is filled with its own tag byte, which must
//!   survive to the end: nothing writes into rx frames);
//! - every consumed descriptor is a packet, a too-long drop or a counted
//!   bad descriptor;
//! - every UMEM frame is in exactly one place (the kernel's, our spares,
//!   our free tx frames) and every buffer goes back to the pool.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sys::RingMemory;
use super::{AfXdpConfig, AfXdpQueue, Consumer, Producer, QueueParts, UmemLayout};
use crate::buffer::{BufferCache, BufferPool, BufferPoolConfig, Frame, Meta};
use crate::port::shm::{Plain, SharedMemory};
use crate::port::{PortId, PortQueue};

/// Bursts run at most (each takes its kernel's doing from the input).
const BURSTS: usize = 4;

/// Where the ring words and entries sit in each ring's mapping: the
/// kernel's layout (a cache line per index, entries after the flags).
const OFFSETS: libc::xdp_ring_offset = libc::xdp_ring_offset {
    producer: 0,
    consumer: 64,
    flags: 128,
    desc: 192,
};

thread_local! {
    static POOL: Arc<BufferPool> = BufferPool::new(&BufferPoolConfig {
        buffers: 1024,
        hugepages: false,
    })
    .expect("a small buffer pool");
    /// Buffers smaller than some packets (`rx_too_long`).
    static SMALL_POOL: Arc<BufferPool> = BufferPool::with_data_size(
        &BufferPoolConfig {
            buffers: 1024,
            hugepages: false,
        },
        512,
    )
    .expect("a pool of small buffers");
    /// Fewer buffers than a burst (`rx_no_buffer`).
    static TIGHT_POOL: Arc<BufferPool> = BufferPool::new(&BufferPoolConfig {
        buffers: 24,
        hugepages: false,
    })
    .expect("a tiny buffer pool");
}

fn take_u8(data: &mut &[u8]) -> u8 {
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    *data = rest;
    *first
}

fn take_u16(data: &mut &[u8]) -> u16 {
    u16::from_le_bytes([take_u8(data), take_u8(data)])
}

fn take_u32(data: &mut &[u8]) -> u32 {
    u32::from_le_bytes([take_u8(data), take_u8(data), take_u8(data), take_u8(data)])
}

/// A ring of `entries` over fresh anonymous memory.
fn ring<T: Plain>(entries: u32) -> RingMemory<T> {
    let bytes = (OFFSETS.desc as usize + entries as usize * size_of::<T>()).next_multiple_of(4096);
    let mem = SharedMemory::anonymous(bytes, false).expect("anonymous ring memory");
    RingMemory::new(mem, &OFFSETS, entries).expect("the ring fits its memory")
}

/// The tag byte every byte of rx frame `frame` holds.
fn tag(frame: u32) -> u8 {
    (frame as u8) ^ 0x5a
}

/// A UMEM address from the input: mostly inside some frame, sometimes
/// anywhere.
fn take_addr(data: &mut &[u8], layout: &UmemLayout) -> u64 {
    let frame = u64::from(take_u8(data));
    let offset = u64::from(take_u16(data));
    let high = take_u8(data);
    let addr = frame * u64::from(layout.frame_size) + offset;
    if high & 0x80 != 0 {
        addr | u64::from(high) << 40
    } else {
        addr
    }
}

/// A kernel index from the input: relative to `ours` (near it, so mostly
/// believable) or, when `absolute`, any value.
fn take_index(data: &mut &[u8], ours: u32, size: u32, absolute: bool) -> u32 {
    if absolute {
        take_u32(data)
    } else {
        ours.wrapping_add(u32::from(take_u16(data)) % (2 * size + 1))
    }
}

/// A kernel consumer index from the input: `ours` (the producer) less
/// up to twice the ring (so 0 is "all consumed", and more than the ring
/// is a consumer claiming the impossible) or, when `absolute`, any value.
fn take_consumer(data: &mut &[u8], ours: u32, size: u32, absolute: bool) -> u32 {
    if absolute {
        take_u32(data)
    } else {
        ours.wrapping_sub(u32::from(take_u16(data)) % (2 * size + 1))
    }
}

/// What a run did in all, for tests that check a seed reaches its path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    rx_packets: u64,
    rx_too_long: u64,
    rx_no_buffer: u64,
    bad_descriptors: u64,
    reclaimed: u64,
    tx_packets: u64,
}

/// Input: a flags byte (frame size, frame count, pool), then per burst a
/// control byte, the rx producer and descriptors, the completion producer
/// and addresses, the fill and tx consumers, and the number of packets to
/// send.
pub fn rings(data: &[u8]) {
    drive(data);
}

fn drive(data: &[u8]) -> Totals {
    let mut d = data;
    let flags = take_u8(&mut d);
    let mut cfg = AfXdpConfig::new("fuzz0");
    cfg.frame_size = if flags & 1 == 0 { 2048 } else { 4096 };
    cfg.frames = 64 << (((flags >> 1) & 3) % 3);
    let layout = cfg.layout().expect("a valid layout");
    let pool = match (flags >> 3) & 3 {
        1 => SMALL_POOL.with(Arc::clone),
        2 => TIGHT_POOL.with(Arc::clone),
        _ => POOL.with(Arc::clone),
    };

    let umem = SharedMemory::anonymous(layout.bytes(), false).expect("anonymous UMEM");
    // Tags are below 0x80 (at most 128 rx frames); tx frames start as
    // 0xff, and we send 0xee: neither is a tag.
    for f in 0..layout.frames {
        let fill = if f < layout.rx_frames { tag(f) } else { 0xff };
        umem.copy_in(
            layout.base(f) as usize,
            &vec![fill; layout.frame_size as usize],
        );
    }
    let (rx_n, tx_n) = (layout.rx_frames, layout.tx_frames());
    let parts = QueueParts {
        fill: Producer::new(ring(rx_n), rx_n),
        rx: Consumer::new(ring(rx_n), rx_n),
        tx: Producer::new(ring(tx_n), tx_n),
        comp: Consumer::new(ring(tx_n), tx_n),
        umem,
    };
    // Kicks and wakeups go to a descriptor that is no socket: they fail,
    // which the queue shrugs off, as it would a kernel error.
    let sock: OwnedFd = File::open("/dev/null").expect("/dev/null").into();
    let max_frame = layout.max_frame();
    let mut q = AfXdpQueue::new(
        layout,
        parts,
        max_frame,
        Arc::new(sock),
        Arc::default(),
        Arc::default(),
    );
    check_frames(&q);

    let before = pool.in_use();
    let mut reclaimed = 0;
    {
        let mut cache = pool.cache();
        for burst in 0..BURSTS {
            if burst > 0 && d.is_empty() {
                break;
            }
            reclaimed += burst_from(&mut d, &mut q, &mut cache);
        }
    }
    assert_eq!(pool.in_use(), before, "a buffer leaked");
    for f in 0..layout.rx_frames {
        let mut bytes = vec![0; layout.frame_size as usize];
        q.umem.copy_out(layout.base(f) as usize, &mut bytes);
        assert!(
            bytes.iter().all(|&b| b == tag(f)),
            "rx frame {f} was written"
        );
    }
    let c = &q.counters;
    Totals {
        rx_packets: c.rx_packets.load(Ordering::Relaxed),
        rx_too_long: c.rx_too_long.load(Ordering::Relaxed),
        rx_no_buffer: c.rx_no_buffer.load(Ordering::Relaxed),
        bad_descriptors: q.xdp_counters.bad_descriptors.load(Ordering::Relaxed),
        reclaimed,
        tx_packets: c.tx_packets.load(Ordering::Relaxed),
    }
}

/// One burst: the kernel's doing from the input, then rx, completions
/// and tx, each checked. Returns the tx frames reclaimed.
fn burst_from(d: &mut &[u8], q: &mut AfXdpQueue, cache: &mut BufferCache) -> u64 {
    let layout = q.layout;
    let ctl = take_u8(d);

    // The kernel posts rx descriptors.
    let rx_cons = q.rx.mem.load_consumer();
    let rx_prod = take_index(d, rx_cons, q.rx.size, ctl & 1 != 0);
    let posted = rx_prod.wrapping_sub(rx_cons).min(q.rx.size);
    for i in 0..posted {
        let addr = take_addr(d, &layout);
        let len = u32::from(take_u16(d));
        let options = u32::from(take_u8(d) & 3);
        let desc = libc::xdp_desc { addr, len, options };
        q.rx.mem.write(rx_cons.wrapping_add(i), desc);
    }
    q.rx.mem.store_producer(rx_prod);

    // And completions.
    let comp_cons = q.comp.mem.load_consumer();
    let comp_prod = take_index(d, comp_cons, q.comp.size, ctl & 2 != 0);
    let completed = comp_prod.wrapping_sub(comp_cons).min(q.comp.size);
    for i in 0..completed {
        let addr = take_addr(d, &layout);
        q.comp.mem.write(comp_cons.wrapping_add(i), addr);
    }
    q.comp.mem.store_producer(comp_prod);

    // It takes from the fill and tx rings, and may want waking up.
    let fill_prod = q.fill.mem.load_producer();
    let fill_cons = take_consumer(d, fill_prod, q.fill.size, ctl & 4 != 0);
    q.fill.mem.store_consumer(fill_cons);
    let tx_prod = q.tx.mem.load_producer();
    let tx_cons = take_consumer(d, tx_prod, q.tx.size, ctl & 8 != 0);
    q.tx.mem.store_consumer(tx_cons);
    q.fill
        .mem
        .store_flags(u32::from(ctl & 16 != 0) * libc::XDP_RING_NEED_WAKEUP);
    q.tx.mem
        .store_flags(u32::from(ctl & 32 != 0) * libc::XDP_RING_NEED_WAKEUP);
    let sends = usize::from(take_u8(d) % 48);

    // Rx: every consumed descriptor is a packet, a too-long drop or bad.
    let held = q.in_kernel.clone();
    let (packets, too_long, bad) = counts(q);
    let mut out = Frame::new();
    let n = q.rx_burst(PortId(1), cache, &mut out);
    let consumed = q.rx.mem.load_consumer().wrapping_sub(rx_cons);
    let (packets2, too_long2, bad2) = counts(q);
    assert_eq!(n, out.len());
    assert_eq!(packets2 - packets, n as u64);
    assert!(consumed <= q.rx.size, "consumed {consumed} rx descriptors");
    assert_eq!(
        u64::from(consumed),
        (packets2 - packets) + (too_long2 - too_long) + (bad2 - bad),
        "an rx descriptor went uncounted"
    );
    let mut seen = vec![false; layout.rx_frames as usize];
    for mut b in out.drain() {
        let p = cache.pool().packet(&mut b);
        let data = p.data();
        assert!(!data.is_empty() && data.len() <= cache.pool().data_size());
        let f = (0..layout.rx_frames)
            .find(|&f| tag(f) == data[0])
            .expect("a packet from an rx frame");
        assert!(
            held[f as usize],
            "a packet from frame {f}, not the kernel's"
        );
        assert!(
            !std::mem::replace(&mut seen[f as usize], true),
            "frame {f} read twice"
        );
        assert!(
            data.iter().all(|&b| b == data[0]),
            "a packet spanning frames"
        );
        cache.free(b);
    }
    check_frames(q);

    // Completions alone (an empty burst reclaims and sends nothing).
    let free = q.tx_free.len();
    let (_, _, bad) = counts(q);
    q.tx_burst(cache, &mut Frame::new());
    let consumed = q.comp.mem.load_consumer().wrapping_sub(comp_cons);
    let (_, _, bad2) = counts(q);
    let reclaimed = (q.tx_free.len() - free) as u64;
    assert!(consumed <= q.comp.size, "consumed {consumed} completions");
    assert_eq!(
        u64::from(consumed),
        reclaimed + (bad2 - bad),
        "a completion went uncounted"
    );
    check_frames(q);

    // Tx: every packet is sent or counted, each from a frame of ours.
    let mut frame = Frame::new();
    for i in 0..sends {
        let Some(mut b) = cache.alloc() else { break };
        let len = [60usize, 1514, 0, 9000, 64, layout.max_frame()][i % 6];
        let len = len.min(cache.pool().data_size());
        let mut p = cache.pool().packet(&mut b);
        *p.meta_mut() = Meta::received(PortId(0), len as u16);
        p.data_mut().fill(0xee);
        frame.push(b);
    }
    let queued = frame.len() as u64;
    let before = (
        q.counters.tx_packets.load(Ordering::Relaxed),
        q.counters.tx_errors.load(Ordering::Relaxed),
    );
    q.tx_burst(cache, &mut frame);
    assert!(frame.is_empty(), "transmit takes every packet");
    let sent = q.counters.tx_packets.load(Ordering::Relaxed) - before.0;
    let errors = q.counters.tx_errors.load(Ordering::Relaxed) - before.1;
    assert_eq!(sent + errors, queued);
    check_frames(q);
    reclaimed
}

/// Received packets, too-long drops and bad descriptors so far.
fn counts(q: &AfXdpQueue) -> (u64, u64, u64) {
    (
        q.counters.rx_packets.load(Ordering::Relaxed),
        q.counters.rx_too_long.load(Ordering::Relaxed),
        q.xdp_counters.bad_descriptors.load(Ordering::Relaxed),
    )
}

/// Every frame is in exactly one place: the kernel's, the rx spares (rx
/// frames) or the free tx frames (tx frames).
fn check_frames(q: &AfXdpQueue) {
    let l = q.layout;
    let mut places = q
        .in_kernel
        .iter()
        .map(|&k| u32::from(k))
        .collect::<Vec<_>>();
    for &f in &q.rx_spare {
        assert!(f < l.rx_frames, "tx frame {f} among the rx spares");
        places[f as usize] += 1;
    }
    for &f in &q.tx_free {
        assert!(
            f >= l.rx_frames && f < l.frames,
            "frame {f} among free tx frames"
        );
        places[f as usize] += 1;
    }
    if let Some(f) = places.iter().position(|&n| n != 1) {
        panic!("frame {f} is in {} places", places[f]);
    }
}

/// Seed inputs (file name, bytes): well-formed bursts deep in both paths.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // A burst with `rx` descriptors `(frame, offset, len, options)`,
    // `comp` completions of `(frame, offset)`, the kernel consuming
    // everything, and `sends` packets to send.
    fn burst(ctl: u8, rx: &[(u8, u16, u16, u8)], comp: &[(u8, u16)], sends: u8) -> Vec<u8> {
        let mut b = vec![ctl];
        b.extend_from_slice(&(rx.len() as u16).to_le_bytes());
        for &(frame, offset, len, options) in rx {
            b.push(frame);
            b.extend_from_slice(&offset.to_le_bytes());
            b.push(0);
            b.extend_from_slice(&len.to_le_bytes());
            b.push(options);
        }
        b.extend_from_slice(&(comp.len() as u16).to_le_bytes());
        for &(frame, offset) in comp {
            b.push(frame);
            b.extend_from_slice(&offset.to_le_bytes());
            b.push(0);
        }
        // Fill and tx consumers: the kernel took everything.
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.push(sends);
        b
    }
    let mut seeds = Vec::new();
    // 2048-byte frames, 64 of them (32 rx at 0..32, 32 tx at 32..64).
    let mut three = vec![0u8];
    three.extend(burst(
        0,
        &[(0, 256, 60, 0), (1, 256, 1514, 0), (2, 256, 1792, 0)],
        &[],
        8,
    ));
    three.extend(burst(16 | 32, &[], &[(32, 0), (33, 0), (34, 0)], 4));
    seeds.push(("three-packets-then-completions.bin", three));
    // Bad descriptors of every kind: a tx frame, past the frame, empty,
    // a fragment, a frame twice, past the UMEM; bad completions.
    let mut bad = vec![0u8];
    bad.extend(burst(
        0,
        &[
            (40, 256, 60, 0),
            (3, 2000, 100, 0),
            (4, 256, 0, 0),
            (5, 256, 60, 1),
            (6, 256, 60, 0),
            (6, 256, 60, 0),
            (200, 0, 60, 0),
        ],
        &[(0, 0), (40, 0), (200, 0)],
        2,
    ));
    seeds.push(("bad-descriptors.bin", bad));
    // 4096-byte frames, 256 frames, small buffers: too-long packets.
    let mut long = vec![1 | 2 << 1 | 1 << 3];
    long.extend(burst(0, &[(7, 256, 1000, 0), (8, 256, 400, 0)], &[], 40));
    long.extend(burst(0, &[], &[(128, 0), (129, 0)], 40));
    seeds.push(("small-buffers.bin", long));
    // A tight pool: more packets than buffers.
    let mut tight = vec![2 << 3];
    let many: Vec<_> = (0..30).map(|f| (f as u8, 256, 60, 0)).collect();
    tight.extend(burst(0, &many, &[], 0));
    tight.extend(burst(0, &many[24..], &[], 0));
    seeds.push(("no-buffers.bin", tight));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seeds_run_clean() {
        for (_, data) in seeds() {
            rings(&data);
        }
    }

    #[test]
    fn seed_corpus_on_disk_runs_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/af_xdp_rings");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir)
            .expect("corpus/af_xdp_rings")
            .flatten()
        {
            rings(&std::fs::read(entry.path()).unwrap());
            ran += 1;
        }
        assert!(ran >= seeds().len(), "the seed corpus is on disk");
    }

    /// Writes the seeds into the fuzz crate's corpus directory:
    /// `cargo test -p caracal-dataplane -- --ignored write_af_xdp_seed_corpus`.
    #[test]
    #[ignore]
    fn write_af_xdp_seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/af_xdp_rings");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    /// The seeds reach what they are for: packets, bad descriptors,
    /// reclaimed frames, too-long drops and a lack of buffers.
    #[test]
    fn seeds_reach_their_paths() {
        let all = seeds();
        let run = |name: &str| drive(&all.iter().find(|(n, _)| *n == name).unwrap().1);
        let t = run("three-packets-then-completions.bin");
        assert_eq!((t.rx_packets, t.bad_descriptors, t.reclaimed), (3, 0, 3));
        // 6 of 8 sent, then 2 of 4 (empty and over-long ones are errors).
        assert_eq!(t.tx_packets, 8);
        let t = run("bad-descriptors.bin");
        // The second use of frame 6 is bad; so are all three completions
        // (nothing was sent yet).
        assert_eq!((t.rx_packets, t.bad_descriptors), (1, 9));
        let t = run("small-buffers.bin");
        assert_eq!((t.rx_packets, t.rx_too_long, t.reclaimed), (1, 1, 2));
        let t = run("no-buffers.bin");
        assert!(t.rx_no_buffer > 0 && t.rx_packets == 30, "{t:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_rings_never_escape_the_umem(data in prop::collection::vec(any::<u8>(), 0..4000)) {
            rings(&data);
        }

        #[test]
        fn mutated_seeds_never_crash(seed in 0usize..4, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
            let all = seeds();
            let mut data = all[seed % all.len()].1.clone();
            for (at, value) in flips {
                let n = data.len();
                data[at % n] = value;
            }
            rings(&data);
        }
    }
}
