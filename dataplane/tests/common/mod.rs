//! Scaffolding of the dataplane's integration tests: the real
//! `caracal-dataplane` binary as a child process and a gRPC client to
//! it, and our own memif client as a pod. What every crate's tests share (root check, namespaces, commands)
//! is `caracal-testsupport`'s.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::DataplaneClient;
use caracal_dataplane::buffer::{BufferCache, Frame, Meta};
use caracal_dataplane::port::memif::{self, MemifConfig, MemifPort, SocketAddress};
use caracal_dataplane::port::{Port, PortId, PortQueue};
use caracal_proto::dataplane as pb;
pub use caracal_testsupport::Netns;
use caracal_testsupport::{wait_until, Process};
use caracal_wire::EthernetAddress;

/// A name unique to this process and call (prefix `cr`), short enough
/// for an ifname.
pub fn unique(tag: &str) -> String {
    caracal_testsupport::unique("cr", tag)
}

/// A network namespace named [`unique`]`(tag)`, its loopback up.
pub fn netns(tag: &str) -> Netns {
    Netns::new(unique(tag))
}

/// The real `caracal-dataplane`, stopped with SIGTERM on drop.
pub struct Daemon {
    process: Process,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = std::env::temp_dir().join(unique("dp"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("dataplane.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_caracal-dataplane"))
            .arg("--socket")
            .arg(&socket)
            .args(["--workers", "1", "--mode", "adaptive", "--buffers", "4096"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start caracal-dataplane");
        let d = Daemon {
            process: Process::new("caracal-dataplane", child, Duration::from_secs(10)),
            socket,
            dir,
        };
        wait_until(
            "dataplane socket did not appear",
            Duration::from_secs(20),
            Duration::from_millis(20),
            || d.socket.exists(),
        );
        d
    }

    pub fn client(&self) -> DataplaneClient {
        block_on(DataplaneClient::connect(&self.socket)).expect("connect to dataplane")
    }

    /// Sends SIGTERM and waits; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        self.process.stop()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a future on the test binary's runtime (tests are synchronous; the
/// runtime outlives every call so gRPC channels keep their I/O driver).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .block_on(f)
}

/// Adds a tap pod with the given addresses, configured inside `ns`.
pub fn add_tap_pod(
    client: &DataplaneClient,
    name: &str,
    ns: &Netns,
    addresses: &[&str],
) -> pb::Interface {
    let mut c = client.interfaces.clone();
    let req = pb::AddInterfaceRequest {
        spec: Some(pb::InterfaceSpec {
            name: name.into(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            mtu: 1500,
            kind: Some(pb::interface_spec::Kind::Tap(pb::TapSpec {
                netns: ns.path().display().to_string(),
                ifname: "eth0".into(),
                queues: 0,
                configure: true,
            })),
            policy_enforced: false,
            xconnect: String::new(),
        }),
    };
    block_on(c.add_interface(req))
        .expect("AddInterface")
        .into_inner()
}

pub fn counters(client: &DataplaneClient) -> pb::Counters {
    let mut c = client.stats.clone();
    block_on(c.get_counters(pb::GetCountersRequest {}))
        .expect("GetCounters")
        .into_inner()
}

/// Total drops for `node`/`reason` over all workers.
pub fn drops(c: &pb::Counters, node: &str, reason: &str) -> u64 {
    c.drops
        .iter()
        .filter(|d| d.node == node && d.reason == reason)
        .map(|d| d.count)
        .sum()
}

/// Waits until no buffer is in use (workers publish their caches once
/// per loop; an idle adaptive worker has published within a loop).
pub fn assert_no_buffer_in_use(client: &DataplaneClient) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b = counters(client).buffers.expect("buffer stats");
        if b.in_use == 0 {
            assert_eq!(b.free, b.total);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} buffers still in use: {b:?}",
            b.in_use
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One of our memif clients (id 0, one queue, polling, 256 slots): the
/// pod or peer at the other end of one of the dataplane's memif servers.
pub struct MemifPeer {
    pub port: Arc<MemifPort>,
    queue: Box<dyn PortQueue>,
}

impl MemifPeer {
    /// Connects to `socket` as interface `name` sending to `peer_mac`;
    /// waits up to `wait` for the connection.
    pub fn connect(
        name: &str,
        socket: &str,
        peer_mac: EthernetAddress,
        wait: Duration,
    ) -> MemifPeer {
        let port = MemifPort::create(&MemifConfig {
            name: name.into(),
            socket: SocketAddress::parse(socket.as_ref()).unwrap(),
            role: memif::Role::Client,
            id: 0,
            secret: None,
            queues: 1,
            mode: memif::Mode::Ethernet,
            rx_mode: memif::RxMode::Polling,
            ring_size: 256,
            buffer_size: 0,
            peer_mac,
            mtu: 1500,
            hugepages: false,
        })
        .unwrap();
        assert!(port.wait_connected(wait), "{:?}", port.status());
        let queue = port.open_queue(0).unwrap();
        MemifPeer { port, queue }
    }

    /// Sends `frames` in one burst.
    pub fn send(&mut self, cache: &mut BufferCache, frames: &[Vec<u8>]) {
        let mut out = Frame::new();
        for f in frames {
            let mut b = cache.alloc().unwrap();
            let mut p = cache.pool().packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(0), f.len() as u16);
            p.data_mut().copy_from_slice(f);
            out.push(b);
        }
        self.queue.tx_burst(cache, &mut out);
    }

    /// Frames received within `wait`, stopping early once `want` came.
    pub fn recv(&mut self, cache: &mut BufferCache, want: usize, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            let mut out = Frame::new();
            if self.queue.rx_burst(PortId(0), cache, &mut out) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            for mut b in out.drain() {
                got.push(cache.pool().packet(&mut b).data().to_vec());
                cache.free(b);
            }
        }
        got
    }
}
