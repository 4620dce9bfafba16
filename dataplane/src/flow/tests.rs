//! Table-level tests: both directions, protocol state and timeouts through
//! the table, eviction, capacity, reclamation, concurrent stress, and a
//! property test against a `HashMap` model.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use caracal_wire::{IpProtocol, TcpFlags};
use proptest::prelude::*;

use super::bucket::WAYS;
use super::state::{tick, StateWord};
use super::*;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// A start time well away from zero.
const T0: u64 = 1_000 * SEC;

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const SYNACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
const FIN: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
const RST: TcpFlags = TcpFlags::RST;
const NONE: TcpFlags = TcpFlags::EMPTY;

fn config(capacity: u32) -> FlowTableConfig {
    FlowTableConfig {
        capacity,
        max_handles: 8,
        seed: Some(0x1234_5678),
        ..FlowTableConfig::default()
    }
}

fn table(capacity: u32) -> Arc<FlowTable> {
    FlowTable::new(&config(capacity)).unwrap()
}

fn tcp(i: u32) -> FlowKey {
    FlowKey::v4(
        Zone(0),
        IpProtocol::TCP,
        (
            Ipv4Addr::from(0x0a40_0000 + i),
            30_000 + (i % 30_000) as u16,
        ),
        (Ipv4Addr::new(10, 65, 0, 1), 80),
    )
}

fn udp6(i: u32) -> FlowKey {
    FlowKey::v6(
        Zone(1),
        IpProtocol::UDP,
        (Ipv6Addr::from(0xfd00_0065_u128 << 96 | 0x100), 53),
        (
            Ipv6Addr::from(0xfd00_0064_u128 << 96 | u128::from(i)),
            40_000,
        ),
    )
}

fn first(flags: TcpFlags) -> NewFlow {
    NewFlow {
        bytes: 100,
        tcp_flags: flags,
        verdict: None,
        forwarding: None,
    }
}

fn insert_new(h: &FlowHandle, key: &FlowKey, now: u64, flags: TcpFlags) -> FlowHit {
    let ins = h.insert(key, now, &first(flags)).unwrap();
    assert!(ins.created, "{key} already there");
    ins.hit
}

#[test]
fn both_directions_hit_one_entry() {
    let t = table(1024);
    let h = t.register().unwrap();
    let icmp = FlowKey::icmp_echo(
        Zone(0),
        "10.0.0.2".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        4242,
    )
    .unwrap();
    for (key, flags) in [(tcp(1), SYN), (udp6(1), NONE), (icmp, NONE)] {
        let hit = insert_new(&h, &key, T0, flags);
        assert_eq!(hit.dir, FlowDir::Original);
        assert_eq!(h.lookup(&key), Some(hit));
        let back = h.lookup(&key.reverse()).expect("reply finds the flow");
        assert_eq!(back.id, hit.id);
        assert_eq!(back.dir, FlowDir::Reply);
        // Inserting from the other side finds the same flow.
        let again = h.insert(&key.reverse(), T0, &first(ACK)).unwrap();
        assert_eq!((again.created, again.hit), (false, back));
        let info = h.info(hit.id, T0).unwrap();
        assert_eq!(info.key, key, "reported as the originator sent it");
    }
    assert_eq!(t.len(), 3);
    assert_eq!(h.lookup(&tcp(2)), None);
    assert_eq!(t.stats().insert_existing, 3);
}

#[test]
fn batch_lookup_agrees_with_single_lookups() {
    let t = table(4096);
    let h = t.register().unwrap();
    for i in 0..1000 {
        insert_new(&h, &tcp(i), T0, SYN);
    }
    // Hits both ways, misses, and lengths around the staging distances.
    let keys: Vec<FlowKey> = (0..1500)
        .map(|i| if i % 3 == 0 { tcp(i).reverse() } else { tcp(i) })
        .collect();
    for n in [0, 1, 7, 8, 16, 17, 255, 256, 300, 1500] {
        let mut out = vec![None; n];
        h.lookup_batch(&keys[..n], &mut out);
        for (k, got) in keys[..n].iter().zip(&out) {
            assert_eq!(*got, h.lookup(k), "{k}");
        }
    }
    let mut out = vec![None; 1500];
    h.lookup_batch(&keys, &mut out);
    assert_eq!(out.iter().flatten().count(), 1000);
}

/// Drives a new TCP flow through `segments` (the first opens it) at `T0`.
fn tcp_flow(h: &FlowHandle, key: &FlowKey, segments: &[(FlowDir, TcpFlags)]) -> FlowHit {
    let hit = insert_new(h, key, T0, segments[0].1);
    for &(dir, flags) in &segments[1..] {
        let k = if dir == FlowDir::Original {
            *key
        } else {
            key.reverse()
        };
        let hit = h.lookup(&k).unwrap();
        assert_eq!(hit.dir, dir);
        assert_eq!(h.track(hit, T0, 60, flags), Tracked::Ok, "{flags:?}");
    }
    hit
}

