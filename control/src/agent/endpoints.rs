//! Endpoints: this node's pod attachments, one per CNI ADD (container id
//! and interface name), each recorded as a JSON file under
//! `<state-dir>/endpoints/` so that a restarted agent still knows what it
//! attached and keeps the dataplane running it.
//!
//! A record is written (to a temporary file, synced, renamed) before it
//! counts, and every change advances the agent's [`Revision`] after it is
//! visible, under the registry's lock.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::revision::Revision;

/// How a pod is attached (annotation `caracal.io/interface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterfaceKind {
    /// A kernel tap in the pod's network namespace.
    #[default]
    Tap,
    /// A memif socket.
    Memif,
    /// A vhost-user socket.
    VhostUser,
}

impl InterfaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Tap => "tap",
            InterfaceKind::Memif => "memif",
            InterfaceKind::VhostUser => "vhost-user",
        }
    }
}

impl fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown interface kind {0:?}: expected tap, memif or vhost-user")]
pub struct UnknownInterfaceKind(pub String);

impl FromStr for InterfaceKind {
    type Err = UnknownInterfaceKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tap" => Ok(InterfaceKind::Tap),
            "memif" => Ok(InterfaceKind::Memif),
            "vhost-user" => Ok(InterfaceKind::VhostUser),
            _ => Err(UnknownInterfaceKind(s.to_owned())),
        }
    }
}

/// What identifies an attachment: the runtime's container id and the
/// interface name inside the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    pub container_id: String,
    pub ifname: String,
}

impl EndpointKey {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        EndpointKey {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The IPAM handle of the attachment's addresses:
    /// `<container id>.<ifname>`.
    pub fn handle(&self) -> String {
        format!("{}.{}", self.container_id, self.ifname)
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.handle())
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// The name of the dataplane interface of a pod's interface `ifname`:
/// `<namespace>/<pod>` for the pod's main interface `eth0`, and
/// `<namespace>/<pod>/<ifname>` for any other.
pub fn dataplane_interface_name(namespace: &str, pod: &str, ifname: &str) -> String {
    if ifname == "eth0" {
        format!("{namespace}/{pod}")
    } else {
        format!("{namespace}/{pod}/{ifname}")
    }
}

/// One attachment on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    pub ifname: String,
    /// Path of the pod's network namespace.
    pub netns: String,
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub pod_uid: String,
    /// The addresses, as host prefixes, IPv4 first.
    pub ips: Vec<IpNet>,
    pub interface_kind: InterfaceKind,
    /// Path of the memif/vhost-user socket; `None` for taps.
    #[serde(default)]
    pub socket_path: Option<String>,
    /// The memif settings the pod asked for; `None` unless a memif.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memif: Option<MemifOptions>,
    /// The dataplane interface's name.
    pub dataplane_interface: String,
    /// IP MTU of the pod side, bytes.
    pub mtu: u16,
}

/// What a memif pod may choose by annotation (see
/// [`memif`](super::memif)); everything else about its interface is fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemifOptions {
    /// Shared secret the application must present; `None`: no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Queue pairs; 0: one per dataplane worker.
    #[serde(default)]
    pub queues: u32,
    /// Largest ring the dataplane accepts, descriptors; 0: the
    /// dataplane's maximum.
    #[serde(default)]
    pub ring_size: u32,
}

impl Endpoint {
    pub fn key(&self) -> EndpointKey {
        EndpointKey::new(&self.container_id, &self.ifname)
    }
}

/// A snapshot of every endpoint, by key.
pub type Endpoints = Arc<BTreeMap<EndpointKey, Endpoint>>;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> EndpointError + '_ {
    move |source| EndpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The endpoints of this node, in memory and on disk.
#[derive(Debug)]
pub struct EndpointRegistry {
    dir: PathBuf,
    endpoints: Mutex<Endpoints>,
    revision: Revision,
    /// Renames into `dir` so far, and how many of them a folder `fsync`
    /// has made durable: concurrent inserts share one folder sync.
    renamed: AtomicU64,
    synced: Mutex<u64>,
    /// Names temporary files uniquely.
    writes: AtomicU64,
}

