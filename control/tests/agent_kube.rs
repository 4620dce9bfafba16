//! The `kubernetes` datastore source against a fake API server: an
//! in-process HTTP server on 127.0.0.1 that speaks LIST and WATCH with
//! resource versions, bookmarks, and 410 Gone for a watch whose resource
//! version has been compacted away. The kube `Client` points at it through
//! a `Config` with its URL.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_control::agent::datastore::kube::KubeSource;
use caracal_control::agent::datastore::{Kind, Store};
use caracal_control::agent::revision::Revision;
use futures::StreamExt as _;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The collections the agent watches: path, kind and apiVersion.
const COLLECTIONS: [(&str, &str, &str); 7] = [
    ("/api/v1/namespaces", "Namespace", "v1"),
    ("/api/v1/nodes", "Node", "v1"),
    ("/api/v1/pods", "Pod", "v1"),
    ("/api/v1/services", "Service", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
    ),
    ("/apis/caracal.io/v1/ippools", "IPPool", "caracal.io/v1"),
];

const PODS: &str = "/api/v1/pods";

#[derive(Default)]
struct Collection {
    kind: &'static str,
    api_version: &'static str,
    /// Objects by "namespace/name".
    objects: BTreeMap<String, Value>,
    /// Events with their resource versions, oldest first.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a resource version below this are answered 410 Gone.
    compacted_below: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
}

/// The fake API server's state, and a log of the requests it served.
#[derive(Default)]
struct Api {
    revision: u64,
    collections: BTreeMap<&'static str, Collection>,
    /// "LIST /api/v1/pods" or "WATCH /api/v1/pods rv=12".
    log: Vec<String>,
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn key_of(object: &Value) -> String {
    let m = &object["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap()
    )
}

impl Api {
    fn new() -> Self {
        let mut api = Api::default();
        for (path, kind, api_version) in COLLECTIONS {
            api.collections.insert(
                path,
                Collection {
                    kind,
                    api_version,
                    ..Default::default()
                },
            );
        }
        api
    }

    /// Creates or changes an object; watchers see it unless `quietly`.
    fn put(&mut self, path: &str, mut object: Value, quietly: bool) {
        self.revision += 1;
        let rv = self.revision;
        let c = self.collections.get_mut(path).unwrap();
        object["apiVersion"] = json!(c.api_version);
        object["kind"] = json!(c.kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let kind = if c.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        c.objects.insert(key, object.clone());
        c.history.push((rv, kind, object.clone()));
        if !quietly {
            c.watchers
                .retain(|w| w.send(event_line(kind, &object)).is_ok());
        }
    }

    fn delete(&mut self, path: &str, key: &str, quietly: bool) {
        self.revision += 1;
        let rv = self.revision;
        let c = self.collections.get_mut(path).unwrap();
        let mut object = c.objects.remove(key).unwrap();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        c.history.push((rv, "DELETED", object.clone()));
        if !quietly {
            c.watchers
                .retain(|w| w.send(event_line("DELETED", &object)).is_ok());
        }
    }

    /// Sends every watcher of `path` a bookmark at the current revision.
    fn bookmark(&mut self, path: &str) -> u64 {
        let rv = self.revision;
        let c = self.collections.get_mut(path).unwrap();
        let object = json!({
            "apiVersion": c.api_version,
            "kind": c.kind,
            "metadata": {"resourceVersion": rv.to_string()},
        });
        c.watchers
            .retain(|w| w.send(event_line("BOOKMARK", &object)).is_ok());
        rv
    }

    /// Ends every watch of `path` (as the API server does at its timeout).
    fn close_watches(&mut self, path: &str) {
        self.collections.get_mut(path).unwrap().watchers.clear();
    }

    /// Forgets the history of `path` up to now: a watch from an earlier
    /// revision gets 410 Gone.
    fn compact(&mut self, path: &str) {
        let below = self.revision + 1;
        let c = self.collections.get_mut(path).unwrap();
        c.history.retain(|(rv, _, _)| *rv >= below);
        c.compacted_below = below;
    }

    fn log_has(&self, entry: &str) -> bool {
        self.log.iter().any(|l| l == entry)
    }

    fn count(&self, entry: &str) -> usize {
        self.log.iter().filter(|l| *l == entry).count()
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed())
        .unwrap()
}

fn handle(api: &Mutex<Api>, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut api = api.lock().unwrap();
    let revision = api.revision;
    let Some(c) = api.collections.get_mut(path.as_str()) else {
        return full(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
        );
    };
    if query.get("watch").map(String::as_str) != Some("true") {
        let list = json!({
            "apiVersion": c.api_version,
            "kind": format!("{}List", c.kind),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": c.objects.values().collect::<Vec<_>>(),
        });
        api.log.push(format!("LIST {path}"));
        return full(200, &list);
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel();
    let gone = from + 1 < c.compacted_below;
    if gone {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": format!("too old resource version: {from}"),
        });
        let _ = tx.send(event_line("ERROR", &status));
        drop(tx);
    } else {
        for (rv, kind, object) in &c.history {
            if *rv > from {
                let _ = tx.send(event_line(kind, object));
            }
        }
        c.watchers.push(tx);
    }
    api.log.push(format!(
        "WATCH {path} rv={from}{}",
        if gone { " -> 410" } else { "" }
    ));
    let stream = UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// Serves `api` on 127.0.0.1; returns the URL.
async fn serve(api: Arc<Mutex<Api>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = handle(&api, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

fn pod(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    })
}

fn pod_names(store: &Store) -> Vec<String> {
    store
        .snapshot()
        .pods()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

/// Waits (up to 20 s) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_watches_follows_bookmarks_and_relists_after_410() {
    let api = Arc::new(Mutex::new(Api::new()));
    {
        let mut a = api.lock().unwrap();
        a.put(PODS, pod("a"), false);
        a.put(PODS, pod("b"), false);
        a.put(
            "/apis/caracal.io/v1/ippools",
            json!({"metadata": {"name": "p"}, "spec": {"cidr": "10.70.0.0/16", "blockSize": 28}}),
            false,
        );
    }
    let url = serve(Arc::clone(&api)).await;
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let store = Store::new(Revision::new());
    let _source = KubeSource::new(client).start(store.clone());

    // LIST: every kind is listed, and the store holds what was there.
    until("every kind listed", || store.is_synced()).await;
    assert_eq!(pod_names(&store), ["a", "b"]);
    let pools: Vec<_> = store
        .snapshot()
        .ip_pools()
        .map(|p| (p.spec.cidr.clone(), p.spec.block_size))
        .collect();
    assert_eq!(pools, [("10.70.0.0/16".to_owned(), Some(28))]);
    let listed_at = store.revision().current();
    until("pods watched", || {
        api.lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("WATCH /api/v1/pods"))
    })
    .await;

