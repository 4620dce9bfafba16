//! What a run leaves in `perf/results/`: `results.json` (every figure,
//! the machine, the commit), `results.md` (the table the README shows)
//! and the plots.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::Scenario;

/// The machine and software a run measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub tsc_hz: f64,
    pub dpdk: String,
    pub rustc: String,
    /// 2 MiB hugepages reserved when the run started.
    pub hugepages: u64,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = |key: &str| -> u64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: kib("MemTotal:") as f64 / (1024.0 * 1024.0),
            kernel: command_line("uname", &["-r"]),
            tsc_hz: super::sys::tsc_hz(),
            dpdk: command_line("pkg-config", &["--modversion", "libdpdk"]),
            rustc: command_line("rustc", &["--version"]),
            hugepages: kib("HugePages_Total:"),
        }
    }
}

/// The first line a command prints, or "unknown".
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// One run of the harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// UTC, RFC 3339.
    pub date: String,
    pub commit: String,
    pub command: String,
    pub quick: bool,
    pub machine: Machine,
    pub scenarios: Vec<Scenario>,
}

impl Run {
    /// This run's scenarios in place of the same ones of `old`, the others
    /// kept, in the harness's order; both commands recorded.
    pub fn merged_into(self, old: Run) -> Run {
        let mut scenarios = old.scenarios;
        for sc in self.scenarios {
            match scenarios.iter_mut().find(|o| o.id == sc.id) {
                Some(o) => *o = sc,
                None => scenarios.push(sc),
            }
        }
        let order = |id: &str| super::SCENARIOS.iter().position(|s| s.0 == id);
        scenarios.sort_by_key(|s| order(&s.id));
        Run {
            command: format!(
                "{} (at commit {}), then {}",
                old.command, old.commit, self.command
            ),
            quick: old.quick || self.quick,
            scenarios,
            ..self
        }
    }

    /// True when every scenario ran to the end.
    pub fn complete(&self) -> bool {
        self.scenarios.iter().all(|s| s.error.is_none())
    }

    /// The markdown report: the machine, then one table per scenario.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Caracal side-by-side benchmark\n");
        let _ = writeln!(
            s,
            "Run {} at commit `{}` with `{}`{}.\n",
            self.date,
            self.commit,
            self.command,
            if self.quick {
                " (quick mode: small sizes and short trials, not for quoting)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "Machine: {} ({} cores, {:.0} GiB, TSC {:.2} GHz), Linux {}, DPDK {}, {}, {} hugepages.\n",
            m.cpu,
            m.cores,
            m.memory_gib,
            m.tsc_hz / 1e9,
            m.kernel,
            m.dpdk,
            m.rustc,
            m.hugepages
        );
        let _ = writeln!(
            s,
            "\"Advantage\" is how many times better Caracal is than the peer measured in the \
             same run (above 1: Caracal wins). Absolute figures are context: this is a shared \
             2-core virtual machine, and the generator shares it with the device under test.\n"
        );
        for sc in &self.scenarios {
            let _ = writeln!(s, "## {} — {}\n", sc.id, sc.title);
            let _ = writeln!(s, "Peer: {}. Took {:.0} s.\n", sc.peer, sc.seconds);
            if let Some(e) = &sc.error {
                let _ = writeln!(s, "**Did not complete:** {e}\n");
            }
            if !sc.rows.is_empty() {
                let _ = writeln!(
                    s,
                    "| case | metric | Caracal | {} | unit | advantage |",
                    short_peer(&sc.peer)
                );
                let _ = writeln!(s, "|---|---|---:|---:|---|---:|");
                for r in &sc.rows {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {:.2}× |",
                        r.case,
                        r.metric,
                        figure(r.ours),
                        figure(r.peer),
                        r.unit,
                        r.advantage
                    );
                }
                let _ = writeln!(s);
            }
            for n in &sc.notes {
                let _ = writeln!(s, "- {n}");
            }
            if !sc.notes.is_empty() {
                let _ = writeln!(s);
            }
            if !sc.rows.is_empty() {
                let _ = writeln!(s, "![{}]({}.svg)\n", sc.id, sc.id);
            }
        }
        s
    }

    /// Writes `results.json`, `results.md` and the plots into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        super::plot::summary(&self.scenarios, &dir.join("summary.svg"))?;
        for sc in self.scenarios.iter().filter(|s| !s.rows.is_empty()) {
            super::plot::scenario(sc, &dir.join(format!("{}.svg", sc.id)))?;
        }
        Ok(())
    }
}

