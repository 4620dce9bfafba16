//! IP address management in Calico's model.
//!
//! IP pools are carved into blocks (default /26 for IPv4, /122 for IPv6);
//! a node claims blocks (block affinity) and assigns addresses from its own
//! blocks first, borrowing from other nodes' blocks when `strict_affinity`
//! is off. Every allocation carries a handle (container id + interface) so
//! it can be released by handle, and handles whose pod is gone are found
//! by garbage collection. A released address cools down before reuse.
//!
//! State lives behind [`IpamStore`], a compare-and-swap store over the
//! whole state: a locked file under the state directory in standalone
//! mode ([`FileStore`]), one cluster-scoped `IPAMState` custom resource in
//! a cluster ([`KubeStore`]). Every change is read–modify–CAS, retried with
//! jittered backoff on conflict, so concurrent allocations (threads or
//! processes) never hand out one address twice.
//!
//! Concurrent ADDs and DELs in one process are committed in groups: each
//! queues its change, and whichever of them holds the writer's turn
//! applies every queued change to one loaded state and swaps it in once.
//! A durable swap costs a write and two `fsync`s (~5 ms on a VM disk); a
//! hundred pods started at once then pay a few swaps, not a hundred in a
//! row, nor the retries of a hundred writers racing for one revision.
//!
//! The parts: `block` (block arithmetic and per-address records), `state`
//! (the stored document), `selector` and `pool` (which pools a request may
//! use), `allocator` (the algorithm, as pure functions), `store`,
//! `file_store` and `kube_store` (persistence), and [`Ipam`] here, which
//! joins them with the retry loop.

mod allocator;
mod block;
mod file_store;
mod kube_store;
mod pool;
mod selector;
mod state;
mod store;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::oneshot;

pub use block::{AllocationAttribute, Block, ReleasedAddress, MAX_BLOCK_ADDRESSES};
pub use file_store::{FileStore, LOCK_FILE, STATE_FILE};
pub use kube_store::{crds, KubeStore, OBJECT_NAME};
pub use pool::{DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6};
pub use state::{
    AffinityState, BlockAffinity, HandleRecord, IpamState, IpamStateResource, Revision,
    FORMAT_VERSION,
};
pub use store::{IpamStore, MemStore};

use allocator::Outcome;
use pool::PoolSet;

/// An `IPPool` as the datastore defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the blocks the pool is carved into; 0 means the
    /// default (/26 for IPv4, /122 for IPv6).
    pub block_size: u8,
    /// Calico-style selector of the nodes that may claim blocks; empty or
    /// "all()" selects every node. Supported: `all()`, `!all()`,
    /// `k == 'v'`, `k != 'v'` (true when absent), `has(k)`, joined by `&&`;
    /// anything else is refused by [`Ipam::set_pools`].
    pub node_selector: String,
    pub disabled: bool,
    /// Kept for a later slice; not acted upon yet.
    pub nat_outgoing: bool,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// When true a node never borrows from blocks affine to other nodes.
    pub strict_affinity: bool,
    /// How long a released address rests before it is handed out again.
    pub cooldown: Duration,
    /// How many times a change is tried against concurrent writers
    /// before [`IpamError::Contention`].
    pub max_attempts: u32,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            cooldown: Duration::from_secs(30),
            max_attempts: 100,
        }
    }
}

/// One allocation request (a CNI ADD).
#[derive(Debug, Clone, Default)]
pub struct AssignRequest {
    /// Unique per attachment: `"<container id>.<ifname>"`.
    pub handle: String,
    pub node: String,
    /// Labels of the node, for pools' node selectors.
    pub node_labels: BTreeMap<String, String>,
    pub namespace: String,
    pub pod: String,
    /// Pools (names or CIDRs) to use for IPv4, from the pod's or
    /// namespace's `caracal.io/ipv4pools` annotation; `None` = every
    /// enabled pool of the family that selects the node.
    pub ipv4_pools: Option<Vec<String>>,
    pub ipv6_pools: Option<Vec<String>>,
    /// Kept with the handle (e.g. the pod UID), for GC and display.
    pub attrs: BTreeMap<String, String>,
}

