//! The incremental compiler: [`calculate`]'s result kept up to date from
//! one snapshot of the objects and endpoints to the next, at a cost that
//! follows what changed rather than the size of the cluster.
//!
//! [`PolicyCalculator`] remembers the inputs of its last update and what
//! it derived from them: the live pods by namespace, the namespaces'
//! labels, every IP set the compiled policies use with the pods each
//! address is there for (a count per address), each NetworkPolicy's
//! compiled form and the sets it uses, and the attachments by namespace.
//! An update compares the new snapshots with the old ones (shared objects
//! compare by pointer, so an unchanged object costs next to nothing) and
//! then:
//!
//! 1. a namespace whose labels changed moves its live pods in or out of
//!    the sets whose namespace selector it now matches differently;
//! 2. a pod that changed (labels, addresses — its endpoints' included —,
//!    named ports, liveness) leaves the sets that selected it and joins
//!    those that select it now;
//! 3. a NetworkPolicy that changed, or whose named-port sets gained or
//!    lost a port number (which changes its rules), is compiled again;
//!    sets no policy uses any more go, new ones are filled from the pods
//!    of the namespaces they can select;
//! 4. the attachments of endpoints whose pod or namespace policies
//!    changed are computed again (all of them when the endpoints changed).
//!
//! The result equals [`calculate`] over the same inputs, which the
//! property tests check on random sequences of changes.
//!
//! [`calculate`]: super::calculate

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;

use super::compile::{
    compile_policy, endpoint_policy, named_port, named_port_set, namespace_labels, pod_addresses,
    Attachment, PodScope, SetRegistry, NO_LABELS,
};
use super::selector::Labels;
use super::DesiredPolicy;
use crate::agent::datastore::{Kind, Object, ObjectKey, Objects};
use crate::agent::endpoints::{Endpoint, Endpoints};

/// Keeps the compiled policy of a changing cluster; see the module.
#[derive(Debug, Default)]
pub struct PolicyCalculator {
    /// The inputs of the last update.
    objects: Objects,
    endpoints: Endpoints,
    model: Model,
    registry: Registry,
    /// Each NetworkPolicy's compiled form, by object key.
    policies: BTreeMap<ObjectKey, Compiled>,
    /// Attachments by namespace, then policy name (the order endpoints
    /// list their policies in).
    selecting: BTreeMap<String, BTreeMap<String, Attachment>>,
    out: DesiredPolicy,
}

