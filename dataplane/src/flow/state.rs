//! Per-flow protocol state and the values stored beside it: the packed
//! state word, timeouts, the policy verdict and time in table ticks.
//!
//! Everything a worker may change on an existing flow is one atomic word,
//! so concurrent updates from several workers are single loads, stores or
//! compare-and-swaps and a reader never sees half of an update.

use std::time::Duration;

use caracal_wire::{IpProtocol, TcpFlags};

use super::key::{FlowDir, FlowKey};
use super::tcp::{self, TcpEvent, TcpState, TcpStep};

/// Nanoseconds per table tick, as a shift: 2^20 ns ≈ 1.05 ms. Flows keep
/// their last-seen time as a 32-bit tick count, which wraps after ~52
/// days; ages are taken with wrapping arithmetic ([`idle_ticks`]), so a
/// flow must be swept within ~26 days of its last packet (every timeout
/// is far below).
pub(super) const TICK_SHIFT: u32 = 20;

/// The tick of a monotonic time in nanoseconds.
#[inline]
pub(super) const fn tick(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// Ticks a flow last seen at tick `last` has been idle at tick `now`.
/// A `last` after `now` (a worker's clock read after the sweep's) is 0,
/// not a wrapped-around eternity.
#[inline]
pub(super) const fn idle_ticks(now: u32, last: u32) -> u32 {
    let age = now.wrapping_sub(last);
    if age > i32::MAX as u32 {
        0
    } else {
        age
    }
}

/// Ticks spanning `d`, rounded up.
fn ticks(d: Duration) -> u32 {
    let ns = d.as_nanos();
    let t = ns.div_ceil(1 << TICK_SHIFT);
    u32::try_from(t).unwrap_or(u32::MAX / 2).min(u32::MAX / 2)
}

/// Nanoseconds in `t` ticks.
pub(super) const fn ticks_to_ns(t: u32) -> u64 {
    (t as u64) << TICK_SHIFT
}

/// Protocol family of a flow as far as tracking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum L4 {
    Tcp = 1,
    Udp = 2,
    Icmp = 3,
    Other = 4,
}

impl L4 {
    #[inline]
    pub fn of(key: &FlowKey) -> L4 {
        match key.proto() {
            IpProtocol::TCP => L4::Tcp,
            IpProtocol::UDP => L4::Udp,
            IpProtocol::ICMP if !key.is_ipv6() => L4::Icmp,
            IpProtocol::ICMPV6 if key.is_ipv6() => L4::Icmp,
            _ => L4::Other,
        }
    }
}

/// The packed state of one entry (an `AtomicU32` in the entry).
///
/// All zero is a free entry. Bits: 0–2 protocol class ([`L4`]), 3–6 TCP
/// state code, 7 the originator was the key's higher endpoint, 8 a reply
/// was seen, 9 assured, 10 the first FIN came from the reply side, 11 dead
/// (unlinked, waiting for reclamation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StateWord(pub u32);

impl StateWord {
    pub const FREE: StateWord = StateWord(0);
    const CLASS: u32 = 0b111;
    const TCP_SHIFT: u32 = 3;
    const TCP: u32 = 0b1111 << Self::TCP_SHIFT;
    const ORIG_HIGH: u32 = 1 << 7;
    const SEEN_REPLY: u32 = 1 << 8;
    const ASSURED: u32 = 1 << 9;
    const CLOSER_REPLY: u32 = 1 << 10;
    pub const DEAD: u32 = 1 << 11;

    /// State of a new flow whose first packet has key `key` and, for TCP,
    /// `flags`; `None` when that packet cannot open a flow.
    #[inline]
    pub fn initial(key: &FlowKey, flags: TcpFlags) -> Option<StateWord> {
        let l4 = L4::of(key);
        let mut w = l4 as u32;
        if key.swapped() {
            w |= Self::ORIG_HIGH;
        }
        if l4 == L4::Tcp {
            let state = tcp::initial(TcpEvent::classify(flags))?;
            w |= (state as u32) << Self::TCP_SHIFT;
        }
        Some(StateWord(w))
    }

    #[inline]
    pub fn is_free(self) -> bool {
        self.0 == 0
    }

    #[inline]
    pub fn is_dead(self) -> bool {
        self.0 & Self::DEAD != 0
    }

    /// Neither free nor dead.
    #[inline]
    pub fn is_live(self) -> bool {
        !self.is_free() && !self.is_dead()
    }

    #[inline]
    pub fn l4(self) -> L4 {
        match self.0 & Self::CLASS {
            1 => L4::Tcp,
            2 => L4::Udp,
            3 => L4::Icmp,
            _ => L4::Other,
        }
    }

