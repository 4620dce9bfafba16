//! The ports the generator sends on and receives from, as written on the
//! command line (`memif:socket=/run/x.sock,role=client`,
//! `af_packet:iface=eth0,netns=lab`, `af_xdp:iface=eth0,queue=1`), and how
//! they are opened.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use caracal_dataplane::port::af_packet::{AfPacketConfig, AfPacketPort};
use caracal_dataplane::port::af_xdp::{self, AfXdpConfig, AfXdpPort, XdpMode};
use caracal_dataplane::port::memif::{MemifConfig, MemifPort, Mode, Role, RxMode, SocketAddress};
use caracal_dataplane::port::Port;
use caracal_wire::EthernetAddress;

use super::builder::MAX_FRAME;
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
    /// Bytes per shared buffer a client creates (0: 2048); longer frames
    /// take several, chained.
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

/// An AF_XDP socket on one queue of a kernel interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfXdpSpec {
    pub iface: String,
    /// A namespace name (`/var/run/netns/NAME`) or a path.
    pub netns: Option<String>,
    pub queue: u32,
    pub mode: XdpMode,
    /// UMEM frames, half rx and half tx (0: [`AF_XDP_FRAMES`]).
    pub frames: u32,
}

/// The generator's default UMEM size for AF_XDP: 16384 frames of 2 KiB
/// (32 MiB), four times the port's own default, so that a receiver
/// descheduled for a few tens of milliseconds at line rate loses nothing
/// (AF_PACKET's rx ring is 8 MiB for the same reason).
pub const AF_XDP_FRAMES: u32 = 16384;

/// Where packets go or come from.
#[derive(Clone)]
pub enum PortSpec {
    Memif(MemifSpec),
    AfPacket(AfPacketSpec),
    AfXdp(AfXdpSpec),
    /// A port the caller made (in-process use); queue 0 is used.
    Existing(Arc<dyn Port>),
}

impl fmt::Debug for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Memif(m) => m.fmt(f),
            PortSpec::AfPacket(a) => a.fmt(f),
            PortSpec::AfXdp(a) => a.fmt(f),
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
            (PortSpec::AfXdp(a), PortSpec::AfXdp(b)) => a == b,
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
            PortSpec::AfXdp(a) => {
                write!(f, "af_xdp:iface={}", a.iface)?;
                if let Some(ns) = &a.netns {
                    write!(f, ",netns={ns}")?;
                }
                if a.queue != 0 {
                    write!(f, ",queue={}", a.queue)?;
                }
                if a.mode != XdpMode::Auto {
                    write!(f, ",mode={}", a.mode.as_str())?;
                }
                if a.frames != 0 {
                    write!(f, ",frames={}", a.frames)?;
                }
                Ok(())
            }
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
    /// `af_packet:iface=NAME[,netns=NS]` (also `af_packet:NAME`) or
    /// `af_xdp:iface=NAME[,netns=NS][,queue=Q][,mode=auto|zc|copy|skb]
    /// [,frames=N]` (also `af_xdp:NAME`).
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
            "af_xdp" | "afxdp" | "af-xdp" => {
                let mut a = AfXdpSpec {
                    iface: String::new(),
                    netns: None,
                    queue: 0,
                    mode: XdpMode::Auto,
                    frames: 0,
                };
                for (k, v) in pairs() {
                    match (k, v) {
                        ("iface" | "ifname" | "dev", v) => a.iface = v.to_owned(),
                        ("netns", v) => a.netns = Some(v.to_owned()),
                        ("queue" | "qid", v) => {
                            a.queue = v
                                .parse()
                                .map_err(|_| format!("af_xdp queue={v}: not a number"))?
                        }
                        ("mode", v) => a.mode = v.parse()?,
                        ("frames", v) => {
                            a.frames = v
                                .parse()
                                .map_err(|_| format!("af_xdp frames={v}: not a number"))?
                        }
                        (name, "") if a.iface.is_empty() => a.iface = name.to_owned(),
                        _ => return Err(format!("af_xdp: unknown option {k:?}")),
                    }
                }
                if a.iface.is_empty() {
                    return Err("af_xdp needs iface=NAME".into());
                }
                Ok(PortSpec::AfXdp(a))
            }
            _ => Err(format!(
                "port {s:?}: expected memif:socket=...,role=..., af_packet:iface=... \
                 or af_xdp:iface=..."
            )),
        }
    }
}

