//! The packet builder: Ethernet + IPv4/IPv6 + UDP/TCP frames for N flows,
//! built once as templates and stamped per packet.
//!
//! Every frame carries, right after its L4 header, a [`PayloadHeader`]
//! of [`PAYLOAD_HEADER_LEN`] bytes (network order):
//!
//! | bytes | field |
//! |---|---|
//! | 0..2 | magic [`MAGIC`] |
//! | 2..4 | run id (a trial's packets are told from a previous one's) |
//! | 4..8 | stream id (the flow's index) |
//! | 8..12 | per-stream sequence number |
//! | 12..20 | TX timestamp, `CLOCK_MONOTONIC` nanoseconds |
//!
//! The rest of the payload is [`PAYLOAD_PATTERN`]: byte `i` of the frame
//! is `i % 251`, so the sink can tell a payload that arrived whole and in
//! order (a port that chains a jumbo frame over several buffers) from
//! one cut, padded or reassembled out of order. A template is the
//! frame's first `header_len + 20` bytes with run, sequence and
//! timestamp zero and every checksum computed over the whole frame (its
//! length and pattern included); stamping a packet copies that prefix,
//! writes the three fields and folds their words into the L4 checksum
//! (RFC 1624: the fields were zero, so the new sum is the old one plus
//! the new words). The bytes after the prefix are never written per
//! packet: the generator's tx buffers come from a pool only it uses,
//! filled with the pattern once when the ports open
//! ([`fill_payload`]), so they keep it.
//!
//! Checksums are always correct, IPv4/UDP included (it could send 0, but
//! a correct one costs the same here).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use caracal_wire::{
    checksum, EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet,
    TcpFlags, TcpPacket, UdpPacket,
};

use crate::rng::Rng;

/// First two bytes of every generated payload.
pub const MAGIC: u16 = 0xCA7A;
/// Bytes of the header at the start of the payload.
pub const PAYLOAD_HEADER_LEN: usize = 20;
/// Largest frame the generator builds: a 9216-byte jumbo frame (the usual
/// NIC maximum; an MTU of 9000 makes 9014-byte frames). Each packet is one
/// buffer of a pool sized for the largest frame of the run; ports set
/// their own limits (memif chains ring buffers up to this, AF_PACKET
/// follows the interface's MTU, AF_XDP takes one UMEM frame).
pub const MAX_FRAME: usize = 9216;
const _: () = assert!(MAX_FRAME <= caracal_dataplane::buffer::MAX_DATA_SIZE);
/// The payload bytes of every frame, by offset from the frame's start
/// (see the module doc); only the part past the prefix is used.
pub static PAYLOAD_PATTERN: [u8; MAX_FRAME] = payload_pattern();

const fn payload_pattern() -> [u8; MAX_FRAME] {
    let mut p = [0u8; MAX_FRAME];
    let mut i = 0;
    while i < MAX_FRAME {
        // 251 is prime: a block moved by any power-of-two distance no
        // longer matches.
        p[i] = (i % 251) as u8;
        i += 1;
    }
    p
}

/// Writes the payload pattern into every buffer of `pool` (once, before
/// the pool is used for transmission), so a stamped frame is complete.
pub fn fill_payload(pool: &std::sync::Arc<caracal_dataplane::buffer::BufferPool>) {
    use caracal_dataplane::buffer::Meta;
    use caracal_dataplane::port::PortId;
    let len = pool.data_size().min(MAX_FRAME);
    let mut cache = pool.cache();
    let mut held = Vec::with_capacity(pool.total() as usize);
    while let Some(mut b) = cache.alloc() {
        let mut p = pool.packet(&mut b);
        *p.meta_mut() = Meta::received(PortId(0), len as u16);
        p.data_mut().copy_from_slice(&PAYLOAD_PATTERN[..len]);
        held.push(b);
    }
    for b in held {
        cache.free(b);
    }
}
/// The IMIX of RFC 6985 / "simple IMIX": 7×64, 4×576, 1×1500 bytes per
/// 12 packets.
pub const IMIX_SIZES: [u16; 3] = [64, 576, 1500];
/// Which of [`IMIX_SIZES`] packet `i % 12` has, interleaved so any window
/// of packets has about the right mix.
pub const IMIX_PATTERN: [u8; 12] = [0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1];

