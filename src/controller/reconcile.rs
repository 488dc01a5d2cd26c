//! One reconcile of a SecurityProvider: validate -> connection handle -> observe -> plan ->
//! execute -> status. Deletion goes through the finalizer (see [`super::metadata`]).
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, instrument, warn};

use super::context::{Context, MAX_CLEANUP_ATTEMPTS};
use super::events::{failure_event_type, publish, publish_events};
use super::execute::{Report, execute};
use super::metadata::{ObjectMetadata, clear_create_pending, has_finalizer, remove_finalizer};
use super::observe::{
    Apis, Managers, create_pending, is_paused, observe_and_plan, recorded_remote_id,
    refresh_to_handle,
};
use super::ownership;
use super::patch::{write_status, write_status_if_unchanged};
use super::record::{ObjectRecord, Visit};
use super::requeue::{self, Ending, ErrorClass};
use super::status::{self, Outcome, OutcomeResult, compute_status};
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::DeletionPolicy;
use crate::api::{ProviderConnection, SecurityProvider, SecurityProviderStatus};
use crate::backend::{ObservedProvider, ProviderKey, desired_config, resolve_desired};
use crate::error::{Error, RemoteError, RemoteErrorKind};

/// Entry point for the kube-runtime Controller.
#[instrument(skip_all, fields(object = %format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())))]
pub async fn reconcile(sp: Arc<SecurityProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Held to the end: a slot within the namespace's and the connection's shares, and the
    // object's record, put back when the visit ends.
    let mut visit = match ctx.begin(&sp) {
        Ok(visit) => visit,
        Err(refused) => {
            tracing::debug!(
                share = refused.as_str(),
                "share of reconcile slots in use; requeued"
            );
            ctx.metrics.reconcile_refused_slot(refused.as_str());
            return Ok(requeue::busy_requeue().into());
        }
    };
    let started = Instant::now();
    let _running = ctx.metrics.reconcile_started();
    let namespace = sp
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("SecurityProvider must be namespaced".into()))?;
    let api: Api<SecurityProvider> = Api::namespaced(ctx.client.clone(), &namespace);
    // A remote failure that apply reports in status (and retries) is still a failed reconcile.
    let handled_failure = OnceLock::new();
    let result = match (sp.metadata.deletion_timestamp.is_some(), has_finalizer(&sp)) {
        (false, _) => apply(sp, &ctx, &api, &mut visit, &handled_failure).await,
        (true, true) => match cleanup(sp.clone(), &ctx, &api, &mut visit).await {
            Ok(action) => remove_finalizer(&api, &sp).await.map(|()| action),
            Err(error) => Err(error),
        },
        // Being deleted, and nothing of ours to finish.
        (true, false) => Ok(Action::await_change()),
    };
    let (label, reason) = match (&result, handled_failure.get()) {
        (Ok(_), None) => ("success", "Reconciled"),
        (Ok(_), Some(reason)) => ("error", *reason),
        (Err(e), _) => ("error", e.reason()),
    };
    ctx.metrics.reconciled(label, reason, started.elapsed());
    result
}

/// Runs the remote part of a reconcile within `settings.reconcile_timeout`, retries
/// included: past it the reconcile ends as `RemoteTimeout` (retried with backoff) and gives
/// its slot back.
async fn within_deadline<T>(
    sp: &SecurityProvider,
    ctx: &Context,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let limit = ctx.settings.reconcile_timeout;
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        let backend = sp.spec.backend().map_or("remote", BackendKind::as_str);
        Err(Error::Remote(RemoteError::transport(
            backend,
            "reconcile",
            RemoteErrorKind::Timeout,
            format!(
                "the remote calls of this reconcile did not finish within {}s (retries included)",
                limit.as_secs()
            ),
        )))
    })
}