/// An opened port and what it allows.
pub struct Opened {
    pub port: Arc<dyn Port>,
    /// Largest frame it carries, bytes (MTU plus Ethernet header).
    pub max_frame: usize,
    /// What sets `max_frame`, for the error a larger `--size` gets.
    pub limit: String,
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
        let mtu_limit = |port: &dyn Port, iface: &str| {
            let mtu = port.caps().mtu;
            format!(
                "{iface}'s MTU is {mtu} ({} B frames); raise it on both ends for jumbo frames, \
                 e.g. `ip link set {iface} mtu 9000`",
                usize::from(mtu) + eth
            )
        };
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
                    // Frames longer than a ring buffer go as chains.
                    mtu: (MAX_FRAME - eth) as u16,
                    hugepages: m.hugepages,
                })?;
                Ok(Opened {
                    max_frame: MAX_FRAME,
                    limit: format!(
                        "memif chains ring buffers up to the generator's largest frame, \
                         {MAX_FRAME} B (the peer must take chained descriptors)"
                    ),
                    port: port.clone(),
                    memif: Some(port),
                })
            }
            PortSpec::AfPacket(a) => {
                let mut cfg = AfPacketConfig::new(&a.iface);
                cfg.netns = a.netns.as_deref().map(netns_path);
                cfg.peer_mac = peer_mac;
                let port = AfPacketPort::create(&cfg)?;
                Ok(Opened {
                    max_frame: usize::from(port.caps().mtu) + eth,
                    limit: mtu_limit(&*port, &a.iface),
                    port,
                    memif: None,
                })
            }
            PortSpec::AfXdp(a) => {
                let mut cfg = AfXdpConfig::new(&a.iface);
                cfg.netns = a.netns.as_deref().map(netns_path);
                cfg.queue = a.queue;
                cfg.mode = a.mode;
                cfg.frames = if a.frames == 0 {
                    AF_XDP_FRAMES
                } else {
                    a.frames
                };
                cfg.peer_mac = peer_mac;
                let port = AfXdpPort::create(&cfg)?;
                Ok(Opened {
                    max_frame: usize::from(port.caps().mtu) + eth,
                    limit: format!(
                        "af_xdp carries a packet in one UMEM frame, at most {} B \
                         (multi-buffer AF_XDP is not supported), within {}",
                        usize::from(af_xdp::MAX_MTU) + eth,
                        mtu_limit(&*port, &a.iface)
                    ),
                    port,
                    memif: None,
                })
            }
            PortSpec::Existing(p) => Ok(Opened {
                max_frame: usize::from(p.caps().mtu) + eth,
                limit: format!("the port's MTU is {}", p.caps().mtu),
                port: p.clone(),
                memif: None,
            }),
        }
    }
}

/// A namespace name (under `/var/run/netns`) or a path.
fn netns_path(ns: &str) -> PathBuf {
    if ns.contains('/') {
        PathBuf::from(ns)
    } else {
        PathBuf::from("/var/run/netns").join(ns)
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

    #[test]
    fn af_xdp_specs_parse() {
        let p: PortSpec = "af_xdp:iface=veth0,netns=lab,queue=2,mode=skb,frames=8192"
            .parse()
            .unwrap();
        assert_eq!(
            p,
            PortSpec::AfXdp(AfXdpSpec {
                iface: "veth0".into(),
                netns: Some("lab".into()),
                queue: 2,
                mode: XdpMode::Skb,
                frames: 8192,
            })
        );
        assert_eq!(
            p.to_string(),
            "af_xdp:iface=veth0,netns=lab,queue=2,mode=skb,frames=8192"
        );
        let short: PortSpec = "af_xdp:eth1".parse().unwrap();
        assert_eq!(short.to_string(), "af_xdp:iface=eth1");
        let zc: PortSpec = "af_xdp:iface=eth1,mode=zc".parse().unwrap();
        assert_eq!(zc.to_string().parse::<PortSpec>().unwrap(), zc);
        assert_ne!(zc, short, "another mode is another port");
        assert_ne!(
            short,
            "af_packet:eth1".parse::<PortSpec>().unwrap(),
            "af_xdp and af_packet on one interface are two ports"
        );
        for bad in [
            "af_xdp:",
            "af_xdp:iface=eth1,queue=x",
            "af_xdp:iface=eth1,mode=fast",
            "af_xdp:iface=eth1,frames=many",
            "af_xdp:iface=eth1,ring=9",
        ] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }
}
