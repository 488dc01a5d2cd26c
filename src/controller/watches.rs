//! The watch wiring of the controller: one watch per kind, reflected into the caches, turned
//! into the SecurityProvider controller's triggers (its own objects' changes, the changes of the
//! connections they name, and connection checks that found a change). Caches keep only what
//! the controller reads.
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::claims::Claims;
use super::fingerprints::Fingerprints;
use super::{Context, reconcile, usage};
use crate::api::{
    CREATE_PENDING_ANNOTATION, FINALIZER, PAUSED_ANNOTATION, ProviderConnection,
    REFRESH_ANNOTATION, SecurityProvider,
};
use crate::backend::connect::connection_version;
use crate::health::Health;

/// The Api of a kind in the watched namespace, or in all.
pub(super) fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drops what the controller never reads, to keep the caches small.
fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`strip`], plus every annotation the controller does not read (only `secprov.dev/*` ones
/// steer it) and the labels (a shard's selector is applied by the API server, and nothing
/// reads them from the cache): with thousands of providers, tool metadata (Argo CD tracking,
/// Helm, kustomize, kubectl) would otherwise be a good part of the cache, and a map of even
/// one label allocates a whole node of about 560 bytes. A spent create-pending marker goes
/// too ([`drop_spent_marker`]).
pub(super) fn strip_provider(sp: &mut SecurityProvider) {
    strip(sp);
    sp.metadata.labels = None;
    // Decoded lists grow by doubling: two conditions sit in room for four (512 bytes instead
    // of 256), one finalizer in room for four.
    if let Some(status) = sp.status.as_mut() {
        status.conditions.shrink_to_fit();
    }
    if let Some(finalizers) = sp.metadata.finalizers.as_mut() {
        finalizers.shrink_to_fit();
    }
    if let Some(annotations) = sp.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with("secprov.dev/"));
    }
    drop_spent_marker(sp);
    if sp
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.is_empty())
    {
        sp.metadata.annotations = None;
    }
}

/// Drops the create-pending marker when it is spent (status records it as the attempt whose
/// create made `remoteId`): a spent marker stands for no pending create
/// ([`ownership::pending_marker`](super::ownership::pending_marker)), and it stays on every
/// created object, where its map node was about 690 bytes an object in the cache (6.9 MiB at
/// 10,000; BENCHMARKS.md, "Figures behind the code"). The reconcile reads the spent attempt from
/// status instead ([`ownership::marker_on`](super::ownership::marker_on)).
fn drop_spent_marker(sp: &mut SecurityProvider) {
    let spent = sp.status.as_ref().and_then(|s| s.recorded_attempt());
    let Some(annotations) = sp.metadata.annotations.as_mut() else {
        return;
    };
    if spent.is_some()
        && annotations
            .get(CREATE_PENDING_ANNOTATION)
            .map(String::as_str)
            == spent
    {
        annotations.remove(CREATE_PENDING_ANNOTATION);
    }
}

/// The object as a reconcile trigger: kube-runtime keeps a trigger's `ObjectRef`, with the
/// object's resourceVersion and uid, in its scheduler for as long as the object is queued
/// (every object, between resyncs). The reconcile reads the object from the cache by
/// namespace and name only, so the two are dropped here (about 130 bytes an object in the
/// scheduler). The cache keeps its own copy untouched.
fn as_trigger(mut sp: SecurityProvider) -> SecurityProvider {
    sp.metadata.resource_version = None;
    sp.metadata.uid = None;
    sp
}

/// What a SecurityProvider change must differ in to trigger a reconcile: status writes
/// (including our own) do not, spec changes, deletion, other controllers' finalizers and our
/// annotations do. Our own cleanup finalizer does not: the reconcile that adds it does the work
/// in the same run (with a create, in the marker's write), so its watch event needs no second
/// reconcile from a cache that may not show that run's status yet.
fn trigger_fingerprint(sp: &SecurityProvider) -> u64 {
    let mut hasher = DefaultHasher::new();
    sp.metadata.generation.hash(&mut hasher);
    sp.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    for finalizer in sp.finalizers().iter().filter(|f| *f != FINALIZER) {
        finalizer.hash(&mut hasher);
    }
    for key in [REFRESH_ANNOTATION, PAUSED_ANNOTATION] {
        sp.annotations().get(key).hash(&mut hasher);
    }
    hasher.finish()
}

