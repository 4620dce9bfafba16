//! The daemon's configuration file (`--config`, TOML). Every key is
//! optional; the command-line flags override what the file says.
//!
//! `[[interfaces]]` are created at start, after the engine and before the
//! API serves, with the meaning (and defaults) of the API's
//! `InterfaceSpec`: a memif or tap table each, and `xconnect` for an L2
//! cross-connect. Two memif ports cross-connected both ways, the I/O
//! floor a packet generator measures:
//!
//! ```toml
//! socket = "/run/caracal/dataplane.sock"
//!
//! [engine]
//! workers = [2, 3]        # or 4 (unpinned workers), or "2-5,8"
//! mode = "poll"           # or "adaptive"
//! buffers = 65536
//! hugepages = true
//!
//! [[interfaces]]
//! name = "memif-a"
//! xconnect = "memif-b"    # what memif-a receives leaves by memif-b
//! [interfaces.memif]
//! socket = "/run/caracal/memif-a.sock"   # or "@name" (abstract)
//! role = "server"         # or "client"
//! id = 0
//! mode = "ethernet"       # or "ip"
//! rx_mode = "polling"     # or "interrupt"
//! queues = 1              # 0: one per worker
//! ring_size = 1024        # 0: the role's default
//!
//! [[interfaces]]
//! name = "memif-b"
//! xconnect = "memif-a"
//! memif = { socket = "/run/caracal/memif-b.sock", role = "server", rx_mode = "polling" }
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use caracal_dataplane::EngineConfig;
use caracal_proto::dataplane as pb;
use serde::Deserialize;

/// Where the API listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/caracal/dataplane.sock";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Unix socket of the gRPC API.
    pub socket: PathBuf,
    pub engine: EngineConfig,
    /// Interfaces to create at start, in order.
    pub interfaces: Vec<InterfaceConfig>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: DEFAULT_SOCKET.into(),
            engine: EngineConfig::default(),
            interfaces: Vec::new(),
        }
    }
}

/// One `[[interfaces]]` entry: the API's `InterfaceSpec` in TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    /// The endpoint's own addresses, `"10.65.0.5/32"`.
    pub addresses: Vec<String>,
    /// IP MTU, bytes (0: 1500).
    pub mtu: u32,
    pub policy_enforced: bool,
    /// Name of the interface every received frame is sent out of unchanged.
    pub xconnect: String,
    pub memif: Option<MemifConfig>,
    pub tap: Option<TapConfig>,
}

/// `[interfaces.memif]`: the API's `MemifSpec`; enums as lowercase words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemifConfig {
    pub socket: String,
    pub role: Option<MemifRole>,
    pub id: u32,
    pub secret: String,
    pub queues: u32,
    pub mode: Option<MemifMode>,
    pub rx_mode: Option<MemifRxMode>,
    pub ring_size: u32,
    pub buffer_size: u32,
    pub peer_mac: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemifRole {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemifMode {
    Ethernet,
    Ip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemifRxMode {
    Interrupt,
    Polling,
}

/// `[interfaces.tap]`: the API's `TapSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapConfig {
    pub netns: String,
    pub ifname: String,
    pub queues: u32,
    pub configure: bool,
}

impl InterfaceConfig {
    /// The API request this entry stands for; the API's own validation
    /// (and its defaults) apply when the engine gets it.
    pub fn to_proto(&self) -> anyhow::Result<pb::InterfaceSpec> {
        let kind = match (&self.memif, &self.tap) {
            (Some(m), None) => pb::interface_spec::Kind::Memif(pb::MemifSpec {
                socket: m.socket.clone(),
                role: match m.role {
                    None => pb::MemifRole::Unspecified,
                    Some(MemifRole::Server) => pb::MemifRole::Server,
                    Some(MemifRole::Client) => pb::MemifRole::Client,
                } as i32,
                id: m.id,
                secret: m.secret.clone(),
                queues: m.queues,
                mode: match m.mode {
                    None => pb::MemifMode::Unspecified,
                    Some(MemifMode::Ethernet) => pb::MemifMode::Ethernet,
                    Some(MemifMode::Ip) => pb::MemifMode::Ip,
                } as i32,
                ring_size: m.ring_size,
                buffer_size: m.buffer_size,
                rx_mode: match m.rx_mode {
                    None => pb::MemifRxMode::Unspecified,
                    Some(MemifRxMode::Interrupt) => pb::MemifRxMode::Interrupt,
                    Some(MemifRxMode::Polling) => pb::MemifRxMode::Polling,
                } as i32,
                peer_mac: m.peer_mac.clone(),
            }),
            (None, Some(t)) => pb::interface_spec::Kind::Tap(pb::TapSpec {
                netns: t.netns.clone(),
                ifname: t.ifname.clone(),
                queues: t.queues,
                configure: t.configure,
            }),
            _ => anyhow::bail!(
                "interface {:?}: give exactly one of [interfaces.memif] and [interfaces.tap]",
                self.name
            ),
        };
        Ok(pb::InterfaceSpec {
            name: self.name.clone(),
            addresses: self.addresses.clone(),
            mtu: self.mtu,
            policy_enforced: self.policy_enforced,
            xconnect: self.xconnect.clone(),
            kind: Some(kind),
        })
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
                interfaces: Vec::new(),
            }
        );
    }

    #[test]
    fn memif_ports_cross_connected() {
        let config = parse(
            r#"
            [[interfaces]]
            name = "memif-a"
            xconnect = "memif-b"
            [interfaces.memif]
            socket = "@bench-a"
            role = "server"
            id = 3
            mode = "ethernet"
            rx_mode = "polling"
            queues = 1
            ring_size = 2048

            [[interfaces]]
            name = "memif-b"
            xconnect = "memif-a"
            memif = { socket = "/run/b.sock", role = "client" }
            "#,
        )
        .unwrap();
        let a = config.interfaces[0].to_proto().unwrap();
        assert_eq!(a.name, "memif-a");
        assert_eq!(a.xconnect, "memif-b");
        let Some(pb::interface_spec::Kind::Memif(m)) = a.kind else {
            panic!("{a:?}")
        };
        assert_eq!(
            m,
            pb::MemifSpec {
                socket: "@bench-a".into(),
                role: pb::MemifRole::Server as i32,
                id: 3,
                mode: pb::MemifMode::Ethernet as i32,
                rx_mode: pb::MemifRxMode::Polling as i32,
                queues: 1,
                ring_size: 2048,
                ..Default::default()
            }
        );
        // Left out: the API's defaults (server, ethernet, interrupt).
        let b = config.interfaces[1].to_proto().unwrap();
        let Some(pb::interface_spec::Kind::Memif(m)) = b.kind else {
            panic!("{b:?}")
        };
        assert_eq!(m.role, pb::MemifRole::Client as i32);
        assert_eq!(m.mode, pb::MemifMode::Unspecified as i32);
        assert_eq!(b.xconnect, "memif-a");
    }

    #[test]
    fn an_interface_needs_exactly_one_kind() {
        let none = parse("[[interfaces]]\nname = \"x\"").unwrap();
        let err = none.interfaces[0].to_proto().unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
        let err = parse("[[interfaces]]\nname = \"x\"\nmemif = { role = \"peer\" }").unwrap_err();
        assert!(err.contains("peer"), "{err}");
        let err = parse("[[interfaces]]\nname = \"x\"\nxconect = \"y\"").unwrap_err();
        assert!(err.contains("unknown field `xconect`"), "{err}");
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
