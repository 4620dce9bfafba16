//! The poll-mode workers: a tx thread that builds bursts from the
//! templates and paces them, an rx thread that feeds the sink, each
//! pinned to a core when asked. When tx and rx are the same port, one
//! thread alternates between them (a queue has one owner).
//!
//! **Backpressure.** A port's `tx_burst` sends a prefix of the burst and
//! drops the rest when its ring is full (counted in its `tx_errors`).
//! The tx worker reads the port's `tx_packets` around each burst and
//! takes back the sequence numbers (and rate credit) of the packets that
//! did not go, so they are sent again: nothing the port refused shows up
//! as loss, and the sink's counts are exact.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_dataplane::buffer::{
    BufferCache, BufferPool, BufferPoolConfig, Frame, Meta, DATA_SIZE,
};
use caracal_dataplane::port::{Port, PortId, PortQueue};

use super::builder::{fill_payload, PayloadHeader, Templates, MAX_FRAME};
use super::clock::now_ns;
use super::rate::{Rate, RateLimiter};
use super::report::{rates, Latency, Report, RxReport, TxReport};
use super::sink::Sink;
use super::{PktgenConfig, PktgenError};

/// One opened queue and its port.
struct Endpoint {
    port: Arc<dyn Port>,
    queue: Box<dyn PortQueue>,
    /// Keeps a memif port (and its control thread) alive.
    _opened: super::ports::Opened,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("port", &self.port.kind())
            .finish()
    }
}

/// Counters the workers publish once per burst for the progress line.
#[derive(Debug, Default)]
struct Live {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_done: AtomicBool,
}

/// Ports opened once, run as many times as needed (a search runs many
/// trials on the same connections).
#[derive(Debug)]
pub struct Engine {
    cfg: PktgenConfig,
    templates: Templates,
    tx: Option<Endpoint>,
    /// `None` with `tx` set and `same_port`: tx's queue receives too.
    rx: Option<Endpoint>,
    same_port: bool,
    tx_pool: Arc<BufferPool>,
    rx_pool: Arc<BufferPool>,
    run: u16,
}

/// What a run asks of the workers.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan {
    pub rate: Rate,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
}

