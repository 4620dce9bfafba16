//! The tap port driver: how pods with an ordinary kernel interface attach.
//!
//! [`TapPort::create`] makes a multi-queue tap *inside the pod's network
//! namespace*: a short-lived thread enters the namespace (`setns`), opens
//! `/dev/net/tun` once per queue with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI |
//! IFF_MULTI_QUEUE`), so the device is born there and never crosses
//! namespaces, reads its MAC and ifindex, and, when asked, configures the
//! pod side over rtnetlink as Calico does (the `netlink` submodule). The queue
//! descriptors keep working from any thread once the creator has exited.
//!
//! Each worker takes one queue ([`Port::open_queue`]) and moves frames with
//! one `readv(2)` or `write(2)` per packet, straight between the tap and a
//! packet buffer. A syscall per packet is what a tap costs; batching and
//! zero copy are for the vhost-net backend (virtio rings shared with the
//! kernel), the planned fast path for kernel pods.
//!
//! The tap is not persistent: the kernel removes it, with its addresses and
//! routes, when the last of its queue descriptors closes, that is when the
//! [`TapPort`] (which holds the queues no worker has taken) and every
//! [`TapQueue`] are dropped. A failed creation closes what it opened, so it
//! leaves nothing behind. The descriptors also keep the pod's network
//! namespace alive until then.

pub(crate) mod netlink;
mod sys;

use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use caracal_wire::EthernetAddress;

use super::{bump, Port, PortCaps, PortId, PortKind, PortQueue, PortStats, QueueCounters};
use crate::buffer::{BufferCache, Frame, Meta, DATA_SIZE};
use crate::model::IpCidr;

/// Most queues a tap can have (`MAX_TAP_QUEUES` in the kernel's tun driver).
pub const MAX_QUEUES: u16 = 256;
/// Smallest IP MTU: what every IPv4 host must accept (RFC 791).
pub const MIN_MTU: u16 = 68;
/// Smallest IP MTU of a link carrying IPv6 (RFC 8200 §5).
pub const MIN_MTU_IPV6: u16 = 1280;
/// Largest IP MTU whose frames (plus the 14-byte Ethernet header) fit the
/// data area of one packet buffer.
pub const MAX_MTU: u16 = (DATA_SIZE - caracal_wire::ethernet::HEADER_LEN) as u16;

/// What tap to create, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// The pod's network namespace: a bind mount such as
    /// `/var/run/netns/NAME`, or `/proc/PID/ns/net`.
    pub netns: PathBuf,
    /// Interface name inside the namespace (at most 15 bytes).
    pub ifname: String,
    /// Queue pairs, 1 to [`MAX_QUEUES`]; normally one per worker.
    pub queues: u16,
    /// IP MTU of the pod side, bytes ([`MIN_MTU`] to [`MAX_MTU`]). Set on
    /// the device only when `pod` is given.
    pub mtu: u16,
    /// Configure the pod side too; `None` leaves the device down and bare.
    pub pod: Option<PodNetConfig>,
}

/// The pod's side of its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetConfig {
    /// The pod's addresses, installed as host prefixes (/32, /128)
    /// whatever prefix length they carry. Default routes via the gateway
    /// are added for each family present.
    pub addresses: Vec<IpCidr>,
}

/// Why a tap could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid tap configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot open network namespace {}: {source}", path.display())]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {}: {source}", path.display())]
    EnterNetns { path: PathBuf, source: io::Error },
    #[error("cannot start a thread to enter network namespace {}: {source}", path.display())]
    Thread { path: PathBuf, source: io::Error },
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    #[error("an interface named {ifname} already exists in {}", netns.display())]
    Exists { ifname: String, netns: PathBuf },
    #[error("TUNSETIFF {ifname} (queue {queue}): {source}")]
    SetIff {
        ifname: String,
        queue: u16,
        source: io::Error,
    },
    #[error("SIOCGIFHWADDR {ifname}: {source}")]
    HwAddr { ifname: String, source: io::Error },
    #[error("cannot find the ifindex of {ifname}: {source}")]
    IfIndex { ifname: String, source: io::Error },
    #[error("netlink: {op} on {ifname}: {source}")]
    Netlink {
        op: String,
        ifname: String,
        source: io::Error,
    },
}

