//! An in-memory port for tests and benchmarks: its rx side replays
//! template frames (copied into fresh buffers, as a NIC's DMA would fill
//! them) and its tx side counts, and optionally keeps, what it is given.
//!
//! Nothing in production uses it; it exists so whole-graph tests and the
//! criterion benches push packets through the real worker code paths
//! without a kernel device.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use caracal_wire::EthernetAddress;

use super::{bump, Port, PortCaps, PortId, PortKind, PortQueue, PortStats, QueueCounters};
use crate::buffer::{BufferCache, Frame, Meta, DATA_SIZE};

/// What the port does with transmitted packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Count and free (benchmarks).
    Count,
    /// Keep a copy of every frame (tests).
    Capture,
}

#[derive(Debug, Default)]
struct Shared {
    /// Frames to deliver once, in order.
    inject: VecDeque<Vec<u8>>,
    /// Frames transmitted, when capturing.
    captured: Vec<Vec<u8>>,
}

/// An in-memory port.
#[derive(Debug)]
pub struct LoopbackPort {
    mac: EthernetAddress,
    mtu: u16,
    sink: Sink,
    /// Frames replayed in a loop (benchmarks): `rx_burst` fills every
    /// burst from these, round robin, forever.
    templates: Vec<Vec<u8>>,
    shared: Arc<Mutex<Shared>>,
    counters: Arc<QueueCounters>,
}

impl LoopbackPort {
    pub fn new(mac: EthernetAddress, mtu: u16, sink: Sink) -> Arc<Self> {
        Self::with_templates(mac, mtu, sink, Vec::new())
    }

    /// A port whose rx never runs dry: it cycles over `templates`.
    pub fn with_templates(
        mac: EthernetAddress,
        mtu: u16,
        sink: Sink,
        templates: Vec<Vec<u8>>,
    ) -> Arc<Self> {
        assert!(templates.iter().all(|t| t.len() <= DATA_SIZE));
        Arc::new(LoopbackPort {
            mac,
            mtu,
            sink,
            templates,
            shared: Arc::default(),
            counters: Arc::default(),
        })
    }

    /// Queues frames for the next rx bursts.
    pub fn inject(&self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.shared.lock().expect("poisoned").inject.extend(frames);
    }

    /// Takes the frames transmitted so far (with `Sink::Capture`).
    pub fn take_captured(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.shared.lock().expect("poisoned").captured)
    }

    /// A queue on this port, for driving the graph without a worker.
    pub fn queue(self: &Arc<Self>) -> LoopbackQueue {
        LoopbackQueue {
            port: self.clone(),
            next_template: 0,
        }
    }
}

impl Port for LoopbackPort {
    fn kind(&self) -> PortKind {
        PortKind::Loopback
    }

    fn caps(&self) -> PortCaps {
        PortCaps {
            queues: 1,
            mtu: self.mtu,
        }
    }

    fn peer_mac(&self) -> EthernetAddress {
        self.mac
    }

    fn open_queue(&self, _worker: usize) -> Option<Box<dyn PortQueue>> {
        // `open_queue` gets `&self`, not the Arc: rebuild one around clones
        // of the shared parts.
        let port = Arc::new(LoopbackPort {
            mac: self.mac,
            mtu: self.mtu,
            sink: self.sink,
            templates: self.templates.clone(),
            shared: self.shared.clone(),
            counters: self.counters.clone(),
        });
        Some(Box::new(LoopbackQueue {
            port,
            next_template: 0,
        }))
    }

    fn stats(&self) -> PortStats {
        PortStats::sum([&*self.counters])
    }
}

/// The single queue of a [`LoopbackPort`].
#[derive(Debug)]
pub struct LoopbackQueue {
    port: Arc<LoopbackPort>,
    next_template: usize,
}

impl PortQueue for LoopbackQueue {
    fn rx_burst(&mut self, port: PortId, cache: &mut BufferCache, out: &mut Frame) -> usize {
        let mut n = 0;
        let mut bytes = 0;
        if self.port.templates.is_empty() {
            let mut shared = self.port.shared.lock().expect("poisoned");
            while !out.is_full() {
                let Some(frame) = shared.inject.pop_front() else {
                    break;
                };
                let Some(mut b) = cache.alloc() else {
                    shared.inject.push_front(frame);
                    bump(&self.port.counters.rx_no_buffer, 1);
                    break;
                };
                fill(cache, &mut b, port, &frame);
                bytes += frame.len();
                out.push(b);
                n += 1;
            }
        } else {
            let templates = &self.port.templates;
            while !out.is_full() {
                let Some(mut b) = cache.alloc() else {
                    bump(&self.port.counters.rx_no_buffer, 1);
                    break;
                };
                let t = &templates[self.next_template];
                self.next_template = (self.next_template + 1) % templates.len();
                fill(cache, &mut b, port, t);
                bytes += t.len();
                out.push(b);
                n += 1;
            }
        }
        bump(&self.port.counters.rx_packets, n as u64);
        bump(&self.port.counters.rx_bytes, bytes as u64);
        n
    }

    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame) {
        let mut n = 0;
        let mut bytes = 0;
        let mut shared =
            (self.port.sink == Sink::Capture).then(|| self.port.shared.lock().expect("poisoned"));
        for mut b in pkts.drain() {
            let p = cache.pool().packet(&mut b);
            bytes += p.len();
            if let Some(s) = shared.as_mut() {
                s.captured.push(p.data().to_vec());
            }
            n += 1;
            cache.free(b);
        }
        bump(&self.port.counters.tx_packets, n);
        bump(&self.port.counters.tx_bytes, bytes as u64);
    }

    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
}

fn fill(cache: &BufferCache, b: &mut crate::buffer::BufferIndex, port: PortId, frame: &[u8]) {
    let mut p = cache.pool().packet(b);
    *p.meta_mut() = Meta::received(port, frame.len() as u16);
    p.data_mut().copy_from_slice(frame);
}
