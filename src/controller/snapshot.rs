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
//! * a snapshot older than `max_age` is not used. The first lookup shortly before that age
//!   (twice the previous list's duration) lists again in the background (single flight, in a task of its own) while the
//!   current snapshot keeps serving, so resyncs do not wait for lists in their reconcile
//!   slots; only without any usable snapshot (at start, after a failed list) do lookups wait
//!   for the list, and only for [`SNAPSHOT_WAIT`]: behind a slow or hanging list they read
//!   directly rather than hold their reconcile slots;
//! * our own creates and updates are written into the snapshot, deletes removed from it, and
//!   replayed on the result of a list that was in flight meanwhile (it may predate them);
//! * the caller re-reads before any write planned from a snapshot.
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
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
/// reads its provider directly (only when no snapshot is usable: at start, or after a list
/// failed).
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// How long before a snapshot expires the first lookup starts the next list in the
/// background, while the current snapshot keeps serving: twice the time the previous list
/// took, at least [`MIN_REFRESH_LEAD`] and at most half the snapshot's life. So resyncs do not
/// wait for lists in their reconcile slots once a first snapshot exists, and a resync period
/// still costs about one list (a fixed share of the life read two per period: BENCHMARKS.md,
/// "Figures behind the code").
fn refresh_lead(last_list: Duration, max_age: Duration) -> Duration {
    (last_list * 2).clamp(MIN_REFRESH_LEAD.min(max_age / 2), max_age / 2)
}

/// The shortest lead of a background refresh.
const MIN_REFRESH_LEAD: Duration = Duration::from_millis(500);

/// One list result. `providers` is None when the list failed: until it expires, reconciles
/// fall back to direct reads instead of retrying the list once each.
struct Snapshot {
    taken: Instant,
    providers: Option<Providers>,
}

/// A snapshot's providers by remote id, each kept as its compact JSON encoding and decoded
/// when a resync looks it up: a decoded `ObservedProvider` costs several times the heap of its
/// encoding (every small `BTreeMap` of it allocates a whole leaf node; BENCHMARKS.md, "Figures
/// behind the code"), and decoding one entry costs far less than the remote read it replaces.
/// Entries are shared: a refresh keeps the previous snapshot's entry for a provider whose
/// encoding did not change, so while it runs the two snapshots hold one copy of each unchanged
/// provider, not two (the peak of a refresh; BENCHMARKS.md, "Figures behind the code").
type Providers = HashMap<Box<str>, Entry>;

/// One provider's compact encoding.
type Entry = Arc<[u8]>;

/// The compact form of a provider in a snapshot; None if it cannot be encoded (the provider
/// is then read directly at its resync).
fn encode(observed: &ObservedProvider) -> Option<Entry> {
    serde_json::to_vec(observed)
        .map(Entry::from)
        .inspect_err(|e| tracing::debug!(error = %e, "provider not kept in the batch snapshot"))
        .ok()
}

fn decode(entry: &[u8]) -> Option<ObservedProvider> {
    serde_json::from_slice(entry)
        .inspect_err(
            |e| tracing::debug!(error = %e, "batch snapshot entry unreadable; reading directly"),
        )
        .ok()
}

/// Our own writes while a list is in flight: the list may predate them, so they are applied
/// again on its result. A provider that cannot be encoded is forgotten (read directly).
enum Edit {
    Record(Box<str>, Entry),
    Forget(Box<str>),
}

#[derive(Default)]
struct State {
    snapshot: Option<Snapshot>,
    /// A list of this connection is running (single flight).
    listing: bool,
    edits: Vec<Edit>,
    /// After a failed background list: no other one before this instant.
    quiet_until: Option<Instant>,
    /// How long the latest list took.
    last_list: Duration,
}

struct Slot {
    state: Mutex<State>,
    /// Bumped when a list ends: lookups without a usable snapshot wait for it.
    lists_done: watch::Sender<u64>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            state: Mutex::default(),
            lists_done: watch::Sender::new(0),
        }
    }
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of `remote_id` in the current snapshot, shared.
    fn current_entry(&self, remote_id: &str) -> Option<Entry> {
        let state = self.state();
        state
            .snapshot
            .as_ref()?
            .providers
            .as_ref()?
            .get(remote_id)
            .cloned()
    }
}

