//! Shared scaffolding for the lab's privileged tests: the root check, a
//! lab in a private state folder driven through `caracalctl lab`, and
//! running code inside a pod's network namespace.
#![allow(dead_code)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Whether the test runs as root; a skip, or under
/// `CARACAL_REQUIRE_PRIVILEGED=1` a failure, when it does not.
pub fn privileged() -> bool {
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
        "CARACAL_REQUIRE_PRIVILEGED=1 but the lab test needs root"
    );
    eprintln!("skipped: not root");
    false
}

/// A lab in a private state folder; `lab down` on drop.
pub struct TestLab {
    pub state: PathBuf,
    pub manifests: PathBuf,
    /// Unique per test process: namespaces are `<tag>-<name>`.
    pub tag: String,
}

impl TestLab {
    /// A lab whose namespaces start with `prefix` and this process's id.
    pub fn new(prefix: &str) -> TestLab {
        let tag = format!("{prefix}{}", std::process::id());
        let root = std::env::temp_dir().join(format!("caracal-labtest-{tag}"));
        let _ = std::fs::remove_dir_all(&root);
        let manifests = root.join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        TestLab {
            state: root.join("state"),
            manifests,
            tag,
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_caracalctl"))
            .arg("lab")
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .expect("run caracalctl")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "caracalctl lab {args:?} failed:\n{text}\n{}",
            self.logs()
        );
        text
    }

    /// `caracalctl lab ARGS --json`'s output, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ctl(&[args, &["--json"][..]].concat());
        assert!(
            out.status.success(),
            "caracalctl lab {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["agent.log", "dataplane.log", "supervisor.log"] {
            if let Ok(t) = std::fs::read_to_string(self.state.join("logs").join(f)) {
                let tail: Vec<&str> = t.lines().rev().take(30).collect();
                s += &format!(
                    "--- {f} (last lines)\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        s
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.tag)
    }

    pub fn pod_yaml(&self, ns: &str, name: &str, app: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {}\n  labels: {{app: {app}}}\n\
             spec:\n  containers:\n  - name: c\n    image: i\n    ports:\n    - {{name: http, containerPort: 80}}\n---\n",
            self.ns(ns)
        )
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status JSON")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = self.ctl(&["down"]);
        if let Some(root) = self.state.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// Runs `f` on a thread inside the network namespace `netns` (a name
/// under /var/run/netns); sockets it opens stay in that namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns =
                std::fs::File::open(Path::new("/var/run/netns").join(netns)).expect("open netns");
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    })
}

/// One ICMP echo from `netns` to `ip`, answered within 2 s.
pub fn ping(netns: &str, ip: &std::net::IpAddr) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "2",
            &ip.to_string(),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn netns_list() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}