impl TapConfig {
    /// Checks everything that can be checked without the kernel.
    pub fn validate(&self) -> Result<(), TapError> {
        let bad = |why: String| Err(TapError::InvalidConfig(why));
        let name = &self.ifname;
        // The kernel's dev_valid_name(), plus '%', which TUNSETIFF would
        // expand as a pattern ("tap%d") instead of using as the name.
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return bad(format!("interface name {name:?} must have 1 to 15 bytes"));
        }
        if name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace())
            || name.contains('\0')
        {
            return bad(format!("interface name {name:?} is not valid"));
        }
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return bad(format!(
                "{} queues: a tap has 1 to {MAX_QUEUES}",
                self.queues
            ));
        }
        let has_v6 = self
            .pod
            .as_ref()
            .is_some_and(|p| p.addresses.iter().any(|a| matches!(a, IpCidr::V6(_))));
        let min = if has_v6 { MIN_MTU_IPV6 } else { MIN_MTU };
        if self.mtu < min || self.mtu > MAX_MTU {
            return bad(format!("mtu {}: must be {min} to {MAX_MTU}", self.mtu));
        }
        Ok(())
    }
}

/// Runs `f` on a short-lived thread inside the network namespace at
/// `netns` and returns its result. Sockets `f` opens stay in that
/// namespace after the thread is gone, so this is how to get a socket or a
/// device born in a pod. Blocks until `f` returns.
pub fn run_in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, TapError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn_scoped(scope, || {
                let ns = File::open(netns).map_err(|source| TapError::OpenNetns {
                    path: netns.to_owned(),
                    source,
                })?;
                sys::enter_netns(ns.as_fd()).map_err(|source| TapError::EnterNetns {
                    path: netns.to_owned(),
                    source,
                })?;
                drop(ns);
                Ok(f())
            })
            .map_err(|source| TapError::Thread {
                path: netns.to_owned(),
                source,
            })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A multi-queue tap in a pod's network namespace.
#[derive(Debug)]
pub struct TapPort {
    ifname: String,
    ifindex: u32,
    mac: EthernetAddress,
    caps: PortCaps,
    /// Queue `i` until a worker takes it.
    unclaimed: Mutex<Vec<Option<File>>>,
    /// Counters of queue `i`, written by whoever holds it.
    counters: Box<[Arc<QueueCounters>]>,
}

/// What the creation thread brings back from the namespace.
struct Created {
    queues: Vec<File>,
    mac: [u8; 6],
    ifindex: u32,
}

impl TapPort {
    /// Creates the tap described by `cfg` (see the module documentation).
    /// Blocks for the few milliseconds this takes; on error nothing is left
    /// in the namespace.
    pub fn create(cfg: &TapConfig) -> Result<Arc<TapPort>, TapError> {
        cfg.validate()?;
        let created = run_in_netns(&cfg.netns, || create_here(cfg))??;
        Ok(Arc::new(TapPort::from_queues(
            cfg.ifname.clone(),
            created.ifindex,
            EthernetAddress(created.mac),
            cfg.mtu,
            created.queues,
        )))
    }

    /// A port over already attached queue descriptors (or, in tests, any
    /// descriptors with datagram semantics).
    fn from_queues(
        ifname: String,
        ifindex: u32,
        mac: EthernetAddress,
        mtu: u16,
        queues: Vec<File>,
    ) -> TapPort {
        let caps = PortCaps {
            queues: queues.len() as u16,
            mtu,
        };
        TapPort {
            ifname,
            ifindex,
            mac,
            caps,
            counters: queues.iter().map(|_| Arc::default()).collect(),
            unclaimed: Mutex::new(queues.into_iter().map(Some).collect()),
        }
    }

    /// The interface index inside the pod's namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name inside the pod's namespace.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

/// Creates and configures the tap in the calling thread's namespace.
fn create_here(cfg: &TapConfig) -> Result<Created, TapError> {
    let ifname = cfg.ifname.as_str();
    let mut queues = Vec::with_capacity(usize::from(cfg.queues));
    for queue in 0..cfg.queues {
        let file = sys::open_tun().map_err(TapError::OpenTun)?;
        let first = queue == 0;
        sys::attach_tap_queue(&file, ifname, first).map_err(|source| {
            if first && source.raw_os_error() == Some(libc::EBUSY) {
                TapError::Exists {
                    ifname: ifname.to_owned(),
                    netns: cfg.netns.clone(),
                }
            } else {
                TapError::SetIff {
                    ifname: ifname.to_owned(),
                    queue,
                    source,
                }
            }
        })?;
        queues.push(file);
    }
    let mac = sys::hw_addr(&queues[0], ifname).map_err(|source| TapError::HwAddr {
        ifname: ifname.to_owned(),
        source,
    })?;
    let ifindex = crate::port::sys::ifindex(ifname).map_err(|source| TapError::IfIndex {
        ifname: ifname.to_owned(),
        source,
    })?;
    if let Some(pod) = &cfg.pod {
        // On error `queues` is dropped here, which deletes the device.
        netlink::configure(ifname, ifindex, cfg.mtu, pod)?;
    }
    Ok(Created {
        queues,
        mac,
        ifindex,
    })
}

impl Port for TapPort {
    fn kind(&self) -> PortKind {
        PortKind::Tap
    }