impl Engine {
    /// Opens and connects the ports and builds the templates.
    pub fn open(cfg: &PktgenConfig) -> Result<Engine, PktgenError> {
        if cfg.tx.is_none() && cfg.rx.is_none() {
            return Err(PktgenError::Config("give --tx, --rx or both".into()));
        }
        if cfg.burst == 0 || cfg.burst > caracal_dataplane::buffer::FRAME_SIZE {
            return Err(PktgenError::Config(format!(
                "burst {}: 1 to {}",
                cfg.burst,
                caracal_dataplane::buffer::FRAME_SIZE
            )));
        }
        let same_port = cfg.tx.is_some() && cfg.tx == cfg.rx;
        let mac = cfg.traffic.dst_mac;
        let tx = cfg
            .tx
            .as_ref()
            .map(|s| s.open("pktgen-tx", mac))
            .transpose()?;
        let rx = match &cfg.rx {
            Some(s) if !same_port => Some(s.open("pktgen-rx", mac)?),
            _ => None,
        };
        let templates = super::builder::Templates::build(&cfg.traffic, MAX_FRAME)?;
        // Each port's own limit, named in the error (a veth's MTU, AF_XDP's
        // single UMEM frame), before anything is sent.
        let largest = templates.max_size();
        for (what, spec, o) in [("tx", &cfg.tx, &tx), ("rx", &cfg.rx, &rx)] {
            if let (Some(spec), Some(o)) = (spec, o) {
                if largest > o.max_frame {
                    return Err(PktgenError::FrameTooLarge {
                        size: largest,
                        what,
                        port: spec.to_string(),
                        max: o.max_frame,
                        why: o.limit.clone(),
                    });
                }
            }
        }
        let deadline = Instant::now() + cfg.connect_timeout;
        for (what, o) in [("tx", &tx), ("rx", &rx)] {
            if let Some(o) = o {
                let left = deadline.saturating_duration_since(Instant::now());
                if !o.wait_ready(left) {
                    return Err(PktgenError::NotConnected(what, cfg.connect_timeout));
                }
            }
        }
        let endpoint = |o: super::ports::Opened, what| -> Result<Endpoint, PktgenError> {
            let queue = o
                .port
                .open_queue(0)
                .ok_or_else(|| PktgenError::Config(format!("{what} port: queue 0 is taken")))?;
            Ok(Endpoint {
                port: o.port.clone(),
                queue,
                _opened: o,
            })
        };
        // Buffers hold the run's largest frame whole (a default 2 KiB data
        // room up to that): jumbo runs get jumbo buffers, others keep
        // small ones. The rx side drops and counts longer frames.
        let data_size = largest.max(DATA_SIZE);
        let pool = || {
            BufferPool::with_data_size(
                &BufferPoolConfig {
                    buffers: cfg.buffers,
                    hugepages: cfg.hugepages,
                },
                data_size,
            )
        };
        // Separate pools: the tx pool only ever holds generated frames, so
        // the payload pattern written once stays (see builder).
        let tx_pool = pool()?;
        fill_payload(&tx_pool);
        Ok(Engine {
            templates,
            tx: tx.map(|o| endpoint(o, "tx")).transpose()?,
            rx: rx.map(|o| endpoint(o, "rx")).transpose()?,
            same_port,
            tx_pool,
            rx_pool: pool()?,
            cfg: cfg.clone(),
            run: (now_ns() as u16) | 1,
        })
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Buffers of both pools not back in them (0 between runs).
    pub fn buffers_in_use(&self) -> u32 {
        self.tx_pool.in_use() + self.rx_pool.in_use()
    }

    /// One run: sends per `plan` (if there is a tx port), receives until
    /// everything sent arrived or `cfg.drain` passed without a packet.
    pub fn run(&mut self, plan: RunPlan) -> Report {
        self.run = self.run.wrapping_add(1);
        let run = self.run;
        let cfg = &self.cfg;
        let live = Live::default();
        let templates = &self.templates;
        let offered_pps = plan.rate.pps(templates.mean_size());
        let has_tx = self.tx.is_some();
        let has_rx = self.rx.is_some() || self.same_port;
        let core = |i: usize| cfg.cores.get(i).or(cfg.cores.first()).copied();
        let (tx_pool, rx_pool) = (&self.tx_pool, &self.rx_pool);
        let drain_ns = cfg.drain.as_nanos() as u64;
        let rx_only_ns = plan.duration.map(|d| d.as_nanos() as u64);

        let (tx_out, sink) = std::thread::scope(|s| {
            let live = &live;
            let (tx_ep, rx_ep) = (&mut self.tx, &mut self.rx);
            let same = self.same_port;
            // One core for both directions: one thread alternates tx and
            // rx bursts. Two threads time-sliced on one core would leave
            // the receiver starved while the sender spins on a full ring.
            let combine = has_tx && cfg.cores.len() == 1;
            let (rx_in_tx, rx_alone) = if combine {
                (rx_ep.as_mut(), None)
            } else {
                (None, rx_ep.as_mut())
            };
            let tx_thread = tx_ep.as_mut().map(|ep| {
                std::thread::Builder::new()
                    .name("pktgen-tx".into())
                    .spawn_scoped(s, move || {
                        pin(core(0));
                        let mut tx_cache = tx_pool.cache();
                        let mut gen = TxState::new(templates, run, plan, cfg.burst);
                        if same {
                            let mut rx_cache = rx_pool.cache();
                            let mut rx = RxState::new(run, templates.flows());
                            while gen.step(&mut *ep.queue, &*ep.port, &mut tx_cache, live) {
                                rx.step(&mut *ep.queue, &mut rx_cache, live);
                            }
                            live.tx_done.store(true, Ordering::Release);
                            rx.finish(&mut *ep.queue, &mut rx_cache, live, gen.packets, drain_ns);
                            rx_cache.publish();
                            tx_cache.publish();
                            (Some(gen.outcome()), Some(rx.sink))
                        } else if let Some(rx_ep) = rx_in_tx {
                            let mut rx_cache = rx_pool.cache();
                            let mut rx = RxState::new(run, templates.flows());
                            while gen.step(&mut *ep.queue, &*ep.port, &mut tx_cache, live) {
                                rx.step(&mut *rx_ep.queue, &mut rx_cache, live);
                            }
                            live.tx_done.store(true, Ordering::Release);
                            rx.finish(
                                &mut *rx_ep.queue,
                                &mut rx_cache,
                                live,
                                gen.packets,
                                drain_ns,
                            );
                            rx_cache.publish();
                            tx_cache.publish();
                            (Some(gen.outcome()), Some(rx.sink))
                        } else {
                            while gen.step(&mut *ep.queue, &*ep.port, &mut tx_cache, live) {}
                            live.tx_done.store(true, Ordering::Release);
                            tx_cache.publish();
                            (Some(gen.outcome()), None)
                        }
                    })
                    .expect("spawn the tx thread")
            });
            let rx_thread = rx_alone.map(|ep| {
                std::thread::Builder::new()
                    .name("pktgen-rx".into())
                    .spawn_scoped(s, move || {
                        pin(core(1));
                        let mut cache = rx_pool.cache();
                        let mut rx = RxState::new(run, templates.flows());
                        if has_tx {
                            while !live.tx_done.load(Ordering::Acquire) {
                                rx.step(&mut *ep.queue, &mut cache, live);
                            }
                            let sent = live.tx_packets.load(Ordering::Acquire);
                            rx.finish(&mut *ep.queue, &mut cache, live, sent, drain_ns);
                        } else {
                            // Receive only: for the duration (or forever).
                            let end = rx_only_ns.map(|d| now_ns() + d);
                            while end.is_none_or(|e| now_ns() < e) {
                                rx.step(&mut *ep.queue, &mut cache, live);
                            }
                        }
                        cache.publish();
                        rx.sink
                    })
                    .expect("spawn the rx thread")
            });
            progress(cfg.progress, live, || {
                tx_thread.as_ref().is_none_or(|t| t.is_finished())
                    && rx_thread.as_ref().is_none_or(|t| t.is_finished())
            });
            let (tx_out, same_sink) = match tx_thread {
                Some(t) => t.join().expect("tx thread panicked"),
                None => (None, None),
            };
            let sink = match rx_thread {
                Some(t) => Some(t.join().expect("rx thread panicked")),
                None => same_sink,
            };
            (tx_out, sink)
        });

        let tx_report = tx_out.as_ref().map(|o| {
            let secs = o.duration_ns as f64 / 1e9;
            let (pps, l2, l1) = rates(o.packets, o.bytes, secs);
            TxReport {
                packets: o.packets,
                bytes: o.bytes,
                duration_s: secs,
                pps,
                bps_l2: l2,
                bps_l1: l1,
                port_pushback: o.pushback,
                build_ns_per_packet: if o.built == 0 {
                    0.0
                } else {
                    o.build_ns as f64 / o.built as f64
                },
            }
        });
        let rx_report = sink.filter(|_| has_rx).map(|sink| {
            let secs = sink
                .first_ns
                .map_or(0.0, |f| sink.last_ns.saturating_sub(f) as f64 / 1e9);
            let packets = sink.seq.received;
            let (pps, l2, l1) = rates(packets, sink.bytes, secs);
            let (lost, expected) = match &tx_out {
                Some(o) => (sink.seq.lost_given_sent(o.packets), o.packets),
                None => (sink.seq.lost, sink.seq.unique() + sink.seq.lost),
            };
            RxReport {
                packets,
                bytes: sink.bytes,
                duration_s: secs,
                pps,
                bps_l2: l2,
                bps_l1: l1,
                lost,
                loss_ratio: if expected == 0 {
                    0.0
                } else {
                    lost as f64 / expected as f64
                },
                reordered: sink.seq.reordered,
                duplicates: sink.seq.duplicates,
                foreign: sink.foreign,
                stale: sink.stale,
                corrupt: sink.corrupt,
                latency: Latency::of(&sink.latency),
            }
        });
        Report {
            run,
            offered_pps,
            flows: templates.flows(),
            frame_sizes: templates.sizes().to_vec(),
            mean_frame: templates.mean_size(),
            tx: tx_report,
            rx: rx_report,
        }
    }
}

/// Pins the calling thread to `core`, if one was asked for.
fn pin(core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("caracal-pktgen: could not pin a worker to core {id}");
        }
    }
}

