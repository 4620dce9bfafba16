//! Runs the `caracal` CNI plugin exactly as a container runtime does: the
//! command and attachment in `CNI_*` environment variables, the network
//! configuration on stdin, the result or the error JSON on stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// The CNI version the lab asks results in.
pub const CNI_VERSION: &str = "1.0.0";
/// Network name of the lab's configuration.
pub const NETWORK: &str = "caracal-lab";

/// One attachment to operate on.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// Empty on a DEL after the sandbox is gone.
    pub netns: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cannot run {plugin}: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    /// The plugin's own error report (spec error JSON).
    #[error("CNI {command} failed: code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        command: &'static str,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("CNI {command}: unreadable output {output:?}")]
    Output {
        command: &'static str,
        output: String,
    },
}

/// The network configuration the lab hands the plugin.
pub fn network_config(agent_socket: &Path, prev_result: Option<&Value>) -> Value {
    let mut conf = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "caracal",
        "agent_socket": agent_socket,
        "mtu": 1500,
    });
    if let Some(prev) = prev_result {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// Runs one command of the `caracal` plugin in `bin_dir`; returns the
/// parsed stdout (the result for ADD).
pub fn run(
    bin_dir: &Path,
    command: &'static str,
    att: &Attachment<'_>,
    config: &Value,
) -> Result<Value, CniError> {
    run_plugin(&bin_dir.join("caracal"), bin_dir, command, att, config)
}

/// Runs one command of any CNI plugin (`cni_path` is where it finds its
/// delegates, such as an IPAM plugin).
pub fn run_plugin(
    plugin: &Path,
    cni_path: &Path,
    command: &'static str,
    att: &Attachment<'_>,
    config: &Value,
) -> Result<Value, CniError> {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
        att.namespace, att.pod, att.container_id
    );
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", att.container_id)
        .env("CNI_NETNS", att.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni_path)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CniError::Spawn {
            plugin: plugin.display().to_string(),
            source,
        })?;
    let input = serde_json::to_vec(config).expect("JSON value serializes");
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits early closes its stdin; its output says why.
        let _ = stdin.write_all(&input);
    }
    let out = child.wait_with_output().map_err(|source| CniError::Spawn {
        plugin: plugin.display().to_string(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed: Option<Value> = if stdout.trim().is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_str(&stdout).ok()
    };
    match (out.status.success(), parsed) {
        (true, Some(v)) => Ok(v),
        (false, Some(v)) if v.get("code").is_some() => Err(CniError::Plugin {
            command,
            code: v["code"].as_u64().unwrap_or(999),
            msg: v["msg"].as_str().unwrap_or_default().to_owned(),
            details: v["details"].as_str().unwrap_or_default().to_owned(),
        }),
        _ => Err(CniError::Output {
            command,
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        }),
    }
}

/// What the lab keeps of an ADD result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub ips: Vec<String>,
    /// The memif/vhost-user socket of the interface, if it has one.
    pub socket: Option<String>,
}

/// Reads addresses (without prefix length) and the interface's socket
/// from a CNI 1.0.0 result.
pub fn parse_add_result(v: &Value) -> AddResult {
    let ips = v["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str())
                .map(|s| s.split('/').next().unwrap_or(s).to_owned())
                .collect()
        })
        .unwrap_or_default();
    let iface = v["interfaces"].as_array().and_then(|a| a.first());
    let socket = iface
        .and_then(|i| i["socketPath"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    AddResult { ips, socket }
}

/// A fresh 64-hex-digit container id, like a runtime's.
pub fn new_container_id() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_parsing() {
        let v = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/x"}],
            "ips": [{"address": "10.65.0.5/32", "gateway": "169.254.1.1", "interface": 0},
                    {"address": "fd00:65::5/128", "interface": 0}]
        });
        let r = parse_add_result(&v);
        assert_eq!(r.ips, ["10.65.0.5", "fd00:65::5"]);
        assert_eq!(r.socket, None);
        let mut m = v.clone();
        m["interfaces"][0]["socketPath"] = json!("/run/caracal/memif/default-x.sock");
        assert_eq!(
            parse_add_result(&m).socket.as_deref(),
            Some("/run/caracal/memif/default-x.sock")
        );
    }

    #[test]
    fn container_ids_are_unique_hex() {
        let (a, b) = (new_container_id(), new_container_id());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn config_carries_the_agent_socket_and_prev_result() {
        let prev = json!({"ips": []});
        let c = network_config(Path::new("/tmp/a.sock"), Some(&prev));
        assert_eq!(c["type"], "caracal");
        assert_eq!(c["agent_socket"], "/tmp/a.sock");
        assert_eq!(c["prevResult"], prev);
    }
}
