//! Kubernetes manifests as the lab handles them: loaded from files
//! (multi-document YAML, JSON, `kind: List`), identified the way kubectl
//! identifies objects (kind, namespace, name), and stored one object per
//! file in the folder the agent watches.
//!
//! The lab only needs an object's identity and a few fields (a Pod's
//! annotations, a Service's addresses and ports); checking everything else
//! is the agent's job, which reports bad objects by file and field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Kinds that live outside namespaces (everything else defaults to the
/// `default` namespace, as kubectl does).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "IPPool",
    "GlobalNetworkPolicy",
    "GlobalNetworkSet",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} document {doc}: {msg}")]
    Invalid {
        path: PathBuf,
        doc: usize,
        msg: String,
    },
}

/// Identity of an object: what kubectl apply/delete match on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl ObjectKey {
    /// File name of the object in the watched folder.
    pub fn file_name(&self) -> String {
        let ns = if self.namespace.is_empty() {
            "_"
        } else {
            &self.namespace
        };
        format!(
            "{}.{}.{}.yaml",
            self.kind.to_ascii_lowercase(),
            ns,
            self.name
        )
    }
}

/// One object of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub key: ObjectKey,
    /// The whole object, namespace filled in.
    pub value: Value,
}

impl Object {
    fn from_value(mut value: Value, path: &Path, doc: usize) -> Result<Object, ManifestError> {
        let invalid = |msg: String| ManifestError::Invalid {
            path: path.to_owned(),
            doc,
            msg,
        };
        let obj = value
            .as_object_mut()
            .ok_or_else(|| invalid("not a mapping".into()))?;
        let field =
            |o: &serde_json::Map<String, Value>, f: &str| -> Result<String, ManifestError> {
                match o.get(f) {
                    Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(invalid(format!("{f}: required string missing"))),
                }
            };
        field(obj, "apiVersion")?;
        let kind = field(obj, "kind")?;
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(format!("{kind}: metadata: required mapping missing")))?;
        let name = field(meta, "name")
            .map_err(|_| invalid(format!("{kind}: metadata.name: required string missing")))?;
        let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            String::new()
        } else {
            match meta.get("namespace") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                None | Some(Value::Null) => {
                    meta.insert("namespace".into(), Value::String("default".into()));
                    "default".into()
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "{kind} {name}: metadata.namespace: must be a string"
                    )))
                }
            }
        };
        Ok(Object {
            key: ObjectKey {
                kind,
                namespace,
                name,
            },
            value,
        })
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.value
            .pointer("/metadata/annotations")?
            .get(key)?
            .as_str()
    }
}

/// Parses every document of one file.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    let is_json = path.extension().is_some_and(|e| e == "json");
    let docs: Vec<Value> = if is_json {
        vec![
            serde_json::from_str(text).map_err(|e| ManifestError::Invalid {
                path: path.to_owned(),
                doc: 1,
                msg: e.to_string(),
            })?,
        ]
    } else {
        let mut docs = Vec::new();
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v: serde_yaml::Value =
                serde::Deserialize::deserialize(d).map_err(|e| ManifestError::Invalid {
                    path: path.to_owned(),
                    doc: i + 1,
                    msg: e.to_string(),
                })?;
            if v.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            docs.push(serde_json::to_value(v).map_err(|e| ManifestError::Invalid {
                path: path.to_owned(),
                doc: i + 1,
                msg: e.to_string(),
            })?);
        }
        docs
    };
    for (i, v) in docs.into_iter().enumerate() {
        if v.get("kind").and_then(Value::as_str) == Some("List") {
            for item in v
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                out.push(Object::from_value(item, path, i + 1)?);
            }
        } else {
            out.push(Object::from_value(v, path, i + 1)?);
        }
    }
    Ok(out)
}

/// Loads a file, or every manifest under a folder (recursively, sorted).
/// A later definition of the same object replaces an earlier one.
pub fn load(path: &Path) -> Result<BTreeMap<ObjectKey, Object>, ManifestError> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    files.sort();
    let mut objects = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ManifestError::Io {
            path: f.clone(),
            source,
        })?;
        for o in parse(&f, &text)? {
            objects.insert(o.key.clone(), o);
        }
    }
    Ok(objects)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let meta = std::fs::metadata(path).map_err(|source| ManifestError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    let rd = std::fs::read_dir(path).map_err(|source| ManifestError::Io {
        path: path.to_owned(),
        source,
    })?;
    for entry in rd {
        let p = entry
            .map_err(|source| ManifestError::Io {
                path: path.to_owned(),
                source,
            })?
            .path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Writes an object into the watched folder; returns whether its content
/// changed. Written to a temporary name and renamed, so the agent never
/// reads half a file.
pub fn store(dir: &Path, obj: &Object) -> std::io::Result<bool> {
    let path = dir.join(obj.key.file_name());
    let text = serde_yaml::to_string(&obj.value).map_err(std::io::Error::other)?;
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{}.tmp", obj.key.file_name()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)?;
    Ok(true)
}

/// Removes an object from the watched folder; returns whether it was there.
pub fn remove(dir: &Path, key: &ObjectKey) -> std::io::Result<bool> {
    match std::fs::remove_file(dir.join(key.file_name())) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_defaults_and_lists() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: x}}
";
        let objs = parse(Path::new("m.yaml"), text).unwrap();
        let keys: Vec<String> = objs.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(keys, ["Namespace/x", "Pod default/a", "Pod x/b"]);
        assert_eq!(
            objs[1].value.pointer("/metadata/namespace").unwrap(),
            "default"
        );
        assert_eq!(objs[1].key.file_name(), "pod.default.a.yaml");
        assert_eq!(objs[0].key.file_name(), "namespace._.x.yaml");
    }

    #[test]
    fn errors_name_the_file_document_and_field() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata: {}\n";
        let err = parse(Path::new("/m/pods.yaml"), text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/m/pods.yaml document 2: Pod: metadata.name: required string missing"
        );
        let err = parse(Path::new("bad.yaml"), "kind: [")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.yaml document 1: "), "{err}");
    }

    #[test]
    fn store_reports_changes_and_remove_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("caracal-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let obj = parse(
            Path::new("p.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap()
        .remove(0);
        assert!(store(&dir, &obj).unwrap());
        assert!(!store(&dir, &obj).unwrap(), "same content is no change");
        let again = load(&dir).unwrap();
        assert_eq!(again.get(&obj.key), Some(&obj));
        assert!(remove(&dir, &obj.key).unwrap());
        assert!(!remove(&dir, &obj.key).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
