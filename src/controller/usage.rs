//! Usage finalizers (Crossplane's ProviderConfig usage pattern). A ProviderConnection, and
//! every Secret it reads, carries [`IN_USE_FINALIZER`] while a SecurityProvider that still has
//! its cleanup finalizer references the connection. `kubectl delete namespace` or a GitOps
//! prune deletes the Secret, the connection and the providers at once; the usage finalizers
//! keep the connection and its credentials until the providers' remote cleanup is done, and
//! then go, so the deletion completes instead of hanging on `ConnectionNotFound`.
//!
//! Which objects need the finalizer is a pure function of the caches ([`plan`]); [`run`]
//! applies it to a namespace whenever a provider's need, a connection or a referenced Secret
//! there changes.
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::context::Context;
use crate::api::{FINALIZER, IN_USE_FINALIZER, ProviderConnection, SecurityProvider};
use crate::backend::secret_refs;
use crate::error::Error;

/// What asks for a namespace's usage finalizers to be brought up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something that decides usage changed in this namespace.
    Namespace(String),
    /// The provider cache was (re)listed: every namespace.
    All,
}

/// Sender side of the usage triggers.
pub type Triggers = UnboundedSender<Trigger>;

/// Finalizer changes that bring one namespace in line with its providers' needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UsagePlan {
    /// Connections to add the finalizer to.
    pub add_connections: Vec<String>,
    /// Connections to remove it from.
    pub remove_connections: Vec<String>,
    /// Secrets to add it to.
    pub add_secrets: Vec<String>,
    /// Secrets to remove it from.
    pub remove_secrets: Vec<String>,
}

impl UsagePlan {
    fn is_empty(&self) -> bool {
        *self == UsagePlan::default()
    }
}

/// Whether `sp` may still need its connection: it has the cleanup finalizer.
pub fn needs_connection(sp: &SecurityProvider) -> bool {
    sp.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether `obj` carries [`IN_USE_FINALIZER`].
pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == IN_USE_FINALIZER))
}

/// The usage finalizer changes of `namespace`: a connection needs it while a provider with the
/// cleanup finalizer names it, a Secret while such a connection reads it. Nothing is added to
/// an object already being deleted (the API server refuses new finalizers there, and it is
/// kept by the one it has).
pub fn plan(
    namespace: &str,
    providers: &[Arc<SecurityProvider>],
    connections: &[Arc<ProviderConnection>],
    secrets: &[Arc<PartialObjectMeta<Secret>>],
) -> UsagePlan {
    let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace);
    let used: BTreeSet<&str> = providers
        .iter()
        .filter(|sp| in_ns(sp.namespace()) && needs_connection(sp))
        .map(|sp| sp.spec.connection_ref.as_str())
        .collect();
    let connections: Vec<_> = connections
        .iter()
        .filter(|c| in_ns(c.namespace()))
        .collect();
    let needed_secrets: BTreeSet<String> = connections
        .iter()
        .filter(|c| used.contains(c.name_any().as_str()))
        .flat_map(|c| secret_refs(&c.spec).into_iter().map(|r| r.name.clone()))
        .collect();
    let mut plan = UsagePlan::default();
    for c in connections {
        let name = c.name_any();
        let (add, remove) = change(c.as_ref(), used.contains(name.as_str()));
        if add {
            plan.add_connections.push(name.clone());
        }
        if remove {
            plan.remove_connections.push(name);
        }
    }
    for s in secrets.iter().filter(|s| in_ns(s.namespace())) {
        let name = s.name_any();
        let (add, remove) = change(s.as_ref(), needed_secrets.contains(&name));
        if add {
            plan.add_secrets.push(name.clone());
        }
        if remove {
            plan.remove_secrets.push(name);
        }
    }
    plan
}

/// (add, remove) for an object that should (`wanted`) or should not carry the finalizer.
fn change<K: Resource>(obj: &K, wanted: bool) -> (bool, bool) {
    let has = has_finalizer(obj);
    let deleting = obj.meta().deletion_timestamp.is_some();
    (wanted && !has && !deleting, !wanted && has)
}