/// Requeue of the errors that escaped `apply` (Kubernetes API failures) or `cleanup` (every
/// failure of a deletion), by the one policy [`requeue::next`].
pub fn error_policy(sp: Arc<SecurityProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let ending = Ending::Failed {
        class: ErrorClass::of(error),
        deleting: sp.metadata.deletion_timestamp.is_some(),
    };
    let next = ctx.with_record(&ObjectRef::from_obj(&*sp), |record| {
        requeue::next(ending, record, &ctx.settings)
    });
    match ending {
        // Reported in status with its escape hatch.
        Ending::Failed {
            class: ErrorClass::Blocked,
            ..
        } => {}
        Ending::Failed {
            class: ErrorClass::Deferred,
            ..
        } => info!(object = %sp.name_any(), reason = error.reason(), %error, "deletion waits"),
        _ => {
            warn!(object = %sp.name_any(), reason = error.reason(), %error, ?next, "reconcile failed")
        }
    }
    next.into()
}

/// Reconciles towards the spec. A failure reported in status sets `handled_failure` to its
/// reason (for the reconcile metric); a Kubernetes API failure is returned.
async fn apply(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    visit: &mut Visit<'_>,
    handled_failure: &OnceLock<&'static str>,
) -> Result<Action, Error> {
    let sp = announce_progress(ctx, api, sp).await?;
    let metadata = ObjectMetadata::new(api, &sp);
    let synced = sync(&sp, ctx, &metadata, &visit.record);
    let report = match within_deadline(&sp, ctx, synced).await {
        Ok(report) => report,
        Err(error @ Error::Kube(_)) => return Err(error),
        Err(error) => {
            let mut report = Report::failed(&sp, &error);
            report.outcome.secrets_hash = visit.record.secrets_hash_sent(&sp);
            report
        }
    };
    // Whatever the path (a failure before any plan included), the object keeps the finalizer,
    // so its deletion runs the cleanup.
    metadata.ensure_finalizer(&sp).await?;
    if let OutcomeResult::Failed { reason, .. } = &report.outcome.result {
        let _ = handled_failure.set(*reason);
    }
    warn_on_new_failure(&mut visit.record, &sp, &report.outcome.result);
    let new_status = update_status(ctx, api, &sp, &report.outcome).await?;
    release_outgrown_claims(ctx, &sp, &new_status).await;
    if report.create_refused && new_status.remote_id.is_none() {
        give_back_refused_claim(ctx, &sp, visit.connection.as_deref()).await;
    }
    let sent = crate::backend::recorded_fingerprint(&new_status);
    visit.record.remember_secrets_hash(&sp, sent);
    // Only now that status.remoteId is stored can the marker be settled: a crash before this
    // point leaves it pending, and the next reconcile adopts the provider instead of creating
    // again. A create recorded with its attempt spends the marker, which then stays (no write).
    let marker = (report.marked_pending.as_deref()).or_else(|| ownership::marker_on(&sp));
    let seen = report.outcome.observed.is_some();
    if ownership::marker_settled(marker, report.create_refused, &new_status, seen) {
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
    publish_events(ctx, &sp, &report, &new_status, visit.connection.as_deref()).await;
    let ending = match report.failure {
        Some(class) => Ending::Failed {
            class,
            deleting: false,
        },
        None => Ending::Done {
            settling: (report.outcome.observed.as_ref()).is_some_and(ObservedProvider::is_settling),
        },
    };
    Ok(requeue::next(ending, &mut visit.record, &ctx.settings).into())
}

/// When status records a new remote id or remote system (a create, an adoption, a confirmed
/// change of remote system, a respelled endpoint), the claims this object took under the
/// previous ones are given back: the provider left behind is no longer this object's.
async fn release_outgrown_claims(
    ctx: &Context,
    sp: &SecurityProvider,
    new: &SecurityProviderStatus,
) {
    let old = sp.status.as_ref();
    let moved = old.map(|s| (&s.remote_id, &s.ownership)) != Some((&new.remote_id, &new.ownership));
    let (Some(claims), Some(system), true) = (&ctx.claims, new.ownership.as_ref(), moved) else {
        return;
    };
    let Ok(desired) = desired_config(sp) else {
        return;
    };
    if let Err(error) = claims
        .release_others(sp, system, desired.lookup_key())
        .await
    {
        warn!(%error, "cannot give back the claims of a former remote system; retried at the next change");
    }
}

/// Writes the first status of an object not reported on yet ([`status::first_status`]) before
/// any remote call, so no client reads a just-applied object as done while those calls run.
/// Written only over the object as the cache shows it: if that copy is stale (a status was
/// stored meanwhile), nothing is written. Returns the object to reconcile: after the write,
/// with the resourceVersion it got (so the conditional metadata writes that follow do not
/// conflict with it), its status still the cached one (the reconcile's outcome replaces the
/// first status whole).
async fn announce_progress(
    ctx: &Context,
    api: &Api<SecurityProvider>,
    sp: Arc<SecurityProvider>,
) -> Result<Arc<SecurityProvider>, Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let (Some(first), Some(version)) = (
        status::first_status(sp.status.as_ref(), sp.metadata.generation, now),
        sp.resource_version(),
    ) else {
        return Ok(sp);
    };
    let name = sp.name_any();
    match write_status_if_unchanged(api, &name, &version, &first, &ctx.metrics).await? {
        Some(written) => {
            let mut sp = (*sp).clone();
            sp.metadata.resource_version = written.metadata.resource_version;
            Ok(Arc::new(sp))
        }
        None => Ok(sp),
    }
}

