//! One reconcile of a SecurityProvider: validate -> resolve connection and credentials ->
//! observe -> plan -> apply -> status. Deletion goes through the finalizer.
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::context::Context;
use super::ownership::{self, CreateMarker};
use super::plan::{Plan, PlanInput, plan};
use super::status::{self, Outcome, OutcomeResult, compute_status};
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::DeletionPolicy;
use crate::api::{
    FINALIZER, PAUSED_ANNOTATION, REFRESH_ANNOTATION, SecurityProvider, SecurityProviderStatus,
};
use crate::backend::{
    ObservedProvider, ProviderBackend, ProviderKey, check_backend_match, desired_config,
};
use crate::error::{Error, RemoteErrorKind};

/// Annotation set just before a remote create and removed once the remote id is recorded in
/// status. If the operator dies in between, the next reconcile knows the provider it finds is
/// its own (not someone else's) and adopts it instead of creating a second one.
pub const CREATE_PENDING_ANNOTATION: &str = "secprov.dev/create-pending";
/// Field manager of every write.
pub const FIELD_MANAGER: &str = "secprov-operator";

/// Entry point for the kube-runtime Controller.
#[instrument(skip_all, fields(object = %format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())))]
pub async fn reconcile(sp: Arc<SecurityProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let _running = ctx.metrics.reconcile_started();
    let namespace = sp
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("SecurityProvider must be namespaced".into()))?;
    let api: Api<SecurityProvider> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, sp, |event| async {
        match event {
            finalizer::Event::Apply(sp) => apply(sp, &ctx, &api).await,
            finalizer::Event::Cleanup(sp) => cleanup(sp, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::from(e),
        other => Error::InvalidSpec(other.to_string()),
    });
    let (label, reason) = match &result {
        Ok(_) => ("success", "Reconciled"),
        Err(e) => ("error", e.reason()),
    };
    ctx.metrics.reconciled(label, reason, started.elapsed());
    result
}

