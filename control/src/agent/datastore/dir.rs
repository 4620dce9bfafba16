//! The `dir:PATH` source: a folder of manifests (`*.yaml`, `*.yml`,
//! `*.json`; hidden files and subfolders are not read), the standalone
//! mode the lab runs in.
//!
//! The folder is followed through `notify`'s events, file by file: a
//! manifest that is complete — renamed into or out of place, removed, or
//! closed after writing — is read at once (at most once per quiet period,
//! so that a burst of changes is read in a few reads); one that is being
//! written is read once its writes go quiet for a short while; an event
//! that names no manifest the folder's reader can tell (a hidden entry,
//! as a mounted ConfigMap swaps its `..data` link; a lost event) has the
//! whole folder read after that quiet period. Files that are not
//! manifests and not hidden (a writer's `x.yaml.tmp`) are ignored. The
//! whole folder is also read every [`DirSource::rescan_every`] in case a
//! change went unreported, and whenever the agent asks for a
//! [refresh](super::SourceHandle::refresh).
//!
//! A whole read lists the folder and `stat`s every file; it reads only the
//! files whose metadata changed or changed recently, and parses only
//! those whose bytes changed since the last read ([`FileCache`]): an
//! unchanged file gives the very objects it gave before, so the store and
//! the calculation behind it see at once that they did not change. What
//! is read replaces the store's contents. An object that cannot be read
//! is reported and left out; it never stops the others. Problems are
//! logged when they first appear, not again at every rescan.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::manifest::{self, Origin, Problem, Severity};
use super::objects::{Object, ObjectKey};
use super::store::{Objects, Store};
use super::SourceHandle;

/// What one read of the folder found.
#[derive(Debug, Default)]
pub struct Scan {
    pub objects: Objects,
    pub problems: Vec<Problem>,
    /// Whether some file was added, removed or changed since the read
    /// the cache remembers (always, for the first).
    pub files_changed: bool,
}

/// What the last read found in each file: its bytes, and what they
/// parsed to.
#[derive(Debug, Default)]
pub struct FileCache {
    files: BTreeMap<String, CachedFile>,
}

#[derive(Debug)]
struct CachedFile {
    /// The file's metadata when it was read.
    stamp: Option<Stamp>,
    bytes: Vec<u8>,
    objects: Vec<(Origin, ObjectKey, Object)>,
    /// The file's own problems (not those of objects defined twice).
    problems: Vec<Problem>,
}

/// What `stat` says of a file: while none of it changes, neither did the
/// file — once its modification time is far enough in the past that a
/// write within the same clock tick would have moved it (the kernel's
/// file times are coarse: one scheduler tick). A recently modified file
/// is compared by its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: std::time::SystemTime,
}

impl Stamp {
    /// How old a modification must be for the stamp alone to be trusted.
    const SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }

    fn settled(&self) -> bool {
        self.modified
            .elapsed()
            .is_ok_and(|age| age >= Self::SETTLED)
    }
}

impl CachedFile {
    fn parse(name: &str, stamp: Option<Stamp>, bytes: Vec<u8>) -> Self {
        let (objects, problems) = match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let parsed = manifest::parse(name, text);
                let objects = parsed
                    .objects
                    .into_iter()
                    .map(|(origin, object)| (origin, object.key(), object))
                    .collect();
                (objects, parsed.problems)
            }
            Err(e) => (
                Vec::new(),
                vec![Problem {
                    origin: Origin::file(name),
                    severity: Severity::Error,
                    message: format!("not UTF-8 text: {e}"),
                }],
            ),
        };
        CachedFile {
            stamp,
            bytes,
            objects,
            problems,
        }
    }
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
    scan_cached(dir, &mut FileCache::default())
}

