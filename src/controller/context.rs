//! Shared state of the controller: clients, the cache of connections, built
//! backends, and per-object failure counts for backoff.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::api::{ProviderConnection, SecurityProvider};
use crate::backend::connect::Recheck;
use crate::backend::{ClientCache, ProviderBackend, check_backend_match};
use crate::error::Error;
use crate::fingerprint_key::FingerprintKey;
use crate::metrics::Metrics;

use super::handle::{ConnectionHandle, SnapshotKey, snapshot_key};
use super::slots::{ReconcileSlot, SlotLedger, SlotLimits, SlotRefused};
use super::snapshot::{Snapshots, snapshot_max_age};

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often an in-sync object is re-read from the remote system.
    pub resync_interval: Duration,
    /// How soon an object whose remote state is still settling (creating, refreshing) is
    /// read again.
    pub progress_interval: Duration,
    /// Objects reconciled at once.
    pub concurrency: u16,
    /// Watch only this namespace (all when None).
    pub namespace: Option<String>,
    /// Longest backoff after repeated transient failures.
    pub max_backoff: Duration,
    /// How often each ProviderConnection's credentials are checked against the remote system.
    pub connection_check_interval: Duration,
    /// Resyncs read a connection's providers in pages (see [`super::snapshot`]) instead of
    /// one GET each.
    pub batch_observe: bool,
    /// Reconcile only the SecurityProviders whose labels match this (already validated)
    /// selector: this replica's shard (all when None). See [`crate::shard`].
    pub label_selector: Option<String>,
    /// Reconciles of one namespace's providers at once, over all its connections: one tenant
    /// holds at most this many of the `concurrency` slots (0: half of `concurrency`, at
    /// least 1).
    pub namespace_concurrency: u16,
    /// Reconciles of one connection's providers at once: a slow or hanging remote holds at
    /// most this many of the `concurrency` slots (0: half of `concurrency`, at least 1; never
    /// more than the namespace's).
    pub connection_concurrency: u16,
    /// Longest a reconcile's remote work may take, retries included.
    pub reconcile_timeout: Duration,
    /// Namespace of the claims (one Lease per managed remote provider, see
    /// [`super::claims`]): the operator's own, shared by every shard and replica.
    pub claims_namespace: String,
    /// The installation's key of the secrets fingerprint (in the backend's status block), read
    /// from its Secret at start (see [`crate::fingerprint_key`]).
    pub fingerprint_key: FingerprintKey,
}

impl Settings {
    /// The shares of the reconcile slots one namespace and one connection may hold.
    pub fn slot_limits(&self) -> SlotLimits {
        SlotLimits::new(
            self.concurrency,
            self.namespace_concurrency,
            self.connection_concurrency,
        )
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync_interval: Duration::from_secs(300),
            progress_interval: Duration::from_secs(10),
            concurrency: 16,
            namespace: None,
            max_backoff: Duration::from_secs(300),
            connection_check_interval: Duration::from_secs(300),
            batch_observe: true,
            label_selector: None,
            namespace_concurrency: 0,
            connection_concurrency: 0,
            reconcile_timeout: Duration::from_secs(120),
            claims_namespace: "default".into(),
            // A key of this process only (tests): `run` always sets the installation's.
            fingerprint_key: FingerprintKey::generate()
                .map(|(key, _)| key)
                .expect("the system random number generator works"),
        }
    }
}

/// Everything a reconcile needs besides the object.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub connections: Store<ProviderConnection>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Built backend clients, shared by every reconcile of a connection version.
    clients: ClientCache,
    failures: Mutex<HashMap<ObjectRef<SecurityProvider>, u32>>,
    /// The reason of each failing object's latest failure (for one warning per change).
    failure_reasons: Mutex<HashMap<ObjectRef<SecurityProvider>, &'static str>>,
    /// Paged reads of each connection's providers, shared by resyncs; reached only through
    /// a [`ConnectionHandle`].
    snapshots: Snapshots<SnapshotKey>,
    /// Providers whose remote state was settling at their last reconcile: their next read
    /// must be fresh, a snapshot would show the old state.
    settling: Mutex<HashSet<ObjectRef<SecurityProvider>>>,
    /// The secrets fingerprint in status as this process last wrote it: the cached object may not
    /// show our own status write yet, and a stale hash would send the same values twice.
    secrets_sent: Mutex<HashMap<ObjectRef<SecurityProvider>, Option<String>>>,
    /// Consecutive cleanup attempts that failed permanently, per object (bounded by
    /// [`MAX_CLEANUP_ATTEMPTS`]).
    cleanup_failures: Mutex<HashMap<ObjectRef<SecurityProvider>, u32>>,
    /// Objects whose deletion already waited once for a create that may still land.
    deferred_cleanups: Mutex<HashSet<ObjectRef<SecurityProvider>>>,
    /// Connections whose check found a change (a rebuilt client, a new result): their
    /// providers are reconciled again. Taken once by the provider controller.
    connection_changes: mpsc::UnboundedSender<ObjectRef<ProviderConnection>>,
    connection_changes_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<ProviderConnection>>>>,
    /// The reconcile slots each namespace and connection holds (see
    /// [`Context::reconcile_slot`]).
    slots: Arc<SlotLedger>,
    /// At most one owner per remote provider (see [`super::claims`]). None only in the
    /// reconcile's unit tests, whose mocked API has no Leases: they find other managers with
    /// the LIST `secprov-operator plan` uses.
    pub claims: Option<super::claims::Claims>,
}

