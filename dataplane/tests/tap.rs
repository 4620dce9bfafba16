//! Privileged end-to-end tests of the tap driver against the real kernel:
//! a tap born in a fresh network namespace, configured as a Calico pod,
//! traffic in both directions through `rx_burst`/`tx_burst`, exact buffer
//! accounting, and no device left behind, neither after a drop nor after a
//! failed creation.
//!
//! They need root (CAP_NET_ADMIN and CAP_SYS_ADMIN for `setns`) and `ip`
//! from iproute2. Without root they print "skipped: not root" and pass,
//! unless `CARACAL_REQUIRE_PRIVILEGED=1`, which turns the skip into a
//! failure (for CI machines that are meant to run them).

use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use caracal_dataplane::buffer::{
    BufferCache, BufferPool, BufferPoolConfig, Frame, Meta, DATA_SIZE,
};
use caracal_dataplane::port::tap::{run_in_netns, PodNetConfig, TapConfig, TapError, TapPort};
use caracal_dataplane::port::{Port, PortId, PortQueue};
use caracal_testsupport::{privileged, unique, Netns};
use caracal_wire::{
    ArpOperation, ArpPacket, EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Packet,
    Ipv6Packet, UdpPacket,
};
use serde_json::Value;

const GATEWAY_MAC: EthernetAddress = EthernetAddress([0xee; 6]);
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const RX_PORT: PortId = PortId(7);

/// A fresh network namespace (`lo` down, as the kernel makes it),
/// deleted on drop (panics included).
fn netns() -> Netns {
    Netns::without_loopback(unique("caracal-t-", "tap"))
}

/// `ip -n NAME -j ARGS...`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.ip_ok(&[&["-j"], args].concat());
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

fn has_link(ns: &Netns, ifname: &str) -> bool {
    ns.ip(&["link", "show", "dev", ifname]).status.success()
}

fn pod_config(ns: &Netns, ifname: &str, addresses: &[&str]) -> TapConfig {
    TapConfig {
        netns: ns.path(),
        ifname: ifname.into(),
        queues: 2,
        mtu: 1400,
        pod: Some(PodNetConfig {
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }),
    }
}