#[test]
fn tcp_states_through_the_table() {
    use FlowDir::{Original as O, Reply as R};
    let t = table(64);
    let h = t.register().unwrap();
    let key = tcp(7);
    let hit = tcp_flow(
        &h,
        &key,
        &[(O, SYN), (R, SYNACK), (O, ACK), (O, ACK), (R, ACK)],
    );
    let info = h.info(hit.id, T0).unwrap();
    assert_eq!(info.status.l4, L4State::Tcp(TcpState::Established));
    assert!(info.status.seen_reply && info.status.assured);
    assert_eq!(info.packets, [3, 2]);
    assert_eq!(info.bytes, [100 + 60 + 60, 120]);
    // A retransmitted SYN is let through but changes nothing.
    assert_eq!(h.track(hit, T0, 60, SYN), Tracked::Ignored);
    assert_eq!(h.track(hit, T0, 60, NONE), Tracked::Invalid);
    let info = h.info(hit.id, T0).unwrap();
    assert_eq!(info.status.l4, L4State::Tcp(TcpState::Established));
    assert_eq!(info.packets, [5, 2]);
    // RST from the responder closes.
    let back = h.lookup(&key.reverse()).unwrap();
    assert_eq!(h.track(back, T0, 40, RST), Tracked::Ok);
    assert_eq!(
        h.info(hit.id, T0).unwrap().status.l4,
        L4State::Tcp(TcpState::Close)
    );
}

#[test]
fn tcp_timeouts_by_state() {
    use FlowDir::{Original as O, Reply as R};
    let to = FlowTimeouts::default();
    let open = [(O, SYN), (R, SYNACK), (O, ACK)];
    let close = [(O, FIN), (R, ACK), (R, FIN), (O, ACK)];
    let path: Vec<_> = open.iter().chain(&close).copied().collect();
    let cases = [
        (TcpState::SynSent, &path[..1], to.tcp_syn_sent),
        (TcpState::SynRecv, &path[..2], to.tcp_syn_recv),
        (TcpState::Established, &path[..3], to.tcp_established),
        (TcpState::FinWait, &path[..4], to.tcp_fin_wait),
        (TcpState::CloseWait, &path[..5], to.tcp_close_wait),
        (TcpState::LastAck, &path[..6], to.tcp_last_ack),
        (TcpState::TimeWait, &path[..7], to.tcp_time_wait),
        (TcpState::Close, &[(O, SYN), (R, RST)][..], to.tcp_close),
    ];
    for (state, segments, timeout) in cases {
        let t = table(64);
        let mut h = t.register().unwrap();
        let key = tcp(1);
        let hit = tcp_flow(&h, &key, segments);
        assert_eq!(h.info(hit.id, T0).unwrap().status.l4, L4State::Tcp(state));
        let d = timeout.as_nanos() as u64;
        h.quiescent();
        assert_eq!(t.sweep(T0 + d - 5 * MS).expired, 0, "{state:?} kept");
        assert!(h.lookup(&key).is_some());
        let r = t.sweep(T0 + d + 5 * MS);
        assert_eq!((r.expired, r.live), (1, 0), "{state:?} expired");
        assert_eq!(h.lookup(&key), None);
        assert_eq!(h.lookup(&key.reverse()), None);
    }
}

#[test]
fn a_flow_refreshed_after_the_sweeps_clock_is_not_expired() {
    let t = table(64);
    let h = t.register().unwrap();
    let hit = insert_new(&h, &udp6(1), T0, NONE);
    // A worker's clock runs ahead of the sweep's.
    h.track(hit, T0 + 2 * SEC, 10, NONE);
    assert_eq!(t.sweep(T0 + SEC).expired, 0);
    assert_eq!(h.info(hit.id, T0 + SEC).unwrap().idle_ns, 0);
}

#[test]
fn configurable_timeouts_apply_at_the_next_sweep() {
    let t = table(64);
    let h = t.register().unwrap();
    tcp_flow(&h, &tcp(1), &[(FlowDir::Original, ACK)]);
    assert_eq!(t.sweep(T0 + 3600 * SEC).expired, 0);
    t.set_timeouts(&FlowTimeouts {
        tcp_established: Duration::from_secs(60),
        ..FlowTimeouts::default()
    });
    assert_eq!(t.sweep(T0 + 3600 * SEC).expired, 1);
}

