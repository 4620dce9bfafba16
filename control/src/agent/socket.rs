//! The agent's API socket file: claiming its path, binding it owner-only
//! (mode 0600: the CNI plugin runs as root), removing it on exit.
//!
//! A socket left behind by an agent that died is replaced; one that a
//! live agent answers on is not, and neither is anything that is not a
//! socket.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::UnixListener;
use tracing::{info, warn};

/// Mode of the socket file.
const SOCKET_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exists and is not a socket; not replacing it", .0.display())]
    NotASocket(PathBuf),
    #[error("{} is in use: another agent is serving on it", .0.display())]
    InUse(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The bound socket's file, removed on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!(socket = %self.path.display(), error = %e, "cannot remove the socket");
            }
            _ => {}
        }
    }
}

/// Binds a listener at `path`, creating its folder and replacing a stale
/// socket first. The socket listens, with mode 0600, under a temporary
/// name that is then renamed to `path`: whoever sees the path can connect
/// (a CNI plugin started with the agent does not meet a refused
/// connection), and nobody connects while the mode is wider.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), SocketError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_owned()))
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            info!(socket = %path.display(), "removing a stale socket");
            fs::remove_file(path).map_err(io_error(path))?;
        }
    }
    // Short, so that it fits `sun_path` wherever `path` does.
    static BINDS: AtomicU32 = AtomicU32::new(0);
    let n = BINDS.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".agent-{}-{n}.sock", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_error(&tmp))?;
    let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_error(path)));
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let file = SocketFile {
        path: path.to_owned(),
    };
    Ok((listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_owner_only_replaces_stale_refuses_live_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let (listener, file) = bind(&path).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));
        drop(listener);
        drop(file);
        assert!(!path.exists());

        // A socket nobody listens on, as a crashed agent leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_listener, _file) = bind(&path).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());

        let regular = dir.path().join("file");
        fs::write(&regular, b"keep").unwrap();
        assert!(matches!(bind(&regular), Err(SocketError::NotASocket(_))));
        assert_eq!(fs::read(&regular).unwrap(), b"keep");
    }
}
