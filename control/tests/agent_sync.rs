//! The sync loop against a fake dataplane: it converges, replays after a
//! dataplane restart, leaves a dataplane that is already right alone,
//! retries what the dataplane refused, and counts a revision as synced
//! only once every op derived from it was acknowledged.

mod agent_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::{until, FakeDataplane, Table};
use caracal_control::agent::model::{
    DataplaneState, InterfaceKind, InterfaceSpec, PathSpec, RouteSpec, TapSpec,
};
use caracal_control::agent::revision::Revision;
use caracal_control::agent::sync::{self, DesiredFn, SyncConfig, SyncHandle, WaitError};

fn tap(name: &str, netns: &str, addr: &str) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        addresses: vec![addr.parse().unwrap()],
        mtu: 1500,
        kind: InterfaceKind::Tap(TapSpec {
            netns: netns.into(),
            ifname: "eth0".into(),
            queues: 0,
            configure: true,
        }),
    }
}

/// What the tests want, behind the agent's revision.
#[derive(Clone)]
struct World {
    revision: Revision,
    state: Arc<Mutex<Option<DataplaneState>>>,
}

impl World {
    fn new() -> Self {
        World {
            revision: Revision::new(),
            state: Arc::default(),
        }
    }

    /// Sets the desired state; returns its revision.
    fn want(&self, interfaces: &[InterfaceSpec], routes: &[RouteSpec]) -> u64 {
        let mut st = self.state.lock().unwrap();
        *st = Some(DataplaneState {
            interfaces: interfaces
                .iter()
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
            routes: routes.iter().map(|r| (r.prefix, r.clone())).collect(),
        });
        self.revision.advance()
    }

    fn desired(&self) -> DesiredFn {
        let world = self.clone();
        Arc::new(move || {
            let revision = world.revision.current();
            let state = world.state.lock().unwrap().clone()?;
            Some((revision, state))
        })
    }

    fn spawn(&self, socket: &std::path::Path) -> (SyncHandle, tokio::task::JoinHandle<()>) {
        let mut config = SyncConfig::new(socket);
        config.connect_backoff = (Duration::from_millis(20), Duration::from_millis(100));
        config.retry_backoff = (Duration::from_millis(20), Duration::from_millis(100));
        sync::spawn(config, self.desired(), self.revision.subscribe())
    }
}

#[tokio::test]
async fn converges_and_replays_after_a_dataplane_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let (sync, task) = world.spawn(&socket);

    // No dataplane yet: not connected, nothing synced.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sync.status().connected);

    let dp = FakeDataplane::start(&socket).await;
    let rev = world.want(
        &[
            tap("ns/a", "/n/a", "10.65.0.1/32"),
            tap("ns/b", "/n/b", "10.65.0.2/32"),
        ],
        &[],
    );
    until("synced", || sync.status().synced_revision == rev).await;
    assert_eq!(dp.interface_names(), ["ns/a", "ns/b"]);
    assert_eq!(dp.changes(), ["add ns/a", "add ns/b"]);
    let status = sync.status();
    assert!(status.connected);
    assert_eq!(
        status.interfaces["ns/a"].mac,
        dp.interface("ns/a").unwrap().mac
    );

    // The dataplane goes away: noticed at once, nothing is synced.
    let gone = dp.stop().await;
    assert_eq!(gone.interfaces.len(), 2);
    until("disconnected", || !sync.status().connected).await;
    assert_eq!(sync.status().synced_revision, 0);

    // It comes back empty: everything is replayed.
    let dp = FakeDataplane::start(&socket).await;
    until("replayed", || sync.status().synced_revision == rev).await;
    assert_eq!(dp.interface_names(), ["ns/a", "ns/b"]);
    assert_eq!(dp.changes(), ["add ns/a", "add ns/b"]);

    task.abort();
    dp.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_leaves_a_right_dataplane_alone() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let dp = FakeDataplane::start(&socket).await;
    let route = RouteSpec {
        prefix: "10.66.0.0/16".parse().unwrap(),
        paths: vec![PathSpec {
            interface: "ns/a".into(),
            gateway: None,
        }],
    };
    let rev = world.want(&[tap("ns/a", "/n/a", "10.65.0.1/32")], &[route]);
    let (sync, task) = world.spawn(&socket);
    until("synced", || sync.status().synced_revision == rev).await;
    task.abort();
    let before = dp.changes();
    assert_eq!(before, ["add ns/a", "add-route 10.66.0.0/16"]);

    // A new agent with the same desired state: synced, no change at all.
    let world2 = World::new();
    let rev2 = world2.want(
        &[tap("ns/a", "/n/a", "10.65.0.1/32")],
        &world
            .state
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .routes
            .values()
            .cloned()
            .collect::<Vec<_>>(),
    );
    let (sync2, task2) = world2.spawn(&socket);
    until("synced again", || sync2.status().synced_revision == rev2).await;
    assert_eq!(dp.changes(), before);

    // What it no longer wants goes; a changed spec is replaced.
    let rev3 = world2.want(&[tap("ns/a", "/n/a", "10.65.0.9/32")], &[]);
    until("synced", || sync2.status().synced_revision == rev3).await;
    assert_eq!(
        dp.changes()[before.len()..],
        ["delete-route 10.66.0.0/16", "replace ns/a"]
    );
    task2.abort();
    dp.stop().await;
}

