//! The claims as this process knows them: one small record per claim, followed from the
//! claims' metadata watch, indexed by what the checks ask. A whole Lease metadata (managed
//! fields, labels, an annotation map) is several KiB an object; the record is the six values
//! the decisions read. Every check a reconcile makes is a lookup, never a walk of all claims:
//! at 10,000 providers that walk ran at each reconcile (BENCHMARKS.md, "Issue 26").
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

use super::{
    CLAIMED_AT_ANNOTATION, ENDPOINT_ANNOTATION, HOLDER_ANNOTATION, HOLDER_UID_ANNOTATION,
    PROVIDER_ANNOTATION, SCOPE_ANNOTATION,
};

/// What a claim says, as the checks read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The Lease's name.
    pub name: String,
    /// The Lease's uid (a precondition of its deletion).
    pub uid: Option<String>,
    /// `namespace/name` of the holding SecurityProvider.
    pub holder: Option<String>,
    /// uid of the holding SecurityProvider.
    pub holder_uid: Option<String>,
    /// The provider id claimed.
    pub provider: Option<String>,
    /// The canonical organization or tenant.
    pub scope: Option<String>,
    /// The canonical endpoint.
    pub endpoint: Option<String>,
    /// When the claim was taken: its annotation (to the nanosecond), else its creation time.
    pub claimed_at: Option<k8s_openapi::jiff::Timestamp>,
}

