//! Conversions between the API's protobuf messages and the dataplane's
//! [`model`](crate::model), in both directions, and of [`EngineError`] to
//! [`Status`]: the only place where either crosses the gRPC edge.
//!
//! Requests are validated on the way in. Every rejection is
//! `invalid_argument` and starts with the path of the offending field in
//! the request (`spec.addresses[1]: invalid prefix "10.0.0.300/32": ...`),
//! so that a client can point at what to fix. Checks that need the
//! engine's state (does the interface exist?) are the engine's.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use caracal_proto::dataplane as pb;
use tonic::Status;

use crate::engine::EngineError;
use crate::graph::DropReason;
use crate::model::{
    CountersSnapshot, InterfaceInfo, InterfaceKindSpec, InterfaceSpec, IpCidr, MemifMode,
    MemifRingDirection, MemifRole, MemifRxMode, MemifSpec, MemifStatus, PathSpec, RouteOrigin,
    RouteSpec, RuntimeSnapshot, TapSpec, WorkerStats,
};
use crate::policy::ApplyError;
use crate::port::memif::{self, MemifError};
use crate::port::tap::TapError;
use crate::port::{PortKind, PortStats};

/// MTU of an interface whose spec leaves it at 0, bytes.
pub const DEFAULT_MTU: u16 = 1500;
/// Smallest MTU an IPv4 link may have (RFC 791), bytes.
const MIN_IPV4_MTU: u16 = 68;
/// Smallest MTU an IPv6 link may have (RFC 8200, section 5), bytes.
const MIN_IPV6_MTU: u16 = 1280;
/// Device name of a tap whose spec leaves it empty.
pub const DEFAULT_IFNAME: &str = "eth0";
/// Size of a Linux interface name buffer, NUL included (`IFNAMSIZ`).
const IFNAMSIZ: usize = 16;
/// Most queues a Linux tap device can have (`MAX_TAP_QUEUES`).
const MAX_TAP_QUEUES: u32 = 256;

pub(super) fn invalid(field: impl fmt::Display, problem: impl fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

// ------------------------------------------------------------------- errors

/// The status a failed engine call answers with.
pub fn engine_error_to_status(err: EngineError) -> Status {
    match err {
        EngineError::Invalid(msg) => Status::invalid_argument(msg),
        EngineError::NoSuchInterface(_) => Status::not_found(err.to_string()),
        EngineError::TooManyInterfaces => Status::resource_exhausted(err.to_string()),
        EngineError::Buffers(_) => Status::resource_exhausted(err.to_string()),
        EngineError::Tap(TapError::InvalidConfig(_)) => Status::invalid_argument(err.to_string()),
        EngineError::Tap(TapError::Exists { .. }) => Status::already_exists(err.to_string()),
        // Otherwise the device could not be made as asked (namespace gone,
        // no permission): retrying the same request will not help until
        // something outside the dataplane changes.
        EngineError::Tap(_) => Status::failed_precondition(err.to_string()),
        EngineError::Memif(MemifError::InvalidConfig(_)) => {
            Status::invalid_argument(err.to_string())
        }
        EngineError::Memif(MemifError::SocketInUse(_)) => Status::already_exists(err.to_string()),
        // The socket's directory is missing, or no file descriptors left.
        EngineError::Memif(_) => Status::failed_precondition(err.to_string()),
        // Workers did not take the change, or are stopping: try later.
        EngineError::ShuttingDown | EngineError::Worker(_) => Status::unavailable(err.to_string()),
        EngineError::Flows(_) => Status::internal(err.to_string()),
        EngineError::Policy(ApplyError::Invalid(m)) => Status::invalid_argument(m),
        EngineError::Policy(ApplyError::NotFound(m)) => Status::not_found(m),
        EngineError::Policy(ApplyError::FailedPrecondition(m)) => Status::failed_precondition(m),
    }
}

// ---------------------------------------------------------------- requests

/// A client-chosen object name (an interface's key). Anything printable
/// goes; control characters would garble logs and tables.
pub(super) fn object_name(field: impl fmt::Display, name: String) -> Result<String, Status> {
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format_args!("{name:?} contains control characters"),
        ));
    }
    Ok(name)
}

/// A route's destination: a prefix without host bits, or a bare address.
pub fn prefix_from_proto(field: &str, text: &str) -> Result<IpCidr, Status> {
    if text.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let prefix: IpCidr = text.parse().map_err(|e| invalid(field, e))?;
    let network = prefix.network();
    if network != prefix {
        return Err(invalid(
            field,
            format_args!("{text:?} has host bits set (the prefix is {network})"),
        ));
    }
    Ok(prefix)
}

