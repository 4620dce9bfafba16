//! SCTP reachability over raw IP sockets (protocol 132).
//!
//! The kernels these tests run on have no SCTP stack (`socket(AF_INET,
//! SOCK_STREAM, IPPROTO_SCTP)` fails with EPROTONOSUPPORT and the module
//! cannot be loaded), but a raw socket of protocol 132 still sends and
//! receives SCTP packets. So a probe is the first half of SCTP's four-way
//! handshake, on the wire exactly as an SCTP stack sends it (RFC 9260):
//! the client sends an INIT from a fresh port with a fresh initiate tag;
//! the server answers an INIT to one of its ports with an INIT ACK that
//! carries that tag as its verification tag and a state cookie; the probe
//! succeeds when that INIT ACK comes back. Caracal sees SCTP ports and
//! connection tracking like any SCTP stack's traffic.
//!
//! A raw socket receives every SCTP packet that reaches its netns, so the
//! server answers for all its ports from one socket per family, and a
//! client recognises its answer by ports, tag and chunk type. An IPv4 raw
//! socket reads the IP header with the packet; an IPv6 one does not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{
    recvfrom, sendto, socket, sockopt, AddressFamily, RecvFlags, SendFlags, SocketType,
};

use super::in_netns;

const INIT: u8 = 1;
const INIT_ACK: u8 = 2;
/// State Cookie, the INIT ACK's mandatory parameter.
const STATE_COOKIE: u16 = 7;
const COMMON_HEADER: usize = 12;
/// Chunk header (4) + initiate tag, a_rwnd, streams, initial TSN (16).
const INIT_CHUNK: usize = 20;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) of `data`.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet of one INIT or INIT ACK chunk. The checksum covers the
/// whole packet with its own field zero and goes on the wire least
/// significant byte first (RFC 9260, appendix A).
fn packet(src: u16, dst: u16, vtag: u32, chunk: u8, initiate_tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(&vtag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    let cookie: &[u8] = if chunk == INIT_ACK { b"caracal!" } else { b"" };
    let params = if cookie.is_empty() {
        0
    } else {
        4 + cookie.len()
    };
    p.push(chunk);
    p.push(0);
    p.extend_from_slice(&((INIT_CHUNK + params) as u16).to_be_bytes());
    p.extend_from_slice(&initiate_tag.to_be_bytes());
    p.extend_from_slice(&65_536u32.to_be_bytes()); // a_rwnd
    p.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&1u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&initiate_tag.to_be_bytes()); // initial TSN
    if !cookie.is_empty() {
        p.extend_from_slice(&STATE_COOKIE.to_be_bytes());
        p.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
        p.extend_from_slice(cookie);
    }
    let sum = crc32c(&p);
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

/// The fields a probe or the server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Chunk {
    src: u16,
    dst: u16,
    vtag: u32,
    kind: u8,
    initiate_tag: u32,
}

/// Parses an SCTP packet whose first chunk is an INIT or INIT ACK with a
/// valid checksum.
fn parse(p: &[u8]) -> Option<Chunk> {
    if p.len() < COMMON_HEADER + INIT_CHUNK {
        return None;
    }
    let mut zeroed = p.to_vec();
    zeroed[8..12].fill(0);
    if crc32c(&zeroed).to_le_bytes() != p[8..12] {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let kind = p[COMMON_HEADER];
    if !matches!(kind, INIT | INIT_ACK) {
        return None;
    }
    Some(Chunk {
        src: be16(0),
        dst: be16(2),
        vtag: be32(4),
        kind,
        initiate_tag: be32(COMMON_HEADER + 4),
    })
}

/// A raw SCTP socket of `family`, in the calling thread's netns.
fn raw_socket(v6: bool) -> std::io::Result<OwnedFd> {
    let family = if v6 {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    let fd = socket(family, SocketType::RAW, Some(rustix::net::ipproto::SCTP))?;
    Ok(fd)
}

/// What follows the IP header of a packet read from a raw socket.
fn sctp_payload(buf: &[u8], v6: bool) -> Option<&[u8]> {
    if v6 {
        return Some(buf);
    }
    let ihl = usize::from(*buf.first()? & 0x0f) * 4;
    buf.get(ihl..)
}

/// Answers every INIT to one of `ports` in `netns` with an INIT ACK, over
/// IPv4 and IPv6, for as long as the test process lives.
pub fn serve(netns: &str, ports: &'static [u16]) {
    for v6 in [false, true] {
        let sock = in_netns(netns, || raw_socket(v6)).expect("raw SCTP socket");
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, _, Some(from))) = recvfrom(&sock, &mut buf[..], RecvFlags::empty()) {
                let Ok(from) = SocketAddr::try_from(from) else {
                    continue;
                };
                let Some(init) = sctp_payload(&buf[..n], v6).and_then(parse) else {
                    continue;
                };
                if init.kind != INIT || init.vtag != 0 || !ports.contains(&init.dst) {
                    continue;
                }
                let ack = packet(init.dst, init.src, init.initiate_tag, INIT_ACK, 0x5eed);
                let _ = sendto(
                    &sock,
                    &ack,
                    SendFlags::empty(),
                    &SocketAddr::new(from.ip(), 0),
                );
            }
        });
    }
}

