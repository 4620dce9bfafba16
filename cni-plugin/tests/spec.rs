//! Runs the real `caracal` binary the way the CNI specification's execution
//! protocol says a runtime does (SPEC §2–§3): parameters in `CNI_*`
//! variables, the configuration on stdin, the result or error object on
//! stdout, the exit status. Behind it, a fake agent on a scratch socket
//! records what the plugin asked.

mod fake_agent;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use caracal_proto::agent as pb;
use fake_agent::{scratch_socket, Call, FakeAgent, POD_IPS, POD_MAC};
use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_caracal");
const NETNS: &str = "/var/run/netns/cni-spec-test";
const NETWORK: &str = "caracal-test";
const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// What the plugin did: exit status and both output streams.
#[derive(Debug)]
struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Success with a JSON document on stdout (ADD, VERSION).
    fn output(&self) -> Value {
        assert!(self.success, "plugin failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Success with nothing on stdout (DEL, CHECK, GC, STATUS).
    fn silent(&self) {
        assert!(self.success, "plugin failed: {self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
    }

    /// Failure with the spec's error object on stdout; returns it.
    fn error(&self) -> Value {
        assert!(!self.success, "plugin succeeded: {self:?}");
        let v: Value =
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"));
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["cniVersion", "code", "details", "msg"], "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(self.stderr.contains("caracal: error"), "{self:?}");
        v
    }

    fn error_code(&self) -> u64 {
        self.error()["code"].as_u64().unwrap()
    }
}

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
fn invoke(env: &[(String, String)], stdin: &[u8]) -> Outcome {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A plugin that fails early may not read its stdin.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The variables a kubelet-driven runtime sets for one attachment.
fn attachment_env(command: &str, container: &str, netns: &str, pod: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", container.to_owned()),
        ("CNI_NETNS", netns.to_owned()),
        ("CNI_IFNAME", "eth0".to_owned()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};\
                 K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{pod}"
            ),
        ),
        ("CNI_PATH", "/opt/cni/bin".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec()
}

/// Just `CNI_COMMAND` and `CNI_PATH`, as for GC, STATUS and VERSION.
fn network_env(command: &str) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_PATH".into(), "/opt/cni/bin".into()),
    ]
}

fn without(mut env: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != name);
    env
}

fn conf(version: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": NETWORK,
        "type": "caracal",
        "mtu": 1450,
        "agent_socket": socket,
    })
}

fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf[key] = value;
    conf
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn routes() -> Value {
    json!([
        {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
        {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}
    ])
}

/// The ADD result for a tap pod, field by field, in `version`'s format.
fn tap_result(version: &str) -> Value {
    if version.starts_with("0.") {
        json!({
            "cniVersion": version,
            "interfaces": [{"name": "eth0", "mac": POD_MAC, "sandbox": NETNS}],
            "ips": [
                {"version": "4", "address": POD_IPS[0], "interface": 0},
                {"version": "6", "address": POD_IPS[1], "interface": 0}
            ],
            "routes": routes(),
            "dns": {},
        })
    } else {
        json!({
            "cniVersion": version,
            "interfaces": [{"name": "eth0", "mac": POD_MAC, "mtu": 1450, "sandbox": NETNS}],
            "ips": [
                {"address": POD_IPS[0], "interface": 0},
                {"address": POD_IPS[1], "interface": 0}
            ],
            "routes": routes(),
            "dns": {},
        })
    }
}

fn request(container: &str, netns: &str, pod: &str, prev_ips: &[&str]) -> pb::CniRequest {
    pb::CniRequest {
        container_id: container.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: pod.into(),
        pod_uid: format!("uid-{pod}"),
        network: NETWORK.into(),
        mtu: 1450,
        prev_ips: prev_ips.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn add_check_del_del() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);

    let result = invoke(&attachment_env("ADD", "c1", NETNS, "web-0"), &bytes(&conf)).output();
    assert_eq!(result, tap_result("1.1.0"));

    let with_prev = with(conf.clone(), "prevResult", result.clone());
    invoke(
        &attachment_env("CHECK", "c1", NETNS, "web-0"),
        &bytes(&with_prev),
    )
    .silent();
    invoke(
        &attachment_env("DEL", "c1", NETNS, "web-0"),
        &bytes(&with_prev),
    )
    .silent();
    // The runtime's second DEL: the sandbox is gone and the result forgotten.
    invoke(&attachment_env("DEL", "c1", "", "web-0"), &bytes(&conf)).silent();

    assert_eq!(
        agent.calls(),
        [
            Call::Add(request("c1", NETNS, "web-0", &[])),
            Call::Check(request("c1", NETNS, "web-0", &POD_IPS)),
            Call::Del(request("c1", NETNS, "web-0", &POD_IPS)),
            Call::Del(request("c1", "", "web-0", &[])),
        ]
    );
    assert!(agent.attachments().is_empty());
}

#[test]
fn del_without_a_prior_add_succeeds() {
    let agent = FakeAgent::start();
    let conf = conf("1.0.0", &agent.socket);
    invoke(
        &attachment_env("DEL", "never-added", "", "web-0"),
        &bytes(&conf),
    )
    .silent();
}

#[test]
fn del_ignores_a_broken_prev_result() {
    let agent = FakeAgent::start();
    let conf = with(
        conf("1.1.0", &agent.socket),
        "prevResult",
        json!({"ips": 7}),
    );
    invoke(&attachment_env("DEL", "c1", NETNS, "web-0"), &bytes(&conf)).silent();
    assert_eq!(
        agent.calls(),
        [Call::Del(request("c1", NETNS, "web-0", &[]))]
    );
}

#[test]
fn check_after_del_is_container_unknown() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);
    let result = invoke(&attachment_env("ADD", "c1", NETNS, "web-0"), &bytes(&conf)).output();
    invoke(&attachment_env("DEL", "c1", NETNS, "web-0"), &bytes(&conf)).silent();
    let with_prev = with(conf, "prevResult", result);
    let check = invoke(
        &attachment_env("CHECK", "c1", NETNS, "web-0"),
        &bytes(&with_prev),
    );
    assert_eq!(check.error_code(), 3);
}

#[test]
fn check_needs_a_prev_result_naming_the_interface() {
    let agent = FakeAgent::start();
    let conf = conf("0.4.0", &agent.socket);
    let env = attachment_env("CHECK", "c1", NETNS, "web-0");
    assert_eq!(invoke(&env, &bytes(&conf)).error_code(), 7);
    let other = with(
        conf.clone(),
        "prevResult",
        json!({"cniVersion": "0.4.0", "interfaces": [{"name": "net1"}], "ips": []}),
    );
    assert_eq!(invoke(&env, &bytes(&other)).error_code(), 7);
    let garbled = with(conf, "prevResult", json!({"interfaces": "eth0"}));
    assert_eq!(invoke(&env, &bytes(&garbled)).error_code(), 6);
    assert!(agent.calls().is_empty());
}

#[test]
fn each_version_gets_its_own_result_format() {
    let agent = FakeAgent::start();
    for (n, version) in SUPPORTED.into_iter().enumerate() {
        let container = format!("c{n}");
        let env = attachment_env("ADD", &container, NETNS, "web-0");
        let conf = conf(version, &agent.socket);
        let result = invoke(&env, &bytes(&conf)).output();
        assert_eq!(result, tap_result(version), "{version}");

        // CHECK exists from 0.4.0 and reads the result back in its format.
        let check_env = attachment_env("CHECK", &container, NETNS, "web-0");
        let check = invoke(&check_env, &bytes(&with(conf, "prevResult", result)));
        if version < "0.4.0" {
            let err = check.error();
            assert_eq!(err["code"], 1, "{version}");
            assert_eq!(err["cniVersion"], version);
        } else {
            check.silent();
        }
    }
}

#[test]
fn unsupported_versions_are_code_1() {
    let agent = FakeAgent::start();
    for version in ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "1.0"] {
        let conf = conf(version, &agent.socket);
        let err = invoke(&attachment_env("ADD", "c1", NETNS, "web-0"), &bytes(&conf)).error();
        assert_eq!(err["code"], 1, "{version}");
        assert!(err["msg"].as_str().unwrap().contains(version), "{err}");
        assert!(err["details"].as_str().unwrap().contains("1.1.0"), "{err}");
        assert_eq!(err["cniVersion"], "1.1.0", "errors fall back to the latest");
    }
    assert!(agent.calls().is_empty());
}

