//! The sync loop: keeps the dataplane running the desired state.
//!
//! It connects to the dataplane (with backoff), and then reconciles —
//! reads the desired state and its revision, lists what the dataplane
//! runs, diffs, applies the ops — at connection, whenever the agent's
//! revision advances, every [`SyncConfig::resync_every`] in case something
//! else changed the dataplane, and after a failed op (with backoff).
//!
//! After a dataplane restart the listing is empty, so the reconcile that
//! follows the reconnect replays everything; after an agent restart the
//! listing already matches and nothing is touched. A revision counts as
//! synced only when the dataplane has acknowledged every op derived from
//! it, its policy batch included; while the dataplane is away nothing is
//! synced (revision 0).
//!
//! Policy goes last in a round, as one atomic batch ([`policy_sync`]),
//! so that it carries the attachments of the interfaces the round
//! created.
//!
//! [`policy_sync`]: super::policy_sync

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_proto::dataplane as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::dataplane::{is_disconnect, Connection};
use super::diff::{diff, Op};
use super::model::DataplaneState;
use super::policy_sync::{PolicyOutcome, PolicySync};

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The dataplane's API socket.
    pub socket: PathBuf,
    /// Period of the full resync.
    pub resync_every: Duration,
    /// First and longest delay between connection attempts.
    pub connect_backoff: (Duration, Duration),
    /// First and longest delay before retrying failed ops.
    pub retry_backoff: (Duration, Duration),
}

impl SyncConfig {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        SyncConfig {
            socket: socket.into(),
            resync_every: Duration::from_secs(30),
            connect_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            retry_backoff: (Duration::from_millis(200), Duration::from_secs(10)),
        }
    }
}

/// The desired state and the revision it was computed at; `None` while it
/// cannot be computed yet (the datastore has not been listed).
pub type DesiredFn = Arc<dyn Fn() -> Option<(u64, DataplaneState)> + Send + Sync>;

/// An op the dataplane refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: tonic::Code,
    pub message: String,
}

/// Where the sync stands.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    pub connected: bool,
    /// The revision whose desired state the dataplane runs: every op
    /// derived from it was acknowledged. 0 while disconnected.
    pub synced_revision: u64,
    /// The revision of the latest reconcile, whatever its outcome; 0
    /// while disconnected.
    pub attempted_revision: u64,
    /// What the latest reconcile could not do, by interface name (or by
    /// op, for ops not about an interface; [`POLICY_FAILURE`] for the
    /// policy batch, which also fails every interface whose attachment it
    /// carried).
    pub failures: BTreeMap<String, Failure>,
    /// The dataplane's interfaces after the latest reconcile, by name
    /// (shared: a status is cloned often).
    pub interfaces: Arc<BTreeMap<String, pb::Interface>>,
}

/// The key of [`SyncStatus::failures`] for a refused policy batch.
pub const POLICY_FAILURE: &str = "policy";

/// Why waiting for an interface failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("the dataplane refused interface {interface:?}: {}", failure.message)]
    Refused { interface: String, failure: Failure },
    #[error("the dataplane did not apply revision {revision} within {timeout:?}")]
    TimedOut { revision: u64, timeout: Duration },
}

/// A handle on the running sync loop; cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    status: watch::Receiver<SyncStatus>,
    connection: Arc<Mutex<Option<Connection>>>,
}

impl SyncHandle {
    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    /// The live connection, if there is one.
    pub fn connection(&self) -> Option<Connection> {
        self.connection.lock().expect("poisoned").clone()
    }

    /// Waits until a reconcile at `revision` or later has been made and
    /// left `interface` as wanted (created, replaced, deleted or
    /// untouched); fails if it refused it, or after `timeout`.
    pub async fn wait_for_interface(
        &self,
        revision: u64,
        interface: &str,
        timeout: Duration,
    ) -> Result<SyncStatus, WaitError> {
        let mut rx = self.status.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.connected && s.attempted_revision >= revision {
                        return match s.failures.get(interface) {
                            None => Ok(s.clone()),
                            Some(f) => Err(WaitError::Refused {
                                interface: interface.to_owned(),
                                failure: f.clone(),
                            }),
                        };
                    }
                }
                if rx.changed().await.is_err() {
                    // The loop is gone; nothing will change.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(WaitError::TimedOut { revision, timeout }))
    }
}

/// Starts the sync loop: `desired` gives the state to run, `changes`
/// wakes it when that may have changed. Abort the task to stop it.
pub fn spawn(
    config: SyncConfig,
    desired: DesiredFn,
    changes: watch::Receiver<u64>,
) -> (SyncHandle, JoinHandle<()>) {
    let (status_tx, status) = watch::channel(SyncStatus::default());
    let connection = Arc::new(Mutex::new(None));
    let handle = SyncHandle {
        status,
        connection: Arc::clone(&connection),
    };
    let sync = SyncLoop {
        config,
        desired,
        changes,
        status: status_tx,
        connection,
        policy: PolicySync::default(),
    };
    (handle, tokio::spawn(sync.run()))
}

struct SyncLoop {
    config: SyncConfig,
    desired: DesiredFn,
    changes: watch::Receiver<u64>,
    status: watch::Sender<SyncStatus>,
    connection: Arc<Mutex<Option<Connection>>>,
    policy: PolicySync,
}

