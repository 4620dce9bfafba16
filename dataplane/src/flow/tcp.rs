//! TCP connection tracking: the state machine a flow entry follows, with
//! the states and meaning of Linux conntrack (`nf_conntrack_proto_tcp`).
//!
//! A packet is reduced to one event (SYN, SYN-ACK, FIN, ACK, RST or
//! invalid) and its direction; the pair moves the connection along
//! RFC 9293's open and close sequences. As in conntrack with
//! `nf_conntrack_tcp_loose`, a bare ACK may pick up a connection already
//! established, and any RST closes. Sequence numbers and windows are not
//! checked (conntrack's `be_liberal`), so the states are what the flags
//! claim. The side that sent the first FIN is remembered so the close can
//! tell the two half-closes apart.

use caracal_wire::TcpFlags;

use super::key::FlowDir;

/// Where a tracked TCP connection is, as in Linux conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// The initiator's SYN was seen.
    SynSent = 1,
    /// The responder's SYN-ACK was seen.
    SynRecv = 2,
    /// The handshake completed (or a mid-stream ACK picked it up).
    Established = 3,
    /// One side sent a FIN.
    FinWait = 4,
    /// The other side acknowledged that FIN; it may still send data.
    CloseWait = 5,
    /// Both sides sent a FIN; the last ACK is outstanding.
    LastAck = 6,
    /// The last ACK was seen; lingering for late segments (2 MSL).
    TimeWait = 7,
    /// Reset; lingering briefly.
    Close = 8,
}

impl TcpState {
    pub const ALL: [TcpState; 8] = [
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];

    /// The state with code `code` (1..=8).
    pub(super) const fn from_code(code: u32) -> Option<TcpState> {
        Some(match code {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            _ => return None,
        })
    }

    /// conntrack's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// What a segment's flags amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TcpEvent {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    /// A combination no conforming stack sends (no flags, SYN with FIN or
    /// RST, data without ACK).
    Invalid,
}

impl TcpEvent {
    #[inline]
    pub fn classify(flags: TcpFlags) -> TcpEvent {
        let syn = flags.contains(TcpFlags::SYN);
        let fin = flags.contains(TcpFlags::FIN);
        let rst = flags.contains(TcpFlags::RST);
        let ack = flags.contains(TcpFlags::ACK);
        match (syn, fin, rst) {
            (true, false, false) if ack => TcpEvent::SynAck,
            (true, false, false) => TcpEvent::Syn,
            (true, _, _) => TcpEvent::Invalid,
            (false, _, true) => TcpEvent::Rst,
            // RFC 9293 §3.10.7: every segment after the SYN carries ACK.
            (false, true, false) if ack => TcpEvent::Fin,
            (false, false, false) if ack => TcpEvent::Ack,
            _ => TcpEvent::Invalid,
        }
    }
}

/// What a segment does to a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TcpStep {
    /// Valid: the connection is now in `state`; `closer` is the direction
    /// of the first FIN (meaningful from `FinWait` on).
    Move { state: TcpState, closer: FlowDir },
    /// Harmless but out of place (a retransmitted SYN on an established
    /// connection): let through without refreshing the timeout.
    Ignore,
    /// Does not fit the connection (conntrack's INVALID).
    Invalid,
    /// A SYN on a closed or closing connection: a new connection reusing
    /// the tuple, opened by the sender of the SYN.
    Reopen,
}

/// The state a connection starts in when `event` is its first segment, or
/// `None` when that segment cannot open one.
#[inline]
pub(super) fn initial(event: TcpEvent) -> Option<TcpState> {
    match event {
        TcpEvent::Syn => Some(TcpState::SynSent),
        // Mid-stream pickup (conntrack's `tcp_loose`), e.g. after a restart.
        TcpEvent::Ack => Some(TcpState::Established),
        _ => None,
    }
}