/// Prints a progress line on stderr once a second until `done`.
fn progress(enabled: bool, live: &Live, done: impl Fn() -> bool) {
    let start = Instant::now();
    let mut last = (start, 0u64, 0u64, 0u64, 0u64);
    let mut next = start + Duration::from_secs(1);
    while !done() {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        if !enabled || now < next {
            continue;
        }
        next += Duration::from_secs(1);
        let cur = (
            live.tx_packets.load(Ordering::Relaxed),
            live.tx_bytes.load(Ordering::Relaxed),
            live.rx_packets.load(Ordering::Relaxed),
            live.rx_bytes.load(Ordering::Relaxed),
        );
        let secs = now.duration_since(last.0).as_secs_f64();
        let (tp, _, tl1) = rates(cur.0 - last.1, cur.1 - last.2, secs);
        let (rp, _, rl1) = rates(cur.2 - last.3, cur.3 - last.4, secs);
        let missing = cur.0.saturating_sub(cur.2);
        eprintln!(
            "[{:>4.0}s] tx {:>8.3} Mpps {:>7.3} Gbit/s | rx {:>8.3} Mpps {:>7.3} Gbit/s | tx-rx {} ({:.3} %)",
            now.duration_since(start).as_secs_f64(),
            tp / 1e6,
            tl1 / 1e9,
            rp / 1e6,
            rl1 / 1e9,
            missing,
            if cur.0 == 0 {
                0.0
            } else {
                missing as f64 * 100.0 / cur.0 as f64
            }
        );
        last = (now, cur.0, cur.1, cur.2, cur.3);
    }
}

