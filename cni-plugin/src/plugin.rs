//! One invocation: check the parameters the command needs, decode the
//! configuration, ask the agent, and produce what goes on stdout.
//!
//! Checks run in the order libcni's `skel` uses, so a runtime sees the same
//! code for the same mistake: the environment (4), the configuration (6, 7,
//! 2), the version against the command (1), then the agent.

use std::future::Future;

use caracal_proto::agent as pb;
use serde_json::{json, Value};

use crate::agent::Agent;
use crate::config::NetConf;
use crate::env::{AttachmentParams, Command, Environment};
use crate::error::{CniError, ErrorCode};
use crate::log::{Logger, LOG_FILE};
use crate::result::{Attached, PrevResult};
use crate::version::CniVersion;

/// A command with the parameters it needs.
enum Request {
    Add(AttachmentParams),
    Del(AttachmentParams),
    Check(AttachmentParams),
    Gc,
    Status,
}

/// Runs `command`; `Ok(Some(json))` is printed on stdout, `Ok(None)` means
/// success with no output (DEL, CHECK, GC, STATUS).
pub fn run(command: Command, env: &Environment, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let request = match command {
        Command::Version => return Ok(Some(version_report(stdin))),
        Command::Add => Request::Add(env.attachment(command)?),
        Command::Del => Request::Del(env.attachment(command)?),
        Command::Check => Request::Check(env.attachment(command)?),
        Command::Gc => {
            env.require(&["CNI_PATH"])?;
            Request::Gc
        }
        Command::Status => Request::Status,
    };
    let conf = NetConf::parse(stdin)?;
    if !command.exists_in(conf.version) {
        return Err(CniError::command_not_in_version(
            command.as_str(),
            conf.version,
        ));
    }
    let tag = match &request {
        Request::Add(a) | Request::Del(a) | Request::Check(a) => {
            format!("{} {}/{}", command.as_str(), a.container_id, a.ifname)
        }
        Request::Gc | Request::Status => command.as_str().to_owned(),
    };
    let log = Logger::open(conf.log_level, LOG_FILE.as_ref(), tag);
    log.debug(format_args!("{conf:?}"));
    let outcome = block_on(async {
        match &request {
            Request::Add(a) => add(a, &conf, &log).await.map(Some),
            Request::Del(a) => del(a, &conf, &log).await.map(|()| None),
            Request::Check(a) => check(a, &conf).await.map(|()| None),
            Request::Gc => gc(&conf, &log).await.map(|()| None),
            Request::Status => status(&conf).await.map(|()| None),
        }
    });
    match &outcome {
        Ok(_) => log.info("done"),
        Err(e) => log.error(format_args!("failed with code {}: {e}", e.code.number())),
    }
    outcome
}

/// VERSION: echoes the input's `cniVersion` (the runtime may be newer than
/// the plugin and still wants the list), or the latest when there is none.
fn version_report(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| !v.is_empty());
    json!({
        "cniVersion": asked.as_deref().unwrap_or(CniVersion::LATEST.as_str()),
        "supportedVersions": CniVersion::supported_strs(),
    })
}

async fn add(a: &AttachmentParams, conf: &NetConf, log: &Logger) -> Result<Value, CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .map(PrevResult::parse)
        .transpose()?;
    let request = cni_request(a, conf, Vec::new());
    let mut agent = connect(Command::Add, conf).await?;
    let attached = match agent.add(request.clone()).await {
        Ok(answer) => Attached::from_agent(answer, &a.ifname),
        // The agent may have finished after we stopped waiting.
        Err(e) if e.is_timeout() => Err(e.into_cni(Command::Add)),
        // The agent failed the ADD and undid it itself.
        Err(e) => return Err(e.into_cni(Command::Add)),
    };
    match attached {
        Ok(attached) => {
            log.info(format_args!("attached {attached:?}"));
            Ok(attached.render(conf.version, conf.dns.as_ref(), prev.as_ref()))
        }
        Err(e) => {
            // A failed ADD leaves nothing behind.
            log.warn(format_args!("undoing the ADD: {e}"));
            if let Err(undo) = agent.del(request).await {
                log.error(format_args!("cannot undo the ADD: {undo}"));
            }
            Err(e)
        }
    }
}

/// DEL is best effort and idempotent: a missing or broken `prevResult` and
/// an attachment the agent does not know are not errors.
async fn del(a: &AttachmentParams, conf: &NetConf, log: &Logger) -> Result<(), CniError> {
    let prev_ips = match conf.prev_result.as_ref().map(PrevResult::parse) {
        Some(Ok(prev)) => prev.addresses_of(&a.ifname),
        Some(Err(e)) => {
            log.warn(format_args!("ignoring prevResult: {e}"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut agent = connect(Command::Del, conf).await?;
    match agent.del(cni_request(a, conf, prev_ips)).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => {
            log.info("nothing to delete");
            Ok(())
        }
        Err(e) => Err(e.into_cni(Command::Del)),
    }
}

/// CHECK compares the agent's state with the `prevResult` the runtime kept.
async fn check(a: &AttachmentParams, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidConfig, "CHECK needs a prevResult"))?;
    let prev = PrevResult::parse(prev)?;
    if !prev.has_interface(&a.ifname) {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!("prevResult has no interface {:?}", a.ifname),
        ));
    }
    let mut agent = connect(Command::Check, conf).await?;
    agent
        .check(cni_request(a, conf, prev.addresses_of(&a.ifname)))
        .await
        .map_err(|e| e.into_cni(Command::Check))
}