const ETH_LEN: usize = caracal_wire::ethernet::HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L3 {
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Udp,
    Tcp,
}

impl L3 {
    fn header_len(self) -> usize {
        match self {
            L3::Ipv4 => 20,
            L3::Ipv6 => 40,
        }
    }
}

impl L4 {
    fn header_len(self) -> usize {
        match self {
            L4::Udp => 8,
            L4::Tcp => 20,
        }
    }

    fn protocol(self) -> IpProtocol {
        match self {
            L4::Udp => IpProtocol::UDP,
            L4::Tcp => IpProtocol::TCP,
        }
    }

    /// Offset of the checksum inside the L4 header.
    fn checksum_at(self) -> usize {
        match self {
            L4::Udp => 6,
            L4::Tcp => 16,
        }
    }
}

/// Frame lengths: bytes handed to the port, without the 4-byte FCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSizes {
    Fixed(u16),
    /// [`IMIX_SIZES`] in [`IMIX_PATTERN`]; a size below the protocol's
    /// minimum is raised to it.
    Imix,
}

/// How the N flows' 5-tuples are picked from the ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOrder {
    /// Flow `i` is the `i`-th tuple, source port varying fastest, then
    /// destination port, source address, destination address.
    Sequential,
    /// N distinct tuples drawn from the ranges with this seed.
    Random { seed: u64 },
}

/// `count` consecutive addresses from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    pub first: IpAddr,
    pub count: u32,
}

impl IpRange {
    pub fn single(first: IpAddr) -> Self {
        IpRange { first, count: 1 }
    }

    fn nth(&self, i: u32) -> IpAddr {
        match self.first {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits().wrapping_add(i))),
            IpAddr::V6(a) => {
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits().wrapping_add(u128::from(i))))
            }
        }
    }
}

/// `count` consecutive ports from `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub count: u32,
}

impl PortRange {
    pub fn single(first: u16) -> Self {
        PortRange { first, count: 1 }
    }
}

/// What traffic to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSpec {
    pub l3: L3,
    pub l4: L4,
    pub sizes: FrameSizes,
    /// Number of flows (= streams), at least 1.
    pub flows: u32,
    pub order: FlowOrder,
    pub src: IpRange,
    pub dst: IpRange,
    pub sport: PortRange,
    pub dport: PortRange,
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            l3: L3::Ipv4,
            l4: L4::Udp,
            sizes: FrameSizes::Fixed(64),
            flows: 1,
            order: FlowOrder::Sequential,
            src: IpRange::single(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            dst: IpRange::single(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1))),
            sport: PortRange {
                first: 1024,
                count: 64512,
            },
            dport: PortRange::single(5001),
            src_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            dst_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x02]),
        }
    }
}

/// Why a traffic spec cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error(
        "frame size {size} is below {min} bytes, the smallest {l3:?}/{l4:?} frame that carries \
         the {PAYLOAD_HEADER_LEN}-byte pktgen header"
    )]
    TooSmall {
        size: u16,
        min: usize,
        l3: L3,
        l4: L4,
    },
    #[error(
        "frame size {size} is above {max} bytes, the largest frame the ports carry \
         (the generator builds at most {MAX_FRAME})"
    )]
    TooLarge { size: u16, max: usize },
    #[error("{0}")]
    Flows(String),
}