/// Turns a watch on a dependency into reconcile triggers for the providers that depend on
/// each changed object. The first full list only fills the cache (every provider is reconciled
/// at start anyway); afterwards an object triggers when its `version` changes, which also
/// catches changes made while a watch was being re-established.
fn dependency_triggers<K, S, F>(
    events: S,
    version: fn(&K) -> String,
    mut dependents: F,
) -> impl Stream<Item = ObjectRef<SecurityProvider>> + Send
where
    K: Resource + Clone + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    F: FnMut(&K) -> Vec<ObjectRef<SecurityProvider>> + Send + 'static,
{
    let mut seen: HashMap<ObjectRef<K>, String> = HashMap::new();
    let mut synced = false;
    events
        .filter_map(move |event| {
            let mut triggers = Vec::new();
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let version = version(&obj);
                    let previous = seen.insert(ObjectRef::from_obj(&obj), version.clone());
                    if synced && previous.as_deref() != Some(version.as_str()) {
                        triggers = dependents(&obj);
                    }
                }
                Ok(watcher::Event::Delete(obj)) => {
                    seen.remove(&ObjectRef::from_obj(&obj));
                    if synced {
                        triggers = dependents(&obj);
                    }
                }
                Ok(watcher::Event::InitDone) => synced = true,
                Ok(watcher::Event::Init) => {}
                Err(e) => warn!(error = %e, "watch error; retrying with backoff"),
            }
            futures::future::ready(Some(futures::stream::iter(triggers)))
        })
        .flatten()
}

/// Providers in `namespace` whose `connectionRef` is one of `connections`.
fn providers_using(
    store: &Store<SecurityProvider>,
    namespace: &str,
    connections: &[String],
) -> Vec<ObjectRef<SecurityProvider>> {
    store
        .state()
        .iter()
        .filter(|sp| {
            sp.namespace().as_deref() == Some(namespace)
                && connections.contains(&sp.spec.connection_ref)
        })
        .map(|sp| ObjectRef::from_obj(sp.as_ref()))
        .collect()
}

/// Watch events of one kind, as the controllers consume them (errors are logged upstream).
pub type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// One watch of a kind, reflected into a cache, serving both controllers.
pub(super) struct SharedWatch<K> {
    /// Pumps the watch until it ends.
    pub(super) pump: futures::future::BoxFuture<'static, ()>,
    /// The events, for the SecurityProvider controller.
    pub(super) for_providers: Events<K>,
    /// The events, for the ProviderConnection controller.
    pub(super) for_connections: Events<K>,
    /// True once the first full list is in the cache. (Not `Store::wait_until_ready`: its
    /// readiness wakes only the last of several waiters, and the connection controller is one.)
    listed: tokio::sync::watch::Receiver<bool>,
}

/// Sends every event of `events` to two consumers: one watch (and one cache) serves both
/// controllers.
pub(super) fn fan_out<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> SharedWatch<K>
where
    K: Clone + Send + Sync + 'static,
{
    let (first_tx, first_rx) = futures::channel::mpsc::unbounded();
    let (second_tx, second_rx) = futures::channel::mpsc::unbounded();
    let (listed_tx, listed) = tokio::sync::watch::channel(false);
    let pump = events.for_each(move |event| {
        match event {
            Ok(event) => {
                if matches!(event, watcher::Event::InitDone) {
                    listed_tx.send_replace(true);
                }
                let _ = first_tx.unbounded_send(Ok(event.clone()));
                let _ = second_tx.unbounded_send(Ok(event));
            }
            Err(e) => warn!(error = %e, "watch error; retrying with backoff"),
        }
        futures::future::ready(())
    });
    SharedWatch {
        pump: pump.boxed(),
        for_providers: first_rx.boxed(),
        for_connections: second_rx.boxed(),
        listed,
    }
}