/// What the tx worker did.
#[derive(Debug, Clone, Copy, Default)]
struct TxOutcome {
    packets: u64,
    bytes: u64,
    duration_ns: u64,
    pushback: u64,
    built: u64,
    build_ns: u64,
}

/// The tx worker: flow/size cursors, per-stream sequence numbers, pacing.
struct TxState<'a> {
    templates: &'a Templates,
    run: u16,
    seqs: Vec<u32>,
    /// Next flow and next position in the size pattern.
    flow: u32,
    pos: u32,
    limiter: Option<RateLimiter>,
    rate_pps: Option<f64>,
    burst: u64,
    duration_ns: Option<u64>,
    remaining: Option<u64>,
    frame: Frame,
    lens: Vec<u16>,
    start_ns: Option<u64>,
    last_ns: u64,
    out: TxOutcome,
    packets: u64,
}

impl<'a> TxState<'a> {
    fn new(templates: &'a Templates, run: u16, plan: RunPlan, burst: usize) -> Self {
        let rate_pps = plan.rate.pps(templates.mean_size());
        TxState {
            templates,
            run,
            seqs: vec![0; templates.flows() as usize],
            flow: 0,
            pos: 0,
            limiter: None,
            rate_pps,
            burst: burst as u64,
            duration_ns: plan.duration.map(|d| d.as_nanos() as u64),
            remaining: plan.count,
            frame: Frame::new(),
            lens: vec![0; burst],
            start_ns: None,
            last_ns: 0,
            out: TxOutcome::default(),
            packets: 0,
        }
    }

