//! `caracalctl lab …`: the command-line face of [`caracal_control::lab`].

use std::path::PathBuf;

use anyhow::Context as _;
use caracal_control::lab::{self, Lab};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab's state folder (sockets, logs, manifests, lab.json).
    #[arg(long, global = true, value_name = "DIR", env = "CARACAL_LAB_DIR", default_value = lab::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Where caracal-dataplane, caracal-agent and caracal are (default:
    /// next to caracalctl).
    #[arg(long, global = true, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Start the daemons and create every pod of the manifests under DIR.
    Up {
        /// Folder (or file) of Kubernetes YAML manifests.
        dir: PathBuf,
    },
    /// Add or change objects (kubectl apply).
    Apply {
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        file: PathBuf,
    },
    /// Remove objects (kubectl delete).
    Delete {
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        file: PathBuf,
    },
    /// Pods and services of the running lab.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ping every pod from every tap pod and print the matrix (a memif pod
    /// only while its application is connected).
    Probe {
        #[arg(long)]
        json: bool,
    },
    /// Remove everything the lab made. Safe to run twice.
    Down,
    /// Run the daemons and restart them when they die (started by `up`).
    #[command(hide = true)]
    Supervise,
}

pub fn run(args: LabArgs) -> anyhow::Result<()> {
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .context("locating caracalctl")?
            .parent()
            .map(PathBuf::from)
            .context("caracalctl has no parent folder")?,
    };
    let state_dir = std::path::absolute(&args.state_dir)?;
    let lab = Lab::new(state_dir, std::path::absolute(bin_dir)?);
    let mut out = std::io::stdout();
    match args.command {
        LabCommand::Up { dir } => lab.up(&std::path::absolute(dir)?, &mut out),
        LabCommand::Apply { file } => lab.apply(&file, &mut out),
        LabCommand::Delete { file } => lab.delete(&file, &mut out),
        LabCommand::Status { json } => {
            let st = lab.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!("NAMESPACE            NAME                 INTERFACE  IPS");
                for p in &st.pods {
                    println!(
                        "{:<20} {:<20} {:<10} {}",
                        p.namespace,
                        p.name,
                        p.interface,
                        p.ips.join(",")
                    );
                }
                for s in &st.services {
                    println!(
                        "service {}/{}: {}",
                        s.namespace,
                        s.name,
                        s.cluster_ips.join(",")
                    );
                }
            }
            Ok(())
        }
        LabCommand::Probe { json } => {
            let report = lab.probe()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        LabCommand::Down => lab.down(&mut out),
        LabCommand::Supervise => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(lab::supervisor::run(&lab)),
    }
}
