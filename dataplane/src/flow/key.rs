//! Flow keys: a packet's 5-tuple and zone in canonical order, so that both
//! directions of a connection name one key, and the keyed hash the table
//! indexes by.
//!
//! The two endpoints `(address, port)` are sorted: the lower one is stored
//! first and [`FlowKey::swapped`] remembers whether the packet's source was
//! the higher one. Equal endpoints (a socket talking to itself) make both
//! directions look the same; such a flow is seen as original both ways.
//!
//! Ports: TCP, UDP and SCTP ports as on the wire; ICMP and ICMPv6 echo use
//! the echo identifier as both ports ([`FlowKey::icmp_echo`]); every other
//! protocol uses 0.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use caracal_wire::IpProtocol;

use super::bucket::WayFormat;

/// Conntrack zone: keeps otherwise identical tuples of separate address
/// spaces (overlapping pod networks, VRFs) apart, as in Linux conntrack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zone(pub u16);

/// Which way a packet travels relative to the packet that created its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowDir {
    /// Same way as the flow's first packet (from the initiator).
    Original = 0,
    /// Towards the initiator.
    Reply = 1,
}

impl FlowDir {
    /// 0 for original, 1 for reply: the index of per-direction slots.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    #[inline]
    pub const fn reverse(self) -> FlowDir {
        match self {
            FlowDir::Original => FlowDir::Reply,
            FlowDir::Reply => FlowDir::Original,
        }
    }

    #[inline]
    pub(super) const fn from_bit(reply: bool) -> FlowDir {
        if reply {
            FlowDir::Reply
        } else {
            FlowDir::Original
        }
    }
}

/// Words of a canonical key.
pub(super) const KEY_WORDS: usize = 5;

mod word {
    //! Layout of the last key word: ports, protocol, zone, family.
    pub const LOW_PORT: u32 = 0;
    pub const HIGH_PORT: u32 = 16;
    pub const PROTO: u32 = 32;
    pub const ZONE: u32 = 40;
    pub const IPV6: u64 = 1 << 56;
}

/// A packet's flow key: the canonical 5-tuple plus zone, and the side the
/// packet came from.
///
/// Words 0–1 are the lower endpoint's address, 2–3 the higher one's (an
/// IPv4 address sits in the low 32 bits of words 1 and 3), word 4 packs the
/// ports, protocol, zone and family. Two packets of one connection in
/// opposite directions have the same [`canonical`](FlowKey::canonical) key
/// and opposite [`swapped`](FlowKey::swapped).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    words: [u64; KEY_WORDS],
    swapped: bool,
}

impl FlowKey {
    /// Key of an IPv4 packet from `src` to `dst` (`(address, port)` each).
    #[inline]
    pub fn v4(zone: Zone, proto: IpProtocol, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Self {
        let s = (u64::from(u32::from(src.0)) << 16) | u64::from(src.1);
        let d = (u64::from(u32::from(dst.0)) << 16) | u64::from(dst.1);
        let swapped = s > d;
        let (lo, hi) = if swapped { (d, s) } else { (s, d) };
        FlowKey {
            words: [
                0,
                lo >> 16,
                0,
                hi >> 16,
                last_word(zone, proto, lo as u16, hi as u16, false),
            ],
            swapped,
        }
    }

    /// Key of an IPv6 packet from `src` to `dst` (`(address, port)` each).
    #[inline]
    pub fn v6(zone: Zone, proto: IpProtocol, src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> Self {
        let s = (u128::from(src.0), src.1);
        let d = (u128::from(dst.0), dst.1);
        let swapped = s > d;
        let (lo, hi) = if swapped { (d, s) } else { (s, d) };
        FlowKey {
            words: [
                (lo.0 >> 64) as u64,
                lo.0 as u64,
                (hi.0 >> 64) as u64,
                hi.0 as u64,
                last_word(zone, proto, lo.1, hi.1, true),
            ],
            swapped,
        }
    }

    /// Key of a packet between two addresses of one family; `None` when
    /// the families differ.
    pub fn new(
        zone: Zone,
        proto: IpProtocol,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<Self> {
        match (src.0, dst.0) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(Self::v4(zone, proto, (s, src.1), (d, dst.1))),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(Self::v6(zone, proto, (s, src.1), (d, dst.1))),
            _ => None,
        }
    }

    /// Key of an ICMP (IPv4) or ICMPv6 (IPv6) echo request or reply with
    /// identifier `id`; a request and its reply share the key.
    pub fn icmp_echo(zone: Zone, src: IpAddr, dst: IpAddr, id: u16) -> Option<Self> {
        let proto = if src.is_ipv6() {
            IpProtocol::ICMPV6
        } else {
            IpProtocol::ICMP
        };
        Self::new(zone, proto, (src, id), (dst, id))
    }

    /// The key of a packet going the other way.
    #[inline]
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            words: self.words,
            swapped: !self.swapped,
        }
    }

    /// The same flow as seen from its lower endpoint: equal for both
    /// directions of a connection.
    #[inline]
    pub fn canonical(&self) -> FlowKey {
        FlowKey {
            words: self.words,
            swapped: false,
        }
    }