#[test]
fn tcp_reopen_clears_the_verdict_and_flips_the_originator() {
    use FlowDir::{Original as O, Reply as R};
    let t = table(64);
    let h = t.register().unwrap();
    let key = tcp(3);
    let hit = tcp_flow(&h, &key, &[(O, SYN), (R, SYNACK), (O, ACK), (O, RST)]);
    h.set_verdict(hit.id, Some(Verdict::new(true, RuleId(9), 1)));
    h.set_forwarding(hit, Some(5));
    // The old responder opens a connection back on the same tuple.
    let back = h.lookup(&key.reverse()).unwrap();
    assert_eq!(back.dir, R);
    assert_eq!(h.track(back, T0 + SEC, 80, SYN), Tracked::Reopened);
    let now = h.lookup(&key.reverse()).unwrap();
    assert_eq!(now.dir, O);
    let info = h.info(hit.id, T0 + SEC).unwrap();
    assert_eq!(info.key, key.reverse());
    assert_eq!(info.status.l4, L4State::Tcp(TcpState::SynSent));
    assert_eq!((info.verdict, info.forwarding), (None, [None, None]));
    assert_eq!((info.packets, info.bytes), ([1, 0], [80, 0]));
}

#[test]
fn udp_unreplied_and_assured_timeouts() {
    let t = table(64);
    let mut h = t.register().unwrap();
    let lone = udp6(1);
    let query = udp6(2);
    let stream = udp6(3);
    insert_new(&h, &lone, T0, NONE);
    insert_new(&h, &query, T0, NONE);
    let s = insert_new(&h, &stream, T0, NONE);
    let q = h.lookup(&query.reverse()).unwrap();
    assert_eq!(h.track(q, T0, 200, NONE), Tracked::Ok);
    let back = h.lookup(&stream.reverse()).unwrap();
    h.track(back, T0, 200, NONE);
    h.track(s, T0, 100, NONE);
    let st = h.info(s.id, T0).unwrap().status;
    assert!(st.assured && st.seen_reply && st.l4 == L4State::Udp);
    assert!(!h.info(q.id, T0).unwrap().status.assured);
    h.quiescent();
    assert_eq!(t.sweep(T0 + 29 * SEC).expired, 0);
    assert_eq!(
        t.sweep(T0 + 31 * SEC).expired,
        2,
        "unreplied and query/answer"
    );
    assert!(h.lookup(&stream).is_some());
    assert_eq!(h.lookup(&query), None);
    assert_eq!(t.sweep(T0 + 119 * SEC).expired, 0);
    assert_eq!(t.sweep(T0 + 121 * SEC).expired, 1);
}

#[test]
fn icmp_echo_flow_and_timeout() {
    let t = table(64);
    let h = t.register().unwrap();
    let a = "fd00::1".parse().unwrap();
    let b = "fd00::2".parse().unwrap();
    let req = FlowKey::icmp_echo(Zone(0), a, b, 7).unwrap();
    let hit = insert_new(&h, &req, T0, NONE);
    let rep = FlowKey::icmp_echo(Zone(0), b, a, 7).unwrap();
    let r = h.lookup(&rep).unwrap();
    assert_eq!((r.id, r.dir), (hit.id, FlowDir::Reply));
    h.track(r, T0 + 10 * SEC, 64, NONE);
    assert_eq!(
        h.lookup(&FlowKey::icmp_echo(Zone(0), b, a, 8).unwrap()),
        None
    );
    assert_eq!(t.sweep(T0 + 39 * SEC).expired, 0, "refreshed by the reply");
    assert_eq!(t.sweep(T0 + 41 * SEC).expired, 1);
}

#[test]
fn verdict_and_forwarding_slots() {
    let t = table(64);
    let h = t.register().unwrap();
    let key = udp6(9);
    let v = Verdict::new(true, RuleId(17), 3);
    let ins = h
        .insert(
            &key,
            T0,
            &NewFlow {
                verdict: Some(v),
                forwarding: Some(0),
                ..first(NONE)
            },
        )
        .unwrap();
    let fwd = ins.hit;
    let back = h.lookup(&key.reverse()).unwrap();
    assert_eq!(h.verdict(back.id), Some(v));
    assert!(v.is_current(3) && !v.is_current(4));
    assert_eq!(h.forwarding(fwd), Some(0));
    assert_eq!(h.forwarding(back), None);
    h.set_forwarding(back, Some(12));
    assert_eq!(h.forwarding(back), Some(12));
    assert_eq!(h.forwarding(fwd), Some(0));
    // Policy changed: re-decided under generation 4.
    let v4 = Verdict::new(false, RuleId(2), 4);
    h.set_verdict(fwd.id, Some(v4));
    assert_eq!(h.verdict(back.id), Some(v4));
    assert_eq!(h.info(fwd.id, T0).unwrap().forwarding, [Some(0), Some(12)]);
}