/// Polls every queue, handing each received frame to `visit`, until
/// `visit` returns true (then true) or `timeout` passes (then false).
/// Every buffer goes back to `cache`.
fn poll(
    queues: &mut [Box<dyn PortQueue>],
    pool: &BufferPool,
    cache: &mut BufferCache,
    timeout: Duration,
    mut visit: impl FnMut(&[u8]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut frame = Frame::new();
    let mut done = false;
    while !done && Instant::now() < deadline {
        for queue in queues.iter_mut() {
            queue.rx_burst(RX_PORT, cache, &mut frame);
            for mut buffer in frame.drain() {
                {
                    let packet = pool.packet(&mut buffer);
                    assert_eq!(packet.meta().rx_port, RX_PORT);
                    done = done || visit(packet.data());
                }
                cache.free(buffer);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done
}

/// The ARP request of `frame`, if it is one for `target`.
fn arp_request_for(frame: &[u8], target: Ipv4Addr) -> Option<ArpPacket<&[u8]>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::ARP {
        return None;
    }
    let arp = ArpPacket::new_checked(&frame[eth.header_len()..]).ok()?;
    (arp.operation() == ArpOperation::REQUEST && arp.target_protocol_addr() == target)
        .then_some(arp)
}

/// The UDP destination port and datagram length of an IPv6 frame, read
/// without trusting the lengths the headers claim (a frame the driver cut
/// would fail a checked view, and this must still see it).
fn udp6_port_and_len(frame: &[u8]) -> Option<(u16, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV6 || eth.payload().len() < 48 {
        return None;
    }
    let ip = Ipv6Packet::new_unchecked(eth.payload());
    if ip.next_header() != IpProtocol::UDP {
        return None;
    }
    let udp = UdpPacket::new_unchecked(&eth.payload()[40..]);
    Some((udp.dst_port(), eth.payload().len() - 40))
}

/// An Ethernet/IPv4/UDP frame, checksums filled.
fn udp4_frame(
    dst_mac: EthernetAddress,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let (eth_len, ip_len, udp_len) = (14, 20, 8);
    let mut bytes = vec![0u8; eth_len + ip_len + udp_len + payload.len()];
    let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(GATEWAY_MAC);
    eth.set_ethertype(EtherType::IPV4);
    let mut ip = Ipv4Packet::new_unchecked(&mut bytes[eth_len..]);
    ip.set_version(4);
    ip.set_header_len(ip_len);
    ip.set_total_len((ip_len + udp_len + payload.len()) as u16);
    ip.set_dont_frag(true);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_src_addr(*from.ip());
    ip.set_dst_addr(*to.ip());
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(&mut bytes[eth_len + ip_len..]);
    udp.set_src_port(from.port());
    udp.set_dst_port(to.port());
    udp.set_len((udp_len + payload.len()) as u16);
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum_v4(from.ip(), to.ip());
    bytes
}

/// Asserts what `ip` shows inside the pod: MTU, MAC, addresses without
/// DAD, and the Calico gateway routes.
fn assert_pod_side(ns: &Netns, port: &TapPort) {
    let links = ip_json(ns, &["link", "show", "dev", "eth0"]);
    let link = &links[0];
    assert_eq!(link["ifindex"], u64::from(port.ifindex()), "{link}");
    assert_eq!(link["mtu"], 1400, "{link}");
    assert_eq!(link["address"], port.peer_mac().to_string(), "{link}");
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{link}"
    );

    let addrs = ip_json(ns, &["addr", "show", "dev", "eth0"]);
    let infos = addrs[0]["addr_info"].as_array().expect("addr_info").clone();
    let find = |family: &str, local: &str| {
        infos
            .iter()
            .find(|a| a["family"] == family && a["local"] == local)
            .cloned()
    };
    let v4 = find("inet", "10.99.0.2").unwrap_or_else(|| panic!("no 10.99.0.2 in {infos:?}"));
    assert_eq!(v4["prefixlen"], 32);
    let v6 = find("inet6", "fd00:99::2").unwrap_or_else(|| panic!("no fd00:99::2 in {infos:?}"));
    assert_eq!(v6["prefixlen"], 128);
    assert_eq!(v6["nodad"], true, "{v6}");
    assert!(v6.get("tentative").is_none(), "DAD still running: {v6}");

    let routes4 = ip_json(ns, &["-4", "route", "show"]);
    let routes4 = routes4.as_array().unwrap();
    assert!(
        routes4
            .iter()
            .any(|r| r["dst"] == "169.254.1.1" && r["dev"] == "eth0" && r["scope"] == "link"),
        "{routes4:?}"
    );
    assert!(
        routes4
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "{routes4:?}"
    );
    let routes6 = ip_json(ns, &["-6", "route", "show"]);
    assert!(
        routes6
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default"
                && r["gateway"] == "fe80::ecee:eeff:feee:eeee"
                && r["dev"] == "eth0"),
        "{routes6}"
    );
}

#[test]
fn tap_pod_gets_configured_and_passes_traffic_both_ways() {
    if !privileged() {
        return;
    }
    let ns = netns();
    let pool = BufferPool::new(&BufferPoolConfig {
        buffers: 1024,
        hugepages: false,
    })
    .unwrap();
    let cfg = pod_config(&ns, "eth0", &["10.99.0.2/32", "fd00:99::2/128"]);
    let port = TapPort::create(&cfg).expect("create the tap");
    assert_eq!(port.ifname(), "eth0");
    assert_eq!(port.caps().queues, 2);
    assert_eq!(port.caps().mtu, 1400);

    // A second tap of the same name is refused and the first one stays.
    let again = TapPort::create(&cfg).expect_err("same name twice");
    assert!(matches!(again, TapError::Exists { .. }), "{again}");
    assert!(has_link(&ns, "eth0"));

    assert_pod_side(&ns, &port);

    let mut queues: Vec<Box<dyn PortQueue>> = (0..2)
        .map(|w| port.open_queue(w).expect("each queue once"))
        .collect();
    assert!(port.open_queue(0).is_none());
    assert!(port.open_queue(2).is_none());
    let mut cache = pool.cache();

    // Pod -> dataplane: the pod's first packet off-link makes its kernel
    // ARP for the gateway, which must come out of one of the queues.
    run_in_netns(&ns.path(), || {
        UdpSocket::bind("0.0.0.0:0")?.send_to(b"hello", "10.99.0.1:9")
    })
    .expect("enter the pod")
    .expect("send from the pod");
    let mac = port.peer_mac();
    let mut arp_seen = false;
    let got_arp = poll(
        &mut queues,
        &pool,
        &mut cache,
        Duration::from_secs(5),
        |frame| {
            let Some(arp) = arp_request_for(frame, GATEWAY_V4) else {
                return false;
            };
            assert_eq!(EthernetFrame::new_checked(frame).unwrap().src_addr(), mac);
            assert_eq!(arp.source_hardware_addr(), mac);
            assert_eq!(arp.source_protocol_addr(), Ipv4Addr::new(10, 99, 0, 2));
            arp_seen = true;
            true
        },
    );
    assert!(
        got_arp && arp_seen,
        "no ARP request for 169.254.1.1 from the pod"
    );

    // Dataplane -> pod: a UDP datagram written to a queue reaches a socket
    // bound in the pod.
    let receiver = run_in_netns(&ns.path(), || UdpSocket::bind("10.99.0.2:7777"))
        .expect("enter the pod")
        .expect("bind in the pod");
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let from = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 40000);
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), 7777);
    let payload = b"from the dataplane";
    let bytes = udp4_frame(mac, from, to, payload);
    let mut frame = Frame::new();
    let mut buffer = cache.alloc().unwrap();
    {
        let mut packet = pool.packet(&mut buffer);
        *packet.meta_mut() = Meta::received(PortId(0), bytes.len() as u16);
        packet.data_mut().copy_from_slice(&bytes);
    }
    frame.push(buffer);
    queues[1].tx_burst(&mut cache, &mut frame);
    assert!(frame.is_empty());
    let mut got = [0u8; 1500];
    let (len, sender) = receiver
        .recv_from(&mut got)
        .expect("the datagram reaches the pod");
    assert_eq!(&got[..len], payload);
    assert_eq!(sender, from.into());

    let stats = port.stats();
    assert!(stats.rx_packets >= 1 && stats.rx_bytes >= 42, "{stats:?}");
    assert_eq!(
        (stats.tx_packets, stats.tx_bytes, stats.tx_errors),
        (1, bytes.len() as u64, 0)
    );

    // A frame larger than a buffer (possible only above the MTU the driver
    // accepts, so raise it behind its back) is dropped whole, and the
    // frame after it still arrives.
    assert!(ns
        .ip(&["link", "set", "dev", "eth0", "mtu", "4000"])
        .status
        .success());
    let ifindex = port.ifindex();
    run_in_netns(&ns.path(), || -> std::io::Result<()> {
        let socket = UdpSocket::bind("[::]:0")?;
        let all_nodes = SocketAddrV6::new("ff02::1".parse().unwrap(), 7778, 0, ifindex);
        socket.send_to(&[0x55; 3000], all_nodes)?;
        socket.send_to(&[0x66; 10], all_nodes)?;
        Ok(())
    })
    .expect("enter the pod")
    .expect("multicast from the pod");
    let mut lengths = Vec::new();
    let small_arrived = poll(
        &mut queues,
        &pool,
        &mut cache,
        Duration::from_secs(5),
        |frame| {
            assert!(frame.len() <= DATA_SIZE);
            match udp6_port_and_len(frame) {
                Some((7778, len)) => {
                    lengths.push(len);
                    len == 8 + 10
                }
                _ => false,
            }
        },
    );
    assert!(
        small_arrived,
        "the small datagram after the big one never came"
    );
    assert_eq!(lengths, [18], "only the small datagram may come through");

    // Every buffer is back, and the tap dies with its descriptors.
    drop(queues);
    drop(port);
    drop(cache);
    assert_eq!(pool.in_use(), 0);
    assert!(!has_link(&ns, "eth0"), "the tap outlived its port");
}

#[test]
fn failed_pod_configuration_leaves_no_tap_behind() {
    if !privileged() {
        return;
    }
    let ns = netns();
    // New devices in this namespace get IPv6 disabled, so adding the
    // pod's IPv6 address fails after the tap exists.
    run_in_netns(&ns.path(), || {
        std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
    })
    .expect("enter the pod")
    .expect("disable IPv6 for new devices");
    let cfg = pod_config(&ns, "eth1", &["10.99.1.2/32", "fd00:99:1::2/128"]);
    let err = TapPort::create(&cfg).expect_err("IPv6 address on an IPv6-disabled device");
    match &err {
        TapError::Netlink { op, ifname, .. } => {
            assert!(op.contains("fd00:99:1::2"), "{err}");
            assert_eq!(ifname, "eth1");
        }
        other => panic!("expected a netlink error, got {other}"),
    }
    assert!(
        !has_link(&ns, "eth1"),
        "a failed creation left the tap behind"
    );
}
