//! The Kubernetes IPAM store against an in-process fake API server.
//!
//! The fake is a tower service handed to `kube::Client::new`, so requests
//! go through kube's real request building and error parsing. It keeps
//! `IPAMState` objects as JSON and applies the API server's optimistic
//! concurrency rules: every write bumps a global `resourceVersion`; a `PUT`
//! whose `metadata.resourceVersion` is not the stored one is a
//! `409 Conflict`; a `POST` of an existing name is `409 AlreadyExists`;
//! `PUT` of a missing object is `404 NotFound`.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use caracal_control::ipam::{
    AssignRequest, IpPool, Ipam, IpamConfig, IpamState, IpamStore, KubeStore, Revision,
};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};

const COLLECTION: &str = "/apis/caracal.io/v1/ipamstates";

#[derive(Default)]
struct FakeApi {
    objects: Mutex<HashMap<String, Value>>,
    last_version: AtomicU64,
    conflicts: AtomicU64,
    writes: AtomicU64,
    /// Answer every IPAMState request with 404, as a cluster without the
    /// CRD does.
    no_crd: bool,
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, body)
}

impl FakeApi {
    fn handle(&self, method: &Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
        let not_found = |name: &str| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("ipamstates.caracal.io {name:?} not found"),
            )
        };
        let Some(rest) = path.strip_prefix(COLLECTION).filter(|_| !self.no_crd) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
            );
        };
        let name = rest.strip_prefix('/');
        let mut objects = self.objects.lock().unwrap();
        match (method, name) {
            (&Method::GET, Some(name)) => match objects.get(name) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(name),
            },
            (&Method::POST, None) => {
                let mut object: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
                };
                if let Err(e) = check_kind(&object) {
                    return e;
                }
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if objects.contains_key(&name) {
                    self.conflicts.fetch_add(1, Ordering::SeqCst);
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("ipamstates.caracal.io {name:?} already exists"),
                    );
                }
                if object["metadata"]
                    .get("resourceVersion")
                    .is_some_and(|v| !v.is_null())
                {
                    return status(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "resourceVersion should not be set on objects to be created".into(),
                    );
                }
                self.stamp(&mut object);
                objects.insert(name, object.clone());
                (StatusCode::CREATED, object)
            }
            (&Method::PUT, Some(name)) => {
                let mut object: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
                };
                if let Err(e) = check_kind(&object) {
                    return e;
                }
                if object["metadata"]["name"] != name {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "name mismatch".into(),
                    );
                }
                let Some(stored) = objects.get(name) else {
                    return not_found(name);
                };
                // Without a resourceVersion, a custom resource update is
                // unconditional; with one, it must match.
                let sent = &object["metadata"]["resourceVersion"];
                if !sent.is_null() && *sent != stored["metadata"]["resourceVersion"] {
                    self.conflicts.fetch_add(1, Ordering::SeqCst);
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on ipamstates.caracal.io {name:?}: \
                             the object has been modified; please apply your changes to the \
                             latest version and try again"
                        ),
                    );
                }
                self.stamp(&mut object);
                objects.insert(name.to_owned(), object.clone());
                (StatusCode::OK, object)
            }
            (&Method::DELETE, Some(name)) => match objects.remove(name) {
                Some(object) => (StatusCode::OK, object),
                None => not_found(name),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {path}"),
            ),
        }
    }

    fn stamp(&self, object: &mut Value) {
        let version = self.last_version.fetch_add(1, Ordering::SeqCst) + 1;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

fn check_kind(object: &Value) -> Result<(), (StatusCode, Value)> {
    if object["apiVersion"] == "caracal.io/v1" && object["kind"] == "IPAMState" {
        Ok(())
    } else {
        Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("wrong kind in {object}"),
        ))
    }
}

/// A kube client whose every request is answered by `api`.
fn client(api: Arc<FakeApi>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<Body>| {
        let api = Arc::clone(&api);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let (code, value) = api.handle(&parts.method, parts.uri.path(), &body);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).unwrap()))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn pools() -> Vec<IpPool> {
    let pool = |name: &str, cidr: &str| IpPool {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        block_size: 0,
        node_selector: String::new(),
        disabled: false,
        nat_outgoing: false,
    };
    vec![pool("v4", "10.88.0.0/24"), pool("v6", "fd00:88::/120")]
}