/// The spec of an `AddInterface` request.
pub fn interface_spec_from_proto(spec: Option<pb::InterfaceSpec>) -> Result<InterfaceSpec, Status> {
    let spec = spec.ok_or_else(|| invalid("spec", "required"))?;
    let name = object_name("spec.name", spec.name)?;

    let mut addresses: Vec<IpCidr> = Vec::with_capacity(spec.addresses.len());
    for (i, text) in spec.addresses.iter().enumerate() {
        let field = format_args!("spec.addresses[{i}]");
        let cidr: IpCidr = text.parse().map_err(|e| invalid(field, e))?;
        if let Some(j) = addresses.iter().position(|a| a.address() == cidr.address()) {
            return Err(invalid(
                field,
                format_args!("{} is already spec.addresses[{j}]", cidr.address()),
            ));
        }
        addresses.push(cidr);
    }

    let has_v6 = addresses.iter().any(|a| matches!(a, IpCidr::V6(_)));
    let mtu = match spec.mtu {
        0 => DEFAULT_MTU,
        n => {
            u16::try_from(n).map_err(|_| invalid("spec.mtu", format_args!("{n} is above 65535")))?
        }
    };
    if mtu < MIN_IPV4_MTU {
        return Err(invalid(
            "spec.mtu",
            format_args!("{mtu} is below {MIN_IPV4_MTU} (RFC 791)"),
        ));
    }
    if has_v6 && mtu < MIN_IPV6_MTU {
        return Err(invalid(
            "spec.mtu",
            format_args!("{mtu} is below IPv6's minimum of {MIN_IPV6_MTU} (RFC 8200)"),
        ));
    }

    let kind = match spec.kind {
        Some(pb::interface_spec::Kind::Tap(tap)) => InterfaceKindSpec::Tap(tap_from_proto(tap)?),
        Some(pb::interface_spec::Kind::Memif(m)) => {
            if mtu > memif::MAX_MTU {
                return Err(invalid(
                    "spec.mtu",
                    format_args!(
                        "{mtu} is above {}, the most a memif frame in one buffer carries",
                        memif::MAX_MTU
                    ),
                ));
            }
            InterfaceKindSpec::Memif(memif_from_proto(m)?)
        }
        None => return Err(invalid("spec.kind", "required: set spec.tap or spec.memif")),
    };
    Ok(InterfaceSpec {
        name,
        addresses,
        mtu,
        kind,
        policy_enforced: spec.policy_enforced,
        xconnect: match spec.xconnect {
            x if x.is_empty() => None,
            x => Some(object_name("spec.xconnect", x)?),
        },
    })
}

fn tap_from_proto(tap: pb::TapSpec) -> Result<TapSpec, Status> {
    if tap.netns.is_empty() {
        return Err(invalid("spec.tap.netns", "must not be empty"));
    }
    let netns = PathBuf::from(tap.netns);
    if !netns.is_absolute() {
        return Err(invalid(
            "spec.tap.netns",
            format_args!("{netns:?} is not an absolute path"),
        ));
    }

    let ifname = if tap.ifname.is_empty() {
        DEFAULT_IFNAME.to_owned()
    } else {
        tap.ifname
    };
    // The kernel's rules (`dev_valid_name` in net/core/dev.c).
    if ifname.len() >= IFNAMSIZ {
        return Err(invalid(
            "spec.tap.ifname",
            format_args!("{ifname:?} is longer than {} bytes", IFNAMSIZ - 1),
        ));
    }
    if ifname == "."
        || ifname == ".."
        || ifname.contains(['/', ':', '\0'])
        || ifname.contains(char::is_whitespace)
    {
        return Err(invalid(
            "spec.tap.ifname",
            format_args!("{ifname:?} is not a valid interface name"),
        ));
    }

    if tap.queues > MAX_TAP_QUEUES {
        return Err(invalid(
            "spec.tap.queues",
            format_args!(
                "{} is above the kernel's limit of {MAX_TAP_QUEUES}",
                tap.queues
            ),
        ));
    }
    // Fits: bounded by MAX_TAP_QUEUES just above.
    let queues = tap.queues as u16;

    Ok(TapSpec {
        netns,
        ifname,
        queues,
        configure: tap.configure,
    })
}