/// Requeue policy for errors that escaped `apply`/`cleanup` (Kubernetes API failures).
pub fn error_policy(sp: Arc<SecurityProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff_after_failure(&ObjectRef::from_obj(&*sp));
    warn!(object = %sp.name_any(), reason = error.reason(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn is_paused(sp: &SecurityProvider) -> bool {
    sp.annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn create_pending(sp: &SecurityProvider) -> bool {
    sp.annotations().contains_key(CREATE_PENDING_ANNOTATION)
}

/// What `sync` did, for Events.
#[derive(Debug, Default)]
struct Effects {
    created: bool,
    /// This reconcile set the create-pending marker (the cached object doesn't show it yet).
    marked_pending: bool,
    /// The create provably created nothing: the marker must go.
    create_refused: bool,
    updated: Option<Vec<&'static str>>,
    refreshed: bool,
}

async fn apply(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
) -> Result<Action, Error> {
    let object = ObjectRef::from_obj(&*sp);
    let mut outcome = Outcome {
        backend: sp.spec.backend(),
        remote_id: sp.status.as_ref().and_then(|s| s.remote_id.clone()),
        observed: None,
        result: OutcomeResult::Synced {
            reason: "ReconcileSuccess",
            message: String::new(),
        },
        refresh_handled: None,
    };
    let mut effects = Effects::default();
    let mut retry_after = None;
    if let Err(error) = sync(&sp, ctx, api, &mut outcome, &mut effects).await {
        if matches!(error, Error::Kube(_)) {
            return Err(error);
        }
        retry_after = error.retry_after();
        outcome.result = OutcomeResult::Failed {
            reason: error.reason(),
            message: error.to_string(),
            terminal: error.is_terminal(),
        };
    }

    let new_status = compute_status(
        sp.status.as_ref(),
        sp.metadata.generation,
        &outcome,
        jiff::Timestamp::now(),
    );
    if sp.status.as_ref() != Some(&new_status) {
        patch_status(api, &sp, &new_status).await?;
        ctx.metrics.status_patched();
    }
    // Only now that status.remoteId is stored can the marker go: a crash before this point
    // leaves the marker, and the next reconcile adopts the provider instead of creating again.
    let pending = create_pending(&sp) || effects.marked_pending;
    if pending && (new_status.remote_id.is_some() || effects.create_refused) {
        clear_create_pending(api, &sp).await?;
    }
    let is_true = |kind| status::find(Some(&new_status), kind).is_some_and(|c| c.status == "True");
    ctx.metrics.provider_observed(
        &sp.namespace().unwrap_or_default(),
        &sp.name_any(),
        sp.spec.backend().map_or("unknown", BackendKind::as_str),
        is_true(status::READY),
        is_true(status::STALLED),
    );
    publish_events(ctx, &sp, &effects, &new_status).await;

    Ok(match &outcome.result {
        OutcomeResult::Failed { terminal: true, .. } => {
            ctx.reset_failures(&object);
            Action::await_change()
        }
        OutcomeResult::Failed {
            terminal: false, ..
        } => {
            let backoff = ctx.backoff_after_failure(&object);
            Action::requeue(retry_after.map_or(backoff, |after| after.max(backoff)))
        }
        _ => {
            ctx.reset_failures(&object);
            let settling = outcome
                .observed
                .as_ref()
                .is_some_and(ObservedProvider::is_settling);
            ctx.set_settling(&object, settling);
            Action::requeue(if settling {
                ctx.settings.progress_interval
            } else {
                ctx.resync_delay()
            })
        }
    })
}

/// The remote part of a reconcile. Fills `outcome` as it goes, so that a failure midway still
/// reports what was learnt.
async fn sync(
    sp: &SecurityProvider,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    outcome: &mut Outcome,
    effects: &mut Effects,
) -> Result<(), Error> {
    let desired = desired_config(sp)?;
    let connection = ctx.connection_of(sp)?;
    check_backend_match(sp, &connection)?;
    let backend = ctx.backend_for(&connection).await?;

    let key = ProviderKey {
        id: desired.lookup_key().to_owned(),
        known_remote_id: outcome.remote_id.clone(),
    };
    let connection_key = super::context::snapshot_key(&connection);
    // A resync of a provider already in sync may be served by the connection's paged
    // snapshot; a miss, or anything else, reads the provider directly.
    let snapshot_hit = match (may_use_snapshot(sp, ctx), &outcome.remote_id) {
        (true, Some(remote_id)) => {
            ctx.snapshots
                .lookup(&connection_key, &backend, remote_id)
                .await
        }
        _ => None,
    };
    let from_snapshot = snapshot_hit.is_some();
    let mut observed = match snapshot_hit {
        Some(hit) => Some(hit),
        None => backend.observe(&key).await?,
    };
    // Ours only when recorded under this id, or carrying the evidence of our own pending
    // create attempt: a provider found by name or id alone may be anyone's.
    let mut owned = observed.as_ref().is_some_and(|o| ownership::owns(sp, o));
    if let Some(found) = &observed
        && !owned
        && !sp.spec.adopt.unwrap_or(false)
    {
        // About to call the provider someone else's. The cached object may lag behind our own
        // writes (the create-pending marker, status.remoteId), so confirm with a fresh read
        // before blocking: a stale cache must never turn our own provider into a foreign one.
        if let Some(fresh) = api.get_opt(&sp.name_any()).await? {
            owned = ownership::owns(&fresh, found);
        }
    }
    let plan_for = |observed: Option<&ObservedProvider>| {
        plan(&PlanInput {
            desired: &desired,
            observed,
            owned,
            adopt: sp.spec.adopt.unwrap_or(false),
            observe_only: sp.observe_only(),
            paused: is_paused(sp),
        })
    };
    let mut decision = plan_for(observed.as_ref());
    if from_snapshot && matches!(decision, Plan::Create | Plan::Update { .. }) {
        // Writes are planned from fresh reads only, never from a snapshot.
        observed = backend.observe(&key).await?;
        decision = plan_for(observed.as_ref());
    }
    if !from_snapshot && let Some(o) = &observed {
        ctx.snapshots.record(&connection_key, o);
    }
    if let Some(o) = &observed
        && !matches!(decision, Plan::Blocked { .. })
    {
        outcome.remote_id = Some(o.remote_id.clone());
    }
    outcome.observed = observed.clone();

    match decision {
        Plan::Create => {
            let marker = mark_create_pending(api, sp).await?;
            effects.marked_pending = true;
            match backend
                .create(&desired.with_creation_token(&marker.token()))
                .await
            {
                Ok(created) => {
                    info!(remote_id = %created.remote_id, "created remote provider");
                    outcome.remote_id = Some(created.remote_id.clone());
                    ctx.snapshots.record(&connection_key, &created);
                    observed = Some(created);
                    effects.created = true;
                }
                Err(error) if error.kind == RemoteErrorKind::Conflict => {
                    // The id appeared between our read and our create. Ours only if it carries
                    // the evidence of this attempt (an earlier try whose answer was lost: a
                    // timeout, a dropped connection, a crash); else someone else won a race.
                    let found = backend.observe(&key).await?;
                    let Some(found) = found.filter(|f| marker.made(f)) else {
                        effects.create_refused = true;
                        outcome.observed = None;
                        outcome.result = OutcomeResult::Blocked {
                            reason: super::plan::REASON_ALREADY_EXISTS,
                            message: format!(
                                "a remote provider with id {:?} was created by someone else first; set spec.adopt: true to take it over",
                                key.id
                            ),
                        };
                        return Ok(());
                    };
                    info!(remote_id = %found.remote_id, "create answered 409 while create-pending: adopting our own earlier create");
                    outcome.remote_id = Some(found.remote_id.clone());
                    let fields = desired.diff(&found.config);
                    if fields.is_empty() {
                        observed = Some(found);
                    } else {
                        outcome.observed = Some(found.clone());
                        let updated = backend.update(&found, &desired).await?;
                        observed = Some(updated);
                        effects.updated = Some(fields);
                    }
                }
                Err(error) => {
                    effects.create_refused = ownership::created_nothing(error.kind);
                    return Err(error.into());
                }
            }
        }
        Plan::Update { fields } => {
            let current = observed
                .as_ref()
                .ok_or_else(|| Error::InvalidSpec("update planned without observation".into()))?;
            let updated = backend.update(current, &desired).await?;
            info!(remote_id = %updated.remote_id, ?fields, "updated remote provider");
            ctx.snapshots.record(&connection_key, &updated);
            observed = Some(updated);
            effects.updated = Some(fields);
        }
        Plan::InSync => {}
        Plan::Withheld {
            reason, message, ..
        } => {
            outcome.result = OutcomeResult::Withheld { reason, message };
        }
        Plan::Blocked { reason, message } => {
            outcome.observed = None;
            outcome.result = OutcomeResult::Blocked { reason, message };
            return Ok(());
        }
    }
    outcome.observed = observed.clone();

    if let Some(current) = &observed
        && let Some(value) = refresh_to_handle(sp)
    {
        // A refresh already running or queued covers the request; don't start a second one.
        if !current.state.busy && backend.refresh(&current.remote_id).await? {
            effects.refreshed = true;
            outcome.observed = backend.observe(&key).await?.or(observed);
        }
        outcome.refresh_handled = Some(value);
    }

    if matches!(outcome.result, OutcomeResult::Synced { .. }) {
        outcome.result = if sp.observe_only() {
            OutcomeResult::Synced {
                reason: super::plan::REASON_OBSERVE_ONLY,
                message: "observing only; the remote provider matches the spec".into(),
            }
        } else {
            OutcomeResult::Synced {
                reason: "ReconcileSuccess",
                message: "the remote provider matches the spec".into(),
            }
        };
    }
    Ok(())
}

/// Whether this reconcile is a resync of a provider in sync with its current spec, which may
/// read the remote provider from a batch snapshot: the spec was synced (observedGeneration,
/// Synced=True), no refresh is asked for, no create is pending and the remote state was not
/// settling. A spec change bumps the generation, so it always reads fresh.
fn may_use_snapshot(sp: &SecurityProvider, ctx: &Context) -> bool {
    let status = sp.status.as_ref();
    status.is_some_and(|s| s.remote_id.is_some() && s.observed_generation == sp.metadata.generation)
        && status::find(status, status::SYNCED).is_some_and(|c| c.status == "True")
        && !create_pending(sp)
        && refresh_to_handle(sp).is_none()
        && !ctx.is_settling(&ObjectRef::from_obj(sp))
}

/// The refresh annotation value, when it asks for a refresh not handled yet and writes are
/// allowed.
fn refresh_to_handle(sp: &SecurityProvider) -> Option<String> {
    let value = sp.annotations().get(REFRESH_ANNOTATION)?;
    let handled = sp
        .status
        .as_ref()
        .and_then(|s| s.last_handled_refresh_at.as_ref());
    (handled != Some(value) && !sp.observe_only() && !is_paused(sp)).then(|| value.clone())
}

/// Sets the create-pending marker and returns it. An attempt already pending (maybe only in
/// a fresher copy of the object than the cache holds) keeps its id, so that evidence of an
/// earlier try whose answer was lost is still recognised.
async fn mark_create_pending(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
) -> Result<CreateMarker, Error> {
    if let Some(marker) = CreateMarker::of(sp) {
        return Ok(marker);
    }
    let fresh = api.get_opt(&sp.name_any()).await?;
    if let Some(marker) = fresh.as_ref().and_then(CreateMarker::of) {
        return Ok(marker);
    }
    let marker = CreateMarker::new(sp);
    let patch = json!({"metadata": {"annotations": {CREATE_PENDING_ANNOTATION: marker.token()}}});
    api.patch_metadata(
        &sp.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(marker)
}

async fn clear_create_pending(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {CREATE_PENDING_ANNOTATION: null}}});
    api.patch_metadata(
        &sp.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn patch_status(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
    status: &SecurityProviderStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "secprov.dev/v1alpha1",
        "kind": "SecurityProvider",
        "status": status,
    });
    api.patch_status(
        &sp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn cleanup(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
) -> Result<Action, Error> {
    let mut sp = sp;
    if sp
        .status
        .as_ref()
        .and_then(|s| s.remote_id.as_ref())
        .is_none()
        && !create_pending(&sp)
    {
        // The cache may not show a create that just happened: read the object again before
        // concluding that nothing remote is ours to delete.
        match api.get_opt(&sp.name_any()).await? {
            Some(fresh) => sp = Arc::new(fresh),
            None => return Ok(Action::await_change()),
        }
    }
    let recorded = sp.status.as_ref().and_then(|s| s.remote_id.clone());
    if recorded.is_none() && !create_pending(&sp) {
        // Never created or adopted by this object: nothing remote is ours to delete.
        return Ok(Action::await_change());
    }
    let shown_id = recorded.clone().unwrap_or_else(|| sp.provider_id());
    if sp.observe_only() || sp.deletion_policy() == DeletionPolicy::Orphan {
        info!(remote_id = %shown_id, "leaving remote provider in place (deletionPolicy Orphan or managementPolicy Observe)");
        publish(
            ctx,
            &sp,
            EventType::Normal,
            "Orphaned",
            "Delete",
            format!("left remote provider {shown_id:?} in place"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let result = async {
        if is_paused(&sp) {
            return Err(Error::InvalidSpec(
                "deletion of the remote provider waits until the secprov.dev/paused annotation is removed".into(),
            ));
        }
        let connection = ctx.connection_of(&sp)?;
        let backend: Arc<dyn ProviderBackend> = ctx.backend_for(&connection).await?;
        let remote_id = match &recorded {
            Some(id) => id.clone(),
            None => {
                // A create was interrupted before its id was recorded. Look the provider up
                // the way the backend finds it (for JITSudo the id is server-assigned).
                let key = ProviderKey {
                    id: desired_config(&sp)?.lookup_key().to_owned(),
                    known_remote_id: None,
                };
                // Only a provider carrying this object's attempt evidence is ours.
                match backend.observe(&key).await? {
                    Some(found) if ownership::owns(&sp, &found) => found.remote_id,
                    _ => return Ok((shown_id.clone(), false)),
                }
            }
        };
        let existed = backend.delete(&remote_id).await?;
        ctx.snapshots
            .forget(&super::context::snapshot_key(&connection), &remote_id);
        Ok((remote_id, existed))
    }
    .await;
    match result {
        Ok((remote_id, existed)) => {
            info!(%remote_id, existed, "deleted remote provider");
            let note = if existed {
                format!("deleted remote provider {remote_id:?}")
            } else {
                format!("remote provider {remote_id:?} was already gone")
            };
            publish(ctx, &sp, EventType::Normal, "Deleted", "Delete", note).await;
            ctx.metrics
                .provider_forgotten(&sp.namespace().unwrap_or_default(), &sp.name_any());
            Ok(Action::await_change())
        }
        Err(error) => {
            let outcome = Outcome {
                backend: sp.spec.backend(),
                remote_id: recorded,
                observed: None,
                result: OutcomeResult::Failed {
                    reason: error.reason(),
                    message: format!(
                        "cannot delete the remote provider: {error}; fix the cause, or set deletionPolicy: Orphan to keep it"
                    ),
                    terminal: false,
                },
                refresh_handled: None,
            };
            let new_status = compute_status(
                sp.status.as_ref(),
                sp.metadata.generation,
                &outcome,
                jiff::Timestamp::now(),
            );
            if sp.status.as_ref() != Some(&new_status) {
                patch_status(api, &sp, &new_status).await?;
                ctx.metrics.status_patched();
                publish(
                    ctx,
                    &sp,
                    EventType::Warning,
                    error.reason(),
                    "Delete",
                    error.to_string(),
                )
                .await;
            }
            Err(error)
        }
    }
}

async fn publish_events(
    ctx: &Context,
    sp: &SecurityProvider,
    effects: &Effects,
    new_status: &SecurityProviderStatus,
) {
    if effects.created {
        let id = new_status.remote_id.clone().unwrap_or_default();
        publish(
            ctx,
            sp,
            EventType::Normal,
            "Created",
            "Create",
            format!("created remote provider {id:?}"),
        )
        .await;
    }
    if let Some(fields) = &effects.updated {
        // Same generation as already synced: the spec didn't change, so the remote drifted.
        let prev_synced_generation = sp
            .status
            .as_ref()
            .filter(|s| status::find(Some(s), status::SYNCED).is_some_and(|c| c.status == "True"))
            .and_then(|s| s.observed_generation);
        let (reason, note) = if prev_synced_generation.is_some()
            && prev_synced_generation == sp.metadata.generation
        {
            (
                "DriftCorrected",
                format!(
                    "remote provider had drifted in {}; restored",
                    fields.join(", ")
                ),
            )
        } else {
            (
                "Updated",
                format!("updated remote provider fields {}", fields.join(", ")),
            )
        };
        publish(ctx, sp, EventType::Normal, reason, "Update", note).await;
    }
    if effects.refreshed {
        publish(
            ctx,
            sp,
            EventType::Normal,
            "RefreshTriggered",
            "Refresh",
            "triggered a refresh of the provider's identities".into(),
        )
        .await;
    }
    // Failures and blocks: one Warning per change of the Synced condition, not per retry.
    let old = status::find(sp.status.as_ref(), status::SYNCED);
    if let Some(new) = status::find(Some(new_status), status::SYNCED)
        && new.status != "True"
        && old.is_none_or(|o| o.reason != new.reason || o.message != new.message)
    {
        publish(
            ctx,
            sp,
            EventType::Warning,
            &new.reason,
            "Reconcile",
            new.message.clone(),
        )
        .await;
    }
}

async fn publish(
    ctx: &Context,
    sp: &SecurityProvider,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference: ObjectReference = sp.object_ref(&());
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    // In the background: an Event is informational, and waiting for its write would hold a
    // reconcile slot for one more API-server round trip. A recorder of its own: kube's
    // Recorder keeps every Event it published for 6 minutes (to aggregate repeats, which ours
    // never are: one per change) and scans that cache on every publish, so with thousands of
    // providers a shared one costs megabytes at rest and quadratic time while converging.
    let recorder = Recorder::new(ctx.client.clone(), super::reporter());
    let reason = reason.to_owned();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    });
}