    fn caps(&self) -> PortCaps {
        self.caps
    }

    fn peer_mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Hands out queue `worker`, once. Every queue should be taken and
    /// polled: the kernel spreads the pod's flows over all of them, and
    /// what lands on a queue nobody reads is lost.
    fn open_queue(&self, worker: usize) -> Option<Box<dyn PortQueue>> {
        let file = self
            .unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(worker)?
            .take()?;
        Some(Box::new(TapQueue {
            file,
            counters: self.counters[worker].clone(),
            overflow: [0],
        }))
    }

    fn stats(&self) -> PortStats {
        PortStats::sum(self.counters.iter().map(|c| &**c))
    }
}

/// One queue of a tap, owned by one worker.
#[derive(Debug)]
pub struct TapQueue {
    /// Non-blocking descriptor attached to the tap; each read or write moves
    /// one whole Ethernet frame.
    file: File,
    counters: Arc<QueueCounters>,
    /// Where a read spills past the buffer's data area: a frame that
    /// reaches it is longer than a buffer and is dropped, not truncated.
    overflow: [u8; 1],
}

impl PortQueue for TapQueue {
    /// Reads frames until the tap has none left or `out` is full, each
    /// straight into the data area of a fresh buffer.
    fn rx_burst(&mut self, port: PortId, cache: &mut BufferCache, out: &mut Frame) -> usize {
        let (mut packets, mut bytes, mut no_buffer, mut too_long) = (0u64, 0u64, 0u64, 0u64);
        let room = cache.pool().data_size();
        while !out.is_full() {
            let Some(mut buffer) = cache.alloc() else {
                // Counts bursts cut short, not frames: the frames waiting in
                // the tap are unknown without reading them.
                no_buffer = 1;
                break;
            };
            let read = {
                let mut packet = cache.pool().packet(&mut buffer);
                *packet.meta_mut() = Meta::received(port, room as u16);
                let read = (&self.file).read_vectored(&mut [
                    IoSliceMut::new(packet.data_mut()),
                    IoSliceMut::new(&mut self.overflow),
                ]);
                if let Ok(len) = read {
                    packet.set_len(len.min(room));
                }
                read
            };
            match read {
                Ok(len @ 1..) if len <= room => {
                    out.push(buffer);
                    packets += 1;
                    bytes += len as u64;
                }
                // Longer than a buffer: the kernel hands out what fits and
                // discards the rest of the frame. Only a frame above the
                // MTU can be that long (the MTU is capped to fit), so it is
                // dropped whole rather than passed on cut.
                Ok(len) if len > room => {
                    too_long += 1;
                    cache.free(buffer);
                }
                // WouldBlock: the tap is empty. Anything else (the device
                // going away) ends the burst too; the next poll retries.
                Ok(_) | Err(_) => {
                    cache.free(buffer);
                    break;
                }
            }
        }
        bump(&self.counters.rx_packets, packets);
        bump(&self.counters.rx_bytes, bytes);
        bump(&self.counters.rx_no_buffer, no_buffer);
        bump(&self.counters.rx_too_long, too_long);
        packets as usize
    }