#[test]
fn version_lists_what_the_plugin_speaks() {
    let env = vec![("CNI_COMMAND".to_owned(), "VERSION".to_owned())];
    for asked in SUPPORTED.into_iter().chain(["9.9.9"]) {
        let report = invoke(&env, &bytes(&json!({"cniVersion": asked}))).output();
        assert_eq!(
            report,
            json!({"cniVersion": asked, "supportedVersions": SUPPORTED}),
            "{asked}"
        );
    }
    let report = invoke(&env, b"").output();
    assert_eq!(report["cniVersion"], "1.1.0");
}

#[test]
fn memif_pods_report_their_socket() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);
    let result = invoke(
        &attachment_env("ADD", "c1", NETNS, "memif-0"),
        &bytes(&conf),
    )
    .output();
    assert_eq!(
        result["interfaces"],
        json!([{
            "name": "eth0", "mac": POD_MAC, "mtu": 1450,
            "socketPath": "/run/caracal/memif/default-memif-0.sock"
        }])
    );
    assert_eq!(result["ips"], tap_result("1.1.0")["ips"]);
}

#[test]
fn gc_passes_the_valid_attachments() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);
    for c in ["keep", "stale"] {
        invoke(&attachment_env("ADD", c, NETNS, "web-0"), &bytes(&conf)).output();
    }
    let gc = with(
        conf.clone(),
        "cni.dev/valid-attachments",
        json!([{"containerID": "keep", "ifname": "eth0"}]),
    );
    invoke(&network_env("GC"), &bytes(&gc)).silent();
    assert_eq!(
        agent.calls().last().unwrap(),
        &Call::Gc(pb::GcRequest {
            valid_attachments: vec![pb::Attachment {
                container_id: "keep".into(),
                ifname: "eth0".into()
            }],
        })
    );
    assert_eq!(
        agent.attachments(),
        [("keep".to_owned(), "eth0".to_owned())]
    );

    // CNI_PATH is required; GC is 1.1.0's; the list itself is required.
    let err = invoke(&without(network_env("GC"), "CNI_PATH"), &bytes(&gc)).error();
    assert_eq!(err["code"], 4);
    assert!(err["msg"].as_str().unwrap().contains("CNI_PATH"), "{err}");
    let old = with(gc, "cniVersion", json!("1.0.0"));
    assert_eq!(invoke(&network_env("GC"), &bytes(&old)).error_code(), 1);
    assert_eq!(invoke(&network_env("GC"), &bytes(&conf)).error_code(), 7);
    assert_eq!(agent.attachments().len(), 1);
}

#[test]
fn status_reports_readiness() {
    let ready = FakeAgent::start();
    invoke(
        &network_env("STATUS"),
        &bytes(&conf("1.1.0", &ready.socket)),
    )
    .silent();
    assert_eq!(ready.calls(), [Call::Status]);
    // STATUS needs no CNI_PATH.
    let bare = vec![("CNI_COMMAND".to_owned(), "STATUS".to_owned())];
    invoke(&bare, &bytes(&conf("1.1.0", &ready.socket))).silent();

    let busy = FakeAgent::not_ready("dataplane not connected");
    let err = invoke(&network_env("STATUS"), &bytes(&conf("1.1.0", &busy.socket))).error();
    assert_eq!(err["code"], 50);
    assert_eq!(err["details"], "dataplane not connected");

    let down = scratch_socket("down");
    let err = invoke(&network_env("STATUS"), &bytes(&conf("1.1.0", &down))).error();
    assert_eq!(err["code"], 50);
    assert!(
        err["details"].as_str().unwrap().contains("cannot connect"),
        "{err}"
    );

    let old = conf("1.0.0", &ready.socket);
    assert_eq!(invoke(&network_env("STATUS"), &bytes(&old)).error_code(), 1);
}

