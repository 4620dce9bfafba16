//! The protocol parameters the runtime passes in `CNI_*` environment
//! variables (SPEC §2 "Parameters"): which command, which attachment, and
//! the Kubernetes pod named in `CNI_ARGS`. Each command requires its own
//! set; a missing or malformed one is error 4, naming the variable.

use std::collections::BTreeMap;

use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

/// A CNI operation, from `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether the command is defined in `version`: CHECK came with 0.4.0,
    /// STATUS and GC with 1.1.0.
    pub fn exists_in(self, version: CniVersion) -> bool {
        match self {
            Command::Check => version >= CniVersion::V0_4_0,
            Command::Status | Command::Gc => version >= CniVersion::V1_1_0,
            Command::Add | Command::Del | Command::Version => true,
        }
    }
}

/// The `CNI_*` variables of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// Reads the process environment. A `CNI_*` value that is not UTF-8 is
    /// error 4.
    pub fn from_process() -> Result<Environment, CniError> {
        let mut vars = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("CNI_")) else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("{name} is not valid UTF-8"),
                )
            })?;
            vars.insert(name.to_owned(), value);
        }
        Ok(Environment { vars })
    }

    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// A variable's value; set-but-empty counts as unset, as runtimes pass
    /// `CNI_NETNS=` on a DEL after the sandbox is gone.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `CNI_COMMAND`.
    pub fn command(&self) -> Result<Command, CniError> {
        let raw = self.get("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                "required environment variables missing: CNI_COMMAND",
            )
        })?;
        Command::parse(raw).ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_COMMAND {raw:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
            )
        })
    }

    /// The attachment parameters of ADD, DEL or CHECK. `CNI_NETNS` is
    /// required except on DEL.
    pub fn attachment(&self, command: Command) -> Result<AttachmentParams, CniError> {
        let mut required = vec!["CNI_CONTAINERID", "CNI_IFNAME"];
        if command != Command::Del {
            required.insert(1, "CNI_NETNS");
        }
        self.require(&required)?;
        let container_id = self.get("CNI_CONTAINERID").unwrap_or_default();
        if !is_cni_identifier(container_id) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID {container_id:?} is invalid: it must start with a letter \
                     or digit, followed by letters, digits, '_', '.' or '-'"
                ),
            ));
        }
        let ifname = self.get("CNI_IFNAME").unwrap_or_default();
        if let Err(why) = check_ifname(ifname) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_IFNAME {ifname:?} is invalid: {why}"),
            ));
        }
        Ok(AttachmentParams {
            container_id: container_id.to_owned(),
            netns: self.get("CNI_NETNS").map(str::to_owned),
            ifname: ifname.to_owned(),
            pod: PodArgs::parse(self.get("CNI_ARGS").unwrap_or_default())?,
        })
    }

    /// Fails with error 4 naming every variable in `names` that is unset.
    pub fn require(&self, names: &[&str]) -> Result<(), CniError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.get(n).is_none())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "required environment variables missing: {}",
                    missing.join(", ")
                ),
            ))
        }
    }
}

/// The runtime's per-attachment parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentParams {
    pub container_id: String,
    /// `None` on a DEL after the sandbox is gone.
    pub netns: Option<String>,
    pub ifname: String,
    pub pod: PodArgs,
}

/// The Kubernetes keys of `CNI_ARGS`; empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    pub infra_container_id: String,
    pub uid: String,
}

impl PodArgs {
    /// Parses `KEY=VALUE;KEY=VALUE`. Keys other than the Kubernetes ones
    /// are an error unless `IgnoreUnknown` is `1` or `true`, the convention
    /// every CNI runtime follows.
    pub fn parse(cni_args: &str) -> Result<PodArgs, CniError> {
        let invalid = |msg: String| CniError::new(ErrorCode::InvalidEnvironment, msg);
        let mut pod = PodArgs::default();
        let mut ignore_unknown = false;
        let mut unknown = Vec::new();
        for pair in cni_args.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")))?;
            match key {
                "K8S_POD_NAMESPACE" => pod.namespace = value.to_owned(),
                "K8S_POD_NAME" => pod.name = value.to_owned(),
                "K8S_POD_INFRA_CONTAINER_ID" => pod.infra_container_id = value.to_owned(),
                "K8S_POD_UID" => pod.uid = value.to_owned(),
                "IgnoreUnknown" => {
                    ignore_unknown = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(invalid(format!(
                                "CNI_ARGS: IgnoreUnknown={value:?} is not a boolean"
                            )))
                        }
                    }
                }
                _ => unknown.push(key),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(invalid(format!(
                "CNI_ARGS: unknown keys {} (pass IgnoreUnknown=1 to ignore them)",
                unknown.join(", ")
            )));
        }
        Ok(pod)
    }
}

