//! The Kubernetes deployment manifests in `deploy/` are well-formed for
//! the API server: every document deserializes into its typed Kubernetes
//! object (required fields present, types right) and serializes back to
//! exactly what the file says — so no field is misspelled or unknown,
//! which is what `kubectl apply --dry-run=client` checks against the
//! OpenAPI schema.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, d) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            if !v.is_null() {
                out.push((
                    format!("{} doc {}", f.display(), i + 1),
                    serde_json::to_value(v).unwrap(),
                ));
            }
        }
    }
    out
}

/// The first place where `a` has something `b` lacks or differs.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            None => Some(format!("{path}.{k}: unknown field")),
            Some(w) => first_difference(v, w, &format!("{path}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{path}[{i}]"))),
        // YAML numbers and strings that the typed object normalises
        // (IntOrString, Quantity) compare by their text.
        (x, y) if x.to_string().trim_matches('"') == y.to_string().trim_matches('"') => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, v: &Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    if let Some(d) = first_difference(v, &back, "") {
        panic!("{what}: {d}");
    }
}

#[test]
fn every_document_is_a_valid_kubernetes_object() {
    let docs = documents();
    assert!(
        docs.len() >= 5,
        "deploy/ has the DaemonSet, RBAC and CNI config"
    );
    let mut kinds = Vec::new();
    for (what, v) in &docs {
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no kind"));
        kinds.push(kind.to_owned());
        match kind {
            "DaemonSet" => round_trip::<DaemonSet>(what, v),
            "ServiceAccount" => round_trip::<ServiceAccount>(what, v),
            "ClusterRole" => round_trip::<ClusterRole>(what, v),
            "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(what, v),
            "ConfigMap" => round_trip::<ConfigMap>(what, v),
            "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(what, v),
            other => panic!("{what}: unexpected kind {other}"),
        }
    }
    for k in [
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|x| x == k), "deploy/ lacks a {k}");
    }
}

#[test]
fn daemonset_selects_its_pods_and_mounts_what_it_uses() {
    let docs = documents();
    let (_, ds) = docs.iter().find(|(_, v)| v["kind"] == "DaemonSet").unwrap();
    let ds: DaemonSet = serde_json::from_value(ds.clone()).unwrap();
    let spec = ds.spec;
    let tmpl_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in spec.selector.match_labels.unwrap() {
        assert_eq!(
            tmpl_labels.get(&k),
            Some(&v),
            "selector {k}={v} matches the template"
        );
    }
    let pod = spec.template.spec.unwrap();
    let volumes: Vec<String> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name),
                "{}: mount {} has a volume",
                c.name,
                m.name
            );
        }
    }
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dataplane", "agent"]);
}

#[test]
fn cni_conflist_names_the_plugin() {
    let docs = documents();
    let (_, cm) = docs.iter().find(|(_, v)| v["kind"] == "ConfigMap").unwrap();
    let conflist: Value =
        serde_json::from_str(cm["data"]["10-caracal.conflist"].as_str().unwrap()).unwrap();
    assert_eq!(conflist["cniVersion"], "1.0.0");
    assert_eq!(conflist["plugins"][0]["type"], "caracal");
}

#[test]
#[should_panic(expected = ".spec.template.spec.containerz: unknown field")]
fn a_misspelled_field_is_caught() {
    let v = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [], "containerz": []}}}
    });
    round_trip::<DaemonSet>("test", &v);
}

#[test]
fn crds_match_the_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_caracal-agent"))
        .arg("--print-crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let parse = |text: &str| -> Vec<Value> {
        serde_yaml::Deserializer::from_str(text)
            .map(|d| {
                serde_json::to_value(
                    <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap(),
                )
                .unwrap()
            })
            .filter(|v| !v.is_null())
            .collect()
    };
    let generated = parse(&String::from_utf8(out.stdout).unwrap());
    let file = parse(&std::fs::read_to_string(deploy_dir().join("crds.yaml")).unwrap());
    assert_eq!(
        file, generated,
        "deploy/crds.yaml is stale: run caracal-agent --print-crds > deploy/crds.yaml"
    );
}
