//! The SecurityProvider controller: watches SecurityProviders and the ProviderConnections they
//! name, and reconciles each provider with bounded concurrency. Secrets are never listed or
//! watched (the operator may only `get` them, and only in namespaces that granted it): the
//! connection check reads them by name and reports changes through
//! [`Context::connection_changed`].
use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use tracing::info;

use crate::api::provider_connection::BackendKind;
use crate::api::{ProviderConnection, SecurityProvider};
use crate::health::Health;
use crate::metrics::Metrics;

pub mod claims;
use claims::Claims;
pub mod connection;
pub mod context;
pub mod event_budget;
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
pub mod watches;

pub use context::{Context, Settings};
pub use watches::Events;

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
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    // Ready again once this run's caches are filled (see watches::provider_controller).
    health.set_ready(false);
    let providers_api: Api<SecurityProvider> = watches::api_for(&client, &settings.namespace);
    check_providers_listable(&providers_api, &settings).await?;
    let (connections, connection_writer) = reflector::store::<ProviderConnection>();
    let (ctx, claims_watch) = context(&client, &settings, connections, metrics);
    let (usage_triggers, usage_receiver) = futures::channel::mpsc::unbounded();
    let connections = watches::fan_out(watches::connection_watch(
        &client,
        &ctx,
        connection_writer,
        health.clone(),
        usage_triggers.clone(),
    ));
    let dependencies_listed = watches::dependencies_listed(&connections, ctx.claims.clone());
    let (providers, provider_writer) = reflector::store::<SecurityProvider>();
    ctx.scope_snapshots(providers.clone());
    let usage = usage::run(
        ctx.clone(),
        providers.clone(),
        usage_receiver,
        usage_triggers.clone(),
    );
    let provider_controller = watches::provider_controller(
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

/// Fails early, with a hint, when the CRDs are missing or this identity may not list
/// SecurityProviders.
async fn check_providers_listable(
    providers_api: &Api<SecurityProvider>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let provider_list = match &settings.label_selector {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    };
    providers_api
        .list(&provider_list.limit(1))
        .await
        .context("cannot list SecurityProviders; are the CRDs in crds/ applied, and may this identity list them?")?;
    Ok(())
}

/// The controller's context over the connection cache `connections`, with its claims, and the
/// claims' watch to run beside it.
fn context(
    client: &Client,
    settings: &Settings,
    connections: Store<ProviderConnection>,
    metrics: Arc<Metrics>,
) -> (
    Arc<Context>,
    impl std::future::Future<Output = ()> + Send + use<>,
) {
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
    (Arc::new(context), claims_watch)
}
