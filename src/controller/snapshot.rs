//! Batch observation: one paged list of a connection's providers serves the resyncs of every
//! provider of that connection, so a resync of N providers costs about N/page-size remote
//! reads instead of N.
//!
//! Rules that keep it safe:
//! * only resyncs of objects already in sync may use a snapshot (the caller decides; a spec
//!   change, a refresh request or a settling provider reads fresh);
//! * only a *hit* is trusted: a provider missing from the snapshot is read with a direct GET
//!   (it may have been created after the list started), so nothing is ever created on the
//!   word of a snapshot;
//! * a snapshot older than `max_age` is replaced; the first reconcile that finds it stale
//!   lists, the others of the same connection wait for that list (single flight) instead of
//!   listing too, but only for [`SNAPSHOT_WAIT`]: behind a slow or hanging list they read
//!   directly rather than hold their reconcile slots;
//! * our own creates and updates are written into the snapshot, deletes removed from it;
//! * the caller re-reads before any write planned from a snapshot.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{ObservedProvider, ProviderBackend};

/// How long a snapshot serves resyncs: the shortest time between two resyncs of one object
/// (the resync interval minus its 10 % jitter). So every resync still reads remote state newer
/// than its previous read, and a resync wave, however spread, costs about one paged list
/// (with half the interval, a wave wider than that would cost two).
pub fn snapshot_max_age(resync_interval: Duration) -> Duration {
    resync_interval * 9 / 10
}

/// How long a resync waits for another reconcile's list of the same connection before it
/// reads its provider directly.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// One list result. `providers` is None when the list failed or the backend has no bulk
/// read: until it expires, reconciles fall back to direct reads instead of retrying the
/// list once each.
struct Snapshot {
    taken: Instant,
    providers: Option<HashMap<String, ObservedProvider>>,
}

#[derive(Default)]
struct Slot {
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
}

/// Snapshots per connection. `K` identifies the connection *and its version* (uid and
/// generation): a changed connection (another endpoint or organization) starts afresh. Not
/// the backend client: several reconciles may build one at once after a start, and they all
/// read the same remote system.
pub struct Snapshots<K> {
    slots: Mutex<HashMap<K, Arc<Slot>>>,
    max_age: Duration,
}

impl<K: Hash + Eq + Clone> Snapshots<K> {
    /// Snapshots used for at most `max_age` (zero disables batch observation).
    pub fn new(max_age: Duration) -> Self {
        Snapshots {
            slots: Mutex::new(HashMap::new()),
            max_age,
        }
    }

