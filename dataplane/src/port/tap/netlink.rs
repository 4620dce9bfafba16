//! Pod-side configuration of a tap, the way Calico programs a pod: MTU and
//! link up, the pod's addresses as host prefixes without duplicate address
//! detection, a link route to the gateway 169.254.1.1 and default routes
//! via 169.254.1.1 and via the gateway's IPv6 link-local address, all over a
//! synchronous rtnetlink socket. Router solicitations and DAD are switched
//! off through `/proc/sys` first, so the pod sends no IPv6 noise at link up.
//!
//! Everything here runs on the creation thread after it entered the pod's
//! network namespace: the netlink socket and the `/proc/sys/net` files
//! belong to the namespace that is current when they are opened.

use std::io::{self, Write};
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::{PodNetConfig, TapError};
use crate::model::IpCidr;
use crate::tables::Gateway;

/// One rtnetlink request of the configuration.
#[derive(Debug)]
pub(super) struct Step {
    /// What the request does, for error messages ("add address ...").
    pub what: String,
    pub request: RouteNetlinkMessage,
    /// `NLM_F_*` flags beyond `NLM_F_REQUEST | NLM_F_ACK`.
    pub flags: u16,
}

/// The requests that configure the pod side of interface `ifindex`, in the
/// order the kernel needs them: the link must be up before routes can use
/// it, and 169.254.1.1 must be reachable on the link before it can be a
/// gateway.
///
/// Addresses are installed as host prefixes (/32, /128) whatever prefix
/// they come with, as Calico does: the pod then has no on-link subnet, so
/// every destination, a neighbour pod in the same block included, goes
/// through the gateway, the only neighbour the dataplane answers for.
pub(super) fn plan(ifindex: u32, mtu: u16, pod: &PodNetConfig, gateway: &Gateway) -> Vec<Step> {
    let replace = NLM_F_CREATE | NLM_F_REPLACE;
    let mut steps = Vec::new();

    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    link.attributes.push(LinkAttribute::Mtu(u32::from(mtu)));
    steps.push(Step {
        what: format!("set mtu {mtu} and up"),
        request: RouteNetlinkMessage::SetLink(link),
        flags: 0,
    });

    for cidr in &pod.addresses {
        let host = cidr.host();
        steps.push(Step {
            what: format!("add address {host}"),
            request: RouteNetlinkMessage::NewAddress(address(ifindex, host)),
            flags: replace,
        });
    }

    let has_v4 = pod.addresses.iter().any(|a| matches!(a, IpCidr::V4(_)));
    let has_v6 = pod.addresses.iter().any(|a| matches!(a, IpCidr::V6(_)));
    if has_v4 {
        let gw = IpAddr::V4(gateway.ipv4);
        steps.push(Step {
            what: format!("add route {gw}/32 scope link"),
            request: RouteNetlinkMessage::NewRoute(route(ifindex, Some((gw, 32)), None)),
            flags: replace,
        });
        steps.push(Step {
            what: format!("add route default via {gw}"),
            request: RouteNetlinkMessage::NewRoute(route(ifindex, None, Some(gw))),
            flags: replace,
        });
    }
    if has_v6 {
        let gw = IpAddr::V6(gateway.ipv6);
        steps.push(Step {
            what: format!("add route ::/0 via {gw}"),
            request: RouteNetlinkMessage::NewRoute(route(ifindex, None, Some(gw))),
            flags: replace,
        });
    }
    steps
}

/// `RTM_NEWADDR` for `host` on `ifindex`, with `IFA_F_NODAD` so an IPv6
/// address is usable at once instead of after a second of DAD.
fn address(ifindex: u32, host: IpCidr) -> AddressMessage {
    let addr = host.address();
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr);
    msg.header.prefix_len = host.prefix_len();
    msg.header.flags = AddressHeaderFlags::Nodad;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = ifindex;
    // As `ip address add` does: local and address equal means "no peer".
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    msg.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    msg
}

