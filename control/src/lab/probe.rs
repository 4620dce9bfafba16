//! `lab probe`: the connectivity matrix between all pods — from each pod's
//! network namespace, one ICMP echo to every other pod's every address.
//! Pods without a kernel interface (memif, vhost-user) cannot originate
//! probes; their row shows `-`.

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
}

fn id(p: &LabPod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Pings every address of every other pod from every tap pod, a few
/// probes in parallel.
pub fn probe(pods: &[LabPod]) -> ProbeReport {
    let mut jobs = Vec::new();
    for from in pods.iter().filter(|p| p.interface == "tap") {
        for to in pods.iter().filter(|p| id(p) != id(from)) {
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
                let Some((from, to, addr)) = jobs.get(i) else { break };
                let ok = Command::new("ip")
                    .args(["netns", "exec", &from.netns, "ping", "-n", "-q", "-c", "1", "-W", "1", addr])
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
    ProbeReport { pods: pods.iter().map(id).collect(), results }
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
                    if marks.is_empty() { "-".into() } else { marks }
                };
                let _ = write!(s, "  {cell:w$}");
            }
            s.push('\n');
        }
        let ok = self.results.iter().filter(|r| r.ok).count();
        let _ = writeln!(s, "{ok}/{} probes answered (✓ per address: IPv4 then IPv6)", self.results.len());
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
                ProbeResult { from: "x/a".into(), to: "x/b".into(), address: "10.0.0.2".into(), ok: true },
                ProbeResult { from: "x/a".into(), to: "x/b".into(), address: "fd00::2".into(), ok: false },
            ],
        };
        let text = r.render();
        assert!(text.contains("✓✗"), "{text}");
        assert!(text.lines().nth(2).unwrap().contains('-'), "b sent no probes: {text}");
        assert!(text.contains("1/2 probes answered"));
        assert!(!r.all_ok());
    }
}