#[test]
fn opening_segments_only() {
    let t = table(64);
    let h = t.register().unwrap();
    for flags in [SYNACK, FIN, RST, NONE] {
        assert_eq!(
            h.insert(&tcp(1), T0, &first(flags)),
            Err(FlowError::NotInitial)
        );
    }
    assert!(t.is_empty());
    // Mid-stream pickup.
    let hit = insert_new(&h, &tcp(1), T0, ACK | TcpFlags::PSH);
    let st = h.info(hit.id, T0).unwrap().status;
    assert_eq!(st.l4, L4State::Tcp(TcpState::Established));
    assert!(!st.assured, "not until the other side speaks");
    h.track(h.lookup(&tcp(1).reverse()).unwrap(), T0, 40, ACK);
    assert!(h.info(hit.id, T0).unwrap().status.assured);
}

#[test]
fn eviction_takes_the_longest_idle_not_assured_first() {
    let t = FlowTable::new(&FlowTableConfig {
        evict_above: 0.9,
        evict_to: 0.5,
        ..config(100)
    })
    .unwrap();
    let mut h = t.register().unwrap();
    // 95 UDP flows, four a second; every fifth is an assured stream.
    for i in 0..95u32 {
        let now = T0 + u64::from(i) * SEC / 4;
        let hit = insert_new(&h, &udp6(i), now, NONE);
        if i % 5 == 0 {
            h.track(h.lookup(&udp6(i).reverse()).unwrap(), now, 1, NONE);
            h.track(hit, now, 1, NONE);
        }
    }
    h.quiescent();
    let r = t.sweep(T0 + 24 * SEC);
    assert_eq!(r.expired, 0);
    assert_eq!(r.evicted, 45, "down to half");
    assert_eq!(t.len(), 50);
    // The 76 not-assured flows go oldest first; the 19 assured ones stay.
    let plain: Vec<u32> = (0..95).filter(|i| i % 5 != 0).collect();
    let kept: Vec<u32> = (0..95).filter(|&i| h.lookup(&udp6(i)).is_some()).collect();
    let want: Vec<u32> = (0..95)
        .filter(|i| i % 5 == 0 || plain[45..].contains(i))
        .collect();
    assert_eq!(kept, want);
    // Below the high watermark nothing is evicted.
    assert_eq!(t.sweep(T0 + 25 * SEC).evicted, 0);
    assert_eq!(t.stats().evicted, 45);
}