/// Adds or removes [`IN_USE_FINALIZER`] on object `name`, keeping every other finalizer: a
/// merge patch of the whole list, conditional on the resourceVersion it was computed from,
/// retried on a conflict. Only metadata is read and returned (Secret values never are).
async fn set_finalizer<K>(api: &Api<K>, name: &str, present: bool) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    for _ in 0..5 {
        let Some(meta) = api.get_metadata_opt(name).await? else {
            return Ok(());
        };
        let mut finalizers = meta.metadata.finalizers.clone().unwrap_or_default();
        let has = finalizers.iter().any(|f| f == IN_USE_FINALIZER);
        if has == present || (present && meta.metadata.deletion_timestamp.is_some()) {
            return Ok(());
        }
        if present {
            finalizers.push(IN_USE_FINALIZER.to_owned());
        } else {
            finalizers.retain(|f| f != IN_USE_FINALIZER);
        }
        let patch = json!({"metadata": {
            "resourceVersion": meta.metadata.resource_version,
            "finalizers": finalizers,
        }});
        match api
            .patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Brings `namespace`'s usage finalizers in line with the caches.
pub async fn sync_namespace(
    ctx: &Context,
    providers: &Store<SecurityProvider>,
    namespace: &str,
) -> Result<(), Error> {
    let plan = plan(
        namespace,
        &providers.state(),
        &ctx.connections.state(),
        &ctx.secrets.state(),
    );
    if plan.is_empty() {
        return Ok(());
    }
    debug!(namespace, ?plan, "updating usage finalizers");
    let connections: Api<ProviderConnection> = Api::namespaced(ctx.client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in &plan.add_connections {
        set_finalizer(&connections, name, true).await?;
    }
    for name in &plan.add_secrets {
        set_finalizer(&secrets, name, true).await?;
    }
    // Secrets first: a connection that is gone no longer protects them.
    for name in &plan.remove_secrets {
        set_finalizer(&secrets, name, false).await?;
        info!(namespace, secret = %name, "no provider needs this Secret any more: released it");
    }
    for name in &plan.remove_connections {
        set_finalizer(&connections, name, false).await?;
        info!(namespace, connection = %name, "no provider needs this connection any more: released it");
    }
    Ok(())
}

/// Every namespace holding a connection or a Secret that carries the finalizer.
fn all_namespaces(ctx: &Context) -> BTreeSet<String> {
    let connections = ctx
        .connections
        .state()
        .into_iter()
        .filter_map(|c| c.namespace());
    let secrets = ctx
        .secrets
        .state()
        .into_iter()
        .filter(|s| has_finalizer(s.as_ref()))
        .filter_map(|s| s.namespace());
    connections.chain(secrets).collect()
}

/// Applies usage triggers until `triggers` ends. Nothing happens before the first
/// [`Trigger::All`] (sent once the provider cache is listed, after the connection and Secret
/// caches): a partial cache would release what a provider not yet listed still needs.
pub async fn run(
    ctx: Arc<Context>,
    providers: Store<SecurityProvider>,
    triggers: UnboundedReceiver<Trigger>,
    retry: Triggers,
) {
    let mut listed = false;
    let mut batches = triggers.ready_chunks(256);
    while let Some(batch) = batches.next().await {
        let mut namespaces = BTreeSet::new();
        for trigger in batch {
            match trigger {
                Trigger::All => {
                    listed = true;
                    namespaces.extend(all_namespaces(&ctx));
                }
                Trigger::Namespace(ns) => {
                    namespaces.insert(ns);
                }
            }
        }
        if !listed {
            continue;
        }
        for namespace in namespaces {
            if let Err(error) = sync_namespace(&ctx, &providers, &namespace).await {
                warn!(%namespace, %error, "cannot update usage finalizers; retrying in 5s");
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = retry.unbounded_send(Trigger::Namespace(namespace));
                });
            }
        }
    }
}