/// [`scan`], parsing only the files whose bytes are not those `cache`
/// holds, and reading only those whose [`Stamp`] changed or is recent;
/// `cache` is left holding what this read found.
pub fn scan_cached(dir: &Path, cache: &mut FileCache) -> io::Result<Scan> {
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
    let mut old = std::mem::take(&mut cache.files);
    // Files that went, or can no longer be read, are a change too.
    let mut files_changed = false;
    for name in names {
        let path = dir.join(&name);
        let stamp = Stamp::of(&path);
        // Unchanged and settled: no need to read it again.
        if let Some(file) = old.remove(&name) {
            if stamp.is_some_and(|s| s.settled()) && file.stamp == stamp {
                cache.files.insert(name, file);
                continue;
            }
            old.insert(name.clone(), file);
        }
        let bytes = match std::fs::read(&path) {
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
        let file = match old.remove(&name) {
            Some(file) if file.bytes == bytes => CachedFile { stamp, ..file },
            _ => {
                files_changed = true;
                CachedFile::parse(&name, stamp, bytes)
            }
        };
        cache.files.insert(name, file);
    }
    files_changed |= !old.is_empty();
    scan.files_changed = files_changed;
    assemble(cache, &mut scan);
    Ok(scan)
}

/// [`scan_cached`] for the files `names` of `dir` only (those that are
/// gone included): the others are taken to be as `cache` holds them.
pub fn scan_files<'a>(
    dir: &Path,
    cache: &mut FileCache,
    names: impl IntoIterator<Item = &'a str>,
) -> Scan {
    let mut scan = Scan::default();
    for name in names {
        let path = dir.join(name);
        // Follows symlinks, as a mounted ConfigMap's files are links.
        let read = if path.is_file() {
            std::fs::read(&path)
        } else {
            Err(io::ErrorKind::NotFound.into())
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                scan.files_changed |= cache.files.remove(name).is_some();
                continue;
            }
            Err(e) => {
                scan.problems.push(Problem {
                    origin: Origin::file(name),
                    severity: Severity::Error,
                    message: format!("cannot read: {e}"),
                });
                scan.files_changed |= cache.files.remove(name).is_some();
                continue;
            }
        };
        let stamp = Stamp::of(&path);
        let file = match cache.files.remove(name) {
            Some(file) if file.bytes == bytes => CachedFile { stamp, ..file },
            _ => {
                scan.files_changed = true;
                CachedFile::parse(name, stamp, bytes)
            }
        };
        cache.files.insert(name.to_owned(), file);
    }
    assemble(cache, &mut scan);
    scan
}

