//! The memif I/O floor: what it costs to move a packet from one memif
//! port to another and nothing else. Caracal cross-connects two memif
//! server ports (`xconnect`, VPP's `l2 xconnect`); the peer is Debian's
//! `dpdk-testpmd` in io-forwarding mode between two `net_memif` server
//! ports. Both run on the same pinned core in poll mode and face the same
//! generator (`caracal-pktgen`, two memif clients on the other core)
//! offering line rate.
//!
//! The figures are the rate at which each forwarder takes packets from
//! the generator (its forwarding capacity: the generator's ring into it
//! stays full, which the generator reports as pushback) and the rate the
//! generator gets back. On two cores the generator's rx thread shares a
//! core with its tx thread and cannot drain everything, so part of what
//! is forwarded is dropped on the forwarder's tx side, alike for both.
//! Caracal's busy cycles per packet come from its runtime counters;
//! testpmd's `--record-core-cycles` summary cannot be used: with
//! `net_memif` in DPDK 22.11 its port statistics, which that summary
//! divides by, read zero or wrap around.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use caracal_control::dataplane_client::{runtime_delta, DataplaneClient};
use caracal_dataplane::port::memif::{Mode, Role};

use super::sys::{self, Process};
use super::{Better, Options, Row};
use crate::pktgen::{self, FrameSizes, PktgenConfig, PortSpec, Rate, Report};

/// What one side achieved in one trial.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Packets per second the forwarder took from the generator, millions.
    pub taken_mpps: f64,
    /// Packets per second the generator received back, millions.
    pub rx_mpps: f64,
    /// Whether the forwarder was the bottleneck (the generator's ring
    /// into it was full at times).
    pub saturated: bool,
    /// TSC cycles the forwarding core spent per packet (Caracal only).
    pub cycles_per_packet: Option<f64>,
}

/// A generator port: a memif client (Ethernet, 1024 descriptors of 2 KiB,
/// ordinary pages) of the server at `socket`.
pub fn memif_client(socket: &Path) -> PortSpec {
    PortSpec::Memif(pktgen::ports::MemifSpec {
        socket: socket.display().to_string(),
        role: Role::Client,
        id: 0,
        secret: None,
        ring_size: 1024,
        buffer_size: 2048,
        mode: Mode::Ethernet,
        hugepages: false,
    })
}

/// The generator's two memif clients, in and out of the device under test.
pub fn generator(opts: &Options, tx_socket: &Path, rx_socket: &Path, size: u16) -> PktgenConfig {
    let mut cfg = PktgenConfig {
        tx: Some(memif_client(tx_socket)),
        rx: Some(memif_client(rx_socket)),
        rate: Rate::Line,
        duration: Some(opts.trial),
        cores: generator_cores(opts),
        hugepages: false,
        ..PktgenConfig::default()
    };
    cfg.traffic.sizes = FrameSizes::Fixed(size);
    cfg.traffic.flows = 256;
    cfg
}

/// Every CPU but the one of the device under test.
pub fn generator_cores(opts: &Options) -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..n).filter(|&c| c != opts.dut_cpu).collect()
}

