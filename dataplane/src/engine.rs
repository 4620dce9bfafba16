//! The engine: owns the buffer pool, the workers and the desired state, and
//! turns API calls into new table snapshots for the workers.
//!
//! Every change is applied to the engine's master state under one mutex
//! (the API is not on the packet path), then published as a fresh
//! immutable [`Tables`] snapshot. [`Engine`] calls return once every worker
//! runs the new snapshot, so when an API call returns the dataplane
//! forwards by the new state (and a deleted tap is gone).
//!
//! The engine also owns the flow table the workers share, and a
//! housekeeping thread that sweeps it (expiry, eviction, reclamation)
//! about once a second, off the packet path. Policy changes go through the
//! [`PolicyDb`]: a batch is validated whole, applied, and published in one
//! snapshot in which every endpoint whose rules changed gets a new
//! `since` generation, so the flows through it are re-evaluated on their
//! next packet.
//!
//! Interfaces may be cross-connected by name (L2 xconnect, one direction
//! each); every publication resolves the names to ports, so a peer may be
//! created after the interface that names it. The workers' runtime
//! statistics only grow; [`Engine::clear_runtime`] keeps a baseline that
//! [`Engine::runtime`] subtracts.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::buffer::{BufferPool, BufferPoolConfig, DATA_SIZE};
use crate::config::EngineConfig;
use crate::flow::{FlowInfo, FlowTable, FlowTableConfig, FlowTimeouts, L4State};
use crate::graph::DropReason;
use crate::model::{
    CountersSnapshot, FlowEntry, InterfaceInfo, InterfaceKindSpec, InterfaceSpec, IpCidr, PathSpec,
    RouteOrigin, RouteSpec, RuntimeSnapshot, WorkerStats,
};
use crate::policy::log::{self as policy_log, LogEntry, PolicyLog};
use crate::policy::spec::{PolicyBatch, PolicyStateSpec};
use crate::policy::{ApplyError, PolicyDb};
use crate::port::memif::{MemifConfig, MemifPort, SocketAddress};
use crate::port::tap::{PodNetConfig, TapConfig, TapPort};
use crate::port::{Port, PortId};
use crate::tables::{
    lpm, AdjPath, Adjacency, Gateway, Lpm, PolicyMode, PortEntry, PortPolicy, Tables, MAX_PATHS,
};
use crate::worker::WorkerHandle;

/// Largest number of interfaces (port ids are 16-bit, one is reserved).
const MAX_PORTS: usize = u16::MAX as usize;
/// How long a change may take to reach every worker before we complain.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default IP MTU of an interface.
const DEFAULT_MTU: u16 = 1500;
/// How often the housekeeping thread sweeps the flow table.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// How often the compile thread looks for changed policy rule sets: a
/// change is enforced at once through the tuple space, and a rule set is
/// compiled again once it has held still for a period (or at once when an
/// eighth of its rows changed), so lookups are fast again within about two
/// periods.
const COMPILE_PERIOD: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("interface {0:?} not found")]
    NoSuchInterface(String),
    #[error("interface table full")]
    TooManyInterfaces,
    #[error("the dataplane is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Buffers(#[from] crate::buffer::BufferPoolError),
    #[error("tap: {0}")]
    Tap(#[from] crate::port::tap::TapError),
    #[error(transparent)]
    Memif(#[from] crate::port::memif::MemifError),
    #[error("worker: {0}")]
    Worker(std::io::Error),
    #[error("flow table: {0}")]
    Flows(#[from] crate::flow::FlowTableError),
    #[error(transparent)]
    Policy(#[from] ApplyError),
}

/// An interface and the device behind it.
#[derive(Debug)]
struct Iface {
    id: PortId,
    spec: InterfaceSpec,
    port: Arc<dyn Port>,
    ifindex: u32,
    /// The same port, for its connection state, when it is a memif.
    memif: Option<Arc<MemifPort>>,
}

/// A route and the adjacency it resolved to.
#[derive(Debug)]
struct RouteState {
    spec: RouteSpec,
    adjacency: u32,
}

/// Adjacencies shared by every route with the same paths.
#[derive(Debug, Default)]
struct AdjacencyTable {
    slots: Vec<Option<(Adjacency, usize)>>,
    index: HashMap<Vec<AdjPath>, u32>,
}

impl AdjacencyTable {
    fn acquire(&mut self, paths: Vec<AdjPath>) -> u32 {
        if let Some(&id) = self.index.get(&paths) {
            if let Some((_, refs)) = &mut self.slots[id as usize] {
                *refs += 1;
            }
            return id;
        }
        let adj = Adjacency::new(&paths);
        let id = match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.slots[i] = Some((adj, 1));
                i
            }
            None => {
                self.slots.push(Some((adj, 1)));
                self.slots.len() - 1
            }
        } as u32;
        self.index.insert(paths, id);
        id
    }

    fn release(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        if let Some((adj, refs)) = slot {
            *refs -= 1;
            if *refs == 0 {
                self.index.remove(adj.paths());
                *slot = None;
            }
        }
    }

    /// The table workers index; free slots hold any adjacency (no FIB
    /// entry points at them).
    fn snapshot(&self) -> Arc<[Adjacency]> {
        let filler = self.slots.iter().flatten().map(|(a, _)| *a).next();
        match filler {
            None => Arc::from(Vec::new()),
            Some(f) => self.slots.iter().map(|s| s.map_or(f, |(a, _)| a)).collect(),
        }
    }
}

/// The master copy of everything the workers forward by.
#[derive(Debug)]
struct State {
    generation: u64,
    shut_down: bool,
    gateway: Gateway,
    interfaces: BTreeMap<String, Iface>,
    ports: Vec<Option<PortEntry>>,
    /// Keyed by the prefix with host bits cleared.
    routes: BTreeMap<RouteKey, RouteState>,
    adjacencies: AdjacencyTable,
    fib4: Lpm<u32>,
    fib6: Lpm<u128>,
    policy: PolicyDb,
    /// Flow verdicts older than this generation are stale everywhere.
    verdicts_since: u64,
}

/// Orders IPv4 before IPv6, then by address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RouteKey {
    V4(u32, u8),
    V6(u128, u8),
}

