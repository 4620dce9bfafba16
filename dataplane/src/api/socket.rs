//! The API's unix socket file: claiming its path, binding it owner-only
//! (mode 0600), and removing it when the API stops.
//!
//! A socket file left behind by a dataplane that died is replaced; one a
//! live dataplane still answers on is not, and neither is anything at that
//! path that is not a socket.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context as _};
use tokio::net::UnixListener;
use tracing::{info, warn};

/// Mode of the socket file: only the dataplane's own user (root) may
/// connect, as the API can create devices in any network namespace.
const SOCKET_MODE: u32 = 0o600;

/// The bound socket's file, removed on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!(socket = %self.path.display(), error = %e, "cannot remove the API socket");
            }
            _ => {}
        }
    }
}

/// Binds a listener at `path`, creating its directory and replacing a
/// stale socket first. The socket is bound and listening under a
/// temporary name, narrowed to mode 0600 and only then renamed to `path`:
/// a client that sees the path can connect at once, and nobody ever
/// connects to a socket of a wider mode.
pub fn bind(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_stale(path)?;

    // Short, so that it fits `sun_path` wherever `path` does; unique per
    // bind within and across processes.
    static BINDS: AtomicU32 = AtomicU32::new(0);
    let n = BINDS.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".api-{}-{n}.sock", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting the mode of {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        });
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let file = SocketFile {
        path: path.to_owned(),
    };
    Ok((listener, file))
}

fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "{} is in use: another dataplane is serving on it",
            path.display()
        );
    }
    info!(socket = %path.display(), "removing stale API socket");
    fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("caracal-api-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn binds_owner_only_in_a_new_directory_and_cleans_up() {
        let scratch = Scratch::new("bind");
        let path = scratch.0.join("run/caracal/dataplane.sock");
        let (listener, file) = bind(&path).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Listening before the path exists; no temporary name left.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["dataplane.sock"]);
        drop(listener);
        drop(file);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn replaces_a_stale_socket() {
        let scratch = Scratch::new("stale");
        let path = scratch.0.join("dp.sock");
        fs::create_dir_all(&scratch.0).unwrap();
        // A socket file nobody listens on, as a crashed dataplane leaves.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_listener, _file) = bind(&path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    }

    #[tokio::test]
    async fn refuses_a_live_socket() {
        let scratch = Scratch::new("live");
        let path = scratch.0.join("dp.sock");
        let (_listener, _file) = bind(&path).unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("another dataplane is serving"), "{err}");
        assert!(path.exists());
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let scratch = Scratch::new("file");
        let path = scratch.0.join("dp.sock");
        fs::create_dir_all(&scratch.0).unwrap();
        fs::write(&path, b"keep me").unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
    }
}
