//! Shared state of the controller: clients, the cache of connections, built backends, and
//! what is remembered about each object (see [`super::record`]).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::api::{ProviderConnection, SecurityProvider};
use crate::backend::check_backend_match;
use crate::error::Error;
use crate::fingerprint_key::FingerprintKey;
use crate::leader::WriteFence;
use crate::metrics::Metrics;

use super::handle::{ConnectionHandle, ConnectionStates};
use super::record::{ObjectRecord, ObjectRecords, Visit};
use super::requeue::ErrorClass;
use super::slots::{ReconcileSlot, SlotLimits, SlotRefused};
use super::snapshot::snapshot_max_age;

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
    /// The fence every remote write passes: this replica's leader fence (see
    /// [`crate::leader`]), or an open one without election.
    pub write_fence: &'static WriteFence,
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
            write_fence: &crate::backend::http::NO_ELECTION,
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
    /// What is kept per connection: built client, snapshots, reconcile slots.
    pub(super) states: ConnectionStates,
    /// What is remembered about each SecurityProvider between its reconciles.
    pub(super) records: ObjectRecords,
    /// Connections whose check found a change (a rebuilt client, a new result): their
    /// providers are reconciled again. Taken once by the provider controller.
    connection_changes: mpsc::UnboundedSender<ObjectRef<ProviderConnection>>,
    connection_changes_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<ProviderConnection>>>>,
    /// At most one owner per remote provider (see [`super::claims`]). None only in the
    /// reconcile's unit tests, whose mocked API has no Leases: they find other managers with
    /// the LIST `secprov-operator plan` uses.
    pub claims: Option<super::claims::Claims>,
    /// The `Created` Event budget of each connection (see [`super::event_budget`]).
    pub(super) created_events: Arc<super::event_budget::CreatedEvents>,
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
            claims: None,
            recorder,
            metrics,
            states: ConnectionStates::new(
                settings.write_fence,
                settings.slot_limits(),
                if settings.batch_observe {
                    snapshot_max_age(settings.resync_interval)
                } else {
                    Duration::ZERO
                },
            ),
            records: ObjectRecords::default(),
            created_events: Arc::default(),
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
            Err(error) if ErrorClass::of(&error) == ErrorClass::Secret => {
                let connection = self.connection_of(sp)?;
                let Some(handle) = self.states.last_built(connection).await else {
                    return Err(error);
                };
                tracing::info!(
                    reason = error.reason(),
                    "cleanup uses the connection's last built client"
                );
                Ok(handle)
            }
            other => other,
        }
    }

    /// The handle of a connection (for its own controller, which checks its credentials).
    pub async fn handle_for(
        &self,
        connection: Arc<ProviderConnection>,
    ) -> Result<ConnectionHandle<'_>, Error> {
        let observer = self.metrics.request_observer();
        self.states.handle(&self.client, connection, observer).await
    }

    /// Starts a reconcile of `sp`: its slot (see [`Self::reconcile_slot`]), its connection
    /// from the cache and its record, held until the returned [`Visit`] is dropped.
    pub fn begin(&self, sp: &SecurityProvider) -> Result<Visit<'_>, SlotRefused> {
        let slot = self.reconcile_slot(sp)?;
        let connection = self.connection_of(sp).ok();
        let object = ObjectRef::from_obj(sp);
        let record = self.records.take(&object);
        Ok(Visit::new(self, object, record, connection, slot))
    }

    /// Runs `f` over the record of `object` (taken, then put back).
    pub fn with_record<T>(
        &self,
        object: &ObjectRef<SecurityProvider>,
        f: impl FnOnce(&mut ObjectRecord) -> T,
    ) -> T {
        let mut record = self.records.take(object);
        let result = f(&mut record);
        self.records.put_back(object.clone(), record);
        result
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
        self.states.take_slot(&reference).map(Some)
    }

    /// Keeps in the batch snapshots only the providers whose remote id a SecurityProvider in
    /// `providers` (this replica's cache: its shard) has recorded: resyncs look up nothing
    /// else, and two shards then hold half the providers each instead of all of them.
    pub fn scope_snapshots(&self, providers: kube::runtime::reflector::Store<SecurityProvider>) {
        self.states.scope_snapshots(Arc::new(move || {
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
        self.states.forget(connection).await;
        let namespace = connection.namespace.as_deref().unwrap_or_default();
        self.metrics
            .connection_forgotten(namespace, &connection.name);
    }

    /// Drops everything kept for a deleted SecurityProvider: its record and its ready gauge.
    pub fn forget_object(&self, object: &ObjectRef<SecurityProvider>) {
        self.records.forget(object);
        let namespace = object.namespace.as_deref().unwrap_or_default();
        self.metrics.provider_forgotten(namespace, &object.name);
    }

    /// The ProviderConnection named by a SecurityProvider, from the cache.
    pub fn connection_of(&self, sp: &SecurityProvider) -> Result<Arc<ProviderConnection>, Error> {
        let namespace = sp.namespace().unwrap_or_default();
        let reference = ObjectRef::new(&sp.spec.connection_ref).within(&namespace);
        self.connections
            .get(&reference)
            .ok_or_else(|| Error::ConnectionNotFound(sp.spec.connection_ref.clone()))
    }

    /// The connection check's handle: the connection's Secrets are read again, and its client
    /// rebuilt when they or the connection changed (the `bool` says so; a first build is no
    /// change).
    pub async fn recheck_handle(
        &self,
        connection: Arc<ProviderConnection>,
    ) -> Result<(ConnectionHandle<'_>, bool), Error> {
        let observer = self.metrics.request_observer();
        self.states
            .recheck(&self.client, connection, observer)
            .await
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
}