/// Permanent cleanup failures (credentials refused, connection or Secret gone) before a
/// deletion stops retrying and reports `CleanupBlocked` with its escape hatch.
pub const MAX_CLEANUP_ATTEMPTS: u32 = 5;

impl Context {
    /// A context over the given caches.
    pub fn new(
        client: Client,
        settings: Settings,
        connections: Store<ProviderConnection>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (connection_changes, rx) = mpsc::unbounded();
        Context {
            client,
            connections,
            connection_changes,
            connection_changes_rx: Mutex::new(Some(rx)),
            slots: SlotLedger::new(settings.slot_limits()),
            claims: None,
            recorder,
            metrics,
            clients: ClientCache::default(),
            failures: Mutex::new(HashMap::new()),
            failure_reasons: Mutex::new(HashMap::new()),
            snapshots: Snapshots::new(if settings.batch_observe {
                snapshot_max_age(settings.resync_interval)
            } else {
                Duration::ZERO
            }),
            settling: Mutex::new(HashSet::new()),
            secrets_sent: Mutex::new(HashMap::new()),
            cleanup_failures: Mutex::new(HashMap::new()),
            deferred_cleanups: Mutex::new(HashSet::new()),
            settings,
        }
    }

    /// The connection of a SecurityProvider behind a handle: its client (built or cached) and
    /// its snapshot. Fails when the connection is missing, serves another backend or cannot
    /// build a client.
    pub async fn connection(&self, sp: &SecurityProvider) -> Result<ConnectionHandle<'_>, Error> {
        let connection = self.connection_of(sp)?;
        check_backend_match(sp, &connection)?;
        self.handle_for(connection).await
    }

    /// [`Self::connection`] for the remote cleanup of a provider: when the connection's Secret
    /// is already gone (deleted with the namespace before its usage finalizer was set), the
    /// client built from it last time still works.
    pub async fn connection_for_cleanup(
        &self,
        sp: &SecurityProvider,
    ) -> Result<ConnectionHandle<'_>, Error> {
        match self.connection(sp).await {
            Err(
                error @ (Error::SecretNotFound(_)
                | Error::SecretKeyMissing { .. }
                | Error::SecretNotOptedIn(_)),
            ) => {
                let connection = self.connection_of(sp)?;
                let Some(client) = self.clients.last_built(&connection).await else {
                    return Err(error);
                };
                tracing::info!(
                    reason = error.reason(),
                    "cleanup uses the connection's last built client"
                );
                Ok(ConnectionHandle::new(connection, client, &self.snapshots))
            }
            other => other,
        }
    }

    /// Counts one more permanent cleanup failure of `object` and returns the count.
    pub fn cleanup_failed(&self, object: &ObjectRef<SecurityProvider>) -> u32 {
        let mut failures = self
            .cleanup_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(object.clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// The handle of a connection (for its own controller, which checks its credentials).
    pub async fn handle_for(
        &self,
        connection: Arc<ProviderConnection>,
    ) -> Result<ConnectionHandle<'_>, Error> {
        let client = self.backend_for(&connection).await?;
        // Snapshots of another version of this connection (or of one replaced under the same
        // name) would never be read again: drop them.
        let current = snapshot_key(&connection);
        self.snapshots.retain(|k| k.0 != current.0 || *k == current);
        Ok(ConnectionHandle::new(connection, client, &self.snapshots))
    }

    /// A reconcile slot for `sp`, within its namespace's and its connection's shares (None
    /// when the provider names no connection in the cache: its reconcile reports that without
    /// any remote call). Held for the whole reconcile, so the providers of one namespace hold
    /// at most [`SlotLimits::namespace`] of the controller's slots however many connections
    /// it makes, and one slow or hanging remote at most [`SlotLimits::connection`].
    pub fn reconcile_slot(
        &self,
        sp: &SecurityProvider,
    ) -> Result<Option<ReconcileSlot>, SlotRefused> {
        let namespace = sp.namespace().unwrap_or_default();
        let reference = ObjectRef::new(&sp.spec.connection_ref).within(&namespace);
        if self.connections.get(&reference).is_none() {
            return Ok(None);
        }
        self.slots.try_take(&reference).map(Some)
    }

    /// Keeps in the batch snapshots only the providers whose remote id a SecurityProvider in
    /// `providers` (this replica's cache: its shard) has recorded: resyncs look up nothing
    /// else, and two shards then hold half the providers each instead of all of them.
    pub fn scope_snapshots(&self, providers: kube::runtime::reflector::Store<SecurityProvider>) {
        self.snapshots.set_scope(Arc::new(move || {
            providers
                .state()
                .iter()
                .filter_map(|sp| sp.status.as_ref()?.remote_id.clone())
                .collect()
        }));
    }

    /// Drops everything kept for a deleted connection: its client (and the credentials in it),
    /// its snapshots and its ready gauge.
    pub async fn forget_connection(&self, connection: &ObjectRef<ProviderConnection>) {
        self.clients.forget(connection).await;
        self.snapshots.retain(|(r, _, _)| r != connection);
        let namespace = connection.namespace.as_deref().unwrap_or_default();
        self.metrics
            .connection_forgotten(namespace, &connection.name);
    }

    /// Drops the per-object state of a deleted SecurityProvider: failure count, settling mark
    /// and ready gauge.
    pub fn forget_object(&self, object: &ObjectRef<SecurityProvider>) {
        self.reset_failures(object);
        self.record_failure(object, None);
        self.set_settling(object, false);
        self.secrets_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object);
        self.cleanup_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object);
        self.deferred_cleanups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object);
        let namespace = object.namespace.as_deref().unwrap_or_default();
        self.metrics.provider_forgotten(namespace, &object.name);
    }

    /// Installs `client` as the built client of `connection` (unit tests: a fake backend).
    #[cfg(test)]
    pub(crate) async fn install_client(
        &self,
        connection: &ProviderConnection,
        client: Arc<dyn ProviderBackend>,
    ) {
        self.clients.install(connection, client).await;
    }

    /// How many snapshot slots exist (unit tests).
    #[cfg(test)]
    pub(crate) fn snapshot_slots(&self) -> usize {
        self.snapshots.slot_count()
    }

    /// Whether a built client of `connection` is cached (unit tests).
    #[cfg(test)]
    pub(crate) async fn has_client(&self, connection: &ObjectRef<ProviderConnection>) -> bool {
        self.clients.contains(connection).await
    }

    /// True the first time it is asked for `object`, false afterwards: the deletion of an
    /// object whose create may still land waits once.
    pub fn defer_cleanup_once(&self, object: &ObjectRef<SecurityProvider>) -> bool {
        self.deferred_cleanups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.clone())
    }

    /// How an observation finds other managers of a remote provider: the claims, or (unit
    /// tests) a LIST of the SecurityProviders this controller may see.
    pub fn managers<'a>(
        &'a self,
        cluster: &'a kube::Api<SecurityProvider>,
    ) -> super::observe::Managers<'a> {
        match &self.claims {
            Some(claims) => super::observe::Managers::Claims(claims),
            None => super::observe::Managers::Listed(cluster),
        }
    }

    /// Every SecurityProvider this controller may see (the watched namespace, or the
    /// cluster), read from the API server (only without claims).
    pub fn cluster_providers(&self) -> kube::Api<SecurityProvider> {
        match &self.settings.namespace {
            Some(namespace) => kube::Api::namespaced(self.client.clone(), namespace),
            None => kube::Api::all(self.client.clone()),
        }
    }

    /// The ProviderConnection named by a SecurityProvider, from the cache.
    pub fn connection_of(&self, sp: &SecurityProvider) -> Result<Arc<ProviderConnection>, Error> {
        let namespace = sp.namespace().unwrap_or_default();
        let reference = ObjectRef::new(&sp.spec.connection_ref).within(&namespace);
        self.connections
            .get(&reference)
            .ok_or_else(|| Error::ConnectionNotFound(sp.spec.connection_ref.clone()))
    }

    /// The backend client of a connection, built once per version of the connection and of
    /// the Secrets it read (see [`ClientCache::get_or_connect`]).
    async fn backend_for(
        &self,
        connection: &ProviderConnection,
    ) -> Result<Arc<dyn ProviderBackend>, Error> {
        self.clients
            .get_or_connect(
                &self.client,
                connection,
                Some(self.metrics.request_observer()),
            )
            .await
    }

    /// The connection check's handle: the connection's Secrets are read again, and its client
    /// rebuilt when they or the connection changed (the `bool` says so; a first build is no
    /// change).
    pub async fn recheck_handle(
        &self,
        connection: Arc<ProviderConnection>,
    ) -> Result<(ConnectionHandle<'_>, bool), Error> {
        let observer = Some(self.metrics.request_observer());
        let recheck = self.clients.recheck(&self.client, &connection, observer);
        let rebuilt = matches!(recheck.await?, Recheck::Rebuilt(_));
        Ok((self.handle_for(connection).await?, rebuilt))
    }

    /// Asks for the providers of `connection` to be reconciled again (its Secrets or its
    /// check result changed).
    pub fn connection_changed(&self, connection: ObjectRef<ProviderConnection>) {
        let _ = self.connection_changes.unbounded_send(connection);
    }

    /// The stream of [`Context::connection_changed`] requests (once; None afterwards).
    pub fn take_connection_changes(
        &self,
    ) -> Option<mpsc::UnboundedReceiver<ObjectRef<ProviderConnection>>> {
        self.connection_changes_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Records a transient failure and returns the delay before the next attempt:
    /// exponential from 1 s with full jitter, capped by `max_backoff`.
    pub fn backoff_after_failure(&self, object: &ObjectRef<SecurityProvider>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(object.clone()).or_insert(0);
        *count = count.saturating_add(1);
        let ceiling = Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow((*count - 1).min(16)))
            .min(self.settings.max_backoff);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(millis / 2 + rand::random_range(0..=millis / 2))
    }

    /// Forgets the failures of an object after a success.
    pub fn reset_failures(&self, object: &ObjectRef<SecurityProvider>) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object);
    }

    /// Records the reason of the object's latest reconcile failure (None: it did not fail) and
    /// returns the one recorded before, if this process saw one.
    pub fn record_failure(
        &self,
        object: &ObjectRef<SecurityProvider>,
        reason: Option<&'static str>,
    ) -> Option<&'static str> {
        let mut reasons = self
            .failure_reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(reason) => reasons.insert(object.clone(), reason),
            None => reasons.remove(object),
        }
    }

    /// Remembers whether the provider's remote state was settling (its next read must be
    /// fresh).
    pub fn set_settling(&self, object: &ObjectRef<SecurityProvider>, settling: bool) {
        let mut set = self.settling.lock().unwrap_or_else(|e| e.into_inner());
        if settling {
            set.insert(object.clone());
        } else {
            set.remove(object);
        }
    }

    /// Whether the provider was settling at its last reconcile.
    pub fn is_settling(&self, object: &ObjectRef<SecurityProvider>) -> bool {
        self.settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(object)
    }

    /// The hash of the secret values `sp`'s remote provider last received: as this process
    /// last wrote it in status, else as the (cached) status says.
    pub fn secrets_hash_sent(&self, sp: &SecurityProvider) -> Option<String> {
        let written = self.secrets_sent.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&ObjectRef::from_obj(sp)) {
            Some(hash) => hash.clone(),
            None => crate::backend::recorded_fingerprint(sp.status.as_ref()?),
        }
    }

    /// Remembers the secrets fingerprint just written in `sp`'s status. Only where it can
    /// differ from what the cached status will show: an object without secret values (most
    /// of them) needs no entry, which at 10,000 objects was 2.6 MiB at rest.
    pub fn remember_secrets_hash(&self, sp: &SecurityProvider, hash: Option<String>) {
        let object = ObjectRef::from_obj(sp);
        let cached = sp
            .status
            .as_ref()
            .and_then(crate::backend::recorded_fingerprint);
        let mut written = self.secrets_sent.lock().unwrap_or_else(|e| e.into_inner());
        if hash.is_none() && cached.is_none() {
            written.remove(&object);
        } else {
            written.insert(object, hash);
        }
    }

    /// The resync delay with ±10 % jitter, so objects created together don't resync together.
    pub fn resync_delay(&self) -> Duration {
        let base = self.settings.resync_interval.as_millis() as u64;
        let spread = base / 10;
        Duration::from_millis(base - spread + rand::random_range(0..=2 * spread))
    }
}