/// A warm-up, then the timed trial; `before` runs between the two.
fn trial(
    cfg: &PktgenConfig,
    mut before: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Report> {
    let mut engine = pktgen::Engine::open(cfg)?;
    engine.run(pktgen::RunPlan {
        rate: Rate::Line,
        duration: Some(Duration::from_millis(500)),
        count: None,
    });
    before()?;
    Ok(engine.run(pktgen::RunPlan {
        rate: cfg.rate,
        duration: cfg.duration,
        count: None,
    }))
}

/// The generator's view of one trial.
fn measured(report: &Report, cycles_per_packet: Option<f64>) -> anyhow::Result<Measured> {
    let tx = report.tx.as_ref().context("the generator sent nothing")?;
    let rx = report
        .rx
        .as_ref()
        .context("the generator received nothing")?;
    if rx.packets == 0 {
        bail!("no packet came back through the device under test");
    }
    Ok(Measured {
        taken_mpps: tx.pps / 1e6,
        rx_mpps: rx.pps / 1e6,
        saturated: tx.port_pushback > 0,
        cycles_per_packet,
    })
}

/// Caracal's dataplane with two memif servers cross-connected.
#[derive(Debug)]
pub struct CaracalXconnect {
    pub dir: PathBuf,
    process: Process,
    pub api: PathBuf,
}

impl CaracalXconnect {
    pub fn start(opts: &Options, name: &str) -> anyhow::Result<CaracalXconnect> {
        let dir = opts.work_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let api = dir.join("dataplane.sock");
        let config = format!(
            r#"socket = "{api}"
[engine]
workers = [{cpu}]
mode = "poll"
buffers = 16384
hugepages = true

[[interfaces]]
name = "memif-a"
xconnect = "memif-b"
memif = {{ socket = "{a}", role = "server", rx_mode = "polling", queues = 1, ring_size = 1024 }}

[[interfaces]]
name = "memif-b"
xconnect = "memif-a"
memif = {{ socket = "{b}", role = "server", rx_mode = "polling", queues = 1, ring_size = 1024 }}
"#,
            api = api.display(),
            cpu = opts.dut_cpu,
            a = dir.join("a.sock").display(),
            b = dir.join("b.sock").display(),
        );
        let config_file = dir.join("dataplane.toml");
        std::fs::write(&config_file, config)?;
        let log = std::fs::File::create(dir.join("dataplane.log"))?;
        let process = Process::spawn(
            "caracal-dataplane",
            Command::new(opts.bin_dir.join("caracal-dataplane"))
                .arg("--config")
                .arg(&config_file)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        sys::wait_for_path(&api, Duration::from_secs(10))?;
        Ok(CaracalXconnect { dir, process, api })
    }

    pub fn sockets(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("a.sock"), self.dir.join("b.sock"))
    }

    fn measure(&mut self, opts: &Options, size: u16) -> anyhow::Result<Measured> {
        let (a, b) = self.sockets();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut client = rt.block_on(DataplaneClient::connect(&self.api))?;
        let mut start = None;
        let report = trial(&generator(opts, &a, &b, size), || {
            start = Some(rt.block_on(client.runtime())?);
            Ok(())
        })?;
        let end = rt.block_on(client.runtime())?;
        self.process.check_running()?;
        let start = start.context("no runtime snapshot before the trial")?;
        let worker = runtime_delta(&start, &end)
            .into_iter()
            .next()
            .context("the dataplane reports no worker")?;
        measured(&report, worker.cycles_per_packet())
    }
}

/// `dpdk-testpmd` forwarding between two memif servers.
#[derive(Debug)]
struct Testpmd {
    dir: PathBuf,
    process: Process,
}

impl Testpmd {
    fn start(opts: &Options, name: &str) -> anyhow::Result<Testpmd> {
        let dir = opts.work_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let main_lcore = generator_cores(opts).first().copied().unwrap_or(0);
        let vdev = |i: usize, sock: &str| {
            format!(
                "net_memif{i},role=server,socket={},socket-abstract=no,id=0,rsize=10",
                dir.join(sock).display()
            )
        };
        let process = Process::spawn(
            "dpdk-testpmd",
            // Line-buffered: testpmd's stdout is a pipe here, and the
            // harness waits for its lines.
            Command::new("stdbuf")
                .args(["-oL", "dpdk-testpmd"])
                .args(["-l", &format!("{main_lcore},{}", opts.dut_cpu)])
                .args(["--main-lcore", &main_lcore.to_string()])
                .args([
                    "--no-huge",
                    "-m",
                    "1024",
                    "--no-pci",
                    "--log-level",
                    "error",
                ])
                .args(["--file-prefix", &format!("cbench{}", std::process::id())])
                .args(["--vdev", &vdev(0, "a.sock"), "--vdev", &vdev(1, "b.sock")])
                .args([
                    "--",
                    "--forward-mode=io",
                    "--nb-cores=1",
                    "--total-num-mbufs=32768",
                    "--auto-start",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )?;
        let mut t = Testpmd { dir, process };
        // It prints this once forwarding has started.
        t.read_until("Press enter to exit")?;
        Ok(t)
    }

    /// Reads testpmd's stdout until a line contains `marker`; returns
    /// everything read.
    fn read_until(&mut self, marker: &str) -> anyhow::Result<String> {
        let stdout = self
            .process
            .child()
            .stdout
            .as_mut()
            .context("testpmd's stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("testpmd exited before printing {marker:?}:\n{text}");
            }
            text += &line;
            if line.contains(marker) {
                return Ok(text);
            }
        }
    }

    /// Stops forwarding (Enter) and waits for it to exit, reading what
    /// it prints so that it never blocks on a full pipe.
    fn stop(&mut self) -> anyhow::Result<()> {
        let child = self.process.child();
        child
            .stdin
            .as_mut()
            .context("testpmd's stdin")?
            .write_all(b"\n")?;
        std::io::copy(
            child.stdout.as_mut().context("testpmd's stdout")?,
            &mut std::io::sink(),
        )?;
        self.process.stop(Duration::from_secs(5));
        Ok(())
    }

    fn measure(mut self, opts: &Options, size: u16) -> anyhow::Result<Measured> {
        let (a, b) = (self.dir.join("a.sock"), self.dir.join("b.sock"));
        let report = trial(&generator(opts, &a, &b, size), || Ok(()))?;
        self.stop()?;
        measured(&report, None)
    }
}

pub fn run(opts: &Options, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> anyhow::Result<()> {
    for size in [64u16, 1500] {
        let ours = CaracalXconnect::start(opts, &format!("xc-{size}"))?.measure(opts, size)?;
        let peer = Testpmd::start(opts, &format!("testpmd-{size}"))?.measure(opts, size)?;
        let case = format!("{size} B");
        rows.push(Row::new(
            &case,
            "taken from the generator",
            "Mpps",
            Better::Higher,
            ours.taken_mpps,
            peer.taken_mpps,
        ));
        rows.push(Row::new(
            &case,
            "delivered to the generator",
            "Mpps",
            Better::Higher,
            ours.rx_mpps,
            peer.rx_mpps,
        ));
        notes.push(format!(
            "{size} B: Caracal's worker spent {} TSC cycles per packet (busy loops); the forwarder was \
             the bottleneck: Caracal {}, testpmd {}.",
            ours.cycles_per_packet
                .map_or("?".into(), |c| format!("{c:.0}")),
            if ours.saturated { "yes" } else { "no" },
            if peer.saturated { "yes" } else { "no" },
        ));
    }
    notes.push(format!(
        "Both forwarders poll one pinned core (CPU {}); caracal-pktgen's memif clients share the \
         other core, tx and rx, offering line rate for {:?} per trial after a 0.5 s warm-up, 256 \
         UDP flows. Caracal's cycles: its runtime counters (busy loop cycles ÷ packets received, \
         `caracalctl show runtime`).",
        opts.dut_cpu, opts.trial
    ));
    Ok(())
}