/// A create the remote refused (invalid configuration, credentials without the right to
/// create) made nothing: this object gives its claim back, so it does not stand in the way of
/// another object that can manage the provider; the next attempt claims again.
async fn give_back_refused_claim(
    ctx: &Context,
    sp: &SecurityProvider,
    connection: Option<&ProviderConnection>,
) {
    let (Some(claims), Ok(desired)) = (&ctx.claims, desired_config(sp)) else {
        return;
    };
    let Some(system) = connection.and_then(ProviderConnection::ownership) else {
        return;
    };
    if let Err(error) = claims.give_back(sp, &system, desired.lookup_key()).await {
        warn!(%error, "cannot give back the claim of a refused create; it stays until the object is deleted");
    }
}

/// Logs a warning when the object starts failing or fails for another reason than before. A
/// retry that fails the same way stays quiet: status and the Warning Event already say it.
/// "Before" is what this process saw last (the cached object may not show the status the
/// previous reconcile wrote yet), else the status (after a restart).
fn warn_on_new_failure(record: &mut ObjectRecord, sp: &SecurityProvider, result: &OutcomeResult) {
    let reason = match result {
        OutcomeResult::Failed { reason, .. } => Some(*reason),
        _ => None,
    };
    let seen = record.replace_failure_reason(reason);
    let OutcomeResult::Failed {
        reason,
        message,
        terminal,
    } = result
    else {
        return;
    };
    let in_status = status::find(sp.status.as_ref(), status::SYNCED)
        .filter(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    let previous = seen.or(in_status);
    if previous == Some(*reason) {
        return;
    }
    warn!(
        object = %sp.name_any(),
        reason,
        terminal,
        previous = previous.unwrap_or("none"),
        %message,
        "SecurityProvider failing"
    );
}

/// The remote part of a reconcile: connection, observe, plan, execute.
async fn sync(
    sp: &SecurityProvider,
    ctx: &Context,
    metadata: &ObjectMetadata<'_>,
    record: &ObjectRecord,
) -> Result<Report, Error> {
    let api = metadata.api();
    let connection = ctx.connection(sp).await?;
    let mut desired = resolve_desired(&ctx.client, sp, Some(&ctx.settings.fingerprint_key)).await?;
    desired.set_recorded_secrets_hash(record.secrets_hash_sent(sp));
    let use_snapshot = may_use_snapshot(sp, record.settling);
    // Only without claims (unit tests) are other managers found by a LIST.
    let cluster = match &ctx.settings.namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let apis = Apis {
        namespace: api,
        managers: Managers::new(ctx.claims.as_ref(), &cluster),
    };
    let (observation, decision) =
        observe_and_plan(sp, desired, &connection, apis, use_snapshot).await?;
    execute(sp, &connection, metadata, observation, decision).await
}

/// Computes the status from `outcome`, and writes it when it changed.
async fn update_status(
    ctx: &Context,
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
    outcome: &Outcome,
) -> Result<SecurityProviderStatus, Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let old = sp.status.as_ref();
    let mut new_status = compute_status(old, sp.metadata.generation, outcome, now);
    if old != Some(&new_status) && new_status.remote_id.is_none() {
        keep_stored_remote_id(api, sp, &mut new_status).await?;
    }
    let written = write_status(api, &sp.name_any(), old, &new_status, &ctx.metrics).await?;
    if let Some(stored) = written.and_then(|object| object.status) {
        // The marker is spent only if the API server kept the attempt: a CRD older than this
        // version (not applied before the upgrade) prunes createAttempt, and the marker is
        // then removed as before.
        new_status.create_attempt = stored.create_attempt;
    }
    Ok(new_status)
}