/// `RTM_NEWROUTE` in the main table out of `ifindex`: either to `dst` on
/// the link (scope link, no gateway) or a default route via `gateway`.
fn route(ifindex: u32, dst: Option<(IpAddr, u8)>, gateway: Option<IpAddr>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    // What `ip route add` and Calico's netlink library use.
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if let Some((addr, len)) = dst {
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = len;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
    }
    if let Some(gw) = gateway {
        msg.header.address_family = family(gw);
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    msg.attributes.push(RouteAttribute::Oif(ifindex));
    msg
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Configures the pod side of `ifname` (index `ifindex`) in the calling
/// thread's network namespace.
pub(super) fn configure(
    ifname: &str,
    ifindex: u32,
    mtu: u16,
    pod: &PodNetConfig,
) -> Result<(), TapError> {
    quiet_ipv6(ifname);
    let netlink_error = |op: String, source: io::Error| TapError::Netlink {
        op,
        ifname: ifname.to_owned(),
        source,
    };
    let mut socket = RtnlSocket::open().map_err(|e| netlink_error("open socket".into(), e))?;
    for step in plan(ifindex, mtu, pod, &Gateway::default()) {
        socket
            .execute(step.request, step.flags)
            .map_err(|e| netlink_error(step.what, e))?;
    }
    Ok(())
}

/// Turns off router solicitations (`accept_ra=0`) and DAD of the kernel's
/// own link-local address (`accept_dad=0`) on `ifname`, before the link
/// comes up. Best effort: a kernel without IPv6 has no such files, and
/// nothing here is needed for the pod to work.
fn quiet_ipv6(ifname: &str) {
    for (knob, value) in [("accept_ra", "0"), ("accept_dad", "0")] {
        let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{knob}");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("tap {ifname}: cannot write {path}: {e}"),
        }
    }
}

/// A blocking rtnetlink socket that sends one request at a time and waits
/// for its acknowledgement. It belongs to the namespace that was current
/// when it was opened, whichever thread uses it later (the AF_XDP port
/// keeps one to detach its XDP program).
#[derive(Debug)]
pub(crate) struct RtnlSocket {
    socket: Socket,
    seq: u32,
}

impl RtnlSocket {
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        // Port 0 is the kernel: only its answers reach the socket.
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(RtnlSocket { socket, seq: 0 })
    }

    /// Sends `request` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits
    /// for the kernel's answer: `Ok` on an ack, the errno otherwise.
    pub(crate) fn execute(&mut self, request: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        msg.finalize();
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            if let Some(result) = self.find_ack(&datagram)? {
                return result;
            }
        }
    }

    /// The answer to the current request among the messages of `datagram`,
    /// if it holds one.
    fn find_ack(&self, datagram: &[u8]) -> io::Result<Option<io::Result<()>>> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            if reply.header.sequence_number == self.seq {
                if let NetlinkPayload::Error(e) = reply.payload {
                    return Ok(Some(match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    }));
                }
            }
            // Messages are padded to 4 bytes (NLMSG_ALIGN).
            let next = len.next_multiple_of(4);
            if len == 0 || next > rest.len() {
                break;
            }
            rest = &rest[next..];
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn pod(addresses: &[&str]) -> PodNetConfig {
        PodNetConfig {
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn whats(steps: &[Step]) -> Vec<&str> {
        steps.iter().map(|s| s.what.as_str()).collect()
    }

    #[test]
    fn dual_stack_pod_gets_calico_addresses_and_routes_in_order() {
        let steps = plan(
            7,
            1450,
            &pod(&["10.99.0.2/32", "fd00:99::2/128"]),
            &Gateway::default(),
        );
        assert_eq!(
            whats(&steps),
            [
                "set mtu 1450 and up",
                "add address 10.99.0.2/32",
                "add address fd00:99::2/128",
                "add route 169.254.1.1/32 scope link",
                "add route default via 169.254.1.1",
                "add route ::/0 via fe80::ecee:eeff:feee:eeee",
            ]
        );
    }

    #[test]
    fn single_stack_pods_get_only_their_family_routes() {
        let v4 = plan(3, 1500, &pod(&["10.0.0.9/32"]), &Gateway::default());
        assert_eq!(v4.len(), 4);
        assert!(whats(&v4).iter().all(|w| !w.contains("fe80")));
        let v6 = plan(3, 1500, &pod(&["fd00::9/128"]), &Gateway::default());
        assert_eq!(
            whats(&v6),
            [
                "set mtu 1500 and up",
                "add address fd00::9/128",
                "add route ::/0 via fe80::ecee:eeff:feee:eeee"
            ]
        );
        let none = plan(3, 1500, &pod(&[]), &Gateway::default());
        assert_eq!(whats(&none), ["set mtu 1500 and up"]);
    }

    #[test]
    fn addresses_become_host_prefixes_without_dad() {
        let steps = plan(5, 1500, &pod(&["10.1.2.3/26"]), &Gateway::default());
        let RouteNetlinkMessage::NewAddress(msg) = &steps[1].request else {
            panic!("step 1 is {:?}", steps[1]);
        };
        assert_eq!(msg.header.prefix_len, 32);
        assert_eq!(msg.header.index, 5);
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert!(msg.header.flags.contains(AddressHeaderFlags::Nodad));
        let local = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert!(msg.attributes.contains(&AddressAttribute::Local(local)));
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        assert_eq!(steps[1].flags, NLM_F_CREATE | NLM_F_REPLACE);
    }

    #[test]
    fn link_step_sets_mtu_and_up() {
        let steps = plan(9, 1400, &pod(&[]), &Gateway::default());
        let RouteNetlinkMessage::SetLink(link) = &steps[0].request else {
            panic!("step 0 is {:?}", steps[0]);
        };
        assert_eq!(link.header.index, 9);
        assert_eq!(link.header.flags, LinkFlags::Up);
        assert_eq!(link.header.change_mask, LinkFlags::Up);
        assert_eq!(link.attributes, [LinkAttribute::Mtu(1400)]);
    }

    #[test]
    fn gateway_routes_are_link_scoped_then_via_gateway() {
        let steps = plan(
            4,
            1500,
            &pod(&["10.0.0.1/32", "fd00::1/128"]),
            &Gateway::default(),
        );
        let routes: Vec<&RouteMessage> = steps
            .iter()
            .filter_map(|s| match &s.request {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(routes.len(), 3);

        let link = routes[0];
        assert_eq!(link.header.scope, RouteScope::Link);
        assert_eq!(link.header.destination_prefix_length, 32);
        assert!(link
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(169, 254, 1, 1)
            ))));
        assert!(!link
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));

        let default4 = routes[1];
        assert_eq!(default4.header.scope, RouteScope::Universe);
        assert_eq!(default4.header.destination_prefix_length, 0);
        assert_eq!(default4.header.address_family, AddressFamily::Inet);
        assert!(default4
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
                169, 254, 1, 1
            )))));

        let default6 = routes[2];
        assert_eq!(default6.header.address_family, AddressFamily::Inet6);
        let gw6: Ipv6Addr = "fe80::ecee:eeff:feee:eeee".parse().unwrap();
        assert!(default6
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet6(gw6))));
        for r in routes {
            assert!(r.attributes.contains(&RouteAttribute::Oif(4)));
            assert_eq!(r.header.table, RouteHeader::RT_TABLE_MAIN);
        }
    }

    #[test]
    fn requests_serialize_to_well_formed_netlink() {
        for step in plan(
            2,
            1500,
            &pod(&["10.0.0.1/32", "fd00::1/128"]),
            &Gateway::default(),
        ) {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | step.flags;
            header.sequence_number = 1;
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(step.request));
            msg.finalize();
            let mut bytes = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut bytes);
            let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
            assert_eq!(back, msg, "{}", step.what);
        }
    }
}