    // WATCH: additions, changes and deletions arrive as they happen.
    api.lock().unwrap().put(PODS, pod("c"), false);
    until("pod c", || pod_names(&store) == ["a", "b", "c"]).await;
    let mut changed = pod("c");
    changed["metadata"]["labels"] = json!({"app": "web"});
    api.lock().unwrap().put(PODS, changed, false);
    until("pod c labelled", || {
        store
            .snapshot()
            .pod("default", "c")
            .is_some_and(|p| p.metadata.labels.is_some())
    })
    .await;
    api.lock().unwrap().delete(PODS, "default/b", false);
    until("pod b gone", || pod_names(&store) == ["a", "c"]).await;
    assert!(store.revision().current() >= listed_at + 3);

    // BOOKMARK: after other collections moved the revision on, a bookmark
    // tells the pod watch where it stands; the next watch resumes there.
    let bookmark = {
        let mut a = api.lock().unwrap();
        a.put(
            "/api/v1/namespaces",
            json!({"metadata": {"name": "prod"}}),
            false,
        );
        a.bookmark(PODS)
    };
    until("namespace prod", || {
        store.snapshot().namespace("prod").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.lock().unwrap().close_watches(PODS);
    let resumed = format!("WATCH {PODS} rv={bookmark}");
    until("watch resumed from the bookmark", || {
        api.lock().unwrap().log_has(&resumed)
    })
    .await;
    let lists_before = api.lock().unwrap().count(&format!("LIST {PODS}"));

    // 410 Gone: changes the watch never saw, then the history is
    // compacted and the watch ends. The resumed watch is refused with
    // 410; the source lists again and ends up with the server's truth.
    {
        let mut a = api.lock().unwrap();
        a.delete(PODS, "default/a", true);
        a.put(PODS, pod("d"), true);
        a.compact(PODS);
        a.close_watches(PODS);
    }
    until("relisted after 410", || pod_names(&store) == ["c", "d"]).await;
    let a = api.lock().unwrap();
    assert!(
        a.log
            .iter()
            .any(|l| l.starts_with("WATCH /api/v1/pods") && l.ends_with("-> 410")),
        "{:#?}",
        a.log
    );
    assert_eq!(
        a.count(&format!("LIST {PODS}")),
        lists_before + 1,
        "{:#?}",
        a.log
    );
    assert!(store.is_synced());
    assert_eq!(Kind::ALL.len(), COLLECTIONS.len());
}
