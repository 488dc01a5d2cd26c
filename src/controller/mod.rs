//! The SecurityProvider controller: watches SecurityProviders, the ProviderConnections they
//! name and the Secrets those read, and reconciles each provider with bounded concurrency.
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{PredicateConfig, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::provider_connection::BackendKind;
use crate::api::{PAUSED_ANNOTATION, ProviderConnection, REFRESH_ANNOTATION, SecurityProvider};
use crate::backend;
use crate::metrics::Metrics;

pub mod connection;
pub mod context;
pub mod ownership;
pub mod plan;
pub mod reconcile;
pub mod snapshot;
pub mod status;

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
/// steer it): with thousands of providers, tool annotations (Argo CD tracking, Helm, kubectl)
/// would otherwise be a good part of the cache.
fn strip_provider(sp: &mut SecurityProvider) {
    strip(sp);
    if let Some(annotations) = sp.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with("secprov.dev/"));
        if annotations.is_empty() {
            sp.metadata.annotations = None;
        }
    }
}

/// What a SecurityProvider change must differ in to trigger a reconcile: status writes
/// (including our own) do not, spec changes, deletion, finalizers and our annotations do.
fn trigger_fingerprint(sp: &SecurityProvider) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    sp.metadata.generation.hash(&mut hasher);
    sp.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    sp.finalizers().hash(&mut hasher);
    for key in [REFRESH_ANNOTATION, PAUSED_ANNOTATION] {
        sp.annotations().get(key).hash(&mut hasher);
    }
    Some(hasher.finish())
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

/// Runs the SecurityProvider and ProviderConnection controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let providers_api: Api<SecurityProvider> = api_for(&client, &settings.namespace);
    let connections_api: Api<ProviderConnection> = api_for(&client, &settings.namespace);
    // A metadata-only watch: Secret values are read on demand, never cached.
    let secrets_api: Api<PartialObjectMeta<Secret>> = api_for(&client, &settings.namespace);
    providers_api
        .list(&ListParams::default().limit(1))
        .await
        .context("cannot list SecurityProviders; are the CRDs in crds/ applied, and may this identity list them?")?;

    let (connections, connection_writer) = reflector::store::<ProviderConnection>();
    let (secrets, secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let (providers, provider_writer) = reflector::store::<SecurityProvider>();

    let provider_events = watcher(providers_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip_provider)
        .reflect(provider_writer)
        .touched_objects()
        .predicate_filter(trigger_fingerprint, PredicateConfig::default());

    let providers_for_connections = providers.clone();
    let connection_triggers = dependency_triggers(
        watcher(connections_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(strip)
            .reflect(connection_writer),
        // The connection controller writes status: only spec changes (a new generation) and
        // replacement (a new uid) matter to providers.
        |conn: &ProviderConnection| {
            format!(
                "{}/{}",
                conn.uid().unwrap_or_default(),
                conn.metadata.generation.unwrap_or_default()
            )
        },
        move |conn: &ProviderConnection| {
            providers_using(
                &providers_for_connections,
                &conn.namespace().unwrap_or_default(),
                &[conn.name_any()],
            )
        },
    );

    let providers_for_secrets = providers.clone();
    let connections_for_secrets = connections.clone();
    let secret_triggers = dependency_triggers(
        watcher(secrets_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|s: &mut PartialObjectMeta<Secret>| {
                s.metadata.managed_fields = None;
                s.metadata.annotations = None;
                s.metadata.labels = None;
            })
            .reflect(secret_writer),
        // Secrets have no generation; any change may be a rotated value.
        |secret: &PartialObjectMeta<Secret>| secret.resource_version().unwrap_or_default(),
        move |secret: &PartialObjectMeta<Secret>| {
            let namespace = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            let users: Vec<String> = connections_for_secrets
                .state()
                .iter()
                .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|c| backend::secret_refs(&c.spec).iter().any(|r| r.name == name))
                .map(|c| c.name_any())
                .collect();
            providers_using(&providers_for_secrets, &namespace, &users)
        },
    );

    metrics.init_backends(&BackendKind::ALL.map(BackendKind::as_str));
    let recorder = Recorder::new(client.clone(), reporter());
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        connections.clone(),
        secrets.clone(),
        recorder,
        metrics,
    ));

    // Dependencies must be cached before the first reconcile, or a provider whose connection
    // simply hasn't been listed yet would be reported as ConnectionNotFound.
    let dependencies_ready = {
        let (connections, secrets) = (connections.clone(), secrets.clone());
        async move {
            let _ = connections.wait_until_ready().await;
            let _ = secrets.wait_until_ready().await;
        }
    };
    let gated_provider_events = futures::stream::once(dependencies_ready)
        .filter_map(|_| futures::future::ready(None))
        .chain(provider_events);

    let connection_controller = connection::run(client.clone(), ctx.clone(), shutdown.clone());
    info!(concurrency = settings.concurrency, resync = ?settings.resync_interval, namespace = ?settings.namespace, "starting controller");
    let provider_controller = Controller::for_stream(gated_provider_events, providers)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .reconcile_on(connection_triggers)
        .reconcile_on(secret_triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    futures::join!(provider_controller, connection_controller);
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    #[test]
    fn cached_providers_keep_only_what_the_controller_reads() {
        let mut sp: SecurityProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "secprov.dev/v1alpha1",
            "kind": "SecurityProvider",
            "metadata": {
                "name": "p",
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
        assert_eq!(
            sp.annotations().keys().collect::<Vec<_>>(),
            vec!["secprov.dev/paused"]
        );
        assert_eq!(sp.finalizers(), ["secprov.dev/cleanup"]);
    }
}