/// One flow's addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl TrafficSpec {
    /// Bytes of Ethernet, IP and L4 headers.
    pub fn header_len(&self) -> usize {
        ETH_LEN + self.l3.header_len() + self.l4.header_len()
    }

    /// The smallest frame that carries the payload header.
    pub fn min_frame(&self) -> usize {
        self.header_len() + PAYLOAD_HEADER_LEN
    }

    /// The distinct frame lengths, and for each packet index modulo the
    /// pattern length which of them it has.
    pub fn size_classes(&self, max_frame: usize) -> Result<(Vec<u16>, Vec<u8>), BuildError> {
        let min = self.min_frame();
        let check = |size: u16| {
            if usize::from(size) < min {
                Err(BuildError::TooSmall {
                    size,
                    min,
                    l3: self.l3,
                    l4: self.l4,
                })
            } else if usize::from(size) > max_frame.min(MAX_FRAME) {
                Err(BuildError::TooLarge {
                    size,
                    max: max_frame.min(MAX_FRAME),
                })
            } else {
                Ok(size)
            }
        };
        match self.sizes {
            FrameSizes::Fixed(size) => Ok((vec![check(size)?], vec![0])),
            FrameSizes::Imix => {
                let sizes = IMIX_SIZES
                    .iter()
                    .map(|&s| check(s.max(min as u16)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((sizes, IMIX_PATTERN.to_vec()))
            }
        }
    }

    /// The flows' 5-tuples, all distinct.
    pub fn tuples(&self) -> Result<Vec<FiveTuple>, BuildError> {
        let bad = |why: String| Err(BuildError::Flows(why));
        let family_ok = |r: &IpRange| {
            matches!(
                (self.l3, r.first),
                (L3::Ipv4, IpAddr::V4(_)) | (L3::Ipv6, IpAddr::V6(_))
            )
        };
        if !family_ok(&self.src) || !family_ok(&self.dst) {
            return bad(format!("addresses are not {:?}", self.l3));
        }
        let radix = [
            u128::from(self.sport.count),
            u128::from(self.dport.count),
            u128::from(self.src.count),
            u128::from(self.dst.count),
        ];
        if radix.contains(&0) {
            return bad("an empty address or port range".into());
        }
        if u32::from(self.sport.first) + self.sport.count > 65536
            || u32::from(self.dport.first) + self.dport.count > 65536
        {
            return bad("a port range goes past 65535".into());
        }
        let space: u128 = radix.iter().product();
        if self.flows == 0 || u128::from(self.flows) > space {
            return bad(format!(
                "{} flows, but the address and port ranges hold {space} distinct tuples",
                self.flows
            ));
        }
        let decode = |mut i: u128| {
            let mut digit = [0u32; 4];
            for (d, r) in digit.iter_mut().zip(radix) {
                *d = (i % r) as u32;
                i /= r;
            }
            FiveTuple {
                sport: (u32::from(self.sport.first) + digit[0]) as u16,
                dport: (u32::from(self.dport.first) + digit[1]) as u16,
                src: self.src.nth(digit[2]),
                dst: self.dst.nth(digit[3]),
            }
        };
        let indices: Vec<u128> = match self.order {
            FlowOrder::Sequential => (0..u128::from(self.flows)).collect(),
            FlowOrder::Random { seed } => sample(space, self.flows, seed),
        };
        Ok(indices.into_iter().map(decode).collect())
    }
}

/// `n` distinct numbers below `space`, drawn with Floyd's algorithm from a
/// [`Rng`] stream seeded with `seed`.
fn sample(space: u128, n: u32, seed: u64) -> Vec<u128> {
    let mut rng = Rng(seed);
    let mut chosen = HashSet::with_capacity(n as usize);
    let mut out = Vec::with_capacity(n as usize);
    let n = u128::from(n);
    for j in (space - n)..space {
        let wide = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        let t = wide % (j + 1);
        let pick = if chosen.insert(t) { t } else { j };
        if pick == j {
            chosen.insert(j);
        }
        out.push(pick);
    }
    out
}

/// The per-packet fields of the payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub run: u16,
    pub stream: u32,
    pub seq: u32,
    pub tx_ns: u64,
}

impl PayloadHeader {
    /// Reads the header at the start of `payload`, if it carries ours.
    #[inline]
    pub fn parse(payload: &[u8]) -> Option<PayloadHeader> {
        let h: &[u8; PAYLOAD_HEADER_LEN] = payload.get(..PAYLOAD_HEADER_LEN)?.try_into().ok()?;
        if u16::from_be_bytes([h[0], h[1]]) != MAGIC {
            return None;
        }
        Some(PayloadHeader {
            run: u16::from_be_bytes([h[2], h[3]]),
            stream: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            seq: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            tx_ns: u64::from_be_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]),
        })
    }
}