    fn slot(&self, key: &K) -> Arc<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The provider `remote_id` as seen by a snapshot of the connection no older than
    /// `max_age`, listing first when needed. None means "read it directly": not in the
    /// snapshot, no bulk read, or the list failed.
    pub async fn lookup(
        &self,
        key: &K,
        backend: &Arc<dyn ProviderBackend>,
        remote_id: &str,
    ) -> Option<ObservedProvider> {
        if self.max_age.is_zero() {
            return None;
        }
        let slot = self.slot(key);
        // Held across the list: concurrent reconciles of this connection wait here and then
        // use the fresh snapshot, unless the list takes longer than a short wait.
        let Ok(mut guard) = tokio::time::timeout(SNAPSHOT_WAIT, slot.snapshot.lock()).await else {
            tracing::debug!("batch observation still listing; reading the provider directly");
            return None;
        };
        let usable = guard
            .as_ref()
            .is_some_and(|s| s.taken.elapsed() < self.max_age);
        if !usable {
            let taken = Instant::now();
            let providers = match backend.observe_all().await {
                Ok(Some(list)) => Some(
                    list.into_iter()
                        .map(|p| (p.remote_id.clone(), p))
                        .collect::<HashMap<_, _>>(),
                ),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "batch observation failed; reading providers one by one");
                    None
                }
            };
            *guard = Some(Snapshot { taken, providers });
        }
        guard
            .as_ref()
            .and_then(|s| s.providers.as_ref())
            .and_then(|p| p.get(remote_id).cloned())
    }

    /// Drops the snapshots whose key fails `keep` (an old version of a connection, a deleted
    /// connection): their providers would otherwise stay in memory for good.
    pub fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }

    /// How many connections (and versions) have a snapshot slot.
    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Records what a create, update or direct read returned, so the snapshot does not
    /// contradict our own writes.
    pub fn record(&self, key: &K, observed: &ObservedProvider) {
        self.edit(key, |p| {
            p.insert(observed.remote_id.clone(), observed.clone());
        });
    }

    /// Forgets a deleted provider.
    pub fn forget(&self, key: &K, remote_id: &str) {
        self.edit(key, |p| {
            p.remove(remote_id);
        });
    }

    fn edit(&self, key: &K, f: impl FnOnce(&mut HashMap<String, ObservedProvider>)) {
        let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        else {
            return;
        };
        // A list in flight holds the lock; its result predates our write and gets no entry
        // for it at worst, which only costs a direct read later.
        if let Ok(mut guard) = slot.snapshot.try_lock()
            && let Some(providers) = guard.as_mut().and_then(|s| s.providers.as_mut())
        {
            f(providers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::coveo::CoveoConfig;
    use crate::backend::{ProviderConfig, ProviderKey, RemoteHealth, RemoteState};
    use crate::error::RemoteError;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn provider(id: &str, name: &str) -> ObservedProvider {
        ObservedProvider {
            remote_id: id.into(),
            config: ProviderConfig::Coveo(CoveoConfig::desired(id, name, &Default::default())),
            state: RemoteState::default(),
            health: RemoteHealth::Healthy,
        }
    }

    /// Lists `ids` after 50 ms (virtual time), counting lists and single reads.
    struct Fake {
        ids: Mutex<Vec<String>>,
        lists: AtomicU32,
        fail: bool,
        delay: Mutex<Duration>,
    }

    #[async_trait]
    impl ProviderBackend for Fake {
        async fn observe(&self, _: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
            unimplemented!()
        }
        async fn create(&self, _: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
            unimplemented!()
        }
        async fn update(
            &self,
            _: &ObservedProvider,
            _: &ProviderConfig,
        ) -> Result<ObservedProvider, RemoteError> {
            unimplemented!()
        }
        async fn verify_credentials(&self) -> Result<(), RemoteError> {
            unimplemented!()
        }
        async fn delete(&self, _: &str) -> Result<bool, RemoteError> {
            unimplemented!()
        }
        async fn refresh(&self, _: &str) -> Result<bool, RemoteError> {
            unimplemented!()
        }
        async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            if self.fail {
                return Err(RemoteError::transport(
                    "coveo",
                    "list",
                    crate::error::RemoteErrorKind::Unavailable,
                    "down",
                ));
            }
            let ids = self.ids.lock().unwrap().clone();
            Ok(ids.iter().map(|id| provider(id, "n")).collect())
        }
    }

    fn fake(ids: &[&str], fail: bool) -> Arc<Fake> {
        Arc::new(Fake {
            ids: Mutex::new(ids.iter().map(|s| s.to_string()).collect()),
            lists: AtomicU32::new(0),
            fail,
            delay: Mutex::new(Duration::from_millis(50)),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_list() {
        let f = fake(&["a", "b", "c"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Arc::new(Snapshots::<&str>::new(Duration::from_secs(10)));
        let lookups = (0..100).map(|i| {
            let (snaps, backend) = (snaps.clone(), backend.clone());
            async move {
                let id = ["a", "b", "c", "zz"][i % 4];
                snaps.lookup(&"conn", &backend, id).await
            }
        });
        let results = futures::future::join_all(lookups).await;
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|r| r.is_some()).count(), 75);
        // A miss is never reported as "absent": None means read it directly.
        assert!(results[3].is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_behind_a_hanging_list_give_up_after_a_short_wait() {
        let f = fake(&["a"], false);
        *f.delay.lock().unwrap() = Duration::from_secs(600);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Arc::new(Snapshots::<&str>::new(Duration::from_secs(10)));
        let lister = {
            let (snaps, backend) = (snaps.clone(), backend.clone());
            tokio::spawn(async move { snaps.lookup(&"conn", &backend, "a").await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = tokio::time::Instant::now();
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_none());
        assert_eq!(
            started.elapsed(),
            SNAPSHOT_WAIT,
            "read directly after the wait"
        );
        assert_eq!(f.lists.load(Ordering::SeqCst), 1, "no second list");
        lister.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn stale_snapshots_are_replaced_and_connections_have_their_own() {
        let f = fake(&["a"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(10));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
        f.ids.lock().unwrap().push("b".into());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(snaps.lookup(&"conn", &backend, "b").await.is_some());
        assert_eq!(f.lists.load(Ordering::SeqCst), 2);
        // Another client of the same connection (built concurrently at start) shares it.
        let other: Arc<dyn ProviderBackend> = fake(&[], false);
        assert!(snaps.lookup(&"conn", &other, "b").await.is_some());
        // Other connections, or another version of it, have their own snapshot.
        assert!(snaps.lookup(&"other", &backend, "a").await.is_some());
        assert_eq!(f.lists.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn own_writes_update_the_snapshot() {
        let f = fake(&["a"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(10));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        snaps.record(&"conn", &provider("a", "renamed"));
        snaps.record(&"conn", &provider("new", "n"));
        let a = snaps.lookup(&"conn", &backend, "a").await.unwrap();
        assert_eq!(a, provider("a", "renamed"));
        assert!(snaps.lookup(&"conn", &backend, "new").await.is_some());
        snaps.forget(&"conn", "a");
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_none());
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_list_falls_back_to_direct_reads_without_relisting_each_time() {
        let f = fake(&["a"], true);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(10));
        for _ in 0..10 {
            assert!(snaps.lookup(&"conn", &backend, "a").await.is_none());
        }
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
        let disabled = Snapshots::<&str>::new(Duration::ZERO);
        assert!(disabled.lookup(&"conn", &backend, "a").await.is_none());
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
    }
}