#[tokio::test]
async fn refused_ops_hold_back_the_synced_revision_and_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let dp = FakeDataplane::start_with(
        &socket,
        Table {
            refuse_netns: Some("missing".into()),
            ..Default::default()
        },
    )
    .await;
    let (sync, task) = world.spawn(&socket);
    let good = world.want(&[tap("ns/good", "/n/good", "10.65.0.1/32")], &[]);
    until("synced", || sync.status().synced_revision == good).await;

    let rev = world.want(
        &[
            tap("ns/good", "/n/good", "10.65.0.1/32"),
            tap("ns/bad", "/n/missing", "10.65.0.2/32"),
        ],
        &[],
    );
    let wait = Duration::from_secs(10);
    let err = sync
        .wait_for_interface(rev, "ns/bad", wait)
        .await
        .unwrap_err();
    let WaitError::Refused { failure, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(failure.code, tonic::Code::FailedPrecondition);
    assert!(
        failure.message.contains("does not exist"),
        "{}",
        failure.message
    );
    // The interface that was fine is fine; the revision is not synced.
    sync.wait_for_interface(rev, "ns/good", wait).await.unwrap();
    let status = sync.status();
    assert!(status.attempted_revision >= rev);
    assert_eq!(status.synced_revision, good);

    // Once the dataplane accepts it, a retry makes the revision true.
    dp.table.lock().unwrap().refuse_netns = None;
    until("retried", || sync.status().synced_revision == rev).await;
    assert_eq!(dp.interface_names(), ["ns/bad", "ns/good"]);
    task.abort();
    dp.stop().await;
}

#[tokio::test]
async fn nothing_is_programmed_before_the_desired_state_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let mut table = Table::default();
    let dp0 = FakeDataplane::start(&socket).await;
    // A dataplane that runs something from before.
    let mut client = caracal_control::dataplane_client::DataplaneClient::connect(&socket)
        .await
        .unwrap();
    client
        .interfaces
        .add_interface(caracal_proto::dataplane::AddInterfaceRequest {
            spec: Some(tap("ns/old", "/n/old", "10.65.0.7/32").to_proto()),
        })
        .await
        .unwrap();
    table.interfaces = dp0.stop().await.interfaces;
    let dp = FakeDataplane::start_with(&socket, table).await;

    let (sync, task) = world.spawn(&socket);
    world.revision.advance();
    until("connected", || sync.status().connected).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dp.interface_names(), ["ns/old"], "untouched while unknown");
    assert_eq!(sync.status().synced_revision, 0);

    let rev = world.want(&[], &[]);
    until("synced", || sync.status().synced_revision == rev).await;
    assert!(dp.interface_names().is_empty());
    task.abort();
    dp.stop().await;
}
