//! Shared scaffolding for the privileged integration tests: network
//! namespaces that clean up after themselves, the real `caracal-dataplane`
//! binary as a child process, and a gRPC client to it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caracal_control::dataplane_client::DataplaneClient;
use caracal_proto::dataplane as pb;

/// True when the test may run; false (after saying so) when it must be
/// skipped. With `CARACAL_REQUIRE_PRIVILEGED=1` (CI) a missing privilege
/// is a failure, never a skip.
pub fn privileged() -> bool {
    // Effective uid from /proc: no libc call, so no unsafe.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    assert!(
        std::env::var("CARACAL_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "CARACAL_REQUIRE_PRIVILEGED=1 but this test needs root"
    );
    eprintln!("skipped: not root");
    false
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call, short enough for an ifname.
pub fn unique(tag: &str) -> String {
    format!(
        "cr{}{}-{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        Command::new("ip")
            .args(&args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command and insists it succeeds.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The real `caracal-dataplane`, stopped with SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
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
            child: Some(child),
            socket,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.socket.exists() {
            assert!(Instant::now() < deadline, "dataplane socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn client(&self) -> DataplaneClient {
        block_on(DataplaneClient::connect(&self.socket)).expect("connect to dataplane")
    }

    /// Sends SIGTERM and waits; returns whether it exited with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
