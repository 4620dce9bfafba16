//! The sync loop against a fake dataplane: it converges, replays after a
//! dataplane restart, leaves a dataplane that is already right alone,
//! retries what the dataplane refused, and counts a revision as synced
//! only once every op derived from it was acknowledged — policy
//! included: one atomic batch right after the interfaces it attaches to,
//! only what changed, and never synced against a dataplane without the
//! Policy service (its pods stay closed).

mod agent_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::{until, FakeDataplane, PolicyTable, Table};
use caracal_control::agent::model::{
    DataplaneState, InterfaceKind, InterfaceSpec, PathSpec, RouteSpec, TapSpec,
};
use caracal_control::agent::policy::DesiredPolicy;
use caracal_control::agent::revision::Revision;
use caracal_control::agent::sync::{
    self, DesiredFn, SyncConfig, SyncHandle, WaitError, POLICY_FAILURE,
};
use caracal_proto::dataplane as pb;

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
        policy_enforced: true,
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
        self.want_policy(interfaces, routes, DesiredPolicy::default())
    }

    fn want_policy(
        &self,
        interfaces: &[InterfaceSpec],
        routes: &[RouteSpec],
        policy: DesiredPolicy,
    ) -> u64 {
        let mut st = self.state.lock().unwrap();
        *st = Some(DataplaneState {
            interfaces: interfaces
                .iter()
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
            routes: routes.iter().map(|r| (r.prefix, r.clone())).collect(),
            policy,
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

// ---------------------------------------------------------------- policy

/// Policy for interfaces `names`: `ns/a` isolated for ingress by policy
/// `p`, which allows from IP set `s` (members `members`); the others open.
fn policy(names: &[&str], members: &[&str]) -> DesiredPolicy {
    let mut want = DesiredPolicy::default();
    want.ip_sets.insert(
        "s".into(),
        members.iter().map(|m| m.parse().unwrap()).collect(),
    );
    want.policies.insert(
        "p".into(),
        std::sync::Arc::new(pb::PolicySpec {
            name: "p".into(),
            ingress: vec![pb::Rule {
                action: pb::Action::Allow as i32,
                source: Some(pb::EndpointMatch {
                    ip_sets: vec!["s".into()],
                    ..Default::default()
                }),
                id: "p/ingress/0".into(),
                ..Default::default()
            }],
            egress: vec![],
        }),
    );
    for name in names {
        let tiers = if *name == "ns/a" {
            vec![pb::Tier {
                name: "default".into(),
                policies: vec!["p".into()],
                end_action: pb::Action::Deny as i32,
            }]
        } else {
            vec![]
        };
        want.endpoints.insert(
            (*name).into(),
            pb::EndpointPolicy {
                interface: (*name).into(),
                ingress: tiers,
                egress: vec![],
                ingress_default: pb::Action::Allow as i32,
                egress_default: pb::Action::Allow as i32,
            },
        );
    }
    want
}

fn with_policy() -> Table {
    Table {
        policy: Some(PolicyTable::default()),
        ..Default::default()
    }
}

#[tokio::test]
async fn policy_follows_its_interfaces_in_one_batch_and_counts_for_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let dp = FakeDataplane::start_with(&socket, with_policy()).await;
    let (sync, task) = world.spawn(&socket);
    let taps = [
        tap("ns/a", "/n/a", "10.65.0.1/32"),
        tap("ns/b", "/n/b", "10.65.0.2/32"),
    ];
    let want = policy(&["ns/a", "ns/b"], &["10.65.0.2/32"]);
    let rev = world.want_policy(&taps, &[], want.clone());
    until("synced", || sync.status().synced_revision == rev).await;
    assert_eq!(
        dp.changes(),
        ["add ns/a", "add ns/b", "policy [ns/a ns/b]"],
        "the attachments right after their interfaces, in one batch"
    );
    assert_eq!(DesiredPolicy::from_state(dp.policy_state()), want);

    // A member joins the set: a delta and nothing else.
    let rev = world.want_policy(
        &taps,
        &[],
        policy(&["ns/a", "ns/b"], &["10.65.0.2/32", "10.65.0.3/32"]),
    );
    until("synced", || sync.status().synced_revision == rev).await;
    let batches = dp.policy_batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(
        batches[1],
        pb::PolicyBatch {
            update_ip_sets: vec![pb::IpSetDelta {
                name: "s".into(),
                add: vec!["10.65.0.3/32".into()],
                remove: vec![],
            }],
            ..Default::default()
        }
    );

    // A new interface: created, then attached in the same round; the
    // others are not resent.
    let mut more = taps.to_vec();
    more.push(tap("ns/c", "/n/c", "10.65.0.3/32"));
    let rev = world.want_policy(
        &more,
        &[],
        policy(&["ns/a", "ns/b", "ns/c"], &["10.65.0.2/32", "10.65.0.3/32"]),
    );
    until("synced", || sync.status().synced_revision == rev).await;
    assert_eq!(dp.changes()[4..], ["add ns/c", "policy [ns/c]"]);

    // A revision that changes nothing sends nothing.
    world.revision.advance();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dp.policy_batches().len(), 3);
    task.abort();
    dp.stop().await;
}

#[tokio::test]
async fn policy_is_replayed_after_a_dataplane_restart_and_left_alone_after_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let taps = [tap("ns/a", "/n/a", "10.65.0.1/32")];
    let want = policy(&["ns/a"], &["10.65.0.2/32"]);
    let rev = world.want_policy(&taps, &[], want.clone());
    let dp = FakeDataplane::start_with(&socket, with_policy()).await;
    let (sync, task) = world.spawn(&socket);
    until("synced", || sync.status().synced_revision == rev).await;
    dp.stop().await;

    // A new, empty dataplane: interfaces and policy again.
    let dp = FakeDataplane::start_with(&socket, with_policy()).await;
    until("replayed", || {
        let s = sync.status();
        s.connected && s.synced_revision == rev
    })
    .await;
    assert_eq!(dp.changes(), ["add ns/a", "policy [ns/a]"]);
    assert_eq!(DesiredPolicy::from_state(dp.policy_state()), want);
    task.abort();

    // A new agent that wants the same: reads the policy, sends nothing.
    let world2 = World::new();
    let rev2 = world2.want_policy(&taps, &[], want);
    let (sync2, task2) = world2.spawn(&socket);
    until("synced again", || sync2.status().synced_revision == rev2).await;
    assert_eq!(dp.policy_batches().len(), 1);
    task2.abort();
    dp.stop().await;
}

