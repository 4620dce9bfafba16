//! The daemon's configuration file (`--config`, TOML). Every key is
//! optional; the command-line flags override what the file says.
//!
//! ```toml
//! socket = "/run/caracal/dataplane.sock"
//!
//! [engine]
//! workers = [2, 3]        # or 4 (unpinned workers), or "2-5,8"
//! mode = "poll"           # or "adaptive"
//! buffers = 65536
//! hugepages = true
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use caracal_dataplane::EngineConfig;
use serde::Deserialize;

/// Where the API listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/caracal/dataplane.sock";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Unix socket of the gRPC API.
    pub socket: PathBuf,
    pub engine: EngineConfig,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: DEFAULT_SOCKET.into(),
            engine: EngineConfig::default(),
        }
    }
}

impl DaemonConfig {
    /// Reads and parses `path`; a bad key or value is reported with the
    /// file's name and the key's line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caracal_dataplane::WorkerMode;

    fn parse(text: &str) -> Result<DaemonConfig, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| e.to_string())
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse(""), Ok(DaemonConfig::default()));
    }

    #[test]
    fn every_key() {
        let config = parse(
            r#"
            socket = "/tmp/dp.sock"
            [engine]
            workers = [2, 3]
            mode = "poll"
            buffers = 65536
            hugepages = false
            flows = 1000
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            DaemonConfig {
                socket: "/tmp/dp.sock".into(),
                engine: EngineConfig {
                    workers: vec![Some(2), Some(3)],
                    mode: WorkerMode::Poll,
                    buffers: 65536,
                    hugepages: false,
                    flows: 1000,
                },
            }
        );
    }

    #[test]
    fn workers_as_a_count_or_a_cpu_string() {
        let count = parse("[engine]\nworkers = 2").unwrap();
        assert_eq!(count.engine.workers, vec![None, None]);
        let cpus = parse("[engine]\nworkers = \"4-5\"").unwrap();
        assert_eq!(cpus.engine.workers, vec![Some(4), Some(5)]);
        // Keys left out keep their defaults.
        assert_eq!(cpus.engine.buffers, EngineConfig::default().buffers);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = parse("[engine]\nbuffers = \"many\"").unwrap_err();
        assert!(err.contains("line 2") && err.contains("buffers"), "{err}");
        let err = parse("[engine]\nmode = \"turbo\"").unwrap_err();
        assert!(err.contains("line 2") && err.contains("turbo"), "{err}");
        let err = parse("[engine]\nworkers = [1, 1]").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("CPU 1 is listed twice"),
            "{err}"
        );
        let err = parse("[engine]\nworkers = 0").unwrap_err();
        assert!(err.contains("0 workers"), "{err}");
        let err = parse("sokcet = \"/x\"").unwrap_err();
        assert!(err.contains("unknown field `sokcet`"), "{err}");
        let err = parse("[engine]\nhugepage = false").unwrap_err();
        assert!(err.contains("unknown field `hugepage`"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let path = std::env::temp_dir().join(format!("caracal-config-{}.toml", std::process::id()));
        std::fs::write(&path, "[engine]\nbuffers = -1\n").unwrap();
        let err = format!("{:#}", DaemonConfig::load(&path).unwrap_err());
        std::fs::remove_file(&path).unwrap();
        assert!(
            err.starts_with(&format!("invalid config file {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");

        let err = format!("{:#}", DaemonConfig::load(&path).unwrap_err());
        assert!(
            err.starts_with(&format!("reading config file {}: ", path.display())),
            "{err}"
        );
    }
}