    #[inline]
    pub fn tcp(self) -> Option<TcpState> {
        TcpState::from_code((self.0 & Self::TCP) >> Self::TCP_SHIFT)
    }

    /// Whether the originator is the key's higher endpoint.
    #[inline]
    pub fn orig_high(self) -> bool {
        self.0 & Self::ORIG_HIGH != 0
    }

    #[inline]
    pub fn seen_reply(self) -> bool {
        self.0 & Self::SEEN_REPLY != 0
    }

    #[inline]
    pub fn assured(self) -> bool {
        self.0 & Self::ASSURED != 0
    }

    /// Direction of a packet whose key has `swapped`.
    #[inline]
    pub fn dir_of(self, swapped: bool) -> FlowDir {
        FlowDir::from_bit(swapped != self.orig_high())
    }

    fn closer(self) -> FlowDir {
        FlowDir::from_bit(self.0 & Self::CLOSER_REPLY != 0)
    }

    fn with_tcp(self, state: TcpState, closer: FlowDir) -> StateWord {
        let mut w =
            (self.0 & !(Self::TCP | Self::CLOSER_REPLY)) | ((state as u32) << Self::TCP_SHIFT);
        if closer == FlowDir::Reply {
            w |= Self::CLOSER_REPLY;
        }
        StateWord(w)
    }

    /// The state after a packet in direction `dir` with TCP `flags` (ignored
    /// for other protocols), and what the packet amounts to.
    #[inline]
    pub fn advance(self, dir: FlowDir, flags: TcpFlags) -> (StateWord, Tracked) {
        let reply = dir == FlowDir::Reply;
        let mut w = self;
        if reply {
            w.0 |= Self::SEEN_REPLY;
        }
        match self.l4() {
            L4::Tcp => {
                let state = self.tcp().unwrap_or(TcpState::Close);
                match tcp::step(state, self.closer(), dir, TcpEvent::classify(flags)) {
                    TcpStep::Move { state, closer } => {
                        w = w.with_tcp(state, closer);
                        if state == TcpState::Established && w.seen_reply() {
                            w.0 |= Self::ASSURED;
                        }
                        (w, Tracked::Ok)
                    }
                    TcpStep::Ignore => (self, Tracked::Ignored),
                    TcpStep::Invalid => (self, Tracked::Invalid),
                    TcpStep::Reopen => {
                        // The sender of the SYN is the new originator.
                        let orig_high = self.orig_high() != reply;
                        let mut n =
                            L4::Tcp as u32 | ((TcpState::SynSent as u32) << Self::TCP_SHIFT);
                        if orig_high {
                            n |= Self::ORIG_HIGH;
                        }
                        (StateWord(n), Tracked::Reopened)
                    }
                }
            }
            // A UDP flow becomes a stream once the initiator speaks again
            // after a reply (a lone query and its answer are not one).
            L4::Udp if !reply && self.seen_reply() => {
                w.0 |= Self::ASSURED;
                (w, Tracked::Ok)
            }
            _ => (w, Tracked::Ok),
        }
    }

    /// What the state means to a reader.
    pub fn status(self) -> FlowStatus {
        let l4 = match self.l4() {
            L4::Tcp => L4State::Tcp(self.tcp().unwrap_or(TcpState::Close)),
            L4::Udp => L4State::Udp,
            L4::Icmp => L4State::Icmp,
            L4::Other => L4State::Other,
        };
        FlowStatus {
            l4,
            seen_reply: self.seen_reply(),
            assured: self.assured(),
        }
    }
}

/// What tracking made of one packet of an existing flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Accounted; the flow's state and idle timer were updated.
    Ok,
    /// Accounted but out of place (a retransmitted SYN on an established
    /// connection): state and idle timer left as they were.
    Ignored,
    /// Does not fit the TCP state machine (conntrack's INVALID): accounted,
    /// state and timer untouched; policy decides whether it passes.
    Invalid,
    /// A SYN reopened a closed TCP connection on the same tuple: the
    /// packet's direction is now [`FlowDir::Original`], the verdict and
    /// forwarding slots were cleared and the counters restarted, so the
    /// flow must go through policy again.
    Reopened,
    /// The flow was retired by the sweep meanwhile: treat as a miss.
    Gone,
}

/// Protocol-specific state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4State {
    Tcp(TcpState),
    Udp,
    Icmp,
    Other,
}

/// A flow's tracking state, as reported to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowStatus {
    pub l4: L4State,
    /// A packet went in the reply direction.
    pub seen_reply: bool,
    /// Conntrack's ASSURED: TCP established with a reply seen, or a UDP
    /// stream. Assured flows are the last to be evicted.
    pub assured: bool,
}

