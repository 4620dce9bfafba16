//! Network namespaces for tests: created under `/var/run/netns` by
//! `ip netns add`, deleted when their guard drops (a failed assertion
//! included), and code run inside one.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::process::run;

/// Where `ip netns` keeps the named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up. Give it a name
    /// from [`crate::unique`].
    pub fn new(name: String) -> Netns {
        let ns = Netns::without_loopback(name);
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Creates namespace `name` as the kernel makes it (`lo` down).
    pub fn without_loopback(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `cmd` inside (`ip netns exec`); its output, success or not.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// `ip -n NAME ARGS`; its output, success or not.
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip")
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip_ok(&self, args: &[&str]) -> Output {
        run("ip", &[&["-n", self.name.as_str()], args].concat())
    }

    /// Turns IPv6 off (all and default), so the kernel sends nothing of
    /// its own (router or neighbour solicitations) on links made after.
    pub fn disable_ipv6(&self) {
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            let out = self.exec(&["sysctl", "-qw", &format!("{key}=1")]);
            assert!(out.status.success(), "sysctl {key}: {out:?}");
        }
    }

    /// With IPv6 off ([`Netns::disable_ipv6`]), a veth pair `a`/`b`, both
    /// up.
    pub fn veth_pair(&self, a: &str, b: &str) {
        self.disable_ipv6();
        self.ip_ok(&["link", "add", a, "type", "veth", "peer", "name", b]);
        for ifname in [a, b] {
            self.ip_ok(&["link", "set", ifname, "up"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a thread inside the network namespace `netns` (a name
/// under /var/run/netns); sockets it opens stay in that namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(Path::new(NETNS_DIR).join(netns)).expect("open netns");
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    })
}
