//! Offered load: rates, their units, and the token bucket that paces
//! bursts against a nanosecond clock.
//!
//! Bits per second are counted on the wire (layer 1): each frame costs
//! its length plus [`L1_OVERHEAD`] bytes (4 B FCS, which the frames we
//! hand to a port do not include, and 20 B of preamble, SFD and
//! inter-frame gap), so 10 Gbit/s of 64-byte frames is 14.2 Mpps.

use std::time::Duration;

/// Bytes a frame costs on the wire beyond what we hand the port:
/// FCS (4) + preamble and SFD (8) + inter-frame gap (12).
pub const L1_OVERHEAD: u64 = 24;

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the port takes packets.
    Line,
    /// Packets per second.
    Pps(f64),
    /// Layer-1 bits per second.
    Bps(f64),
}

impl Rate {
    /// Packets per second for frames of `mean_frame` bytes on average;
    /// `None` for line rate.
    pub fn pps(&self, mean_frame: f64) -> Option<f64> {
        match *self {
            Rate::Line => None,
            Rate::Pps(p) => Some(p),
            Rate::Bps(b) => Some(b / ((mean_frame + L1_OVERHEAD as f64) * 8.0)),
        }
    }

    /// Parses `line`, `2Mpps`, `500kpps`, `1000pps`, `1000` (pps),
    /// `10Gbps`, `2.5Gbit`, `100Mbps`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("line") || t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Line);
        }
        let lower = t.to_ascii_lowercase();
        let (number, unit) = split_number(&lower);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("rate {s:?}: expected e.g. 2Mpps, 10Gbps or line"))?;
        if !(value > 0.0 && value.is_finite()) {
            return Err(format!("rate {s:?} must be positive"));
        }
        let (scale, bits) = match unit {
            "" | "pps" => (1.0, false),
            "kpps" => (1e3, false),
            "mpps" => (1e6, false),
            "gpps" => (1e9, false),
            "bps" | "bit" => (1.0, true),
            "kbps" | "kbit" => (1e3, true),
            "mbps" | "mbit" => (1e6, true),
            "gbps" | "gbit" => (1e9, true),
            _ => return Err(format!("rate {s:?}: unknown unit {unit:?}")),
        };
        Ok(if bits {
            Rate::Bps(value * scale)
        } else {
            Rate::Pps(value * scale)
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Rate::Line => f.write_str("line"),
            Rate::Pps(p) => write!(f, "{}pps", p),
            Rate::Bps(b) => write!(f, "{}bps", b),
        }
    }
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (s[..end].trim(), s[end..].trim())
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `250us`, or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (number, unit) = split_number(&lower);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration {s:?}: expected e.g. 10s or 500ms"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration {s:?}: {e}"))
}

/// Parses a count with an optional `k`/`M`/`G` suffix (`1M` = 10^6).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (number, unit) = split_number(&lower);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("count {s:?}: expected e.g. 1000 or 5M"))?;
    let scale = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        _ => return Err(format!("count {s:?}: unknown suffix {unit:?}")),
    };
    Ok((value * scale).round() as u64)
}

/// A token bucket on an absolute schedule: by time `t` it has granted
/// `pps × (t − origin)` packets, minus what the sender gave back, and it
/// never lets more than `max_credit` packets of backlog build up (a sender
/// that fell behind is not allowed to catch up in one huge burst).
///
/// Grants come in batches of at least [`batch`](Self::batch) packets
/// (fewer only when fewer are wanted): a burst per poll of one packet
/// would cost the port a ring update per packet.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Packets per nanosecond.
    per_ns: f64,
    origin_ns: u64,
    granted: u64,
    max_credit: u64,
    batch: u64,
}

/// The longest a batch may take to come due, ns: batches are as large as
/// the rate fills in this time (up to a burst), so pacing stays smooth at
/// low rates and bursts stay full at high ones.
pub const BATCH_WINDOW_NS: f64 = 10_000.0;

impl RateLimiter {
    /// Paces `pps` packets per second from `now_ns`, allowing at most
    /// `max_credit` packets at once.
    pub fn new(pps: f64, now_ns: u64, max_credit: u64) -> Self {
        RateLimiter {
            per_ns: pps / 1e9,
            origin_ns: now_ns,
            granted: 0,
            max_credit: max_credit.max(1),
            batch: 1,
        }
    }

    /// Grants at least `batch` packets at a time (capped at `max_credit`).
    pub fn with_batch(mut self, batch: u64) -> Self {
        self.batch = batch.clamp(1, self.max_credit);
        self
    }

    /// The batch for `pps` and bursts of `burst`: what comes due in
    /// [`BATCH_WINDOW_NS`], between 1 and `burst`.
    pub fn batch_for(pps: f64, burst: u64) -> u64 {
        ((pps * BATCH_WINDOW_NS / 1e9).ceil() as u64).clamp(1, burst.max(1))
    }