/// A status write must never drop a known remoteId: server-side apply removes a field the
/// apply omits, and the cached object may not show a remoteId stored a moment ago. Before
/// writing a status without one, read the object and keep what the API server has.
async fn keep_stored_remote_id(
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
    new_status: &mut SecurityProviderStatus,
) -> Result<(), Error> {
    let stored = api
        .get_opt(&sp.name_any())
        .await?
        .and_then(|fresh| fresh.status);
    if let Some(stored) = stored.filter(|s| s.remote_id.is_some()) {
        new_status.remote_id = stored.remote_id;
        new_status.ownership = stored.ownership;
        new_status.create_attempt = stored.create_attempt;
    }
    Ok(())
}

/// Whether this reconcile is a resync of a provider in sync with its current spec, which may
/// read the remote provider from a batch snapshot: the spec was synced (observedGeneration,
/// Synced=True), no refresh is asked for, no create is pending and the remote state was not
/// settling. A spec change bumps the generation, so it always reads fresh.
fn may_use_snapshot(sp: &SecurityProvider, settling: bool) -> bool {
    let status = sp.status.as_ref();
    status.is_some_and(|s| s.remote_id.is_some() && s.observed_generation == sp.metadata.generation)
        && status::find(status, status::SYNCED).is_some_and(|c| c.status == "True")
        && !create_pending(sp)
        && refresh_to_handle(sp).is_none()
        && !settling
}

async fn cleanup(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    visit: &mut Visit<'_>,
) -> Result<Action, Error> {
    let mut sp = sp;
    if recorded_remote_id(&sp).is_none() && !create_pending(&sp) {
        // The cache may not show a create that just happened: read the object again before
        // concluding that nothing remote is ours to delete.
        match api.get_opt(&sp.name_any()).await? {
            Some(fresh) => sp = Arc::new(fresh),
            None => {
                finish_cleanup(ctx, &sp, visit).await;
                return Ok(Action::await_change());
            }
        }
    }
    let recorded = recorded_remote_id(&sp);
    if recorded.is_none() && !create_pending(&sp) {
        // Never created or adopted by this object: nothing remote is ours to delete.
        finish_cleanup(ctx, &sp, visit).await;
        return Ok(Action::await_change());
    }
    let shown_id = recorded.clone().unwrap_or_else(|| sp.provider_id());
    if sp.observe_only() || sp.deletion_policy() == DeletionPolicy::Orphan {
        info!(remote_id = %shown_id, "leaving remote provider in place (deletionPolicy Orphan or managementPolicy Observe)");
        let note = format!("left remote provider {shown_id:?} in place");
        publish(ctx, &sp, EventType::Normal, "Orphaned", "Delete", note).await;
        finish_cleanup(ctx, &sp, visit).await;
        return Ok(Action::await_change());
    }
    let deletion = delete_remote(&sp, ctx, &mut visit.record, recorded);
    match within_deadline(&sp, ctx, deletion).await {
        Ok(Deletion::Deleted { remote_id, existed }) => {
            info!(%remote_id, existed, "deleted remote provider");
            let note = if existed {
                format!("deleted remote provider {remote_id:?}")
            } else {
                format!("remote provider {remote_id:?} was already gone")
            };
            publish(ctx, &sp, EventType::Normal, "Deleted", "Delete", note).await;
            finish_cleanup(ctx, &sp, visit).await;
            Ok(Action::await_change())
        }
        Ok(Deletion::NotOurs(note)) => {
            info!(%note, "leaving remote provider in place");
            publish(ctx, &sp, EventType::Normal, "Orphaned", "Delete", note).await;
            finish_cleanup(ctx, &sp, visit).await;
            Ok(Action::await_change())
        }
        Err(error @ Error::CleanupDeferred(_)) => Err(error),
        Err(error) => {
            let error = bound_cleanup_failure(&sp, &mut visit.record, &shown_id, error);
            Err(report_cleanup_failure(&sp, ctx, api, error).await?)
        }
    }
}

