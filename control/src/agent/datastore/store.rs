//! The in-memory store every source feeds: typed objects by key, whether
//! each kind has been listed completely yet, and the agent's [`Revision`],
//! advanced once per change that actually changes something.
//!
//! Readers take an [`Objects`] snapshot: an immutable view, cheap to take
//! (one shared map per kind) and never changed under them, which is what
//! the pure calculation runs on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use super::crd::IPPool;
use super::objects::{Kind, Object, ObjectKey};
use crate::agent::revision::Revision;

type KindMap = BTreeMap<ObjectKey, Object>;

/// An immutable snapshot of the store's objects.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    kinds: [Arc<KindMap>; Kind::COUNT],
}

/// Equal snapshots; a kind shared by both is equal without a look at its
/// objects.
impl PartialEq for Objects {
    fn eq(&self, other: &Self) -> bool {
        self.kinds
            .iter()
            .zip(&other.kinds)
            .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
    }
}

impl Objects {
    /// A snapshot holding exactly `objects` (a later duplicate key wins).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Self {
        let mut maps: [KindMap; Kind::COUNT] = Default::default();
        for o in objects {
            maps[o.kind().index()].insert(o.key(), o);
        }
        Objects {
            kinds: maps.map(Arc::new),
        }
    }

    /// A snapshot holding `objects`, given with their keys in key order
    /// (cheaper than [`Objects::from_objects`] for keys already known).
    pub fn from_sorted(objects: impl IntoIterator<Item = (ObjectKey, Object)>) -> Self {
        let mut lists: [Vec<(ObjectKey, Object)>; Kind::COUNT] = Default::default();
        for (key, object) in objects {
            debug_assert_eq!(key, object.key());
            lists[key.kind.index()].push((key, object));
        }
        // Collecting sorted pairs builds the map in one pass.
        Objects {
            kinds: lists.map(|list| Arc::new(list.into_iter().collect())),
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.kinds[key.kind.index()].get(key)
    }

    /// Every object of `kind`, by key.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> + '_ {
        self.kinds[kind.index()].values()
    }

    /// The keys of `kind` whose objects differ between `before` and this
    /// snapshot (added, removed or changed), in key order. Cheap where
    /// the two share objects: a kind or object shared by both is not
    /// looked into.
    pub fn changed(&self, before: &Objects, kind: Kind) -> Vec<ObjectKey> {
        let (old, new) = (&before.kinds[kind.index()], &self.kinds[kind.index()]);
        if Arc::ptr_eq(old, new) {
            return Vec::new();
        }
        let mut changed = Vec::new();
        let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => return changed,
                (Some((k, _)), None) => {
                    changed.push((*k).clone());
                    old.next();
                }
                (None, Some((k, _))) => {
                    changed.push((*k).clone());
                    new.next();
                }
                (Some((ko, vo)), Some((kn, vn))) => match ko.cmp(kn) {
                    std::cmp::Ordering::Less => {
                        changed.push((*ko).clone());
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        changed.push((*kn).clone());
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if vo != vn {
                            changed.push((*kn).clone());
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
    }

    /// Every object, kind by kind.
    pub fn iter(&self) -> impl Iterator<Item = &Object> + '_ {
        self.kinds.iter().flat_map(|m| m.values())
    }

    pub fn len(&self) -> usize {
        self.kinds.iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self.get(&ObjectKey::new(Kind::Pod, namespace, name)) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.get(&ObjectKey::new(Kind::Namespace, "", name)) {
            Some(Object::Namespace(n)) => Some(n),
            _ => None,
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        match self.get(&ObjectKey::new(Kind::Node, "", name)) {
            Some(Object::Node(n)) => Some(n),
            _ => None,
        }
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> + '_ {
        self.of_kind(Kind::Pod).filter_map(|o| match o {
            Object::Pod(p) => Some(&**p),
            _ => None,
        })
    }

    pub fn ip_pools(&self) -> impl Iterator<Item = &IPPool> + '_ {
        self.of_kind(Kind::IpPool).filter_map(|o| match o {
            Object::IpPool(p) => Some(&**p),
            _ => None,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    objects: Objects,
    /// Whether each kind has been listed completely at least once.
    listed: [bool; Kind::COUNT],
}

/// The shared store. Cloning is cheap; clones share the objects.
#[derive(Debug, Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    revision: Revision,
}

impl Store {
    /// An empty store that advances `revision` on every change.
    pub fn new(revision: Revision) -> Self {
        Store {
            state: Arc::default(),
            revision,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("store lock poisoned")
    }

    pub fn revision(&self) -> &Revision {
        &self.revision
    }

    pub fn snapshot(&self) -> Objects {
        self.lock().objects.clone()
    }

    /// Whether every kind has been listed completely at least once.
    pub fn is_synced(&self) -> bool {
        self.lock().listed.iter().all(|&l| l)
    }

    /// The kinds not listed completely yet.
    pub fn unsynced_kinds(&self) -> Vec<Kind> {
        let st = self.lock();
        Kind::ALL
            .into_iter()
            .filter(|k| !st.listed[k.index()])
            .collect()
    }

    /// Adds or replaces one object. Returns whether anything changed.
    pub fn apply(&self, object: Object) -> bool {
        let mut st = self.lock();
        let key = object.key();
        let map = &mut st.objects.kinds[key.kind.index()];
        if map.get(&key) == Some(&object) {
            return false;
        }
        Arc::make_mut(map).insert(key, object);
        self.revision.advance();
        true
    }

    /// Removes one object. Returns whether it was there.
    pub fn delete(&self, key: &ObjectKey) -> bool {
        let mut st = self.lock();
        let map = &mut st.objects.kinds[key.kind.index()];
        if !map.contains_key(key) {
            return false;
        }
        Arc::make_mut(map).remove(key);
        self.revision.advance();
        true
    }

    /// Replaces every object of `kind` with `objects` (a complete listing)
    /// and marks the kind listed. Returns whether anything changed; the
    /// revision advances once for the whole replacement, and also for the
    /// kind's first listing, changed or not (having listed is news).
    pub fn replace_kind(&self, kind: Kind, objects: Vec<Object>) -> bool {
        let mut fresh = KindMap::new();
        for o in objects.into_iter().filter(|o| o.kind() == kind) {
            fresh.insert(o.key(), o);
        }
        let mut st = self.lock();
        let first = !std::mem::replace(&mut st.listed[kind.index()], true);
        let changed = *st.objects.kinds[kind.index()] != fresh;
        if changed {
            st.objects.kinds[kind.index()] = Arc::new(fresh);
        }
        if changed || first {
            self.revision.advance();
        }
        changed
    }

    /// Replaces everything with `objects` (a complete listing of every
    /// kind) and marks every kind listed. The revision advances once if
    /// anything changed, on the first complete listing, or if `force` (the
    /// source saw a change that happens to leave the objects as they were).
    /// A kind whose objects are those the store has keeps the store's
    /// map, so that snapshots before and after share it.
    pub fn replace_all(&self, objects: Objects, force: bool) -> bool {
        let mut st = self.lock();
        let first = !st.listed.iter().all(|&l| l);
        st.listed = [true; Kind::COUNT];
        let mut changed = false;
        for (have, fresh) in st.objects.kinds.iter_mut().zip(objects.kinds) {
            if !Arc::ptr_eq(have, &fresh) && *have != fresh {
                *have = fresh;
                changed = true;
            }
        }
        if changed || first || force {
            self.revision.advance();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::datastore::objects::StoredKind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, label: &str) -> Object {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_owned(), label.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
        .into_object()
    }

    #[test]
    fn revision_advances_only_on_real_changes() {
        let store = Store::new(Revision::new());
        assert!(store.apply(pod("a", "x")));
        assert_eq!(store.revision().current(), 1);
        assert!(!store.apply(pod("a", "x")), "same object again");
        assert_eq!(store.revision().current(), 1);
        assert!(store.apply(pod("a", "y")));
        assert_eq!(store.revision().current(), 2);
        assert!(store.delete(&ObjectKey::new(Kind::Pod, "default", "a")));
        assert!(!store.delete(&ObjectKey::new(Kind::Pod, "default", "a")));
        assert_eq!(store.revision().current(), 3);
    }

    #[test]
    fn snapshots_do_not_change_under_their_reader() {
        let store = Store::new(Revision::new());
        store.apply(pod("a", "x"));
        let before = store.snapshot();
        store.apply(pod("b", "x"));
        assert_eq!(before.pods().count(), 1);
        assert_eq!(store.snapshot().pods().count(), 2);
    }

    #[test]
    fn replacing_a_kind_marks_it_listed_and_advances_once() {
        let store = Store::new(Revision::new());
        assert!(!store.is_synced());
        store.apply(pod("old", "x"));
        assert!(store.replace_kind(Kind::Pod, vec![pod("a", "x"), pod("b", "x")]));
        assert_eq!(store.revision().current(), 2);
        let names: Vec<_> = store
            .snapshot()
            .pods()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!store.replace_kind(Kind::Pod, vec![pod("a", "x"), pod("b", "x")]));
        assert_eq!(store.revision().current(), 2);
        assert_eq!(store.unsynced_kinds().len(), Kind::COUNT - 1);
        // A first listing is news even when it finds nothing.
        assert!(!store.replace_kind(Kind::Node, vec![]));
        assert_eq!(store.revision().current(), 3);
        store.replace_all(store.snapshot(), false);
        assert!(store.is_synced());
        assert_eq!(store.revision().current(), 4, "first complete listing");
        store.replace_all(store.snapshot(), false);
        assert_eq!(store.revision().current(), 4);
        store.replace_all(store.snapshot(), true);
        assert_eq!(store.revision().current(), 5, "forced");
    }
}
