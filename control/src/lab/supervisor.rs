//! The lab's supervisor: a detached process that runs `caracal-dataplane`
//! and `caracal-agent` and restarts either when it dies, as the kubelet
//! restarts a crashed container. It stops both on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use super::Lab;

/// Pause before restarting a daemon that died, so a crash loop does not
/// spin.
const RESTART_DELAY: Duration = Duration::from_millis(500);

struct Daemon {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
    restarts: u32,
}

impl Daemon {
    fn start(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        if let Some(pid) = child.id() {
            std::fs::write(&self.pid_file, pid.to_string())?;
        }
        self.child = Some(child);
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                super::signal_pid(pid as i32, nix::sys::signal::Signal::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The dataplane's `--workers` (a count or a CPU list such as "1"); one
/// unpinned worker unless set. The benchmark harness pins the worker.
pub const WORKERS_ENV: &str = "CARACAL_LAB_WORKERS";
/// The dataplane's `--mode`, `adaptive` unless set (benchmarks use `poll`).
pub const MODE_ENV: &str = "CARACAL_LAB_MODE";

/// The dataplane's `--flows` (flow table capacity), 256 Ki unless set.
pub const FLOWS_ENV: &str = "CARACAL_LAB_FLOWS";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(lab: &Lab) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let logs = lab.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut daemons = [
        Daemon {
            name: "dataplane",
            program: lab.bin_dir.join("caracal-dataplane"),
            args: vec![
                "--socket".into(),
                path(&lab.dataplane_socket()),
                "--workers".into(),
                env_or(WORKERS_ENV, "1"),
                "--mode".into(),
                env_or(MODE_ENV, "adaptive"),
                "--flows".into(),
                env_or(FLOWS_ENV, "262144"),
            ],
            log: logs.join("dataplane.log"),
            pid_file: lab.dir.join("dataplane.pid"),
            child: None,
            restarts: 0,
        },
        Daemon {
            name: "agent",
            program: lab.bin_dir.join("caracal-agent"),
            args: vec![
                "--datastore".into(),
                format!("dir:{}", path(&lab.manifests_dir())),
                "--node".into(),
                super::NODE_NAME.into(),
                "--state-dir".into(),
                path(&lab.dir.join("agent")),
                "--socket".into(),
                path(&lab.agent_socket()),
                "--dataplane-socket".into(),
                path(&lab.dataplane_socket()),
                "--memif-dir".into(),
                path(&lab.memif_dir()),
            ],
            log: logs.join("agent.log"),
            pid_file: lab.dir.join("agent.pid"),
            child: None,
            restarts: 0,
        },
    ];
    for d in &mut daemons {
        d.start()?;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        for d in &mut daemons {
            let exited = match d.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                Some(Ok(None)) => None,
                None => Some("not running".into()),
            };
            if let Some(why) = exited {
                d.child = None;
                d.restarts += 1;
                eprintln!(
                    "lab supervisor: {} exited ({why}); restart #{}",
                    d.name, d.restarts
                );
                tokio::time::sleep(RESTART_DELAY).await;
                if let Err(e) = d.start() {
                    eprintln!("lab supervisor: cannot restart {}: {e}", d.name);
                }
            }
        }
    }
    // The agent first, so it does not replay into a stopping dataplane.
    for d in daemons.iter_mut().rev() {
        d.stop().await;
    }
    Ok(())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
