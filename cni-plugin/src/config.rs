//! The network configuration the runtime streams on stdin (SPEC §1 and §3
//! "Deriving request configuration"), decoded and validated.
//!
//! Fields the plugin reads:
//!
//! | key | | |
//! |---|---|---|
//! | `cniVersion` | required | the version to answer in; see [`CniVersion`] |
//! | `name` | required | network name, sent to the agent |
//! | `type` | required | the binary name (`caracal`) |
//! | `mtu` | optional | pod interface MTU in bytes; absent or 0 = agent default |
//! | `agent_socket` | optional | absolute path of the agent's API socket, default [`DEFAULT_AGENT_SOCKET`] |
//! | `log_level` | optional | `error`/`warn`/`info`/`debug`: log to [`crate::log::LOG_FILE`] |
//! | `dns` | optional | copied into the ADD result |
//! | `prevResult` | runtime | the previous result, on CHECK, DEL and chained ADD |
//! | `cni.dev/valid-attachments` | runtime | on GC, the attachments still in use |
//!
//! Other keys (`cniVersions`, `runtimeConfig`, `args`, ...) are ignored, with
//! one exception: `ipam` is refused (error 2), because the agent allocates
//! addresses and a delegated IPAM plugin would silently not run.
//!
//! Input that is not JSON, or a field of the wrong JSON type, is error 6;
//! JSON that decodes but breaks a rule is error 7; an unsupported
//! `cniVersion` is error 1.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::env::is_cni_identifier;
use crate::error::{CniError, ErrorCode};
use crate::log::LogLevel;
use crate::result::Dns;
use crate::version::CniVersion;

/// Where `caracal-agent` serves its API unless `agent_socket` says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/caracal/agent.sock";

/// MTU bounds in bytes: the IPv4 minimum (RFC 791, §3.2: every host must
/// take 68-octet datagrams) up to the largest IP packet.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub version: CniVersion,
    pub name: String,
    pub plugin_type: String,
    /// Bytes; `None` lets the agent choose.
    pub mtu: Option<u32>,
    pub agent_socket: PathBuf,
    pub log_level: Option<LogLevel>,
    pub dns: Option<Dns>,
    /// Decoded lazily by each command: DEL tolerates a broken one, CHECK
    /// does not.
    pub prev_result: Option<Value>,
    /// `None` when the key is absent, which GC refuses rather than reading
    /// it as "nothing is valid" and releasing every attachment.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The configuration as decoded, before validation: everything optional so
/// that a missing field is error 7 rather than a decode error.
#[derive(Deserialize)]
struct RawConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    mtu: Option<u32>,
    agent_socket: Option<String>,
    log_level: Option<String>,
    dns: Option<Dns>,
    ipam: Option<Value>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    // The key was spelt `cni.dev/attachments` in the spec-v1.1.0 tag and
    // corrected afterwards; runtimes send the corrected name.
    #[serde(rename = "cni.dev/valid-attachments", alias = "cni.dev/attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: RawConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(ErrorCode::Decode, "cannot decode the network configuration")
                .with_details(e)
        })?;
        let invalid = |msg: String| CniError::new(ErrorCode::InvalidConfig, msg);

        let version = match raw.cni_version.as_deref() {
            None | Some("") => return Err(invalid("cniVersion is missing".into())),
            Some(v) => CniVersion::parse(v).ok_or_else(|| {
                CniError::new(
                    ErrorCode::IncompatibleVersion,
                    format!("cniVersion {v:?} is not supported"),
                )
                .with_details(format!(
                    "supported versions: {}",
                    CniVersion::supported_strs().join(", ")
                ))
            })?,
        };
        let name = match raw.name {
            None => return Err(invalid("name is missing".into())),
            Some(n) if !is_cni_identifier(&n) => {
                return Err(invalid(format!(
                    "name {n:?} is invalid: it must start with a letter or digit, \
                     followed by letters, digits, '_', '.' or '-'"
                )))
            }
            Some(n) => n,
        };
        let plugin_type = raw
            .plugin_type
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("type is missing".into()))?;
        if let Some(ipam) = raw.ipam {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                format!("unsupported field ipam={ipam}"),
            )
            .with_details("the caracal agent allocates pod addresses; remove the ipam section"));
        }
        let mtu = match raw.mtu {
            None | Some(0) => None,
            Some(m) if MTU_RANGE.contains(&m) => Some(m),
            Some(m) => {
                return Err(invalid(format!(
                    "mtu {m} is outside {}..={}",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                )))
            }
        };
        let agent_socket = PathBuf::from(
            raw.agent_socket
                .unwrap_or_else(|| DEFAULT_AGENT_SOCKET.to_owned()),
        );
        if !agent_socket.is_absolute() {
            return Err(invalid(format!(
                "agent_socket {:?} is not an absolute path",
                agent_socket.display()
            )));
        }
        let log_level = raw
            .log_level
            .map(|l| {
                LogLevel::parse(&l).ok_or_else(|| {
                    invalid(format!(
                        "log_level {l:?} is not one of error, warn, info, debug"
                    ))
                })
            })
            .transpose()?;

        Ok(NetConf {
            version,
            name,
            plugin_type,
            mtu,
            agent_socket,
            log_level,
            dns: raw.dns,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }
}