/// Resolves once the connections and the claims are cached. Connections must be cached before
/// the first reconcile, or a provider whose connection simply hasn't been listed yet would be
/// reported as ConnectionNotFound. Claims too: before they are listed, the cache cannot show
/// that another object owns a provider under another name.
pub(super) fn dependencies_listed<K>(
    connections: &SharedWatch<K>,
    claims: Option<Claims>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut listed = connections.listed.clone();
    async move {
        let _ = listed.wait_for(|done| *done).await;
        if let Some(claims) = claims {
            claims.ready().await;
        }
    }
}

/// The shared watch of ProviderConnections, reflected into the context's cache. A deleted
/// connection's client and snapshots are dropped.
pub(super) fn connection_watch(
    client: &Client,
    ctx: &Arc<Context>,
    connection_writer: reflector::store::Writer<ProviderConnection>,
    health: Arc<Health>,
    usage_triggers: usage::Triggers,
) -> Events<ProviderConnection> {
    let names = usage::UsageNames::for_shard(ctx.settings.label_selector.as_deref());
    let connections_api: Api<ProviderConnection> = api_for(client, &ctx.settings.namespace);
    let evict_ctx = ctx.clone();
    watcher(connections_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip)
        .reflect(connection_writer)
        .inspect(move |event| {
            health.watch_event(
                "ProviderConnection",
                event.is_ok(),
                std::time::Instant::now(),
            );
        })
        .then(move |event| {
            let ctx = evict_ctx.clone();
            async move {
                if let Ok(watcher::Event::Delete(conn)) = &event {
                    ctx.forget_connection(&ObjectRef::from_obj(conn)).await;
                }
                event
            }
        })
        .inspect(usage::connection_watcher(usage_triggers, names))
        .boxed()
}

