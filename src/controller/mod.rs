//! The SecurityProvider controller: watches SecurityProviders and the ProviderConnections they
//! name, and reconciles each provider with bounded concurrency. Secrets are never listed or
//! watched (the operator may only `get` them, and only in namespaces that granted it): the
//! connection check reads them by name and reports changes through
//! [`Context::connection_changed`].
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};

use fingerprints::Fingerprints;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::provider_connection::BackendKind;
use crate::api::{
    FINALIZER, PAUSED_ANNOTATION, ProviderConnection, REFRESH_ANNOTATION, SecurityProvider,
};
use crate::health::Health;
use crate::metrics::Metrics;

pub mod claims;
use claims::Claims;
pub mod connection;
pub mod context;
pub mod events;
pub mod execute;
pub mod fingerprints;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod handle;
pub mod metadata;
pub mod observe;
#[cfg(test)]
mod outcome_tests;
pub mod ownership;
pub mod patch;
pub mod plan;
pub mod reconcile;
#[cfg(test)]
mod reconcile_tests;
pub mod record;
pub mod requeue;
pub mod slots;
pub mod snapshot;
pub mod status;
pub mod usage;

pub use context::{Context, Settings};

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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
/// one label allocates a whole node of about 560 bytes.
fn strip_provider(sp: &mut SecurityProvider) {
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
        if annotations.is_empty() {
            sp.metadata.annotations = None;
        }
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

/// Who publishes our Events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: "secprov-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Watch events of one kind, as the controllers consume them (errors are logged upstream).
pub type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// One watch of a kind, reflected into a cache, serving both controllers.
struct SharedWatch<K> {
    /// Pumps the watch until it ends.
    pump: futures::future::BoxFuture<'static, ()>,
    /// The events, for the SecurityProvider controller.
    for_providers: Events<K>,
    /// The events, for the ProviderConnection controller.
    for_connections: Events<K>,
    /// True once the first full list is in the cache. (Not `Store::wait_until_ready`: its
    /// readiness wakes only the last of several waiters, and the connection controller is one.)
    listed: tokio::sync::watch::Receiver<bool>,
}

/// Sends every event of `events` to two consumers: one watch (and one cache) serves both
/// controllers.
fn fan_out<K>(
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

/// Resolves once the watch has listed everything (or ended).
async fn listed(mut listed: tokio::sync::watch::Receiver<bool>) {
    let _ = listed.wait_for(|done| *done).await;
}

/// The version of a connection that matters to its providers: the connection controller
/// writes status, so only spec changes (a new generation) and replacement (a new uid) count.
fn connection_version(conn: &ProviderConnection) -> String {
    format!(
        "{}/{}",
        conn.uid().unwrap_or_default(),
        conn.metadata.generation.unwrap_or_default()
    )
}

/// The shared watch of ProviderConnections, reflected into the context's cache. A deleted
/// connection's client and snapshots are dropped.
fn connection_watch(
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

/// Runs the SecurityProvider and ProviderConnection controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    // Ready again once this run's caches are filled (see provider_controller).
    health.set_ready(false);
    let providers_api: Api<SecurityProvider> = api_for(&client, &settings.namespace);
    let provider_list = match &settings.label_selector {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    };
    providers_api
        .list(&provider_list.limit(1))
        .await
        .context("cannot list SecurityProviders; are the CRDs in crds/ applied, and may this identity list them?")?;

    let (connections, connection_writer) = reflector::store::<ProviderConnection>();
    metrics.init_backends(&BackendKind::ALL.map(BackendKind::as_str));
    let recorder = Recorder::new(client.clone(), reporter());
    let mut context = Context::new(
        client.clone(),
        settings.clone(),
        connections,
        recorder,
        metrics,
    );
    let (claims, claims_watch) = Claims::new(client.clone(), &settings.claims_namespace);
    context.claims = Some(claims);
    let ctx = Arc::new(context);
    let (usage_triggers, usage_receiver) = futures::channel::mpsc::unbounded();
    let connections = fan_out(connection_watch(
        &client,
        &ctx,
        connection_writer,
        health.clone(),
        usage_triggers.clone(),
    ));
    // Connections must be cached before the first reconcile, or a provider whose connection
    // simply hasn't been listed yet would be reported as ConnectionNotFound.
    // Claims too: before they are listed, the cache cannot show that another object owns a
    // provider under another name.
    let claims_listed = ctx.claims.clone();
    let connections_listed = listed(connections.listed.clone());
    let dependencies_listed = async move {
        connections_listed.await;
        if let Some(claims) = claims_listed {
            claims.ready().await;
        }
    };
    let (providers, provider_writer) = reflector::store::<SecurityProvider>();
    ctx.scope_snapshots(providers.clone());
    let usage = usage::run(
        ctx.clone(),
        providers.clone(),
        usage_receiver,
        usage_triggers.clone(),
    );
    let provider_controller = provider_controller(
        providers_api,
        (providers, provider_writer),
        usage_triggers,
        ctx.clone(),
        connections.for_providers,
        (dependencies_listed, health),
        shutdown.clone(),
    );
    let connection_controller = connection::run(ctx.clone(), connections.for_connections, shutdown);
    info!(concurrency = settings.concurrency, resync = ?settings.resync_interval, namespace = ?settings.namespace, selector = ?settings.label_selector, "starting controller");
    tokio::select! {
        _ = futures::future::join(provider_controller, connection_controller) => {}
        _ = connections.pump => {}
        _ = usage => {}
        _ = claims_watch => {}
    }
    info!("controller stopped");
    Ok(())
}

/// The SecurityProvider controller: its own watch, plus triggers from the shared connection
/// watch and from connection checks that found a change. Runs until `shutdown`.
async fn provider_controller(
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
    let forget_ctx = ctx.clone();
    // The shard's selector applies to SecurityProviders only: connections and Secrets are
    // shared by providers of every shard.
    let provider_watch = match &ctx.settings.label_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let provider_events = watcher(providers_api, provider_watch.any_semantic())
        .default_backoff()
        .modify(strip_provider)
        .reflect(provider_writer)
        .inspect(usage::provider_watcher(usage_triggers))
        .inspect(move |event| {
            health.watch_event("SecurityProvider", event.is_ok(), std::time::Instant::now());
            // Provider events flow only after the connections are listed: both caches are
            // filled once the providers' first list is done.
            if let Ok(watcher::Event::InitDone) = event {
                health.set_ready(true);
            }
            // Whatever way it went (finalizer removed by hand included), a deleted object's
            // backoff, settling mark and ready gauge go with it.
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
        .map_ok(as_trigger);

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
