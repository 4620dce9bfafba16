//! RFC 2544 §26.1-style throughput search: the highest offered rate
//! whose trial loses nothing (NDR, non-drop rate) and the highest that
//! loses at most a given fraction (PDR, partial-drop rate; 0.5 % by
//! default), each to a given resolution.
//!
//! The search is a pure function of a `trial(rate) -> TrialResult`
//! closure, so it is tested against a deterministic model of a device.
//! It first tries the maximum rate; then it bisects between the highest
//! rate that passed and the lowest rate above it that failed, using every
//! trial run so far (the PDR search runs first, and its trials already
//! bound the NDR). A noisy device whose loss is not monotonic in the rate
//! still terminates: the interval only shrinks.

use serde::Serialize;

/// What to search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchConfig {
    /// Highest rate tried, packets per second.
    pub max_pps: f64,
    /// Below this rate the search gives up (no NDR/PDR found).
    pub min_pps: f64,
    /// Stop when the bracket is this narrow, packets per second.
    pub resolution_pps: f64,
    /// PDR loss tolerance, a fraction (0.005 = 0.5 %).
    pub pdr_loss: f64,
    /// Upper bound on trials per criterion (a safety net).
    pub max_trials: u32,
}

impl SearchConfig {
    /// Resolution of 1 % of `max_pps`, PDR at 0.5 % loss.
    pub fn new(max_pps: f64) -> Self {
        SearchConfig {
            max_pps,
            min_pps: max_pps / 1000.0,
            resolution_pps: max_pps / 100.0,
            pdr_loss: 0.005,
            max_trials: 40,
        }
    }
}

/// The outcome of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrialResult {
    /// Offered rate, packets per second.
    pub offered_pps: f64,
    /// Rate the generator actually reached, packets per second.
    pub achieved_pps: f64,
    pub tx_packets: u64,
    /// Packets received once (duplicates not counted).
    pub rx_packets: u64,
}

impl TrialResult {
    /// Fraction of sent packets that did not arrive (0 when nothing was
    /// sent).
    pub fn loss_ratio(&self) -> f64 {
        if self.tx_packets == 0 {
            return 0.0;
        }
        self.tx_packets.saturating_sub(self.rx_packets) as f64 / self.tx_packets as f64
    }

    /// Whether the trial counts as passing with loss tolerance `max_loss`:
    /// it sent something and lost at most that fraction (NDR: zero).
    pub fn passes(&self, max_loss: f64) -> bool {
        self.tx_packets > 0
            && if max_loss == 0.0 {
                self.rx_packets >= self.tx_packets
            } else {
                self.loss_ratio() <= max_loss
            }
    }
}

/// NDR, PDR and every trial, in the order run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchOutcome {
    /// The highest passing trial for zero loss.
    pub ndr: Option<TrialResult>,
    /// The highest passing trial for `pdr_loss`.
    pub pdr: Option<TrialResult>,
    pub trials: Vec<TrialResult>,
}

/// Runs the NDR/PDR search, calling `trial` with offered rates in pps.
pub fn search(cfg: &SearchConfig, mut trial: impl FnMut(f64) -> TrialResult) -> SearchOutcome {
    let mut trials = Vec::new();
    let pdr = bisect(cfg, cfg.pdr_loss, &mut trials, &mut trial);
    let ndr = if cfg.pdr_loss == 0.0 {
        pdr
    } else {
        bisect(cfg, 0.0, &mut trials, &mut trial)
    };
    SearchOutcome { ndr, pdr, trials }
}

