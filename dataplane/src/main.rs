//! `caracal-dataplane`: the dataplane daemon.
//!
//! Starts the engine (buffer pool and workers), creates the interfaces
//! the configuration file declares, serves the gRPC API on a
//! unix socket, and on SIGTERM or SIGINT stops serving, shuts the engine
//! down (which removes the interfaces it made), removes the socket and
//! exits 0.
//!
//! ```text
//! caracal-dataplane [--config FILE] [--socket PATH] [--workers LIST]
//!                   [--mode poll|adaptive] [--buffers N] [--no-hugepages]
//! ```

mod daemon_config;

use std::future::Future;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use caracal_dataplane::config::WorkerList;
use caracal_dataplane::{api, Engine, WorkerMode};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use daemon_config::{DaemonConfig, InterfaceConfig, DEFAULT_SOCKET};

#[derive(Debug, Parser)]
#[command(
    name = "caracal-dataplane",
    version,
    about = "Caracal's userspace packet processor"
)]
struct Cli {
    /// TOML configuration file; the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    // Not a clap default: a default would hide the file's `socket`.
    #[arg(
        long,
        value_name = "PATH",
        help = format!("Unix socket for the gRPC API [default: {DEFAULT_SOCKET}]")
    )]
    socket: Option<PathBuf>,

    /// Workers: a count of unpinned workers (`4`), or the CPUs to pin one
    /// worker each to (`2,3`, `2-5,8`; a single pinned worker is `3-3`).
    #[arg(long, value_name = "LIST")]
    workers: Option<WorkerList>,

    /// How workers wait for packets.
    #[arg(long, value_enum)]
    mode: Option<WorkerMode>,

    /// Packet buffers in the pool.
    #[arg(long, value_name = "N")]
    buffers: Option<u32>,

    /// Back the buffer pool with ordinary pages even where hugepages are
    /// available.
    #[arg(long)]
    no_hugepages: bool,

    /// Capacity of the flow table (conntrack), flows.
    #[arg(long, value_name = "N")]
    flows: Option<u32>,
}

impl Cli {
    /// The configuration file's settings (or the defaults), with the
    /// flags given on the command line applied over them.
    fn daemon_config(&self) -> anyhow::Result<DaemonConfig> {
        let mut config = match &self.config {
            Some(path) => DaemonConfig::load(path)?,
            None => DaemonConfig::default(),
        };
        if let Some(socket) = &self.socket {
            config.socket.clone_from(socket);
        }
        if let Some(workers) = &self.workers {
            config.engine.workers.clone_from(&workers.0);
        }
        if let Some(mode) = self.mode {
            config.engine.mode = mode;
        }
        if let Some(buffers) = self.buffers {
            config.engine.buffers = buffers;
        }
        if self.no_hugepages {
            config.engine.hugepages = false;
        }
        if let Some(flows) = self.flows {
            config.engine.flows = flows;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = cli.daemon_config()?;
    // The API is the slow path: one thread serves it, and engine calls
    // run on the blocking pool, so the daemon's own threads stay few and
    // out of the workers' way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("creating the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    // Take over SIGTERM and SIGINT before there is anything to clean up,
    // so that a signal during start-up still gets a clean shutdown.
    let shutdown = shutdown_signal()?;

    let engine_config = config.engine.clone();
    info!(
        workers = ?engine_config.workers,
        mode = ?engine_config.mode,
        buffers = engine_config.buffers,
        hugepages = engine_config.hugepages,
        "starting the engine"
    );
    let engine = tokio::task::spawn_blocking(move || Engine::start(&engine_config))
        .await
        .context("starting the engine")?
        .context("starting the engine")?;

    let created = {
        let (engine, interfaces) = (Arc::clone(&engine), config.interfaces.clone());
        tokio::task::spawn_blocking(move || create_interfaces(&engine, &interfaces))
            .await
            .context("creating the configured interfaces")
            .and_then(|r| r)
    };
    if let Err(e) = created {
        let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        return Err(e);
    }

    let served = api::serve(Arc::clone(&engine), &config.socket, shutdown).await;

    info!("stopping the workers and removing the interfaces");
    let stopped = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    served?;
    stopped.context("shutting the engine down")?;
    info!("stopped");
    Ok(())
}

/// Creates the configuration file's `[[interfaces]]`, in order, as the
/// API would (same validation, same defaults).
fn create_interfaces(engine: &Engine, interfaces: &[InterfaceConfig]) -> anyhow::Result<()> {
    for i in interfaces {
        let what = || format!("config: interface {:?}", i.name);
        let spec = api::convert::interface_spec_from_proto(Some(i.to_proto()?))
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .with_context(what)?;
        engine.add_interface(spec).with_context(what)?;
    }
    Ok(())
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("caracal-dataplane").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_is_the_defaults() {
        assert_eq!(parse(&[]).daemon_config().unwrap(), DaemonConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let path = std::env::temp_dir().join(format!("caracal-cli-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "socket = \"/from/file.sock\"\n[engine]\nworkers = 4\nmode = \"poll\"\nbuffers = 2048\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();

        let from_file = parse(&["--config", file]).daemon_config().unwrap();
        assert_eq!(from_file.socket, PathBuf::from("/from/file.sock"));
        assert_eq!(from_file.engine.workers, vec![None; 4]);
        assert_eq!(from_file.engine.mode, WorkerMode::Poll);
        assert!(from_file.engine.hugepages);

        let overridden = parse(&[
            "--config",
            file,
            "--socket",
            "/flag.sock",
            "--workers",
            "2-3",
            "--mode",
            "adaptive",
            "--buffers",
            "4096",
            "--no-hugepages",
        ])
        .daemon_config()
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(overridden.socket, PathBuf::from("/flag.sock"));
        assert_eq!(overridden.engine.workers, vec![Some(2), Some(3)]);
        assert_eq!(overridden.engine.mode, WorkerMode::Adaptive);
        assert_eq!(overridden.engine.buffers, 4096);
        assert!(!overridden.engine.hugepages);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let argv = ["caracal-dataplane", "--workers", "1,1"];
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("CPU 1 is listed twice"), "{err}");
        let argv = ["caracal-dataplane", "--mode", "turbo"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