impl PolicyCalculator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The policy for `objects` and `endpoints` (what [`calculate`] would
    /// return), updated from the last call's.
    ///
    /// [`calculate`]: super::calculate
    pub fn update(&mut self, objects: &Objects, endpoints: &Endpoints) -> &DesiredPolicy {
        let endpoints_changed = !Arc::ptr_eq(&self.endpoints, endpoints);
        let mut changed_pods: BTreeSet<(String, String)> = objects
            .changed(&self.objects, Kind::Pod)
            .into_iter()
            .map(|k| (k.namespace, k.name))
            .collect();
        // Pods whose endpoints changed have other addresses.
        let mut local_changed = BTreeSet::new();
        if endpoints_changed {
            let local = local_addresses(endpoints);
            local_changed = changed_keys(&self.model.local, &local);
            self.model.local = local;
        }
        changed_pods.extend(local_changed.iter().cloned());

        // 1. Namespaces, with the pods as they were.
        for key in objects.changed(&self.objects, Kind::Namespace) {
            let name = key.name;
            let old = self.model.namespace_labels(&name).into_owned();
            let new = objects
                .namespace(&name)
                .map(|n| namespace_labels(&name, n.metadata.labels.as_ref()));
            match &new {
                Some(labels) => self.model.namespaces.insert(name.clone(), labels.clone()),
                None => self.model.namespaces.remove(&name),
            };
            let new = self.model.namespace_labels(&name).into_owned();
            if old != new {
                self.registry.relabel_namespace(
                    &self.model,
                    &name,
                    &old,
                    &new,
                    &mut self.out.ip_sets,
                );
            }
        }

        // 2. Pods.
        for (namespace, name) in &changed_pods {
            let new = match objects.get(&ObjectKey::new(Kind::Pod, namespace, name)) {
                Some(Object::Pod(pod)) => {
                    let local = self.model.local.get(&(namespace.clone(), name.clone()));
                    let addresses = pod_addresses(pod, local);
                    (!addresses.is_empty()).then(|| LiveState {
                        pod: Arc::clone(pod),
                        addresses,
                    })
                }
                _ => None,
            };
            let old = self.model.take_pod(namespace, name);
            if old
                .as_ref()
                .zip(new.as_ref())
                .is_some_and(|(o, n)| o.same(n))
            {
                self.model.put_pod(namespace, name, old);
                continue;
            }
            let ns_labels = self.model.namespace_labels(namespace).into_owned();
            let out = &mut self.out.ip_sets;
            if let Some(old) = &old {
                self.registry
                    .contribute(namespace, &ns_labels, old, Sign::Remove, false, out);
            }
            if let Some(new) = &new {
                self.registry
                    .contribute(namespace, &ns_labels, new, Sign::Add, false, out);
            }
            self.model.put_pod(namespace, name, new);
        }

        // 3. Policies: those that changed, and those whose named ports
        // now resolve to other numbers.
        let mut dirty: BTreeSet<ObjectKey> = objects
            .changed(&self.objects, Kind::NetworkPolicy)
            .into_iter()
            .collect();
        for family in self.registry.families.values_mut() {
            if std::mem::take(&mut family.reshaped) {
                dirty.extend(family.users.iter().cloned());
            }
        }
        let mut dirty_namespaces = BTreeSet::new();
        for key in dirty {
            self.recompile(objects, &key);
            dirty_namespaces.insert(key.namespace);
        }

        // 4. Attachments.
        if endpoints_changed {
            self.out.endpoints = endpoints
                .values()
                .map(|ep| (ep.dataplane_interface.clone(), self.attachment(objects, ep)))
                .collect();
        } else {
            // The attachment of an interface is its last endpoint's.
            let mut last: BTreeMap<&str, &Endpoint> = BTreeMap::new();
            for ep in endpoints.values() {
                last.insert(&ep.dataplane_interface, ep);
            }
            for (interface, ep) in last {
                let pod = (ep.namespace.clone(), ep.pod.clone());
                if dirty_namespaces.contains(&ep.namespace) || changed_pods.contains(&pod) {
                    let policy = self.attachment(objects, ep);
                    self.out.endpoints.insert(interface.to_owned(), policy);
                }
            }
        }

        self.objects = objects.clone();
        self.endpoints = Arc::clone(endpoints);
        &self.out
    }

    /// The policy of the last update.
    pub fn current(&self) -> &DesiredPolicy {
        &self.out
    }

    /// Compiles NetworkPolicy `key` again (or drops it, if it is gone).
    fn recompile(&mut self, objects: &Objects, key: &ObjectKey) {
        let old = self.policies.remove(key);
        let mut acquire = Acquire {
            registry: &mut self.registry,
            model: &self.model,
            out: &mut self.out.ip_sets,
            sets: BTreeSet::new(),
            families: BTreeSet::new(),
        };
        let compiled = match objects.get(key) {
            Some(Object::NetworkPolicy(np)) => {
                let spec = np.spec.clone().unwrap_or_default();
                let (policy, attachment) =
                    compile_policy(&key.namespace, &key.name, &spec, &mut acquire);
                Some((policy, attachment))
            }
            _ => None,
        };
        let (sets, families) = (acquire.sets, acquire.families);
        let (old_sets, old_families) = old
            .as_ref()
            .map(|c| (c.sets.clone(), c.families.clone()))
            .unwrap_or_default();
        let out = &mut self.out.ip_sets;
        for scope in sets.difference(&old_sets) {
            self.registry.use_set(scope);
        }
        for scope in old_sets.difference(&sets) {
            self.registry.release_set(scope, out);
        }
        for family in families.difference(&old_families) {
            self.registry.use_family(family, key);
        }
        for family in old_families.difference(&families) {
            self.registry.release_family(family, key, out);
        }

        let attachments = self.selecting.entry(key.namespace.clone()).or_default();
        if let Some(old) = &old {
            self.out.policies.remove(&old.name);
            attachments.remove(&old.name);
        }
        if let Some((policy, attachment)) = compiled {
            let name = policy.name.clone();
            self.out.policies.insert(name.clone(), Arc::new(policy));
            if let Some(a) = attachment {
                attachments.insert(name.clone(), a);
            }
            self.policies.insert(
                key.clone(),
                Compiled {
                    name,
                    sets,
                    families,
                },
            );
        }
        if attachments.is_empty() {
            self.selecting.remove(&key.namespace);
        }
    }

    fn attachment(
        &self,
        objects: &Objects,
        ep: &Endpoint,
    ) -> caracal_proto::dataplane::EndpointPolicy {
        let labels = objects
            .pod(&ep.namespace, &ep.pod)
            .map(|p| p.metadata.labels.as_ref().unwrap_or(&NO_LABELS));
        let attachments = self
            .selecting
            .get(&ep.namespace)
            .into_iter()
            .flat_map(BTreeMap::values);
        endpoint_policy(ep, labels, attachments)
    }
}

