//! The `dir:PATH` source: a folder of manifests (`*.yaml`, `*.yml`,
//! `*.json`; hidden files and subfolders are not read), the standalone
//! mode the lab runs in.
//!
//! The folder is read whole each time: on a change that `notify` reports
//! (after a short quiet period, so that a burst of writes is read once),
//! every [`DirSource::rescan_every`] in case a change went unreported, and
//! whenever the agent asks for a [refresh](super::SourceHandle::refresh).
//! What is read replaces the store's contents. An object that cannot be
//! read is reported and left out; it never stops the others. Problems are
//! logged when they first appear, not again at every rescan.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::manifest::{self, Origin, Problem, Severity};
use super::store::{Objects, Store};
use super::SourceHandle;

/// What one read of the folder found.
#[derive(Debug, Default)]
pub struct Scan {
    pub objects: Objects,
    pub problems: Vec<Problem>,
    /// Each file's name and bytes, to tell a change of the folder from a
    /// read that finds it as it was.
    files: Vec<(String, Vec<u8>)>,
}

/// Whether a file of the folder is a manifest by its name.
fn is_manifest(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// Reads every manifest in `dir`, in file name order. An object defined
/// twice is kept where it is first defined and reported where it is
/// defined again. Fails only when the folder itself cannot be listed.
pub fn scan(dir: &Path) -> io::Result<Scan> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Follows symlinks, as a mounted ConfigMap's files are links.
        if is_manifest(&name) && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();

    let mut scan = Scan::default();
    let mut seen = BTreeMap::new();
    let mut objects = Vec::new();
    for name in names {
        let bytes = match std::fs::read(dir.join(&name)) {
            Ok(b) => b,
            // Removed between listing and reading: the next read will
            // not list it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                scan.problems.push(Problem {
                    origin: Origin::file(&name),
                    severity: Severity::Error,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) => manifest::parse(&name, text),
            Err(e) => {
                scan.problems.push(Problem {
                    origin: Origin::file(&name),
                    severity: Severity::Error,
                    message: format!("not UTF-8 text: {e}"),
                });
                scan.files.push((name, bytes));
                continue;
            }
        };
        scan.problems.extend(parsed.problems);
        for (origin, object) in parsed.objects {
            let key = object.key();
            if let Some(first) = seen.get(&key) {
                scan.problems.push(Problem {
                    origin,
                    severity: Severity::Error,
                    message: format!("{key} is already defined in {first}; ignored here"),
                });
                continue;
            }
            seen.insert(key, origin);
            objects.push(object);
        }
        scan.files.push((name, bytes));
    }
    scan.objects = Objects::from_objects(objects);
    Ok(scan)
}

/// The folder source.
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
    rescan_every: Duration,
    quiet: Duration,
    notify: bool,
}

/// A refresh request: answered once the store holds what the folder holds.
type RefreshRequest = oneshot::Sender<()>;