/// Precomputed frame prefixes, one per (size class, flow).
#[derive(Debug, Clone)]
pub struct Templates {
    /// Bytes of one template: headers plus the payload header.
    prefix: usize,
    flows: u32,
    sizes: Vec<u16>,
    /// Size class of packet `i % pattern.len()`.
    pattern: Vec<u8>,
    /// `sizes.len() × flows` templates of `prefix` bytes.
    bytes: Vec<u8>,
    /// Offset of the payload header and of the L4 checksum.
    payload_at: usize,
    checksum_at: usize,
    udp: bool,
}

impl Templates {
    /// Builds every template of `spec` for frames of at most `max_frame`
    /// bytes (the port's limit).
    pub fn build(spec: &TrafficSpec, max_frame: usize) -> Result<Templates, BuildError> {
        let (sizes, pattern) = spec.size_classes(max_frame)?;
        let tuples = spec.tuples()?;
        let prefix = spec.min_frame();
        let mut bytes = vec![0u8; sizes.len() * tuples.len() * prefix];
        let mut frame = vec![0u8; MAX_FRAME];
        let mut chunks = bytes.chunks_exact_mut(prefix);
        for &size in &sizes {
            for (stream, t) in tuples.iter().enumerate() {
                let f = &mut frame[..usize::from(size)];
                f.copy_from_slice(&PAYLOAD_PATTERN[..f.len()]);
                f[..prefix].fill(0);
                write_frame(spec, t, stream as u32, f);
                chunks
                    .next()
                    .expect("sized for every template")
                    .copy_from_slice(&f[..prefix]);
            }
        }
        Ok(Templates {
            prefix,
            flows: spec.flows,
            sizes,
            pattern,
            bytes,
            payload_at: spec.header_len(),
            checksum_at: ETH_LEN + spec.l3.header_len() + spec.l4.checksum_at(),
            udp: spec.l4 == L4::Udp,
        })
    }

    pub fn flows(&self) -> u32 {
        self.flows
    }

    /// The distinct frame lengths.
    pub fn sizes(&self) -> &[u16] {
        &self.sizes
    }

    /// The longest frame, bytes.
    pub fn max_size(&self) -> usize {
        self.sizes.iter().copied().max().map_or(0, usize::from)
    }

    pub fn pattern_len(&self) -> u32 {
        self.pattern.len() as u32
    }

    /// Frame length of the packet at position `pos` of the size pattern.
    #[inline]
    pub fn size_at(&self, pos: u32) -> u16 {
        self.sizes[usize::from(self.pattern[pos as usize])]
    }

    /// Mean frame length over the pattern, bytes.
    pub fn mean_size(&self) -> f64 {
        let total: u64 = (0..self.pattern_len())
            .map(|p| u64::from(self.size_at(p)))
            .sum();
        total as f64 / f64::from(self.pattern_len())
    }

    /// Writes the packet of flow `flow` at pattern position `pos` into
    /// `out` (exactly `size_at(pos)` bytes, [`PAYLOAD_PATTERN`] after the
    /// prefix):
    /// copies the template, stamps the header, patches the checksum.
    #[inline]
    pub fn stamp(&self, pos: u32, flow: u32, h: &PayloadHeader, out: &mut [u8]) {
        let class = usize::from(self.pattern[pos as usize]);
        let t = (class * self.flows as usize + flow as usize) * self.prefix;
        let out = &mut out[..self.prefix];
        out.copy_from_slice(&self.bytes[t..t + self.prefix]);
        let p = self.payload_at;
        out[p + 2..p + 4].copy_from_slice(&h.run.to_be_bytes());
        out[p + 8..p + 12].copy_from_slice(&h.seq.to_be_bytes());
        out[p + 12..p + 20].copy_from_slice(&h.tx_ns.to_be_bytes());
        // The template's sum had these words as zeros (RFC 1624 eqn. 3
        // with m = 0): add the new words to the old sum.
        let c = self.checksum_at;
        let old = u16::from_be_bytes([out[c], out[c + 1]]);
        let (s, t) = (h.seq, h.tx_ns);
        let sum = checksum::combine(&[
            !old,
            h.run,
            (s >> 16) as u16,
            s as u16,
            (t >> 48) as u16,
            (t >> 32) as u16,
            (t >> 16) as u16,
            t as u16,
        ]);
        let mut new = !sum;
        if new == 0 && self.udp {
            // UDP sends a zero sum as 0xffff (RFC 768; RFC 8200 §8.1).
            new = 0xffff;
        }
        out[c..c + 2].copy_from_slice(&new.to_be_bytes());
    }
}

