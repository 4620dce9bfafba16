//! DPDK's `dpdk-testpmd` as a test's peer: whether it is installed, the
//! EAL arguments every test runs it with (no hugepages, no PCI, a unique
//! `--file-prefix`), a guard that kills it and removes what it left, and
//! an interactive session (`-i`) driven through its stdin.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::privilege::skip;

/// The program (Debian: package `dpdk-dev`).
pub const TESTPMD: &str = "dpdk-testpmd";

/// DPDK's runtime folders, one per `--file-prefix`.
const RUNTIME_DIR: &str = "/var/run/dpdk";

/// The prompt of interactive mode; it ends without a newline.
const PROMPT: &str = "testpmd> ";

/// The line `show port stats` closes its block with.
const STATS_END: &str =
    "  ############################################################################";

/// Whether `dpdk-testpmd` is installed; when not, a [`skip`] (a failure
/// under `CARACAL_REQUIRE_PRIVILEGED=1`).
pub fn available() -> bool {
    let found = Command::new(TESTPMD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        skip(&format!(
            "{TESTPMD} is not installed (apt-get install dpdk-dev)"
        ));
    }
    found
}

/// EAL arguments for a test: no hugepages (256 MiB of ordinary memory),
/// no PCI probing, and `prefix` as `--file-prefix` (unique per run, so
/// instances never share a runtime folder).
pub fn eal_args(prefix: &str) -> Vec<String> {
    [
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        prefix,
    ]
    .map(String::from)
    .to_vec()
}

/// A running testpmd: on drop it is killed (SIGKILL; testpmd keeps
/// nothing worth a clean exit) and its runtime folder and `files` (the
/// socket files it made as a memif server) are removed.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    prefix: String,
    files: Vec<PathBuf>,
}

impl Guard {
    /// Guards `child`, started with `--file-prefix prefix`.
    pub fn new(child: Child, prefix: String, files: Vec<PathBuf>) -> Guard {
        Guard {
            child,
            prefix,
            files,
        }
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Kills it now (no goodbye, as a crashing application); the files
    /// go on drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(Path::new(RUNTIME_DIR).join(&self.prefix));
    }
}

/// NIC counters of a testpmd port (`show port stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// An interactive testpmd (`-i`): commands written to its stdin, its
/// stdout and stderr gathered as they come (line-buffered by `stdbuf`,
/// since a pipe would make testpmd's stdio block-buffered).
#[derive(Debug)]
pub struct Interactive {
    name: String,
    guard: Guard,
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
}

impl Interactive {
    /// Starts `dpdk-testpmd EAL -- -i --total-num-mbufs=16384 APP`,
    /// where EAL is [`eal_args`] of `prefix` then `eal`, and waits (up to
    /// 60 s) for its first prompt. `name` names it in messages; `files`
    /// are removed on drop (see [`Guard`]).
    pub fn start(
        name: &str,
        prefix: String,
        eal: &[&str],
        app: &[&str],
        files: Vec<PathBuf>,
    ) -> Interactive {
        let mut child = Command::new("stdbuf")
            .args(["-oL", "-eL", TESTPMD])
            .args(eal_args(&prefix))
            .args(eal)
            .args(["--", "-i", "--total-num-mbufs=16384"])
            .args(app)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {TESTPMD}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            // Raw chunks, not lines: the prompt ends without a newline.
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        let t = Interactive {
            name: name.to_owned(),
            guard: Guard::new(child, prefix, files),
            stdin,
            output,
        };
        t.wait_for(0, PROMPT, Duration::from_secs(60));
        t
    }

    /// Bytes of output so far (a position for [`Interactive::since`]).
    pub fn output_len(&self) -> usize {
        self.output.lock().unwrap().len()
    }

    /// The output after byte `from`.
    pub fn since(&self, from: usize) -> String {
        self.output.lock().unwrap()[from..].to_owned()
    }

    /// Waits until `text` appears in the output after byte `from`;
    /// returns the position after it. Panics, with all the output, after
    /// `timeout`.
    pub fn wait_for(&self, from: usize, text: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().unwrap();
                if let Some(at) = out[from..].find(text) {
                    return from + at + text.len();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no {text:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.since(0)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes one command line, without waiting for anything.
    pub fn cmd(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("{}: {line}: {e}", self.name));
    }

    /// Runs a command and waits (up to 60 s) for the prompt that follows
    /// it; the output up to that prompt.
    pub fn run(&mut self, line: &str) -> String {
        let from = self.output_len();
        self.cmd(line);
        let end = self.wait_for(from, PROMPT, Duration::from_secs(60));
        self.output.lock().unwrap()[from..end].to_owned()
    }

    /// `show port stats PORT`, parsed; returns once the prompt after the
    /// block is back, so the next command's prompt is its own.
    pub fn port_stats(&mut self, port: u16) -> PortStats {
        let from = self.output_len();
        self.cmd(&format!("show port stats {port}"));
        let end = self.wait_for(from, STATS_END, Duration::from_secs(30));
        self.wait_for(end, PROMPT, Duration::from_secs(30));
        let text = self.output.lock().unwrap()[from..end].to_owned();
        let field = |name: &str| -> u64 {
            let at = text
                .find(name)
                .unwrap_or_else(|| panic!("{}: no {name} in:\n{text}", self.name));
            text[at + name.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{}: bad {name} in:\n{text}", self.name))
        };
        PortStats {
            rx_packets: field("RX-packets:"),
            rx_bytes: field("RX-bytes:"),
            tx_packets: field("TX-packets:"),
            tx_bytes: field("TX-bytes:"),
        }
    }

    /// Polls port `port`'s stats (every `every`, up to 20 s) until `done`
    /// holds; the stats that made it hold.
    pub fn port_stats_until(
        &mut self,
        port: u16,
        what: &str,
        every: Duration,
        done: impl Fn(&PortStats) -> bool,
    ) -> PortStats {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.port_stats(port);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} never happened; last stats {s:?}",
                self.name
            );
            std::thread::sleep(every);
        }
    }

    /// Dies without a word, as a crashing application does (its files
    /// are removed as on drop).
    pub fn kill(mut self) {
        self.guard.kill();
    }
}