/// The SecurityProvider controller: its own watch, plus triggers from the shared connection
/// watch and from connection checks that found a change. Runs until `shutdown`.
pub(super) async fn provider_controller(
    providers_api: Api<SecurityProvider>,
    (providers, provider_writer): (
        Store<SecurityProvider>,
        reflector::store::Writer<SecurityProvider>,
    ),
    usage_triggers: usage::Triggers,
    ctx: Arc<Context>,
    connection_events: Events<ProviderConnection>,
    // When the connections are listed, and where to report readiness and watch health.
    (dependencies_listed, health): (
        impl std::future::Future<Output = ()> + Send + 'static,
        Arc<Health>,
    ),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let provider_events =
        provider_events(providers_api, provider_writer, usage_triggers, &ctx, health);
    let for_connections = providers.clone();
    let connection_triggers =
        dependency_triggers(connection_events, connection_version, move |conn| {
            let namespace = conn.namespace().unwrap_or_default();
            providers_using(&for_connections, &namespace, &[conn.name_any()])
        });
    let for_checks = providers.clone();
    let check_triggers = ctx
        .take_connection_changes()
        .map(|changes| changes.boxed())
        .unwrap_or_else(|| futures::stream::empty().boxed())
        .flat_map(move |conn| {
            let namespace = conn.namespace.clone().unwrap_or_default();
            futures::stream::iter(providers_using(&for_checks, &namespace, &[conn.name]))
        });
    // Provider events flow only after the connections are listed: both caches are filled
    // once the providers' first list is done.
    let gated_provider_events = futures::stream::once(dependencies_listed)
        .filter_map(|_| futures::future::ready(None))
        .chain(provider_events);
    Controller::for_stream(gated_provider_events, providers)
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .reconcile_on(connection_triggers)
        .reconcile_on(check_triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// The SecurityProviders' watch (this shard's), reflected into the cache, as reconcile
/// triggers: only changes of the trigger fingerprint pass.
fn provider_events(
    providers_api: Api<SecurityProvider>,
    provider_writer: reflector::store::Writer<SecurityProvider>,
    usage_triggers: usage::Triggers,
    ctx: &Arc<Context>,
    health: Arc<Health>,
) -> impl Stream<Item = Result<SecurityProvider, watcher::Error>> + Send + 'static {
    let forget_ctx = ctx.clone();
    // The shard's selector applies to SecurityProviders only: connections and Secrets are
    // shared by providers of every shard.
    let provider_watch = match &ctx.settings.label_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    watcher(providers_api, provider_watch.any_semantic())
        .default_backoff()
        .modify(strip_provider)
        .reflect(provider_writer)
        .inspect(usage::provider_watcher(usage_triggers))
        .inspect(move |event| {
            health.watch_event("SecurityProvider", event.is_ok(), std::time::Instant::now());
            if let Ok(watcher::Event::InitDone) = event {
                health.set_ready(true);
            }
            // Whatever way it went (finalizer removed by hand included), a deleted object's
            // record and ready gauge go with it.
            if let Ok(watcher::Event::Delete(sp)) = event {
                forget_ctx.forget_object(&ObjectRef::from_obj(sp));
            }
        })
        // Only changes of the trigger fingerprint reach the controller (what kube-runtime's
        // predicate_filter does, in 16 bytes an object); deletes need no reconcile.
        .try_filter({
            let mut fingerprints = Fingerprints::default();
            move |event| {
                let pass = fingerprints.follow(event, trigger_fingerprint)
                    && !matches!(event, watcher::Event::Delete(_));
                futures::future::ready(pass)
            }
        })
        .touched_objects()
        .map_ok(as_trigger)
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    /// The scheduler's trigger refs lack resourceVersion and uid; the cache lookup by such a
    /// ref must still find the object (kube-runtime compares and hashes refs by namespace and
    /// name only). Should a kube upgrade change that, no object would ever be reconciled.
    #[test]
    fn a_trigger_without_version_finds_the_cached_object() {
        let sp: SecurityProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "SecurityProvider",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "resourceVersion": "42"},
            "spec": {"connectionRef": "c", "coveo": {}}
        }))
        .unwrap();
        let (store, mut writer) = reflector::store::<SecurityProvider>();
        writer.apply_watcher_event(&watcher::Event::Apply(sp.clone()));
        let trigger = ObjectRef::from_obj(&as_trigger(sp.clone()));
        assert!(trigger.extra.uid.is_none() && trigger.extra.resource_version.is_none());
        let cached = store.get(&trigger).expect("found by a ref without version");
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("42"));
    }

    #[test]
    fn cached_providers_keep_only_what_the_controller_reads() {
        let mut sp: SecurityProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1",
            "kind": "SecurityProvider",
            "metadata": {
                "name": "p",
                "labels": {"app.kubernetes.io/instance": "idp", "sharding.secprov.dev/key": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "argocd.argoproj.io/tracking-id": "app:secprov.dev/SecurityProvider:ns/p",
                    "secprov.dev/paused": "true"
                },
                "finalizers": ["secprov.dev/cleanup"]
            },
            "spec": {"connectionRef": "c", "coveo": {}}
        }))
        .unwrap();
        strip_provider(&mut sp);
        assert!(sp.metadata.managed_fields.is_none());
        assert_eq!(sp.metadata.finalizers.as_ref().map(Vec::capacity), Some(1));
        assert!(sp.metadata.labels.is_none());
        assert_eq!(
            sp.annotations().keys().collect::<Vec<_>>(),
            vec!["secprov.dev/paused"]
        );
        assert_eq!(sp.finalizers(), ["secprov.dev/cleanup"]);
    }

    #[test]
    fn our_own_finalizer_triggers_no_reconcile_another_controllers_does() {
        let sp: SecurityProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "SecurityProvider",
            "metadata": {"name": "p"}, "spec": {"connectionRef": "c", "coveo": {}}
        }))
        .unwrap();
        let with = |finalizers: &[&str]| {
            let mut sp = sp.clone();
            sp.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
            trigger_fingerprint(&sp)
        };
        // The reconcile that adds it (with a create's marker) already did the work.
        assert_eq!(trigger_fingerprint(&sp), with(&[FINALIZER]));
        assert_ne!(with(&[FINALIZER]), with(&[FINALIZER, "other.example/x"]));
    }
}