#[test]
fn capacity_is_a_hard_bound_and_entries_come_back() {
    let t = FlowTable::new(&FlowTableConfig {
        evict_above: 1.0,
        evict_to: 1.0,
        ..config(64)
    })
    .unwrap();
    let mut h = t.register().unwrap();
    let mut inserted = Vec::new();
    let mut i = 0;
    loop {
        match h.insert(&tcp(i), T0, &first(SYN)) {
            Ok(ins) => {
                assert!(ins.created);
                inserted.push(i);
            }
            Err(FlowError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        i += 1;
        assert!(t.len() <= 64);
    }
    assert_eq!(t.len(), 64);
    assert_eq!(inserted.len(), 64);
    assert_eq!(h.insert(&tcp(1000), T0, &first(SYN)), Err(FlowError::Full));
    // Lookups keep working on a full table, hits and misses alike.
    assert!(inserted.iter().all(|&i| h.lookup(&tcp(i)).is_some()));
    assert_eq!(h.lookup(&tcp(1000)), None);
    assert_eq!(t.stats().insert_full, 2);
    // Expired entries are reusable once the handle passed a quiescent point.
    h.quiescent();
    let r = t.sweep(T0 + 1000 * SEC);
    assert_eq!((r.expired, r.reclaimed, r.limbo), (64, 0, 64));
    assert_eq!(h.insert(&tcp(1000), T0, &first(SYN)), Err(FlowError::Full));
    h.quiescent();
    let r = t.sweep(T0 + 1000 * SEC);
    assert_eq!((r.reclaimed, r.limbo), (64, 0));
    for i in 0..64 {
        insert_new(&h, &tcp(2000 + i), T0 + 1000 * SEC, SYN);
    }
    assert_eq!(t.memory_bytes() as f64 / 64.0, t.bytes_per_flow());
}

#[test]
fn bytes_per_flow_is_as_stated() {
    // A 128-byte entry and a tenth of a 64-byte bucket.
    let t = table(100_000);
    assert_eq!(t.memory_bytes(), 13_440_000);
    assert_eq!(t.bytes_per_flow(), 134.4);
}

#[test]
fn reclamation_waits_for_every_online_handle() {
    let t = table(64);
    let mut a = t.register().unwrap();
    let mut b = t.register().unwrap();
    let key = udp6(1);
    let hit = insert_new(&a, &key, T0, NONE);
    // `b` looks the flow up and keeps the hit across sweeps.
    let held = b.lookup(&key.reverse()).unwrap();
    a.quiescent();
    let r = t.sweep(T0 + 100 * SEC);
    assert_eq!((r.expired, r.limbo), (1, 1));
    a.quiescent();
    let r = t.sweep(T0 + 100 * SEC);
    assert_eq!((r.reclaimed, r.limbo), (0, 1), "b may still use it");
    // The entry is dead but not reused: b's late update is refused.
    assert_eq!(b.track(held, T0 + 100 * SEC, 1, NONE), Tracked::Gone);
    assert_eq!(b.info(held.id, T0), None);
    b.quiescent();
    let r = t.sweep(T0 + 100 * SEC);
    assert_eq!((r.reclaimed, r.limbo), (1, 0));
    // A sleeping handle holds nothing up.
    insert_new(&a, &key, T0 + 100 * SEC, NONE);
    b.offline();
    a.quiescent();
    t.sweep(T0 + 200 * SEC);
    a.quiescent();
    let r = t.sweep(T0 + 200 * SEC);
    assert_eq!(r.reclaimed, 1);
    b.online();
    assert_eq!(b.lookup(&key), None);
    // Dropping a handle frees its slot.
    drop(b);
    let _c = t.register().unwrap();
    assert_eq!(hit.dir, FlowDir::Original);
}

#[test]
fn too_many_handles() {
    let t = FlowTable::new(&FlowTableConfig {
        max_handles: 1,
        ..config(16)
    })
    .unwrap();
    let h = t.register().unwrap();
    assert_eq!(t.register().unwrap_err(), FlowTableError::TooManyHandles(1));
    drop(h);
    assert!(t.register().is_ok());
    assert!(FlowTable::new(&config(0)).is_err());
    assert!(FlowTable::new(&FlowTableConfig {
        evict_to: 0.95,
        ..config(16)
    })
    .is_err());
}

/// Inserts keys homed in `target`'s two buckets until both are full.
fn fill_pair(t: &FlowTable, h: &FlowHandle, target: &FlowKey) -> Vec<(FlowKey, FlowHit, u64)> {
    let th = t.hash(target);
    let mut filler = Vec::new();
    let mut i = 0;
    while t.bucket_occupancy(th.primary) < WAYS || t.bucket_occupancy(th.alt) < WAYS {
        let k = tcp(i);
        let kh = t.hash(&k);
        i += 1;
        assert!(i < 100_000, "cannot fill the pair");
        if kh.primary != th.primary && kh.primary != th.alt {
            continue;
        }
        let now = T0 + u64::from(i) * MS;
        let ins = h.insert(&k, now, &first(SYN)).unwrap();
        filler.push((k, ins.hit, now));
    }
    filler
}

#[test]
fn full_bucket_pair_moves_a_flow_out_of_the_way() {
    let t = table(64);
    let h = t.register().unwrap();
    let target = tcp(100_000);
    let filler = fill_pair(&t, &h, &target);
    let live = t.len();
    let ins = h.insert(&target, T0 + 110 * SEC, &first(SYN)).unwrap();
    assert!(ins.created);
    assert_eq!(t.len(), live + 1);
    assert_eq!(t.stats().bucket_evictions, 0);
    assert_eq!(h.lookup(&target), Some(ins.hit));
    for (k, hit, _) in &filler {
        assert_eq!(h.lookup(k), Some(*hit), "{k} still there");
        assert_eq!(h.lookup(&k.reverse()).map(|h| h.id), Some(hit.id));
    }
}

#[test]
fn full_bucket_pair_without_room_evicts_its_longest_idle_flow() {
    // Two buckets: every key has the same pair, so nothing can move.
    let t = FlowTable::with_buckets(&config(64), 2).unwrap();
    let mut h = t.register().unwrap();
    let target = tcp(100_000);
    let filler = fill_pair(&t, &h, &target);
    assert_eq!(filler.len(), 2 * WAYS);
    // Make the second-oldest assured: the oldest not-assured goes.
    let (k1, _, _) = filler[1];
    h.track(h.lookup(&k1.reverse()).unwrap(), T0, 60, SYNACK);
    h.track(h.lookup(&k1).unwrap(), T0, 60, ACK);
    let victim = filler[0].0;
    let ins = h.insert(&target, T0 + 110 * SEC, &first(SYN)).unwrap();
    assert!(ins.created);
    assert_eq!(t.len(), 2 * WAYS as u32);
    assert_eq!(t.stats().bucket_evictions, 1);
    assert_eq!(h.lookup(&target), Some(ins.hit));
    let gone: Vec<FlowKey> = filler
        .iter()
        .map(|f| f.0)
        .filter(|k| h.lookup(k).is_none())
        .collect();
    assert_eq!(gone, [victim]);
    // Next: the oldest not assured is filler 2; filler 1 is assured.
    let ins = h
        .insert(&tcp(100_001), T0 + 111 * SEC, &first(SYN))
        .unwrap();
    assert!(ins.created);
    assert!(h.lookup(&filler[2].0).is_none());
    assert!(h.lookup(&k1).is_some());
    // Evicted entries come back through reclamation like any other.
    h.quiescent();
    assert_eq!(t.sweep(T0 + 111 * SEC).limbo, 2);
    h.quiescent();
    assert_eq!(t.sweep(T0 + 111 * SEC).reclaimed, 2);
    assert_eq!(t.len(), 2 * WAYS as u32);
}

#[test]
fn racing_first_packets_of_both_directions_make_one_entry() {
    let t = table(4096);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let run = |reverse: bool| {
            let h = t.register().unwrap();
            let t = &t;
            let barrier = &barrier;
            move || {
                let mut hits = Vec::new();
                for i in 0..2000 {
                    let key = if reverse { udp6(i).reverse() } else { udp6(i) };
                    barrier.wait();
                    let ins = h.insert(&key, T0, &first(NONE)).unwrap();
                    hits.push((ins.hit.id, ins.created));
                }
                let _ = t;
                hits
            }
        };
        let a = s.spawn(run(false));
        let b = s.spawn(run(true));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        for ((ia, ca), (ib, cb)) in a.into_iter().zip(b) {
            assert_eq!(ia, ib, "one entry for both directions");
            assert!(ca != cb, "exactly one insert created it");
        }
    });
    assert_eq!(t.len(), 2000);
    let s = t.stats();
    assert_eq!((s.inserts, s.insert_existing), (2000, 2000));
}

