//! `caracal-pktgen`: a poll-mode traffic generator and sink over
//! Caracal's own ports (memif, AF_PACKET, AF_XDP), usable from the command line
//! and in-process ([`PktgenConfig`] → [`run`] → [`Report`]).
//!
//! The generator precomputes one frame template per flow and frame size
//! ([`builder`]); per packet it only copies the template's headers into a
//! buffer, stamps stream, sequence number and timestamp into the payload
//! header and folds them into the L4 checksum, so it costs far less per
//! packet than anything it measures. The TX timestamp is read once per
//! burst, just before the burst is built, so latency includes the time a
//! packet waits behind the rest of its burst. The sink ([`sink`]) tracks every
//! stream's sequence numbers (lost, reordered, duplicate) and records
//! one-way latency in an HDR histogram. [`search`] finds NDR and PDR
//! (RFC 2544 binary search) over repeated trials on the same ports.
//!
//! # Command line
//!
//! ```text
//! caracal-pktgen [run] [--tx PORT] [--rx PORT] [traffic] [load] [--json]
//! caracal-pktgen ndr  [--tx PORT] [--rx PORT] [traffic] [search] [--json]
//!
//! PORT   memif:socket=PATH|@NAME[,role=client|server][,id=N][,secret=S]
//!              [,ring=N][,bufsize=N][,mode=ethernet|ip][,hugepages=yes]
//!        af_packet:iface=NAME[,netns=NAME|PATH]
//!        af_xdp:iface=NAME[,netns=NAME|PATH][,queue=Q][,mode=auto|zc|copy|skb]
//!              [,frames=N]
//!              (one interface queue; the XDP program steering it is
//!              attached while the port is open; auto: zero-copy if the
//!              driver can, copy otherwise; skb: generic XDP; N UMEM
//!              frames of 2 KiB, half rx and half tx, default 4096)
//!        --tx and --rx may name the same port (one thread then does both);
//!        --rx alone is a pure sink, --tx alone a pure source.
//! traffic
//!   --size N | --size imix     frame bytes without FCS, 62..=9216 for
//!                              IPv4/UDP (more header, higher minimum);
//!                              imix = 7×64, 4×576, 1×1500 per 12.
//!                              Jumbo frames: memif chains ring buffers
//!                              (the peer must accept chains);
//!                              af_packet needs the interface's MTU
//!                              (`mtu 9000` for 9014-byte frames);
//!                              af_xdp carries at most 2048 bytes
//!                              (one UMEM frame, no multi-buffer)
//!   --ipv6  --tcp              IPv4 and UDP by default
//!   --flows N  --random-flows [--seed S]
//!   --src IP[+COUNT] --dst IP[+COUNT] --sport P[+COUNT] --dport P[+COUNT]
//!   --src-mac MAC --dst-mac MAC
//! load (run)
//!   --rate line|2Mpps|500kpps|10Gbps   Gbit/s count 24 B/frame of FCS,
//!                                      preamble and gap
//!   --duration 10s  --count N  --burst 32  --cores 0,1
//! search (ndr)
//!   --max-rate 10Mpps --trial 2s --resolution 0.1Mpps --pdr-loss 0.5
//! output
//!   a progress line per second on stderr (--quiet turns it off), a
//!   summary on stdout, or the whole Report as JSON with --json
//! ```
//!
//! Examples:
//!
//! ```text
//! # 2 Mpps of 64-byte UDP over 1000 flows into a DUT and back
//! caracal-pktgen --tx memif:socket=/run/a.sock,role=client \
//!     --rx memif:socket=/run/b.sock,role=client \
//!     --size 64 --flows 1000 --rate 2Mpps --duration 10s --json
//! # NDR/PDR of the same path, 2-second trials
//! caracal-pktgen ndr --tx memif:socket=/run/a.sock --rx memif:socket=/run/b.sock \
//!     --max-rate 10Mpps --trial 2s --resolution 0.05Mpps
//! # over a veth in namespace "lab"
//! caracal-pktgen --tx af_packet:iface=veth0,netns=lab --rx af_packet:iface=veth1,netns=lab
//! # the same over AF_XDP sockets
//! caracal-pktgen --tx af_xdp:iface=veth0,netns=lab --rx af_xdp:iface=veth1,netns=lab
//! ```
//!
//! Exit status 0 when the run completed (loss is reported, not an error).

pub mod builder;
pub mod clock;
pub mod engine;
pub mod ports;
pub mod rate;
pub mod report;
pub mod search;
pub mod sequence;
pub mod sink;

use std::time::Duration;

use caracal_dataplane::buffer::BufferPoolError;
use caracal_dataplane::port::af_packet::AfPacketError;
use caracal_dataplane::port::af_xdp::AfXdpError;
use caracal_dataplane::port::memif::MemifError;