fn memif_from_proto(m: pb::MemifSpec) -> Result<MemifSpec, Status> {
    if m.socket.is_empty() {
        return Err(invalid("spec.memif.socket", "must not be empty"));
    }
    let socket = PathBuf::from(&m.socket);
    // The driver's own rules: `@name`, or an absolute path that fits.
    memif::SocketAddress::parse(&socket).map_err(|e| {
        let why = match e {
            MemifError::InvalidConfig(why) => why,
            other => other.to_string(),
        };
        invalid("spec.memif.socket", why)
    })?;

    let role = match pb::MemifRole::try_from(m.role) {
        Ok(pb::MemifRole::Unspecified | pb::MemifRole::Server) => MemifRole::Server,
        Ok(pb::MemifRole::Client) => MemifRole::Client,
        Err(_) => {
            return Err(invalid(
                "spec.memif.role",
                format_args!("unknown role {}", m.role),
            ))
        }
    };
    let mode = match pb::MemifMode::try_from(m.mode) {
        Ok(pb::MemifMode::Unspecified | pb::MemifMode::Ethernet) => MemifMode::Ethernet,
        Ok(pb::MemifMode::Ip) => MemifMode::Ip,
        Err(_) => {
            return Err(invalid(
                "spec.memif.mode",
                format_args!("unknown mode {}", m.mode),
            ))
        }
    };
    let rx_mode = match pb::MemifRxMode::try_from(m.rx_mode) {
        Ok(pb::MemifRxMode::Unspecified | pb::MemifRxMode::Interrupt) => MemifRxMode::Interrupt,
        Ok(pb::MemifRxMode::Polling) => MemifRxMode::Polling,
        Err(_) => {
            return Err(invalid(
                "spec.memif.rx_mode",
                format_args!("unknown rx mode {}", m.rx_mode),
            ))
        }
    };

    let secret = match m.secret.as_str() {
        "" => None,
        s if s.len() > crate::port::memif::abi::SECRET_SIZE => {
            return Err(invalid(
                "spec.memif.secret",
                format_args!(
                    "{} bytes, more than {}",
                    s.len(),
                    crate::port::memif::abi::SECRET_SIZE
                ),
            ))
        }
        s if s.contains('\0') => return Err(invalid("spec.memif.secret", "contains NUL")),
        s => Some(s.to_owned()),
    };

    let queues = match u16::try_from(m.queues) {
        Ok(q) if q <= memif::MAX_QUEUES => q,
        _ => {
            return Err(invalid(
                "spec.memif.queues",
                format_args!("{} is above {}", m.queues, memif::MAX_QUEUES),
            ))
        }
    };
    let ring_size = match u16::try_from(m.ring_size) {
        Ok(0) => 0,
        Ok(n) if (2..=memif::MAX_RING_SIZE).contains(&n) && n.is_power_of_two() => n,
        _ => {
            return Err(invalid(
                "spec.memif.ring_size",
                format_args!(
                    "{} descriptors: a power of two from 2 to {}",
                    m.ring_size,
                    memif::MAX_RING_SIZE
                ),
            ))
        }
    };
    let buffer_size = match u16::try_from(m.buffer_size) {
        Ok(0) => 0,
        Ok(n) if n >= memif::MIN_BUFFER_SIZE => n,
        _ => {
            return Err(invalid(
                "spec.memif.buffer_size",
                format_args!(
                    "{} bytes: from {} to 65535",
                    m.buffer_size,
                    memif::MIN_BUFFER_SIZE
                ),
            ))
        }
    };
    let peer_mac = match m.peer_mac.as_str() {
        "" => None,
        text => Some(text.parse::<caracal_wire::EthernetAddress>().map_err(|_| {
            invalid(
                "spec.memif.peer_mac",
                format_args!("{text:?} is not a MAC address"),
            )
        })?),
    };
    Ok(MemifSpec {
        socket,
        role,
        id: m.id,
        secret,
        queues,
        mode,
        rx_mode,
        ring_size,
        buffer_size,
        peer_mac,
    })
}

/// The route of an `AddRoute` request; its origin is always `Api`.
pub fn route_from_proto(route: Option<pb::Route>) -> Result<RouteSpec, Status> {
    let route = route.ok_or_else(|| invalid("route", "required"))?;
    let prefix = prefix_from_proto("route.prefix", &route.prefix)?;
    if route.paths.is_empty() {
        return Err(invalid("route.paths", "at least one path is required"));
    }

    let mut paths: Vec<PathSpec> = Vec::with_capacity(route.paths.len());
    for (i, path) in route.paths.into_iter().enumerate() {
        let interface = object_name(format_args!("route.paths[{i}].interface"), path.interface)?;
        let gateway = match path.gateway.as_str() {
            "" => None,
            text => Some(gateway_from_proto(i, text, prefix)?),
        };
        let path = PathSpec { interface, gateway };
        if let Some(j) = paths.iter().position(|p| *p == path) {
            return Err(invalid(
                format_args!("route.paths[{i}]"),
                format_args!("repeats route.paths[{j}]"),
            ));
        }
        paths.push(path);
    }
    Ok(RouteSpec {
        prefix,
        paths,
        origin: RouteOrigin::Api,
    })
}

fn gateway_from_proto(i: usize, text: &str, prefix: IpCidr) -> Result<IpAddr, Status> {
    let field = format_args!("route.paths[{i}].gateway");
    let gateway: IpAddr = text
        .parse()
        .map_err(|_| invalid(field, format_args!("invalid address {text:?}")))?;
    if gateway.is_unspecified() {
        return Err(invalid(field, format_args!("{gateway} is not a next hop")));
    }
    if gateway.is_ipv4() != matches!(prefix, IpCidr::V4(_)) {
        return Err(invalid(
            field,
            format_args!("{gateway} is not of the same family as the prefix {prefix}"),
        ));
    }
    Ok(gateway)
}

// ----------------------------------------------------------------- replies

pub fn interface_to_proto(info: InterfaceInfo) -> pb::Interface {
    pb::Interface {
        id: u32::from(info.id.0),
        spec: Some(interface_spec_to_proto(info.spec)),
        kind: interface_kind_to_proto(info.kind) as i32,
        mac: info.mac.to_string(),
        ifindex: info.ifindex,
        up: info.up,
        counters: Some(port_counters_to_proto(info.stats)),
        memif: info.memif.map(memif_status_to_proto),
    }
}