/// The object's deletion is done (remotely, or nothing remote was its to delete): its claims
/// go back and its per-object state is forgotten. A claim that cannot be deleted now is judged
/// stale by the next object that wants it (its holder is gone).
async fn finish_cleanup(ctx: &Context, sp: &SecurityProvider, visit: &mut Visit<'_>) {
    if let Some(claims) = &ctx.claims
        && let Err(error) = claims.release(sp).await
    {
        warn!(%error, "cannot release the claims of a deleted SecurityProvider; the next claimant removes them");
    }
    visit.forget();
}

/// What deleting the object did remotely.
enum Deletion {
    /// The remote provider `remote_id` was deleted (or `existed` was false: already gone).
    Deleted { remote_id: String, existed: bool },
    /// Nothing remote is this object's to delete (the note says why).
    NotOurs(String),
}

/// Deletes the remote provider this object owns.
async fn delete_remote(
    sp: &SecurityProvider,
    ctx: &Context,
    record: &mut ObjectRecord,
    recorded: Option<String>,
) -> Result<Deletion, Error> {
    if is_paused(sp) {
        return Err(Error::Paused(
            "deletion of the remote provider waits until the secprov.dev/paused annotation is removed".into(),
        ));
    }
    let connection = ctx.connection_for_cleanup(sp).await?;
    let system = connection.connection().ownership();
    let remote_id = match recorded {
        Some(id) if ownership::recorded_in(sp, system.as_ref()).is_some() => id,
        Some(id) => {
            return Ok(Deletion::NotOurs(format!(
                "left remote provider {id:?} alone: it was recorded in another remote system than the connection reaches now"
            )));
        }
        None => match pending_create_result(sp, record, &connection, system.as_ref()).await? {
            Some(id) => id,
            None => {
                let (remote_id, existed) = (sp.provider_id(), false);
                return Ok(Deletion::Deleted { remote_id, existed });
            }
        },
    };
    // Claims are keyed by the id the provider is looked up by (a name, where the remote system
    // assigns the ids).
    let desired = desired_config(sp).ok();
    let claimed_as = desired
        .as_ref()
        .map_or(remote_id.clone(), |d| d.lookup_key().to_owned());
    if let (Some(claims), Some(system)) = (&ctx.claims, system.as_ref())
        && let Some(holder) =
            other_owner(claims, sp, (system, &claimed_as), &connection, &remote_id).await?
    {
        return Ok(Deletion::NotOurs(format!(
            "left remote provider {remote_id:?} alone: SecurityProvider {holder} holds its claim"
        )));
    }
    let existed = connection.delete(&remote_id, desired.as_ref()).await?;
    Ok(Deletion::Deleted { remote_id, existed })
}