/// The peer's name up to its first colon or parenthesis, for a column head.
fn short_peer(peer: &str) -> &str {
    peer.split([':', '(']).next().unwrap_or(peer).trim()
}

/// Three significant digits, without exponent for everyday magnitudes.
pub fn figure(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Better, Row};
    use super::*;

    fn run() -> Run {
        Run {
            date: "2026-11-26T12:00:00Z".into(),
            commit: "abc".into(),
            command: "caracal-bench --quick".into(),
            quick: true,
            machine: Machine::describe(),
            scenarios: vec![
                Scenario {
                    id: "memif-floor".into(),
                    title: "memif".into(),
                    peer: "dpdk-testpmd io forwarding (net_memif)".into(),
                    rows: vec![Row::new(
                        "64 B",
                        "throughput",
                        "Mpps",
                        Better::Higher,
                        12.0,
                        10.0,
                    )],
                    notes: vec!["a note".into()],
                    error: None,
                    seconds: 3.0,
                },
                Scenario {
                    id: "lpm".into(),
                    title: "lpm".into(),
                    peer: "DPDK rte_lpm".into(),
                    rows: vec![],
                    notes: vec![],
                    error: Some("no DPDK".into()),
                    seconds: 0.1,
                },
            ],
        }
    }

    #[test]
    fn markdown_has_a_row_per_figure_and_names_failures() {
        let md = run().markdown();
        assert!(
            md.contains("| 64 B | throughput | 12.0 | 10.0 | Mpps | 1.20× |"),
            "{md}"
        );
        assert!(md.contains("| case | metric | Caracal | dpdk-testpmd io forwarding | unit"));
        assert!(md.contains("**Did not complete:** no DPDK"));
        assert!(md.contains("- a note"));
        assert!(!run().complete());
    }

    #[test]
    fn merging_replaces_the_scenarios_run_again() {
        let old = run();
        let mut new = run();
        new.command = "caracal-bench --scenarios lpm --merge".into();
        new.scenarios = vec![Scenario {
            error: None,
            seconds: 9.0,
            ..old.scenarios[1].clone()
        }];
        let merged = new.merged_into(old);
        assert_eq!(merged.scenarios.len(), 2);
        assert_eq!(merged.scenarios[0].id, "memif-floor");
        assert_eq!(merged.scenarios[1].seconds, 9.0);
        assert!(merged.complete());
        assert!(merged
            .command
            .contains("then caracal-bench --scenarios lpm --merge"));
    }

    #[test]
    fn json_round_trips() {
        let r = run();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Run>(&text).unwrap(), r);
    }

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(figure(1234.5), "1234");
        assert_eq!(figure(12.345), "12.3");
        assert_eq!(figure(1.2345), "1.23");
        assert_eq!(figure(0.012345), "0.012");
        assert_eq!(figure(0.0), "0");
    }

    #[test]
    fn writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        run().write(dir.path()).unwrap();
        for f in [
            "results.json",
            "results.md",
            "summary.svg",
            "memif-floor.svg",
        ] {
            let meta = std::fs::metadata(dir.path().join(f)).unwrap();
            assert!(meta.len() > 0, "{f} is empty");
        }
        let svg = std::fs::read_to_string(dir.path().join("summary.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("64 B"), "{svg}");
    }
}