/// What an allocation gave: one address per family that has a usable pool
/// (host prefixes: /32, /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub ipv4: Option<IpNet>,
    pub ipv6: Option<IpNet>,
}

/// Who holds an allocation, kept with it for GC and display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleInfo {
    pub handle: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub addresses: Vec<IpAddr>,
    /// The request's `attrs`.
    pub attrs: BTreeMap<String, String>,
    /// When the allocation was made; GC can spare handles younger than
    /// the pod list it checks against.
    pub created: SystemTime,
}

/// Occupancy, for display: every configured pool with its blocks, and the
/// blocks of pools no longer configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamUsage {
    pub pools: Vec<PoolUsage>,
    pub orphan_blocks: Vec<BlockUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
    pub disabled: bool,
    /// Addresses that can be handed out: all but the network address and,
    /// for IPv4, the broadcast address.
    pub capacity: u128,
    pub used: u64,
    pub blocks: Vec<BlockUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    pub used: u32,
    /// Usable and unallocated, cooling ones included.
    pub free: u32,
    /// Of `free`, released less than the cool-down ago.
    pub cooling: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no IP pool for {family} selects node {node:?}")]
    NoPool { family: &'static str, node: String },
    #[error("unknown IP pool {0:?}")]
    UnknownPool(String),
    #[error("IP pools exhausted for {family}")]
    Exhausted { family: &'static str },
    #[error("too many concurrent updates; gave up after {0} attempts")]
    Contention(u32),
    #[error("IPAM store: {0}")]
    Store(String),
    #[error("invalid IP pool {pool:?}: {reason}")]
    InvalidPool { pool: String, reason: String },
}

impl IpamError {
    /// The same error for another waiter of a group commit.
    fn copy(&self) -> IpamError {
        match self {
            IpamError::Contention(n) => IpamError::Contention(*n),
            IpamError::Store(m) => IpamError::Store(m.clone()),
            other => IpamError::Store(other.to_string()),
        }
    }
}

/// IP address management over a store: the pools to allocate from, and
/// every operation as load → pure step → compare-and-swap, retried with
/// jittered exponential backoff when another writer wins.
#[derive(Debug)]
pub struct Ipam<S> {
    store: S,
    config: IpamConfig,
    pools: RwLock<Arc<PoolSet>>,
    /// Changes waiting for the next group commit.
    queue: Mutex<Vec<Queued>>,
    /// The turn to commit a group; held across its load and swap.
    writer: tokio::sync::Mutex<()>,
}

/// A change that commits in a group: both are idempotent (an assignment
/// of a handle that has addresses returns them; a second release finds
/// nothing), so a change whose committer was cancelled is simply queued
/// again.
#[derive(Debug, Clone)]
enum Change {
    Assign(AssignRequest),
    Release(String),
}

#[derive(Debug)]
enum Done {
    Assigned(Assigned),
    Released(Vec<IpAddr>),
}

#[derive(Debug)]
struct Queued {
    change: Change,
    reply: oneshot::Sender<Result<Done, IpamError>>,
}

/// First backoff after a lost swap; doubles up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(64);

impl<S: IpamStore> Ipam<S> {
    /// An IPAM with no pools yet (every assignment fails with `NoPool`
    /// until [`Ipam::set_pools`]).
    pub fn new(store: S, config: IpamConfig) -> Ipam<S> {
        Ipam {
            store,
            config,
            pools: RwLock::new(Arc::default()),
            queue: Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// Replaces the pools, after checking all of them: CIDRs without host
    /// bits, block sizes that fit the pool (0 = /26 for IPv4, /122 for
    /// IPv6; at most 4096 addresses a block), unique names, no overlaps,
    /// supported node selectors. On error the old pools stay.
    pub fn set_pools(&self, pools: Vec<IpPool>) -> Result<(), IpamError> {
        let set = Arc::new(PoolSet::new(pools)?);
        *self.pools.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    /// The pools in use, block sizes defaulted.
    pub fn pools(&self) -> Vec<IpPool> {
        self.pool_set().iter().map(|p| p.spec.clone()).collect()
    }

    fn pool_set(&self) -> Arc<PoolSet> {
        Arc::clone(&self.pools.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Gives `req.handle` one address per family that has a usable pool,
    /// or what it already has.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Assigned, IpamError> {
        match self.grouped(Change::Assign(req.clone())).await? {
            Done::Assigned(a) => Ok(a),
            Done::Released(_) => unreachable!("an assignment's answer"),
        }
    }

    /// Releases the handle's addresses; releasing an unknown handle is not
    /// an error and returns nothing.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        match self.grouped(Change::Release(handle.to_owned())).await? {
            Done::Released(r) => Ok(r),
            Done::Assigned(_) => unreachable!("a release's answer"),
        }
    }

    pub async fn get_by_handle(&self, handle: &str) -> Result<Option<HandleInfo>, IpamError> {
        let (state, _) = self.load().await?;
        Ok(state
            .handles
            .get(handle)
            .map(|record| allocator::handle_info(handle, record)))
    }

    /// Every allocation, by handle.
    pub async fn handles(&self) -> Result<Vec<HandleInfo>, IpamError> {
        let (state, _) = self.load().await?;
        Ok(state
            .handles
            .iter()
            .map(|(h, record)| allocator::handle_info(h, record))
            .collect())
    }

    /// Leak GC: releases every handle for which `live` returns false, and
    /// returns them. `live` may be called again for the same handle if a
    /// concurrent change forces a retry.
    pub async fn gc(
        &self,
        mut live: impl FnMut(&HandleInfo) -> bool + Send,
    ) -> Result<Vec<HandleInfo>, IpamError> {
        self.mutate(|state, _, now| Ok(allocator::gc(state, &mut live, now)))
            .await
    }

    /// Gives up `node`'s blocks that have no allocation and nothing
    /// cooling down (so another node may claim them); returns their CIDRs.
    pub async fn release_empty_blocks(&self, node: &str) -> Result<Vec<IpNet>, IpamError> {
        self.mutate(|state, _, now| {
            Ok(allocator::release_empty_blocks(
                state,
                node,
                now,
                &self.config,
            ))
        })
        .await
    }

    pub async fn usage(&self) -> Result<IpamUsage, IpamError> {
        let (state, _) = self.load().await?;
        let now = allocator::now_unix_ms();
        Ok(allocator::usage(
            &state,
            &self.pool_set(),
            now,
            &self.config,
        ))
    }

    /// Loads and checks the state, so that no step works on a damaged one.
    async fn load(&self) -> Result<(IpamState, Revision), IpamError> {
        let (state, revision) = self.store.load().await?;
        state
            .check()
            .map_err(|e| IpamError::Store(format!("IPAM state is inconsistent: {e}")))?;
        Ok((state, revision))
    }

    /// Queues `change` and waits for the group commit that carries it,
    /// committing the queue itself when its turn comes first.
    async fn grouped(&self, change: Change) -> Result<Done, IpamError> {
        loop {
            let (reply, mut answer) = oneshot::channel();
            self.lock_queue().push(Queued {
                change: change.clone(),
                reply,
            });
            let turn = self.writer.lock().await;
            match answer.try_recv() {
                Ok(done) => return done,
                // Taken by a committer that was cancelled: queue it again.
                Err(oneshot::error::TryRecvError::Closed) => continue,
                // Still queued: nobody took the queue since, so commit it.
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let group = std::mem::take(&mut *self.lock_queue());
            self.commit(group).await;
            drop(turn);
            if let Ok(done) = answer.await {
                return done;
            }
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies every change of `group` to one loaded state, each on its
    /// own copy so that a failing one leaves no trace, swaps the result in
    /// once (retried like [`Self::mutate`]) and answers each change.
    async fn commit(&self, group: Vec<Queued>) {
        let pools = self.pool_set();
        let attempts = self.config.max_attempts.max(1);
        let mut answers: Vec<Result<Done, IpamError>> = Vec::new();
        for attempt in 1..=attempts {
            let (mut state, revision) = match self.load().await {
                Ok(loaded) => loaded,
                Err(e) => {
                    answers = group.iter().map(|_| Err(e.copy())).collect();
                    break;
                }
            };
            let now = allocator::now_unix_ms();
            let mut changed = false;
            answers = group
                .iter()
                .map(|q| {
                    let mut trial = state.clone();
                    let outcome = match &q.change {
                        Change::Assign(req) => {
                            allocator::assign(&mut trial, &pools, req, &self.config, now)
                                .map(|o| (o.changed, Done::Assigned(o.value)))
                        }
                        Change::Release(handle) => {
                            let o = allocator::release(&mut trial, handle, now);
                            Ok((o.changed, Done::Released(o.value)))
                        }
                    };
                    outcome.map(|(c, done)| {
                        if c {
                            state = trial;
                            changed = true;
                        }
                        done
                    })
                })
                .collect();
            if !changed {
                break;
            }
            allocator::tidy(&mut state, now, &self.config);
            debug_assert_eq!(state.check(), Ok(()));
            match self.store.compare_and_swap(revision, &state).await {
                Ok(true) => break,
                Ok(false) if attempt < attempts => tokio::time::sleep(backoff(attempt)).await,
                Ok(false) => {
                    answers = group
                        .iter()
                        .map(|_| Err(IpamError::Contention(attempts)))
                        .collect();
                }
                Err(e) => {
                    answers = group.iter().map(|_| Err(e.copy())).collect();
                    break;
                }
            }
        }
        for (q, answer) in group.into_iter().zip(answers) {
            // A waiter that went away needs no answer.
            let _ = q.reply.send(answer);
        }
    }

    /// Runs `step` on a fresh copy of the state until its result is
    /// swapped in (or nothing changed).
    async fn mutate<T>(
        &self,
        mut step: impl FnMut(&mut IpamState, &PoolSet, u64) -> Result<Outcome<T>, IpamError> + Send,
    ) -> Result<T, IpamError> {
        let pools = self.pool_set();
        let attempts = self.config.max_attempts.max(1);
        for attempt in 1..=attempts {
            let (mut state, revision) = self.load().await?;
            let now = allocator::now_unix_ms();
            let outcome = step(&mut state, &pools, now)?;
            if !outcome.changed {
                return Ok(outcome.value);
            }
            allocator::tidy(&mut state, now, &self.config);
            debug_assert_eq!(state.check(), Ok(()));
            if self.store.compare_and_swap(revision, &state).await? {
                return Ok(outcome.value);
            }
            if attempt < attempts {
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Err(IpamError::Contention(attempts))
    }
}

/// A random delay up to `BACKOFF_BASE * 2^attempt`, capped ("full
/// jitter"), so that writers who lost together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX);
    // `RandomState` is randomly keyed per instance: enough for jitter,
    // without a dependency on a random number generator.
    let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
    ceiling.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn pool(name: &str, cidr: &str, block_size: u8) -> IpPool {
        IpPool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size,
            node_selector: String::new(),
            disabled: false,
            nat_outgoing: false,
        }
    }

    fn ipam(config: IpamConfig, pools: Vec<IpPool>) -> Ipam<MemStore> {
        let ipam = Ipam::new(MemStore::new(), config);
        ipam.set_pools(pools).unwrap();
        ipam
    }

    fn req(handle: &str) -> AssignRequest {
        AssignRequest {
            handle: handle.into(),
            node: "n1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lost_swaps_are_retried() {
        let ipam = ipam(IpamConfig::default(), vec![pool("p", "10.65.0.0/24", 0)]);
        ipam.store().force_misses(3);
        let a = ipam.auto_assign(&req("h")).await.unwrap();
        assert_eq!(a.ipv4.unwrap().to_string(), "10.65.0.1/32");
        assert_eq!(ipam.store().writes(), 1);
    }

    #[tokio::test]
    async fn endless_contention_gives_up() {
        let config = IpamConfig {
            max_attempts: 3,
            ..IpamConfig::default()
        };
        let ipam = ipam(config, vec![pool("p", "10.65.0.0/24", 0)]);
        ipam.store().force_misses(10);
        let err = ipam.auto_assign(&req("h")).await.unwrap_err();
        assert!(matches!(err, IpamError::Contention(3)), "{err}");
        assert_eq!(ipam.store().writes(), 0);
    }

    #[tokio::test]
    async fn a_failed_assignment_stores_nothing() {
        // One usable IPv6 address: the second request gets IPv4 planned,
        // fails on IPv6, and must not keep the IPv4 address.
        let ipam = ipam(
            IpamConfig::default(),
            vec![pool("v4", "10.65.0.0/24", 0), pool("v6", "fd00::/127", 127)],
        );
        ipam.auto_assign(&req("a")).await.unwrap();
        let err = ipam.auto_assign(&req("b")).await.unwrap_err();
        assert!(matches!(err, IpamError::Exhausted { family: "IPv6" }));
        let handles = ipam.handles().await.unwrap();
        assert_eq!(handles.len(), 1);
        let usage = ipam.usage().await.unwrap();
        assert_eq!(usage.pools[0].used, 1);
        assert_eq!(ipam.store().writes(), 1);
    }

    #[tokio::test]
    async fn repeated_requests_do_not_write() {
        let ipam = ipam(IpamConfig::default(), vec![pool("p", "10.65.0.0/24", 0)]);
        let mut r = req("h");
        r.pod = "web".into();
        r.attrs.insert("uid".into(), "1234".into());
        let first = ipam.auto_assign(&r).await.unwrap();
        assert_eq!(ipam.auto_assign(&r).await.unwrap(), first);
        assert_eq!(ipam.store().writes(), 1);
        let info = ipam.get_by_handle("h").await.unwrap().unwrap();
        assert_eq!(
            (info.pod.as_str(), info.attrs["uid"].as_str()),
            ("web", "1234")
        );
        assert!(info.created > SystemTime::UNIX_EPOCH);

        assert_eq!(ipam.release_by_handle("h").await.unwrap().len(), 1);
        assert!(ipam.release_by_handle("h").await.unwrap().is_empty());
        assert!(ipam.get_by_handle("h").await.unwrap().is_none());
        assert_eq!(ipam.store().writes(), 2);
    }

    #[tokio::test]
    async fn bad_pools_are_refused_and_the_old_ones_kept() {
        let ipam = ipam(IpamConfig::default(), vec![pool("p", "10.65.0.0/24", 0)]);
        let err = ipam
            .set_pools(vec![
                pool("a", "10.0.0.0/8", 0),
                pool("b", "10.1.0.0/16", 0),
            ])
            .unwrap_err();
        assert!(
            matches!(err, IpamError::InvalidPool { ref pool, .. } if pool == "b"),
            "{err}"
        );
        let pools = ipam.pools();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].block_size, DEFAULT_BLOCK_SIZE_V4);
        let empty = Ipam::new(MemStore::new(), IpamConfig::default());
        let err = empty.auto_assign(&req("h")).await.unwrap_err();
        assert!(matches!(err, IpamError::NoPool { .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_tasks_get_distinct_addresses() {
        let ipam = Arc::new(ipam(
            IpamConfig::default(),
            vec![
                pool("v4", "10.65.0.0/24", 28),
                pool("v6", "fd00::/120", 124),
            ],
        ));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let ipam = Arc::clone(&ipam);
                tokio::spawn(async move {
                    let mut r = req(&format!("h{i}"));
                    r.node = format!("n{}", i % 3);
                    ipam.auto_assign(&r).await.unwrap()
                })
            })
            .collect();
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for task in tasks {
            let a = task.await.unwrap();
            assert!(v4.insert(a.ipv4.unwrap()));
            assert!(v6.insert(a.ipv6.unwrap()));
        }
        assert_eq!((v4.len(), v6.len()), (100, 100));
        // Grouped or not (that depends on timing), never more than one
        // write per change.
        assert!((1..=100).contains(&ipam.store().writes()));
    }

    /// Holds the writer's turn until `n` changes are queued, so that they
    /// commit as one group.
    async fn queue_behind_writer<T: Send + 'static>(
        ipam: &Arc<Ipam<MemStore>>,
        changes: Vec<impl std::future::Future<Output = T> + Send + 'static>,
    ) -> Vec<T> {
        let turn = ipam.writer.lock().await;
        let n = changes.len();
        let tasks: Vec<_> = changes.into_iter().map(tokio::spawn).collect();
        while ipam.lock_queue().len() < n {
            tokio::task::yield_now().await;
        }
        drop(turn);
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_changes_commit_in_one_write() {
        let ipam = Arc::new(ipam(
            IpamConfig::default(),
            vec![pool("v4", "10.65.0.0/24", 28)],
        ));
        let assigns = (0..20)
            .map(|i| {
                let ipam = Arc::clone(&ipam);
                async move { ipam.auto_assign(&req(&format!("h{i}"))).await }
            })
            .collect();
        let got = queue_behind_writer(&ipam, assigns).await;
        let addrs: BTreeSet<_> = got.into_iter().map(|a| a.unwrap().ipv4.unwrap()).collect();
        assert_eq!(addrs.len(), 20, "distinct addresses");
        assert_eq!(ipam.store().writes(), 1, "one swap for the group");
        // Every assignment is in the stored state.
        assert_eq!(ipam.handles().await.unwrap().len(), 20);

        // Releases group too, and mix with assignments.
        let mixed = (0..10)
            .map(|i| {
                let ipam = Arc::clone(&ipam);
                async move {
                    if i % 2 == 0 {
                        ipam.release_by_handle(&format!("h{i}"))
                            .await
                            .map(|r| r.len())
                    } else {
                        ipam.auto_assign(&req(&format!("new{i}"))).await.map(|_| 1)
                    }
                }
            })
            .collect();
        let got = queue_behind_writer(&ipam, mixed).await;
        assert!(got.iter().all(|r| matches!(r, Ok(1))), "{got:?}");
        assert_eq!(ipam.store().writes(), 2);
        assert_eq!(ipam.handles().await.unwrap().len(), 20 - 5 + 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_change_leaves_its_group_unharmed() {
        let ipam = Arc::new(ipam(
            IpamConfig::default(),
            vec![pool("v4", "10.65.0.0/24", 28)],
        ));
        let changes = (0..6)
            .map(|i| {
                let ipam = Arc::clone(&ipam);
                async move {
                    let mut r = req(&format!("h{i}"));
                    if i == 3 {
                        r.ipv4_pools = Some(vec!["no-such-pool".into()]);
                    }
                    ipam.auto_assign(&r).await
                }
            })
            .collect();
        let got = queue_behind_writer(&ipam, changes).await;
        for (i, r) in got.iter().enumerate() {
            if i == 3 {
                assert!(matches!(r, Err(IpamError::UnknownPool(_))), "{r:?}");
            } else {
                assert!(r.is_ok(), "h{i}: {r:?}");
            }
        }
        assert_eq!(ipam.store().writes(), 1);
        let handles: BTreeSet<String> = ipam
            .handles()
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.handle)
            .collect();
        assert_eq!(handles.len(), 5);
        assert!(!handles.contains("h3"));
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_MAX && d <= BACKOFF_BASE * (1 << attempt.min(16)));
        }
        let distinct: BTreeSet<Duration> = (0..20).map(|_| backoff(10)).collect();
        assert!(distinct.len() > 10, "jitter varies");
    }
}
