//! Memif pods (`caracal.io/interface: memif`, DESIGN §5 and §6): the
//! dataplane interface such a pod gets, where its socket lives, and the
//! pod's own settings from annotations. Pure, except for making and
//! removing the socket's folder.
//!
//! For a pod the dataplane is the memif server: interface id 0, Ethernet
//! mode, interrupt rx, no secret unless the pod names one. The pod's
//! application (DPDK's `net_memif`, libmemif, VPP) is the client. The
//! control socket is `<memif dir>/<namespace>-<pod>/memif.sock`
//! (`memif-<ifname>.sock` for an interface other than `eth0`): a folder
//! per pod, so that a pod can mount its own folder and nothing else. The
//! agent makes the folder before the dataplane binds the socket, and
//! removes it when the attachment goes. `<namespace>-<pod>` can name two
//! pods (`a-b`/`c` and `a`/`b-c`); the CNI server refuses the second.
//!
//! The pod's MAC is derived from the dataplane interface's name, so it is
//! the same for every sandbox of the pod and across agent restarts: a
//! locally administered unicast address. The dataplane sends the pod's
//! frames to it, the CNI result reports it, and the application should
//! take it (testpmd's `mac=` devarg, VPP's `hw-addr`); the pod's gateway
//! is the tap pods' one, 169.254.1.1 at ee:ee:ee:ee:ee:ee.
//!
//! Annotations:
//! - [`SECRET_ANNOTATION`]: a shared secret the application must present
//!   (at most 24 bytes);
//! - [`QUEUES_ANNOTATION`]: queue pairs, 1 to 256 (default: one per
//!   dataplane worker);
//! - [`RING_SIZE_ANNOTATION`]: the largest ring the dataplane accepts,
//!   descriptors, a power of two from 2 to 16384 (the client chooses the
//!   size; default: any).

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _};
use std::path::{Path, PathBuf};

use caracal_proto::dataplane as pb;
use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::endpoints::{Endpoint, MemifOptions};
use super::model::MemifSpec;

pub const SECRET_ANNOTATION: &str = "caracal.io/memif-secret";
pub const QUEUES_ANNOTATION: &str = "caracal.io/memif-queues";
pub const RING_SIZE_ANNOTATION: &str = "caracal.io/memif-ring-size";
/// Where the agent puts memif sockets unless told otherwise.
pub const DEFAULT_DIR: &str = "/run/caracal/memif";
/// Longest socket path, bytes: `sun_path` holds 108 with the NUL
/// (unix(7)).
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest secret, bytes (the memif protocol's `secret` field).
const MAX_SECRET: usize = 24;
/// Most queue pairs the dataplane makes (its `MemifSpec.queues`).
const MAX_QUEUES: u32 = 256;
/// Largest ring, descriptors (its `MemifSpec.ring_size`).
const MAX_RING_SIZE: u32 = 16384;
/// Interface id of a pod's memif (DESIGN §6).
const POD_INTERFACE_ID: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum MemifError {
    #[error("annotation {annotation}: {reason}")]
    BadAnnotation {
        annotation: &'static str,
        reason: String,
    },
    #[error(
        "memif socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a unix socket \
         address holds (shorten the agent's --memif-dir, the namespace or the pod's name)",
        path.display()
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error("memif socket folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The settings `pod` asks for by annotation, checked.
pub fn options(pod: &Pod) -> Result<MemifOptions, MemifError> {
    let annotation = |name: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(name))
            .map(String::as_str)
    };
    let bad =
        |annotation: &'static str, reason: String| MemifError::BadAnnotation { annotation, reason };
    let secret = match annotation(SECRET_ANNOTATION) {
        None | Some("") => None,
        Some(s) if s.len() > MAX_SECRET => {
            return Err(bad(
                SECRET_ANNOTATION,
                format!("{} bytes, more than {MAX_SECRET}", s.len()),
            ))
        }
        Some(s) if s.contains('\0') => return Err(bad(SECRET_ANNOTATION, "contains NUL".into())),
        Some(s) => Some(s.to_owned()),
    };
    let number = |name: &'static str, ok: &dyn Fn(u32) -> bool, want: &str| {
        annotation(name).map_or(Ok(0), |text| {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| ok(n))
                .ok_or_else(|| bad(name, format!("{text:?} is not {want}")))
        })
    };
    let queues = number(
        QUEUES_ANNOTATION,
        &|n| (1..=MAX_QUEUES).contains(&n),
        "a queue count from 1 to 256",
    )?;
    let ring_size = number(
        RING_SIZE_ANNOTATION,
        &|n| (2..=MAX_RING_SIZE).contains(&n) && n.is_power_of_two(),
        "a power of two from 2 to 16384",
    )?;
    Ok(MemifOptions {
        secret,
        queues,
        ring_size,
    })
}