/// What a lookup finds in a slot.
// One lives for the length of a lookup: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Found {
    /// A snapshot young enough (maybe with a background list started).
    Usable(Option<ObservedProvider>),
    /// None usable: wait for the list in flight (started if needed).
    Wait(watch::Receiver<u64>),
}

/// The remote ids a list keeps: those of the providers this replica reconciles (its shard),
/// so that a snapshot holds nothing a resync of this replica will look up. Called once per
/// list, when the list starts.
pub type Scope = Arc<dyn Fn() -> HashSet<String> + Send + Sync>;

/// Snapshots per connection. `K` identifies the connection *and its version* (uid and
/// generation): a changed connection (another endpoint or organization) starts afresh. Not
/// the backend client: several reconciles may build one at once after a start, and they all
/// read the same remote system.
pub struct Snapshots<K> {
    slots: Mutex<HashMap<K, Arc<Slot>>>,
    max_age: Duration,
    scope: OnceLock<Scope>,
}

impl<K: Hash + Eq + Clone> Snapshots<K> {
    /// Snapshots used for at most `max_age` (zero disables batch observation).
    pub fn new(max_age: Duration) -> Self {
        Snapshots {
            slots: Mutex::new(HashMap::new()),
            max_age,
            scope: OnceLock::new(),
        }
    }

    /// Keeps only the providers in `scope` from each list (unset: every provider listed).
    pub fn set_scope(&self, scope: Scope) {
        let _ = self.scope.set(scope);
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
    /// `max_age`. None means "read it directly": not in the snapshot, or the list failed. A snapshot close to its end (see [`refresh_lead`]) still serves while a list runs
    /// in the background; only without a usable snapshot does a lookup wait for a list, and
    /// then for [`SNAPSHOT_WAIT`] at most.
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
        let mut done = match self.find(&slot, backend, remote_id) {
            Found::Usable(found) => return found,
            Found::Wait(done) => done,
        };
        let waited = tokio::time::timeout(SNAPSHOT_WAIT, done.changed()).await;
        if !matches!(waited, Ok(Ok(()))) {
            tracing::debug!("batch observation still listing; reading the provider directly");
            return None;
        }
        let state = slot.state();
        let snapshot = state.snapshot.as_ref()?;
        if snapshot.taken.elapsed() >= self.max_age {
            return None;
        }
        decode(snapshot.providers.as_ref()?.get(remote_id)?)
    }

    fn find(&self, slot: &Arc<Slot>, backend: &Arc<dyn ProviderBackend>, id: &str) -> Found {
        let mut state = slot.state();
        let age = state.snapshot.as_ref().map(|s| s.taken.elapsed());
        let usable = age.is_some_and(|age| age < self.max_age);
        let refresh_at = self.max_age - refresh_lead(state.last_list, self.max_age);
        let due = !usable
            || (age.is_some_and(|age| age >= refresh_at)
                && state.quiet_until.is_none_or(|t| Instant::now() >= t));
        // Subscribed under the lock: a list ending right after it is still seen.
        let done = slot.lists_done.subscribe();
        if due && !state.listing {
            state.listing = true;
            state.edits.clear();
            let scope = self.scope.get().cloned();
            tokio::spawn(list(slot.clone(), backend.clone(), self.max_age, scope));
        }
        if usable {
            let snapshot = state.snapshot.as_ref();
            let found = snapshot.and_then(|s| decode(s.providers.as_ref()?.get(id)?));
            return Found::Usable(found);
        }
        Found::Wait(done)
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
        let id = observed.remote_id.as_str().into();
        let edit = match encode(observed) {
            Some(entry) => Edit::Record(id, entry),
            None => Edit::Forget(id),
        };
        self.edit(key, edit);
    }

    /// Forgets a deleted provider.
    pub fn forget(&self, key: &K, remote_id: &str) {
        self.edit(key, Edit::Forget(remote_id.into()));
    }