/// The highest passing trial for `max_loss`, narrowing the bracket that
/// `trials` (shared between criteria) already gives.
fn bisect(
    cfg: &SearchConfig,
    max_loss: f64,
    trials: &mut Vec<TrialResult>,
    trial: &mut impl FnMut(f64) -> TrialResult,
) -> Option<TrialResult> {
    if !trials.iter().any(|t| t.offered_pps >= cfg.max_pps) {
        trials.push(trial(cfg.max_pps));
    }
    for _ in 0..cfg.max_trials {
        let best = trials
            .iter()
            .filter(|t| t.passes(max_loss))
            .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
            .copied();
        let lo = best.map_or(0.0, |t| t.offered_pps);
        let hi = trials
            .iter()
            .filter(|t| !t.passes(max_loss) && t.offered_pps > lo)
            .map(|t| t.offered_pps)
            .min_by(f64::total_cmp);
        let Some(hi) = hi else {
            // Nothing above the best failed: the maximum passed.
            return best;
        };
        if hi - lo <= cfg.resolution_pps {
            return best;
        }
        let mid = (lo + hi) / 2.0;
        if mid < cfg.min_pps {
            return best;
        }
        trials.push(trial(mid));
    }
    trials
        .iter()
        .filter(|t| t.passes(max_loss))
        .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that forwards up to `capacity` pps and drops the excess,
    /// plus `floor` (a fraction) of everything above `lossy_from` pps.
    fn device(capacity: f64, lossy_from: f64, floor: f64) -> impl FnMut(f64) -> TrialResult {
        move |rate| {
            let tx = (rate * 10.0).round() as u64;
            let mut rx = (rate.min(capacity) * 10.0).round() as u64;
            if rate > lossy_from {
                rx -= (rx as f64 * floor).ceil() as u64;
            }
            TrialResult {
                offered_pps: rate,
                achieved_pps: rate,
                tx_packets: tx,
                rx_packets: rx,
            }
        }
    }

    #[test]
    fn finds_ndr_and_pdr_of_a_capacity_limited_device() {
        let cfg = SearchConfig::new(10e6);
        let out = search(&cfg, device(3e6, f64::INFINITY, 0.0));
        let ndr = out.ndr.unwrap().offered_pps;
        let pdr = out.pdr.unwrap().offered_pps;
        assert!(ndr <= 3e6 && ndr > 3e6 - cfg.resolution_pps, "ndr {ndr}");
        // 0.5 % loss: offered up to capacity / 0.995.
        let pdr_true = 3e6 / 0.995;
        assert!(
            pdr <= pdr_true && pdr > pdr_true - cfg.resolution_pps,
            "pdr {pdr}"
        );
        assert!(ndr <= pdr);
        // About log2(max / resolution) trials per criterion.
        assert!(out.trials.len() <= 16, "{} trials", out.trials.len());
        assert_eq!(out.trials[0].offered_pps, 10e6, "starts at the maximum");
    }

    #[test]
    fn a_device_that_keeps_up_passes_at_the_maximum_in_one_trial() {
        let out = search(&SearchConfig::new(1e6), device(5e6, f64::INFINITY, 0.0));
        assert_eq!(out.trials.len(), 1);
        assert_eq!(out.ndr.unwrap().offered_pps, 1e6);
        assert_eq!(out.pdr.unwrap().offered_pps, 1e6);
    }

    #[test]
    fn small_steady_loss_separates_ndr_from_pdr() {
        // 0.1 % loss from 1 Mpps on, capacity 4 Mpps.
        let cfg = SearchConfig::new(8e6);
        let out = search(&cfg, device(4e6, 1e6, 0.001));
        let ndr = out.ndr.unwrap().offered_pps;
        let pdr = out.pdr.unwrap().offered_pps;
        assert!(ndr <= 1e6 && ndr > 1e6 - cfg.resolution_pps, "ndr {ndr}");
        assert!(pdr > 4e6 - cfg.resolution_pps && pdr < 4.1e6, "pdr {pdr}");
    }

    #[test]
    fn a_device_that_always_loses_has_no_ndr() {
        let cfg = SearchConfig::new(1e6);
        let out = search(&cfg, device(1e9, 0.0, 0.01));
        assert_eq!(out.ndr, None);
        assert_eq!(out.pdr, None);
        assert!(out.trials.len() <= 2 * cfg.max_trials as usize + 1);
        assert!(out.trials.iter().all(|t| t.offered_pps >= cfg.min_pps));
    }

    #[test]
    fn a_non_monotonic_device_still_terminates() {
        let mut n = 0u64;
        let cfg = SearchConfig::new(1e6);
        let out = search(&cfg, |rate| {
            n += 1;
            // Loses on every other trial, whatever the rate.
            TrialResult {
                offered_pps: rate,
                achieved_pps: rate,
                tx_packets: 1000,
                rx_packets: if n.is_multiple_of(2) { 1000 } else { 900 },
            }
        });
        assert!(out.trials.len() <= 2 * cfg.max_trials as usize + 1);
    }

    #[test]
    fn loss_ratio_and_pass_criteria() {
        let t = TrialResult {
            offered_pps: 1.0,
            achieved_pps: 1.0,
            tx_packets: 1000,
            rx_packets: 995,
        };
        assert!((t.loss_ratio() - 0.005).abs() < 1e-12);
        assert!(t.passes(0.005));
        assert!(!t.passes(0.0));
        let none = TrialResult {
            tx_packets: 0,
            rx_packets: 0,
            ..t
        };
        assert!(
            !none.passes(0.5),
            "a trial that sent nothing proves nothing"
        );
    }
}