async fn gc(conf: &NetConf, log: &Logger) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "GC needs cni.dev/valid-attachments",
        )
    })?;
    let request = pb::GcRequest {
        valid_attachments: valid
            .iter()
            .map(|v| pb::Attachment {
                container_id: v.container_id.clone(),
                ifname: v.ifname.clone(),
            })
            .collect(),
    };
    let mut agent = connect(Command::Gc, conf).await?;
    let answer = agent
        .gc(request)
        .await
        .map_err(|e| e.into_cni(Command::Gc))?;
    for gone in answer.released {
        log.info(format_args!(
            "released stale attachment {}/{}",
            gone.container_id, gone.ifname
        ));
    }
    Ok(())
}

/// STATUS succeeds when the agent says it can serve ADDs. Code 51 (existing
/// pods may have lost connectivity) is never reported: the dataplane
/// forwards on its own while the agent is away, and the agent's answer
/// does not say more.
async fn status(conf: &NetConf) -> Result<(), CniError> {
    let mut agent = connect(Command::Status, conf).await?;
    let answer = agent
        .status()
        .await
        .map_err(|e| e.into_cni(Command::Status))?;
    if answer.ready {
        Ok(())
    } else {
        Err(
            CniError::new(ErrorCode::NotAvailable, "the caracal agent is not ready")
                .with_details(answer.message),
        )
    }
}

/// Dials the agent; failing to is `command`'s error for an absent agent.
async fn connect(command: Command, conf: &NetConf) -> Result<Agent, CniError> {
    Agent::connect(&conf.agent_socket)
        .await
        .map_err(|e| e.into_cni(command))
}

fn cni_request(a: &AttachmentParams, conf: &NetConf, prev_ips: Vec<String>) -> pb::CniRequest {
    pb::CniRequest {
        container_id: a.container_id.clone(),
        netns: a.netns.clone().unwrap_or_default(),
        ifname: a.ifname.clone(),
        pod_namespace: a.pod.namespace.clone(),
        pod_name: a.pod.name.clone(),
        pod_uid: a.pod.uid.clone(),
        network: conf.name.clone(),
        mtu: conf.mtu.unwrap_or(0),
        prev_ips,
    }
}

/// Runs `fut` on a current-thread runtime: one invocation needs no more.
fn block_on<T>(fut: impl Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| {
            CniError::new(ErrorCode::Io, "cannot start the async runtime").with_details(e)
        })?
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_echoes_the_asked_version() {
        for asked in ["0.4.0", "1.1.0", "2.0.0"] {
            let stdin = json!({"cniVersion": asked}).to_string();
            assert_eq!(
                version_report(stdin.as_bytes()),
                json!({
                    "cniVersion": asked,
                    "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
                })
            );
        }
        assert_eq!(version_report(b"")["cniVersion"], "1.1.0");
    }

    #[test]
    fn environment_is_checked_before_the_configuration() {
        let env = Environment::from_pairs([("CNI_COMMAND", "ADD")]);
        let err = run(Command::Add, &env, b"not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn commands_newer_than_the_configuration_are_code_1() {
        let env = Environment::from_pairs([
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let conf = |v: &str| json!({"cniVersion": v, "name": "n", "type": "caracal"}).to_string();
        for (command, version) in [
            (Command::Check, "0.3.1"),
            (Command::Gc, "1.0.0"),
            (Command::Status, "0.4.0"),
        ] {
            let err = run(command, &env, conf(version).as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion, "{command:?}");
            assert_eq!(
                err.msg,
                format!("{} is not defined in CNI {version}", command.as_str())
            );
        }
    }

    #[test]
    fn check_and_gc_need_their_runtime_fields() {
        let env = Environment::from_pairs([
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "caracal",
                          "agent_socket": "/nonexistent/agent.sock"})
        .to_string();
        let err = run(Command::Check, &env, conf.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(err.msg.contains("prevResult"), "{err}");
        let err = run(Command::Gc, &env, conf.as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidConfig);
        assert!(err.msg.contains("valid-attachments"), "{err}");
    }

    #[test]
    fn builds_the_agent_request() {
        let a = AttachmentParams {
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            pod: crate::env::PodArgs {
                namespace: "ns".into(),
                name: "pod".into(),
                infra_container_id: "c1".into(),
                uid: "u".into(),
            },
        };
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.1.0","name":"net","type":"caracal","mtu":1400}"#)
                .unwrap();
        let req = cni_request(&a, &conf, vec!["10.65.0.5/32".into()]);
        assert_eq!(
            req,
            pb::CniRequest {
                container_id: "c1".into(),
                netns: String::new(),
                ifname: "eth0".into(),
                pod_namespace: "ns".into(),
                pod_name: "pod".into(),
                pod_uid: "u".into(),
                network: "net".into(),
                mtu: 1400,
                prev_ips: vec!["10.65.0.5/32".into()],
            }
        );
    }
}
