//! Usage finalizers (Crossplane's ProviderConfig usage pattern). A ProviderConnection, and
//! every Secret it reads, carries [`IN_USE_FINALIZER`] while a SecurityProvider that still has
//! its cleanup finalizer references the connection. `kubectl delete namespace` or a GitOps
//! prune deletes the Secret, the connection and the providers at once; the usage finalizers
//! keep the connection and its credentials until the providers' remote cleanup is done, and
//! then go, so the deletion completes instead of hanging on `ConnectionNotFound`.
//!
//! Secrets are never listed or watched (the operator may only get them by name), so the
//! connection records which of its Secrets it protects in [`PROTECTED_SECRETS_ANNOTATION`]:
//! that record, not a Secret cache, says which finalizers to remove later. Which changes a
//! namespace needs is a pure function of the caches ([`plan`]); [`run`] applies it whenever a
//! provider's need or a connection there changes. Order keeps a crash harmless: Secrets are
//! released before the record drops them, and protected after the record names them, so a
//! finalizer the operator set is always one it will remove.
use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::context::Context;
use super::fingerprints::Fingerprints;
use crate::api::{FINALIZER, IN_USE_FINALIZER, ProviderConnection, SecurityProvider};
use crate::backend::secret_refs;
use crate::error::Error;

/// Annotation on a ProviderConnection: the names (comma-separated, sorted) of its Secrets
/// that carry [`IN_USE_FINALIZER`] because of it.
pub const PROTECTED_SECRETS_ANNOTATION: &str = "secprov.dev/in-use-secrets";

/// What asks for a namespace's usage finalizers to be brought up to date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something that decides usage changed in this namespace.
    Namespace(String),
    /// A connection is gone: release the Secrets it recorded (unless another one needs them).
    Gone {
        namespace: String,
        secrets: BTreeSet<String>,
    },
    /// The provider cache was (re)listed: every namespace.
    All,
}

/// The finalizer and annotation names of one shard: each shard (`--watch-label-selector`)
/// sees only its own providers, so it keeps its own finalizer (suffixed with the selector's
/// hash, as the shard's Lease name is) and never removes another shard's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageNames {
    /// The usage finalizer.
    pub finalizer: String,
    /// The connection annotation recording the protected Secrets.
    pub annotation: String,
}

impl UsageNames {
    /// The names for the shard with `selector` ([`IN_USE_FINALIZER`] and
    /// [`PROTECTED_SECRETS_ANNOTATION`] without sharding).
    pub fn for_shard(selector: Option<&str>) -> Self {
        let suffix = selector
            .map(|s| format!("-{:08x}", crate::shard::fnv1a32(s.as_bytes())))
            .unwrap_or_default();
        UsageNames {
            finalizer: format!("{IN_USE_FINALIZER}{suffix}"),
            annotation: format!("{PROTECTED_SECRETS_ANNOTATION}{suffix}"),
        }
    }
}

/// Sender side of the usage triggers.
pub type Triggers = UnboundedSender<Trigger>;

/// The usage state one connection should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionUsage {
    /// The connection's name.
    pub name: String,
    /// Whether it carries the finalizer.
    pub finalizer: bool,
    /// The Secrets it records as protected.
    pub protected: BTreeSet<String>,
}

/// Changes that bring one namespace in line with its providers' needs, applied in this order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UsagePlan {
    /// Secrets whose finalizer goes (no connection in use reads them any more).
    pub release: BTreeSet<String>,
    /// Connections whose finalizer or record changes.
    pub connections: Vec<ConnectionUsage>,
    /// Secrets that get the finalizer (newly recorded).
    pub protect: BTreeSet<String>,
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

/// Whether `obj` carries the usage finalizer `names.finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, names: &UsageNames) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.contains(&names.finalizer))
}