#[tokio::test]
async fn ipam_kube_swaps_follow_resource_versions() {
    let api = Arc::new(FakeApi::default());
    let store = KubeStore::new(client(Arc::clone(&api)));

    let (state, absent) = store.load().await.unwrap();
    assert_eq!(
        (&state, &absent),
        (&IpamState::default(), &Revision::ABSENT)
    );
    assert!(
        store
            .compare_and_swap(absent.clone(), &state)
            .await
            .unwrap(),
        "creates"
    );
    // A second creator finds it there.
    assert!(
        !store.compare_and_swap(absent, &state).await.unwrap(),
        "AlreadyExists is a miss"
    );

    let (_, first) = store.load().await.unwrap();
    let mut next = state.clone();
    next.handles.insert(
        "h".into(),
        caracal_control::ipam::HandleRecord {
            node: "n1".into(),
            namespace: "ns".into(),
            pod: "p".into(),
            addresses: vec![],
            attrs: Default::default(),
            created_unix_ms: 1,
        },
    );
    assert!(store.compare_and_swap(first.clone(), &next).await.unwrap());
    assert!(
        !store.compare_and_swap(first, &state).await.unwrap(),
        "stale version is a miss"
    );
    let (loaded, second) = store.load().await.unwrap();
    assert_eq!(loaded, next);
    assert_eq!(second.as_str(), Some("2"));
    assert_eq!(api.conflicts.load(Ordering::SeqCst), 2);

    // Deleted behind our back: the swap misses, and the next load starts over.
    api.handle(&Method::DELETE, &format!("{COLLECTION}/default"), b"");
    assert!(!store.compare_and_swap(second, &next).await.unwrap());
    assert_eq!(store.load().await.unwrap().1, Revision::ABSENT);
}

#[tokio::test]
async fn ipam_kube_missing_crd_is_an_error_not_a_conflict() {
    let api = Arc::new(FakeApi {
        no_crd: true,
        ..FakeApi::default()
    });
    let ipam = Ipam::new(KubeStore::new(client(api)), IpamConfig::default());
    ipam.set_pools(pools()).unwrap();
    let req = AssignRequest {
        handle: "h".into(),
        node: "n1".into(),
        ..Default::default()
    };
    let err = ipam.auto_assign(&req).await.unwrap_err().to_string();
    assert!(err.contains("CRD installed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_kube_concurrent_assignments_are_distinct() {
    const TASKS: usize = 120;
    let api = Arc::new(FakeApi::default());
    // Two agents on one API server: each groups its own concurrent
    // changes into one swap, and their swaps race each other.
    let agents: Vec<_> = (0..2)
        .map(|_| {
            let ipam = Arc::new(Ipam::new(
                KubeStore::new(client(Arc::clone(&api))),
                IpamConfig::default(),
            ));
            ipam.set_pools(pools()).unwrap();
            ipam
        })
        .collect();

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let ipam = Arc::clone(&agents[i % 2]);
            tokio::spawn(async move {
                let req = AssignRequest {
                    handle: format!("c{i}.eth0"),
                    node: if i.is_multiple_of(10) { "n2" } else { "n1" }.into(),
                    pod: format!("pod-{i}"),
                    ..Default::default()
                };
                ipam.auto_assign(&req).await.unwrap()
            })
        })
        .collect();
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for task in tasks {
        let assigned = task.await.unwrap();
        assert!(v4.insert(assigned.ipv4.unwrap()));
        assert!(v6.insert(assigned.ipv6.unwrap()));
    }
    assert_eq!((v4.len(), v6.len()), (TASKS, TASKS));
    // The agents really raced: some swaps lost and were retried; and no
    // more than one write per assignment (fewer when grouped).
    assert!(api.conflicts.load(Ordering::SeqCst) > 0);
    assert!((1..=TASKS as u64).contains(&api.writes.load(Ordering::SeqCst)));
    let ipam = &agents[0];

    let (state, _) = ipam.store().load().await.unwrap();
    state.check().unwrap();
    assert_eq!(state.handles.len(), TASKS);
    let owners: BTreeSet<&str> = state
        .blocks
        .iter()
        .filter_map(|b| b.affinity.as_deref())
        .collect();
    assert_eq!(owners, BTreeSet::from(["n1", "n2"]));

    // Release and GC go through the same swaps.
    assert_eq!(ipam.release_by_handle("c0.eth0").await.unwrap().len(), 2);
    let gone = ipam.gc(|h| h.pod != "pod-1").await.unwrap();
    assert_eq!(
        gone.iter().map(|h| h.handle.as_str()).collect::<Vec<_>>(),
        ["c1.eth0"]
    );
    assert_eq!(ipam.handles().await.unwrap().len(), TASKS - 2);
}
