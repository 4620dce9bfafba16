//! The receive side: counts what arrives, tracks each stream's sequence
//! numbers, and records one-way latency from the payload's TX timestamp
//! (the clock is `CLOCK_MONOTONIC`, so the sink must run on the sending
//! host) into an HDR histogram.

use hdrhistogram::Histogram;

use super::builder::{payload_offset, PayloadHeader, PAYLOAD_HEADER_LEN, PAYLOAD_PATTERN};
use super::sequence::SequenceTracker;

/// Highest latency the histogram resolves, ns (an hour); above saturates.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// What the receive side has seen of one run.
#[derive(Debug, Clone)]
pub struct Sink {
    run: u16,
    /// Our packets of this run.
    pub seq: SequenceTracker,
    /// Bytes of our packets of this run.
    pub bytes: u64,
    /// Frames without our header.
    pub foreign: u64,
    /// Our frames from another run (a previous trial's stragglers).
    pub stale: u64,
    /// Our frames of this run whose payload is not the generator's
    /// pattern (cut, padded, reassembled wrongly); still counted in `seq`.
    pub corrupt: u64,
    /// One-way latency, ns.
    pub latency: Histogram<u64>,
    /// Clock at the first and the latest of our packets, ns.
    pub first_ns: Option<u64>,
    pub last_ns: u64,
}

impl Sink {
    /// A sink for run `run` expecting `streams` streams (more are
    /// tracked as they show up).
    pub fn new(run: u16, streams: u32) -> Self {
        Sink {
            run,
            seq: SequenceTracker::new(streams),
            bytes: 0,
            foreign: 0,
            stale: 0,
            corrupt: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("valid histogram bounds"),
            first_ns: None,
            last_ns: 0,
        }
    }

    /// Accounts one received frame at time `now_ns`.
    #[inline]
    pub fn record(&mut self, frame: &[u8], now_ns: u64) {
        let Some((at, h)) = payload_offset(frame).and_then(|at| {
            frame
                .get(at..)
                .and_then(PayloadHeader::parse)
                .map(|h| (at, h))
        }) else {
            self.foreign += 1;
            return;
        };
        if h.run != self.run {
            self.stale += 1;
            return;
        }
        if !self.seq.record(h.stream, h.seq) {
            self.foreign += 1;
            return;
        }
        // The payload past the header, compared with what was sent: one
        // memcmp, at most one frame long.
        let rest = at + PAYLOAD_HEADER_LEN;
        if !ip_length_matches(frame) || PAYLOAD_PATTERN.get(rest..frame.len()) != frame.get(rest..)
        {
            self.corrupt += 1;
        }
        self.bytes += frame.len() as u64;
        self.first_ns.get_or_insert(now_ns);
        self.last_ns = now_ns;
        self.latency
            .saturating_record(now_ns.saturating_sub(h.tx_ns).max(1));
    }
}

/// Whether the IP header's length accounts for the whole frame (a frame
/// cut short or padded does not). `payload_offset` checked the
/// ethertype and that the headers are there.
#[inline]
fn ip_length_matches(frame: &[u8]) -> bool {
    let field = |at: usize| usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    match frame[12..14] {
        // IPv4 total length (RFC 791), IPv6 payload length (RFC 8200).
        [0x08, 0x00] => field(16) + 14 == frame.len(),
        _ => field(18) + 54 == frame.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::builder::{Templates, TrafficSpec, MAX_FRAME};

    #[test]
    fn counts_sequences_and_latency_of_our_frames_only() {
        let spec = TrafficSpec {
            flows: 4,
            ..TrafficSpec::default()
        };
        let t = Templates::build(&spec, MAX_FRAME).unwrap();
        let mut sink = Sink::new(7, 4);
        let mut buf = PAYLOAD_PATTERN[..64].to_vec();
        let frame = |buf: &mut Vec<u8>, run, flow, seq, tx_ns| {
            t.stamp(
                0,
                flow,
                &PayloadHeader {
                    run,
                    stream: flow,
                    seq,
                    tx_ns,
                },
                buf,
            );
            buf.clone()
        };
        for seq in 0..10 {
            for flow in 0..4 {
                if (flow, seq) == (2, 5) {
                    continue; // lost
                }
                sink.record(
                    &frame(&mut buf, 7, flow, seq, 1_000),
                    1_000 + 500 * u64::from(flow + 1),
                );
            }
        }
        sink.record(&frame(&mut buf, 6, 0, 100, 0), 2_000);
        sink.record(&[0u8; 60], 2_000);
        assert_eq!(sink.seq.received, 39);
        assert_eq!(sink.seq.lost, 1);
        assert_eq!(sink.seq.lost_given_sent(40), 1);
        assert_eq!((sink.stale, sink.foreign, sink.corrupt), (1, 1, 0));
        assert_eq!(sink.bytes, 39 * 64);
        assert_eq!(sink.latency.len(), 39);
        assert_eq!(sink.latency.min(), 500);
        assert!(sink.latency.max() >= 2_000 && sink.latency.max() < 2_010);
        // A payload byte changed, or the frame cut: corrupt.
        let mut bad = frame(&mut buf, 7, 0, 10, 1_000);
        bad[63] ^= 1;
        sink.record(&bad, 3_000);
        let cut = frame(&mut buf, 7, 1, 10, 1_000);
        sink.record(&cut[..63], 3_000);
        assert_eq!(sink.corrupt, 1 + 1);
    }
}