impl RouteKey {
    fn of(prefix: &IpCidr) -> Self {
        match prefix.network() {
            IpCidr::V4(c) => RouteKey::V4(u32::from(c.address()), c.prefix_len()),
            IpCidr::V6(c) => RouteKey::V6(u128::from(c.address()), c.prefix_len()),
        }
    }
}

/// A background thread that calls a tick function every period until it
/// is stopped (or the function returns false).
#[derive(Debug)]
struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(
        name: &str,
        period: Duration,
        mut tick: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().expect("stop flag poisoned");
                loop {
                    let (g, _) = cv
                        .wait_timeout(stopped, period)
                        .expect("stop flag poisoned");
                    stopped = g;
                    if *stopped {
                        return;
                    }
                    // The flag is free while the tick runs.
                    drop(stopped);
                    let go_on = tick();
                    stopped = lock.lock().expect("stop flag poisoned");
                    if !go_on {
                        return;
                    }
                }
            })?;
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it, unless called from the thread
    /// itself (which then ends after its tick).
    fn stop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().expect("stop flag poisoned") = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The flow table's sweeper and the policy log's reader.
fn housekeeper(
    flows: Arc<FlowTable>,
    log: Arc<PolicyLog>,
    clock: Instant,
) -> std::io::Result<Background> {
    let mut next_sweep = Instant::now() + SWEEP_PERIOD;
    Background::spawn("caracal-flows", policy_log::DRAIN_PERIOD, move || {
        log.drain(clock.elapsed().as_nanos() as u64);
        if Instant::now() >= next_sweep {
            next_sweep += SWEEP_PERIOD;
            let r = flows.sweep(clock.elapsed().as_nanos() as u64);
            if r.expired + r.evicted > 0 {
                tracing::debug!(
                    expired = r.expired,
                    evicted = r.evicted,
                    live = r.live,
                    "flow sweep"
                );
            }
        }
        true
    })
}

/// Handle to a running dataplane. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    pool: Arc<BufferPool>,
    tables: Arc<ArcSwap<Tables>>,
    workers: Mutex<Vec<WorkerHandle>>,
    worker_count: usize,
    state: Mutex<State>,
    flows: Arc<FlowTable>,
    timeouts: FlowTimeouts,
    /// The time origin of the workers and the flow table.
    clock: Instant,
    housekeeper: Mutex<Background>,
    /// Compiles changed policy rule sets into decision trees.
    compiler: Mutex<Option<Background>>,
    /// Records of LOG rule matches, from the workers.
    policy_log: Arc<PolicyLog>,
    /// What [`Engine::runtime`] subtracts: the counters at the last clear.
    runtime_base: Mutex<RuntimeSnapshot>,
}