#[test]
fn an_unreachable_agent_is_try_again_later() {
    let down = scratch_socket("down");
    let conf = conf("1.1.0", &down);
    let prev = with(conf.clone(), "prevResult", tap_result("1.1.0"));
    for (command, conf) in [("ADD", &conf), ("CHECK", &prev), ("DEL", &prev)] {
        let err = invoke(&attachment_env(command, "c1", NETNS, "web-0"), &bytes(conf)).error();
        assert_eq!(err["code"], 11, "{command}");
        assert!(
            err["msg"]
                .as_str()
                .unwrap()
                .contains(&*down.to_string_lossy()),
            "{err}"
        );
    }
}

#[test]
fn agent_failures_map_to_cni_codes() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);
    for (pod, code, msg) in [
        ("invalid-0", 7, "unknown network"),
        ("flaky-0", 11, "datastore not synced yet"),
        ("exhausted-0", 999, "pool 10.65.0.0/16 is full"),
    ] {
        let err = invoke(&attachment_env("ADD", "c1", NETNS, pod), &bytes(&conf)).error();
        assert_eq!(err["code"], code, "{pod}");
        assert_eq!(err["msg"], msg, "{pod}");
    }
}

#[test]
fn an_add_the_plugin_cannot_report_is_undone() {
    let agent = FakeAgent::start();
    let conf = conf("1.1.0", &agent.socket);
    let err = invoke(
        &attachment_env("ADD", "c1", NETNS, "broken-0"),
        &bytes(&conf),
    )
    .error();
    assert_eq!(err["code"], 999);
    assert!(
        err["details"].as_str().unwrap().contains("10.65.0.5"),
        "{err}"
    );
    assert_eq!(
        agent.calls(),
        [
            Call::Add(request("c1", NETNS, "broken-0", &[])),
            Call::Del(request("c1", NETNS, "broken-0", &[])),
        ]
    );
    assert!(agent.attachments().is_empty());
}

#[test]
fn bad_input_gets_the_spec_codes() {
    let agent = FakeAgent::start();
    let good = conf("0.4.0", &agent.socket);
    let add = attachment_env("ADD", "c1", NETNS, "web-0");
    let drop_key = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        bytes(&c)
    };

    let err = invoke(&add, b"{\"cniVersion\": \"0.4.0\",").error();
    assert_eq!(err["code"], 6);
    assert_eq!(
        err["cniVersion"], "1.1.0",
        "undecodable input names no version"
    );
    assert_eq!(
        invoke(&add, &bytes(&with(good.clone(), "mtu", json!("x")))).error_code(),
        6
    );

    let err = invoke(&add, &drop_key("name")).error();
    assert_eq!(err["code"], 7);
    assert_eq!(
        err["cniVersion"], "0.4.0",
        "errors answer in the asked version"
    );
    assert_eq!(invoke(&add, &drop_key("cniVersion")).error_code(), 7);
    assert_eq!(invoke(&add, &drop_key("type")).error_code(), 7);

    let ipam = with(good.clone(), "ipam", json!({"type": "host-local"}));
    let err = invoke(&add, &bytes(&ipam)).error();
    assert_eq!(err["code"], 2);
    assert!(err["msg"].as_str().unwrap().contains("ipam"), "{err}");

    let err = invoke(&without(add.clone(), "CNI_CONTAINERID"), &bytes(&good)).error();
    assert_eq!(err["code"], 4);
    assert!(
        err["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{err}"
    );
    assert_eq!(
        invoke(&without(add.clone(), "CNI_NETNS"), &bytes(&good)).error_code(),
        4
    );
    assert_eq!(
        invoke(&without(add.clone(), "CNI_IFNAME"), &bytes(&good)).error_code(),
        4
    );
    let mut strict = add.clone();
    strict[4].1 = "K8S_POD_NAME=web-0;COLOR=blue".into();
    let err = invoke(&strict, &bytes(&good)).error();
    assert_eq!(err["code"], 4);
    assert!(err["msg"].as_str().unwrap().contains("COLOR"), "{err}");

    let mut unknown = add.clone();
    unknown[0].1 = "FROB".into();
    assert_eq!(invoke(&unknown, &bytes(&good)).error_code(), 4);
    assert_eq!(
        invoke(&without(add, "CNI_COMMAND"), &bytes(&good)).error_code(),
        4
    );

    assert!(agent.calls().is_empty(), "nothing reached the agent");
}
