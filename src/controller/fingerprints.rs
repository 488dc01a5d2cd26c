//! What the controller remembers per watched object to tell a change that matters from one
//! that does not: one 64-bit hash of the object's identity and one of the watched property,
//! 16 bytes an object, where kube-runtime's `predicate_filter` (and our Secret-usage watcher
//! before) kept an `ObjectRef` or name strings per object (BENCHMARKS.md, "Figures behind the
//! code").
//!
//! The identity hash is keyed per process ([`RandomState`]), so nobody can choose object names
//! that collide; an accidental collision of two objects' 64-bit hashes (about 10^-11 for a
//! pair at 10,000 objects) would at worst hide one change until the object's next resync.
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher;

/// The last fingerprint seen per object, forgotten on delete; after a (re)list, objects the
/// list did not show (deleted while the watch was down) are forgotten too.
pub struct Fingerprints {
    keys: RandomState,
    seen: HashMap<u64, Entry>,
    /// Bumped when a (re)list starts; entries not seen since are dropped when it ends.
    generation: u32,
}

struct Entry {
    fingerprint: u64,
    generation: u32,
}

impl Default for Fingerprints {
    fn default() -> Self {
        Fingerprints {
            keys: RandomState::new(),
            seen: HashMap::new(),
            generation: 0,
        }
    }
}

impl Fingerprints {
    fn identity(&self, meta: &ObjectMeta) -> u64 {
        self.keys.hash_one((&meta.namespace, &meta.name, &meta.uid))
    }

    /// Records `fingerprint` for the object; true when it differs from the recorded one or
    /// none was recorded.
    pub fn changed(&mut self, meta: &ObjectMeta, fingerprint: u64) -> bool {
        self.replace(meta, fingerprint)
            .is_none_or(|old| old != fingerprint)
    }

    /// Records `fingerprint` for the object; returns the one recorded before, if any.
    pub fn replace(&mut self, meta: &ObjectMeta, fingerprint: u64) -> Option<u64> {
        let key = self.identity(meta);
        let entry = Entry {
            fingerprint,
            generation: self.generation,
        };
        self.seen.insert(key, entry).map(|old| old.fingerprint)
    }

    /// Forgets a deleted object; returns its last fingerprint, if one was recorded.
    pub fn forget(&mut self, meta: &ObjectMeta) -> Option<u64> {
        let key = self.identity(meta);
        self.seen.remove(&key).map(|old| old.fingerprint)
    }

    /// A (re)list starts.
    pub fn list_started(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// A (re)list ended: objects it did not show are gone. Returns their last fingerprints.
    pub fn list_done(&mut self) -> Vec<u64> {
        let generation = self.generation;
        let mut gone = Vec::new();
        self.seen.retain(|_, e| {
            let seen = e.generation == generation;
            if !seen {
                gone.push(e.fingerprint);
            }
            seen
        });
        self.seen.shrink_to_fit();
        gone
    }

    /// Follows a watch event: true when it should pass (a delete, the list markers, or an
    /// applied object whose `fingerprint` changed).
    pub fn follow<K: Resource>(
        &mut self,
        event: &watcher::Event<K>,
        fingerprint: impl Fn(&K) -> u64,
    ) -> bool {
        match event {
            watcher::Event::Init => {
                self.list_started();
                true
            }
            watcher::Event::InitDone => {
                let _ = self.list_done();
                true
            }
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                self.changed(obj.meta(), fingerprint(obj))
            }
            watcher::Event::Delete(obj) => {
                let _ = self.forget(obj.meta());
                true
            }
        }
    }

    /// A hash of `value` with this process's keys.
    pub fn hash<T: Hash>(&self, value: &T) -> u64 {
        self.keys.hash_one(value)
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no object is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SecurityProvider;

    fn sp(name: &str, uid: &str, generation: i64) -> SecurityProvider {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "SecurityProvider",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"connectionRef": "c", "coveo": {}}
        }))
        .unwrap()
    }

    fn generation(sp: &SecurityProvider) -> u64 {
        sp.metadata.generation.unwrap_or_default() as u64
    }

    #[test]
    fn only_a_changed_fingerprint_passes() {
        let mut prints = Fingerprints::default();
        let apply = |sp| watcher::Event::Apply(sp);
        assert!(prints.follow(&apply(sp("a", "u1", 1)), generation));
        assert!(!prints.follow(&apply(sp("a", "u1", 1)), generation));
        assert!(
            prints.follow(&apply(sp("b", "u2", 1)), generation),
            "another object"
        );
        assert!(prints.follow(&apply(sp("a", "u1", 2)), generation));
        // The same name with another uid is another object.
        assert!(prints.follow(&apply(sp("a", "u3", 2)), generation));
        assert_eq!(prints.len(), 3);
        assert!(prints.follow(&watcher::Event::Delete(sp("a", "u1", 2)), generation));
        assert_eq!(prints.len(), 2);
        assert!(
            prints.follow(&apply(sp("a", "u1", 2)), generation),
            "forgotten"
        );
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_the_watch_was_down() {
        let mut prints = Fingerprints::default();
        for (name, uid) in [("a", "u1"), ("b", "u2"), ("c", "u3")] {
            prints.follow(&watcher::Event::Apply(sp(name, uid, 1)), generation);
        }
        assert!(prints.follow(&watcher::Event::Init, generation));
        // The relist shows a and c unchanged (filtered) but not b.
        assert!(!prints.follow(&watcher::Event::InitApply(sp("a", "u1", 1)), generation));
        assert!(!prints.follow(&watcher::Event::InitApply(sp("c", "u3", 1)), generation));
        assert!(prints.follow(&watcher::Event::InitDone, generation));
        assert_eq!(prints.len(), 2);
        assert!(prints.follow(&watcher::Event::Apply(sp("b", "u2", 1)), generation));
        assert!(!prints.is_empty());
    }
}
