//! The ports the generator sends on and receives from, as written on the
//! command line (`memif:socket=/run/x.sock,role=client`,
//! `af_packet:iface=eth0,netns=lab`), and how they are opened.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use caracal_dataplane::port::af_packet::{AfPacketConfig, AfPacketPort};
use caracal_dataplane::port::memif::{
    self, MemifConfig, MemifPort, Mode, Role, RxMode, SocketAddress,
};
use caracal_dataplane::port::Port;
use caracal_wire::EthernetAddress;

use super::PktgenError;

/// A memif interface of the generator's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemifSpec {
    /// Filesystem path, or `@name` for the abstract namespace.
    pub socket: String,
    pub role: Role,
    pub id: u32,
    pub secret: Option<String>,
    /// Descriptors per ring (0: the driver's default).
    pub ring_size: u16,
    /// Bytes per shared buffer a client creates (0: 2048).
    pub buffer_size: u16,
    pub mode: Mode,
    /// Put a client's region on hugepages (DPDK servers accept them;
    /// Caracal's own memif server refuses hugetlbfs regions).
    pub hugepages: bool,
}

/// An AF_PACKET socket on a kernel interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketSpec {
    pub iface: String,
    /// A namespace name (`/var/run/netns/NAME`) or a path.
    pub netns: Option<String>,
}

/// Where packets go or come from.
#[derive(Clone)]
pub enum PortSpec {
    Memif(MemifSpec),
    AfPacket(AfPacketSpec),
    /// A port the caller made (in-process use); queue 0 is used.
    Existing(Arc<dyn Port>),
}

impl fmt::Debug for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Memif(m) => m.fmt(f),
            PortSpec::AfPacket(a) => a.fmt(f),
            PortSpec::Existing(p) => write!(f, "Existing({:?})", p.kind()),
        }
    }
}

impl PartialEq for PortSpec {
    /// Same device: then tx and rx share one queue (and one thread).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PortSpec::Memif(a), PortSpec::Memif(b)) => a == b,
            (PortSpec::AfPacket(a), PortSpec::AfPacket(b)) => a == b,
            (PortSpec::Existing(a), PortSpec::Existing(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Memif(m) => write!(
                f,
                "memif:socket={},role={},id={}",
                m.socket,
                m.role.as_str(),
                m.id
            ),
            PortSpec::AfPacket(a) => match &a.netns {
                Some(ns) => write!(f, "af_packet:iface={},netns={ns}", a.iface),
                None => write!(f, "af_packet:iface={}", a.iface),
            },
            PortSpec::Existing(p) => write!(f, "{}", p.kind().as_str()),
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{key}={v}: expected yes or no")),
    }
}

impl FromStr for PortSpec {
    type Err = String;

    /// `memif:socket=PATH|@NAME[,role=client|server][,id=N][,secret=S]
    /// [,ring=N][,bufsize=N][,mode=ethernet|ip][,hugepages=yes]` or
    /// `af_packet:iface=NAME[,netns=NS]` (also `af_packet:NAME`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        let pairs = || {
            rest.split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        };
        match kind {
            "memif" => {
                let mut m = MemifSpec {
                    socket: String::new(),
                    role: Role::Client,
                    id: 0,
                    secret: None,
                    ring_size: 0,
                    buffer_size: 0,
                    mode: Mode::Ethernet,
                    hugepages: false,
                };
                for (k, v) in pairs() {
                    let num = |what: &str| format!("memif {k}={v}: not a {what}");
                    match k {
                        "socket" => m.socket = v.to_owned(),
                        "role" => {
                            m.role = match v {
                                "client" | "slave" => Role::Client,
                                "server" | "master" => Role::Server,
                                _ => return Err(format!("memif role={v}: client or server")),
                            }
                        }
                        "id" => m.id = v.parse().map_err(|_| num("number"))?,
                        "secret" => m.secret = Some(v.to_owned()),
                        "ring" | "ring_size" | "rsize" => {
                            m.ring_size = v.parse().map_err(|_| num("number"))?
                        }
                        "bufsize" | "buffer_size" => {
                            m.buffer_size = v.parse().map_err(|_| num("number"))?
                        }
                        "mode" => {
                            m.mode = match v {
                                "ethernet" => Mode::Ethernet,
                                "ip" => Mode::Ip,
                                _ => return Err(format!("memif mode={v}: ethernet or ip")),
                            }
                        }
                        "hugepages" => m.hugepages = parse_bool(k, v)?,
                        _ => return Err(format!("memif: unknown option {k:?}")),
                    }
                }
                if m.socket.is_empty() {
                    return Err("memif needs socket=PATH (or socket=@name)".into());
                }
                Ok(PortSpec::Memif(m))
            }
            "af_packet" | "afpacket" | "af-packet" => {
                let mut a = AfPacketSpec {
                    iface: String::new(),
                    netns: None,
                };
                for (k, v) in pairs() {
                    match (k, v) {
                        ("iface" | "ifname" | "dev", v) => a.iface = v.to_owned(),
                        ("netns", v) => a.netns = Some(v.to_owned()),
                        (name, "") if a.iface.is_empty() => a.iface = name.to_owned(),
                        _ => return Err(format!("af_packet: unknown option {k:?}")),
                    }
                }
                if a.iface.is_empty() {
                    return Err("af_packet needs iface=NAME".into());
                }
                Ok(PortSpec::AfPacket(a))
            }
            _ => Err(format!(
                "port {s:?}: expected memif:socket=...,role=... or af_packet:iface=..."
            )),
        }
    }
}

