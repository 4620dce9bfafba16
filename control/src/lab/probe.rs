//! `lab probe`: the connectivity matrix between all pods — from each pod's
//! network namespace, one ICMP echo to every other pod's every address.
//! Pods without a kernel interface (memif, vhost-user) cannot originate
//! probes; their row shows `-`. Such a pod answers only through its
//! application, so it is probed only while one is connected; otherwise its
//! column shows `-` too (not probed), not `✗`.

use std::fmt::Write as _;
use std::process::Command;

use serde::Serialize;

use super::state::LabPod;

/// One probe's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub from: String,
    pub to: String,
    pub address: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub pods: Vec<String>,
    pub results: Vec<ProbeResult>,
    /// Pods left out as destinations: memif and vhost-user pods without
    /// a connected application.
    pub unprobed: Vec<String>,
}

fn id(p: &LabPod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Pings every address of every other pod that can answer (those in
/// `answering`) from every tap pod, a few probes in parallel.
pub fn probe(pods: &[LabPod], answering: &[LabPod]) -> ProbeReport {
    let mut jobs = Vec::new();
    for from in pods.iter().filter(|p| p.interface == "tap") {
        for to in answering.iter().filter(|p| id(p) != id(from)) {
            for addr in &to.ips {
                jobs.push((from.clone(), id(to), addr.clone()));
            }
        }
    }
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((from, to, addr)) = jobs.get(i) else {
                    break;
                };
                let ok = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &from.netns,
                        "ping",
                        "-n",
                        "-q",
                        "-c",
                        "1",
                        "-W",
                        "1",
                        addr,
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success());
                results.lock().expect("poisoned").push(ProbeResult {
                    from: id(from),
                    to: to.clone(),
                    address: addr.clone(),
                    ok,
                });
            });
        }
    });
    let mut results = results.into_inner().expect("poisoned");
    results.sort_by(|a, b| (&a.from, &a.to, &a.address).cmp(&(&b.from, &b.to, &b.address)));
    let unprobed = pods
        .iter()
        .filter(|p| !answering.iter().any(|a| id(a) == id(p)))
        .map(id)
        .collect();
    ProbeReport {
        pods: pods.iter().map(id).collect(),
        results,
        unprobed,
    }
}

impl ProbeReport {
    /// Every probe succeeded.
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(|r| r.ok)
    }

    /// A matrix: rows are sources, columns destinations; each cell shows
    /// one mark per destination address (`✓` reached, `✗` not).
    pub fn render(&self) -> String {
        let w = self.pods.iter().map(String::len).max().unwrap_or(4).max(4);
        let mut s = String::new();
        let _ = write!(s, "{:w$}", "from \\ to");
        for p in &self.pods {
            let _ = write!(s, "  {p:w$}");
        }
        s.push('\n');
        for from in &self.pods {
            let _ = write!(s, "{from:w$}");
            for to in &self.pods {
                let cell: String = if from == to {
                    ".".into()
                } else {
                    let marks: String = self
                        .results
                        .iter()
                        .filter(|r| &r.from == from && &r.to == to)
                        .map(|r| if r.ok { '✓' } else { '✗' })
                        .collect();
                    if marks.is_empty() {
                        "-".into()
                    } else {
                        marks
                    }
                };
                let _ = write!(s, "  {cell:w$}");
            }
            s.push('\n');
        }
        let ok = self.results.iter().filter(|r| r.ok).count();
        let _ = writeln!(
            s,
            "{ok}/{} probes answered (✓ per address: IPv4 then IPv6)",
            self.results.len()
        );
        if !self.unprobed.is_empty() {
            let _ = writeln!(
                s,
                "not probed (no application connected to the socket): {}",
                self.unprobed.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_rendering() {
        let r = ProbeReport {
            pods: vec!["x/a".into(), "x/b".into()],
            results: vec![
                ProbeResult {
                    from: "x/a".into(),
                    to: "x/b".into(),
                    address: "10.0.0.2".into(),
                    ok: true,
                },
                ProbeResult {
                    from: "x/a".into(),
                    to: "x/b".into(),
                    address: "fd00::2".into(),
                    ok: false,
                },
            ],
            unprobed: vec![],
        };
        let text = r.render();
        assert!(text.contains("✓✗"), "{text}");
        assert!(
            text.lines().nth(2).unwrap().contains('-'),
            "b sent no probes: {text}"
        );
        assert!(text.contains("1/2 probes answered"));
        assert!(!r.all_ok());
        assert!(!text.contains("not probed"));
    }

    #[test]
    fn socket_pods_are_probed_only_with_their_application() {
        let pod = |name: &str, interface: &str| LabPod {
            namespace: "x".into(),
            name: name.into(),
            netns: format!("x_{name}"),
            container_id: String::new(),
            ips: vec![],
            interface: interface.into(),
            socket: None,
        };
        let pods = [pod("a", "tap"), pod("m", "memif")];
        let r = probe(&pods, &pods[..1]);
        assert_eq!(r.unprobed, ["x/m"]);
        assert!(r
            .render()
            .contains("not probed (no application connected to the socket): x/m"));
        assert!(probe(&pods, &pods).unprobed.is_empty());
    }
}