/// Another object that owns the provider a deletion is about to delete: it holds the claim
/// under this spelling of the system, or claimed it first under another one.
/// The provider is read once for the evidence it carries.
async fn other_owner(
    claims: &super::claims::Claims,
    sp: &SecurityProvider,
    (system, provider): (&crate::api::security_provider::Ownership, &str),
    connection: &super::handle::ConnectionHandle<'_>,
    remote_id: &str,
) -> Result<Option<String>, Error> {
    if let Some(holder) = claims.held_by_other(sp, system, provider).await? {
        return Ok(Some(holder));
    }
    let key = ProviderKey {
        id: provider.to_owned(),
        known_remote_id: Some(remote_id.to_owned()),
    };
    // A failed read (credentials revoked, remote down) leaves the decision to the claims; the
    // DELETE then fails the same way and is reported and retried as before.
    let token_uid = connection
        .read(&key)
        .await
        .ok()
        .flatten()
        .and_then(|found| found.config.creation_token())
        .and_then(|token| ownership::token_owner(&token).map(str::to_owned));
    let own_age = claims.own_age(sp, system, provider).await?;
    claims
        .alias_owner(sp, system, provider, token_uid.as_deref(), own_age.as_ref())
        .await
}

/// The remote id of the provider an interrupted create of this object made, if any. Found
/// the way the backend finds it (by name where the id is server-assigned); only a provider
/// carrying this object's attempt evidence is ours. When none is found yet, deletion waits
/// one progress interval once: a create whose answer was lost may still be committed.
async fn pending_create_result(
    sp: &SecurityProvider,
    record: &mut ObjectRecord,
    connection: &super::handle::ConnectionHandle<'_>,
    system: Option<&crate::api::security_provider::Ownership>,
) -> Result<Option<String>, Error> {
    let desired = desired_config(sp)?;
    let key = ProviderKey {
        id: desired.lookup_key().to_owned(),
        known_remote_id: None,
    };
    match connection.read(&key).await? {
        Some(found) if ownership::owns(sp, &found, system) => Ok(Some(found.remote_id)),
        Some(_) => Ok(None),
        None if record.defer_cleanup_once() => Err(Error::CleanupDeferred(
            "a create of this object may still land remotely (create-pending marker set, provider not found yet); deletion looks again after one progress interval".into(),
        )),
        None => Ok(None),
    }
}

/// Reports a failed deletion in status (through the same compute -> compare -> patch as a
/// reconcile) and as a Warning when that changed the status; returns the error to retry on.
async fn report_cleanup_failure(
    sp: &SecurityProvider,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    error: Error,
) -> Result<Error, Error> {
    let (message, terminal) = match &error {
        Error::CleanupBlocked { .. } => (error.to_string(), true),
        _ => (
            format!(
                "cannot delete the remote provider: {error}; fix the cause, or set deletionPolicy: Orphan to keep it"
            ),
            false,
        ),
    };
    let outcome = Outcome {
        result: OutcomeResult::Failed {
            reason: error.reason(),
            message,
            terminal,
        },
        ..Report::failed(sp, &error).outcome
    };
    let new_status = update_status(ctx, api, sp, &outcome).await?;
    if sp.status.as_ref() != Some(&new_status) || matches!(error, Error::CleanupBlocked { .. }) {
        let note = error.to_string();
        let type_ = failure_event_type(error.reason());
        publish(ctx, sp, type_, error.reason(), "Delete", note).await;
    }
    Ok(error)
}

/// `error` as [`Error::CleanupBlocked`] once permanent failures (refused credentials,
/// connection or Secret gone) of this object's cleanup reached [`MAX_CLEANUP_ATTEMPTS`]; a
/// pause is deliberate and never counts. A blocked cleanup is not retried by itself.
fn bound_cleanup_failure(
    sp: &SecurityProvider,
    record: &mut ObjectRecord,
    remote_id: &str,
    error: Error,
) -> Error {
    if !error.is_terminal() || matches!(error, Error::Paused(_)) {
        return error;
    }
    let attempts = record.cleanup_failed();
    if attempts < MAX_CLEANUP_ATTEMPTS {
        return error;
    }
    match error {
        blocked @ Error::CleanupBlocked { .. } => blocked,
        cause => Error::CleanupBlocked {
            remote_id: remote_id.to_owned(),
            attempts,
            cause: cause.to_string(),
            name: sp.name_any(),
            namespace: sp.namespace().unwrap_or_default(),
        },
    }
}