/// How long a flow may stay idle, by protocol and state. The defaults are
/// Linux conntrack's (`nf_conntrack_tcp_timeout_*`, `udp_timeout`,
/// `udp_timeout_stream`, `icmp_timeout`, `generic_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    /// UDP flows that are not (yet) assured streams.
    pub udp_unreplied: Duration,
    /// Assured UDP streams.
    pub udp_assured: Duration,
    /// ICMP/ICMPv6 echo.
    pub icmp: Duration,
    /// Every other protocol.
    pub other: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        FlowTimeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(5 * 24 * 3600),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_assured: s(120),
            icmp: s(30),
            other: s(600),
        }
    }
}

impl FlowTimeouts {
    pub(super) fn ticks(&self) -> TimeoutTicks {
        TimeoutTicks {
            tcp: [
                ticks(self.tcp_close),
                ticks(self.tcp_syn_sent),
                ticks(self.tcp_syn_recv),
                ticks(self.tcp_established),
                ticks(self.tcp_fin_wait),
                ticks(self.tcp_close_wait),
                ticks(self.tcp_last_ack),
                ticks(self.tcp_time_wait),
                ticks(self.tcp_close),
            ],
            udp_unreplied: ticks(self.udp_unreplied),
            udp_assured: ticks(self.udp_assured),
            icmp: ticks(self.icmp),
            other: ticks(self.other),
        }
    }
}

/// [`FlowTimeouts`] in ticks, as the sweep uses them.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimeoutTicks {
    /// By TCP state code (index 0 unused).
    tcp: [u32; 9],
    udp_unreplied: u32,
    udp_assured: u32,
    icmp: u32,
    other: u32,
}

impl TimeoutTicks {
    /// Idle ticks after which a flow in state `s` expires.
    #[inline]
    pub fn of(&self, s: StateWord) -> u32 {
        match s.l4() {
            L4::Tcp => self.tcp[s.tcp().map_or(0, |t| t as usize)],
            L4::Udp if s.assured() => self.udp_assured,
            L4::Udp => self.udp_unreplied,
            L4::Icmp => self.icmp,
            L4::Other => self.other,
        }
    }
}

/// Identifies the policy rule that decided a flow (for flow logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RuleId(pub u32);

/// A policy decision cached on a flow.
///
/// The generation is the policy generation it was decided under, kept
/// modulo 2^30: when policy changes, a flow whose verdict
/// [is not current](Verdict::is_current) goes through policy again on its
/// next packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub rule: RuleId,
    generation: u32,
}

impl Verdict {
    const VALID: u64 = 1 << 63;
    const ALLOWED: u64 = 1 << 62;
    const GEN_BITS: u32 = 30;
    const GEN_MASK: u64 = (1 << Self::GEN_BITS) - 1;

    pub fn new(allowed: bool, rule: RuleId, generation: u64) -> Verdict {
        Verdict {
            allowed,
            rule,
            generation: (generation & Self::GEN_MASK) as u32,
        }
    }

    /// Whether the verdict was decided under policy generation `generation`.
    #[inline]
    pub fn is_current(&self, generation: u64) -> bool {
        u64::from(self.generation) == generation & Self::GEN_MASK
    }

    /// The policy generation, modulo 2^30.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The packed word: 0 means no verdict.
    #[inline]
    pub(super) fn pack(v: Option<Verdict>) -> u64 {
        match v {
            None => 0,
            Some(v) => {
                Self::VALID
                    | if v.allowed { Self::ALLOWED } else { 0 }
                    | (u64::from(v.generation) << 32)
                    | u64::from(v.rule.0)
            }
        }
    }