/// An opened port and what it allows.
pub struct Opened {
    pub port: Arc<dyn Port>,
    /// Largest frame it carries, bytes (MTU plus Ethernet header).
    pub max_frame: usize,
    memif: Option<Arc<MemifPort>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("kind", &self.port.kind())
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl Opened {
    /// Waits for a memif to connect (other ports are ready at once).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        self.memif
            .as_ref()
            .is_none_or(|m| m.wait_connected(timeout))
    }
}

impl PortSpec {
    /// Creates the port; `peer_mac` is where its frames are addressed.
    pub fn open(&self, name: &str, peer_mac: EthernetAddress) -> Result<Opened, PktgenError> {
        let eth = caracal_wire::ethernet::HEADER_LEN;
        match self {
            PortSpec::Memif(m) => {
                let socket = SocketAddress::parse(&PathBuf::from(&m.socket))?;
                let port = MemifPort::create(&MemifConfig {
                    name: name.to_owned(),
                    socket,
                    role: m.role,
                    id: m.id,
                    secret: m.secret.clone(),
                    queues: 1,
                    mode: m.mode,
                    // The generator polls; spare the peer the eventfd writes.
                    rx_mode: RxMode::Polling,
                    ring_size: m.ring_size,
                    buffer_size: m.buffer_size,
                    peer_mac,
                    mtu: memif::MAX_MTU,
                    hugepages: m.hugepages,
                })?;
                Ok(Opened {
                    max_frame: usize::from(memif::MAX_MTU) + eth,
                    port: port.clone(),
                    memif: Some(port),
                })
            }
            PortSpec::AfPacket(a) => {
                let mut cfg = AfPacketConfig::new(&a.iface);
                cfg.netns = a.netns.as_ref().map(|ns| {
                    if ns.contains('/') {
                        PathBuf::from(ns)
                    } else {
                        PathBuf::from("/var/run/netns").join(ns)
                    }
                });
                cfg.peer_mac = peer_mac;
                let port = AfPacketPort::create(&cfg)?;
                Ok(Opened {
                    max_frame: usize::from(port.caps().mtu) + eth,
                    port,
                    memif: None,
                })
            }
            PortSpec::Existing(p) => Ok(Opened {
                max_frame: usize::from(p.caps().mtu) + eth,
                port: p.clone(),
                memif: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memif_specs_parse() {
        let p: PortSpec = "memif:socket=/run/x.sock,role=server,id=3,secret=s3,ring=512"
            .parse()
            .unwrap();
        let PortSpec::Memif(m) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(m.socket, "/run/x.sock");
        assert_eq!((m.role, m.id, m.ring_size), (Role::Server, 3, 512));
        assert_eq!(m.secret.as_deref(), Some("s3"));
        assert_eq!(p.to_string(), "memif:socket=/run/x.sock,role=server,id=3");
        let c: PortSpec = "memif:socket=@abs".parse().unwrap();
        assert!(matches!(
            c,
            PortSpec::Memif(MemifSpec {
                role: Role::Client,
                ..
            })
        ));
        assert!("memif:role=client".parse::<PortSpec>().is_err());
        assert!("memif:socket=/x,role=boss".parse::<PortSpec>().is_err());
        assert!("memif:socket=/x,colour=red".parse::<PortSpec>().is_err());
    }

    #[test]
    fn af_packet_specs_parse() {
        let p: PortSpec = "af_packet:iface=veth0,netns=lab".parse().unwrap();
        assert_eq!(
            p,
            PortSpec::AfPacket(AfPacketSpec {
                iface: "veth0".into(),
                netns: Some("lab".into())
            })
        );
        let short: PortSpec = "af_packet:eth1".parse().unwrap();
        assert_eq!(short.to_string(), "af_packet:iface=eth1");
        assert!("af_packet:".parse::<PortSpec>().is_err());
        assert!("pcap:x".parse::<PortSpec>().is_err());
    }
}