/// How a reconcile ended.
enum Reconciled {
    /// Every op acknowledged (or none needed).
    Done,
    /// Some op refused; retry later.
    Incomplete,
    /// The desired state cannot be computed yet.
    NotReady,
    /// The connection is gone.
    Disconnected,
}

impl SyncLoop {
    async fn run(mut self) {
        let (first, max) = self.config.connect_backoff;
        let mut backoff = Backoff::new(first, max);
        let mut said_unreachable = false;
        loop {
            let conn = match Connection::connect(&self.config.socket).await {
                Ok(c) => c,
                Err(e) => {
                    if !said_unreachable {
                        warn!(error = %e, "dataplane unreachable; retrying");
                        said_unreachable = true;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            backoff.reset();
            said_unreachable = false;
            info!(socket = %self.config.socket.display(), "connected to the dataplane");
            *self.connection.lock().expect("poisoned") = Some(conn.clone());
            self.policy.connected();
            self.status.send_modify(|s| s.connected = true);

            self.serve(&conn).await;

            *self.connection.lock().expect("poisoned") = None;
            self.status.send_modify(|s| {
                s.connected = false;
                s.synced_revision = 0;
                s.attempted_revision = 0;
                s.failures.clear();
                s.interfaces = Arc::default();
            });
            warn!("lost the dataplane connection; reconnecting");
        }
    }

    /// Reconciles over `conn` until it is lost.
    async fn serve(&mut self, conn: &Connection) {
        let (first, max) = self.config.retry_backoff;
        let mut retry = Backoff::new(first, max);
        let mut retry_at: Option<Instant> = None;
        let mut resync = tokio::time::interval(self.config.resync_every);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        loop {
            match self.reconcile(conn).await {
                Reconciled::Disconnected => return,
                Reconciled::Done => {
                    retry.reset();
                    retry_at = None;
                }
                Reconciled::Incomplete => retry_at = Some(Instant::now() + retry.next_delay()),
                Reconciled::NotReady => {}
            }
            tokio::select! {
                () = conn.lost() => return,
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // Nobody can change the desired state any more;
                        // keep it true until the connection goes.
                        conn.lost().await;
                        return;
                    }
                }
                () = sleep_until(retry_at) => debug!("retrying refused ops"),
                _ = resync.tick() => {
                    debug!("periodic resync");
                    self.policy.forget();
                }
            }
        }
    }

    async fn reconcile(&mut self, conn: &Connection) -> Reconciled {
        // Mark the change seen first: one that lands during this
        // reconcile wakes the next.
        self.changes.borrow_and_update();
        let Some((revision, desired)) = (self.desired)() else {
            return Reconciled::NotReady;
        };
        let listing = match conn.list().await {
            Ok(l) => l,
            Err(s) if is_disconnect(&s) => return Reconciled::Disconnected,
            Err(s) => {
                warn!(error = %s.message(), "cannot list the dataplane's state");
                return Reconciled::Incomplete;
            }
        };
        let ops = diff(&desired, &listing.state());
        let mut interfaces: BTreeMap<String, pb::Interface> = listing
            .interfaces
            .into_iter()
            .filter_map(|i| Some((i.spec.as_ref()?.name.clone(), i)))
            .collect();
        let mut failures = BTreeMap::new();
        // Interfaces the ops made, changed or removed (or failed to).
        let mut touched = BTreeSet::new();
        for op in &ops {
            debug!(%op, revision, "applying");
            touched.extend(op.interface().map(str::to_owned));
            match conn.apply(op).await {
                Ok(reply) => {
                    if let Op::DeleteInterface(name) = op {
                        interfaces.remove(name);
                    }
                    if let (Some(name), Some(reply)) = (op.interface(), reply) {
                        interfaces.insert(name.to_owned(), reply);
                    }
                }
                Err(s) if is_disconnect(&s) => return Reconciled::Disconnected,
                Err(s) => {
                    warn!(%op, code = ?s.code(), error = %s.message(), "the dataplane refused");
                    let key = op.interface().map_or_else(|| op.to_string(), str::to_owned);
                    failures.insert(
                        key,
                        Failure {
                            code: s.code(),
                            message: s.message().to_owned(),
                        },
                    );
                }
            }
        }
        if !ops.is_empty() {
            info!(
                revision,
                ops = ops.len(),
                refused = failures.len(),
                "dataplane updated"
            );
        }
        // An interface whose op failed may or may not be there: no
        // attachment for it this round.
        let present: BTreeMap<String, pb::Interface> = interfaces
            .iter()
            .filter(|(name, _)| !failures.contains_key(*name))
            .map(|(name, i)| (name.clone(), i.clone()))
            .collect();
        let outcome = self
            .policy
            .reconcile(conn, revision, desired.policy, &touched, &present)
            .await;
        match outcome {
            PolicyOutcome::Synced => {}
            PolicyOutcome::Disconnected => return Reconciled::Disconnected,
            PolicyOutcome::Refused {
                failure,
                interfaces,
            } => {
                for name in interfaces {
                    failures.entry(name).or_insert_with(|| failure.clone());
                }
                failures.insert(POLICY_FAILURE.to_owned(), failure);
            }
        }
        let done = failures.is_empty();
        self.status.send_modify(|s| {
            s.attempted_revision = revision;
            if done {
                s.synced_revision = revision;
            }
            s.failures = failures;
            s.interfaces = Arc::new(interfaces);
        });
        if done {
            Reconciled::Done
        } else {
            Reconciled::Incomplete
        }
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