/// The `cniVersion` the input asks for, if it is JSON naming a supported
/// version: the version to stamp on an error result.
pub fn requested_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    CniVersion::parse(v.get("cniVersion")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "caracal"}))
            .unwrap();
        assert_eq!(
            c,
            NetConf {
                version: CniVersion::V1_0_0,
                name: "k8s-pod-network".into(),
                plugin_type: "caracal".into(),
                mtu: None,
                agent_socket: DEFAULT_AGENT_SOCKET.into(),
                log_level: None,
                dns: None,
                prev_result: None,
                valid_attachments: None,
            }
        );
    }

    #[test]
    fn reads_every_field() {
        let c = parse(json!({
            "cniVersion": "1.1.0",
            "cniVersions": ["1.0.0", "1.1.0"],
            "name": "net",
            "type": "caracal",
            "mtu": 1450,
            "agent_socket": "/tmp/a.sock",
            "log_level": "debug",
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "runtimeConfig": {"portMappings": []},
            "prevResult": {"cniVersion": "1.1.0", "ips": []},
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
        }))
        .unwrap();
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.log_level, Some(LogLevel::Debug));
        assert_eq!(c.dns.unwrap().nameservers, ["10.96.0.10"]);
        assert_eq!(c.prev_result.unwrap()["ips"], json!([]));
        assert_eq!(
            c.valid_attachments.unwrap(),
            [ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn accepts_the_attachments_key_as_first_published() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "caracal",
            "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}],
        }))
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
    }

    #[test]
    fn an_mtu_of_zero_means_the_agent_default() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "caracal", "mtu": 0}));
        assert_eq!(c.unwrap().mtu, None);
    }

    #[test]
    fn codes_for_bad_input() {
        let code = |stdin: &[u8]| NetConf::parse(stdin).unwrap_err().code;
        assert_eq!(code(b""), ErrorCode::Decode);
        assert_eq!(code(b"{not json"), ErrorCode::Decode);
        assert_eq!(code(b"[]"), ErrorCode::Decode);
        let code = |v: Value| parse(v).unwrap_err();
        let base = json!({"cniVersion": "1.1.0", "name": "n", "type": "caracal"});
        let with = |k: &str, val: Value| {
            let mut c = base.clone();
            c[k] = val;
            c
        };
        let without = |k: &str| {
            let mut c = base.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        for (conf, want, needle) in [
            (with("mtu", json!("big")), ErrorCode::Decode, ""),
            (with("mtu", json!(-1)), ErrorCode::Decode, ""),
            (with("name", json!(7)), ErrorCode::Decode, ""),
            (
                without("cniVersion"),
                ErrorCode::InvalidConfig,
                "cniVersion",
            ),
            (
                with("cniVersion", json!("")),
                ErrorCode::InvalidConfig,
                "cniVersion",
            ),
            (without("name"), ErrorCode::InvalidConfig, "name"),
            (
                with("name", json!("-net")),
                ErrorCode::InvalidConfig,
                "name",
            ),
            (without("type"), ErrorCode::InvalidConfig, "type"),
            (with("mtu", json!(67)), ErrorCode::InvalidConfig, "mtu"),
            (with("mtu", json!(65536)), ErrorCode::InvalidConfig, "mtu"),
            (
                with("agent_socket", json!("run/a.sock")),
                ErrorCode::InvalidConfig,
                "agent_socket",
            ),
            (
                with("log_level", json!("loud")),
                ErrorCode::InvalidConfig,
                "log_level",
            ),
            (
                with("cniVersion", json!("0.2.0")),
                ErrorCode::IncompatibleVersion,
                "0.2.0",
            ),
            (
                with("cniVersion", json!("1.2.0")),
                ErrorCode::IncompatibleVersion,
                "1.2.0",
            ),
            (
                with("ipam", json!({"type": "host-local"})),
                ErrorCode::UnsupportedField,
                r#"ipam={"type":"host-local"}"#,
            ),
        ] {
            let err = code(conf.clone());
            assert_eq!(err.code, want, "{conf}: {err}");
            assert!(err.msg.contains(needle), "{conf}: {err}");
        }
    }

    #[test]
    fn requested_version_reads_only_supported_versions() {
        assert_eq!(
            requested_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(CniVersion::V0_4_0)
        );
        assert_eq!(requested_version(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(requested_version(b"junk"), None);
    }
}
