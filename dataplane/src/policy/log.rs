//! What policy LOG rules matched, carried off the packet path.
//!
//! A worker that resolves a first packet through a LOG rule (rate limited
//! per worker) pushes a [`LogRecord`] into one bounded lock-free queue:
//! no lock, no allocation (the interface and rule names are `Arc`s the
//! snapshot already holds) and no system call on the worker. The engine's
//! housekeeping thread drains the queue every [`DRAIN_PERIOD`], writes
//! each record as a log line (target `caracal::policy`) and keeps the
//! newest [`RECENT`] for `Policy/ListPolicyLog` (`caracalctl show
//! policy-log`). A record the queue has no room for is counted as lost.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_queue::ArrayQueue;

/// How often the housekeeper empties the queue.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(100);
/// Records the queue holds between drains.
pub const QUEUE: usize = 4096;
/// Records kept for the API.
pub const RECENT: usize = 1024;

/// One packet a LOG rule matched: the first packet of its flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// On the engine's clock (nanoseconds since it started).
    pub at_ns: u64,
    /// The endpoint's interface (absent if it went away meanwhile).
    pub interface: Option<Arc<str>>,
    pub ingress: bool,
    /// The LOG rule's identifier.
    pub rule: Arc<str>,
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// A drained record with its wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub time: SystemTime,
    pub record: LogRecord,
}

/// The queue from the workers and what the control side kept of it.
#[derive(Debug)]
pub struct PolicyLog {
    queue: ArrayQueue<LogRecord>,
    lost: AtomicU64,
    recent: Mutex<VecDeque<LogEntry>>,
}

impl Default for PolicyLog {
    fn default() -> Self {
        Self::with_capacity(QUEUE)
    }
}

impl PolicyLog {
    pub fn with_capacity(queue: usize) -> Self {
        PolicyLog {
            queue: ArrayQueue::new(queue.max(1)),
            lost: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }

    /// From a worker: queues `record`, or counts it lost when the queue
    /// is full.
    #[inline]
    pub fn push(&self, record: LogRecord) {
        if self.queue.push(record).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records lost to a full queue so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Control side: empties the queue, logging each record and keeping
    /// the newest [`RECENT`]. `now_ns` is the engine clock's reading now,
    /// to date the records. Returns how many it took.
    pub fn drain(&self, now_ns: u64) -> usize {
        let now = SystemTime::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while let Some(record) = self.queue.pop() {
            n += 1;
            tracing::info!(
                target: "caracal::policy",
                interface = record.interface.as_deref().unwrap_or("?"),
                direction = if record.ingress { "ingress" } else { "egress" },
                rule = &*record.rule,
                proto = record.proto,
                src = %record.src,
                sport = record.sport,
                dst = %record.dst,
                dport = record.dport,
                "policy log"
            );
            let age = Duration::from_nanos(now_ns.saturating_sub(record.at_ns));
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(LogEntry {
                time: now.checked_sub(age).unwrap_or(now),
                record,
            });
        }
        n
    }

    /// The newest `limit` entries (all kept if 0), oldest first, after
    /// draining what is queued.
    pub fn recent(&self, now_ns: u64, limit: usize) -> Vec<LogEntry> {
        self.drain(now_ns);
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let skip = match limit {
            0 => 0,
            l => recent.len().saturating_sub(l),
        };
        recent.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sport: u16) -> LogRecord {
        LogRecord {
            at_ns: 1_000,
            interface: Some(Arc::from("ns/pod")),
            ingress: true,
            rule: Arc::from("p/ingress/0"),
            proto: 17,
            src: "10.0.0.1".parse().unwrap(),
            sport,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 53,
        }
    }

    #[test]
    fn drained_records_are_kept_newest_last_and_overflow_is_counted() {
        let log = PolicyLog::with_capacity(4);
        for p in 0..6 {
            log.push(record(p));
        }
        assert_eq!(log.lost(), 2, "the queue holds four");
        assert_eq!(log.drain(2_000), 4);
        let got: Vec<u16> = log
            .recent(2_000, 0)
            .iter()
            .map(|e| e.record.sport)
            .collect();
        assert_eq!(got, [0, 1, 2, 3]);
        log.push(record(9));
        let last: Vec<u16> = log
            .recent(3_000, 2)
            .iter()
            .map(|e| e.record.sport)
            .collect();
        assert_eq!(last, [3, 9], "recent drains first, then keeps the newest");
    }

    #[test]
    fn the_kept_history_is_bounded() {
        let log = PolicyLog::default();
        for round in 0..3 {
            for p in 0..RECENT as u16 / 2 {
                log.push(record(round * 1000 + p));
            }
            log.drain(5_000);
        }
        let all = log.recent(5_000, 0);
        assert_eq!(all.len(), RECENT);
        assert_eq!(
            all.last().unwrap().record.sport,
            2000 + RECENT as u16 / 2 - 1
        );
        // Dated by age: 4 µs before the drain.
        assert!(all[0].time <= SystemTime::now());
    }
}