    /// Whether the packet's source is the higher endpoint.
    #[inline]
    pub fn swapped(&self) -> bool {
        self.swapped
    }

    pub fn is_ipv6(&self) -> bool {
        self.words[4] & word::IPV6 != 0
    }

    pub fn proto(&self) -> IpProtocol {
        IpProtocol((self.words[4] >> word::PROTO) as u8)
    }

    pub fn zone(&self) -> Zone {
        Zone((self.words[4] >> word::ZONE) as u16)
    }

    /// The packet's source `(address, port)`.
    pub fn src(&self) -> (IpAddr, u16) {
        self.endpoint(self.swapped)
    }

    /// The packet's destination `(address, port)`.
    pub fn dst(&self) -> (IpAddr, u16) {
        self.endpoint(!self.swapped)
    }

    fn endpoint(&self, high: bool) -> (IpAddr, u16) {
        let (w, shift) = if high {
            (2, word::HIGH_PORT)
        } else {
            (0, word::LOW_PORT)
        };
        let port = (self.words[4] >> shift) as u16;
        let addr = if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(self.words[w]) << 64) | u128::from(self.words[w + 1]),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.words[w + 1] as u32))
        };
        (addr, port)
    }

    #[inline]
    pub(super) fn words(&self) -> &[u64; KEY_WORDS] {
        &self.words
    }

    /// Rebuilds a key from stored words.
    #[inline]
    pub(super) fn from_words(words: [u64; KEY_WORDS], swapped: bool) -> FlowKey {
        FlowKey { words, swapped }
    }
}

#[inline]
fn last_word(zone: Zone, proto: IpProtocol, low_port: u16, high_port: u16, v6: bool) -> u64 {
    (u64::from(low_port) << word::LOW_PORT)
        | (u64::from(high_port) << word::HIGH_PORT)
        | (u64::from(proto.0) << word::PROTO)
        | (u64::from(zone.0) << word::ZONE)
        | if v6 { word::IPV6 } else { 0 }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for FlowKey {
    /// `proto src:port -> dst:port zone N`, IPv6 addresses in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |(a, p): (IpAddr, u16)| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        write!(
            f,
            "{} {} -> {} zone {}",
            self.proto(),
            ep(self.src()),
            ep(self.dst()),
            self.zone().0
        )
    }
}

/// Where a key lives: its two candidate buckets and its tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct KeyHash {
    /// The bucket a key is placed in while it has room.
    pub primary: u32,
    /// The other candidate, different from `primary`.
    pub alt: u32,
    /// Non-zero signature stored beside the entry index in the bucket,
    /// already in its place in the way ([`WayFormat::tag`]).
    pub tag: u32,
}

/// The table's keyed hash over canonical key words.
///
/// Pods choose their own tuples, so the seed is secret and random per
/// table: without it nobody can aim many flows at one bucket. The hash
/// folds 128-bit products (two independent multiplies, then one more), a
/// few cycles per key; the low half picks the primary bucket, the high
/// half gives the tag, and the middle bits, remixed, the alternative.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHasher {
    seeds: [u64; 5],
    buckets: u32,
    format: WayFormat,
}

/// 128-bit product folded to 64 bits.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Maps a uniform 32-bit value onto `0..n` without a division.
#[inline(always)]
fn reduce(x: u32, n: u32) -> u32 {
    ((u64::from(x) * u64::from(n)) >> 32) as u32
}