    /// Writes each frame; a frame the kernel refuses (`EAGAIN` included) is
    /// a tx error and is dropped. Every buffer goes back to `cache`.
    fn tx_burst(&mut self, cache: &mut BufferCache, pkts: &mut Frame) {
        let (mut packets, mut bytes, mut errors) = (0u64, 0u64, 0u64);
        for mut buffer in pkts.drain() {
            match (&self.file).write(cache.pool().packet(&mut buffer).data()) {
                Ok(len) => {
                    packets += 1;
                    bytes += len as u64;
                }
                Err(_) => errors += 1,
            }
            cache.free(buffer);
        }
        bump(&self.counters.tx_packets, packets);
        bump(&self.counters.tx_bytes, bytes);
        bump(&self.counters.tx_errors, errors);
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{BufferPool, BufferPoolConfig};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;

    fn config() -> TapConfig {
        TapConfig {
            netns: "/var/run/netns/pod".into(),
            ifname: "eth0".into(),
            queues: 2,
            mtu: 1500,
            pod: Some(PodNetConfig {
                addresses: vec![
                    "10.0.0.2/32".parse().unwrap(),
                    "fd00::2/128".parse().unwrap(),
                ],
            }),
        }
    }

    fn invalid(change: impl FnOnce(&mut TapConfig)) -> bool {
        let mut cfg = config();
        change(&mut cfg);
        matches!(cfg.validate(), Err(TapError::InvalidConfig(_)))
    }

    #[test]
    fn validation_accepts_a_normal_config() {
        config().validate().unwrap();
    }

    #[test]
    fn validation_rejects_names_the_kernel_would_refuse_or_rewrite() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "tap%d",
            "sixteen-bytes-xx",
            "a\0b",
        ] {
            assert!(invalid(|c| c.ifname = name.into()), "{name:?}");
        }
        assert!(!invalid(|c| c.ifname = "fifteen-bytes-x".into()));
    }

    #[test]
    fn validation_bounds_queues_and_mtu() {
        assert!(invalid(|c| c.queues = 0));
        assert!(invalid(|c| c.queues = MAX_QUEUES + 1));
        assert!(!invalid(|c| c.queues = MAX_QUEUES));
        assert!(invalid(|c| c.mtu = MAX_MTU + 1));
        assert!(!invalid(|c| c.mtu = MAX_MTU));
        // IPv6 needs 1280; an IPv4-only pod can go down to 68.
        assert!(invalid(|c| c.mtu = 1279));
        assert!(!invalid(|c| {
            c.mtu = 68;
            c.pod = Some(PodNetConfig {
                addresses: vec!["10.0.0.2/32".parse().unwrap()],
            });
        }));
        assert!(invalid(|c| {
            c.mtu = 67;
            c.pod = None;
        }));
    }

    #[test]
    fn run_in_netns_reports_a_missing_namespace() {
        let err = run_in_netns(Path::new("/nonexistent/netns"), || ()).unwrap_err();
        assert!(matches!(err, TapError::OpenNetns { .. }), "{err}");
    }

    #[test]
    fn create_validates_before_touching_the_system() {
        let mut cfg = config();
        cfg.queues = 0;
        assert!(matches!(
            TapPort::create(&cfg),
            Err(TapError::InvalidConfig(_))
        ));
    }

    /// A port whose queues are Unix datagram sockets, which keep frame
    /// boundaries exactly as a tap does; returns the far ends.
    fn socket_port(queues: usize) -> (TapPort, Vec<UnixDatagram>) {
        let (mut files, mut peers) = (Vec::new(), Vec::new());
        for _ in 0..queues {
            let (ours, theirs) = UnixDatagram::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            theirs.set_nonblocking(true).unwrap();
            files.push(File::from(OwnedFd::from(ours)));
            peers.push(theirs);
        }
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        (
            TapPort::from_queues("eth0".into(), 3, mac, 1500, files),
            peers,
        )
    }

    fn pool(buffers: u32) -> Arc<BufferPool> {
        BufferPool::new(&BufferPoolConfig {
            buffers,
            hugepages: false,
        })
        .unwrap()
    }

    #[test]
    fn each_queue_is_handed_out_once() {
        let (port, _peers) = socket_port(2);
        assert_eq!(
            port.caps(),
            PortCaps {
                queues: 2,
                mtu: 1500
            }
        );
        assert_eq!(port.kind(), PortKind::Tap);
        assert_eq!(port.ifindex(), 3);
        assert_eq!(port.ifname(), "eth0");
        let q1 = port.open_queue(1).expect("queue 1");
        assert!(port.open_queue(1).is_none());
        assert!(port.open_queue(2).is_none());
        let q0 = port.open_queue(0).expect("queue 0");
        assert!(q0.rx_fd().is_some());
        assert_ne!(q0.rx_fd(), q1.rx_fd());
    }

