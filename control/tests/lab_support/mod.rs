//! Shared scaffolding for the lab's privileged tests: a lab in a private
//! state folder driven through `caracalctl lab`, and probes from a pod's
//! network namespace. The root check and running code inside a namespace
//! are `caracal-testsupport`'s, re-exported here.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub use caracal_testsupport::{in_netns, privileged};
use serde_json::Value;

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