/// The objects and problems of the files `cache` holds, into `scan`.
fn assemble(cache: &FileCache, scan: &mut Scan) {
    let mut objects: BTreeMap<&ObjectKey, (&Origin, &Object)> = BTreeMap::new();
    for file in cache.files.values() {
        scan.problems.extend(file.problems.iter().cloned());
        for (origin, key, object) in &file.objects {
            match objects.entry(key) {
                Entry::Vacant(e) => {
                    e.insert((origin, object));
                }
                Entry::Occupied(e) => scan.problems.push(Problem {
                    origin: origin.clone(),
                    severity: Severity::Error,
                    message: format!("{key} is already defined in {}; ignored here", e.get().0),
                }),
            }
        }
    }
    scan.objects = Objects::from_sorted(
        objects
            .into_iter()
            .map(|(key, (_, object))| (key.clone(), object.clone())),
    );
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
    /// How long the writes to a file (or unexplained events) must go
    /// quiet before it is (or the folder is) read, and the least time
    /// between two reads of complete files, so that a burst of changes
    /// is read a few times rather than once per file. Short: writers that
    /// care (`lab apply`) write a whole file under another name and
    /// rename it, which is read at once.
    pub const QUIET: Duration = Duration::from_millis(10);

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            rescan_every: Self::RESCAN_EVERY,
            quiet: Self::QUIET,
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
        let (events_tx, events) = mpsc::unbounded_channel::<Change>();
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

        let (refresh_tx, refresh_rx) = mpsc::channel::<RefreshRequest>(1024);
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
        mut events: mpsc::UnboundedReceiver<Change>,
        mut refresh: mpsc::Receiver<RefreshRequest>,
    ) {
        let mut rescan = tokio::time::interval(self.rescan_every);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.reset();
        let mut due = Due::default();
        // When the last read of complete files ended.
        let mut last_read: Option<Instant> = None;
        loop {
            let wake = due.next();
            tokio::select! {
                Some(change) = events.recv() => {
                    let now = Instant::now();
                    let earliest = last_read.map_or(now, |t| (t + self.quiet).max(now));
                    due.add(change, now, earliest, self.quiet);
                    while let Ok(change) = events.try_recv() {
                        due.add(change, now, earliest, self.quiet);
                    }
                }
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    if due.all.is_some_and(|t| t <= now) {
                        due = Due::default();
                        debug!("manifest folder changed");
                        reader.read(&self.dir, &store).await;
                    } else {
                        let names = due.take(now);
                        debug!(files = names.len(), "manifests changed");
                        reader.read_files(&self.dir, names, &store).await;
                    }
                    last_read = Some(Instant::now());
                }
                request = refresh.recv() => {
                    let Some(done) = request else { return };
                    // Every request queued by now is answered by this one
                    // read (each was made before it starts): a burst of
                    // CNI ADDs reads the folder once, not once each.
                    let mut waiting = vec![done];
                    while let Ok(more) = refresh.try_recv() {
                        waiting.push(more);
                    }
                    due = Due::default();
                    reader.read(&self.dir, &store).await;
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                _ = rescan.tick() => {
                    due = Due::default();
                    reader.read(&self.dir, &store).await;
                }
            }
        }
    }

    fn watch(
        &self,
        events: mpsc::UnboundedSender<Change>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Some(change) = Change::of(event) {
                    let _ = events.send(change);
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

/// What one notification says about the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// These manifests are complete as they are now: renamed into or out
    /// of place, removed, or closed after writing.
    Settled(Vec<String>),
    /// These manifests are being written (created, written to, their
    /// metadata changed).
    Writing(Vec<String>),
    /// Something that may change what the manifests hold without naming
    /// one: a hidden entry (a mounted ConfigMap's `..data` link), the
    /// folder itself, a lost event.
    Unknown,
}

impl Change {
    /// `None` for events that change nothing (reads, files that are not
    /// manifests).
    fn of(event: notify::Result<notify::Event>) -> Option<Change> {
        use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
        let Ok(event) = event else {
            return Some(Change::Unknown);
        };
        let settled = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_)) => true,
            EventKind::Access(_) => return None,
            EventKind::Create(_) | EventKind::Modify(_) => false,
            EventKind::Any | EventKind::Other => return Some(Change::Unknown),
        };
        if event.need_rescan() || event.paths.is_empty() {
            return Some(Change::Unknown);
        }
        let mut names = Vec::new();
        for path in &event.paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Some(Change::Unknown);
            };
            if is_manifest(name) {
                names.push(name.to_owned());
            } else if name.starts_with('.') {
                return Some(Change::Unknown);
            }
        }
        if names.is_empty() {
            return None;
        }
        Some(if settled {
            Change::Settled(names)
        } else {
            Change::Writing(names)
        })
    }
}

/// The reads the events call for, and when each is due.
#[derive(Debug, Default)]
struct Due {
    /// Complete files, and when they may be read.
    settled: BTreeMap<String, Instant>,
    /// Files being written, and when their writes will have gone quiet.
    writing: BTreeMap<String, Instant>,
    /// When the whole folder is to be read.
    all: Option<Instant>,
}

impl Due {
    /// Notes `change`, seen at `now`; complete files are due at
    /// `earliest`.
    fn add(&mut self, change: Change, now: Instant, earliest: Instant, quiet: Duration) {
        match change {
            Change::Settled(names) => {
                for name in names {
                    self.writing.remove(&name);
                    self.settled.entry(name).or_insert(earliest);
                }
            }
            Change::Writing(names) => {
                for name in names {
                    self.settled.remove(&name);
                    self.writing.insert(name, now + quiet);
                }
            }
            Change::Unknown => self.all = Some(now + quiet),
        }
    }

    /// When the next read is due.
    fn next(&self) -> Option<Instant> {
        self.settled
            .values()
            .chain(self.writing.values())
            .chain(&self.all)
            .min()
            .copied()
    }

    /// The files due by `now`, no longer due.
    fn take(&mut self, now: Instant) -> Vec<String> {
        let mut names = Vec::new();
        for list in [&mut self.settled, &mut self.writing] {
            list.retain(|name, at| {
                if *at <= now {
                    names.push(name.clone());
                }
                *at > now
            });
        }
        names
    }
}

/// Sleeps until `at`, or for ever when nothing is due.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads the folder into the store, remembering what the last read saw.
#[derive(Debug, Default)]
struct Reader {
    /// `None` before the first read.
    cache: Option<FileCache>,
    problems: Vec<Problem>,
    unreadable: bool,
}