/// The Secrets `connection` records as protected.
pub fn protected_secrets(connection: &ProviderConnection, names: &UsageNames) -> BTreeSet<String> {
    connection
        .annotations()
        .get(&names.annotation)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The usage changes of `namespace`: a connection needs the finalizer while a provider with
/// the cleanup finalizer names it, and then protects every Secret it reads; `gone` are the
/// Secrets recorded by connections that no longer exist. No finalizer is added to a
/// connection already being deleted (the API server refuses it; it is kept by the one it has).
pub fn plan(
    names: &UsageNames,
    namespace: &str,
    providers: &[Arc<SecurityProvider>],
    connections: &[Arc<ProviderConnection>],
    gone: &BTreeSet<String>,
) -> UsagePlan {
    let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace);
    let used: BTreeSet<String> = providers
        .iter()
        .filter(|sp| in_ns(sp.namespace()) && needs_connection(sp))
        .map(|sp| sp.spec.connection_ref.clone())
        .collect();
    let mut plan = UsagePlan {
        release: gone.clone(),
        ..UsagePlan::default()
    };
    let mut wanted_anywhere = BTreeSet::new();
    for c in connections.iter().filter(|c| in_ns(c.namespace())) {
        let in_use = used.contains(&c.name_any());
        let wanted: BTreeSet<String> = if in_use {
            secret_refs(&c.spec)
                .into_iter()
                .map(|r| r.name.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        let recorded = protected_secrets(c, names);
        let has = has_finalizer(c.as_ref(), names);
        let finalizer = in_use && (has || c.metadata.deletion_timestamp.is_none());
        if finalizer != has || wanted != recorded {
            plan.connections.push(ConnectionUsage {
                name: c.name_any(),
                finalizer,
                protected: wanted.clone(),
            });
        }
        plan.protect.extend(wanted.difference(&recorded).cloned());
        plan.release.extend(recorded.difference(&wanted).cloned());
        wanted_anywhere.extend(wanted);
    }
    plan.release.retain(|s| !wanted_anywhere.contains(s));
    plan
}

/// Adds or removes [`IN_USE_FINALIZER`] on Secret `name`, keeping every other finalizer (only
/// metadata is read and returned, never Secret data). See [`patch_metadata`].
async fn set_secret_finalizer(
    api: &Api<Secret>,
    names: &UsageNames,
    name: &str,
    present: bool,
) -> Result<(), kube::Error> {
    patch_metadata(api, name, |meta| {
        let current = meta.finalizers.clone().unwrap_or_default();
        let finalizers = with_finalizer(current, present, &names.finalizer);
        let adding_to_deleted = present && meta.deletion_timestamp.is_some();
        (Some(&finalizers) != meta.finalizers.as_ref() && !adding_to_deleted)
            .then(|| json!({"finalizers": finalizers}))
    })
    .await
}

/// Sets a connection's finalizer and protected-Secrets record to `usage`.
async fn set_connection_usage(
    api: &Api<ProviderConnection>,
    names: &UsageNames,
    usage: &ConnectionUsage,
) -> Result<(), kube::Error> {
    let record = (!usage.protected.is_empty()).then(|| {
        usage
            .protected
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    });
    patch_metadata(api, &usage.name, |meta| {
        let current = meta.finalizers.clone().unwrap_or_default();
        let finalizers = with_finalizer(current.clone(), usage.finalizer, &names.finalizer);
        let recorded = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&names.annotation));
        (finalizers != current || recorded != record.as_ref()).then(|| {
            json!({"finalizers": finalizers,
                   "annotations": {names.annotation.as_str(): record}})
        })
    })
    .await
}

fn with_finalizer(mut finalizers: Vec<String>, present: bool, finalizer: &str) -> Vec<String> {
    finalizers.retain(|f| f != finalizer);
    if present {
        finalizers.push(finalizer.to_owned());
    }
    finalizers
}

/// Reads object `name`'s metadata, asks `change` for a metadata merge patch (None: nothing to
/// do) and applies it conditionally on the resourceVersion it was computed from, again on a
/// conflict. A missing object needs nothing.
async fn patch_metadata<K>(
    api: &Api<K>,
    name: &str,
    change: impl Fn(&kube::api::ObjectMeta) -> Option<serde_json::Value>,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut conflict = None;
    for _ in 0..5 {
        let Some(current) = api.get_metadata_opt(name).await? else {
            return Ok(());
        };
        let Some(mut metadata) = change(&current.metadata) else {
            return Ok(());
        };
        metadata["resourceVersion"] = json!(current.metadata.resource_version);
        let patch = json!({ "metadata": metadata });
        match api
            .patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => {
                conflict = Some(kube::Error::Api(status));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            other => return other.map(|_| ()),
        }
    }
    // Still changing under us: an error, so the namespace's sync is retried (no later provider
    // event may come to run it again).
    conflict.map_or(Ok(()), Err)
}