/// Rule id and forwarding every inserter derives from a flow's canonical
/// key, so any reader can tell a wrong or torn entry.
fn fingerprint(key: &FlowKey) -> (u32, u32) {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key.canonical());
    (h as u32, (h >> 40) as u32)
}

#[test]
fn stress_concurrent_insert_lookup_track_expire() {
    // Room for every flow: expiry is the only way out, so a fresh flow
    // must stay findable until it could have expired.
    stress(8192, 1.0, true);
}

#[test]
fn stress_concurrent_with_eviction_and_a_full_table() {
    // 3000 flows for 1024 entries: sweep evictions, bucket evictions and
    // refused inserts all race with lookups.
    stress(1024, 0.9, false);
}

/// Worker threads look up vectors of random flows (either direction),
/// insert the misses and track the hits, checking every hit's entry
/// against the key it was found by; a sweeper advances a shared clock one
/// second per sweep. Then: no duplicates, and every entry comes back.
fn stress(capacity: u32, evict_above: f64, strict: bool) {
    const THREADS: usize = 4;
    const FLOWS: u32 = 3000;
    const ROUNDS: usize = 1500;
    /// Workers keep going until the sweeper has swept this often.
    const SWEEPS: u64 = 100;
    let t = FlowTable::new(&FlowTableConfig {
        timeouts: FlowTimeouts {
            udp_unreplied: Duration::from_secs(30),
            udp_assured: Duration::from_secs(30),
            ..FlowTimeouts::default()
        },
        evict_above,
        evict_to: evict_above * 0.9,
        ..config(capacity)
    })
    .unwrap();
    let clock = AtomicU64::new(T0);
    let sweeps = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let tracked = AtomicU64::new(0);
    std::thread::scope(|s| {
        let sweeper = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let now = clock.fetch_add(SEC, Ordering::Relaxed) + SEC;
                t.sweep(now);
                sweeps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|w| {
                let mut h = t.register().unwrap();
                let (clock, tracked, sweeps) = (&clock, &tracked, &sweeps);
                s.spawn(move || {
                    let mut rng = w as u64 * 0x9e37_79b9 + 1;
                    let mut next = move || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let mut keys = [udp6(0); 32];
                    let mut out = [None; 32];
                    let (mut hits, mut created) = (0u64, 0u64);
                    let mut round = 0;
                    while round < ROUNDS || sweeps.load(Ordering::Relaxed) < SWEEPS {
                        round += 1;
                        let now = clock.load(Ordering::Relaxed);
                        for k in keys.iter_mut() {
                            let r = next();
                            let key = udp6((r % u64::from(FLOWS)) as u32);
                            *k = if r & (1 << 40) != 0 {
                                key.reverse()
                            } else {
                                key
                            };
                        }
                        h.lookup_batch(&keys, &mut out);
                        for (key, got) in keys.iter().zip(out) {
                            let (rule, fwd) = fingerprint(key);
                            let hit = match got {
                                Some(hit) => hit,
                                None => {
                                    let ins = match h.insert(
                                        key,
                                        now,
                                        &NewFlow {
                                            verdict: Some(Verdict::new(true, RuleId(rule), 1)),
                                            forwarding: Some(fwd & 0xffff),
                                            ..first(NONE)
                                        },
                                    ) {
                                        Ok(ins) => ins,
                                        Err(FlowError::Full | FlowError::BucketFull) => continue,
                                        Err(e) => panic!("{e}"),
                                    };
                                    if ins.created {
                                        created += 1;
                                        // Not lost: findable both ways until it
                                        // could legitimately have expired.
                                        let found = h.lookup(key).is_some()
                                            && h.lookup(&key.reverse()).is_some();
                                        assert!(
                                            found
                                                || !strict
                                                || clock.load(Ordering::Relaxed) > now + 30 * SEC,
                                            "fresh flow {key} lost"
                                        );
                                        continue;
                                    }
                                    ins.hit
                                }
                            };
                            hits += 1;
                            // Not torn, not someone else's entry.
                            let v = h.verdict(hit.id).expect("verdict set at insert");
                            assert_eq!(v.rule, RuleId(rule), "{key}: wrong entry");
                            let orig = FlowHit {
                                id: hit.id,
                                dir: FlowDir::Original,
                            };
                            assert_eq!(h.forwarding(orig), Some(fwd & 0xffff));
                            if h.track(hit, now, 100, NONE) != Tracked::Gone {
                                tracked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        h.quiescent();
                    }
                    h.offline();
                    (hits, created)
                })
            })
            .collect();
        let totals: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Ordering::Relaxed);
        sweeper.join().unwrap();
        let totals: Vec<_> = totals
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect();
        assert!(sweeps.load(Ordering::Relaxed) >= SWEEPS);
        let created: u64 = totals.iter().map(|t| t.1).sum();
        let hits: u64 = totals.iter().map(|t| t.0).sum();
        assert!(created > u64::from(capacity.min(FLOWS)) / 2 && hits > created);
    });
    // No duplicates: each connection at most once, and the count agrees.
    let mut seen = HashSet::new();
    let mut n = 0;
    t.for_each_flow(clock.load(Ordering::Relaxed), |f| {
        assert!(seen.insert(f.key.canonical()), "duplicate {}", f.key);
        assert_eq!(f.verdict.unwrap().rule, RuleId(fingerprint(&f.key).0));
        n += 1;
    });
    assert_eq!(n, t.len());
    let s = t.stats();
    assert!(s.live <= s.capacity);
    assert!(tracked.load(Ordering::Relaxed) > 0);
    // Everything unlinked comes back once nobody holds anything.
    let later = clock.load(Ordering::Relaxed) + 3600 * SEC;
    t.sweep(later);
    let r = t.sweep(later);
    assert_eq!((r.live, r.limbo), (0, 0));
    assert_eq!(t.lists.free_len(&*t.entries), capacity as usize);
}