impl Reader {
    /// Reads the whole folder.
    async fn read(&mut self, dir: &Path, store: &Store) {
        let path = dir.to_owned();
        let first = self.cache.is_none();
        let mut cache = self.cache.take().unwrap_or_default();
        let (cache, scanned) = tokio::task::spawn_blocking(move || {
            let scanned = scan_cached(&path, &mut cache);
            (cache, scanned)
        })
        .await
        .expect("folder scan panicked");
        let scan = match scanned {
            Ok(s) => s,
            Err(e) => {
                // Keep what was read last; say so once.
                if !first {
                    self.cache = Some(cache);
                }
                if !self.unreadable {
                    error!(dir = %dir.display(), error = %e, "cannot read the manifest folder");
                    self.unreadable = true;
                }
                return;
            }
        };
        self.cache = Some(cache);
        self.unreadable = false;
        self.store(scan, first, store);
    }

    /// Reads the files `names` only (the whole folder before the first
    /// read).
    async fn read_files(&mut self, dir: &Path, names: Vec<String>, store: &Store) {
        let Some(mut cache) = self.cache.take() else {
            return self.read(dir, store).await;
        };
        let path = dir.to_owned();
        let (cache, scan) = tokio::task::spawn_blocking(move || {
            let scan = scan_files(&path, &mut cache, names.iter().map(String::as_str));
            (cache, scan)
        })
        .await
        .expect("manifest read panicked");
        self.cache = Some(cache);
        self.store(scan, false, store);
    }