/// The socket of pod `namespace`/`pod`'s interface `ifname` under `dir`.
pub fn socket_path(
    dir: &Path,
    namespace: &str,
    pod: &str,
    ifname: &str,
) -> Result<PathBuf, MemifError> {
    let file = if ifname == "eth0" {
        "memif.sock".to_owned()
    } else {
        format!("memif-{ifname}.sock")
    };
    let path = dir.join(format!("{namespace}-{pod}")).join(file);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(MemifError::PathTooLong { path, len });
    }
    Ok(path)
}

/// The MAC of the pod side of dataplane interface `name`: the first six
/// bytes of its SHA-256, made locally administered and unicast (IEEE 802
/// U/L and I/G bits), never the gateway's.
pub fn pod_mac(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest.as_ref()[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    if mac == [0xee; 6] {
        mac[5] = 0xef;
    }
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The dataplane interface of memif endpoint `ep`; `None` for an endpoint
/// without a socket (a record the agent cannot program).
pub fn spec(ep: &Endpoint) -> Option<MemifSpec> {
    let options = ep.memif.clone().unwrap_or_default();
    Some(MemifSpec {
        socket: ep.socket_path.clone()?,
        role: pb::MemifRole::Server,
        id: POD_INTERFACE_ID,
        secret: options.secret.unwrap_or_default(),
        queues: options.queues,
        mode: pb::MemifMode::Ethernet,
        ring_size: options.ring_size,
        buffer_size: 0,
        rx_mode: pb::MemifRxMode::Interrupt,
        peer_mac: pod_mac(&ep.dataplane_interface),
    })
}

/// Makes the folder of `socket` (mode 0755, with its parents).
pub fn create_folder(socket: &Path) -> Result<(), MemifError> {
    let Some(folder) = socket.parent() else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(folder)
        .map_err(|source| MemifError::Folder {
            path: folder.to_owned(),
            source,
        })
}

/// Removes `socket` (if it is a socket) and then its folder, if that is
/// empty: what the application or anyone else put there stays, with a
/// warning.
pub fn remove_folder(socket: &Path) {
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
        if let Err(e) = std::fs::remove_file(socket) {
            warn!(socket = %socket.display(), error = %e, "cannot remove the memif socket");
        }
    }
    let Some(folder) = socket.parent() else {
        return;
    };
    match std::fs::remove_dir(folder) {
        Ok(()) => info!(folder = %folder.display(), "removed the memif socket folder"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => warn!(folder = %folder.display(), error = %e,
            "cannot remove the memif socket folder"),
    }
}

/// Whether `socket` is there and is a socket (CHECK).
pub fn socket_exists(socket: &Path) -> bool {
    std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::endpoints::{dataplane_interface_name, InterfaceKind};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn options_come_from_annotations() {
        assert_eq!(options(&pod(&[])).unwrap(), MemifOptions::default());
        let o = options(&pod(&[
            (SECRET_ANNOTATION, "s3cret"),
            (QUEUES_ANNOTATION, "2"),
            (RING_SIZE_ANNOTATION, " 4096 "),
        ]))
        .unwrap();
        assert_eq!(
            o,
            MemifOptions {
                secret: Some("s3cret".into()),
                queues: 2,
                ring_size: 4096,
            }
        );
        for (name, value, why) in [
            (SECRET_ANNOTATION, "0123456789012345678901234", "25 bytes"),
            (SECRET_ANNOTATION, "a\0b", "NUL"),
            (QUEUES_ANNOTATION, "0", "from 1 to 256"),
            (QUEUES_ANNOTATION, "257", "from 1 to 256"),
            (QUEUES_ANNOTATION, "two", "from 1 to 256"),
            (RING_SIZE_ANNOTATION, "1000", "power of two"),
            (RING_SIZE_ANNOTATION, "32768", "power of two"),
            (RING_SIZE_ANNOTATION, "1", "power of two"),
        ] {
            let err = options(&pod(&[(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(why), "{err}");
        }
    }

    #[test]
    fn sockets_have_a_folder_per_pod_and_fit_a_socket_address() {
        let dir = Path::new("/run/caracal/memif");
        assert_eq!(
            socket_path(dir, "ns", "p", "eth0").unwrap(),
            Path::new("/run/caracal/memif/ns-p/memif.sock")
        );
        assert_eq!(
            socket_path(dir, "ns", "p", "net1").unwrap(),
            Path::new("/run/caracal/memif/ns-p/memif-net1.sock")
        );
        let room = MAX_SOCKET_PATH
            - socket_path(dir, "ns", "", "eth0")
                .unwrap()
                .as_os_str()
                .len();
        let fits = "p".repeat(room);
        let path = socket_path(dir, "ns", &fits, "eth0").unwrap();
        assert_eq!(path.as_os_str().len(), MAX_SOCKET_PATH);
        let err = socket_path(dir, "ns", &format!("{fits}x"), "eth0").unwrap_err();
        assert!(err.to_string().contains("108 bytes"), "{err}");
    }

    #[test]
    fn pod_macs_are_stable_local_unicast() {
        let a = pod_mac("default/a");
        assert_eq!(a, pod_mac("default/a"));
        assert_ne!(a, pod_mac("default/b"));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "{a}");
        assert_eq!(a.len(), 17);
    }

    #[test]
    fn a_pod_gets_a_server_in_ethernet_mode_with_id_0() {
        let mut ep = Endpoint {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/m".into(),
            namespace: "default".into(),
            pod: "m".into(),
            pod_uid: String::new(),
            ips: vec!["10.65.0.9/32".parse().unwrap()],
            interface_kind: InterfaceKind::Memif,
            socket_path: Some("/run/caracal/memif/default-m/memif.sock".into()),
            memif: None,
            dataplane_interface: dataplane_interface_name("default", "m", "eth0"),
            mtu: 1500,
        };
        let spec = spec(&ep).unwrap();
        assert_eq!(spec.socket, "/run/caracal/memif/default-m/memif.sock");
        assert_eq!(
            (spec.role, spec.id, spec.mode, spec.rx_mode),
            (
                pb::MemifRole::Server,
                0,
                pb::MemifMode::Ethernet,
                pb::MemifRxMode::Interrupt
            )
        );
        assert_eq!(
            (spec.secret.as_str(), spec.queues, spec.ring_size),
            ("", 0, 0)
        );
        assert_eq!(spec.peer_mac, pod_mac("default/m"));
        ep.memif = Some(MemifOptions {
            secret: Some("x".into()),
            queues: 1,
            ring_size: 512,
        });
        let spec = super::spec(&ep).unwrap();
        assert_eq!(
            (spec.secret.as_str(), spec.queues, spec.ring_size),
            ("x", 1, 512)
        );
        ep.socket_path = None;
        assert!(super::spec(&ep).is_none());
    }

    #[test]
    fn folders_are_made_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let socket = root.path().join("memif/ns-p/memif.sock");
        create_folder(&socket).unwrap();
        create_folder(&socket).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(socket_exists(&socket));
        remove_folder(&socket);
        assert!(!socket.parent().unwrap().exists());
        drop(listener);
        // Twice is fine; a folder with someone else's file stays.
        remove_folder(&socket);
        create_folder(&socket).unwrap();
        std::fs::write(socket.with_file_name("other"), "x").unwrap();
        remove_folder(&socket);
        assert!(socket.with_file_name("other").exists());
        assert!(!socket_exists(&socket));
    }
}
