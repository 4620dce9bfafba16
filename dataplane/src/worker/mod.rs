//! Workers: threads pinned to cores that poll their queues, run the graph
//! over each received vector and transmit the result.
//!
//! A worker owns one queue pair on every port, so rx and tx never contend
//! with another thread. Once per loop it loads the current [`Tables`]
//! snapshot; when the generation changed it opens queues of new ports and
//! closes those of removed ones, then acknowledges the generation so the
//! engine knows the change is live. In `adaptive` mode an idle worker
//! sleeps in `epoll_wait` on its queues' descriptors and a wake eventfd.
//!
//! Each loop is also a quiescent point of the worker's flow table handle
//! (it holds no flow reference between vectors), and a worker going to
//! sleep goes offline, so the engine's housekeeping can reclaim expired
//! flows without waiting for it.
//!
//! A worker also keeps VPP-style runtime statistics ([`runtime`]): cycles
//! per node call, per rx and tx burst and per loop, read from the cycle
//! counter a few times per loop and vector, never per packet.

pub mod runtime;
mod sys;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::buffer::{BufferCache, BufferPool, Frame};
use crate::config::WorkerMode;
use crate::flow::FlowHandle;
use crate::graph::{Context, DropReason, Graph, NodeId};
use crate::policy::log::PolicyLog;
use crate::port::{Port, PortId, PortQueue};
use crate::tables::Tables;

pub use runtime::{cycles, cycles_per_second};
use runtime::{AtomicLoopStats, LoopStats};
pub use sys::EventFd;
use sys::{Epoll, MAX_EVENTS};

/// Empty polls in a row before an adaptive worker goes to sleep.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 64;
/// Longest sleep; bounds how stale an unobserved stop flag can get.
const SLEEP_MS: i32 = 500;
/// epoll token of the wake eventfd.
const WAKE_TOKEN: u64 = u64::MAX;

/// Counters a worker publishes once per loop, read by the API thread.
#[derive(Debug)]
pub struct WorkerCounters {
    pub vectors: AtomicU64,
    pub packets: AtomicU64,
    pub node_calls: [AtomicU64; NodeId::COUNT],
    pub node_packets: [AtomicU64; NodeId::COUNT],
    /// Cycles ([`cycles`]) each node spent.
    pub node_clocks: [AtomicU64; NodeId::COUNT],
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Packets policy LOG rules matched.
    pub policy_logged: AtomicU64,
    /// The poll loop and its rx/tx bursts, published once per loop.
    pub runtime: AtomicLoopStats,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            vectors: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            node_calls: std::array::from_fn(|_| AtomicU64::new(0)),
            node_packets: std::array::from_fn(|_| AtomicU64::new(0)),
            node_clocks: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            policy_logged: AtomicU64::new(0),
            runtime: AtomicLoopStats::default(),
        }
    }
}

/// What the engine and a worker share.
#[derive(Debug)]
pub struct WorkerShared {
    pub id: usize,
    pub core: Option<usize>,
    pub stop: AtomicBool,
    pub wake: EventFd,
    /// Generation of the last snapshot this worker runs.
    pub seen_generation: AtomicU64,
    pub counters: WorkerCounters,
}

/// A running worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    pub shared: Arc<WorkerShared>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts worker `id`, pinned to `core` when given. `flows` is its
    /// handle on the flow table, `clock` the time origin every worker and
    /// the flow housekeeping share.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        id: usize,
        core: Option<usize>,
        mode: WorkerMode,
        pool: Arc<BufferPool>,
        tables: Arc<ArcSwap<Tables>>,
        flows: FlowHandle,
        log: Arc<PolicyLog>,
        clock: Instant,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(WorkerShared {
            id,
            core,
            stop: AtomicBool::new(false),
            wake: EventFd::new()?,
            seen_generation: AtomicU64::new(0),
            counters: WorkerCounters::default(),
        });
        let epoll = Epoll::new()?;
        epoll.add(shared.wake.raw(), WAKE_TOKEN)?;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("caracal-wk{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = id, core, "could not pin worker to its core");
                    }
                }
                let mut w = Worker::new(s, mode, pool, tables, epoll, flows, log, clock);
                w.run();
            })?;
        Ok(WorkerHandle {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks the worker to stop (returns at once).
    pub fn signal_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify();
    }

    /// Waits for the worker to exit.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(worker = self.shared.id, "worker thread panicked");
            }
        }
    }
}

