//! Per-connection state behind one handle: the connection's built backend client and its
//! batch-read snapshot. The handle keeps their invariants itself, so callers cannot forget
//! them: every fresh read, create and update is recorded in the snapshot, every delete is
//! forgotten, and a snapshot hit comes back as [`Remote::Snapshot`], from which
//! [`super::execute`] refuses to write.
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::ProviderConnection;
use crate::backend::{ObservedProvider, ProviderBackend, ProviderConfig, ProviderKey};
use crate::error::{Error, RemoteError};

use super::slots::{ReconcileSlot, SlotLedger, SlotLimits, SlotRefused};
use super::snapshot::{Scope, Snapshots};
use crate::backend::connect::{ClientCache, Recheck};
use crate::backend::http::RequestObserver;

/// A connection and its version (uid, generation): the key of its snapshot slot.
pub type SnapshotKey = (ObjectRef<ProviderConnection>, Option<String>, Option<i64>);

/// The snapshot key of a connection.
pub fn snapshot_key(connection: &ProviderConnection) -> SnapshotKey {
    (
        ObjectRef::from_obj(connection),
        connection.uid(),
        connection.metadata.generation,
    )
}

/// What was read of the remote provider, and from where.
#[derive(Clone, Debug, PartialEq)]
pub enum Remote {
    /// A direct read just now (None: the provider does not exist). Writes may be planned
    /// from it.
    Fresh(Option<ObservedProvider>),
    /// A hit in the connection's batch snapshot: good enough for a resync that writes
    /// nothing, never for planning a write.
    Snapshot(ObservedProvider),
}

impl Remote {
    /// The provider read, whatever the source.
    pub fn provider(&self) -> Option<&ObservedProvider> {
        match self {
            Remote::Fresh(p) => p.as_ref(),
            Remote::Snapshot(p) => Some(p),
        }
    }

    /// The provider read, to add details to.
    pub fn provider_mut(&mut self) -> Option<&mut ObservedProvider> {
        match self {
            Remote::Fresh(p) => p.as_mut(),
            Remote::Snapshot(p) => Some(p),
        }
    }

    /// Whether this came from a snapshot.
    pub fn is_snapshot(&self) -> bool {
        matches!(self, Remote::Snapshot(_))
    }
}

/// Everything kept per ProviderConnection, in one owner so that it is dropped in one place
/// ([`Self::forget`]): its built client, its batch snapshots and the reconcile slots its
/// providers hold. Each part locks per connection (a client is built under its connection's
/// async lock, a list fills its own snapshot slot); the maps lock only to find an entry. Slots
/// are also counted per namespace, across connections (see [`super::slots`]).
pub struct ConnectionStates {
    clients: ClientCache,
    snapshots: Snapshots<SnapshotKey>,
    slots: Arc<SlotLedger>,
}

impl ConnectionStates {
    /// Empty states: the clients' writes pass `fence`; snapshots live `snapshot_max_age`
    /// (zero: no batch reads).
    pub fn new(
        fence: &'static crate::leader::WriteFence,
        limits: SlotLimits,
        snapshot_max_age: std::time::Duration,
    ) -> Self {
        ConnectionStates {
            clients: ClientCache::new(fence),
            snapshots: Snapshots::new(snapshot_max_age),
            slots: SlotLedger::new(limits),
        }
    }

    /// The handle of `connection`: its client, built once per version of the connection and
    /// of the Secrets it read (see [`ClientCache::get_or_connect`]), and its snapshots.
    pub async fn handle(
        &self,
        kube: &kube::Client,
        connection: Arc<ProviderConnection>,
        observer: RequestObserver,
    ) -> Result<ConnectionHandle<'_>, Error> {
        let client = self
            .clients
            .get_or_connect(kube, &connection, Some(observer))
            .await?;
        Ok(self.handle_over(connection, client))
    }

    /// The connection check's handle: the connection's Secrets are read again, and its client
    /// rebuilt when they or the connection changed (the `bool` says so; a first build is no
    /// change).
    pub async fn recheck(
        &self,
        kube: &kube::Client,
        connection: Arc<ProviderConnection>,
        observer: RequestObserver,
    ) -> Result<(ConnectionHandle<'_>, bool), Error> {
        let recheck = self.clients.recheck(kube, &connection, Some(observer));
        let (client, rebuilt) = match recheck.await? {
            Recheck::Rebuilt(client) => (client, true),
            Recheck::Built(client) | Recheck::Unchanged(client) => (client, false),
        };
        Ok((self.handle_over(connection, client), rebuilt))
    }

    /// A handle over the client last built for `connection` (same uid), whatever its Secrets'
    /// state now (None: none was built).
    pub async fn last_built(
        &self,
        connection: Arc<ProviderConnection>,
    ) -> Option<ConnectionHandle<'_>> {
        let client = self.clients.last_built(&connection).await?;
        Some(ConnectionHandle::new(connection, client, &self.snapshots))
    }

    /// A handle over `client`; snapshots of another version of this connection (or of one
    /// replaced under the same name) would never be read again, so they are dropped.
    fn handle_over(
        &self,
        connection: Arc<ProviderConnection>,
        client: Arc<dyn ProviderBackend>,
    ) -> ConnectionHandle<'_> {
        let current = snapshot_key(&connection);
        self.snapshots.retain(|k| k.0 != current.0 || *k == current);
        ConnectionHandle::new(connection, client, &self.snapshots)
    }

    /// A reconcile slot of a provider of `connection` (see [`SlotLedger::try_take`]).
    pub fn take_slot(
        &self,
        connection: &ObjectRef<ProviderConnection>,
    ) -> Result<ReconcileSlot, SlotRefused> {
        self.slots.try_take(connection)
    }

    /// Limits the snapshots to the providers `scope` names (see [`Snapshots::set_scope`]).
    pub fn scope_snapshots(&self, scope: Scope) {
        self.snapshots.set_scope(scope);
    }

    /// Drops everything kept for a deleted connection: its client (and the credentials in it)
    /// and its snapshots. Slots go back as their reconciles end.
    pub async fn forget(&self, connection: &ObjectRef<ProviderConnection>) {
        self.clients.forget(connection).await;
        self.snapshots.retain(|(r, _, _)| r != connection);
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
}