#[test]
fn stress_counters_lose_no_update() {
    const THREADS: usize = 4;
    const FLOWS: u32 = 64;
    const PACKETS: u32 = 20_000;
    let t = table(256);
    let h = t.register().unwrap();
    for i in 0..FLOWS {
        insert_new(&h, &udp6(i), T0, NONE);
    }
    std::thread::scope(|s| {
        for w in 0..THREADS {
            let mut h = t.register().unwrap();
            s.spawn(move || {
                for p in 0..PACKETS {
                    let key = udp6((p * 7 + w as u32) % FLOWS);
                    let key = if p % 2 == 0 { key } else { key.reverse() };
                    let hit = h.lookup(&key).unwrap();
                    assert_eq!(h.track(hit, T0, 10, NONE), Tracked::Ok);
                    if p % 64 == 0 {
                        h.quiescent();
                    }
                }
            });
        }
    });
    let (mut packets, mut bytes) = (0, 0);
    t.for_each_flow(T0, |f| {
        packets += f.packets[0] + f.packets[1];
        bytes += f.bytes[0] + f.bytes[1];
        assert!(f.status.seen_reply);
    });
    let sent = u64::from(PACKETS) * THREADS as u64;
    assert_eq!(packets, sent + u64::from(FLOWS));
    assert_eq!(bytes, sent * 10 + 100 * u64::from(FLOWS));
}

/// The reference model: a map from canonical key to the flow's state.
#[derive(Debug, Clone)]
struct ModelFlow {
    state: StateWord,
    last: u32,
    packets: [u64; 2],
    bytes: [u64; 2],
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, bool, usize),
    Track(usize, bool, usize),
    Lookup(usize, bool),
    /// Milliseconds.
    Advance(u64),
    Sweep,
}

const UNIVERSE: usize = 12;
const FLAG_CHOICES: [TcpFlags; 6] = [SYN, SYNACK, ACK, FIN, RST, NONE];

