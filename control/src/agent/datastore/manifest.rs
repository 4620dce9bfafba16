//! Parsing manifest files: YAML (several documents per file) or JSON (one
//! or more values), each document one object or a `kind: List` of them,
//! into typed [`Object`]s — with every problem reported by file, document
//! (and list item), object and field, without stopping at the first.
//!
//! Pure: text in, objects and problems out.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;

use super::objects::{Kind, Object, ObjectKey, StoredKind};
use super::validate::validate;

/// Where in a folder of manifests something was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file's name.
    pub file: String,
    /// 1-based document within the file; `None` for the file as a whole.
    pub doc: Option<usize>,
    /// 0-based item of a `kind: List` document.
    pub item: Option<usize>,
}

impl Origin {
    fn doc(file: &str, doc: usize) -> Self {
        Origin {
            file: file.to_owned(),
            doc: Some(doc),
            item: None,
        }
    }

    /// The whole file, for problems that are not about one document.
    pub fn file(file: &str) -> Self {
        Origin {
            file: file.to_owned(),
            doc: None,
            item: None,
        }
    }
}

/// `pods.yaml doc 2`, `list.yaml doc 1 items[3]`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(doc) = self.doc {
            write!(f, " doc {doc}")?;
        }
        if let Some(item) = self.item {
            write!(f, " items[{item}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ignored, but worth saying (an unknown kind).
    Warning,
    /// The object was refused.
    Error,
}

/// Something wrong with a document or object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub severity: Severity,
    /// e.g. `Pod default/x: spec.containers[0].ports[1].containerPort:
    /// invalid value 70000: must be between 1 and 65535`.
    pub message: String,
}

/// `pods.yaml doc 2: Pod default/x: spec.containers[0]...: why`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// What a file holds.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<(Origin, Object)>,
    pub problems: Vec<Problem>,
}

impl Parsed {
    fn problem(&mut self, origin: Origin, severity: Severity, message: impl Into<String>) {
        self.problems.push(Problem {
            origin,
            severity,
            message: message.into(),
        });
    }
}

/// Parses one file; `name` decides the format (`*.json` is JSON, anything
/// else YAML) and names the file in problems.
pub fn parse(name: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut doc = 0;
    if name.ends_with(".json") {
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            doc += 1;
            match value {
                Ok(v) => document(&mut parsed, Origin::doc(name, doc), v),
                Err(e) => {
                    let msg = format!("invalid JSON: {e}");
                    parsed.problem(Origin::doc(name, doc), Severity::Error, msg);
                    break;
                }
            }
        }
    } else {
        for de in serde_yaml::Deserializer::from_str(text) {
            doc += 1;
            match Value::deserialize(de) {
                Ok(v) => document(&mut parsed, Origin::doc(name, doc), v),
                Err(e) => {
                    let msg = format!("invalid YAML: {e}");
                    parsed.problem(Origin::doc(name, doc), Severity::Error, msg);
                    // The parser cannot find the next document after a
                    // syntax error; the ones before it stand.
                    break;
                }
            }
        }
    }
    parsed
}