/// Brings `namespace`'s usage finalizers in line with the caches (`gone`: Secrets recorded by
/// connections that were deleted). A Secret the operator may not patch (an older binding of
/// the credential reader) is only reported: it is never the reason a deletion hangs.
pub async fn sync_namespace(
    ctx: &Context,
    providers: &Store<SecurityProvider>,
    namespace: &str,
    gone: &BTreeSet<String>,
) -> Result<(), Error> {
    let names = UsageNames::for_shard(ctx.settings.label_selector.as_deref());
    let plan = plan(
        &names,
        namespace,
        &providers.state(),
        &ctx.connections.state(),
        gone,
    );
    if plan.is_empty() {
        return Ok(());
    }
    debug!(namespace, ?plan, "updating usage finalizers");
    let connections: Api<ProviderConnection> = Api::namespaced(ctx.client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    for name in &plan.release {
        secret_step(
            set_secret_finalizer(&secrets, &names, name, false).await,
            namespace,
            name,
        )?;
        info!(namespace, secret = %name, "no provider needs this Secret any more: released it");
    }
    for usage in &plan.connections {
        set_connection_usage(&connections, &names, usage).await?;
        if !usage.finalizer {
            info!(namespace, connection = %usage.name, "no provider needs this connection any more: released it");
        }
    }
    for name in &plan.protect {
        secret_step(
            set_secret_finalizer(&secrets, &names, name, true).await,
            namespace,
            name,
        )?;
    }
    Ok(())
}

/// A Secret patch refused with 403 is logged and skipped; other failures are retried.
fn secret_step(result: Result<(), kube::Error>, namespace: &str, name: &str) -> Result<(), Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            warn!(
                namespace,
                secret = name,
                "may not patch this Secret's usage finalizer (the credential reader role lacks patch); skipped"
            );
            Ok(())
        }
        other => other.map_err(Error::from),
    }
}

/// Applies usage triggers until `triggers` ends. Nothing happens before the first
/// [`Trigger::All`] (sent once the provider cache is listed, after the connection cache): a
/// partial cache would release what a provider not yet listed still needs.
pub async fn run(
    ctx: Arc<Context>,
    providers: Store<SecurityProvider>,
    triggers: UnboundedReceiver<Trigger>,
    retry: Triggers,
) {
    let mut listed = false;
    let mut batches = triggers.ready_chunks(256);
    while let Some(batch) = batches.next().await {
        let mut namespaces: HashMap<String, BTreeSet<String>> = HashMap::new();
        for trigger in batch {
            match trigger {
                Trigger::All => {
                    listed = true;
                    for c in ctx.connections.state() {
                        namespaces
                            .entry(c.namespace().unwrap_or_default())
                            .or_default();
                    }
                }
                Trigger::Namespace(ns) => {
                    namespaces.entry(ns).or_default();
                }
                Trigger::Gone { namespace, secrets } => {
                    namespaces.entry(namespace).or_default().extend(secrets);
                }
            }
        }
        if !listed {
            continue;
        }
        for (namespace, gone) in namespaces {
            if let Err(error) = sync_namespace(&ctx, &providers, &namespace, &gone).await {
                warn!(%namespace, %error, "cannot update usage finalizers; retrying in 5s");
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let _ = retry.unbounded_send(Trigger::Gone {
                        namespace,
                        secrets: gone,
                    });
                });
            }
        }
    }
}

/// Watches the connection events: any change may change usage in its namespace; a deleted
/// connection hands over the Secrets it recorded.
pub fn connection_watcher(
    triggers: Triggers,
    names: UsageNames,
) -> impl FnMut(&Result<watcher::Event<ProviderConnection>, watcher::Error>) {
    move |event| {
        let trigger = match event {
            // A relist's objects too: a connection created or changed while the watch was
            // down arrives only so (before the providers are listed, `run` ignores it).
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                Trigger::Namespace(c.namespace().unwrap_or_default())
            }
            Ok(watcher::Event::Delete(c)) => Trigger::Gone {
                namespace: c.namespace().unwrap_or_default(),
                secrets: protected_secrets(c, &names),
            },
            _ => return,
        };
        let _ = triggers.unbounded_send(trigger);
    }
}

