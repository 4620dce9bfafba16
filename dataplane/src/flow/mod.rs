//! The flow table (conntrack): one table shared by every worker that maps
//! both directions of a connection to one entry holding its TCP/UDP/ICMP
//! state, idle timer, per-direction counters, cached policy verdict and
//! forwarding.
//!
//! Workers look up whole vectors lock-free ([`FlowHandle::lookup_batch`]),
//! insert on a miss once policy has spoken ([`FlowHandle::insert`], which
//! serialises per bucket so concurrent first packets of one connection end
//! in one entry), and account each packet ([`FlowHandle::track`]). A
//! housekeeping thread calls [`FlowTable::sweep`] to expire idle flows,
//! evict the longest-idle ones when the table is nearly full, and reclaim
//! entries once every worker has announced a quiescent point since they
//! were unlinked ([`FlowHandle::quiescent`], once per poll loop).
//!
//! Layout per flow of capacity: a 128-byte entry — one cache line with
//! what a lookup reads (key, state, idle timer, verdict, forwarding), one
//! with what tracking writes (per-direction counters, list link) — and a
//! tenth of a 64-byte bucket of fifteen 32-bit `(tag, index)` ways:
//! 134.4 bytes, allocated once, on transparent huge pages when the kernel
//! has them.

mod bucket;
mod epoch;
mod freelist;
mod hint;
mod key;
mod state;
mod sweep;
mod table;
mod tcp;

#[cfg(test)]
mod tests;

pub use key::{FlowDir, FlowKey, Zone};
pub use state::{FlowStatus, FlowTimeouts, L4State, RuleId, Tracked, Verdict};
pub use sweep::SweepReport;
pub use table::{
    FlowError, FlowHandle, FlowHit, FlowId, FlowInfo, FlowStats, FlowTable, FlowTableConfig,
    FlowTableError, Inserted, NewFlow, MAX_CAPACITY,
};
pub use tcp::TcpState;

/// Keeps a hot atomic on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);