/// One document: an object, a list of objects, or nothing (an empty
/// document, as a trailing `---` makes).
fn document(parsed: &mut Parsed, origin: Origin, value: Value) {
    if value.is_null() {
        return;
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let is_list = kind == "List"
        || kind
            .strip_suffix("List")
            .is_some_and(|k| Kind::from_name(k).is_some());
    if !is_list {
        return object(parsed, origin, value);
    }
    let Value::Object(mut map) = value else {
        unreachable!("a value with a kind is a mapping")
    };
    match map.remove("items") {
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let origin = Origin {
                    item: Some(i),
                    ..origin.clone()
                };
                object(parsed, origin, item);
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => parsed.problem(origin, Severity::Error, "items: expected a list"),
    }
}

fn object(parsed: &mut Parsed, origin: Origin, value: Value) {
    if !value.is_object() {
        let msg = "expected a mapping with apiVersion, kind and metadata";
        return parsed.problem(origin, Severity::Error, msg);
    }
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let (Some(kind_name), api_version) = (text("kind"), text("apiVersion")) else {
        return parsed.problem(origin, Severity::Error, "kind: required");
    };
    let Some(kind) = Kind::from_name(&kind_name) else {
        let msg = format!(
            "unknown kind {kind_name} ({}), ignored",
            api_version.as_deref().unwrap_or("no apiVersion")
        );
        return parsed.problem(origin, Severity::Warning, msg);
    };
    let meta = |field: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let namespace = match meta("namespace") {
        Some(ns) if kind.namespaced() => ns,
        _ if kind.namespaced() => "default".to_owned(),
        _ => String::new(),
    };
    let key = ObjectKey::new(kind, namespace, meta("name").unwrap_or_default());
    let subject = if key.name.is_empty() {
        format!("{kind} (no name)")
    } else {
        key.to_string()
    };
    match api_version {
        None => {
            let msg = format!("{subject}: apiVersion: required");
            return parsed.problem(origin, Severity::Error, msg);
        }
        Some(v) if v != kind.api_version() => {
            let msg = format!(
                "{subject}: apiVersion: {v} is not supported for {kind} (use {})",
                kind.api_version()
            );
            return parsed.problem(origin, Severity::Error, msg);
        }
        Some(_) => {}
    }
    let typed = match kind {
        Kind::Namespace => typed::<k8s_openapi::api::core::v1::Namespace>(value),
        Kind::Node => typed::<k8s_openapi::api::core::v1::Node>(value),
        Kind::Pod => typed::<k8s_openapi::api::core::v1::Pod>(value),
        Kind::Service => typed::<k8s_openapi::api::core::v1::Service>(value),
        Kind::EndpointSlice => typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(value),
        Kind::NetworkPolicy => typed::<k8s_openapi::api::networking::v1::NetworkPolicy>(value),
        Kind::IpPool => typed::<super::crd::IPPool>(value),
    };
    let result = typed.and_then(|o| validate(&o).map(|()| o).map_err(|e| e.to_string()));
    match result {
        Ok(o) => parsed.objects.push((origin, o)),
        Err(reason) => parsed.problem(origin, Severity::Error, format!("{subject}: {reason}")),
    }
}

/// Deserializes `value` as `T`; on failure, the path of the offending
/// field and why (`spec.containers[0].ports[1].containerPort: invalid
/// type: string "x", expected i32`).
fn typed<T: DeserializeOwned + StoredKind>(value: Value) -> Result<Object, String> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(StoredKind::into_object)
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &Parsed) -> Vec<String> {
        p.objects.iter().map(|(_, o)| o.key().to_string()).collect()
    }

    fn problems(p: &Parsed) -> Vec<String> {
        p.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reads_every_document_of_a_yaml_file() {
        let text = "\
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: prod, labels: {app: web}}
spec:
  containers:
  - name: c
    image: x
    ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec: {containers: [{name: c}]}
---
";
        let p = parse("pods.yaml", text);
        assert_eq!(problems(&p), Vec::<String>::new());
        assert_eq!(keys(&p), ["Namespace prod", "Pod prod/a", "Pod default/b"]);
        assert_eq!(p.objects[2].0.to_string(), "pods.yaml doc 3");
        let Object::Pod(pod) = &p.objects[1].1 else {
            panic!()
        };
        let port = &pod.spec.as_ref().unwrap().containers[0]
            .ports
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("http"), 80)
        );
    }

    #[test]
    fn an_invalid_object_is_named_with_file_doc_and_field_and_spares_the_others() {
        let text = "\
apiVersion: v1
kind: Pod
metadata: {name: ok}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  containers:
  - name: c
    ports: [{containerPort: 80}, {containerPort: seventy}]
---
apiVersion: v1
kind: Pod
metadata: {name: y}
spec:
  containers:
  - name: c
    ports: [{containerPort: 80}, {containerPort: 70000}]
---
apiVersion: v1
kind: Pod
metadata: {name: z}
spec: {containers: [{name: c}]}
";
        let p = parse("pods.yaml", text);
        assert_eq!(keys(&p), ["Pod default/ok", "Pod default/z"]);
        let got = problems(&p);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].starts_with(
                "pods.yaml doc 2: Pod default/x: spec.containers[0].ports[1].containerPort: invalid type"
            ),
            "{}",
            got[0]
        );
        assert_eq!(
            got[1],
            "pods.yaml doc 3: Pod default/y: spec.containers[0].ports[1].containerPort: \
             invalid value 70000: must be between 1 and 65535"
        );
        assert!(p.problems.iter().all(|p| p.severity == Severity::Error));
    }

    #[test]
    fn unknown_kinds_are_a_warning_and_lists_are_unpacked() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
- {apiVersion: caracal.io/v1, kind: IPPool, metadata: {name: p}, spec: {cidr: 10.9.0.0/16}}
- {apiVersion: v1, kind: Namespace, metadata: {name: Bad}}
";
        let p = parse("mixed.yml", text);
        assert_eq!(keys(&p), ["Namespace a", "IPPool p"]);
        assert_eq!(
            p.problems[0].to_string(),
            "mixed.yml doc 1: unknown kind Deployment (apps/v1), ignored"
        );
        assert_eq!(p.problems[0].severity, Severity::Warning);
        assert!(
            p.problems[1].to_string().starts_with(
                "mixed.yml doc 2 items[2]: Namespace Bad: metadata.name: invalid value"
            ),
            "{}",
            p.problems[1]
        );
    }

    #[test]
    fn json_files_may_hold_several_values() {
        let text = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
{"apiVersion":"v1","kind":"PodList","items":[
  {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"a"},"spec":{"containers":[]}}]}"#;
        let p = parse("objs.json", text);
        assert_eq!(problems(&p), Vec::<String>::new());
        assert_eq!(keys(&p), ["Namespace a", "Pod a/p"]);
    }

    #[test]
    fn wrong_api_version_missing_kind_and_bad_syntax() {
        let text = "\
apiVersion: v2
kind: Pod
metadata: {name: a}
---
apiVersion: v1
metadata: {name: b}
---
- just
- a list
---
apiVersion: caracal.io/v1
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.1.0.1/16}
---
kind: [unclosed
";
        let got = problems(&parse("bad.yaml", text));
        assert_eq!(
            got[..4],
            [
                "bad.yaml doc 1: Pod default/a: apiVersion: v2 is not supported for Pod (use v1)",
                "bad.yaml doc 2: kind: required",
                "bad.yaml doc 3: expected a mapping with apiVersion, kind and metadata",
                "bad.yaml doc 4: IPPool p: spec.cidr: 10.1.0.1/16 has host bits set (the network is 10.1.0.0/16)",
            ]
        );
        assert!(
            got[4].starts_with("bad.yaml doc 5: invalid YAML"),
            "{}",
            got[4]
        );
    }
}