    /// One burst (or nothing, when pacing says wait). False when done.
    #[inline]
    fn step(
        &mut self,
        q: &mut dyn PortQueue,
        port: &dyn Port,
        cache: &mut BufferCache,
        live: &Live,
    ) -> bool {
        let now = now_ns();
        let start = *self.start_ns.get_or_insert_with(|| {
            self.limiter = self.rate_pps.map(|pps| {
                RateLimiter::new(pps, now, 2 * self.burst)
                    .with_batch(RateLimiter::batch_for(pps, self.burst))
            });
            now
        });
        if self.duration_ns.is_some_and(|d| now - start >= d) || self.remaining == Some(0) {
            return false;
        }
        let mut n = self.remaining.map_or(self.burst, |r| r.min(self.burst));
        if let Some(l) = &mut self.limiter {
            n = l.grant(now, n);
            if n == 0 {
                std::hint::spin_loop();
                return true;
            }
        }
        let flows = self.templates.flows();
        let plen = self.templates.pattern_len();
        let mut built = 0;
        while built < n as usize {
            let Some(mut b) = cache.alloc() else {
                break;
            };
            let len = self.templates.size_at(self.pos);
            let flow = self.flow;
            let seq = &mut self.seqs[flow as usize];
            let h = PayloadHeader {
                run: self.run,
                stream: flow,
                seq: *seq,
                tx_ns: now,
            };
            *seq = seq.wrapping_add(1);
            let mut p = cache.pool().packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(0), len);
            self.templates.stamp(self.pos, flow, &h, p.data_mut());
            self.frame.push(b);
            self.lens[built] = len;
            built += 1;
            self.flow = if flow + 1 == flows { 0 } else { flow + 1 };
            self.pos = if self.pos + 1 == plen {
                0
            } else {
                self.pos + 1
            };
        }
        let built_at = now_ns();
        self.out.build_ns += built_at - now;
        self.out.built += built as u64;
        let before = port.stats().tx_packets;
        q.tx_burst(cache, &mut self.frame);
        let sent = (port.stats().tx_packets - before).min(built as u64) as usize;
        if sent < built {
            self.rollback(built - sent);
            if let Some(l) = &mut self.limiter {
                l.refund((built - sent) as u64);
            }
            self.out.pushback += (built - sent) as u64;
        }
        if built < n as usize {
            if let Some(l) = &mut self.limiter {
                l.refund(n - built as u64);
            }
        }
        let bytes: u64 = self.lens[..sent].iter().map(|&l| u64::from(l)).sum();
        if sent > 0 {
            self.out.packets += sent as u64;
            self.out.bytes += bytes;
            self.packets = self.out.packets;
            self.last_ns = built_at;
            if let Some(r) = &mut self.remaining {
                *r -= sent as u64;
            }
            live.tx_packets.store(self.out.packets, Ordering::Release);
            live.tx_bytes.store(self.out.bytes, Ordering::Relaxed);
        }
        true
    }

    /// Takes back the last `k` packets built (the port did not send them).
    fn rollback(&mut self, k: usize) {
        let flows = self.templates.flows();
        let plen = self.templates.pattern_len();
        for _ in 0..k {
            self.flow = if self.flow == 0 {
                flows - 1
            } else {
                self.flow - 1
            };
            self.pos = if self.pos == 0 {
                plen - 1
            } else {
                self.pos - 1
            };
            let seq = &mut self.seqs[self.flow as usize];
            *seq = seq.wrapping_sub(1);
        }
    }

    fn outcome(&self) -> TxOutcome {
        TxOutcome {
            duration_ns: self.start_ns.map_or(0, |s| self.last_ns.saturating_sub(s)),
            ..self.out
        }
    }
}

/// The rx worker.
struct RxState {
    sink: Sink,
    frame: Frame,
    received: u64,
    bytes: u64,
}

impl RxState {
    fn new(run: u16, streams: u32) -> Self {
        RxState {
            sink: Sink::new(run, streams),
            frame: Frame::new(),
            received: 0,
            bytes: 0,
        }
    }

    /// One poll. Returns the packets received.
    #[inline]
    fn step(&mut self, q: &mut dyn PortQueue, cache: &mut BufferCache, live: &Live) -> usize {
        let n = q.rx_burst(PortId(1), cache, &mut self.frame);
        if n == 0 {
            std::hint::spin_loop();
            return 0;
        }
        let now = now_ns();
        for mut b in self.frame.drain() {
            let p = cache.pool().packet(&mut b);
            self.bytes += p.len() as u64;
            self.sink.record(p.data(), now);
            cache.free(b);
        }
        self.received += n as u64;
        live.rx_packets.store(self.received, Ordering::Relaxed);
        live.rx_bytes.store(self.bytes, Ordering::Relaxed);
        n
    }

    /// After tx stopped: polls until all `sent` packets of this run
    /// arrived or `drain_ns` passed without any packet.
    fn finish(
        &mut self,
        q: &mut dyn PortQueue,
        cache: &mut BufferCache,
        live: &Live,
        sent: u64,
        drain_ns: u64,
    ) {
        let mut quiet_since = now_ns();
        while self.sink.seq.unique() < sent {
            if self.step(q, cache, live) > 0 {
                quiet_since = now_ns();
            } else if now_ns() - quiet_since > drain_ns {
                break;
            }
        }
    }
}