/// One connection's client and snapshot, for the duration of one reconcile or CLI command.
pub struct ConnectionHandle<'a> {
    connection: Arc<ProviderConnection>,
    client: Arc<dyn ProviderBackend>,
    snapshots: &'a Snapshots<SnapshotKey>,
    key: SnapshotKey,
}

impl<'a> ConnectionHandle<'a> {
    /// A handle over a built client and the snapshots it reads and keeps current.
    pub fn new(
        connection: Arc<ProviderConnection>,
        client: Arc<dyn ProviderBackend>,
        snapshots: &'a Snapshots<SnapshotKey>,
    ) -> Self {
        let key = snapshot_key(&connection);
        ConnectionHandle {
            connection,
            client,
            snapshots,
            key,
        }
    }

    /// The connection this handle serves.
    pub fn connection(&self) -> &ProviderConnection {
        &self.connection
    }

    /// Reads the provider directly and records what it found.
    pub async fn read(&self, key: &ProviderKey) -> Result<Option<ObservedProvider>, RemoteError> {
        let found = self.client.observe(key).await?;
        if let Some(p) = &found {
            self.snapshots.record(&self.key, p);
        }
        Ok(found)
    }

    /// The provider as seen by the connection's batch snapshot (listing first when the
    /// snapshot is stale). None means "read it directly".
    pub async fn read_snapshot(&self, remote_id: &str) -> Option<Remote> {
        self.snapshots
            .lookup(&self.key, &self.client, remote_id)
            .await
            .map(Remote::Snapshot)
    }

    /// Creates the provider and records it.
    pub async fn create(&self, desired: &ProviderConfig) -> Result<ObservedProvider, RemoteError> {
        let created = self.client.create(desired).await?;
        self.snapshots.record(&self.key, &created);
        Ok(created)
    }

    /// Updates the provider `current` (a fresh read) to `desired` and records the result.
    pub async fn update(
        &self,
        current: &ObservedProvider,
        desired: &ProviderConfig,
    ) -> Result<ObservedProvider, RemoteError> {
        let updated = self.client.update(current, desired).await?;
        self.snapshots.record(&self.key, &updated);
        Ok(updated)
    }

    /// Reads what `desired` compares beyond the main read (sub-resources such as schedules)
    /// into `observed`.
    pub async fn read_details(
        &self,
        desired: Option<&ProviderConfig>,
        observed: &mut ObservedProvider,
    ) -> Result<(), RemoteError> {
        self.client.observe_details(desired, observed).await
    }

    /// Deletes the provider and forgets it. False when it was already gone.
    pub async fn delete(
        &self,
        remote_id: &str,
        desired: Option<&ProviderConfig>,
    ) -> Result<bool, RemoteError> {
        let existed = self.client.delete(remote_id, desired).await?;
        self.snapshots.forget(&self.key, remote_id);
        Ok(existed)
    }

    /// Starts a refresh of the provider's identities (false: the backend has none).
    pub async fn refresh(&self, remote_id: &str) -> Result<bool, RemoteError> {
        self.client.refresh(remote_id).await
    }

    /// Every provider of the connection (for `export`).
    pub async fn list(&self) -> Result<Vec<ObservedProvider>, RemoteError> {
        self.client.list().await
    }

    /// One cheap read proving the credentials work (the connection's Ready condition).
    pub async fn verify_credentials(&self) -> Result<(), RemoteError> {
        self.client.verify_credentials().await
    }
}