impl EndpointRegistry {
    /// Opens (creating it if need be) the folder `dir` and reads every
    /// record in it. A record that cannot be read is set aside as
    /// `<name>.bad` with a warning, so that it is looked at, not lost.
    pub fn open(dir: impl Into<PathBuf>, revision: Revision) -> Result<Self, EndpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut endpoints = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let read = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Endpoint>(&b).map_err(|e| e.to_string()));
            match read {
                Ok(ep) if path.file_name() == Some(ep.key().file_name().as_ref()) => {
                    endpoints.insert(ep.key(), ep);
                }
                Ok(ep) => warn!(file = %path.display(), key = %ep.key(),
                    "endpoint record under the wrong name; ignored"),
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    warn!(file = %path.display(), error = %e,
                        "unreadable endpoint record; moved to {}", bad.display());
                    let _ = fs::rename(&path, &bad);
                }
            }
        }
        if !endpoints.is_empty() {
            revision.advance();
        }
        Ok(EndpointRegistry {
            dir,
            endpoints: Mutex::new(Arc::new(endpoints)),
            revision,
            renamed: AtomicU64::new(0),
            synced: Mutex::new(0),
            writes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Endpoints> {
        self.endpoints.lock().expect("endpoint registry poisoned")
    }

    pub fn snapshot(&self) -> Endpoints {
        self.lock().clone()
    }

    pub fn get(&self, key: &EndpointKey) -> Option<Endpoint> {
        self.lock().get(key).cloned()
    }

    /// Records `endpoint`, replacing the record with its key. Another
    /// endpoint with the same dataplane interface (an older sandbox of the
    /// same pod) is displaced: its record is removed and it is returned.
    pub fn insert(&self, endpoint: Endpoint) -> Result<Vec<Endpoint>, EndpointError> {
        // The record is durable before anyone sees it; the write and its
        // syncs run outside the lock, so concurrent inserts (a burst of
        // CNI ADDs) overlap and share one folder sync.
        self.write(&endpoint)?;
        let mut guard = self.lock();
        let map = Arc::make_mut(&mut guard);
        let displaced: Vec<EndpointKey> = map
            .values()
            .filter(|e| {
                e.dataplane_interface == endpoint.dataplane_interface && e.key() != endpoint.key()
            })
            .map(Endpoint::key)
            .collect();
        let mut removed = Vec::new();
        for key in displaced {
            self.unlink(&key)?;
            removed.extend(map.remove(&key));
        }
        map.insert(endpoint.key(), endpoint);
        self.revision.advance();
        Ok(removed)
    }

    /// Removes the record of `key`; returns it if there was one.
    pub fn remove(&self, key: &EndpointKey) -> Result<Option<Endpoint>, EndpointError> {
        let mut guard = self.lock();
        if !guard.contains_key(key) {
            // A record may be on disk without being known (a write that
            // failed half-way); make sure it is gone too.
            self.unlink(key)?;
            return Ok(None);
        }
        self.unlink(key)?;
        let removed = Arc::make_mut(&mut guard).remove(key);
        self.revision.advance();
        Ok(removed)
    }

    /// Writes the record of `endpoint` durably: a temporary file, synced,
    /// renamed over the record, and the folder synced. Callers serialize
    /// the inserts of one key (the CNI service locks each attachment).
    fn write(&self, endpoint: &Endpoint) -> Result<(), EndpointError> {
        let path = self.dir.join(endpoint.key().file_name());
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            endpoint.key().file_name(),
            self.writes.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = serde_json::to_vec_pretty(endpoint).expect("an endpoint serializes");
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            let ticket = self.renamed.fetch_add(1, Ordering::SeqCst) + 1;
            self.sync_folder(ticket)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(&path)(e)
        })
    }

    /// Makes the rename numbered `ticket` durable: one folder sync covers
    /// every rename counted before it started, so a caller whose rename
    /// an earlier sync covered returns at once.
    fn sync_folder(&self, ticket: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= ticket {
            return Ok(());
        }
        let covered = self.renamed.load(Ordering::SeqCst);
        fs::File::open(&self.dir)?.sync_all()?;
        *synced = covered;
        Ok(())
    }

    fn unlink(&self, key: &EndpointKey) -> Result<(), EndpointError> {
        let path = self.dir.join(key.file_name());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(&path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(cid: &str, pod: &str) -> Endpoint {
        Endpoint {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{pod}"),
            namespace: "default".into(),
            pod: pod.into(),
            pod_uid: String::new(),
            ips: vec!["10.65.0.5/32".parse().unwrap()],
            interface_kind: InterfaceKind::Tap,
            socket_path: None,
            memif: None,
            dataplane_interface: dataplane_interface_name("default", pod, "eth0"),
            mtu: 1500,
        }
    }

    #[test]
    fn records_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rev = Revision::new();
        let reg = EndpointRegistry::open(dir.path(), rev.clone()).unwrap();
        assert!(reg.snapshot().is_empty());
        assert_eq!(rev.current(), 0, "nothing loaded, nothing changed");
        reg.insert(endpoint("c1", "a")).unwrap();
        reg.insert(endpoint("c2", "b")).unwrap();
        assert_eq!(rev.current(), 2);
        assert!(dir.path().join("c1.eth0.json").exists());

        let rev2 = Revision::new();
        let again = EndpointRegistry::open(dir.path(), rev2.clone()).unwrap();
        assert_eq!(again.snapshot(), reg.snapshot());
        assert_eq!(rev2.current(), 1);

        let key = EndpointKey::new("c1", "eth0");
        assert_eq!(again.remove(&key).unwrap(), Some(endpoint("c1", "a")));
        assert_eq!(again.remove(&key).unwrap(), None);
        assert!(!dir.path().join("c1.eth0.json").exists());
    }

    #[test]
    fn concurrent_inserts_share_folder_syncs_and_all_survive() {
        let dir = tempfile::tempdir().unwrap();
        let reg = EndpointRegistry::open(dir.path(), Revision::new()).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let reg = &reg;
                s.spawn(move || {
                    for i in 0..8 {
                        reg.insert(endpoint(&format!("c{t}-{i}"), &format!("p{t}-{i}")))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(reg.snapshot().len(), 64);
        assert_eq!(reg.renamed.load(Ordering::SeqCst), 64);
        assert_eq!(
            *reg.synced.lock().unwrap(),
            64,
            "the last sync covers every rename"
        );
        // No temporary file is left behind, and a restart reads them all.
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        let again = EndpointRegistry::open(dir.path(), Revision::new()).unwrap();
        assert_eq!(again.snapshot().len(), 64);
    }

    #[test]
    fn a_new_sandbox_displaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let reg = EndpointRegistry::open(dir.path(), Revision::new()).unwrap();
        reg.insert(endpoint("old", "a")).unwrap();
        let displaced = reg.insert(endpoint("new", "a")).unwrap();
        assert_eq!(displaced, [endpoint("old", "a")]);
        let keys: Vec<_> = reg.snapshot().keys().cloned().collect();
        assert_eq!(keys, [EndpointKey::new("new", "eth0")]);
        assert!(!dir.path().join("old.eth0.json").exists());
    }

    #[test]
    fn unreadable_records_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.eth0.json"), "{not json").unwrap();
        let reg = EndpointRegistry::open(dir.path(), Revision::new()).unwrap();
        assert!(reg.snapshot().is_empty());
        assert!(dir.path().join("x.eth0.json.bad").exists());
    }

    #[test]
    fn names_and_kinds() {
        assert_eq!(dataplane_interface_name("ns", "p", "eth0"), "ns/p");
        assert_eq!(dataplane_interface_name("ns", "p", "net1"), "ns/p/net1");
        assert_eq!(EndpointKey::new("abc", "eth0").handle(), "abc.eth0");
        assert_eq!("vhost-user".parse(), Ok(InterfaceKind::VhostUser));
        assert!("veth".parse::<InterfaceKind>().is_err());
        assert_eq!(
            serde_json::to_string(&InterfaceKind::VhostUser).unwrap(),
            "\"vhost-user\""
        );
    }
}