#[tokio::test]
async fn a_refused_policy_batch_holds_back_the_revision_and_fails_its_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let mut table = with_policy();
    table.policy.as_mut().unwrap().refuse_policy = Some("p".into());
    let dp = FakeDataplane::start_with(&socket, table).await;
    let (sync, task) = world.spawn(&socket);
    let rev = world.want_policy(
        &[tap("ns/a", "/n/a", "10.65.0.1/32")],
        &[],
        policy(&["ns/a"], &[]),
    );
    let err = sync
        .wait_for_interface(rev, "ns/a", Duration::from_secs(10))
        .await
        .unwrap_err();
    let WaitError::Refused { failure, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(failure.code, tonic::Code::InvalidArgument);
    let status = sync.status();
    assert!(status.failures.contains_key(POLICY_FAILURE));
    assert_eq!(status.synced_revision, 0);
    assert_eq!(dp.interface_names(), ["ns/a"], "created, and closed");

    dp.table
        .lock()
        .unwrap()
        .policy
        .as_mut()
        .unwrap()
        .refuse_policy = None;
    until("retried", || sync.status().synced_revision == rev).await;
    assert!(sync.status().failures.is_empty());
    task.abort();
    dp.stop().await;
}

#[tokio::test]
async fn without_the_policy_service_nothing_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dp.sock");
    let world = World::new();
    let dp = FakeDataplane::start_without_policy(&socket).await;
    let (sync, task) = world.spawn(&socket);
    let rev = world.want_policy(
        &[tap("ns/a", "/n/a", "10.65.0.1/32")],
        &[],
        policy(&["ns/a"], &["10.65.0.2/32"]),
    );
    until("attempted", || sync.status().attempted_revision == rev).await;
    let status = sync.status();
    assert_eq!(
        status.synced_revision, 0,
        "a pod without policy is not ready"
    );
    assert_eq!(
        status.failures[POLICY_FAILURE].code,
        tonic::Code::Unimplemented
    );
    assert_eq!(dp.changes(), ["add ns/a"], "created, and closed");
    task.abort();
    dp.stop().await;
}