/// The addresses of this node's endpoints, by pod.
fn local_addresses(endpoints: &Endpoints) -> BTreeMap<(String, String), BTreeSet<IpNet>> {
    let mut local: BTreeMap<(String, String), BTreeSet<IpNet>> = BTreeMap::new();
    for ep in endpoints.values() {
        local
            .entry((ep.namespace.clone(), ep.pod.clone()))
            .or_default()
            .extend(ep.ips.iter().map(IpNet::trunc));
    }
    local
}

/// The keys whose values differ between `old` and `new`.
fn changed_keys<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> BTreeSet<K> {
    let mut keys: BTreeSet<K> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    keys
}

// ------------------------------------------------------------- the model

/// A pod that has addresses policy can see.
#[derive(Debug, Clone)]
struct LiveState {
    pod: Arc<Pod>,
    addresses: BTreeSet<IpNet>,
}

impl LiveState {
    fn labels(&self) -> &Labels {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// Whether the pod is in the same sets as `other` would be.
    fn same(&self, other: &LiveState) -> bool {
        self.addresses == other.addresses
            && (Arc::ptr_eq(&self.pod, &other.pod)
                || (self.pod.metadata.labels == other.pod.metadata.labels
                    && self.pod.spec == other.pod.spec))
    }
}

/// What the sets are computed from.
#[derive(Debug, Default)]
struct Model {
    /// Labels of every namespace that has an object, the name label
    /// included.
    namespaces: BTreeMap<String, Labels>,
    /// Live pods by namespace, then name.
    pods: BTreeMap<String, BTreeMap<String, LiveState>>,
    /// Addresses of this node's endpoints, by pod (namespace, name).
    local: BTreeMap<(String, String), BTreeSet<IpNet>>,
}

impl Model {
    /// The labels selectors see on namespace `name`.
    fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(labels) => Cow::Borrowed(labels),
            None => Cow::Owned(namespace_labels(name, None)),
        }
    }

    fn take_pod(&mut self, namespace: &str, name: &str) -> Option<LiveState> {
        let pods = self.pods.get_mut(namespace)?;
        let pod = pods.remove(name);
        if pods.is_empty() {
            self.pods.remove(namespace);
        }
        pod
    }

    fn put_pod(&mut self, namespace: &str, name: &str, pod: Option<LiveState>) {
        if let Some(pod) = pod {
            self.pods
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.to_owned(), pod);
        }
    }

    /// The live pods `scope` selects, with their namespace.
    fn select<'m>(&'m self, scope: &'m PodScope) -> impl Iterator<Item = &'m LiveState> + 'm {
        self.pods
            .iter()
            .filter(move |(ns, _)| {
                let labels = self.namespace_labels(ns);
                scope.namespace_matches(ns, || &labels)
            })
            .flat_map(move |(_, pods)| {
                pods.values()
                    .filter(move |p| scope.pods.as_ref().is_some_and(|s| s.matches(p.labels())))
            })
    }
}

