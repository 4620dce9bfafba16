//! Runtime configuration of the dataplane engine.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// Busy-poll every queue: lowest latency, one core at 100 %.
    Poll,
    /// Poll while there is traffic, sleep on epoll when idle.
    #[default]
    Adaptive,
}

/// Engine settings (the binary fills these from its file and flags).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// One worker per entry, pinned to that CPU; `None` leaves it unpinned.
    /// Written as a [`WorkerList`] in the configuration file.
    #[serde(deserialize_with = "WorkerList::deserialize_workers")]
    pub workers: Vec<Option<usize>>,
    pub mode: WorkerMode,
    /// Packet buffers in the pool.
    pub buffers: u32,
    /// Back the buffer pool with hugepages when available.
    pub hugepages: bool,
    /// Capacity of the flow table (conntrack), flows: 116 bytes each,
    /// allocated at start.
    pub flows: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: vec![None],
            mode: WorkerMode::Adaptive,
            buffers: 16 * 1024,
            hugepages: true,
            flows: 256 * 1024,
        }
    }
}

impl EngineConfig {
    /// One unpinned worker, small pools, no hugepages: an engine for unit
    /// tests.
    #[cfg(test)]
    pub(crate) fn small() -> Self {
        EngineConfig {
            buffers: 1024,
            hugepages: false,
            flows: 1024,
            ..EngineConfig::default()
        }
    }
}

/// Most workers a [`WorkerList`] may ask for: a bound against typos
/// (`--workers 10000`), well above the core count of any one machine.
pub const MAX_WORKERS: usize = 1024;

/// The workers as written in the configuration file and on the command
/// line: `N` for N unpinned workers, or the CPUs to pin one worker each to
/// as comma-separated ids and ranges (`2,3`, `2-5,8`; one pinned worker is
/// `3-3`). In TOML also an integer (`4`) or an array of CPU ids
/// (`[2, 3]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerList(pub Vec<Option<usize>>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadWorkerList(String);

impl WorkerList {
    fn unpinned(count: u64) -> Result<Self, BadWorkerList> {
        match usize::try_from(count) {
            Ok(n @ 1..=MAX_WORKERS) => Ok(WorkerList(vec![None; n])),
            _ => Err(BadWorkerList(format!(
                "{count} workers: expected 1 to {MAX_WORKERS}"
            ))),
        }
    }

    fn pinned(cpus: impl IntoIterator<Item = usize>) -> Result<Self, BadWorkerList> {
        let mut workers: Vec<Option<usize>> = Vec::new();
        for cpu in cpus {
            if workers.contains(&Some(cpu)) {
                return Err(BadWorkerList(format!("CPU {cpu} is listed twice")));
            }
            if workers.len() == MAX_WORKERS {
                return Err(BadWorkerList(format!("more than {MAX_WORKERS} workers")));
            }
            workers.push(Some(cpu));
        }
        if workers.is_empty() {
            return Err(BadWorkerList("no CPUs listed".into()));
        }
        Ok(WorkerList(workers))
    }

    /// `deserialize_with` for [`EngineConfig::workers`].
    fn deserialize_workers<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Option<usize>>, D::Error> {
        WorkerList::deserialize(d).map(|w| w.0)
    }
}

impl FromStr for WorkerList {
    type Err = BadWorkerList;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let cpu = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| BadWorkerList(format!("{t:?} is not a CPU id")))
        };
        if !s.contains([',', '-']) {
            let count = s.parse::<u64>().map_err(|_| {
                BadWorkerList(format!(
                    "{s:?}: expected a worker count or CPU ids such as 2-5,8"
                ))
            })?;
            return WorkerList::unpinned(count);
        }
        let mut cpus = Vec::new();
        for item in s.split(',') {
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (cpu(first)?, cpu(last)?);
                    if first > last {
                        return Err(BadWorkerList(format!(
                            "{:?} is not a CPU range",
                            item.trim()
                        )));
                    }
                    if last - first >= MAX_WORKERS {
                        return Err(BadWorkerList(format!("more than {MAX_WORKERS} workers")));
                    }
                    cpus.extend(first..=last);
                }
                None => cpus.push(cpu(item)?),
            }
        }
        WorkerList::pinned(cpus)
    }
}

impl<'de> Deserialize<'de> for WorkerList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WorkerListVisitor;

        impl<'de> Visitor<'de> for WorkerListVisitor {
            type Value = WorkerList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a worker count, an array of CPU ids, or a string such as \"2-5,8\"")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WorkerList, E> {
                WorkerList::unpinned(n).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WorkerList, E> {
                let n =
                    u64::try_from(n).map_err(|_| E::invalid_value(Unexpected::Signed(n), &self))?;
                self.visit_u64(n)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<WorkerList, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WorkerList, A::Error> {
                let mut cpus = Vec::new();
                while let Some(cpu) = seq.next_element::<usize>()? {
                    cpus.push(cpu);
                }
                WorkerList::pinned(cpus).map_err(de::Error::custom)
            }
        }

        d.deserialize_any(WorkerListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(s: &str) -> Result<Vec<Option<usize>>, String> {
        s.parse::<WorkerList>()
            .map(|w| w.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn worker_counts_are_unpinned() {
        assert_eq!(workers("1"), Ok(vec![None]));
        assert_eq!(workers(" 3 "), Ok(vec![None, None, None]));
    }

    #[test]
    fn cpu_lists_and_ranges_are_pinned() {
        assert_eq!(workers("2,3"), Ok(vec![Some(2), Some(3)]));
        assert_eq!(
            workers("2-4, 8"),
            Ok(vec![Some(2), Some(3), Some(4), Some(8)])
        );
        assert_eq!(workers("3-3"), Ok(vec![Some(3)]));
        assert_eq!(workers("0,1"), Ok(vec![Some(0), Some(1)]));
    }

    #[test]
    fn bad_worker_lists_say_why() {
        assert_eq!(workers("0"), Err("0 workers: expected 1 to 1024".into()));
        assert_eq!(
            workers("5000"),
            Err("5000 workers: expected 1 to 1024".into())
        );
        assert_eq!(
            workers("two"),
            Err("\"two\": expected a worker count or CPU ids such as 2-5,8".into())
        );
        assert_eq!(workers("2,x"), Err("\"x\" is not a CPU id".into()));
        assert_eq!(workers("2,"), Err("\"\" is not a CPU id".into()));
        assert_eq!(workers("5-2"), Err("\"5-2\" is not a CPU range".into()));
        assert_eq!(workers("0-99999"), Err("more than 1024 workers".into()));
        assert_eq!(workers("1,2-3,2"), Err("CPU 2 is listed twice".into()));
    }
}
