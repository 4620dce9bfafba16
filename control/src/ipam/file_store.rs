//! The standalone store: the IPAM state as one JSON file under the
//! agent's state directory, safe across processes.
//!
//! Layout of the directory:
//!
//! - `ipam.json`: `{"revision": N, "state": {...}}`, where `N` counts the
//!   writes; absent until the first write (revision 0);
//! - `ipam.lock`: empty; an exclusive `flock(2)` on it is held across the
//!   read–compare–write of every swap;
//! - `ipam.json.tmp`: the next version while it is being written (only
//!   ever touched under the lock).
//!
//! A swap writes the temporary file, `fsync`s it, renames it over
//! `ipam.json` and `fsync`s the directory, so a reader (which takes no
//! lock) sees the old file or the new one, never a mix, and a crash
//! leaves one of them. The work is blocking, so it runs on tokio's
//! blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use super::state::{IpamState, Revision};
use super::store::IpamStore;
use super::IpamError;

pub const STATE_FILE: &str = "ipam.json";
pub const LOCK_FILE: &str = "ipam.lock";
const TEMP_FILE: &str = "ipam.json.tmp";

/// The IPAM state in a directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: Arc<Path>,
}

/// `ipam.json` as written.
#[derive(Serialize)]
struct FileOut<'a> {
    revision: u64,
    state: &'a IpamState,
}

/// `ipam.json` as read.
#[derive(Deserialize)]
struct FileIn {
    revision: u64,
    state: IpamState,
}

/// Just the revision of `ipam.json`; the rest is skipped unparsed.
#[derive(Deserialize)]
struct FileHeader {
    revision: u64,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> IpamError {
    IpamError::Store(format!("{what} {}: {e}", path.display()))
}

impl FileStore {
    /// A store in `dir`, created (with parents) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, IpamError> {
        let dir: PathBuf = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        Ok(FileStore { dir: dir.into() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> Result<T, IpamError> + Send + 'static,
    ) -> Result<T, IpamError> {
        let dir = Arc::clone(&self.dir);
        tokio::task::spawn_blocking(move || work(&dir))
            .await
            .map_err(|e| IpamError::Store(format!("file store task failed: {e}")))?
    }
}

/// The raw contents of `ipam.json`, `None` before the first write.
fn read_state_file(dir: &Path) -> Result<Option<Vec<u8>>, IpamError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", &path, e)),
    }
}

fn load_blocking(dir: &Path) -> Result<(IpamState, Revision), IpamError> {
    let Some(bytes) = read_state_file(dir)? else {
        return Ok((IpamState::default(), Revision::ABSENT));
    };
    let file: FileIn = serde_json::from_slice(&bytes)
        .map_err(|e| io_error("parsing", &dir.join(STATE_FILE), e))?;
    Ok((file.state, Revision::new(file.revision.to_string())))
}

fn swap_blocking(dir: &Path, expected: &Revision, new: &IpamState) -> Result<bool, IpamError> {
    let expected: u64 = match expected.as_str() {
        None => 0,
        Some(r) => r
            .parse()
            .map_err(|_| IpamError::Store(format!("revision {r:?} is not from a file store")))?,
    };
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_error("opening", &lock_path, e))?;
    // Released when `lock` is closed, on every return path.
    flock(&lock, FlockOperation::LockExclusive).map_err(|e| io_error("locking", &lock_path, e))?;

    let current = match read_state_file(dir)? {
        None => 0,
        Some(bytes) => {
            let header: FileHeader = serde_json::from_slice(&bytes)
                .map_err(|e| io_error("parsing", &dir.join(STATE_FILE), e))?;
            header.revision
        }
    };
    if current != expected {
        return Ok(false);
    }

    let body = serde_json::to_vec(&FileOut {
        revision: current + 1,
        state: new,
    })
    .map_err(|e| IpamError::Store(format!("encoding IPAM state: {e}")))?;
    let temp = dir.join(TEMP_FILE);
    let mut file = File::create(&temp).map_err(|e| io_error("creating", &temp, e))?;
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("writing", &temp, e))?;
    let path = dir.join(STATE_FILE);
    fs::rename(&temp, &path).map_err(|e| io_error("renaming over", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))?;
    Ok(true)
}

impl IpamStore for FileStore {
    async fn load(&self) -> Result<(IpamState, Revision), IpamError> {
        self.blocking(load_blocking).await
    }

    async fn compare_and_swap(
        &self,
        expected: Revision,
        new: &IpamState,
    ) -> Result<bool, IpamError> {
        let new = new.clone();
        self.blocking(move |dir| swap_blocking(dir, &expected, &new))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn swaps_bump_the_revision_and_refuse_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state")).unwrap();
        let (state, rev) = store.load().await.unwrap();
        assert_eq!(
            (state.clone(), rev.clone()),
            (IpamState::default(), Revision::ABSENT)
        );

        let mut next = state;
        next.affinities.push(crate::ipam::BlockAffinity {
            node: "n1".into(),
            cidr: "10.0.0.0/26".parse().unwrap(),
            state: crate::ipam::AffinityState::Confirmed,
        });
        assert!(store.compare_and_swap(rev.clone(), &next).await.unwrap());
        assert!(!store.compare_and_swap(rev, &next).await.unwrap());

        let (loaded, rev) = store.load().await.unwrap();
        assert_eq!(loaded, next);
        assert_eq!(rev.as_str(), Some("1"));
        assert!(store
            .compare_and_swap(rev, &IpamState::default())
            .await
            .unwrap());
        assert_eq!(store.load().await.unwrap().1.as_str(), Some("2"));

        let text = fs::read_to_string(store.state_path()).unwrap();
        assert!(
            text.starts_with(r#"{"revision":2,"state":{"version":1,"#),
            "{text}"
        );
        assert!(!dir.path().join("state").join(TEMP_FILE).exists());
        assert!(dir.path().join("state").join(LOCK_FILE).exists());
    }

    #[tokio::test]
    async fn foreign_revisions_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let err = store
            .compare_and_swap(Revision::new("abc"), &IpamState::default())
            .await;
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("not from a file store"));
        fs::write(store.state_path(), b"{not json").unwrap();
        let err = store.load().await.unwrap_err().to_string();
        assert!(
            err.contains("parsing") && err.contains("ipam.json"),
            "{err}"
        );
    }
}