/// Watches the provider events for changes of what a provider needs (its connection, whether
/// it has the cleanup finalizer, deletion) and sends a trigger for its namespace; a full
/// (re)list sends [`Trigger::All`].
pub fn provider_watcher(
    triggers: Triggers,
) -> impl FnMut(&Result<watcher::Event<SecurityProvider>, watcher::Error>) {
    let mut needs: HashMap<ObjectRef<SecurityProvider>, (String, bool)> = HashMap::new();
    move |event| {
        let namespace = match event {
            Ok(watcher::Event::Apply(sp) | watcher::Event::InitApply(sp)) => {
                let need = (sp.spec.connection_ref.clone(), needs_connection(sp));
                let previous = needs.insert(ObjectRef::from_obj(sp), need.clone());
                (previous != Some(need)).then(|| sp.namespace()).flatten()
            }
            Ok(watcher::Event::Delete(sp)) => {
                needs.remove(&ObjectRef::from_obj(sp));
                sp.namespace()
            }
            Ok(watcher::Event::InitDone) => {
                let _ = triggers.unbounded_send(Trigger::All);
                None
            }
            _ => None,
        };
        if let Some(namespace) = namespace {
            let _ = triggers.unbounded_send(Trigger::Namespace(namespace));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(ns: &str, name: &str, connection: &str, finalized: bool) -> Arc<SecurityProvider> {
        let mut sp: SecurityProvider = serde_json::from_value(json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "SecurityProvider",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"connectionRef": connection, "coveo": {}}
        }))
        .unwrap();
        if finalized {
            sp.metadata.finalizers = Some(vec![FINALIZER.into()]);
        }
        Arc::new(sp)
    }

    fn connection(
        ns: &str,
        name: &str,
        secret: &str,
        finalizers: &[&str],
    ) -> Arc<ProviderConnection> {
        let mut c: ProviderConnection = serde_json::from_value(json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "ProviderConnection",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"coveo": {"organizationId": "org",
                               "apiKeySecretRef": {"name": secret, "key": "apiKey"}}}
        }))
        .unwrap();
        c.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        Arc::new(c)
    }

    fn secret(
        ns: &str,
        name: &str,
        finalizers: &[&str],
        deleting: bool,
    ) -> Arc<PartialObjectMeta<Secret>> {
        let mut s: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns}
        }))
        .unwrap();
        s.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        if deleting {
            s.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ));
        }
        Arc::new(s)
    }

    #[test]
    fn a_finalized_provider_keeps_its_connection_and_key_and_nothing_else() {
        let providers = [sp("a", "p", "coveo", true), sp("b", "p", "other", true)];
        let connections = [
            connection("a", "coveo", "key", &[]),
            connection("a", "unused", "unused-key", &[IN_USE_FINALIZER]),
        ];
        let secrets = [
            secret("a", "key", &[], false),
            secret("a", "unused-key", &[IN_USE_FINALIZER], false),
            secret("a", "unrelated", &[], false),
        ];
        let plan = plan("a", &providers, &connections, &secrets);
        assert_eq!(plan.add_connections, ["coveo"]);
        assert_eq!(plan.remove_connections, ["unused"]);
        assert_eq!(plan.add_secrets, ["key"]);
        assert_eq!(plan.remove_secrets, ["unused-key"]);
    }

    #[test]
    fn the_last_provider_losing_its_cleanup_finalizer_releases_connection_and_secret() {
        let connections = [connection("a", "coveo", "key", &[IN_USE_FINALIZER])];
        let secrets = [secret(
            "a",
            "key",
            &["other/finalizer", IN_USE_FINALIZER],
            true,
        )];
        let kept = plan("a", &[sp("a", "p", "coveo", true)], &connections, &secrets);
        assert_eq!(kept, UsagePlan::default(), "in use: nothing changes");
        let released = plan("a", &[sp("a", "p", "coveo", false)], &connections, &secrets);
        assert_eq!(released.remove_connections, ["coveo"]);
        assert_eq!(released.remove_secrets, ["key"]);
        assert!(released.add_connections.is_empty() && released.add_secrets.is_empty());
    }

    #[test]
    fn nothing_is_added_to_an_object_being_deleted() {
        let connections = [connection("a", "coveo", "key", &[])];
        let secrets = [secret("a", "key", &[], true)];
        let plan = plan("a", &[sp("a", "p", "coveo", true)], &connections, &secrets);
        assert_eq!(plan.add_connections, ["coveo"]);
        assert!(
            plan.add_secrets.is_empty(),
            "the Secret is already being deleted"
        );
    }
}