    fn edit(&self, key: &K, edit: Edit) {
        let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        else {
            return;
        };
        let mut state = slot.state();
        if let Some(providers) = state.snapshot.as_mut().and_then(|s| s.providers.as_mut()) {
            apply(providers, &edit);
        }
        // A list in flight may have read the provider before this write: replay it on the
        // list's result.
        if state.listing {
            state.edits.push(edit);
        }
    }
}

fn apply(providers: &mut Providers, edit: &Edit) {
    match edit {
        Edit::Record(id, entry) => {
            providers.insert(id.clone(), entry.clone());
        }
        Edit::Forget(id) => {
            providers.remove(id);
        }
    }
}

/// Every provider of the connection in scope, as compact entries (None: the list failed). The
/// scope is taken when the list starts: providers this replica creates or reads meanwhile reach
/// the snapshot as edits, replayed by [`list`]. An entry equal to the one `slot`'s current
/// snapshot holds is that one, shared.
async fn read_all(
    slot: &Slot,
    backend: &dyn ProviderBackend,
    scope: Option<Scope>,
) -> Option<Providers> {
    let keep = scope.map(|scope| scope());
    let mut providers = Providers::with_capacity(keep.as_ref().map_or(0, HashSet::len));
    // Each provider is encoded (or dropped, when out of scope) as its page arrives, so a list
    // never holds the whole connection decoded: the peak of a refresh is the old snapshot, the
    // new one's compact entries and the pages in flight.
    let listed = backend
        .observe_each(&mut |p| {
            if keep.as_ref().is_none_or(|k| k.contains(&p.remote_id))
                && let Some(entry) = encode(&p)
            {
                let entry = slot
                    .current_entry(&p.remote_id)
                    .filter(|current| *current == entry)
                    .unwrap_or(entry);
                providers.insert(p.remote_id.into_boxed_str(), entry);
            }
        })
        .await;
    match listed {
        Ok(()) => {
            providers.shrink_to_fit();
            Some(providers)
        }
        Err(e) => {
            tracing::debug!(error = %e, "batch observation failed; reading providers one by one");
            None
        }
    }
}

