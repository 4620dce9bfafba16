//! `caracal`, the Caracal CNI plugin.
//!
//! A container runtime runs it once per operation, as the CNI
//! specification (1.1.0; also 1.0.0, 0.4.0, 0.3.1 and 0.3.0) describes: the
//! command and attachment in `CNI_*` environment variables, the network
//! configuration as JSON on stdin, the result (or the spec's error object)
//! as JSON on stdout, exit status 0 on success and 1 on failure.
//!
//! The plugin itself is thin: it validates what the runtime passed and
//! forwards each command to the node agent's `Cni` gRPC service on a unix
//! socket, which allocates addresses, creates the pod interface (tap, memif
//! or vhost-user) and keeps the books. See [`config`] for the configuration
//! keys, [`result`] for the result formats and [`agent`] for how the agent's
//! failures become error codes.

#![forbid(unsafe_code)]

mod agent;
mod config;
mod env;
mod error;
mod log;
mod plugin;
mod result;
mod version;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::Value;

use crate::env::Environment;
use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

fn main() -> ExitCode {
    // The command is read before stdin so that running the binary by hand
    // explains itself instead of waiting for input.
    let command = Environment::from_process().and_then(|env| Ok((env.command()?, env)));
    let (command, env) = match command {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!(
                "caracal: the Caracal CNI plugin (CNI {}); a container runtime runs it \
                 with CNI_COMMAND set",
                CniVersion::supported_strs().join(", ")
            );
            return fail(&e, CniVersion::LATEST);
        }
    };
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let e = CniError::new(
            ErrorCode::Io,
            "cannot read the network configuration from stdin",
        )
        .with_details(e);
        return fail(&e, CniVersion::LATEST);
    }
    let version = config::requested_version(&stdin).unwrap_or(CniVersion::LATEST);
    match plugin::run(command, &env, &stdin) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(output)) => match print(&output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let e = CniError::new(ErrorCode::Io, "cannot write the result").with_details(e);
                fail(&e, version)
            }
        },
        Err(e) => fail(&e, version),
    }
}

/// Prints the error object on stdout for the runtime, and the same in one
/// line on stderr for people.
fn fail(e: &CniError, version: CniVersion) -> ExitCode {
    let _ = print(&e.to_json(version.as_str()));
    eprintln!("caracal: error {}: {e}", e.code.number());
    ExitCode::FAILURE
}

fn print(v: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()
}