/// Moves a connection in `state` (first FIN from `closer`) by `event`
/// travelling in direction `dir`.
#[inline]
pub(super) fn step(state: TcpState, closer: FlowDir, dir: FlowDir, event: TcpEvent) -> TcpStep {
    use TcpEvent as E;
    use TcpState as S;
    let to = |state| TcpStep::Move { state, closer };
    let from_peer = dir != closer;
    match (state, event) {
        (_, E::Invalid) => TcpStep::Invalid,
        (_, E::Rst) => to(S::Close),
        (S::TimeWait | S::Close, E::Syn) => TcpStep::Reopen,

        (S::SynSent, E::Syn) if dir == FlowDir::Original => to(S::SynSent),
        // Simultaneous open (RFC 9293 §3.5, figure 8).
        (S::SynSent, E::Syn) => to(S::SynRecv),
        (S::SynSent, E::SynAck) if dir == FlowDir::Reply => to(S::SynRecv),
        (S::SynSent, _) => TcpStep::Invalid,

        (S::SynRecv, E::Syn | E::SynAck) => to(S::SynRecv),
        (S::SynRecv, E::Ack) => to(S::Established),
        (S::SynRecv, E::Fin) => TcpStep::Move {
            state: S::FinWait,
            closer: dir,
        },

        (S::Established, E::Ack) => to(S::Established),
        (S::Established, E::Fin) => TcpStep::Move {
            state: S::FinWait,
            closer: dir,
        },

        (S::FinWait, E::Fin) if from_peer => to(S::LastAck),
        (S::FinWait, E::Ack) if from_peer => to(S::CloseWait),
        (S::FinWait, E::Fin | E::Ack) => to(S::FinWait),

        (S::CloseWait, E::Fin) if from_peer => to(S::LastAck),
        (S::CloseWait, E::Fin | E::Ack) => to(S::CloseWait),

        (S::LastAck, E::Ack) => to(S::TimeWait),
        (S::LastAck, E::Fin) => to(S::LastAck),

        (S::TimeWait, E::Fin | E::Ack) => to(S::TimeWait),
        (S::Close, E::Fin | E::Ack) => to(S::Close),
        (S::Close, E::SynAck) => TcpStep::Invalid,

        // A handshake segment on a connection past its handshake:
        // retransmissions and keepalive oddities.
        (
            S::Established | S::FinWait | S::CloseWait | S::LastAck | S::TimeWait,
            E::Syn | E::SynAck,
        ) => TcpStep::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FlowDir::{Original as O, Reply as R};
    use TcpState as S;

    const SYN: TcpFlags = TcpFlags::SYN;
    const ACK: TcpFlags = TcpFlags::ACK;
    const FIN: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
    const RST: TcpFlags = TcpFlags::RST;
    const SYNACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);

    /// Runs segments from the first one; returns every state reached.
    fn run(segments: &[(FlowDir, TcpFlags)]) -> Vec<TcpStep> {
        let (first_dir, first) = segments[0];
        assert_eq!(first_dir, O);
        let mut state = initial(TcpEvent::classify(first)).expect("opening segment");
        let mut closer = O;
        let mut out = vec![TcpStep::Move { state, closer }];
        for &(dir, flags) in &segments[1..] {
            let s = step(state, closer, dir, TcpEvent::classify(flags));
            if let TcpStep::Move {
                state: st,
                closer: c,
            } = s
            {
                state = st;
                closer = c;
            }
            out.push(s);
        }
        out
    }

    fn states(steps: &[TcpStep]) -> Vec<TcpState> {
        steps
            .iter()
            .map(|s| match s {
                TcpStep::Move { state, .. } => *state,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn classify() {
        assert_eq!(TcpEvent::classify(SYN), TcpEvent::Syn);
        assert_eq!(TcpEvent::classify(SYNACK), TcpEvent::SynAck);
        assert_eq!(TcpEvent::classify(FIN), TcpEvent::Fin);
        assert_eq!(TcpEvent::classify(ACK | TcpFlags::PSH), TcpEvent::Ack);
        assert_eq!(TcpEvent::classify(RST), TcpEvent::Rst);
        assert_eq!(TcpEvent::classify(RST | ACK), TcpEvent::Rst);
        assert_eq!(TcpEvent::classify(TcpFlags::EMPTY), TcpEvent::Invalid);
        assert_eq!(TcpEvent::classify(SYN | TcpFlags::FIN), TcpEvent::Invalid);
        assert_eq!(TcpEvent::classify(SYN | RST), TcpEvent::Invalid);
        assert_eq!(TcpEvent::classify(TcpFlags::FIN), TcpEvent::Invalid);
        assert_eq!(TcpEvent::classify(TcpFlags::PSH), TcpEvent::Invalid);
    }

    #[test]
    fn handshake_data_and_active_close() {
        let steps = run(&[
            (O, SYN),
            (R, SYNACK),
            (O, ACK),
            (O, ACK | TcpFlags::PSH),
            (R, ACK),
            (O, FIN),
            (R, ACK),
            (R, FIN),
            (O, ACK),
        ]);
        assert_eq!(
            states(&steps),
            [
                S::SynSent,
                S::SynRecv,
                S::Established,
                S::Established,
                S::Established,
                S::FinWait,
                S::CloseWait,
                S::LastAck,
                S::TimeWait
            ]
        );
    }

    #[test]
    fn passive_close_and_combined_fin_ack() {
        // The responder closes first, and the initiator answers FIN+ACK at once.
        let steps = run(&[(O, ACK), (R, FIN), (O, FIN), (R, ACK)]);
        assert_eq!(
            states(&steps),
            [S::Established, S::FinWait, S::LastAck, S::TimeWait]
        );
        // A retransmitted FIN from the closer does not count as the peer's.
        let steps = run(&[(O, ACK), (R, FIN), (R, FIN), (R, ACK)]);
        assert_eq!(
            states(&steps),
            [S::Established, S::FinWait, S::FinWait, S::FinWait]
        );
    }

    #[test]
    fn rst_closes_from_any_state() {
        for s in S::ALL {
            for dir in [O, R] {
                assert_eq!(
                    step(s, O, dir, TcpEvent::Rst),
                    TcpStep::Move {
                        state: S::Close,
                        closer: O
                    }
                );
            }
        }
    }

    #[test]
    fn syn_reopens_closed_connections_only() {
        assert_eq!(step(S::TimeWait, O, R, TcpEvent::Syn), TcpStep::Reopen);
        assert_eq!(step(S::Close, O, O, TcpEvent::Syn), TcpStep::Reopen);
        assert_eq!(step(S::Established, O, O, TcpEvent::Syn), TcpStep::Ignore);
        assert_eq!(step(S::FinWait, O, R, TcpEvent::SynAck), TcpStep::Ignore);
    }

    #[test]
    fn handshake_out_of_order() {
        // Only the responder may answer a SYN with a SYN-ACK.
        assert_eq!(step(S::SynSent, O, O, TcpEvent::SynAck), TcpStep::Invalid);
        assert_eq!(step(S::SynSent, O, O, TcpEvent::Ack), TcpStep::Invalid);
        assert_eq!(step(S::SynSent, O, R, TcpEvent::Fin), TcpStep::Invalid);
        // Retransmitted SYN and simultaneous open.
        assert_eq!(
            states(&run(&[(O, SYN), (O, SYN)])),
            [S::SynSent, S::SynSent]
        );
        assert_eq!(
            states(&run(&[
                (O, SYN),
                (R, SYN),
                (R, SYNACK),
                (O, SYNACK),
                (O, ACK)
            ])),
            [
                S::SynSent,
                S::SynRecv,
                S::SynRecv,
                S::SynRecv,
                S::Established
            ]
        );
        assert_eq!(initial(TcpEvent::SynAck), None);
        assert_eq!(initial(TcpEvent::Fin), None);
        assert_eq!(initial(TcpEvent::Rst), None);
        assert_eq!(
            step(S::Established, O, O, TcpEvent::Invalid),
            TcpStep::Invalid
        );
    }

    #[test]
    fn codes_round_trip() {
        for s in S::ALL {
            assert_eq!(TcpState::from_code(s as u32), Some(s));
        }
        assert_eq!(TcpState::from_code(0), None);
        assert_eq!(TcpState::from_code(9), None);
        assert_eq!(S::TimeWait.name(), "TIME_WAIT");
    }
}
