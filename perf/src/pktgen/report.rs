//! What a run measured: the [`Report`] (serialised as the `--json`
//! output) and its human summary.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::rate::L1_OVERHEAD;
use super::search::SearchConfig;

/// One run (or one trial of a search).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Run id carried in the payload header.
    pub run: u16,
    /// Offered rate, packets per second (`None`: line rate).
    pub offered_pps: Option<f64>,
    pub flows: u32,
    /// Distinct frame lengths, bytes (without FCS).
    pub frame_sizes: Vec<u16>,
    /// Mean frame length, bytes.
    pub mean_frame: f64,
    pub tx: Option<TxReport>,
    pub rx: Option<RxReport>,
}

/// The sending side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxReport {
    /// Packets the port took.
    pub packets: u64,
    pub bytes: u64,
    /// From the first burst to the last, seconds.
    pub duration_s: f64,
    pub pps: f64,
    /// Frame bits per second (what the port carried).
    pub bps_l2: f64,
    /// Bits per second on an Ethernet wire (+24 B per frame).
    pub bps_l1: f64,
    /// Packets the port refused (ring full) and that were sent again
    /// later; a measure of backpressure, not loss.
    pub port_pushback: u64,
    /// Generator cost: nanoseconds per packet spent building frames
    /// (buffer allocation, template copy, stamping, checksum).
    pub build_ns_per_packet: f64,
}

/// The receiving side, for packets of this run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RxReport {
    /// Packets received, duplicates included.
    pub packets: u64,
    pub bytes: u64,
    /// From the first packet to the last, seconds.
    pub duration_s: f64,
    pub pps: f64,
    pub bps_l2: f64,
    pub bps_l1: f64,
    /// Sent and never received (with a sender in the run), else the
    /// sequence gaps seen.
    pub lost: u64,
    /// `lost` over the packets sent (or expected).
    pub loss_ratio: f64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Frames without the generator's header.
    pub foreign: u64,
    /// Frames of an earlier run.
    pub stale: u64,
    /// Frames of this run whose length or payload differ from what was
    /// sent (counted in `packets` too).
    pub corrupt: u64,
    pub latency: Option<Latency>,
}

/// One-way latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            samples: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        })
    }
}

/// Rates of `packets` totalling `bytes` over `secs`: (pps, L2 bps, L1 bps).
pub fn rates(packets: u64, bytes: u64, secs: f64) -> (f64, f64, f64) {
    if secs <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let l1 = bytes + packets * L1_OVERHEAD;
    (
        packets as f64 / secs,
        bytes as f64 * 8.0 / secs,
        l1 as f64 * 8.0 / secs,
    )
}

/// An NDR/PDR search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NdrReport {
    pub search: SearchConfig,
    pub trial_duration_s: f64,
    /// The highest trial without loss.
    pub ndr: Option<Report>,
    /// The highest trial within the PDR loss tolerance.
    pub pdr: Option<Report>,
    /// Every trial, in order.
    pub trials: Vec<Report>,
}

fn mpps(pps: f64) -> f64 {
    pps / 1e6
}

fn gbps(bps: f64) -> f64 {
    bps / 1e9
}

fn us(ns: impl Into<f64>) -> f64 {
    ns.into() / 1e3
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offered = match self.offered_pps {
            Some(p) => format!("{:.3} Mpps", mpps(p)),
            None => "line rate".into(),
        };
        writeln!(
            f,
            "offered {offered}, {} flow(s), frames {:?} B (mean {:.1} B)",
            self.flows, self.frame_sizes, self.mean_frame
        )?;
        if let Some(tx) = &self.tx {
            writeln!(
                f,
                "tx: {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s ({:.3} Gbit/s on the wire); \
                 port pushback {}, build {:.1} ns/packet",
                tx.packets,
                tx.bytes,
                tx.duration_s,
                mpps(tx.pps),
                gbps(tx.bps_l2),
                gbps(tx.bps_l1),
                tx.port_pushback,
                tx.build_ns_per_packet
            )?;
        }
        if let Some(rx) = &self.rx {
            writeln!(
                f,
                "rx: {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s ({:.3} Gbit/s on the wire)",
                rx.packets,
                rx.bytes,
                rx.duration_s,
                mpps(rx.pps),
                gbps(rx.bps_l2),
                gbps(rx.bps_l1)
            )?;
            writeln!(
                f,
                "    lost {} ({:.4} %), reordered {}, duplicates {}, foreign {}, stale {}, corrupt {}",
                rx.lost,
                rx.loss_ratio * 100.0,
                rx.reordered,
                rx.duplicates,
                rx.foreign,
                rx.stale,
                rx.corrupt
            )?;
            if let Some(l) = &rx.latency {
                writeln!(
                    f,
                    "    latency (us): min {:.1} mean {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ({} samples)",
                    us(l.min_ns as f64),
                    us(l.mean_ns),
                    us(l.p50_ns as f64),
                    us(l.p90_ns as f64),
                    us(l.p99_ns as f64),
                    us(l.p999_ns as f64),
                    us(l.max_ns as f64),
                    l.samples
                )?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for NdrReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} trials of {:.1} s, max {:.3} Mpps, resolution {:.3} Mpps, PDR loss ≤ {} %",
            self.trials.len(),
            self.trial_duration_s,
            mpps(self.search.max_pps),
            mpps(self.search.resolution_pps),
            self.search.pdr_loss * 100.0
        )?;
        for (name, r) in [("NDR", &self.ndr), ("PDR", &self.pdr)] {
            match r {
                Some(r) => {
                    let tx = r.tx.as_ref();
                    let rx = r.rx.as_ref();
                    writeln!(
                        f,
                        "{name}: {:.3} Mpps offered, {:.3} Mpps sent, {:.3} Gbit/s on the wire, loss {:.4} %, p99 latency {:.1} us",
                        mpps(r.offered_pps.unwrap_or(0.0)),
                        mpps(tx.map_or(0.0, |t| t.pps)),
                        gbps(tx.map_or(0.0, |t| t.bps_l1)),
                        rx.map_or(0.0, |r| r.loss_ratio * 100.0),
                        rx.and_then(|r| r.latency).map_or(0.0, |l| us(l.p99_ns as f64))
                    )?;
                }
                None => writeln!(f, "{name}: not found (every trial lost too much)")?,
            }
        }
        Ok(())
    }
}