    /// How many of `want` packets may go now.
    #[inline]
    pub fn grant(&mut self, now_ns: u64, want: u64) -> u64 {
        let due = (now_ns.saturating_sub(self.origin_ns) as f64 * self.per_ns) as u64;
        if due > self.granted + self.max_credit {
            // Fell behind (the port pushed back, or we were descheduled):
            // forget the backlog beyond one credit.
            self.granted = due - self.max_credit;
        }
        let credit = due.saturating_sub(self.granted);
        if credit < self.batch.min(want) {
            return 0;
        }
        let n = credit.min(want);
        self.granted += n;
        n
    }

    /// Gives back `n` granted packets the port did not take.
    #[inline]
    pub fn refund(&mut self, n: u64) {
        self.granted = self.granted.saturating_sub(n);
    }

    /// Nanoseconds until at least one packet is due, from `now_ns`.
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        let next = (self.granted + 1) as f64 / self.per_ns;
        (self.origin_ns as f64 + next - now_ns as f64).max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(Rate::parse("line"), Ok(Rate::Line));
        assert_eq!(Rate::parse("2Mpps"), Ok(Rate::Pps(2e6)));
        assert_eq!(Rate::parse("500kpps"), Ok(Rate::Pps(5e5)));
        assert_eq!(Rate::parse("1000"), Ok(Rate::Pps(1000.0)));
        assert_eq!(Rate::parse("10Gbps"), Ok(Rate::Bps(1e10)));
        assert_eq!(Rate::parse("2.5gbit"), Ok(Rate::Bps(2.5e9)));
        assert!(Rate::parse("fast").is_err());
        assert!(Rate::parse("0pps").is_err());
        assert!(Rate::parse("3furlongs").is_err());
    }

    #[test]
    fn bits_per_second_count_the_wire() {
        // 10G of 64-byte frames: 88 bytes on the wire each.
        let pps = Rate::Bps(1e10).pps(64.0).unwrap();
        assert!((pps - 1e10 / (88.0 * 8.0)).abs() < 1.0);
        assert_eq!(Rate::Line.pps(64.0), None);
    }

    #[test]
    fn durations_and_counts_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_count("5M"), Ok(5_000_000));
        assert_eq!(parse_count("1000"), Ok(1000));
        assert_eq!(parse_count("2k"), Ok(2000));
    }

    /// Drives the limiter with a simulated clock that advances by random
    /// steps, asking for a burst each time.
    fn simulate(pps: f64, seconds: u64, max_step_ns: u64, seed: u64) -> u64 {
        let mut rng = Rng(seed);
        let mut now = 1_000_000;
        let end = now + seconds * 1_000_000_000;
        let mut l = RateLimiter::new(pps, now, 64);
        let mut sent = 0;
        while now < end {
            sent += l.grant(now, 32);
            now += 1 + rng.next_u64() % max_step_ns;
        }
        sent
    }

    #[test]
    fn the_limiter_grants_the_rate_over_a_simulated_clock() {
        for (pps, step) in [
            (1e6, 3_000),
            (1e6, 200),
            (14.88e6, 1_500),
            (1000.0, 100_000),
        ] {
            let sent = simulate(pps, 2, step, 42);
            let want = 2.0 * pps;
            // Off by at most one burst of credit at the end.
            assert!(
                (sent as f64 - want).abs() <= 64.0 + 1.0,
                "{pps} pps, steps up to {step} ns: {sent} packets in 2 s"
            );
        }
    }

    #[test]
    fn a_stalled_sender_does_not_catch_up_in_one_burst() {
        let mut l = RateLimiter::new(1e6, 0, 64);
        assert_eq!(l.grant(1_000, 1000), 1);
        // 10 ms stall: 10 000 packets due, only one credit granted.
        assert_eq!(l.grant(10_001_000, 1_000_000), 64);
        assert_eq!(l.grant(10_001_000, 1_000_000), 0);
        assert_eq!(l.grant(10_002_000, 1_000_000), 1);
    }

    #[test]
    fn batches_wait_for_enough_credit_without_losing_rate() {
        assert_eq!(RateLimiter::batch_for(2e6, 32), 20);
        assert_eq!(RateLimiter::batch_for(100e6, 32), 32);
        assert_eq!(RateLimiter::batch_for(1000.0, 32), 1);
        let mut l = RateLimiter::new(2e6, 0, 64).with_batch(20);
        assert_eq!(l.grant(5_000, 32), 0, "10 due, batch of 20");
        assert_eq!(l.grant(10_000, 32), 20);
        assert_eq!(l.grant(10_000, 5), 0);
        assert_eq!(l.grant(12_500, 5), 5, "a smaller want needs less credit");
        let mut rng = Rng(9);
        let (mut now, mut sent) = (0u64, 0u64);
        let mut l = RateLimiter::new(2e6, 0, 64).with_batch(20);
        while now < 1_000_000_000 {
            let n = l.grant(now, 32);
            assert!(n == 0 || n >= 20);
            sent += n;
            now += 1 + rng.next_u64() % 2_000;
        }
        assert!((sent as f64 - 2e6).abs() <= 65.0, "{sent}");
    }

    #[test]
    fn refunds_are_granted_again() {
        let mut l = RateLimiter::new(1e6, 0, 64);
        assert_eq!(l.grant(32_000, 32), 32);
        l.refund(10);
        assert_eq!(l.grant(32_000, 32), 10);
        assert!(l.wait_ns(32_000) <= 1_000);
    }
}