/// A worker's queue pair on one port.
#[derive(Debug)]
struct QueueSlot {
    port: Arc<dyn Port>,
    queue: Box<dyn PortQueue>,
    /// Packets waiting for this loop's tx burst.
    pending: Frame,
    polled_by_epoll: bool,
}

struct Worker {
    shared: Arc<WorkerShared>,
    mode: WorkerMode,
    pool: Arc<BufferPool>,
    cache: BufferCache,
    tables: Arc<ArcSwap<Tables>>,
    generation: u64,
    epoll: Epoll,
    /// Indexed by port id.
    queues: Vec<Option<QueueSlot>>,
    /// Ports whose queue has no descriptor: polled every loop.
    always_poll: Vec<PortId>,
    graph: Graph,
    /// Ports with pending tx this loop.
    dirty: Vec<PortId>,
    start: Instant,
    stats: LoopStats,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: Arc<WorkerShared>,
        mode: WorkerMode,
        pool: Arc<BufferPool>,
        tables: Arc<ArcSwap<Tables>>,
        epoll: Epoll,
        flows: FlowHandle,
        log: Arc<PolicyLog>,
        clock: Instant,
    ) -> Self {
        let cache = pool.cache();
        let mut graph = Graph::with_flows(flows);
        graph.set_policy_log(log);
        Worker {
            shared,
            mode,
            pool,
            cache,
            tables,
            generation: 0,
            epoll,
            queues: Vec::new(),
            always_poll: Vec::new(),
            graph,
            dirty: Vec::with_capacity(crate::buffer::FRAME_SIZE),
            start: clock,
            stats: LoopStats::default(),
        }
    }

    fn run(&mut self) {
        let mut tokens = [0u64; MAX_EVENTS];
        let mut idle_polls = 0u32;
        let mut loop_start = cycles();
        while !self.shared.stop.load(Ordering::Acquire) {
            let tables = self.tables.load_full();
            if tables.generation != self.generation {
                self.refresh(&tables);
            }
            let timeout = match self.mode {
                WorkerMode::Adaptive if idle_polls >= IDLE_POLLS_BEFORE_SLEEP => SLEEP_MS,
                _ => 0,
            };
            let timeout = if self.always_poll.is_empty() {
                timeout
            } else {
                0
            };
            // No flow reference survives a loop.
            self.graph.flows().quiescent();
            let ready = if timeout > 0 {
                self.graph.flows().offline();
                let ready = self.epoll.wait(&mut tokens, timeout);
                self.graph.flows().online();
                ready
            } else {
                self.epoll.wait(&mut tokens, timeout)
            };
            let now_ns = self.start.elapsed().as_nanos() as u64;
            let cx = Context {
                tables: &tables,
                now_ns,
            };
            let mut received = 0;
            for &t in &tokens[..ready] {
                if t == WAKE_TOKEN {
                    self.shared.wake.drain();
                } else {
                    received += self.poll(PortId(t as u16), &cx);
                }
            }
            for i in 0..self.always_poll.len() {
                received += self.poll(self.always_poll[i], &cx);
            }
            idle_polls = if received == 0 {
                idle_polls.saturating_add(1)
            } else {
                0
            };
            self.cache.publish();
            let now = cycles();
            let spent = now.wrapping_sub(loop_start);
            loop_start = now;
            let s = &mut self.stats;
            s.loops += 1;
            s.clocks += spent;
            if received == 0 {
                s.idle_loops += 1;
                s.idle_clocks += spent;
            }
            self.shared.counters.runtime.publish(s);
        }
        // Closing our queues and returning our buffers happens on drop.
        self.queues.clear();
    }

    /// Receives one burst from a port and forwards it.
    fn poll(&mut self, port: PortId, cx: &Context<'_>) -> usize {
        let Some(Some(slot)) = self.queues.get_mut(port.index()) else {
            return 0;
        };
        let t0 = cycles();
        let n = slot
            .queue
            .rx_burst(port, &mut self.cache, self.graph.rx_frame(cx.tables, port));
        self.stats.input.add(1, n, cycles().wrapping_sub(t0));
        if n == 0 {
            return 0;
        }
        self.graph.run(&self.pool, &mut self.cache, cx);
        self.transmit();
        self.publish_counters(n);
        n
    }

    /// Sends the graph's output, one burst per port. Sorting the packets
    /// by port counts as `interface-output`, the bursts as `port-output`.
    fn transmit(&mut self) {
        let t0 = cycles();
        let mut port_down = 0;
        let out = self.graph.output();
        let packets = out.len();
        for mut b in out.drain() {
            let port = self.pool.packet(&mut b).meta().tx_port;
            match self.queues.get_mut(port.index()) {
                Some(Some(slot)) => {
                    if slot.pending.is_empty() {
                        self.dirty.push(port);
                    }
                    slot.pending.push(b);
                }
                _ => {
                    port_down += 1;
                    self.cache.free(b);
                }
            }
        }
        let g = &mut self.graph.counters;
        g.drops[DropReason::TxPortDown as usize] += port_down;
        let t1 = cycles();
        let out = NodeId::InterfaceOutput as usize;
        g.calls[out] += 1;
        g.packets[out] += packets as u64;
        g.clocks[out] += t1.wrapping_sub(t0);
        let (mut bursts, mut sent) = (0, 0);
        for port in self.dirty.drain(..) {
            if let Some(Some(slot)) = self.queues.get_mut(port.index()) {
                bursts += 1;
                sent += slot.pending.len();
                slot.queue.tx_burst(&mut self.cache, &mut slot.pending);
            }
        }
        self.stats
            .output
            .add(bursts, sent, cycles().wrapping_sub(t1));
    }

    fn publish_counters(&mut self, received: usize) {
        let c = &self.shared.counters;
        crate::port::bump(&c.vectors, 1);
        crate::port::bump(&c.packets, received as u64);
        let g = &self.graph.counters;
        for i in 0..NodeId::COUNT {
            store(&c.node_calls[i], g.calls[i]);
            store(&c.node_packets[i], g.packets[i]);
            store(&c.node_clocks[i], g.clocks[i]);
        }
        for i in 0..DropReason::COUNT {
            store(&c.drops[i], g.drops[i]);
        }
        store(&c.policy_logged, self.graph.policy_logged());
    }

    /// Opens queues of new ports, closes those of removed ones.
    fn refresh(&mut self, tables: &Tables) {
        if self.queues.len() < tables.ports.len() {
            self.queues.resize_with(tables.ports.len(), || None);
        }
        for (i, slot) in self.queues.iter_mut().enumerate() {
            let wanted = tables.ports.get(i).and_then(Option::as_ref);
            let keep = match (&*slot, wanted) {
                (Some(s), Some(e)) => Arc::ptr_eq(&s.port, &e.port),
                (None, None) => true,
                _ => false,
            };
            if keep {
                continue;
            }
            if let Some(old) = slot.take() {
                if let Some(fd) = old.queue.rx_fd() {
                    self.epoll.remove(fd);
                }
                drop_slot(old, &mut self.cache);
            }
            let Some(entry) = wanted else { continue };
            let Some(queue) = entry.port.open_queue(self.shared.id) else {
                tracing::warn!(
                    worker = self.shared.id,
                    port = i,
                    "no queue for this worker"
                );
                continue;
            };
            let polled_by_epoll = match queue.rx_fd() {
                Some(fd) => match self.epoll.add(fd, i as u64) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(
                            worker = self.shared.id,
                            port = i,
                            "epoll: {e}; polling instead"
                        );
                        false
                    }
                },
                None => false,
            };
            *slot = Some(QueueSlot {
                port: entry.port.clone(),
                queue,
                pending: Frame::new(),
                polled_by_epoll,
            });
        }
        self.always_poll = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|s| !s.polled_by_epoll)
                    .map(|_| PortId(i as u16))
            })
            .collect();
        self.generation = tables.generation;
        self.shared
            .seen_generation
            .store(tables.generation, Ordering::Release);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for slot in self.queues.drain(..).flatten() {
            drop_slot(slot, &mut self.cache);
        }
    }
}

/// Frees packets still pending on a queue that goes away.
fn drop_slot(mut slot: QueueSlot, cache: &mut BufferCache) {
    for b in slot.pending.drain() {
        cache.free(b);
    }
}

#[inline]
fn store(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}
