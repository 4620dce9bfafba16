//! The kinds of object the agent keeps, and the typed object itself: the
//! `k8s-openapi` types for Kubernetes' built-in kinds and [`IPPool`] for
//! Caracal's own, behind one enum so that one store can hold them all.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::crd::IPPool;

/// A kind the agent stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
    IpPool,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
        Kind::IpPool,
    ];
    pub const COUNT: usize = Kind::ALL.len();

    /// The kind's name in manifests (`kind:`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::IpPool => "IPPool",
        }
    }

    /// The group/version the agent reads the kind in (`apiVersion:`).
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Node | Kind::Pod | Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::IpPool => "caracal.io/v1",
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::IpPool)
    }

    /// The kind a manifest's `kind:` names, if the agent stores it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Position in [`Kind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies an object: its kind, namespace (empty for cluster-scoped
/// kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Pod default/web`, `Namespace default`.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One stored object. Cloning is cheap: the object itself is shared.
#[derive(Debug, Clone)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    NetworkPolicy(Arc<NetworkPolicy>),
    IpPool(Arc<IPPool>),
}

/// Equal objects; one shared object is equal to itself without a look at
/// its fields (which is what makes comparing two snapshots that share
/// most of their objects cheap).
impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b) || a == b
        }
        match (self, other) {
            (Object::Namespace(a), Object::Namespace(b)) => same(a, b),
            (Object::Node(a), Object::Node(b)) => same(a, b),
            (Object::Pod(a), Object::Pod(b)) => same(a, b),
            (Object::Service(a), Object::Service(b)) => same(a, b),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => same(a, b),
            (Object::NetworkPolicy(a), Object::NetworkPolicy(b)) => same(a, b),
            (Object::IpPool(a), Object::IpPool(b)) => same(a, b),
            _ => false,
        }
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
            Object::IpPool(_) => Kind::IpPool,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::IpPool(o) => &o.metadata,
        }
    }

    /// The object's key; a namespaced object without a namespace is in
    /// "default", as `kubectl` would place it.
    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let meta = self.metadata();
        let namespace = if kind.namespaced() {
            meta.namespace.as_deref().unwrap_or("default")
        } else {
            ""
        };
        ObjectKey::new(kind, namespace, meta.name.as_deref().unwrap_or_default())
    }
}

/// A type the store holds one kind of.
pub trait StoredKind: Sized {
    const KIND: Kind;

    /// Wraps the object, dropping what the agent never reads and what
    /// changes without meaning (`metadata.managedFields`).
    fn into_object(self) -> Object;
}

macro_rules! stored_kind {
    ($ty:ty, $variant:ident) => {
        impl StoredKind for $ty {
            const KIND: Kind = Kind::$variant;

            fn into_object(mut self) -> Object {
                self.metadata.managed_fields = None;
                Object::$variant(Arc::new(self))
            }
        }
    };
}

stored_kind!(Namespace, Namespace);
stored_kind!(Node, Node);
stored_kind!(Pod, Pod);
stored_kind!(Service, Service);
stored_kind!(EndpointSlice, EndpointSlice);
stored_kind!(NetworkPolicy, NetworkPolicy);
stored_kind!(IPPool, IpPool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name_and_index() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.index(), i);
        }
        assert_eq!(Kind::from_name("Deployment"), None);
    }

    #[test]
    fn keys_default_the_namespace_of_namespaced_kinds() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let key = pod.into_object().key();
        assert_eq!(key, ObjectKey::new(Kind::Pod, "default", "web"));
        assert_eq!(key.to_string(), "Pod default/web");

        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("prod".into()),
                namespace: Some("ignored".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ns.into_object().key().to_string(), "Namespace prod");
    }
}