    #[inline]
    pub(super) fn unpack(w: u64) -> Option<Verdict> {
        (w & Self::VALID != 0).then_some(Verdict {
            allowed: w & Self::ALLOWED != 0,
            rule: RuleId(w as u32),
            generation: ((w >> 32) & Self::GEN_MASK) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::Zone;
    use std::net::Ipv4Addr;

    fn key(proto: IpProtocol, swapped: bool) -> FlowKey {
        let lo = (Ipv4Addr::new(10, 0, 0, 1), 1000);
        let hi = (Ipv4Addr::new(10, 0, 0, 2), 80);
        if swapped {
            FlowKey::v4(Zone(0), proto, hi, lo)
        } else {
            FlowKey::v4(Zone(0), proto, lo, hi)
        }
    }

    #[test]
    fn verdict_packs() {
        assert_eq!(Verdict::unpack(Verdict::pack(None)), None);
        for allowed in [false, true] {
            let v = Verdict::new(allowed, RuleId(u32::MAX), (1 << 30) + 5);
            assert_eq!(Verdict::unpack(Verdict::pack(Some(v))), Some(v));
            assert!(v.is_current(5));
            assert!(v.is_current((1 << 30) + 5));
            assert!(!v.is_current(6));
            assert_eq!(v.generation(), 5);
        }
        // Deny by rule 0 under generation 0 is still a verdict.
        let v = Verdict::new(false, RuleId(0), 0);
        assert_eq!(Verdict::unpack(Verdict::pack(Some(v))), Some(v));
    }

    #[test]
    fn direction_follows_the_originator() {
        for swapped in [false, true] {
            let k = key(IpProtocol::UDP, swapped);
            let s = StateWord::initial(&k, TcpFlags::EMPTY).unwrap();
            assert_eq!(s.dir_of(k.swapped()), FlowDir::Original);
            assert_eq!(s.dir_of(k.reverse().swapped()), FlowDir::Reply);
        }
    }

    #[test]
    fn udp_becomes_assured_as_a_stream() {
        let k = key(IpProtocol::UDP, false);
        let s = StateWord::initial(&k, TcpFlags::EMPTY).unwrap();
        let t = FlowTimeouts::default().ticks();
        assert_eq!(t.of(s), ticks(Duration::from_secs(30)));
        let (s, _) = s.advance(FlowDir::Original, TcpFlags::EMPTY);
        assert!(!s.seen_reply());
        let (s, _) = s.advance(FlowDir::Reply, TcpFlags::EMPTY);
        assert!(s.seen_reply() && !s.assured());
        assert_eq!(t.of(s), ticks(Duration::from_secs(30)));
        let (s, _) = s.advance(FlowDir::Original, TcpFlags::EMPTY);
        assert!(s.assured());
        assert_eq!(t.of(s), ticks(Duration::from_secs(120)));
        assert_eq!(s.status().l4, L4State::Udp);
    }

    #[test]
    fn tcp_handshake_sets_assured_and_reopen_flips_originator() {
        let k = key(IpProtocol::TCP, true);
        assert_eq!(StateWord::initial(&k, TcpFlags::RST), None);
        let s = StateWord::initial(&k, TcpFlags::SYN).unwrap();
        assert_eq!(s.tcp(), Some(TcpState::SynSent));
        let (s, r) = s.advance(FlowDir::Reply, TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!((s.tcp(), r), (Some(TcpState::SynRecv), Tracked::Ok));
        assert!(!s.assured());
        let (s, _) = s.advance(FlowDir::Original, TcpFlags::ACK);
        assert_eq!(s.tcp(), Some(TcpState::Established));
        assert!(s.assured());
        let (s2, r) = s.advance(FlowDir::Original, TcpFlags::SYN);
        assert_eq!((s2, r), (s, Tracked::Ignored));
        let (s, _) = s.advance(FlowDir::Reply, TcpFlags::RST);
        assert_eq!(s.tcp(), Some(TcpState::Close));
        // The former responder opens a new connection on the same tuple.
        let (s, r) = s.advance(FlowDir::Reply, TcpFlags::SYN);
        assert_eq!(r, Tracked::Reopened);
        assert_eq!(s.tcp(), Some(TcpState::SynSent));
        assert!(!s.seen_reply() && !s.assured());
        assert_eq!(s.dir_of(k.reverse().swapped()), FlowDir::Original);
    }

    #[test]
    fn icmp_and_other_classes() {
        let k = key(IpProtocol::ICMP, false);
        let s = StateWord::initial(&k, TcpFlags::EMPTY).unwrap();
        assert_eq!(s.l4(), L4::Icmp);
        let t = FlowTimeouts::default().ticks();
        assert_eq!(t.of(s), ticks(Duration::from_secs(30)));
        let (s, _) = s.advance(FlowDir::Reply, TcpFlags::EMPTY);
        assert!(s.seen_reply() && !s.assured());
        let k = key(IpProtocol(47), false);
        let s = StateWord::initial(&k, TcpFlags::EMPTY).unwrap();
        assert_eq!(s.status().l4, L4State::Other);
        assert_eq!(t.of(s), ticks(Duration::from_secs(600)));
        // ICMPv6's number on an IPv4 key is just another protocol.
        assert_eq!(L4::of(&key(IpProtocol::ICMPV6, false)), L4::Other);
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::ZERO), 0);
        assert_eq!(ticks(Duration::from_nanos(1)), 1);
        assert_eq!(ticks(Duration::from_nanos(1 << 20)), 1);
        assert_eq!(tick(3 << 20), 3);
        assert_eq!(ticks_to_ns(2), 2 << 20);
        assert_eq!(idle_ticks(10, 4), 6);
        assert_eq!(idle_ticks(4, 10), 0, "seen after now");
        assert_eq!(idle_ticks(5, u32::MAX), 6, "across the wrap");
    }
}
