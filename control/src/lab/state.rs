//! The lab's own record of what it made: one JSON file in its state
//! folder, rewritten atomically after every change, so `lab down` can undo
//! everything even after a crash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A pod the lab created: its namespace and CNI attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    /// Network namespace name (`<namespace>_<pod>`).
    pub netns: String,
    pub container_id: String,
    pub ips: Vec<String>,
    /// tap, memif or vhost-user.
    pub interface: String,
    /// memif/vhost-user socket path; absent for tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl LabPod {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }

    /// The name of the pod's dataplane interface.
    pub fn interface_name(&self) -> String {
        crate::agent::endpoints::dataplane_interface_name(&self.namespace, &self.name, "eth0")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    /// Folder the lab was brought up from.
    pub source: Option<PathBuf>,
    /// Where the binaries it runs live.
    pub bin_dir: PathBuf,
    pub pods: Vec<LabPod>,
}

impl LabState {
    pub fn load(path: &Path) -> std::io::Result<Option<LabState>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&LabPod> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }
}

/// The netns name the lab gives a pod (DESIGN §6).
pub fn netns_name(namespace: &str, pod: &str) -> String {
    format!("{namespace}_{pod}")
}