fn universe(i: usize) -> FlowKey {
    let i32 = i as u32;
    match i % 4 {
        0 => tcp(i32),
        1 => udp6(i32),
        2 => FlowKey::icmp_echo(
            Zone(2),
            "10.0.0.1".parse().unwrap(),
            std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0100 + i32)),
            i as u16,
        )
        .unwrap(),
        _ => FlowKey::v6(
            Zone(0),
            IpProtocol(47),
            (Ipv6Addr::from(u128::from(i32) + 5), 0),
            (Ipv6Addr::from(3u128), 0),
        ),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..UNIVERSE;
    let fl = 0..FLAG_CHOICES.len();
    prop_oneof![
        3 => (f.clone(), any::<bool>(), fl.clone()).prop_map(|(a, b, c)| Op::Insert(a, b, c)),
        4 => (f.clone(), any::<bool>(), fl).prop_map(|(a, b, c)| Op::Track(a, b, c)),
        2 => (f, any::<bool>()).prop_map(|(a, b)| Op::Lookup(a, b)),
        2 => (0u64..150_000).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn behaves_like_a_hashmap(ops in proptest::collection::vec(op(), 1..120)) {
        let t = FlowTable::new(&FlowTableConfig { evict_above: 1.0, evict_to: 1.0, ..config(256) }).unwrap();
        let mut h = t.register().unwrap();
        let timeouts = FlowTimeouts::default().ticks();
        let mut model: HashMap<FlowKey, ModelFlow> = HashMap::new();
        let mut now = T0;
        for op in ops {
            match op {
                Op::Insert(f, rev, fl) => {
                    let key = if rev { universe(f).reverse() } else { universe(f) };
                    let flags = FLAG_CHOICES[fl];
                    let got = h.insert(&key, now, &NewFlow { bytes: 50, ..first(flags) });
                    match model.get(&key.canonical()) {
                        Some(m) => {
                            let ins = got.unwrap();
                            prop_assert!(!ins.created);
                            prop_assert_eq!(ins.hit.dir, m.state.dir_of(key.swapped()));
                        }
                        None => match StateWord::initial(&key, flags) {
                            None => prop_assert_eq!(got, Err(FlowError::NotInitial)),
                            Some(state) => {
                                prop_assert!(got.unwrap().created);
                                model.insert(key.canonical(), ModelFlow {
                                    state, last: tick(now), packets: [1, 0], bytes: [50, 0],
                                });
                            }
                        },
                    }
                }
                Op::Track(f, rev, fl) => {
                    let key = if rev { universe(f).reverse() } else { universe(f) };
                    let flags = FLAG_CHOICES[fl];
                    let hit = h.lookup(&key);
                    match model.get_mut(&key.canonical()) {
                        None => prop_assert_eq!(hit, None),
                        Some(m) => {
                            let hit = hit.unwrap();
                            let dir = m.state.dir_of(key.swapped());
                            prop_assert_eq!(hit.dir, dir);
                            let (next, want) = m.state.advance(dir, flags);
                            prop_assert_eq!(h.track(hit, now, 30, flags), want);
                            m.state = next;
                            let d = if want == Tracked::Reopened {
                                m.packets = [0, 0];
                                m.bytes = [0, 0];
                                0
                            } else {
                                dir.index()
                            };
                            m.packets[d] += 1;
                            m.bytes[d] += 30;
                            if matches!(want, Tracked::Ok | Tracked::Reopened) {
                                m.last = tick(now);
                            }
                        }
                    }
                }
                Op::Lookup(f, rev) => {
                    let key = if rev { universe(f).reverse() } else { universe(f) };
                    let hit = h.lookup(&key);
                    match model.get(&key.canonical()) {
                        None => prop_assert_eq!(hit, None),
                        Some(m) => {
                            let hit = hit.unwrap();
                            prop_assert_eq!(hit.dir, m.state.dir_of(key.swapped()));
                            let info = h.info(hit.id, now).unwrap();
                            prop_assert_eq!(info.status, m.state.status());
                            prop_assert_eq!(info.packets, m.packets);
                            prop_assert_eq!(info.bytes, m.bytes);
                            prop_assert_eq!(info.key.swapped(), m.state.orig_high());
                        }
                    }
                }
                Op::Advance(ms) => now += ms * MS,
                Op::Sweep => {
                    let n = tick(now);
                    model.retain(|_, m| n.wrapping_sub(m.last) <= timeouts.of(m.state));
                    t.sweep(now);
                    prop_assert_eq!(t.len() as usize, model.len());
                }
            }
            h.quiescent();
        }
        let mut seen = HashSet::new();
        t.for_each_flow(now, |f| { seen.insert(f.key.canonical()); });
        let want: HashSet<FlowKey> = model.keys().copied().collect();
        prop_assert_eq!(seen, want);
    }
}