// ----------------------------------------------------------------- sets

/// The addresses of a set, each with the number of selected pods that
/// have it (two pods may claim one address).
#[derive(Debug, Default)]
struct Members(BTreeMap<IpNet, u32>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Remove,
}

impl Members {
    /// Counts `addresses` in or out; the set `out` gains the addresses
    /// that become members and loses those that stop being ones.
    fn count(&mut self, addresses: &BTreeSet<IpNet>, sign: Sign, out: &mut BTreeSet<IpNet>) {
        for &a in addresses {
            match sign {
                Sign::Add => {
                    let n = self.0.entry(a).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        out.insert(a);
                    }
                }
                Sign::Remove => {
                    let Some(n) = self.0.get_mut(&a) else {
                        debug_assert!(false, "{a} removed from a set it is not in");
                        continue;
                    };
                    *n -= 1;
                    if *n == 0 {
                        self.0.remove(&a);
                        out.remove(&a);
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The set of the pods of a scope.
#[derive(Debug)]
struct ScopeSet {
    name: String,
    members: Members,
    /// How many policies use it.
    users: usize,
    /// Scratch: whether a namespace being relabelled moves in or out.
    flipped: bool,
}

/// A named port of a scope's pods: `(scope, protocol, port name)`.
type FamilyKey = (PodScope, u8, String);

/// The sets of a named port of a scope's pods, one per number.
#[derive(Debug)]
struct Family {
    /// The scope's set name, the prefix of the groups'.
    base: String,
    groups: BTreeMap<u16, Members>,
    /// The policies that use it.
    users: BTreeSet<ObjectKey>,
    /// Whether a number gained its first pod or lost its last since the
    /// users were compiled: their rules change.
    reshaped: bool,
    /// Scratch, as [`ScopeSet::flipped`].
    flipped: bool,
}

/// Every set the compiled policies use.
#[derive(Debug, Default)]
struct Registry {
    sets: BTreeMap<PodScope, ScopeSet>,
    families: BTreeMap<FamilyKey, Family>,
}

type OutSets = BTreeMap<String, BTreeSet<IpNet>>;

impl Registry {
    /// Counts a live pod of `namespace` (labelled `ns_labels`) in or out
    /// of every set that selects it (of those `flipped` marks, if
    /// `only_flipped`).
    fn contribute(
        &mut self,
        namespace: &str,
        ns_labels: &Labels,
        pod: &LiveState,
        sign: Sign,
        only_flipped: bool,
        out: &mut OutSets,
    ) {
        let labels = pod.labels();
        for (scope, set) in &mut self.sets {
            if (only_flipped && !set.flipped) || !scope.matches(namespace, || ns_labels, labels) {
                continue;
            }
            let members = out.get_mut(&set.name).expect("a set is in the output");
            set.members.count(&pod.addresses, sign, members);
        }
        for ((scope, protocol, port), family) in &mut self.families {
            if (only_flipped && !family.flipped) || !scope.matches(namespace, || ns_labels, labels)
            {
                continue;
            }
            let Some(n) = named_port(&pod.pod, port, *protocol) else {
                continue;
            };
            let name = named_port_set(&family.base, *protocol, port, n);
            let group = family.groups.entry(n).or_insert_with(|| {
                family.reshaped = true;
                Members::default()
            });
            let members = out.entry(name.clone()).or_default();
            group.count(&pod.addresses, sign, members);
            if group.is_empty() {
                family.groups.remove(&n);
                family.reshaped = true;
                out.remove(&name);
            }
        }
    }

    /// Namespace `name`'s labels went from `old` to `new`: its pods move
    /// in or out of the sets whose namespace selector tells them apart.
    fn relabel_namespace(
        &mut self,
        model: &Model,
        name: &str,
        old: &Labels,
        new: &Labels,
        out: &mut OutSets,
    ) {
        let Some(pods) = model.pods.get(name) else {
            return;
        };
        let flips = |scope: &PodScope| {
            scope.namespace_matches(name, || old) != scope.namespace_matches(name, || new)
        };
        let mut any = false;
        for (scope, set) in &mut self.sets {
            set.flipped = flips(scope);
            any |= set.flipped;
        }
        for ((scope, _, _), family) in &mut self.families {
            family.flipped = flips(scope);
            any |= family.flipped;
        }
        if !any {
            return;
        }
        for pod in pods.values() {
            self.contribute(name, old, pod, Sign::Remove, true, out);
            self.contribute(name, new, pod, Sign::Add, true, out);
        }
    }

    /// The set of `scope`, filled from `model` if it is new.
    fn scope_set(&mut self, scope: &PodScope, model: &Model, out: &mut OutSets) -> &ScopeSet {
        self.sets.entry(scope.clone()).or_insert_with(|| {
            let name = scope.set_name();
            let mut members = Members::default();
            let mut set = BTreeSet::new();
            for pod in model.select(scope) {
                members.count(&pod.addresses, Sign::Add, &mut set);
            }
            out.insert(name.clone(), set);
            ScopeSet {
                name,
                members,
                users: 0,
                flipped: false,
            }
        })
    }

    /// The family of `key`, filled from `model` if it is new.
    fn family(&mut self, key: &FamilyKey, model: &Model, out: &mut OutSets) -> &Family {
        self.families.entry(key.clone()).or_insert_with(|| {
            let (scope, protocol, port) = key;
            let base = scope.set_name();
            let mut groups: BTreeMap<u16, Members> = BTreeMap::new();
            for pod in model.select(scope) {
                if let Some(n) = named_port(&pod.pod, port, *protocol) {
                    let set = out
                        .entry(named_port_set(&base, *protocol, port, n))
                        .or_default();
                    groups
                        .entry(n)
                        .or_default()
                        .count(&pod.addresses, Sign::Add, set);
                }
            }
            Family {
                base,
                groups,
                users: BTreeSet::new(),
                reshaped: false,
                flipped: false,
            }
        })
    }

    fn use_set(&mut self, scope: &PodScope) {
        if let Some(set) = self.sets.get_mut(scope) {
            set.users += 1;
        }
    }

    fn release_set(&mut self, scope: &PodScope, out: &mut OutSets) {
        let Some(set) = self.sets.get_mut(scope) else {
            return;
        };
        set.users -= 1;
        if set.users == 0 {
            out.remove(&set.name);
            self.sets.remove(scope);
        }
    }

    fn use_family(&mut self, key: &FamilyKey, user: &ObjectKey) {
        if let Some(family) = self.families.get_mut(key) {
            family.users.insert(user.clone());
        }
    }

    fn release_family(&mut self, key: &FamilyKey, user: &ObjectKey, out: &mut OutSets) {
        let Some(family) = self.families.get_mut(key) else {
            return;
        };
        family.users.remove(user);
        if family.users.is_empty() {
            let (_, protocol, port) = key;
            for &n in family.groups.keys() {
                out.remove(&named_port_set(&family.base, *protocol, port, n));
            }
            self.families.remove(key);
        }
    }
}

/// The sets one policy uses, made on demand while it compiles.
struct Acquire<'a> {
    registry: &'a mut Registry,
    model: &'a Model,
    out: &'a mut OutSets,
    sets: BTreeSet<PodScope>,
    families: BTreeSet<FamilyKey>,
}

impl SetRegistry for Acquire<'_> {
    fn pods(&mut self, scope: &PodScope) -> String {
        self.sets.insert(scope.clone());
        self.registry
            .scope_set(scope, self.model, self.out)
            .name
            .clone()
    }

    fn named_port(&mut self, scope: &PodScope, protocol: u8, name: &str) -> BTreeMap<u16, String> {
        let key = (scope.clone(), protocol, name.to_owned());
        let family = self.registry.family(&key, self.model, self.out);
        let groups = family
            .groups
            .keys()
            .map(|&n| (n, named_port_set(&family.base, protocol, name, n)))
            .collect();
        self.families.insert(key);
        groups
    }
}

/// What the calculator keeps of a compiled NetworkPolicy.
#[derive(Debug)]
struct Compiled {
    /// Its policy's name.
    name: String,
    sets: BTreeSet<PodScope>,
    families: BTreeSet<FamilyKey>,
}
