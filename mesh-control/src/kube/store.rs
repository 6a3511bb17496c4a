//! What meshd holds of the cluster: every watched object, converted once
//! when it arrives, keyed by kind, namespace and name. Watch events update
//! it; a relist replaces a kind's objects at once. The version moves only
//! when something the mesh reads changed, so a reconnect that lists the
//! same objects again pushes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_core::config::{Kind, Resource};
use tokio::sync::watch;

/// An object the store keeps: converted, or refused with the reasons.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// It converted and validated.
    Valid(Arc<Resource>),
    /// It did not; the lines say file (the object), field and fix. It is
    /// skipped and everything else keeps serving.
    Invalid(Vec<String>),
}

type Objects = BTreeMap<(String, String), Entry>;

#[derive(Debug, Default)]
struct State {
    objects: HashMap<Kind, Objects>,
    // A relist in progress, per kind: applied whole at its end.
    relisting: HashMap<Kind, Objects>,
    // Kinds whose first list completed (or that the cluster does not serve).
    synced: HashSet<Kind>,
    expected: HashSet<Kind>,
    version: u64,
    relists: u64,
}

/// The shared store; clones share it.
#[derive(Debug, Clone)]
pub struct KubeStore {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
}

/// A copy of the store's valid objects and its refusals.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The version this copy is of.
    pub version: u64,
    /// Every valid object.
    pub resources: Vec<Resource>,
    /// Objects skipped as invalid: (`Kind/namespace/name`, reasons).
    pub invalid: Vec<(String, Vec<String>)>,
}

impl KubeStore {
    /// A store expecting a first list of each of `kinds`.
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> Self {
        let state = State {
            expected: kinds.into_iter().collect(),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole maps behind: each
        // update is one insert or one swap.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self, st: &mut State) {
        st.version += 1;
        self.changed.send_replace(st.version);
    }

    /// The current version: it moves when what the store holds changes.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Changes of [`KubeStore::version`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// True once every expected kind has been listed once.
    pub fn synced(&self) -> bool {
        let st = self.lock();
        st.expected.iter().all(|k| st.synced.contains(k))
    }

    /// The kinds not yet listed.
    pub fn unsynced(&self) -> Vec<Kind> {
        let st = self.lock();
        let mut out: Vec<Kind> = st.expected.difference(&st.synced).copied().collect();
        out.sort();
        out
    }

    /// Counts `kind` as listed without objects (the cluster does not
    /// serve it yet); a later list fills it.
    pub fn mark_synced(&self, kind: Kind) {
        let mut st = self.lock();
        if st.synced.insert(kind) {
            self.bump(&mut st);
        }
    }

    /// An object was added or changed.
    pub fn apply(&self, kind: Kind, key: (String, String), entry: Entry) {
        let mut st = self.lock();
        let objects = st.objects.entry(kind).or_default();
        if objects.get(&key) == Some(&entry) {
            return;
        }
        objects.insert(key, entry);
        self.bump(&mut st);
    }

    /// An object was deleted.
    pub fn delete(&self, kind: Kind, key: &(String, String)) {
        let mut st = self.lock();
        if st
            .objects
            .get_mut(&kind)
            .and_then(|o| o.remove(key))
            .is_some()
        {
            self.bump(&mut st);
        }
    }

    /// A (re)list of `kind` starts.
    pub fn relist_start(&self, kind: Kind) {
        let mut st = self.lock();
        st.relists += 1;
        st.relisting.insert(kind, Objects::new());
    }

    /// How many lists have started, the first of each kind included: a
    /// watch that expired (410 Gone) or an API server that restarted
    /// lists again.
    pub fn relists(&self) -> u64 {
        self.lock().relists
    }

    /// An object of the list in progress.
    pub fn relist_apply(&self, kind: Kind, key: (String, String), entry: Entry) {
        self.lock()
            .relisting
            .entry(kind)
            .or_default()
            .insert(key, entry);
    }

    /// The list of `kind` is complete: it replaces what was held, and the
    /// version moves only if that differs.
    pub fn relist_done(&self, kind: Kind) {
        let mut st = self.lock();
        let listed = st.relisting.remove(&kind).unwrap_or_default();
        let first = st.synced.insert(kind);
        let same = st
            .objects
            .get(&kind)
            .map_or(listed.is_empty(), |o| *o == listed);
        st.objects.insert(kind, listed);
        if first || !same {
            self.bump(&mut st);
        }
    }

    /// Copies the valid objects (in kind order, then namespace and name,
    /// so equal stores give equal configs) and the refusals.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let mut kinds: Vec<&Kind> = st.objects.keys().collect();
        kinds.sort();
        let mut snap = Snapshot {
            version: st.version,
            ..Snapshot::default()
        };
        for kind in kinds {
            for ((ns, name), e) in &st.objects[kind] {
                match e {
                    Entry::Valid(r) => snap.resources.push(Resource::clone(r)),
                    Entry::Invalid(why) => snap
                        .invalid
                        .push((format!("{kind}/{ns}/{name}"), why.clone())),
                }
            }
        }
        snap
    }

    /// The names of the objects of `kind` held (valid or not).
    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.lock()
            .objects
            .get(&kind)
            .map(|o| o.keys().map(|(_, name)| name.clone()).collect())
            .unwrap_or_default()
    }

    /// The number of objects held per kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let st = self.lock();
        st.objects
            .iter()
            .map(|(k, o)| (k.to_string(), o.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn invalid(why: &str) -> Entry {
        Entry::Invalid(vec![why.to_string()])
    }

    fn key(n: &str) -> (String, String) {
        ("ns".into(), n.into())
    }

    #[test]
    fn relisting_the_same_objects_does_not_move_the_version() {
        let s = KubeStore::new([Kind::Service, Kind::Pod]);
        assert!(!s.synced());
        s.relist_start(Kind::Service);
        s.relist_apply(Kind::Service, key("a"), invalid("x"));
        s.relist_done(Kind::Service);
        assert_eq!(s.unsynced(), vec![Kind::Pod]);
        s.mark_synced(Kind::Pod);
        assert!(s.synced());
        let v = s.version();
        // A reconnect lists the same thing again.
        s.relist_start(Kind::Service);
        s.relist_apply(Kind::Service, key("a"), invalid("x"));
        s.relist_done(Kind::Service);
        assert_eq!(s.version(), v);
        // The same event twice moves it once.
        s.apply(Kind::Service, key("b"), invalid("y"));
        s.apply(Kind::Service, key("b"), invalid("y"));
        assert_eq!(s.version(), v + 1);
        // A relist drops what is gone.
        s.relist_start(Kind::Service);
        s.relist_apply(Kind::Service, key("b"), invalid("y"));
        s.relist_done(Kind::Service);
        assert_eq!(s.version(), v + 2);
        let snap = s.snapshot();
        assert_eq!(snap.invalid.len(), 1);
        assert_eq!(snap.invalid[0].0, "Service/ns/b");
        s.delete(Kind::Service, &key("b"));
        s.delete(Kind::Service, &key("b"));
        assert_eq!(s.version(), v + 3);
    }
}