/// Watches the provider events and sends a trigger for a namespace when the set of connections
/// its providers need changes: the first provider to need a connection there, or the last one
/// to stop needing it (its connection changed, it lost the cleanup finalizer, it was deleted).
/// Any other provider event leaves [`plan`]'s input as it was. A full (re)list sends
/// [`Trigger::All`].
///
/// Triggering on every change of any provider's need made each created object (its finalizer
/// is added once) a [`sync_namespace`] that walks every cached provider: quadratic in the
/// objects created at once (BENCHMARKS.md, "Figures behind the code").
pub fn provider_watcher(
    triggers: Triggers,
) -> impl FnMut(&Result<watcher::Event<SecurityProvider>, watcher::Error>) {
    let mut needs = Needs::default();
    move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(sp)) => needs.apply(sp),
            // Counted only: the list's end triggers every namespace.
            Ok(watcher::Event::InitApply(sp)) => {
                let _ = needs.apply(sp);
                Vec::new()
            }
            Ok(watcher::Event::Delete(sp)) => needs.delete(sp),
            Ok(watcher::Event::Init) => {
                needs.list_started();
                Vec::new()
            }
            Ok(watcher::Event::InitDone) => {
                // Every namespace follows: what the dropped objects needed is counted out.
                needs.list_done();
                let _ = triggers.unbounded_send(Trigger::All);
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for namespace in changed {
            let _ = triggers.unbounded_send(Trigger::Namespace(namespace));
        }
    }
}

/// How many providers need each connection, per namespace, as the provider events tell it.
/// A provider's need is kept in its fingerprint (16 bytes an object): 0 when it needs no
/// connection, else 1 + the index of the (namespace, connection) pair it needs. A pair no
/// provider needs any more is forgotten and its index reused, so the table holds the pairs in
/// use, however many connection names were ever written.
#[derive(Default)]
struct Needs {
    of_object: Fingerprints,
    pair_index: HashMap<(String, String), u64>,
    /// Per pair index: the pair and how many providers need it (None: free).
    pairs: Vec<Option<((String, String), usize)>>,
    free: Vec<u64>,
}