impl ClaimRecord {
    /// The record of a Lease's metadata.
    pub fn of(metadata: &ObjectMeta) -> ClaimRecord {
        let annotation = |key: &str| {
            metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        let claimed_at = annotation(CLAIMED_AT_ANNOTATION)
            .and_then(|at| at.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .or_else(|| metadata.creation_timestamp.as_ref().map(|t| t.0));
        ClaimRecord {
            name: metadata.name.clone().unwrap_or_default(),
            uid: metadata.uid.clone(),
            holder: annotation(HOLDER_ANNOTATION),
            holder_uid: annotation(HOLDER_UID_ANNOTATION),
            provider: annotation(PROVIDER_ANNOTATION),
            scope: annotation(SCOPE_ANNOTATION),
            endpoint: annotation(ENDPOINT_ANNOTATION),
            claimed_at,
        }
    }

    /// Whether the SecurityProvider with uid `uid` holds it.
    pub fn held_by(&self, uid: Option<&str>) -> bool {
        uid.is_some() && self.holder_uid.as_deref() == uid
    }
}

/// A key of an index: a hash, so an index costs a few bytes an entry; a collision only puts
/// one more candidate in a list that the caller filters on the record's own values.
fn key_of(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// The key claims on one provider id in one organization or tenant share, whatever the
/// endpoint's spelling.
pub fn partition_key(scope: &str, provider: &str) -> u64 {
    key_of(&[scope, provider])
}

/// The records and their indexes.
#[derive(Default)]
struct Index {
    by_name: HashMap<String, Arc<ClaimRecord>>,
    /// [`partition_key`] -> the claims on that provider id in that partition.
    by_partition: HashMap<u64, Vec<Arc<ClaimRecord>>>,
    /// Holder uid -> the claims it holds.
    by_holder: HashMap<u64, Vec<Arc<ClaimRecord>>>,
}

fn add(index: &mut HashMap<u64, Vec<Arc<ClaimRecord>>>, key: u64, record: &Arc<ClaimRecord>) {
    index.entry(key).or_default().push(record.clone());
}

fn drop_from(index: &mut HashMap<u64, Vec<Arc<ClaimRecord>>>, key: u64, name: &str) {
    if let Some(list) = index.get_mut(&key) {
        list.retain(|r| r.name != name);
        if list.is_empty() {
            index.remove(&key);
        }
    }
}

impl Index {
    fn keys(record: &ClaimRecord) -> (Option<u64>, Option<u64>) {
        let partition = record
            .provider
            .as_deref()
            .map(|p| partition_key(record.scope.as_deref().unwrap_or_default(), p));
        let holder = record.holder_uid.as_deref().map(|uid| key_of(&[uid]));
        (partition, holder)
    }

    fn insert(&mut self, record: ClaimRecord) {
        self.remove(&record.name.clone());
        let record = Arc::new(record);
        let (partition, holder) = Index::keys(&record);
        if let Some(key) = partition {
            add(&mut self.by_partition, key, &record);
        }
        if let Some(key) = holder {
            add(&mut self.by_holder, key, &record);
        }
        self.by_name.insert(record.name.clone(), record);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        let (partition, holder) = Index::keys(&old);
        if let Some(key) = partition {
            drop_from(&mut self.by_partition, key, name);
        }
        if let Some(key) = holder {
            drop_from(&mut self.by_holder, key, name);
        }
    }
}

/// The cache: the index in use, and the one a (re)list is building (a relist replaces the
/// index whole when it is done, as kube-runtime's reflector does, so a claim deleted while
/// the watch was down does not linger).
#[derive(Default)]
struct State {
    current: Index,
    building: Option<Index>,
}

/// The claims cache, shared by the watch that fills it and the checks that read it.
#[derive(Clone)]
pub struct ClaimCache {
    state: Arc<RwLock<State>>,
    listed: tokio::sync::watch::Receiver<bool>,
}

/// The watch's side of a [`ClaimCache`].
pub struct ClaimCacheWriter {
    state: Arc<RwLock<State>>,
    listed: tokio::sync::watch::Sender<bool>,
}

/// A new, empty cache and its writer.
pub fn claim_cache() -> (ClaimCache, ClaimCacheWriter) {
    let state = Arc::new(RwLock::new(State::default()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    (
        ClaimCache {
            state: state.clone(),
            listed: rx,
        },
        ClaimCacheWriter { state, listed: tx },
    )
}

impl ClaimCacheWriter {
    /// Follows one event of the claims' metadata watch.
    pub fn apply(&self, event: &watcher::Event<super::ClaimMeta>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(claim) => state.current.insert(ClaimRecord::of(&claim.metadata)),
            watcher::Event::Delete(claim) => state
                .current
                .remove(claim.metadata.name.as_deref().unwrap_or_default()),
            watcher::Event::Init => state.building = Some(Index::default()),
            watcher::Event::InitApply(claim) => state
                .building
                .get_or_insert_with(Index::default)
                .insert(ClaimRecord::of(&claim.metadata)),
            watcher::Event::InitDone => {
                state.current = state.building.take().unwrap_or_default();
                drop(state);
                self.listed.send_replace(true);
            }
        }
    }
}

impl ClaimCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The claim `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ClaimRecord>> {
        self.read().current.by_name.get(name).cloned()
    }

    /// The claims on `provider` in the partition `scope` (any endpoint).
    pub fn on_provider(&self, scope: &str, provider: &str) -> Vec<Arc<ClaimRecord>> {
        let key = partition_key(scope, provider);
        let state = self.read();
        let found = state.current.by_partition.get(&key);
        found
            .into_iter()
            .flatten()
            .filter(|r| r.provider.as_deref() == Some(provider))
            .filter(|r| r.scope.as_deref().unwrap_or_default() == scope)
            .cloned()
            .collect()
    }

    /// The claims the SecurityProvider with uid `uid` holds.
    pub fn held_by(&self, uid: &str) -> Vec<Arc<ClaimRecord>> {
        let state = self.read();
        let found = state.current.by_holder.get(&key_of(&[uid]));
        found
            .into_iter()
            .flatten()
            .filter(|r| r.held_by(Some(uid)))
            .cloned()
            .collect()
    }

    /// How many claims are cached (unit tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().current.by_name.len()
    }

    /// Resolves once the first list is in.
    pub async fn listed(&self) {
        let mut listed = self.listed.clone();
        let _ = listed.wait_for(|done| *done).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(name: &str, holder_uid: &str, scope: &str, provider: &str) -> super::super::ClaimMeta {
        let metadata = ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("lease-{name}")),
            annotations: Some(BTreeMap::from([
                (HOLDER_UID_ANNOTATION.into(), holder_uid.into()),
                (HOLDER_ANNOTATION.into(), format!("ns/{holder_uid}")),
                (SCOPE_ANNOTATION.into(), scope.into()),
                (PROVIDER_ANNOTATION.into(), provider.into()),
                (ENDPOINT_ANNOTATION.into(), "http://h".into()),
                (
                    CLAIMED_AT_ANNOTATION.into(),
                    "2026-12-06T16:45:37.5Z".into(),
                ),
                ("other.example/kept-out".into(), "x".into()),
            ])),
            ..ObjectMeta::default()
        };
        super::super::ClaimMeta {
            metadata,
            ..Default::default()
        }
    }

    fn names(records: Vec<Arc<ClaimRecord>>) -> Vec<String> {
        let mut names: Vec<_> = records.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn claims_are_found_by_provider_and_by_holder_and_follow_changes() {
        let (cache, writer) = claim_cache();
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(meta("a", "u1", "org", "idp")));
        writer.apply(&watcher::Event::InitApply(meta("b", "u2", "org", "idp")));
        writer.apply(&watcher::Event::InitApply(meta("c", "u1", "org", "other")));
        writer.apply(&watcher::Event::InitApply(meta("d", "u3", "org2", "idp")));
        // Nothing is visible before the list is done.
        assert_eq!(cache.len(), 0);
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(names(cache.on_provider("org", "idp")), ["a", "b"]);
        assert_eq!(names(cache.held_by("u1")), ["a", "c"]);
        let a = cache.get("a").unwrap();
        assert_eq!(a.holder.as_deref(), Some("ns/u1"));
        assert_eq!(a.endpoint.as_deref(), Some("http://h"));
        assert!(a.claimed_at.is_some());
        // A claim handed to another holder moves between the holder lists.
        writer.apply(&watcher::Event::Apply(meta("a", "u2", "org", "idp")));
        assert_eq!(names(cache.held_by("u1")), ["c"]);
        assert_eq!(names(cache.held_by("u2")), ["a", "b"]);
        writer.apply(&watcher::Event::Delete(meta("b", "u2", "org", "idp")));
        assert_eq!(names(cache.on_provider("org", "idp")), ["a"]);
        assert_eq!(names(cache.held_by("u2")), ["a"]);
    }

    #[test]
    fn a_relist_replaces_the_cache_whole() {
        let (cache, writer) = claim_cache();
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(meta("gone", "u1", "org", "idp")));
        writer.apply(&watcher::Event::InitDone);
        // The watch was down while "gone" was deleted: the relist does not show it.
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(meta("kept", "u2", "org", "idp")));
        assert_eq!(
            names(cache.on_provider("org", "idp")),
            ["gone"],
            "old view until done"
        );
        writer.apply(&watcher::Event::InitDone);
        assert_eq!(names(cache.on_provider("org", "idp")), ["kept"]);
        assert!(cache.held_by("u1").is_empty());
        assert!(cache.get("gone").is_none());
    }
}