pub use self::builder::{FlowOrder, FrameSizes, IpRange, PortRange, TrafficSpec, L3, L4};
pub use self::engine::{Engine, RunPlan};
pub use self::ports::PortSpec;
pub use self::rate::Rate;
pub use self::report::{Latency, NdrReport, Report, RxReport, TxReport};
pub use self::search::{SearchConfig, SearchOutcome, TrialResult};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct PktgenConfig {
    /// Where to send (`None`: receive only).
    pub tx: Option<PortSpec>,
    /// Where to receive (`None`: send only; equal to `tx`: one port).
    pub rx: Option<PortSpec>,
    pub traffic: TrafficSpec,
    pub rate: Rate,
    /// Stop sending after this long...
    pub duration: Option<Duration>,
    /// ...or after this many packets, whichever comes first.
    pub count: Option<u64>,
    /// Packets per tx burst (1 to 256).
    pub burst: usize,
    /// Cores for the tx and rx threads; with one core, one thread
    /// alternates tx and rx bursts.
    pub cores: Vec<usize>,
    /// How long the sink keeps polling after tx stopped, without any
    /// packet arriving, before it declares the rest lost.
    pub drain: Duration,
    /// How long to wait for memif connections.
    pub connect_timeout: Duration,
    /// Buffers in each of the tx and rx pools.
    pub buffers: u32,
    /// Pools on hugepages when there are some.
    pub hugepages: bool,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

impl Default for PktgenConfig {
    fn default() -> Self {
        PktgenConfig {
            tx: None,
            rx: None,
            traffic: TrafficSpec::default(),
            rate: Rate::Line,
            duration: Some(Duration::from_secs(10)),
            count: None,
            burst: 32,
            cores: Vec::new(),
            drain: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            buffers: 8192,
            hugepages: true,
            progress: false,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum PktgenError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Build(#[from] builder::BuildError),
    #[error(transparent)]
    Memif(#[from] MemifError),
    #[error(transparent)]
    AfPacket(#[from] AfPacketError),
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
    #[error(transparent)]
    Buffers(#[from] BufferPoolError),
    #[error("the {0} memif did not connect within {1:?}")]
    NotConnected(&'static str, Duration),
    #[error(
        "frame size {size} does not fit the {what} port {port}: it carries frames of at most \
         {max} bytes ({why})"
    )]
    FrameTooLarge {
        size: usize,
        what: &'static str,
        port: String,
        max: usize,
        why: String,
    },
}

/// Opens the ports, runs once, closes them.
pub fn run(cfg: &PktgenConfig) -> Result<Report, PktgenError> {
    let mut engine = Engine::open(cfg)?;
    Ok(engine.run(RunPlan {
        rate: cfg.rate,
        duration: cfg.duration,
        count: cfg.count,
    }))
}

/// Opens the ports and runs an NDR/PDR search of `trial`-long trials.
pub fn ndr(
    cfg: &PktgenConfig,
    search_cfg: &SearchConfig,
    trial: Duration,
) -> Result<NdrReport, PktgenError> {
    if cfg.tx.is_none() || cfg.rx.is_none() {
        return Err(PktgenError::Config(
            "a search needs both --tx and --rx".into(),
        ));
    }
    let mut engine = Engine::open(cfg)?;
    let mut reports = Vec::new();
    let outcome = search::search(search_cfg, |pps| {
        let r = engine.run(RunPlan {
            rate: Rate::Pps(pps),
            duration: Some(trial),
            count: None,
        });
        let tx = r.tx.as_ref().map_or((0, 0.0), |t| (t.packets, t.pps));
        let rx = r.rx.as_ref().map_or(0, |r| r.packets - r.duplicates);
        if cfg.progress {
            eprintln!(
                "trial {:>2}: offered {:.3} Mpps, sent {:.3} Mpps, loss {:.4} %",
                reports.len() + 1,
                pps / 1e6,
                tx.1 / 1e6,
                r.rx.as_ref().map_or(0.0, |r| r.loss_ratio * 100.0)
            );
        }
        reports.push(r);
        TrialResult {
            offered_pps: pps,
            achieved_pps: tx.1,
            tx_packets: tx.0,
            rx_packets: rx,
        }
    });
    let pick = |t: Option<TrialResult>| {
        t.and_then(|t| outcome.trials.iter().position(|x| *x == t))
            .map(|i| reports[i].clone())
    };
    Ok(NdrReport {
        search: *search_cfg,
        trial_duration_s: trial.as_secs_f64(),
        ndr: pick(outcome.ndr),
        pdr: pick(outcome.pdr),
        trials: reports,
    })
}