impl Needs {
    /// The need of `sp` as a fingerprint.
    fn need_of(&mut self, sp: &SecurityProvider) -> u64 {
        if !needs_connection(sp) {
            return 0;
        }
        let pair = (
            sp.namespace().unwrap_or_default(),
            sp.spec.connection_ref.clone(),
        );
        if let Some(index) = self.pair_index.get(&pair) {
            return index + 1;
        }
        // Counted in by the caller at once ([`Needs::moved`]): a new pair is never left at 0.
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.pairs.push(None);
                self.pairs.len() as u64 - 1
            }
        };
        self.pairs[index as usize] = Some((pair.clone(), 0));
        self.pair_index.insert(pair, index);
        index + 1
    }

    /// Pairs in the table (in use).
    #[cfg(test)]
    fn pairs_in_use(&self) -> usize {
        self.pair_index.len()
    }

    /// Records the need of an applied `sp`; returns the namespaces whose set of needed
    /// connections changed.
    fn apply(&mut self, sp: &SecurityProvider) -> Vec<String> {
        let need = self.need_of(sp);
        let before = self.of_object.replace(sp.meta(), need).unwrap_or(0);
        self.moved(before, need)
    }

    /// Counts out a deleted `sp`.
    fn delete(&mut self, sp: &SecurityProvider) -> Vec<String> {
        let before = self.of_object.forget(sp.meta()).unwrap_or(0);
        self.moved(before, 0)
    }

    fn list_started(&mut self) {
        self.of_object.list_started();
    }

    /// Counts out the objects the (re)list did not show. Which namespaces that changed is not
    /// asked: the list's end triggers every namespace.
    fn list_done(&mut self) {
        for before in self.of_object.list_done() {
            let _ = self.moved(before, 0);
        }
    }

    /// One provider's need moved from `before` to `after`: the namespaces where a pair's
    /// count crossed zero.
    fn moved(&mut self, before: u64, after: u64) -> Vec<String> {
        if before == after {
            return Vec::new();
        }
        let mut changed = Vec::new();
        for (need, by) in [(before, -1), (after, 1)] {
            let Some(index) = need.checked_sub(1) else {
                continue;
            };
            let Some(Some((pair, count))) = self.pairs.get_mut(index as usize) else {
                continue;
            };
            *count = count.saturating_add_signed(by);
            let crossed = (by > 0 && *count == 1) || (by < 0 && *count == 0);
            if crossed && !changed.contains(&pair.0) {
                changed.push(pair.0.clone());
            }
            if *count == 0 {
                // No object's fingerprint names this index any more.
                self.pair_index.remove(pair);
                self.pairs[index as usize] = None;
                self.free.push(index);
            }
        }
        changed
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
        recorded: Option<&str>,
        deleting: bool,
    ) -> Arc<ProviderConnection> {
        let mut c: ProviderConnection = serde_json::from_value(json!({
            "apiVersion": "secprov.dev/v1alpha1", "kind": "ProviderConnection",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"coveo": {"organizationId": "org",
                               "apiKeySecretRef": {"name": secret, "key": "apiKey"}}}
        }))
        .unwrap();
        if let Some(recorded) = recorded {
            c.metadata.finalizers = Some(vec![IN_USE_FINALIZER.into()]);
            c.metadata.annotations =
                Some([(PROTECTED_SECRETS_ANNOTATION.to_owned(), recorded.to_owned())].into());
        }
        if deleting {
            c.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ));
        }
        Arc::new(c)
    }

    fn names() -> UsageNames {
        UsageNames::for_shard(None)
    }

    /// Each created object gains the cleanup finalizer once; only the first provider to need
    /// a connection in a namespace, or the last to stop, changes what [`plan`] decides there.
    #[test]
    fn a_namespace_is_synced_only_when_the_connections_its_providers_need_change() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut watch = provider_watcher(tx);
        let mut sent = || std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>();
        let apply = |sp: Arc<SecurityProvider>| Ok(watcher::Event::Apply((*sp).clone()));
        let listed = |sp: Arc<SecurityProvider>| Ok(watcher::Event::InitApply((*sp).clone()));
        let ns = |name: &str| Trigger::Namespace(name.into());
        watch(&Ok(watcher::Event::Init));
        watch(&listed(sp("a", "p1", "coveo", true)));
        watch(&Ok(watcher::Event::InitDone));
        assert_eq!(sent(), [Trigger::All]);
        // A new provider, then its finalizer: `coveo` is needed in `a` already.
        watch(&apply(sp("a", "p2", "coveo", false)));
        watch(&apply(sp("a", "p2", "coveo", true)));
        assert_eq!(sent(), []);
        // The first to need a connection: another one in `a`, the same name in `b`.
        watch(&apply(sp("a", "p2", "other", true)));
        watch(&apply(sp("b", "p1", "coveo", true)));
        assert_eq!(sent(), [ns("a"), ns("b")]);
        // The last to need `coveo` in `a` is deleted.
        watch(&Ok(watcher::Event::Delete(
            (*sp("a", "p1", "coveo", true)).clone(),
        )));
        assert_eq!(sent(), [ns("a")]);
        // A relist that no longer shows b/p1 (deleted while the watch was down) counts it out.
        watch(&Ok(watcher::Event::Init));
        watch(&listed(sp("a", "p2", "other", true)));
        watch(&Ok(watcher::Event::InitDone));
        assert_eq!(sent(), [Trigger::All]);
        watch(&apply(sp("b", "p3", "coveo", true)));
        assert_eq!(sent(), [ns("b")], "the first again");
        // Losing the finalizer (its cleanup done) is leaving.
        watch(&apply(sp("b", "p3", "coveo", false)));
        assert_eq!(sent(), [ns("b")]);
    }

    #[test]
    fn connection_names_no_provider_needs_any_more_are_forgotten() {
        let mut needs = Needs::default();
        // One provider pointed at one new connection name after another.
        for i in 0..100 {
            let _ = needs.apply(&sp("a", "p", &format!("conn-{i}"), true));
        }
        assert_eq!(needs.pairs_in_use(), 1);
        assert!(
            needs.pairs.len() <= 2,
            "indexes reused: {}",
            needs.pairs.len()
        );
        let _ = needs.apply(&sp("a", "q", "conn-99", true));
        let _ = needs.delete(&sp("a", "p", "conn-99", true));
        assert_eq!(needs.pairs_in_use(), 1, "q still needs it");
        assert_eq!(needs.delete(&sp("a", "q", "conn-99", true)), ["a"]);
        assert_eq!(needs.pairs_in_use(), 0);
    }

    /// A connection created or changed while the connection watch was down arrives in the
    /// relist only: its namespace is synced then, not at some later provider's change.
    #[test]
    fn a_connection_a_relist_shows_triggers_its_namespace() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut watch = connection_watcher(tx, names());
        let c = (*connection("a", "coveo", "key", None, false)).clone();
        watch(&Ok(watcher::Event::InitApply(c)));
        assert_eq!(rx.try_recv().ok(), Some(Trigger::Namespace("a".into())));
    }

    /// A usage finalizer that cannot be written for conflicts is an error, so the namespace's
    /// sync is retried ([`run`]) instead of counting on a later event.
    #[tokio::test]
    async fn a_patch_that_keeps_conflicting_is_an_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        type Mock = tower_test::mock::Handle<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >;
        let (service, mut handle): (_, Mock) = tower_test::mock::pair();
        let patches = Arc::new(AtomicUsize::new(0));
        let counted = patches.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (status, body) = if request.method() == http::Method::PATCH {
                    counted.fetch_add(1, Ordering::SeqCst);
                    (
                        409,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "Conflict", "code": 409, "message": "modified"}),
                    )
                } else {
                    (
                        200,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                                 "metadata": {"name": "key", "namespace": "a", "resourceVersion": "1"}}),
                    )
                };
                let response = http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        let secrets: Api<Secret> = Api::namespaced(kube::Client::new(service, "default"), "a");
        let result = patch_metadata(&secrets, "key", |_| Some(json!({"finalizers": ["x"]}))).await;
        assert!(
            matches!(&result, Err(kube::Error::Api(status)) if status.code == 409),
            "{result:?}"
        );
        assert_eq!(patches.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn each_shard_has_its_own_finalizer() {
        assert_eq!(names().finalizer, IN_USE_FINALIZER);
        let shard = UsageNames::for_shard(Some("team=a"));
        assert!(
            shard.finalizer.starts_with("secprov.dev/in-use-"),
            "{shard:?}"
        );
        assert_ne!(shard, UsageNames::for_shard(Some("team=b")));
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_finalized_provider_keeps_its_connection_and_key_and_nothing_else() {
        let providers = [sp("a", "p", "coveo", true), sp("b", "p", "other", true)];
        let connections = [
            connection("a", "coveo", "key", None, false),
            connection("a", "unused", "unused-key", Some("unused-key"), false),
        ];
        let plan = plan(&names(), "a", &providers, &connections, &BTreeSet::new());
        assert_eq!(
            plan.connections,
            [
                ConnectionUsage {
                    name: "coveo".into(),
                    finalizer: true,
                    protected: set(&["key"])
                },
                ConnectionUsage {
                    name: "unused".into(),
                    finalizer: false,
                    protected: set(&[])
                },
            ]
        );
        assert_eq!(plan.protect, set(&["key"]));
        assert_eq!(plan.release, set(&["unused-key"]));
    }

    #[test]
    fn the_last_provider_losing_its_cleanup_finalizer_releases_connection_and_secret() {
        let connections = [connection("a", "coveo", "key", Some("key"), true)];
        let kept = plan(
            &names(),
            "a",
            &[sp("a", "p", "coveo", true)],
            &connections,
            &BTreeSet::new(),
        );
        assert_eq!(kept, UsagePlan::default(), "in use: nothing changes");
        let released = plan(
            &names(),
            "a",
            &[sp("a", "p", "coveo", false)],
            &connections,
            &BTreeSet::new(),
        );
        assert_eq!(
            released.connections,
            [ConnectionUsage {
                name: "coveo".into(),
                finalizer: false,
                protected: set(&[])
            },]
        );
        assert_eq!(released.release, set(&["key"]));
        assert!(released.protect.is_empty());
    }

    #[test]
    fn a_secret_still_read_by_a_connection_in_use_is_not_released() {
        let connections = [
            connection("a", "in-use", "shared", Some("shared"), false),
            connection("a", "idle", "shared", Some("shared"), false),
        ];
        let gone = set(&["shared", "only-gone"]);
        let plan = plan(
            &names(),
            "a",
            &[sp("a", "p", "in-use", true)],
            &connections,
            &gone,
        );
        assert_eq!(plan.release, set(&["only-gone"]));
        assert_eq!(plan.connections.len(), 1, "only idle changes: {plan:?}");
    }

    #[test]
    fn no_finalizer_is_added_to_a_connection_being_deleted_but_its_secret_is_protected() {
        let connections = [connection("a", "coveo", "key", None, true)];
        let plan = plan(
            &names(),
            "a",
            &[sp("a", "p", "coveo", true)],
            &connections,
            &BTreeSet::new(),
        );
        assert_eq!(
            plan.connections,
            [ConnectionUsage {
                name: "coveo".into(),
                finalizer: false,
                protected: set(&["key"])
            },]
        );
        assert_eq!(plan.protect, set(&["key"]));
    }
}