impl Engine {
    /// Creates the buffer pool and starts the workers.
    pub fn start(config: &EngineConfig) -> Result<Arc<Self>, EngineError> {
        if config.workers.is_empty() {
            return Err(EngineError::Invalid("at least one worker is needed".into()));
        }
        let pool = BufferPool::new(&BufferPoolConfig {
            buffers: config.buffers,
            hugepages: config.hugepages,
        })?;
        let tables = Arc::new(ArcSwap::from_pointee(Tables::default()));
        let timeouts = FlowTimeouts::default();
        let flows = FlowTable::new(&FlowTableConfig {
            capacity: config.flows,
            max_handles: config.workers.len() + 1,
            timeouts: timeouts.clone(),
            ..FlowTableConfig::default()
        })?;
        let clock = Instant::now();
        // Calibrate the cycle counter now rather than in the first API call.
        let tsc_hz = crate::worker::cycles_per_second();
        tracing::debug!(tsc_hz, "cycle counter calibrated");
        let policy_log = Arc::new(PolicyLog::default());
        let mut workers = Vec::with_capacity(config.workers.len());
        for (id, core) in config.workers.iter().enumerate() {
            let handle = flows.register()?;
            let spawned = WorkerHandle::spawn(
                id,
                *core,
                config.mode,
                pool.clone(),
                tables.clone(),
                handle,
                policy_log.clone(),
                clock,
            );
            match spawned {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in &mut workers {
                        w.signal_stop();
                        w.join();
                    }
                    return Err(EngineError::Worker(e));
                }
            }
        }
        let housekeeper = match housekeeper(flows.clone(), policy_log.clone(), clock) {
            Ok(h) => h,
            Err(e) => {
                for w in &mut workers {
                    w.signal_stop();
                    w.join();
                }
                return Err(EngineError::Worker(e));
            }
        };
        tracing::info!(
            workers = workers.len(),
            mode = ?config.mode,
            buffers = pool.total(),
            hugepages = pool.hugepages(),
            flows = flows.capacity(),
            "dataplane started"
        );
        let engine = Arc::new(Engine {
            pool,
            tables,
            worker_count: workers.len(),
            workers: Mutex::new(workers),
            state: Mutex::new(State {
                generation: 0,
                shut_down: false,
                gateway: Gateway::default(),
                interfaces: BTreeMap::new(),
                ports: Vec::new(),
                routes: BTreeMap::new(),
                adjacencies: AdjacencyTable::default(),
                fib4: Lpm::new(),
                fib6: Lpm::new(),
                policy: PolicyDb::new(),
                verdicts_since: 0,
            }),
            flows,
            timeouts,
            clock,
            housekeeper: Mutex::new(housekeeper),
            compiler: Mutex::new(None),
            policy_log,
            runtime_base: Mutex::new(RuntimeSnapshot::default()),
        });
        let weak = Arc::downgrade(&engine);
        let compiler = Background::spawn("caracal-compile", COMPILE_PERIOD, move || {
            let Some(engine) = weak.upgrade() else {
                return false;
            };
            engine.compile_policies().is_ok()
        })
        .map_err(EngineError::Worker)?;
        *engine.compiler.lock().expect("compiler poisoned") = Some(compiler);
        Ok(engine)
    }

    /// Compiles every policy rule set that changed since its last compile
    /// into decision trees (off the engine lock: the jobs run between two
    /// short lock holds), installs them and publishes; returns how many
    /// were installed. The compile thread calls this every
    /// [`COMPILE_PERIOD`]; verdicts never change, only lookups get faster.
    pub fn compile_policies(&self) -> Result<usize, EngineError> {
        let jobs = self.lock()?.policy.compile_jobs();
        if jobs.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let rows: usize = jobs.iter().map(|(_, j)| j.rows()).sum();
        let done: Vec<_> = jobs
            .into_iter()
            .map(|(key, job)| (key, job.run()))
            .collect();
        let compiled = started.elapsed();
        let mut st = self.lock()?;
        let mut installed = 0;
        for (key, result) in done {
            if !st.policy.install_compiled(&key, result) {
                continue;
            }
            installed += 1;
            let Some(id) = st.interfaces.get(&key.endpoint).map(|i| i.id) else {
                continue;
            };
            let rules = st.policy.endpoint_rules(&key.endpoint).expect("installed");
            let entry = st.ports[id.index()].as_mut().expect("interface has a port");
            // Same verdicts: flows decided before keep their verdicts
            // (`since` stays).
            if matches!(entry.policy.mode, PolicyMode::Enforced(_)) {
                entry.policy.mode = PolicyMode::Enforced(rules);
            }
        }
        self.publish(&mut st);
        tracing::debug!(
            rule_sets = installed,
            rows,
            compile_us = compiled.as_micros() as u64,
            "policy compiled"
        );
        Ok(installed)
    }

    /// The buffer pool (for accounting checks).
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, EngineError> {
        let st = self.state.lock().expect("engine state poisoned");
        if st.shut_down {
            return Err(EngineError::ShuttingDown);
        }
        Ok(st)
    }

    /// Creates an interface, or confirms one with the same spec, or
    /// replaces one of the same name with a different spec.
    pub fn add_interface(&self, mut spec: InterfaceSpec) -> Result<InterfaceInfo, EngineError> {
        validate_interface(&mut spec)?;
        let mut st = self.lock()?;
        if let Some(existing) = st.interfaces.get(&spec.name) {
            if existing.spec == spec {
                return Ok(self.info(&st, existing));
            }
            let in_place = InterfaceSpec {
                policy_enforced: spec.policy_enforced,
                xconnect: spec.xconnect.clone(),
                ..existing.spec.clone()
            } == spec;
            if in_place {
                let old = existing.spec.clone();
                let iface = st.interfaces.get_mut(&spec.name).expect("found above");
                iface.spec.xconnect.clone_from(&spec.xconnect);
                if old.policy_enforced != spec.policy_enforced {
                    // Publishes the cross-connect too.
                    self.set_policy_enforced(&mut st, &spec.name, spec.policy_enforced);
                } else {
                    self.publish(&mut st);
                }
                if old.xconnect != spec.xconnect {
                    tracing::info!(name = %spec.name, xconnect = ?spec.xconnect, "interface cross-connect changed");
                }
                return Ok(self.info(&st, &st.interfaces[&spec.name]));
            }
            self.remove_interface(&mut st, &spec.name);
        }
        for other in st.interfaces.values() {
            if let Some(a) = spec.addresses.iter().find(|a| {
                other
                    .spec
                    .addresses
                    .iter()
                    .any(|b| b.address() == a.address())
            }) {
                return Err(EngineError::Invalid(format!(
                    "address {} already belongs to interface {:?}",
                    a.address(),
                    other.spec.name
                )));
            }
        }
        for a in &spec.addresses {
            if let Some(r) = st.routes.get(&RouteKey::of(&a.host())) {
                return Err(EngineError::Invalid(format!(
                    "address {} is already routed by route {}",
                    a.address(),
                    r.spec.prefix
                )));
            }
        }
        let id = match st.ports.iter().position(Option::is_none) {
            Some(i) => PortId(i as u16),
            None if st.ports.len() < MAX_PORTS => {
                st.ports.push(None);
                PortId((st.ports.len() - 1) as u16)
            }
            None => return Err(EngineError::TooManyInterfaces),
        };
        let mut memif = None;
        let (port, ifindex): (Arc<dyn Port>, u32) = match &spec.kind {
            InterfaceKindSpec::Tap(tap) => {
                let queues = if tap.queues == 0 {
                    self.worker_count as u16
                } else {
                    tap.queues
                };
                let t = TapPort::create(&TapConfig {
                    netns: tap.netns.clone(),
                    ifname: tap.ifname.clone(),
                    queues,
                    mtu: spec.mtu,
                    pod: tap.configure.then(|| PodNetConfig {
                        addresses: spec.addresses.clone(),
                    }),
                })?;
                let ifindex = t.ifindex();
                (t, ifindex)
            }
            InterfaceKindSpec::Memif(m) => {
                let queues = if m.queues == 0 {
                    self.worker_count as u16
                } else {
                    m.queues
                };
                let port = MemifPort::create(&MemifConfig {
                    name: spec.name.clone(),
                    socket: SocketAddress::parse(&m.socket)?,
                    role: m.role,
                    id: m.id,
                    secret: m.secret.clone(),
                    queues,
                    mode: m.mode,
                    rx_mode: m.rx_mode,
                    ring_size: m.ring_size,
                    buffer_size: m.buffer_size,
                    peer_mac: m
                        .peer_mac
                        .unwrap_or(caracal_wire::EthernetAddress::BROADCAST),
                    mtu: spec.mtu,
                    hugepages: self.pool.hugepages(),
                })?;
                memif = Some(port.clone());
                (port, 0)
            }
        };
        let entry = PortEntry {
            port: port.clone(),
            name: Arc::from(spec.name.as_str()),
            peer_mac: port.peer_mac(),
            mtu: spec.mtu,
            ipv4: spec
                .addresses
                .iter()
                .filter_map(|a| match a.address() {
                    IpAddr::V4(v) => Some(v),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            ipv6: spec
                .addresses
                .iter()
                .filter_map(|a| match a.address() {
                    IpAddr::V6(v) => Some(v),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            policy: PortPolicy {
                mode: if spec.policy_enforced {
                    PolicyMode::NotReady
                } else {
                    PolicyMode::Open
                },
                since: st.generation + 1,
            },
        };
        st.ports[id.index()] = Some(entry);
        let iface = Iface {
            id,
            spec: spec.clone(),
            port,
            ifindex,
            memif,
        };
        st.interfaces.insert(spec.name.clone(), iface);
        for a in &spec.addresses {
            let route = RouteSpec {
                prefix: a.host(),
                paths: vec![PathSpec {
                    interface: spec.name.clone(),
                    gateway: None,
                }],
                origin: RouteOrigin::Interface,
            };
            install_route(&mut st, route)?;
        }
        self.publish(&mut st);
        tracing::info!(name = %spec.name, %id, "interface added");
        Ok(self.info(&st, &st.interfaces[&spec.name]))
    }

    /// Removes an interface and its routes; `Ok(false)` if it did not exist.
    pub fn delete_interface(&self, name: &str) -> Result<bool, EngineError> {
        let mut st = self.lock()?;
        let existed = self.remove_interface(&mut st, name);
        if existed {
            tracing::info!(name, "interface deleted");
        }
        Ok(existed)
    }

    /// Takes an interface out of the tables, publishes, then drops it
    /// (which closes its device once no worker holds a queue on it).
    fn remove_interface(&self, st: &mut State, name: &str) -> bool {
        let Some(iface) = st.interfaces.remove(name) else {
            return false;
        };
        let keys: Vec<RouteKey> = st
            .routes
            .iter()
            .filter(|(_, r)| r.spec.paths.iter().any(|p| p.interface == name))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let mut r = uninstall_route(st, k).expect("listed above");
            r.paths.retain(|p| p.interface != name);
            if r.origin == RouteOrigin::Api && !r.paths.is_empty() {
                install_route(st, r).expect("remaining paths resolve");
            }
        }
        st.ports[iface.id.index()] = None;
        st.policy.remove_endpoint(name);
        self.publish(st);
        drop(iface);
        true
    }

    /// Turns fail-closed on or off for an existing interface.
    fn set_policy_enforced(&self, st: &mut State, name: &str, enforced: bool) {
        let iface = st.interfaces.get_mut(name).expect("checked by the caller");
        iface.spec.policy_enforced = enforced;
        let id = iface.id;
        if !st.policy.has_endpoint(name) {
            let since = st.generation + 1;
            let entry = st.ports[id.index()].as_mut().expect("interface has a port");
            entry.policy = PortPolicy {
                mode: if enforced {
                    PolicyMode::NotReady
                } else {
                    PolicyMode::Open
                },
                since,
            };
        }
        self.publish(st);
        tracing::info!(name, enforced, "interface policy enforcement changed");
    }

    /// Applies a policy batch as one change: validated whole first, then
    /// applied and published; returns the generation every worker runs.
    pub fn apply_policy(&self, batch: PolicyBatch) -> Result<u64, EngineError> {
        let started = Instant::now();
        let mut st = self.lock()?;
        st.policy
            .validate(&batch, |name| st.interfaces.contains_key(name))?;
        if batch.is_empty() {
            return Ok(st.generation);
        }
        let validated = Instant::now();
        let State {
            policy, interfaces, ..
        } = &mut *st;
        let dirty = policy.apply(batch, |name| {
            interfaces.get(name).map_or_else(Vec::new, |i| {
                i.spec.addresses.iter().map(IpCidr::address).collect()
            })
        });
        let applied = Instant::now();
        let since = st.generation + 1;
        for name in &dirty {
            let Some(id) = st.interfaces.get(name).map(|i| i.id) else {
                continue;
            };
            let rules = st.policy.endpoint_rules(name).expect("just compiled");
            let entry = st.ports[id.index()].as_mut().expect("interface has a port");
            entry.policy = PortPolicy {
                mode: PolicyMode::Enforced(rules),
                since,
            };
        }
        self.publish(&mut st);
        if !dirty.is_empty() {
            tracing::debug!(
                endpoints = dirty.len(),
                generation = st.generation,
                validate_us = (validated - started).as_micros() as u64,
                apply_us = (applied - validated).as_micros() as u64,
                publish_us = applied.elapsed().as_micros() as u64,
                "policy applied"
            );
        }
        Ok(st.generation)
    }

    /// The policy state (all, or what one interface uses), with the
    /// generation that enforces it.
    pub fn policy_state(&self, interface: Option<&str>) -> PolicyStateSpec {
        let st = self.state.lock().expect("engine state poisoned");
        let mut s = st.policy.state(interface);
        s.generation = st.generation;
        s
    }

    /// The flow table's flows (at most `limit`, 0 for all).
    /// The newest `limit` records of LOG rule matches (all kept if 0),
    /// oldest first, and how many were lost to a full queue.
    pub fn policy_log(&self, limit: usize) -> (Vec<LogEntry>, u64) {
        let now = self.clock.elapsed().as_nanos() as u64;
        (self.policy_log.recent(now, limit), self.policy_log.lost())
    }

    pub fn flows(&self, limit: usize) -> Vec<FlowEntry> {
        let now = self.clock.elapsed().as_nanos() as u64;
        let mut infos = Vec::new();
        self.flows.for_each_flow(now, |f| {
            if limit == 0 || infos.len() < limit {
                infos.push(f.clone());
            }
        });
        let st = self.state.lock().expect("engine state poisoned");
        infos
            .iter()
            .map(|f| flow_entry(f, &st.policy, &self.timeouts))
            .collect()
    }

    /// The flow table, for statistics.
    pub fn flow_table(&self) -> &Arc<FlowTable> {
        &self.flows
    }

    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        let st = self.state.lock().expect("engine state poisoned");
        st.interfaces.values().map(|i| self.info(&st, i)).collect()
    }

    fn info(&self, st: &State, i: &Iface) -> InterfaceInfo {
        let _ = st;
        let memif = i.memif.as_ref().map(|m| m.status());
        InterfaceInfo {
            id: i.id,
            spec: i.spec.clone(),
            kind: i.port.kind(),
            mac: i.port.peer_mac(),
            ifindex: i.ifindex,
            up: memif.as_ref().is_none_or(|m| m.connected),
            stats: i.port.stats(),
            memif,
        }
    }

    /// Creates or replaces the route for `route.prefix` (as an `Api`
    /// route). Every path's interface must exist.
    pub fn add_route(&self, mut route: RouteSpec) -> Result<(), EngineError> {
        route.origin = RouteOrigin::Api;
        route.prefix = route.prefix.network();
        if route.paths.is_empty() || route.paths.len() > MAX_PATHS {
            return Err(EngineError::Invalid(format!(
                "a route needs 1 to {MAX_PATHS} paths"
            )));
        }
        let mut st = self.lock()?;
        let key = RouteKey::of(&route.prefix);
        match st.routes.get(&key) {
            Some(r) if r.spec.origin == RouteOrigin::Interface => {
                return Err(EngineError::Invalid(format!(
                    "{} is the address of interface {:?}",
                    route.prefix, r.spec.paths[0].interface
                )))
            }
            Some(r) if r.spec == route => return Ok(()),
            _ => {}
        }
        // Resolve before touching anything so a bad path changes nothing.
        resolve_paths(&st, &route.paths)?;
        if st.routes.contains_key(&key) {
            uninstall_route(&mut st, key);
        }
        install_route(&mut st, route)?;
        // Flows may now leave by another port: decide them again.
        st.verdicts_since = st.generation + 1;
        self.publish(&mut st);
        Ok(())
    }

    /// Removes an API route; `Ok(false)` if there was none.
    pub fn delete_route(&self, prefix: IpCidr) -> Result<bool, EngineError> {
        let mut st = self.lock()?;
        let key = RouteKey::of(&prefix);
        match st.routes.get(&key) {
            None => return Ok(false),
            Some(r) if r.spec.origin == RouteOrigin::Interface => {
                return Err(EngineError::Invalid(format!(
                    "{} belongs to interface {:?}; delete the interface instead",
                    prefix, r.spec.paths[0].interface
                )))
            }
            Some(_) => {}
        }
        uninstall_route(&mut st, key);
        st.verdicts_since = st.generation + 1;
        self.publish(&mut st);
        Ok(true)
    }

    /// All routes, interface host routes included, IPv4 first, by prefix.
    pub fn routes(&self) -> Vec<RouteSpec> {
        let st = self.state.lock().expect("engine state poisoned");
        st.routes.values().map(|r| r.spec.clone()).collect()
    }

    pub fn counters(&self) -> CountersSnapshot {
        let workers = self.workers.lock().expect("worker list poisoned");
        let workers = workers
            .iter()
            .map(|w| {
                let c = &w.shared.counters;
                WorkerStats {
                    worker: w.shared.id,
                    core: w.shared.core,
                    vectors: c.vectors.load(Ordering::Relaxed),
                    packets: c.packets.load(Ordering::Relaxed),
                    drops: DropReason::ALL
                        .iter()
                        .map(|r| (*r, c.drops[*r as usize].load(Ordering::Relaxed)))
                        .filter(|(_, n)| *n > 0)
                        .collect(),
                }
            })
            .collect();
        CountersSnapshot {
            workers,
            pool: self.pool.stats(),
            buffer_size: DATA_SIZE as u32,
        }
    }

    /// The workers' runtime statistics (VPP's `show runtime`) since the
    /// start or the last [`Engine::clear_runtime`].
    pub fn runtime(&self) -> RuntimeSnapshot {
        let now = self.raw_runtime();
        now.since(&self.runtime_base.lock().expect("runtime baseline poisoned"))
    }

    /// Starts the runtime statistics from zero (for [`Engine::runtime`];
    /// the workers' own counters keep growing).
    pub fn clear_runtime(&self) {
        let now = self.raw_runtime();
        *self.runtime_base.lock().expect("runtime baseline poisoned") = now;
    }

    fn raw_runtime(&self) -> RuntimeSnapshot {
        let workers = self.workers.lock().expect("worker list poisoned");
        RuntimeSnapshot {
            tsc_hz: crate::worker::cycles_per_second(),
            workers: workers.iter().map(|w| w.shared.runtime()).collect(),
        }
    }

    /// Stops the workers and removes every interface. Idempotent.
    pub fn shutdown(&self) {
        // Before taking the state: a compile pass may be waiting for it.
        if let Some(c) = self.compiler.lock().expect("compiler poisoned").as_mut() {
            c.stop();
        }
        let mut st = self.state.lock().expect("engine state poisoned");
        if st.shut_down {
            return;
        }
        st.shut_down = true;
        self.housekeeper
            .lock()
            .expect("housekeeper poisoned")
            .stop();

        let mut workers = self.workers.lock().expect("worker list poisoned");
        for w in workers.iter() {
            w.signal_stop();
        }
        for w in workers.iter_mut() {
            w.join();
        }
        self.tables.store(Arc::new(Tables::default()));
        let n = st.interfaces.len();
        st.routes.clear();
        st.ports.clear();
        st.interfaces.clear();
        tracing::info!(interfaces = n, "dataplane stopped");
    }

    /// Publishes the master state and waits until every worker runs it.
    fn publish(&self, st: &mut State) {
        st.generation += 1;
        let mut xconnects = vec![None; st.ports.len()];
        for i in st.interfaces.values() {
            if let Some(peer) = &i.spec.xconnect {
                let to = st.interfaces.get(peer).map_or(PortId::INVALID, |p| p.id);
                xconnects[i.id.index()] = Some(to);
            }
        }
        let tables = Tables {
            generation: st.generation,
            gateway: st.gateway,
            fib4: st.fib4.clone(),
            fib6: st.fib6.clone(),
            adjacencies: st.adjacencies.snapshot(),
            ports: Arc::from(st.ports.clone()),
            verdicts_since: st.verdicts_since,
            xconnects: xconnects.into(),
        };
        self.tables.store(Arc::new(tables));
        let workers = self.workers.lock().expect("worker list poisoned");
        for w in workers.iter() {
            w.shared.wake.notify();
        }
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        for w in workers.iter() {
            while w.shared.seen_generation.load(Ordering::Acquire) < st.generation {
                if Instant::now() > deadline {
                    tracing::error!(
                        worker = w.shared.id,
                        "worker did not pick up generation {}",
                        st.generation
                    );
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// A flow as `ListFlows` reports it.
fn flow_entry(f: &FlowInfo, policy: &PolicyDb, t: &FlowTimeouts) -> FlowEntry {
    let s = f.status;
    let (state, timeout) = match s.l4 {
        L4State::Tcp(tcp) => {
            use crate::flow::TcpState as T;
            let timeout = match tcp {
                T::SynSent => t.tcp_syn_sent,
                T::SynRecv => t.tcp_syn_recv,
                T::Established => t.tcp_established,
                T::FinWait => t.tcp_fin_wait,
                T::CloseWait => t.tcp_close_wait,
                T::LastAck => t.tcp_last_ack,
                T::TimeWait => t.tcp_time_wait,
                T::Close => t.tcp_close,
            };
            (tcp.name().to_owned(), timeout)
        }
        other => {
            let state = if s.assured {
                "ASSURED"
            } else if s.seen_reply {
                "REPLIED"
            } else {
                "UNREPLIED"
            };
            let timeout = match other {
                L4State::Udp if s.assured => t.udp_assured,
                L4State::Udp => t.udp_unreplied,
                L4State::Icmp => t.icmp,
                _ => t.other,
            };
            (state.to_owned(), timeout)
        }
    };
    let ms = |ns: u64| u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX);
    let idle = f.idle_ns;
    let endpoint = |(a, p): (IpAddr, u16)| SocketAddr::new(a, p).to_string();
    FlowEntry {
        protocol: f.key.proto().to_string(),
        src: endpoint(f.key.src()),
        dst: endpoint(f.key.dst()),
        state,
        allowed: f.verdict.map(|v| v.allowed),
        rule: f
            .verdict
            .map(|v| policy.rule_name(v.rule.0).to_owned())
            .unwrap_or_default(),
        packets: f.packets,
        bytes: f.bytes,
        idle_ms: ms(idle),
        expires_ms: ms((timeout.as_nanos() as u64).saturating_sub(idle)),
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn validate_interface(spec: &mut InterfaceSpec) -> Result<(), EngineError> {
    if spec.name.is_empty() {
        return Err(EngineError::Invalid("interface name is empty".into()));
    }
    if spec.xconnect.as_deref() == Some("") {
        spec.xconnect = None;
    }
    if spec.xconnect.as_deref() == Some(spec.name.as_str()) {
        return Err(EngineError::Invalid(format!(
            "interface {:?} cannot be cross-connected to itself",
            spec.name
        )));
    }
    if spec.mtu == 0 {
        spec.mtu = DEFAULT_MTU;
    }
    if !(576..=9000).contains(&spec.mtu) {
        return Err(EngineError::Invalid(format!(
            "mtu {} outside 576..=9000",
            spec.mtu
        )));
    }
    if spec
        .addresses
        .iter()
        .any(|a| a.address().is_unspecified() || a.address().is_multicast())
    {
        return Err(EngineError::Invalid(
            "interface addresses must be unicast".into(),
        ));
    }
    match &mut spec.kind {
        InterfaceKindSpec::Tap(tap) => {
            if tap.ifname.is_empty() {
                tap.ifname = "eth0".into();
            }
            if tap.ifname.len() > 15 {
                return Err(EngineError::Invalid(format!(
                    "ifname {:?} longer than 15 bytes",
                    tap.ifname
                )));
            }
            if tap.netns.as_os_str().is_empty() {
                return Err(EngineError::Invalid("tap.netns is empty".into()));
            }
        }
        InterfaceKindSpec::Memif(_) => {
            // Frames travel in one packet buffer each.
            if spec.mtu > crate::port::memif::MAX_MTU {
                return Err(EngineError::Invalid(format!(
                    "mtu {}: a memif interface carries at most {}",
                    spec.mtu,
                    crate::port::memif::MAX_MTU
                )));
            }
        }
    }
    Ok(())
}

/// Resolves paths to adjacency paths (port, MAC, MTU).
fn resolve_paths(st: &State, paths: &[PathSpec]) -> Result<Vec<AdjPath>, EngineError> {
    let mut out: Vec<AdjPath> = paths
        .iter()
        .map(|p| {
            let iface = st
                .interfaces
                .get(&p.interface)
                .ok_or_else(|| EngineError::NoSuchInterface(p.interface.clone()))?;
            let entry = st.ports[iface.id.index()]
                .as_ref()
                .expect("interface has a port");
            Ok(AdjPath {
                port: iface.id,
                dst_mac: entry.peer_mac,
                mtu: entry.mtu,
            })
        })
        .collect::<Result<_, EngineError>>()?;
    // The same set of paths in any order is the same adjacency.
    out.sort_by_key(|p| p.port);
    Ok(out)
}

fn install_route(st: &mut State, route: RouteSpec) -> Result<(), EngineError> {
    let paths = resolve_paths(st, &route.paths)?;
    let adj = st.adjacencies.acquire(paths);
    assert!(adj <= lpm::MAX_NEXT_HOP);
    let key = RouteKey::of(&route.prefix);
    match key {
        RouteKey::V4(a, l) => st.fib4.insert(a, l, adj),
        RouteKey::V6(a, l) => st.fib6.insert(a, l, adj),
    }
    st.routes.insert(
        key,
        RouteState {
            spec: route,
            adjacency: adj,
        },
    );
    Ok(())
}

/// Removes a route from the FIB, restoring the covering route beneath it.
fn uninstall_route(st: &mut State, key: RouteKey) -> Option<RouteSpec> {
    let r = st.routes.remove(&key)?;
    match key {
        RouteKey::V4(a, l) => {
            let cover = (0..l).rev().find_map(|d| {
                let k = RouteKey::V4(lpm::LpmKey::mask(a, d), d);
                st.routes.get(&k).map(|r| (d, r.adjacency))
            });
            st.fib4.remove(a, l, cover);
        }
        RouteKey::V6(a, l) => {
            let cover = (0..l).rev().find_map(|d| {
                let k = RouteKey::V6(lpm::LpmKey::mask(a, d), d);
                st.routes.get(&k).map(|r| (d, r.adjacency))
            });
            st.fib6.remove(a, l, cover);
        }
    }
    st.adjacencies.release(r.adjacency);
    Some(r.spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MemifMode, MemifRole, MemifRxMode, MemifSpec};
    use crate::policy::spec::{
        DefaultAction, EndAction, EndpointPolicySpec, PolicySpec, RuleSpec, TierSpec,
    };
    use crate::policy::{Action, PacketKey4, PortRange};

    /// An engine with one fail-closed memif endpoint `name`.
    fn engine_with_endpoint(name: &str) -> Arc<Engine> {
        let engine = Engine::start(&EngineConfig::small()).unwrap();
        engine
            .add_interface(InterfaceSpec {
                name: name.into(),
                addresses: vec!["10.66.0.9/32".parse().unwrap()],
                mtu: 0,
                kind: InterfaceKindSpec::Memif(MemifSpec {
                    socket: format!(
                        "@caracal-engine-{}-{}",
                        name.replace('/', "-"),
                        std::process::id()
                    )
                    .into(),
                    role: MemifRole::Server,
                    id: 0,
                    secret: None,
                    queues: 1,
                    mode: MemifMode::Ethernet,
                    rx_mode: MemifRxMode::Polling,
                    ring_size: 0,
                    buffer_size: 0,
                    peer_mac: None,
                }),
                policy_enforced: true,
                xconnect: None,
            })
            .unwrap();
        engine
    }

    /// Rules of many shapes (prefix lengths, ports), so that the tuple
    /// space holds several tables.
    fn many_rules() -> Vec<RuleSpec> {
        (0..200u16)
            .map(|i| {
                let mut r = RuleSpec::new(if i % 3 == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                });
                r.protocol = Some(if i % 2 == 0 { 6 } else { 17 });
                let net = format!("10.{}.{}.0/{}", i % 7, i % 13, 16 + i % 9);
                r.source.nets = vec![net.parse().unwrap()];
                r.destination.ports = vec![PortRange::new(i * 10, i * 10 + i % 4).unwrap()];
                r
            })
            .collect()
    }

    /// `ingress` as the endpoint's one policy.
    fn policy(name: &str, ingress: Vec<RuleSpec>) -> PolicyBatch {
        PolicyBatch {
            set_policies: vec![PolicySpec {
                name: "many".into(),
                ingress,
                egress: vec![],
            }],
            set_endpoints: vec![EndpointPolicySpec {
                interface: name.into(),
                ingress: vec![TierSpec {
                    name: "default".into(),
                    policies: vec!["many".into()],
                    end_action: EndAction::Deny,
                }],
                egress: vec![],
                ingress_default: DefaultAction::Allow,
                egress_default: DefaultAction::Allow,
            }],
            ..PolicyBatch::default()
        }
    }

    /// The ingress classifier the workers run for `name`.
    fn classifier(engine: &Engine, name: &str) -> crate::policy::Classifier {
        let tables = engine.tables.load();
        let id = engine.lock().unwrap().interfaces[name].id;
        match &tables.port(id).unwrap().policy.mode {
            PolicyMode::Enforced(rules) => rules.ingress.classifier().clone(),
            other => panic!("not enforced: {other:?}"),
        }
    }

    /// A policy change is enforced through the tuple space at once; the
    /// compile pass then gives the endpoint decision trees with the same
    /// verdicts, and a later change goes back to the tuple space for the
    /// changed rules only until the next pass.
    #[test]
    fn compile_pass_speeds_up_without_changing_verdicts() {
        let name = "ns/compiled";
        let engine = engine_with_endpoint(name);
        let ingress = many_rules();
        let classifier = || classifier(&engine, name);
        let keys: Vec<PacketKey4> = (0..4000u32)
            .map(|i| {
                let src = 0x0a00_0000 | (i % 7) << 16 | (i % 13) << 8 | (i * 37) & 0xff;
                PacketKey4::new(
                    src,
                    0x0a42_0009,
                    [6, 17][i as usize % 2],
                    40000,
                    (i % 2100) as u16,
                )
            })
            .collect();
        let verdicts = |c: &crate::policy::Classifier| {
            let mut out = vec![None; keys.len()];
            c.classify_batch(&keys, &mut out);
            out
        };

        // Stop the compile thread so the test decides when passes run.
        engine.compiler.lock().unwrap().as_mut().unwrap().stop();
        engine.apply_policy(policy(name, ingress.clone())).unwrap();
        let before = classifier();
        assert_eq!(before.stats().trees, 0);
        assert!(before.stats().tables4 > 2, "{:?}", before.stats());
        let want = verdicts(&before);
        assert!(want.iter().any(Option::is_some));

        // The first pass sees a rule set that just changed and waits a
        // period for it to hold still; the next compiles it.
        assert_eq!(engine.compile_policies().unwrap(), 0, "changed just now");
        assert_eq!(engine.compile_policies().unwrap(), 1);
        let after = classifier();
        assert!(after.stats().trees > 0, "{:?}", after.stats());
        assert_eq!(verdicts(&after), want);
        assert_eq!(engine.compile_policies().unwrap(), 0, "nothing changed");

        // Drop the first rule: enforced at once, beside the trees.
        let changed = policy(name, ingress[1..].to_vec());
        engine.apply_policy(changed).unwrap();
        let edited = classifier();
        let s = edited.stats();
        assert!(s.trees > 0 && s.rows_removed + s.rows_added > 0, "{s:?}");
        let edited_verdicts = verdicts(&edited);
        assert_ne!(edited_verdicts, want, "the dropped rule decided some keys");
        // The policy's rules all moved up one priority: too much changed
        // to wait for the rule set to hold still.
        assert_eq!(engine.compile_policies().unwrap(), 1);
        let recompiled = classifier();
        let s = recompiled.stats();
        assert_eq!((s.rows_removed, s.rows_added), (0, 0), "{s:?}");
        assert_eq!(verdicts(&recompiled), edited_verdicts);
        engine.shutdown();
    }

    /// Nobody asks: the compile thread finds the changed rule set itself.
    #[test]
    fn compile_thread_compiles_changed_rule_sets() {
        let name = "ns/compiled-by-thread";
        let engine = engine_with_endpoint(name);
        engine.apply_policy(policy(name, many_rules())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while classifier(&engine, name).stats().trees == 0 {
            assert!(Instant::now() < deadline, "not compiled within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        engine.shutdown();
    }
}