/// The spec's rule for container ids and network names: a letter or digit,
/// then letters, digits, `_`, `.` or `-`.
pub fn is_cni_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface name rules: 1–15 bytes (`IFNAMSIZ` is 16 with the NUL),
/// not `.` or `..`, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    const IFNAMSIZ: usize = 16;
    if name.len() >= IFNAMSIZ {
        Err("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Err("'.' and '..' are not interface names")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Err("contains '/', ':' or whitespace")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_env(command: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                 K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b1e;FOO=bar",
            ),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    #[test]
    fn parses_commands() {
        for c in ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] {
            assert_eq!(Command::parse(c).unwrap().as_str(), c);
        }
        assert_eq!(Command::parse("add"), None);
        let env = Environment::from_pairs([("CNI_COMMAND", "FROB")]);
        let err = env.command().unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_COMMAND"), "{err}");
        let err = Environment::default().command().unwrap_err();
        assert!(err.msg.contains("CNI_COMMAND"), "{err}");
    }

    #[test]
    fn commands_exist_from_their_spec_version() {
        assert!(!Command::Check.exists_in(CniVersion::V0_3_1));
        assert!(Command::Check.exists_in(CniVersion::V0_4_0));
        assert!(!Command::Gc.exists_in(CniVersion::V1_0_0));
        assert!(!Command::Status.exists_in(CniVersion::V1_0_0));
        assert!(Command::Status.exists_in(CniVersion::V1_1_0));
        assert!(Command::Add.exists_in(CniVersion::V0_3_0));
    }

    #[test]
    fn reads_an_attachment() {
        let env = Environment::from_pairs(full_env("ADD"));
        let a = env.attachment(Command::Add).unwrap();
        assert_eq!(
            a,
            AttachmentParams {
                container_id: "abc123".into(),
                netns: Some("/var/run/netns/cni-1".into()),
                ifname: "eth0".into(),
                pod: PodArgs {
                    namespace: "default".into(),
                    name: "web-0".into(),
                    infra_container_id: "abc123".into(),
                    uid: "0b1e".into(),
                },
            }
        );
    }

    #[test]
    fn del_tolerates_an_empty_netns_but_add_does_not() {
        let mut pairs = full_env("DEL");
        pairs[2].1 = "";
        let env = Environment::from_pairs(pairs);
        assert_eq!(env.attachment(Command::Del).unwrap().netns, None);
        let err = env.attachment(Command::Add).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("CNI_NETNS"), "{err}");
    }

    #[test]
    fn names_every_missing_variable() {
        let env = Environment::from_pairs([("CNI_COMMAND", "CHECK")]);
        let err = env.attachment(Command::Check).unwrap_err();
        assert_eq!(
            err.msg,
            "required environment variables missing: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME"
        );
    }

    #[test]
    fn validates_container_ids_and_ifnames() {
        for (id, ok) in [
            ("a", true),
            ("0abc_d.e-f", true),
            ("-abc", false),
            ("_abc", false),
            ("ab/c", false),
            ("ab c", false),
        ] {
            assert_eq!(is_cni_identifier(id), ok, "{id:?}");
        }
        for (name, ok) in [
            ("eth0", true),
            ("a23456789012345", true),
            ("a234567890123456", false),
            (".", false),
            ("..", false),
            ("et/h0", false),
            ("eth:0", false),
            ("eth 0", false),
        ] {
            assert_eq!(check_ifname(name).is_ok(), ok, "{name:?}");
        }
        let mut pairs = full_env("ADD");
        pairs[1].1 = "-bad";
        let err = Environment::from_pairs(pairs)
            .attachment(Command::Add)
            .unwrap_err();
        assert!(err.msg.starts_with("CNI_CONTAINERID"), "{err}");
        let mut pairs = full_env("ADD");
        pairs[3].1 = "eth0:1";
        let err = Environment::from_pairs(pairs)
            .attachment(Command::Add)
            .unwrap_err();
        assert!(err.msg.starts_with("CNI_IFNAME"), "{err}");
    }

    #[test]
    fn cni_args_reject_unknown_keys_unless_told_to_ignore_them() {
        assert_eq!(PodArgs::parse("").unwrap(), PodArgs::default());
        assert_eq!(
            PodArgs::parse("K8S_POD_NAME=x;;").unwrap().name,
            "x",
            "empty pairs are skipped"
        );
        let err = PodArgs::parse("K8S_POD_NAME=x;FOO=1;BAR=2").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.msg.contains("FOO, BAR"), "{err}");
        assert!(PodArgs::parse("FOO=1;IgnoreUnknown=true").is_ok());
        assert!(PodArgs::parse("IgnoreUnknown=TRUE;FOO=1").is_ok());
        assert!(PodArgs::parse("IgnoreUnknown=0;FOO=1").is_err());
        assert!(PodArgs::parse("IgnoreUnknown=maybe").is_err());
        let err = PodArgs::parse("K8S_POD_NAME").unwrap_err();
        assert!(err.msg.contains("KEY=VALUE"), "{err}");
        assert_eq!(
            PodArgs::parse("K8S_POD_NAME=a=b").unwrap().name,
            "a=b",
            "values may contain '='"
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Environment::from_pairs([("CNI_PATH", "")]);
        assert_eq!(env.get("CNI_PATH"), None);
        assert!(env.require(&["CNI_PATH"]).is_err());
    }
}