    /// Puts what a read found into the store.
    fn store(&mut self, scan: Scan, first: bool, store: &Store) {
        if scan.problems != self.problems {
            for p in scan.problems.iter().filter(|p| !self.problems.contains(p)) {
                match p.severity {
                    Severity::Warning => warn!("{p}"),
                    Severity::Error => error!("{p}"),
                }
            }
            self.problems = scan.problems;
        }
        if !first && !scan.files_changed {
            // The same files give the same objects: nothing to tell.
            return;
        }
        // A file that changed without changing any object still counts
        // as a change: whoever wrote it waits for a new revision.
        if store.replace_all(scan.objects, !first) {
            debug!(revision = store.revision().current(), "manifests stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::datastore::objects::Kind;
    use crate::agent::revision::Revision;
    use std::sync::Arc;

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

    #[test]
    fn a_rewrite_of_the_same_size_in_the_same_clock_tick_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod.yaml");
        std::fs::write(&path, POD).unwrap();
        let mut cache = FileCache::default();
        let first = scan_cached(dir.path(), &mut cache).unwrap();
        // Same length, other name, and (on a coarse clock) quite possibly
        // the same modification time: still read again, as it is recent.
        std::fs::write(&path, POD.replace("name: p,", "name: q,")).unwrap();
        let again = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(again.files_changed);
        assert_ne!(again.objects, first.objects);

        // A settled file whose metadata did not change is not read, and
        // its objects are the cached ones.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let settled = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(!settled.files_changed);
        assert_eq!(settled.objects, again.objects);
    }

    #[test]
    fn parses_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
        let mut cache = FileCache::default();
        let first = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(first.files_changed);
        let ns_key = ObjectKey::new(Kind::Namespace, "", "a");
        let pod_key = ObjectKey::new(Kind::Pod, "a", "p");
        let shared = |a: &Scan, b: &Scan, key: &ObjectKey| match (
            a.objects.get(key).unwrap(),
            b.objects.get(key).unwrap(),
        ) {
            (Object::Namespace(x), Object::Namespace(y)) => Arc::ptr_eq(x, y),
            (Object::Pod(x), Object::Pod(y)) => Arc::ptr_eq(x, y),
            _ => unreachable!(),
        };

        let again = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(!again.files_changed);
        assert_eq!(again.objects, first.objects);
        assert!(shared(&first, &again, &ns_key) && shared(&first, &again, &pod_key));

        std::fs::write(
            dir.path().join("pod.yaml"),
            POD.replace(
                "{name: p, namespace: a}",
                "{name: p, namespace: a, labels: {x: y}}",
            ),
        )
        .unwrap();
        let changed = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(changed.files_changed);
        assert!(
            shared(&first, &changed, &ns_key),
            "ns.yaml is not parsed again"
        );
        assert!(!shared(&first, &changed, &pod_key));

        // A file that goes is a change; a fresh cache parses everything
        // into what the cached reads found.
        std::fs::remove_file(dir.path().join("ns.yaml")).unwrap();
        let removed = scan_cached(dir.path(), &mut cache).unwrap();
        assert!(removed.files_changed);
        assert_eq!(removed.objects.len(), 1);
        assert_eq!(scan(dir.path()).unwrap().objects, removed.objects);
    }

    #[test]
    fn reading_the_changed_files_finds_what_a_whole_read_finds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ns.yaml"), NS).unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD).unwrap();
        let mut cache = FileCache::default();
        scan_cached(dir.path(), &mut cache).unwrap();

        // Changed, added, removed, and a name that never was.
        std::fs::write(
            dir.path().join("a.yaml"),
            POD.replace("name: p,", "name: q,"),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yaml"), POD).unwrap();
        std::fs::remove_file(dir.path().join("ns.yaml")).unwrap();
        let some = scan_files(
            dir.path(),
            &mut cache,
            ["a.yaml", "b.yaml", "ns.yaml", "none.yaml"],
        );
        assert!(some.files_changed);
        assert_eq!(some.objects, scan(dir.path()).unwrap().objects);
        assert_eq!(some.objects.len(), 2);

        // The same bytes again: no change.
        let again = scan_files(dir.path(), &mut cache, ["a.yaml"]);
        assert!(!again.files_changed);
        assert_eq!(again.objects, some.objects);
    }

    #[test]
    fn events_say_which_manifests_are_complete() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
        };
        let event = |kind, path: &str| Ok(notify::Event::new(kind).add_path(path.into()));
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(
            Change::of(event(moved, "/m/a.yaml")),
            Some(Change::Settled(names(&["a.yaml"])))
        );
        assert_eq!(
            Change::of(event(EventKind::Remove(RemoveKind::File), "/m/a.yaml")),
            Some(Change::Settled(names(&["a.yaml"])))
        );
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(
            Change::of(event(closed, "/m/a.json")),
            Some(Change::Settled(names(&["a.json"])))
        );
        assert_eq!(
            Change::of(event(EventKind::Create(CreateKind::File), "/m/a.yml")),
            Some(Change::Writing(names(&["a.yml"])))
        );
        // A writer's temporary file, and reads: nothing to do.
        assert_eq!(Change::of(event(moved, "/m/a.yaml.tmp")), None);
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert_eq!(Change::of(event(opened, "/m/a.yaml")), None);
        // A ConfigMap's link swap, or an error: read everything.
        assert_eq!(Change::of(event(moved, "/m/..data")), Some(Change::Unknown));
        assert_eq!(
            Change::of(Err(notify::Error::generic("lost"))),
            Some(Change::Unknown)
        );
    }

    #[test]
    fn complete_files_are_due_at_once_and_written_ones_once_quiet() {
        let quiet = Duration::from_millis(10);
        let t0 = Instant::now();
        let mut due = Due::default();
        due.add(Change::Writing(vec!["w.yaml".into()]), t0, t0, quiet);
        due.add(Change::Settled(vec!["s.yaml".into()]), t0, t0, quiet);
        assert_eq!(due.next(), Some(t0));
        assert_eq!(due.take(t0), ["s.yaml"]);
        assert_eq!(due.next(), Some(t0 + quiet));
        // Closed after writing: complete, due at once.
        due.add(Change::Settled(vec!["w.yaml".into()]), t0, t0, quiet);
        assert_eq!(due.take(t0), ["w.yaml"]);
        assert_eq!(due.next(), None);
        due.add(Change::Unknown, t0, t0, quiet);
        assert_eq!(due.all, Some(t0 + quiet));
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

        // Concurrent refreshes (a burst of CNI ADDs) share reads, and each
        // sees what was written before it asked.
        std::fs::write(dir.path().join("pod.yaml"), POD).unwrap();
        futures::future::join_all((0..64).map(|_| source.refresh())).await;
        assert!(store.snapshot().pod("a", "p").is_some());
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