/// Writes a whole frame of `f.len()` bytes for `t` with a zeroed payload
/// header naming `stream`, checksums filled.
fn write_frame(spec: &TrafficSpec, t: &FiveTuple, stream: u32, f: &mut [u8]) {
    let ethertype = match spec.l3 {
        L3::Ipv4 => EtherType::IPV4,
        L3::Ipv6 => EtherType::IPV6,
    };
    let mut eth = EthernetFrame::new_unchecked(&mut *f);
    eth.set_dst_addr(spec.dst_mac);
    eth.set_src_addr(spec.src_mac);
    eth.set_ethertype(ethertype);
    let l3_len = f.len() - ETH_LEN;
    let l4_at = ETH_LEN + spec.l3.header_len();
    let l4_len = f.len() - l4_at;
    let payload = spec.header_len();
    f[payload..payload + 2].copy_from_slice(&MAGIC.to_be_bytes());
    f[payload + 4..payload + 8].copy_from_slice(&stream.to_be_bytes());
    let l4 = &mut f[l4_at..];
    match spec.l4 {
        L4::Udp => {
            let mut udp = UdpPacket::new_unchecked(&mut *l4);
            udp.set_src_port(t.sport);
            udp.set_dst_port(t.dport);
            udp.set_len(l4_len as u16);
        }
        L4::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(&mut *l4);
            tcp.set_src_port(t.sport);
            tcp.set_dst_port(t.dport);
            tcp.set_seq_number(1);
            tcp.set_ack_number(1);
            tcp.set_header_len(20);
            tcp.set_flags(TcpFlags::ACK | TcpFlags::PSH);
            tcp.set_window_len(0xffff);
        }
    }
    match (t.src, t.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len(l3_len as u16);
            ip.set_dont_frag(true);
            ip.set_ttl(64);
            ip.set_protocol(spec.l4.protocol());
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
            let l4 = &mut f[l4_at..];
            match spec.l4 {
                L4::Udp => UdpPacket::new_unchecked(l4).fill_checksum_v4(&src, &dst),
                L4::Tcp => TcpPacket::new_unchecked(l4).fill_checksum_v4(&src, &dst),
            }
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut ip = Ipv6Packet::new_unchecked(&mut f[ETH_LEN..]);
            ip.set_version(6);
            ip.set_payload_len(l4_len as u16);
            ip.set_next_header(spec.l4.protocol());
            ip.set_hop_limit(64);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            let l4 = &mut f[l4_at..];
            match spec.l4 {
                L4::Udp => UdpPacket::new_unchecked(l4).fill_checksum_v6(&src, &dst),
                L4::Tcp => TcpPacket::new_unchecked(l4).fill_checksum_v6(&src, &dst),
            }
        }
        _ => unreachable!("tuples() checked the address families"),
    }
}