    #[test]
    fn rx_reads_whole_frames_into_buffers_and_counts_them() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(64);
        let mut cache = pool.cache();
        let mut out = Frame::new();
        assert_eq!(queue.rx_burst(PortId(4), &mut cache, &mut out), 0);

        peers[0].send(&[0xaa; 60]).unwrap();
        peers[0].send(&[0xbb; 1514]).unwrap();
        assert_eq!(queue.rx_burst(PortId(4), &mut cache, &mut out), 2);
        let mut frames = Vec::new();
        for mut b in out.drain() {
            let p = pool.packet(&mut b);
            assert_eq!(p.meta().rx_port, PortId(4));
            assert_eq!(p.headroom(), crate::buffer::HEADROOM);
            frames.push(p.data().to_vec());
            cache.free(b);
        }
        assert_eq!(frames, [vec![0xaa; 60], vec![0xbb; 1514]]);
        let stats = port.stats();
        assert_eq!((stats.rx_packets, stats.rx_bytes), (2, 1574));
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rx_stops_when_the_frame_is_full() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(512);
        let mut cache = pool.cache();
        for _ in 0..crate::buffer::FRAME_SIZE + 3 {
            peers[0].send(&[1; 64]).unwrap();
        }
        let mut out = Frame::new();
        assert_eq!(
            queue.rx_burst(PortId(0), &mut cache, &mut out),
            crate::buffer::FRAME_SIZE
        );
        assert!(out.is_full());
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 0);
        for b in out.drain() {
            cache.free(b);
        }
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 3);
        for b in out.drain() {
            cache.free(b);
        }
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rx_without_buffers_counts_and_leaves_frames_queued() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(2);
        let mut cache = pool.cache();
        for _ in 0..3 {
            peers[0].send(&[7; 100]).unwrap();
        }
        let mut out = Frame::new();
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 2);
        assert_eq!(port.stats().rx_no_buffer, 1);
        for b in out.drain() {
            cache.free(b);
        }
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 1);
        for b in out.drain() {
            cache.free(b);
        }
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rx_takes_a_frame_that_fills_the_whole_buffer() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(8);
        let mut cache = pool.cache();
        peers[0].send(&[1; DATA_SIZE]).unwrap();
        let mut out = Frame::new();
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 1);
        let mut b = out.pop().unwrap();
        assert_eq!(pool.packet(&mut b).data(), &[1; DATA_SIZE][..]);
        cache.free(b);
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn rx_drops_a_frame_longer_than_a_buffer_and_goes_on() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(8);
        let mut cache = pool.cache();
        peers[0].send(&[1; DATA_SIZE + 1]).unwrap();
        peers[0].send(&[2; 64]).unwrap();
        let mut out = Frame::new();
        assert_eq!(queue.rx_burst(PortId(0), &mut cache, &mut out), 1);
        let mut b = out.pop().unwrap();
        assert_eq!(pool.packet(&mut b).data(), &[2; 64][..]);
        cache.free(b);
        assert_eq!(port.stats().rx_packets, 1);
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn tx_writes_each_frame_frees_every_buffer_and_counts_errors() {
        let (port, peers) = socket_port(1);
        let mut queue = port.open_queue(0).unwrap();
        let pool = pool(8);
        let mut cache = pool.cache();
        let mut frame = Frame::new();
        for (i, len) in [(1u8, 60usize), (2, 1514)] {
            let mut b = cache.alloc().unwrap();
            let mut p = pool.packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(0), len as u16);
            p.data_mut().fill(i);
            frame.push(b);
        }
        queue.tx_burst(&mut cache, &mut frame);
        assert!(frame.is_empty());
        let mut got = [0u8; 2048];
        assert_eq!(peers[0].recv(&mut got).unwrap(), 60);
        assert!(got[..60].iter().all(|&x| x == 1));
        assert_eq!(peers[0].recv(&mut got).unwrap(), 1514);
        let stats = port.stats();
        assert_eq!(
            (stats.tx_packets, stats.tx_bytes, stats.tx_errors),
            (2, 1574, 0)
        );

        // The far end gone: the write fails, the buffer still comes back.
        drop(peers);
        let mut b = cache.alloc().unwrap();
        *pool.packet(&mut b).meta_mut() = Meta::received(PortId(0), 60);
        frame.push(b);
        queue.tx_burst(&mut cache, &mut frame);
        assert_eq!(port.stats().tx_errors, 1);
        drop(cache);
        assert_eq!(pool.in_use(), 0);
    }
}