impl KeyHasher {
    /// # Panics
    /// With fewer than two buckets.
    pub fn new(seed: u64, buckets: u32, format: WayFormat) -> Self {
        assert!(buckets >= 2, "two candidate buckets need two buckets");
        // SplitMix64 expands the one seed into independent odd words.
        let mut s = seed;
        let seeds = std::array::from_fn(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        });
        KeyHasher {
            seeds,
            buckets,
            format,
        }
    }

    #[inline(always)]
    pub fn hash(&self, key: &FlowKey) -> KeyHash {
        let w = key.words();
        let s = &self.seeds;
        let a = fold(w[0] ^ s[0], w[1] ^ s[1]);
        let b = fold(w[2] ^ s[2], w[3] ^ s[3]);
        let h = fold(a ^ w[4] ^ s[4], b);
        let primary = reduce(h as u32, self.buckets);
        let mut alt = reduce(((h >> 16) as u32).wrapping_mul(0x2545_f491), self.buckets);
        if alt == primary {
            alt = if primary + 1 == self.buckets {
                0
            } else {
                primary + 1
            };
        }
        KeyHash {
            primary,
            alt,
            tag: self.format.tag((h >> 32) as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn both_directions_share_the_canonical_key() {
        let k = FlowKey::v4(
            Zone(3),
            IpProtocol::TCP,
            (a4("10.0.0.2"), 40000),
            (a4("10.0.0.1"), 80),
        );
        let r = FlowKey::v4(
            Zone(3),
            IpProtocol::TCP,
            (a4("10.0.0.1"), 80),
            (a4("10.0.0.2"), 40000),
        );
        assert_ne!(k, r);
        assert_eq!(k.canonical(), r.canonical());
        assert_eq!(k.reverse(), r);
        assert_ne!(k.swapped(), r.swapped());
        assert_eq!(k.src(), (IpAddr::V4(a4("10.0.0.2")), 40000));
        assert_eq!(k.dst(), (IpAddr::V4(a4("10.0.0.1")), 80));
        assert_eq!(r.src(), k.dst());
        assert_eq!(k.zone(), Zone(3));
        assert_eq!(k.proto(), IpProtocol::TCP);
        assert!(!k.is_ipv6());
        assert_eq!(k.to_string(), "tcp 10.0.0.2:40000 -> 10.0.0.1:80 zone 3");
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = a4("10.0.0.1");
        let k = FlowKey::v4(Zone(0), IpProtocol::UDP, (a, 9), (a, 7));
        let r = FlowKey::v4(Zone(0), IpProtocol::UDP, (a, 7), (a, 9));
        assert_eq!(k.canonical(), r.canonical());
        assert!(k.swapped());
        assert!(!r.swapped());
    }

    #[test]
    fn v6_round_trips_and_differs_from_v4() {
        let s: Ipv6Addr = "fd00::1".parse().unwrap();
        let d: Ipv6Addr = "fd00::2:1".parse().unwrap();
        let k = FlowKey::v6(Zone(0), IpProtocol::UDP, (d, 53), (s, 5353));
        assert!(k.is_ipv6());
        assert!(k.swapped());
        assert_eq!(k.src(), (IpAddr::V6(d), 53));
        assert_eq!(k.dst(), (IpAddr::V6(s), 5353));
        assert_eq!(k.to_string(), "udp [fd00::2:1]:53 -> [fd00::1]:5353 zone 0");
        // ::a.b.c.d-style v6 addresses never equal the v4 key.
        let v4 = FlowKey::v4(
            Zone(0),
            IpProtocol::UDP,
            (a4("0.0.0.1"), 53),
            (a4("0.0.0.2"), 53),
        );
        let v6 = FlowKey::v6(
            Zone(0),
            IpProtocol::UDP,
            (Ipv6Addr::from(1u128), 53),
            (Ipv6Addr::from(2u128), 53),
        );
        assert_ne!(v4.canonical(), v6.canonical());
    }

    #[test]
    fn zone_and_protocol_separate_keys() {
        let e1 = (a4("10.0.0.1"), 1000);
        let e2 = (a4("10.0.0.2"), 2000);
        let base = FlowKey::v4(Zone(0), IpProtocol::TCP, e1, e2);
        assert_ne!(base, FlowKey::v4(Zone(1), IpProtocol::TCP, e1, e2));
        assert_ne!(base, FlowKey::v4(Zone(0), IpProtocol::UDP, e1, e2));
    }

    #[test]
    fn icmp_echo_request_and_reply_share_a_key() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let req = FlowKey::icmp_echo(Zone(0), a, b, 77).unwrap();
        let rep = FlowKey::icmp_echo(Zone(0), b, a, 77).unwrap();
        assert_eq!(req.canonical(), rep.canonical());
        assert_eq!(req.proto(), IpProtocol::ICMP);
        let a6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(
            FlowKey::icmp_echo(Zone(0), a6, "fd00::2".parse().unwrap(), 1)
                .unwrap()
                .proto(),
            IpProtocol::ICMPV6
        );
        assert!(FlowKey::icmp_echo(Zone(0), a, a6, 1).is_none());
    }

    #[test]
    fn hash_ignores_direction_and_spreads_sequential_ports() {
        let mut alts = vec![0u32; 1024];
        let h = KeyHasher::new(42, 1024, WayFormat::new(1 << 20));
        let k = FlowKey::v4(
            Zone(0),
            IpProtocol::TCP,
            (a4("10.0.0.1"), 1),
            (a4("10.0.0.2"), 2),
        );
        assert_eq!(h.hash(&k), h.hash(&k.reverse()));
        // 64k flows differing only in the client port over 1024 buckets:
        // every bucket gets a fair share (mean 64).
        let mut counts = vec![0u32; 1024];
        for port in 0..=u16::MAX {
            let k = FlowKey::v4(
                Zone(0),
                IpProtocol::TCP,
                (a4("10.0.0.1"), port),
                (a4("10.0.0.2"), 80),
            );
            let kh = h.hash(&k);
            assert!(kh.primary < 1024 && kh.alt < 1024);
            assert_ne!(kh.primary, kh.alt);
            assert_ne!(kh.tag, 0);
            counts[kh.primary as usize] += 1;
            alts[kh.alt as usize] += 1;
        }
        for c in [&counts, &alts] {
            let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(*min > 25 && *max < 115, "min {min} max {max}");
        }
    }

    #[test]
    fn seeds_change_the_hash() {
        let k = FlowKey::v4(
            Zone(0),
            IpProtocol::TCP,
            (a4("10.0.0.1"), 1),
            (a4("10.0.0.2"), 2),
        );
        let f = WayFormat::new(1 << 20);
        assert_ne!(
            KeyHasher::new(1, 1 << 20, f).hash(&k),
            KeyHasher::new(2, 1 << 20, f).hash(&k)
        );
    }
}