/// Lists the connection's providers into `slot`, in a task of its own so that a reconcile
/// that gives up waiting (or is cancelled) does not cancel the list the others wait for.
async fn list(
    slot: Arc<Slot>,
    backend: Arc<dyn ProviderBackend>,
    max_age: Duration,
    scope: Option<Scope>,
) {
    let taken = Instant::now();
    let listed = read_all(&slot, backend.as_ref(), scope).await;
    let mut state = slot.state();
    let edits = std::mem::take(&mut state.edits);
    state.listing = false;
    state.last_list = taken.elapsed();
    let still_usable = state
        .snapshot
        .as_ref()
        .is_some_and(|s| s.providers.is_some() && s.taken.elapsed() < max_age);
    match listed {
        Some(mut providers) => {
            edits.iter().for_each(|edit| apply(&mut providers, edit));
            // The old snapshot is dropped here, before the next list can start.
            state.snapshot = Some(Snapshot {
                taken,
                providers: Some(providers),
            });
            state.quiet_until = None;
        }
        // A failed refresh keeps a snapshot that still serves, and is not retried at once.
        None if still_usable => state.quiet_until = Some(Instant::now() + max_age / 10),
        None => {
            state.snapshot = Some(Snapshot {
                taken,
                providers: None,
            })
        }
    }
    drop(state);
    slot.lists_done.send_modify(|n| *n += 1);
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
        /// Listed with another name (a changed provider).
        renamed: Mutex<HashSet<String>>,
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
        async fn delete(
            &self,
            _: &str,
            _: Option<&crate::backend::ProviderConfig>,
        ) -> Result<bool, RemoteError> {
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
            let renamed = self.renamed.lock().unwrap().clone();
            let name = |id: &String| if renamed.contains(id) { "m" } else { "n" };
            Ok(ids.iter().map(|id| provider(id, name(id))).collect())
        }
    }

    fn fake(ids: &[&str], fail: bool) -> Arc<Fake> {
        Arc::new(Fake {
            ids: Mutex::new(ids.iter().map(|s| s.to_string()).collect()),
            lists: AtomicU32::new(0),
            fail,
            delay: Mutex::new(Duration::from_millis(50)),
            renamed: Mutex::default(),
        })
    }

    /// A refresh shares the entries that did not change with the snapshot it replaces, so the
    /// two hold one copy of each while it runs.
    #[tokio::test(start_paused = true)]
    async fn a_refresh_shares_the_entries_that_did_not_change() {
        let f = fake(&["a", "b"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(10));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        let slot = snaps.slot(&"conn");
        let entries = || {
            (
                slot.current_entry("a").unwrap(),
                slot.current_entry("b").unwrap(),
            )
        };
        let (a1, b1) = entries();
        f.renamed.lock().unwrap().insert("b".into());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        assert_eq!(f.lists.load(Ordering::SeqCst), 2);
        let (a2, b2) = entries();
        assert!(
            Arc::ptr_eq(&a1, &a2),
            "unchanged: one copy in both snapshots"
        );
        assert!(b1 != b2, "changed: the new encoding");
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

    #[tokio::test(start_paused = true)]
    async fn an_ageing_snapshot_is_refreshed_in_the_background_while_it_serves() {
        let f = fake(&["a"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(9));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        f.ids.lock().unwrap().push("b".into());
        // Within its last half second: served at once from the old snapshot...
        tokio::time::advance(Duration::from_millis(8600)).await;
        let started = Instant::now();
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        assert!(snaps.lookup(&"conn", &backend, "b").await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO, "no lookup waited");
        // ...while one list runs in the background, whose result serves next.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(f.lists.load(Ordering::SeqCst), 2);
        assert!(snaps.lookup(&"conn", &backend, "b").await.is_some());
        assert_eq!(
            f.lists.load(Ordering::SeqCst),
            2,
            "the new snapshot is young"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn own_writes_during_a_list_survive_its_older_result() {
        let f = fake(&["a"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(9));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        tokio::time::advance(Duration::from_millis(8600)).await;
        // Starts the background list, which reads "a" as it was.
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        snaps.record(&"conn", &provider("a", "renamed"));
        snaps.record(&"conn", &provider("new", "n"));
        snaps.forget(&"conn", "gone");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(f.lists.load(Ordering::SeqCst), 2);
        let a = snaps.lookup(&"conn", &backend, "a").await.unwrap();
        assert_eq!(
            a,
            provider("a", "renamed"),
            "our update is not undone by the list"
        );
        assert!(snaps.lookup(&"conn", &backend, "new").await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_background_list_keeps_the_snapshot_that_still_serves() {
        let f = fake(&["a"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(9));
        assert!(snaps.lookup(&"conn", &backend, "a").await.is_some());
        tokio::time::advance(Duration::from_millis(8600)).await;
        let failing: Arc<dyn ProviderBackend> = fake(&[], true);
        assert!(snaps.lookup(&"conn", &failing, "a").await.is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            snaps.lookup(&"conn", &failing, "a").await.is_some(),
            "still served after the failed refresh"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scoped_snapshot_keeps_only_the_providers_of_this_replica() {
        let f = fake(&["mine", "other-shard", "foreign"], false);
        let backend: Arc<dyn ProviderBackend> = f.clone();
        let snaps = Snapshots::<&str>::new(Duration::from_secs(9));
        snaps.set_scope(Arc::new(|| HashSet::from(["mine".to_owned()])));
        assert!(snaps.lookup(&"conn", &backend, "mine").await.is_some());
        assert!(
            snaps
                .lookup(&"conn", &backend, "other-shard")
                .await
                .is_none()
        );
        assert!(snaps.lookup(&"conn", &backend, "foreign").await.is_none());
        // Our own writes are kept whatever the scope said at the list.
        snaps.record(&"conn", &provider("created-since", "n"));
        assert!(
            snaps
                .lookup(&"conn", &backend, "created-since")
                .await
                .is_some()
        );
        assert_eq!(f.lists.load(Ordering::SeqCst), 1);
    }
}