fn memif_status_to_proto(s: MemifStatus) -> pb::MemifStatus {
    pb::MemifStatus {
        connected: s.connected,
        peer_name: s.peer_name,
        peer_interface: s.peer_interface,
        peer_pid: s.peer_pid.unwrap_or(0),
        rings: s
            .rings
            .iter()
            .map(|r| pb::MemifRing {
                direction: match r.direction {
                    MemifRingDirection::Rx => "rx",
                    MemifRingDirection::Tx => "tx",
                }
                .to_owned(),
                index: r.index.into(),
                size: r.size.into(),
                head: r.head.into(),
                tail: r.tail.into(),
                interrupts_masked: r.interrupts_masked,
            })
            .collect(),
        region_sizes: s.regions,
        hugepages: s.hugepages,
        buffer_size: s.buffer_size,
        connects: s.connects,
        disconnects: s.disconnects,
        peer_faults: s.peer_faults,
        rx_bad_length: s.rx_bad_length,
        last_disconnect: s.last_disconnect,
    }
}

fn interface_kind_to_proto(kind: PortKind) -> pb::InterfaceKind {
    match kind {
        PortKind::Tap => pb::InterfaceKind::Tap,
        PortKind::Memif => pb::InterfaceKind::Memif,
        // Test ports and uplinks have no kind in the API.
        PortKind::Loopback | PortKind::AfPacket | PortKind::AfXdp => pb::InterfaceKind::Unspecified,
    }
}

pub fn interface_spec_to_proto(spec: InterfaceSpec) -> pb::InterfaceSpec {
    let kind = match spec.kind {
        InterfaceKindSpec::Tap(tap) => pb::interface_spec::Kind::Tap(pb::TapSpec {
            netns: tap.netns.to_string_lossy().into_owned(),
            ifname: tap.ifname,
            queues: u32::from(tap.queues),
            configure: tap.configure,
        }),
        InterfaceKindSpec::Memif(m) => pb::interface_spec::Kind::Memif(pb::MemifSpec {
            socket: m.socket.to_string_lossy().into_owned(),
            role: match m.role {
                MemifRole::Server => pb::MemifRole::Server,
                MemifRole::Client => pb::MemifRole::Client,
            } as i32,
            id: m.id,
            secret: m.secret.unwrap_or_default(),
            queues: u32::from(m.queues),
            mode: match m.mode {
                MemifMode::Ethernet => pb::MemifMode::Ethernet,
                MemifMode::Ip => pb::MemifMode::Ip,
            } as i32,
            ring_size: u32::from(m.ring_size),
            buffer_size: u32::from(m.buffer_size),
            rx_mode: match m.rx_mode {
                MemifRxMode::Interrupt => pb::MemifRxMode::Interrupt,
                MemifRxMode::Polling => pb::MemifRxMode::Polling,
            } as i32,
            peer_mac: m.peer_mac.map(|a| a.to_string()).unwrap_or_default(),
        }),
    };
    pb::InterfaceSpec {
        name: spec.name,
        addresses: spec.addresses.iter().map(ToString::to_string).collect(),
        mtu: u32::from(spec.mtu),
        kind: Some(kind),
        policy_enforced: spec.policy_enforced,
        xconnect: spec.xconnect.unwrap_or_default(),
    }
}

fn port_counters_to_proto(s: PortStats) -> pb::PortCounters {
    pb::PortCounters {
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        tx_errors: s.tx_errors,
        rx_no_buffer: s.rx_no_buffer,
        rx_too_long: s.rx_too_long,
    }
}

pub fn route_to_proto(route: RouteSpec) -> pb::Route {
    pb::Route {
        prefix: route.prefix.to_string(),
        paths: route
            .paths
            .into_iter()
            .map(|p| pb::Path {
                interface: p.interface,
                gateway: p.gateway.map(|g| g.to_string()).unwrap_or_default(),
            })
            .collect(),
        origin: route.origin.as_str().to_owned(),
    }
}

pub fn counters_to_proto(counters: CountersSnapshot) -> pb::Counters {
    let pool = counters.pool;
    pb::Counters {
        drops: drops_to_proto(&counters.total_drops()),
        workers: counters.workers.iter().map(worker_to_proto).collect(),
        buffers: Some(pb::BufferPoolStats {
            total: pool.total.into(),
            free: pool.free.into(),
            in_use: pool.in_use().into(),
            buffer_size: counters.buffer_size,
            hugepages: pool.hugepages,
        }),
    }
}

fn worker_to_proto(w: &WorkerStats) -> pb::WorkerCounters {
    pb::WorkerCounters {
        worker: u32::try_from(w.worker).unwrap_or(u32::MAX),
        core: w.core.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1),
        vectors: w.vectors,
        packets: w.packets,
        drops: drops_to_proto(&w.drops),
    }
}