/// Source ports and tags unique within the test process, so that parallel
/// probes from one netns tell their answers apart.
fn fresh() -> (u16, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 40_000 + (n % 20_000) as u16;
    let tag = 0x1000_0000 | (std::process::id() << 12) ^ n;
    (port, tag.max(1))
}

/// An INIT from `netns` to `to` and its INIT ACK within `timeout` (the
/// INIT is sent three times in that span).
pub fn probe(netns: &str, to: SocketAddr, timeout: Duration) -> bool {
    let v6 = to.is_ipv6();
    let Ok(sock) = in_netns(netns, || raw_socket(v6)) else {
        return false;
    };
    let (port, tag) = fresh();
    let init = packet(port, to.port(), 0, INIT, tag);
    let dst = SocketAddr::new(to.ip(), 0);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    for attempt in 1..=3u32 {
        if sendto(&sock, &init, SendFlags::empty(), &dst).is_err() {
            return false;
        }
        let resend = Instant::now() + timeout / 3;
        loop {
            let left = resend
                .min(deadline)
                .saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = sockopt::set_socket_timeout(&sock, sockopt::Timeout::Recv, Some(left));
            let Ok((n, _, Some(from))) = recvfrom(&sock, &mut buf[..], RecvFlags::empty()) else {
                continue;
            };
            let from_ip = SocketAddr::try_from(from).map(|a| a.ip()).ok();
            let answer = sctp_payload(&buf[..n], v6).and_then(parse);
            if from_ip == Some(to.ip())
                && answer
                    == Some(Chunk {
                        src: to.port(),
                        dst: port,
                        vtag: tag,
                        kind: INIT_ACK,
                        initiate_tag: 0x5eed,
                    })
            {
                return true;
            }
        }
        if attempt == 3 || Instant::now() >= deadline {
            break;
        }
    }
    false
}

/// Loopback needs no lab: the server and a probe in the same netns (the
/// test's own), which also shows raw SCTP sockets work on this kernel.
pub fn self_check(netns: &str) {
    serve(netns, &[7]);
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        assert!(
            probe(netns, SocketAddr::new(ip, 7), Duration::from_secs(2)),
            "no INIT ACK from {ip} port 7 over raw SCTP sockets in {netns}"
        );
        assert!(
            !probe(netns, SocketAddr::new(ip, 8), Duration::from_millis(300)),
            "an INIT ACK from {ip} port 8, where nothing serves"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C catalogue's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn init_round_trips() {
        let p = packet(40_001, 80, 0, INIT, 0xabcd);
        assert_eq!(p.len(), COMMON_HEADER + INIT_CHUNK);
        assert_eq!(
            parse(&p),
            Some(Chunk {
                src: 40_001,
                dst: 80,
                vtag: 0,
                kind: INIT,
                initiate_tag: 0xabcd
            })
        );
        let mut bad = p.clone();
        bad[20] ^= 1;
        assert_eq!(parse(&bad), None, "a corrupted packet fails its checksum");
        let ack = packet(80, 40_001, 0xabcd, INIT_ACK, 0x5eed);
        assert_eq!(ack.len(), COMMON_HEADER + INIT_CHUNK + 12);
        assert_eq!(parse(&ack).map(|c| c.kind), Some(INIT_ACK));
    }
}
