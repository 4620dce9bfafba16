//! Per-stream sequence tracking: how many packets were lost, arrived out
//! of order, or arrived twice.
//!
//! Each stream remembers the highest sequence number seen (as `next`, one
//! past it) and a 64-bit window of which of the 64 numbers below `next`
//! arrived. A number above `next` counts the gap as lost; a number inside
//! the window that was not seen yet is a reordered packet (taken back out
//! of the lost count), one that was is a duplicate. A number more than 64
//! behind cannot be told apart and counts as reordered. Numbers are
//! 32-bit and compared with wrapping arithmetic; every stream starts at 0.
//!
//! Gap counting cannot see packets lost after a stream's last arrival;
//! [`SequenceTracker::lost_given_sent`] uses the sender's count instead.

/// Bits of history kept per stream.
const WINDOW: u32 = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// One past the highest sequence number seen.
    next: u32,
    started: bool,
    /// Bit `k`: `next - 1 - k` arrived.
    window: u64,
}

/// Sequence state of every stream, and the totals.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    streams: Vec<Stream>,
    /// Packets seen (duplicates included).
    pub received: u64,
    /// Gaps not (yet) filled by a late packet.
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
}

/// Streams tracked at most; a higher id in a packet is not ours.
pub const MAX_STREAMS: u32 = 1 << 24;

impl SequenceTracker {
    pub fn new(streams: u32) -> Self {
        SequenceTracker {
            streams: vec![Stream::default(); streams as usize],
            ..Default::default()
        }
    }

    /// Packets counted once each.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Loss when the sender's total is known: what was sent and never
    /// arrived, tail losses included.
    pub fn lost_given_sent(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique())
    }

    /// Records packet `seq` of `stream`. Returns false (and records
    /// nothing) for a stream id above [`MAX_STREAMS`].
    #[inline]
    pub fn record(&mut self, stream: u32, seq: u32) -> bool {
        let i = stream as usize;
        if i >= self.streams.len() {
            if stream >= MAX_STREAMS {
                return false;
            }
            self.streams.resize(i + 1, Stream::default());
        }
        self.received += 1;
        let s = &mut self.streams[i];
        if !s.started {
            s.started = true;
            s.next = seq.wrapping_add(1);
            s.window = 1;
            // Numbers start at 0: anything before the first arrival is
            // missing so far.
            self.lost += u64::from(seq);
            return true;
        }
        let ahead = seq.wrapping_sub(s.next) as i32;
        if ahead >= 0 {
            let gap = ahead as u32;
            self.lost += u64::from(gap);
            let shift = gap + 1;
            s.window = if shift >= WINDOW {
                0
            } else {
                s.window << shift
            } | 1;
            s.next = seq.wrapping_add(1);
        } else {
            let behind = s.next.wrapping_sub(seq).wrapping_sub(1);
            if behind < WINDOW {
                let bit = 1u64 << behind;
                if s.window & bit != 0 {
                    self.duplicates += 1;
                    return true;
                }
                s.window |= bit;
            }
            self.reordered += 1;
            self.lost = self.lost.saturating_sub(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u32]) -> SequenceTracker {
        let mut t = SequenceTracker::new(1);
        for &s in seqs {
            assert!(t.record(0, s));
        }
        t
    }

    #[test]
    fn in_order_is_clean() {
        let t = feed(&(0..1000).collect::<Vec<_>>());
        assert_eq!(
            (t.received, t.lost, t.reordered, t.duplicates),
            (1000, 0, 0, 0)
        );
        assert_eq!(t.lost_given_sent(1000), 0);
        assert_eq!(
            t.lost_given_sent(1010),
            10,
            "tail loss from the sender's count"
        );
    }

    #[test]
    fn gaps_are_lost() {
        let t = feed(&[0, 1, 5, 6, 10]);
        assert_eq!((t.lost, t.reordered, t.duplicates), (6, 0, 0));
        let t = feed(&[3, 4]);
        assert_eq!(t.lost, 3, "the first packets never came");
    }

    #[test]
    fn late_packets_are_reordered_not_lost() {
        let t = feed(&[0, 2, 1, 3, 6, 4, 5]);
        assert_eq!(
            (t.received, t.lost, t.reordered, t.duplicates),
            (7, 0, 3, 0)
        );
        assert_eq!(t.unique(), 7);
    }

    #[test]
    fn repeats_are_duplicates() {
        let t = feed(&[0, 1, 1, 2, 0, 2, 3]);
        assert_eq!(
            (t.received, t.lost, t.reordered, t.duplicates),
            (7, 0, 0, 3)
        );
        assert_eq!(t.unique(), 4);
        assert_eq!(t.lost_given_sent(4), 0);
    }

    #[test]
    fn reorder_and_duplicate_inside_the_window_edge() {
        // 100 numbers skipped then filled in backwards: those within 64
        // of the top are tracked exactly; older ones count as reordered.
        let mut seqs: Vec<u32> = vec![0, 101];
        seqs.extend((1..=100).rev());
        seqs.push(100); // a duplicate inside the window
        let t = feed(&seqs);
        assert_eq!(t.lost, 0);
        assert_eq!(t.reordered, 100);
        assert_eq!(t.duplicates, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = SequenceTracker::new(1);
        t.record(0, 0);
        t.streams[0].next = u32::MAX - 1;
        t.streams[0].window = 1;
        for s in [u32::MAX - 1, u32::MAX, 0, u32::MAX, 1] {
            t.record(0, s);
        }
        assert_eq!((t.lost, t.reordered, t.duplicates), (0, 0, 1));
    }

    #[test]
    fn streams_are_independent_and_grow_on_demand() {
        let mut t = SequenceTracker::new(0);
        for s in 0..10 {
            t.record(7, s);
            t.record(3, s * 2);
        }
        assert_eq!(t.received, 20);
        assert_eq!(t.lost, 9, "stream 3 skipped every other number");
        assert!(!t.record(MAX_STREAMS, 0));
    }
}