impl DirSource {
    /// Default period of the fallback rescan.
    pub const RESCAN_EVERY: Duration = Duration::from_secs(5);

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            rescan_every: Self::RESCAN_EVERY,
            quiet: Duration::from_millis(50),
            notify: true,
        }
    }

    /// Whether to watch the folder for changes (default) or rely on the
    /// periodic rescan alone (for file systems without notifications).
    pub fn notify(mut self, on: bool) -> Self {
        self.notify = on;
        self
    }

    /// Sets the period of the fallback rescan.
    pub fn rescan_every(mut self, period: Duration) -> Self {
        self.rescan_every = period;
        self
    }

    /// Reads the folder into `store`, then keeps it up to date in a task
    /// until the handle is dropped.
    pub async fn start(self, store: Store) -> SourceHandle {
        let (events_tx, events) = mpsc::unbounded_channel::<()>();
        // Watch before the first read, so that no change falls between.
        let watcher = match self.notify.then(|| self.watch(events_tx)) {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                warn!(dir = %self.dir.display(), error = %e,
                    "cannot watch the manifest folder; rescanning every {:?} only",
                    self.rescan_every);
                None
            }
        };
        let mut reader = Reader::default();
        reader.read(&self.dir, &store).await;
        info!(dir = %self.dir.display(), objects = store.snapshot().len(),
            revision = store.revision().current(), "manifest folder read");

        let (refresh_tx, refresh_rx) = mpsc::channel::<RefreshRequest>(16);
        let task = tokio::spawn(self.run(store, reader, watcher, events, refresh_rx));
        SourceHandle::new(task, Some(refresh_tx))
    }

    async fn run(
        self,
        store: Store,
        mut reader: Reader,
        // Kept alive for as long as the loop runs: dropping it ends the
        // watch.
        _watcher: Option<notify::RecommendedWatcher>,
        mut events: mpsc::UnboundedReceiver<()>,
        mut refresh: mpsc::Receiver<RefreshRequest>,
    ) {
        let mut rescan = tokio::time::interval(self.rescan_every);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.reset();
        loop {
            tokio::select! {
                Some(()) = events.recv() => {
                    // Let a burst of writes settle, then read once.
                    tokio::time::sleep(self.quiet).await;
                    while events.try_recv().is_ok() {}
                    debug!("manifest folder changed");
                    reader.read(&self.dir, &store).await;
                }
                request = refresh.recv() => {
                    let Some(done) = request else { return };
                    reader.read(&self.dir, &store).await;
                    let _ = done.send(());
                }
                _ = rescan.tick() => reader.read(&self.dir, &store).await,
            }
        }
    }

    fn watch(
        &self,
        events: mpsc::UnboundedSender<()>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => !e.kind.is_access(),
                    Err(_) => true,
                };
                if relevant {
                    let _ = events.send(());
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

/// Reads the folder into the store, remembering what the last read saw.
#[derive(Debug, Default)]
struct Reader {
    files: Option<Vec<(String, Vec<u8>)>>,
    problems: Vec<Problem>,
    unreadable: bool,
}

impl Reader {
    async fn read(&mut self, dir: &Path, store: &Store) {
        let path = dir.to_owned();
        let scanned = tokio::task::spawn_blocking(move || scan(&path))
            .await
            .expect("folder scan panicked");
        let scan = match scanned {
            Ok(s) => s,
            Err(e) => {
                // Keep what was read last; say so once.
                if !self.unreadable {
                    error!(dir = %dir.display(), error = %e, "cannot read the manifest folder");
                    self.unreadable = true;
                }
                return;
            }
        };
        self.unreadable = false;
        if scan.problems != self.problems {
            for p in scan.problems.iter().filter(|p| !self.problems.contains(p)) {
                match p.severity {
                    Severity::Warning => warn!("{p}"),
                    Severity::Error => error!("{p}"),
                }
            }
            self.problems = scan.problems;
        }
        // A file that changed without changing any object still counts
        // as a change: whoever wrote it waits for a new revision.
        let files_changed = self.files.as_ref() != Some(&scan.files);
        let first = self.files.is_none();
        self.files = Some(scan.files);
        if store.replace_all(scan.objects, files_changed && !first) {
            debug!(revision = store.revision().current(), "manifests changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::datastore::objects::{Kind, ObjectKey};
    use crate::agent::revision::Revision;

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    const POD: &str =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {containers: []}\n";

    #[test]
    fn scans_manifests_only_in_name_order_and_reports_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), POD).unwrap();
        std::fs::write(dir.path().join("a.yml"), format!("{NS}---\n{POD}")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "{{{").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let scan = scan(dir.path()).unwrap();
        assert_eq!(scan.objects.len(), 2);
        let problems: Vec<String> = scan.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["b.yaml doc 1: Pod a/p is already defined in a.yml doc 2; ignored here"]
        );
    }

    #[tokio::test]
    async fn follows_changes_and_refreshes_on_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        let store = Store::new(Revision::new());
        let source = DirSource::new(dir.path())
            .rescan_every(Duration::from_secs(3600))
            .start(store.clone())
            .await;
        source.refresh().await;
        assert!(store.is_synced());
        let first = store.revision().current();
        assert_eq!(store.snapshot().len(), 1);

        // Seen by the watch, with no refresh.
        let mut rx = store.revision().subscribe();
        std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.snapshot().pod("a", "p").is_none() {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the watch saw the new file");
        assert!(store.revision().current() > first);

        // A refresh sees a change at once, whatever the watch does.
        std::fs::remove_file(dir.path().join("pod.yaml")).unwrap();
        source.refresh().await;
        assert!(store.snapshot().pod("a", "p").is_none());

        // Rewriting a file with new text but the same objects is still a
        // new revision; reading it unchanged is not.
        let before = store.revision().current();
        std::fs::write(dir.path().join("ns.yaml"), format!("# comment\n{NS}")).unwrap();
        source.refresh().await;
        let after = store.revision().current();
        assert!(after > before);
        source.refresh().await;
        source.refresh().await;
        assert_eq!(store.revision().current(), after);
        assert!(store
            .snapshot()
            .get(&ObjectKey::new(Kind::Namespace, "", "a"))
            .is_some());
    }

    #[tokio::test]
    async fn rescans_without_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Revision::new());
        let _source = DirSource::new(dir.path())
            .notify(false)
            .rescan_every(Duration::from_millis(100))
            .start(store.clone())
            .await;
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.snapshot().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the rescan saw the new file");
    }
}