/// Where the payload header of a received frame starts, if it is an
/// Ethernet/IPv4-or-IPv6/UDP-or-TCP frame (the fields a device under test
/// may rewrite, addresses, ports, TTL, are not looked at).
#[inline]
pub fn payload_offset(frame: &[u8]) -> Option<usize> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(frame.get(ETH_LEN)? & 0x0f) * 4;
            (*frame.get(ETH_LEN + 9)?, ETH_LEN + ihl)
        }
        0x86dd => (*frame.get(ETH_LEN + 6)?, ETH_LEN + 40),
        _ => return None,
    };
    match proto {
        17 => Some(l4 + 8),
        6 => Some(l4 + usize::from(frame.get(l4 + 12)? >> 4) * 4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(frame: &[u8], spec: &TrafficSpec) -> PayloadHeader {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), spec.dst_mac);
        assert_eq!(eth.src_addr(), spec.src_mac);
        let l4: &[u8];
        let ok = match spec.l3 {
            L3::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(usize::from(ip.total_len()), frame.len() - 14);
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                l4 = &frame[34..];
                match spec.l4 {
                    L4::Udp => {
                        let u = UdpPacket::new_checked(l4).unwrap();
                        assert_ne!(u.checksum(), 0, "a real checksum, not 'none'");
                        u.verify_checksum_v4(&s, &d)
                    }
                    L4::Tcp => TcpPacket::new_checked(l4)
                        .unwrap()
                        .verify_checksum_v4(&s, &d),
                }
            }
            L3::Ipv6 => {
                let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
                assert_eq!(usize::from(ip.payload_len()), frame.len() - 54);
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                l4 = &frame[54..];
                match spec.l4 {
                    L4::Udp => UdpPacket::new_checked(l4)
                        .unwrap()
                        .verify_checksum_v6(&s, &d),
                    L4::Tcp => TcpPacket::new_checked(l4)
                        .unwrap()
                        .verify_checksum_v6(&s, &d),
                }
            }
        };
        assert!(ok, "L4 checksum of {spec:?}");
        let at = payload_offset(frame).unwrap();
        assert_eq!(at, spec.header_len());
        PayloadHeader::parse(&frame[at..]).expect("our header")
    }

    fn all_protocols() -> Vec<TrafficSpec> {
        let mut out = Vec::new();
        for l3 in [L3::Ipv4, L3::Ipv6] {
            for l4 in [L4::Udp, L4::Tcp] {
                let (src, dst) = match l3 {
                    L3::Ipv4 => (
                        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
                    ),
                    L3::Ipv6 => ("fd00::1".parse().unwrap(), "fd00:1::1".parse().unwrap()),
                };
                out.push(TrafficSpec {
                    l3,
                    l4,
                    sizes: FrameSizes::Fixed(128),
                    flows: 50,
                    src: IpRange {
                        first: src,
                        count: 5,
                    },
                    dst: IpRange {
                        first: dst,
                        count: 5,
                    },
                    sport: PortRange {
                        first: 1000,
                        count: 2,
                    },
                    ..TrafficSpec::default()
                });
            }
        }
        out
    }

    #[test]
    fn stamped_frames_have_valid_checksums_for_every_protocol_and_size() {
        for mut spec in all_protocols() {
            for size in [spec.min_frame() as u16, 128, 777, 1500, 2048, 9000, 9216] {
                spec.sizes = FrameSizes::Fixed(size);
                let t = Templates::build(&spec, MAX_FRAME).unwrap();
                // A tx buffer: the pattern everywhere (fill_payload).
                let mut buf = PAYLOAD_PATTERN[..usize::from(size)].to_vec();
                // Seq and timestamps that exercise carries and the 0xffff case.
                for (i, (seq, ts)) in [
                    (0u32, 0u64),
                    (1, 1),
                    (u32::MAX, u64::MAX),
                    (0x8000_0001, 0x1234_5678_9abc_def0),
                ]
                .into_iter()
                .chain((0..500).map(|k| (k * 7919, u64::from(k) * 1_000_003)))
                .enumerate()
                {
                    let flow = i as u32 % spec.flows;
                    let h = PayloadHeader {
                        run: i as u16,
                        stream: flow,
                        seq,
                        tx_ns: ts,
                    };
                    t.stamp(0, flow, &h, &mut buf);
                    assert_eq!(verify(&buf, &spec), h, "{spec:?} size {size}");
                }
            }
        }
    }

    #[test]
    fn sizes_are_checked_against_the_protocol_and_the_buffer() {
        let mut spec = TrafficSpec::default();
        assert_eq!(spec.min_frame(), 62);
        spec.sizes = FrameSizes::Fixed(64);
        assert!(Templates::build(&spec, MAX_FRAME).is_ok());
        spec.sizes = FrameSizes::Fixed(61);
        assert!(matches!(
            Templates::build(&spec, MAX_FRAME),
            Err(BuildError::TooSmall { min: 62, .. })
        ));
        spec.sizes = FrameSizes::Fixed(9000);
        assert_eq!(Templates::build(&spec, MAX_FRAME).unwrap().max_size(), 9000);
        spec.sizes = FrameSizes::Fixed(MAX_FRAME as u16 + 1);
        let err = Templates::build(&spec, usize::MAX).unwrap_err();
        assert!(err.to_string().contains("at most 9216"), "{err}");
        spec.sizes = FrameSizes::Fixed(1515);
        assert!(Templates::build(&spec, 1514).is_err(), "port MTU limit");
    }

    #[test]
    fn imix_has_seven_small_four_medium_one_large_per_twelve() {
        let spec = TrafficSpec {
            sizes: FrameSizes::Imix,
            ..TrafficSpec::default()
        };
        let t = Templates::build(&spec, MAX_FRAME).unwrap();
        let mut count = std::collections::BTreeMap::new();
        for pos in 0..t.pattern_len() {
            *count.entry(t.size_at(pos)).or_insert(0) += 1;
        }
        assert_eq!(count, [(64, 7), (576, 4), (1500, 1)].into_iter().collect());
        assert!((t.mean_size() - (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0).abs() < 1e-9);
        // IPv6/TCP cannot carry the header in 64 bytes: raised to 94.
        let v6 = TrafficSpec {
            l3: L3::Ipv6,
            l4: L4::Tcp,
            src: IpRange::single("fd00::1".parse().unwrap()),
            dst: IpRange::single("fd00::2".parse().unwrap()),
            ..spec
        };
        let t = Templates::build(&v6, MAX_FRAME).unwrap();
        assert_eq!(t.sizes(), &[94, 576, 1500]);
        let mut buf = PAYLOAD_PATTERN[..1500].to_vec();
        for pos in 0..12 {
            let n = usize::from(t.size_at(pos));
            t.stamp(
                pos,
                0,
                &PayloadHeader {
                    run: 1,
                    stream: 0,
                    seq: pos,
                    tx_ns: 5,
                },
                &mut buf[..n],
            );
            verify(&buf[..n], &v6);
        }
    }

    #[test]
    fn flows_are_distinct_and_spread_over_the_ranges() {
        let spec = TrafficSpec {
            flows: 1000,
            src: IpRange {
                first: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
                count: 10,
            },
            dst: IpRange {
                first: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)),
                count: 10,
            },
            sport: PortRange {
                first: 2000,
                count: 10,
            },
            dport: PortRange {
                first: 80,
                count: 2,
            },
            ..TrafficSpec::default()
        };
        let seq = spec.tuples().unwrap();
        assert_eq!(seq.iter().collect::<HashSet<_>>().len(), 1000);
        assert_eq!(seq[0].sport, 2000);
        assert_eq!(seq[1].sport, 2001, "source port varies fastest");
        assert_eq!(seq[10].dport, 81);
        let srcs: HashSet<_> = seq.iter().map(|t| t.src).collect();
        let dsts: HashSet<_> = seq.iter().map(|t| t.dst).collect();
        assert_eq!((srcs.len(), dsts.len()), (10, 5));

        let random = TrafficSpec {
            order: FlowOrder::Random { seed: 7 },
            ..spec.clone()
        };
        let r1 = random.tuples().unwrap();
        assert_eq!(r1, random.tuples().unwrap(), "seeded: reproducible");
        assert_ne!(r1, seq);
        assert_eq!(r1.iter().collect::<HashSet<_>>().len(), 1000);
        let dsts: HashSet<_> = r1.iter().map(|t| t.dst).collect();
        assert_eq!(dsts.len(), 10, "random flows reach every destination");
        for t in &r1 {
            assert!((2000..2010).contains(&t.sport) && (80..82).contains(&t.dport));
        }
        let other = TrafficSpec {
            order: FlowOrder::Random { seed: 8 },
            ..spec.clone()
        };
        assert_ne!(other.tuples().unwrap(), r1);

        let too_many = TrafficSpec {
            flows: 2001,
            ..spec
        };
        assert!(too_many.tuples().is_err());
    }

    #[test]
    fn foreign_frames_have_no_header() {
        assert_eq!(payload_offset(&[0u8; 10]), None);
        let f = crate::frames::udp4(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(2, 2, 2, 2),
            9,
            64,
        );
        let at = payload_offset(&f).unwrap();
        assert_eq!(PayloadHeader::parse(&f[at..]), None);
    }
}
