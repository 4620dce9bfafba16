//! The policy classifier: for a packet's 5-tuple, the first rule (in
//! priority order) of one endpoint and direction that matches it, over
//! source/destination IPv4 or IPv6 prefixes (or IP sets), port ranges (ICMP
//! type and code ride in the port fields) and protocol. It is a pure
//! module: the graph calls [`Classifier::classify_batch`] once per vector
//! with the keys of the packets that missed the flow table, and the engine
//! edits a [`RuleSet`] per endpoint and direction and publishes
//! [`RuleSet::snapshot`]s in its tables.
//!
//! # Structure
//!
//! A tuple space in the style of TupleMerge (Daly & Torng, "TupleMerge:
//! Fast Software Packet Processing for Online Packet Classification",
//! IEEE/ACM ToN 2019), one per address family:
//!
//! - a rule compiles to *rows*, one per (source prefix, destination
//!   prefix) pair (usually one; an IP set of n prefixes gives n);
//! - a *table* has a tuple (how many leading bits of source, destination,
//!   source port, destination port and protocol it hashes on) and holds
//!   rows at least that specific, in an open-addressed array with a
//!   one-byte tag per slot; port ranges stay ranges inside the rows (no
//!   range-to-prefix expansion);
//! - tables are sorted by the best priority they hold. A lookup probes them
//!   in that order and stops at the first table whose best priority cannot
//!   beat the rule already found.
//!
//! A probe masks and hashes the key (one multiply), reads eight tags as one
//! word and finds, without a branch per slot, the rows whose tag matches
//! before the first empty slot; only those rows are read and tested in
//! full. So a lookup costs about one hash and one L1 load per table
//! visited, plus a few row tests; it visits at most every table. The table
//! count depends on the variety of prefix lengths and port shapes in the
//! endpoint's own rules, not on their number (ClassBench: 14–25 tables at
//! 1k and 10k rules), and not on policies elsewhere in the cluster (each
//! endpoint and direction has its own classifier).
//!
//! [`Classifier::classify_batch`] runs table by table over the whole
//! batch, dropping each key from the batch once no later table can beat
//! its match: the probes of different keys are independent loads the core
//! overlaps. (Hashing several keys per SIMD instruction would need
//! `unsafe` intrinsics and runtime feature checks; not yet shown to pay.)
//!
//! Updates are incremental: inserting a rule hashes its rows into the
//! first table that fits (one pass over the table list) or starts a new
//! table; deleting one removes its rows with backward-shift deletion (no
//! tombstones). Both cost O(rows of the rule × tables) plus an amortised
//! share of table doubling/halving: microseconds, where a decision-tree or
//! `rte_acl` style classifier rebuilds everything.
//!
//! # Snapshots
//!
//! A [`Classifier`] is immutable and cheap to clone (a few `Arc`s). Inside,
//! each table's slots are a directory of `Arc`ed pages of 128 rows and
//! their tags. The [`RuleSet`] keeps its own copy of the current
//! classifier and edits it with `Arc::make_mut`: the first edit after a snapshot was published
//! copies the family's table list (a few dozen small headers), the touched
//! table's page directory and the touched pages; later edits before the
//! next snapshot write in place. Everything untouched stays shared between
//! the old and the new snapshot, and an old snapshot is freed when the last
//! worker holding it drops it. Workers therefore never lock, never see a
//! half-applied change (they see whole snapshots), and publishing costs
//! O(touched pages), not O(rules).
//!
//! # The compiled forest
//!
//! A tuple-space lookup visits one table per tuple (14–25 on ClassBench at
//! 10k rules), so a rule set whose rules have been still for a moment is
//! also compiled into a decision forest ([`tree`]: multi-way range cuts,
//! a few node steps and a row or two per lookup, 2–5× faster). The
//! compile runs off the control thread ([`RuleSet::compile_job`], run
//! anywhere, [`RuleSet::install`]); the dataplane's compile thread does it
//! for every rule set that changed. Edits never wait for it: after an
//! install, rows added go into a small tuple space of their own (the
//! delta) and rows removed are marked in a stale bitmap, so a lookup takes
//! the forest's best row, lets the delta improve on it, and falls back to
//! the full tuple space (which always holds every row) only when the
//! forest's row was removed since. The next compile folds the changes in.
//! `classify_after` (LOG and PASS resumption, slow path) always uses the
//! full tuple space.
//!
//! # IP sets and negation
//!
//! A rule side may name an IP set ([`AddrMatch::Set`]); the rule set keeps
//! the members and, when one is added or removed, adds or removes just
//! that member's rows for every rule naming the set. A rule with sets on
//! both sides compiles to the cross product of their members, so the
//! control side should keep one side small (for a pod's own rules one side
//! is usually the pod itself or `Any`). "Not" nets and selectors are to be
//! compiled the same way: the include set minus the exclude set is again a
//! set of prefixes (at most about 32 per excluded prefix for IPv4), so the
//! lookup never needs a negative match.
//!
//! # Actions
//!
//! [`Action::Log`] and [`Action::Pass`] do not end the evaluation in
//! Calico's model: the caller logs (or jumps to the next tier) and resumes
//! with [`Classifier::classify_after`] on the slow path.
//!
//! [`classbench`] loads the ClassBench rule sets and traces the tests and
//! the benchmark use.
//!
//! # Endpoint policy
//!
//! On top of the classifier sits the policy API's model (`policy.proto`):
//! [`spec`] has its objects in domain types, [`PolicyDb`] keeps them and
//! compiles each endpoint direction's tiers of policies into a rule set
//! (`compile`, with [`AddrSet`] turning negations into positive prefix
//! sets), and [`EndpointRules`] is what the workers get: per direction a
//! classifier snapshot and the meaning of each of its rules, including
//! the LOG, PASS and guard rules resolved with `classify_after`.

mod addrset;
pub mod classbench;
mod classifier;
mod compile;
mod db;
mod enforce;
mod family;
#[cfg(test)]
mod interpret;
pub mod log;
mod rule;
mod ruleset;
pub mod spec;
mod table;
#[cfg(test)]
mod tests;
mod tree;

pub use classifier::{Classifier, ClassifierStats};
pub use family::Family;
pub use rule::{
    Action, AddrMatch, Hit, IpNet, IpSetId, PacketKey, PacketKey4, PacketKey6, PortRange, Prefix,
    Priority, Rule, RuleId,
};
pub use ruleset::{CompileJob, CompiledRules, RuleSet};

pub use addrset::AddrSet;
pub use compile::MAX_EXPANSION;
pub use db::{ApplyError, PolicyCompile, PolicyDb};
pub use enforce::{
    Decision, DirectionRules, EndpointRules, RuleKind, RuleMeta, RuleName, DEFAULT_RULE,
};

/// Why a rule or rule-set edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("rule {0:?} already exists")]
    DuplicateRule(RuleId),
    #[error("priority {} is already used by rule {:?}", .0.0, .1)]
    DuplicatePriority(Priority, RuleId),
    #[error("priority u32::MAX is reserved")]
    ReservedPriority,
    #[error("no rule {0:?}")]
    UnknownRule(RuleId),
    #[error("port range {0}..={1} is empty")]
    PortRange(u16, u16),
    #[error("prefix length {0} is longer than the address")]
    PrefixLength(u8),
    #[error("{0:?} is not an IP prefix")]
    BadNet(String),
}