pub fn runtime_to_proto(r: RuntimeSnapshot) -> pb::Runtime {
    pb::Runtime {
        tsc_hz: r.tsc_hz,
        workers: r
            .workers
            .into_iter()
            .map(|w| pb::WorkerRuntime {
                worker: u32::try_from(w.worker).unwrap_or(u32::MAX),
                core: w.core.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1),
                loops: w.loops,
                idle_loops: w.idle_loops,
                clocks: w.clocks,
                idle_clocks: w.idle_clocks,
                nodes: w
                    .nodes
                    .into_iter()
                    .map(|n| pb::NodeRuntime {
                        name: n.name.to_owned(),
                        calls: n.calls,
                        vectors: n.vectors,
                        clocks: n.clocks,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn drops_to_proto(drops: &[(DropReason, u64)]) -> Vec<pb::DropCounter> {
    drops
        .iter()
        .map(|&(reason, count)| pb::DropCounter {
            node: reason.node().to_owned(),
            reason: reason.name().to_owned(),
            description: reason.description().to_owned(),
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::PoolStats;
    use crate::port::PortId;
    use caracal_wire::EthernetAddress;
    use tonic::Code;

    fn tap_spec() -> pb::InterfaceSpec {
        pb::InterfaceSpec {
            name: "default/web-0".into(),
            addresses: vec!["10.65.0.5/32".into(), "fd00:65::5/128".into()],
            mtu: 0,
            kind: Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                netns: "/var/run/netns/web-0".into(),
                ifname: String::new(),
                queues: 2,
                configure: true,
            })),
            policy_enforced: true,
            xconnect: String::new(),
        }
    }

    fn with_tap(f: impl FnOnce(&mut pb::TapSpec)) -> pb::InterfaceSpec {
        let mut spec = tap_spec();
        let Some(pb::interface_spec::Kind::Tap(tap)) = &mut spec.kind else {
            unreachable!()
        };
        f(tap);
        spec
    }

    /// Asserts `result` is `invalid_argument` with exactly `message`.
    #[track_caller]
    fn assert_invalid<T: fmt::Debug>(result: Result<T, Status>, message: &str) {
        let status = result.expect_err("accepted a bad request");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    }

    #[test]
    fn interface_spec_with_defaults() {
        let spec = interface_spec_from_proto(Some(tap_spec())).unwrap();
        assert_eq!(
            spec,
            InterfaceSpec {
                name: "default/web-0".into(),
                addresses: vec![
                    "10.65.0.5/32".parse().unwrap(),
                    "fd00:65::5/128".parse().unwrap()
                ],
                mtu: DEFAULT_MTU,
                kind: InterfaceKindSpec::Tap(TapSpec {
                    netns: "/var/run/netns/web-0".into(),
                    ifname: "eth0".into(),
                    queues: 2,
                    configure: true,
                }),
                policy_enforced: true,
                xconnect: None,
            }
        );
    }

    #[test]
    fn interface_spec_round_trips() {
        let mut proto = tap_spec();
        proto.mtu = 9000;
        let Some(pb::interface_spec::Kind::Tap(tap)) = &mut proto.kind else {
            unreachable!()
        };
        tap.ifname = "net1".into();
        let model = interface_spec_from_proto(Some(proto.clone())).unwrap();
        assert_eq!(interface_spec_to_proto(model), proto);
    }

    #[test]
    fn interface_spec_rejections_name_the_field() {
        assert_invalid(interface_spec_from_proto(None), "spec: required");
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                name: String::new(),
                ..tap_spec()
            })),
            "spec.name: must not be empty",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                name: "a\nb".into(),
                ..tap_spec()
            })),
            "spec.name: \"a\\nb\" contains control characters",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                addresses: vec!["10.0.0.1/32".into(), "10.0.0.300/32".into()],
                ..tap_spec()
            })),
            "spec.addresses[1]: invalid prefix \"10.0.0.300/32\": expected ADDRESS[/LEN]",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                addresses: vec!["10.0.0.1/32".into(), "fd00::1/129".into()],
                ..tap_spec()
            })),
            "spec.addresses[1]: invalid prefix \"fd00::1/129\": expected ADDRESS[/LEN]",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                addresses: vec![
                    "10.0.0.1/32".into(),
                    "10.0.0.2".into(),
                    "10.0.0.1/24".into(),
                ],
                ..tap_spec()
            })),
            "spec.addresses[2]: 10.0.0.1 is already spec.addresses[0]",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                kind: None,
                ..tap_spec()
            })),
            "spec.kind: required: set spec.tap or spec.memif",
        );
    }

    #[test]
    fn interface_mtu_bounds() {
        let v4_only = |mtu| pb::InterfaceSpec {
            mtu,
            addresses: vec!["10.0.0.1".into()],
            ..tap_spec()
        };
        assert_eq!(
            interface_spec_from_proto(Some(v4_only(576))).unwrap().mtu,
            576
        );
        assert_eq!(
            interface_spec_from_proto(Some(v4_only(65535))).unwrap().mtu,
            65535
        );
        assert_invalid(
            interface_spec_from_proto(Some(v4_only(65536))),
            "spec.mtu: 65536 is above 65535",
        );
        assert_invalid(
            interface_spec_from_proto(Some(v4_only(67))),
            "spec.mtu: 67 is below 68 (RFC 791)",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                mtu: 1279,
                ..tap_spec()
            })),
            "spec.mtu: 1279 is below IPv6's minimum of 1280 (RFC 8200)",
        );
    }

    #[test]
    fn tap_rejections_name_the_field() {
        assert_invalid(
            interface_spec_from_proto(Some(with_tap(|t| t.netns.clear()))),
            "spec.tap.netns: must not be empty",
        );
        assert_invalid(
            interface_spec_from_proto(Some(with_tap(|t| t.netns = "netns/web".into()))),
            "spec.tap.netns: \"netns/web\" is not an absolute path",
        );
        assert_invalid(
            interface_spec_from_proto(Some(with_tap(|t| t.ifname = "a-very-long-name".into()))),
            "spec.tap.ifname: \"a-very-long-name\" is longer than 15 bytes",
        );
        for bad in ["eth/0", "eth:0", "eth 0", "..", "."] {
            assert_invalid(
                interface_spec_from_proto(Some(with_tap(|t| t.ifname = bad.into()))),
                &format!("spec.tap.ifname: {bad:?} is not a valid interface name"),
            );
        }
        assert_invalid(
            interface_spec_from_proto(Some(with_tap(|t| t.queues = 257))),
            "spec.tap.queues: 257 is above the kernel's limit of 256",
        );
        let longest =
            interface_spec_from_proto(Some(with_tap(|t| t.ifname = "fifteen-chars-x".into())));
        assert!(longest.is_ok());
    }

    fn memif_spec(f: impl FnOnce(&mut pb::MemifSpec)) -> pb::InterfaceSpec {
        let mut m = pb::MemifSpec {
            socket: "/run/caracal/memif/dpdk-0.sock".into(),
            ..pb::MemifSpec::default()
        };
        f(&mut m);
        pb::InterfaceSpec {
            name: "default/dpdk-0".into(),
            addresses: vec!["10.65.0.6/32".into()],
            mtu: 0,
            kind: Some(pb::interface_spec::Kind::Memif(m)),
            policy_enforced: false,
            xconnect: "default/dpdk-1".into(),
        }
    }

    #[test]
    fn memif_spec_defaults_are_a_pod_server() {
        let spec = interface_spec_from_proto(Some(memif_spec(|_| {}))).unwrap();
        assert_eq!(
            spec.kind,
            InterfaceKindSpec::Memif(MemifSpec {
                socket: "/run/caracal/memif/dpdk-0.sock".into(),
                role: MemifRole::Server,
                id: 0,
                secret: None,
                queues: 0,
                mode: MemifMode::Ethernet,
                rx_mode: MemifRxMode::Interrupt,
                ring_size: 0,
                buffer_size: 0,
                peer_mac: None,
            })
        );
        assert_eq!(spec.xconnect.as_deref(), Some("default/dpdk-1"));
        let bad = interface_spec_from_proto(Some(pb::InterfaceSpec {
            xconnect: "a\nb".into(),
            ..memif_spec(|_| {})
        }));
        assert_invalid(bad, "spec.xconnect: \"a\\nb\" contains control characters");
    }

    #[test]
    fn memif_spec_round_trips() {
        let proto = memif_spec(|m| {
            m.socket = "@memif-a".into();
            m.role = pb::MemifRole::Client as i32;
            m.id = 9;
            m.secret = "s3cret".into();
            m.queues = 4;
            m.mode = pb::MemifMode::Ip as i32;
            m.ring_size = 4096;
            m.buffer_size = 9216;
            m.rx_mode = pb::MemifRxMode::Polling as i32;
            m.peer_mac = "02:00:00:00:00:07".into();
        });
        let proto = pb::InterfaceSpec { mtu: 1500, ..proto };
        let model = interface_spec_from_proto(Some(proto.clone())).unwrap();
        assert_eq!(interface_spec_to_proto(model), proto);
    }

    #[test]
    fn memif_rejections_name_the_field() {
        let bad = |f: fn(&mut pb::MemifSpec), message: &str| {
            assert_invalid(interface_spec_from_proto(Some(memif_spec(f))), message)
        };
        bad(|m| m.socket.clear(), "spec.memif.socket: must not be empty");
        bad(
            |m| m.socket = "memif.sock".into(),
            "spec.memif.socket: socket memif.sock: not an absolute path (or @name)",
        );
        bad(
            |m| m.socket = "@".into(),
            "spec.memif.socket: socket @: an abstract name has 1 to 106 bytes",
        );
        bad(|m| m.role = 7, "spec.memif.role: unknown role 7");
        bad(|m| m.mode = 3, "spec.memif.mode: unknown mode 3");
        bad(|m| m.rx_mode = -1, "spec.memif.rx_mode: unknown rx mode -1");
        bad(
            |m| m.secret = "x".repeat(25),
            "spec.memif.secret: 25 bytes, more than 24",
        );
        bad(|m| m.queues = 257, "spec.memif.queues: 257 is above 256");
        bad(
            |m| m.ring_size = 1000,
            "spec.memif.ring_size: 1000 descriptors: a power of two from 2 to 16384",
        );
        bad(
            |m| m.ring_size = 32768,
            "spec.memif.ring_size: 32768 descriptors: a power of two from 2 to 16384",
        );
        bad(
            |m| m.buffer_size = 64,
            "spec.memif.buffer_size: 64 bytes: from 128 to 65535",
        );
        bad(
            |m| m.peer_mac = "02:00".into(),
            "spec.memif.peer_mac: \"02:00\" is not a MAC address",
        );
        assert_invalid(
            interface_spec_from_proto(Some(pb::InterfaceSpec {
                mtu: 9000,
                ..memif_spec(|_| {})
            })),
            "spec.mtu: 9000 is above 2034, the most a memif frame in one buffer carries",
        );
    }

    #[test]
    fn memif_status_goes_out_with_the_interface() {
        let spec = interface_spec_from_proto(Some(memif_spec(|_| {}))).unwrap();
        let info = InterfaceInfo {
            id: PortId(2),
            spec,
            kind: PortKind::Memif,
            mac: EthernetAddress::BROADCAST,
            ifindex: 0,
            up: true,
            stats: PortStats::default(),
            memif: Some(MemifStatus {
                connected: true,
                peer_name: "DPDK 22.11.11".into(),
                peer_interface: "net_memif0".into(),
                peer_pid: Some(77),
                rings: vec![crate::model::MemifRingStatus {
                    direction: MemifRingDirection::Tx,
                    index: 0,
                    size: 1024,
                    head: 5,
                    tail: 3,
                    interrupts_masked: true,
                }],
                regions: vec![4 << 20],
                hugepages: false,
                buffer_size: 0,
                connects: 1,
                disconnects: 0,
                peer_faults: 0,
                rx_bad_length: 2,
                last_disconnect: String::new(),
            }),
        };
        let proto = interface_to_proto(info);
        assert_eq!(proto.kind, pb::InterfaceKind::Memif as i32);
        let m = proto.memif.unwrap();
        assert_eq!((m.connected, m.peer_pid, m.rx_bad_length), (true, 77, 2));
        assert_eq!(
            m.rings,
            [pb::MemifRing {
                direction: "tx".into(),
                index: 0,
                size: 1024,
                head: 5,
                tail: 3,
                interrupts_masked: true
            }]
        );
        assert_eq!(m.region_sizes, [4 << 20]);
    }

    fn route(prefix: &str, paths: &[(&str, &str)]) -> pb::Route {
        pb::Route {
            prefix: prefix.into(),
            paths: paths
                .iter()
                .map(|(i, g)| pb::Path {
                    interface: (*i).into(),
                    gateway: (*g).into(),
                })
                .collect(),
            origin: String::new(),
        }
    }

    #[test]
    fn routes_parse_with_ecmp_and_on_link_paths() {
        let r = route_from_proto(Some(route(
            "10.66.0.0/16",
            &[("up0", "192.168.1.1"), ("up1", "")],
        )))
        .unwrap();
        assert_eq!(
            r,
            RouteSpec {
                prefix: "10.66.0.0/16".parse().unwrap(),
                paths: vec![
                    PathSpec {
                        interface: "up0".into(),
                        gateway: Some("192.168.1.1".parse().unwrap())
                    },
                    PathSpec {
                        interface: "up1".into(),
                        gateway: None
                    },
                ],
                origin: RouteOrigin::Api,
            }
        );
        let host = route_from_proto(Some(route("fd00:65::5", &[("p", "")]))).unwrap();
        assert_eq!(host.prefix, "fd00:65::5/128".parse().unwrap());
        let default = route_from_proto(Some(route("::/0", &[("up0", "fe80::1")]))).unwrap();
        assert_eq!(default.paths[0].gateway, Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn routes_round_trip() {
        let proto = pb::Route {
            origin: "api".into(),
            ..route("10.66.0.0/16", &[("up0", "192.168.1.1"), ("up1", "")])
        };
        let model = route_from_proto(Some(proto.clone())).unwrap();
        assert_eq!(route_to_proto(model), proto);
        let host = RouteSpec {
            prefix: "10.65.0.5/32".parse().unwrap(),
            paths: vec![PathSpec {
                interface: "p".into(),
                gateway: None,
            }],
            origin: RouteOrigin::Interface,
        };
        assert_eq!(
            route_to_proto(host),
            pb::Route {
                origin: "interface".into(),
                ..route("10.65.0.5/32", &[("p", "")])
            }
        );
    }

    #[test]
    fn route_rejections_name_the_field() {
        assert_invalid(route_from_proto(None), "route: required");
        assert_invalid(
            route_from_proto(Some(route("", &[("p", "")]))),
            "route.prefix: must not be empty",
        );
        assert_invalid(
            route_from_proto(Some(route("10.0.0.0/33", &[("p", "")]))),
            "route.prefix: invalid prefix \"10.0.0.0/33\": expected ADDRESS[/LEN]",
        );
        assert_invalid(
            route_from_proto(Some(route("10.1.2.3/16", &[("p", "")]))),
            "route.prefix: \"10.1.2.3/16\" has host bits set (the prefix is 10.1.0.0/16)",
        );
        assert_invalid(
            route_from_proto(Some(route("10.0.0.0/8", &[]))),
            "route.paths: at least one path is required",
        );
        assert_invalid(
            route_from_proto(Some(route("10.0.0.0/8", &[("a", ""), ("", "")]))),
            "route.paths[1].interface: must not be empty",
        );
        assert_invalid(
            route_from_proto(Some(route("10.0.0.0/8", &[("a", "10.0.0.256")]))),
            "route.paths[0].gateway: invalid address \"10.0.0.256\"",
        );
        assert_invalid(
            route_from_proto(Some(route("10.0.0.0/8", &[("a", "fe80::1")]))),
            "route.paths[0].gateway: fe80::1 is not of the same family as the prefix 10.0.0.0/8",
        );
        assert_invalid(
            route_from_proto(Some(route("::/0", &[("a", "::")]))),
            "route.paths[0].gateway: :: is not a next hop",
        );
        assert_invalid(
            route_from_proto(Some(route(
                "10.0.0.0/8",
                &[("a", "10.0.0.1"), ("b", ""), ("a", "10.0.0.1")],
            ))),
            "route.paths[2]: repeats route.paths[0]",
        );
    }

    #[test]
    fn delete_prefix_uses_the_request_field_name() {
        assert_eq!(
            prefix_from_proto("prefix", "10.0.0.0/8").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_invalid(
            prefix_from_proto("prefix", "nope"),
            "prefix: invalid prefix \"nope\": expected ADDRESS[/LEN]",
        );
    }

    #[test]
    fn interface_info_to_proto() {
        let spec = interface_spec_from_proto(Some(tap_spec())).unwrap();
        let info = InterfaceInfo {
            id: PortId(3),
            spec,
            kind: PortKind::Tap,
            mac: EthernetAddress([0x02, 0xfe, 0, 0, 0, 3]),
            ifindex: 7,
            up: true,
            stats: PortStats {
                rx_packets: 1,
                rx_bytes: 2,
                tx_packets: 3,
                tx_bytes: 4,
                tx_errors: 5,
                rx_no_buffer: 6,
                rx_too_long: 7,
            },
            memif: None,
        };
        let proto = interface_to_proto(info);
        assert_eq!(proto.id, 3);
        assert_eq!(proto.kind, pb::InterfaceKind::Tap as i32);
        assert_eq!(proto.mac, "02:fe:00:00:00:03");
        assert_eq!((proto.ifindex, proto.up), (7, true));
        let spec = proto.spec.unwrap();
        assert_eq!(spec.mtu, 1500);
        assert_eq!(spec.addresses, ["10.65.0.5/32", "fd00:65::5/128"]);
        let Some(pb::interface_spec::Kind::Tap(tap)) = spec.kind else {
            panic!()
        };
        assert_eq!(tap.ifname, "eth0");
        assert_eq!(
            proto.counters.unwrap(),
            pb::PortCounters {
                rx_packets: 1,
                rx_bytes: 2,
                tx_packets: 3,
                tx_bytes: 4,
                tx_errors: 5,
                rx_no_buffer: 6,
                rx_too_long: 7
            }
        );
    }

    #[test]
    fn counters_sum_drops_and_mark_unpinned_workers() {
        let (a, b) = (DropReason::ALL[0], DropReason::ALL[DropReason::COUNT - 1]);
        let snapshot = CountersSnapshot {
            workers: vec![
                WorkerStats {
                    worker: 0,
                    core: Some(2),
                    vectors: 10,
                    packets: 300,
                    drops: vec![(a, 4), (b, 1)],
                },
                WorkerStats {
                    worker: 1,
                    core: None,
                    vectors: 1,
                    packets: 1,
                    drops: vec![(a, 6)],
                },
            ],
            pool: PoolStats {
                total: 1024,
                free: 1000,
                hugepages: false,
            },
            buffer_size: 2048,
        };
        let proto = counters_to_proto(snapshot);
        assert_eq!(proto.workers[0].core, 2);
        assert_eq!(proto.workers[1].core, -1);
        assert_eq!(proto.workers[0].drops.len(), 2);
        let drop_a = pb::DropCounter {
            node: a.node().into(),
            reason: a.name().into(),
            description: a.description().into(),
            count: 10,
        };
        assert_eq!(proto.drops[0], drop_a);
        assert_eq!(
            (proto.drops[1].reason.as_str(), proto.drops[1].count),
            (b.name(), 1)
        );
        assert_eq!(
            proto.buffers.unwrap(),
            pb::BufferPoolStats {
                total: 1024,
                free: 1000,
                in_use: 24,
                buffer_size: 2048,
                hugepages: false
            }
        );
    }

    #[test]
    fn engine_errors_map_to_codes() {
        let code = |e| engine_error_to_status(e).code();
        assert_eq!(
            code(EngineError::Invalid("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(EngineError::NoSuchInterface("p".into())),
            Code::NotFound
        );
        assert_eq!(
            code(EngineError::TooManyInterfaces),
            Code::ResourceExhausted
        );
        assert_eq!(code(EngineError::ShuttingDown), Code::Unavailable);
        assert_eq!(
            code(EngineError::Worker(std::io::Error::other("gone"))),
            Code::Unavailable
        );
        let exists = TapError::Exists {
            ifname: "eth0".into(),
            netns: "/var/run/netns/a".into(),
        };
        assert_eq!(code(EngineError::Tap(exists)), Code::AlreadyExists);
        let gone = TapError::OpenNetns {
            path: "/var/run/netns/a".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(code(EngineError::Tap(gone)), Code::FailedPrecondition);
        assert_eq!(
            code(EngineError::Memif(MemifError::InvalidConfig("x".into()))),
            Code::InvalidArgument
        );
        assert_eq!(
            code(EngineError::Memif(MemifError::SocketInUse("/s".into()))),
            Code::AlreadyExists
        );
        assert_eq!(
            code(EngineError::Memif(MemifError::Socket {
                socket: "/nonexistent/s".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })),
            Code::FailedPrecondition
        );
        let invalid = engine_error_to_status(EngineError::Invalid("spec.mtu: too big".into()));
        assert_eq!(invalid.message(), "spec.mtu: too big");
        let missing = engine_error_to_status(EngineError::NoSuchInterface("default/web-0".into()));
        assert_eq!(missing.message(), "interface \"default/web-0\" not found");
    }
}
