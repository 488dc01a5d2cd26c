//! One reconcile of a SecurityProvider: validate -> connection handle -> observe -> plan ->
//! execute -> status. Deletion goes through the finalizer.
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, instrument, warn};

use super::context::Context;
use super::events::{publish, publish_events};
use super::execute::{Report, clear_create_pending, execute};
use super::observe::{
    create_pending, is_paused, observe_and_plan, recorded_remote_id, refresh_to_handle,
};
use super::ownership;
use super::patch::write_status;
use super::status::{self, Outcome, OutcomeResult, compute_status};
use crate::api::provider_connection::BackendKind;
use crate::api::security_provider::DeletionPolicy;
use crate::api::{FINALIZER, SecurityProvider, SecurityProviderStatus};
use crate::backend::{ObservedProvider, ProviderKey, desired_config};
use crate::error::{Error, RemoteError, RemoteErrorKind};

/// Entry point for the kube-runtime Controller.
#[instrument(skip_all, fields(object = %format!("{}/{}", sp.namespace().unwrap_or_default(), sp.name_any())))]
pub async fn reconcile(sp: Arc<SecurityProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Held to the end: this connection's share of the reconcile slots.
    let Ok(_slot) = ctx.connection_slot(&sp) else {
        tracing::debug!("connection busy with its share of reconciles; requeued");
        return Ok(Action::requeue(busy_requeue()));
    };
    let started = Instant::now();
    let _running = ctx.metrics.reconcile_started();
    let namespace = sp
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("SecurityProvider must be namespaced".into()))?;
    let api: Api<SecurityProvider> = Api::namespaced(ctx.client.clone(), &namespace);
    // A remote failure that apply reports in status (and retries) is still a failed reconcile.
    let handled_failure = OnceLock::new();
    let result = finalizer(&api, FINALIZER, sp, |event| async {
        match event {
            finalizer::Event::Apply(sp) => apply(sp, &ctx, &api, &handled_failure).await,
            finalizer::Event::Cleanup(sp) => cleanup(sp, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::from(e),
        other => Error::InvalidSpec(other.to_string()),
    });
    let (label, reason) = match (&result, handled_failure.get()) {
        (Ok(_), None) => ("success", "Reconciled"),
        (Ok(_), Some(reason)) => ("error", *reason),
        (Err(e), _) => ("error", e.reason()),
    };
    ctx.metrics.reconciled(label, reason, started.elapsed());
    result
}

/// When a provider whose connection was busy tries again: soon, spread so the waiting ones
/// don't all come back at once.
fn busy_requeue() -> std::time::Duration {
    std::time::Duration::from_millis(rand::random_range(500..=2000))
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

/// Requeue policy for errors that escaped `apply`/`cleanup` (Kubernetes API failures).
pub fn error_policy(sp: Arc<SecurityProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff_after_failure(&ObjectRef::from_obj(&*sp));
    warn!(object = %sp.name_any(), reason = error.reason(), %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles towards the spec. A failure reported in status sets `handled_failure` to its
/// reason (for the reconcile metric); a Kubernetes API failure is returned.
async fn apply(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    handled_failure: &OnceLock<&'static str>,
) -> Result<Action, Error> {
    let report = match within_deadline(&sp, ctx, sync(&sp, ctx, api)).await {
        Ok(report) => report,
        Err(error @ Error::Kube(_)) => return Err(error),
        Err(error) => Report::failed(&sp, &error),
    };
    if let OutcomeResult::Failed { reason, .. } = &report.outcome.result {
        let _ = handled_failure.set(*reason);
    }
    warn_on_new_failure(&sp, &report.outcome.result);
    let new_status = update_status(ctx, api, &sp, &report.outcome).await?;
    // Only now that status.remoteId is stored can the marker go: a crash before this point
    // leaves the marker, and the next reconcile adopts the provider instead of creating again.
    let pending = create_pending(&sp) || report.marked_pending;
    if pending && (new_status.remote_id.is_some() || report.create_refused) {
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
    publish_events(ctx, &sp, &report, &new_status).await;
    Ok(next_action(ctx, &ObjectRef::from_obj(&*sp), &report))
}

/// Logs a warning when the object starts failing or fails for another reason than before. A
/// retry that fails the same way stays quiet: status and the Warning Event already say it.
fn warn_on_new_failure(sp: &SecurityProvider, result: &OutcomeResult) {
    let OutcomeResult::Failed {
        reason,
        message,
        terminal,
    } = result
    else {
        return;
    };
    let before = status::find(sp.status.as_ref(), status::SYNCED);
    if before.is_some_and(|c| c.status != "True" && c.reason == *reason) {
        return;
    }
    warn!(
        object = %sp.name_any(),
        reason,
        terminal,
        previous = before.map_or("none", |c| c.reason.as_str()),
        %message,
        "SecurityProvider failing"
    );
}

/// The remote part of a reconcile: connection, observe, plan, execute.
async fn sync(
    sp: &SecurityProvider,
    ctx: &Context,
    api: &Api<SecurityProvider>,
) -> Result<Report, Error> {
    let desired = desired_config(sp)?;
    let connection = ctx.connection(sp).await?;
    let use_snapshot = may_use_snapshot(sp, ctx);
    let (observation, decision) =
        observe_and_plan(sp, desired, &connection, api, use_snapshot).await?;
    execute(sp, &connection, api, observation, decision).await
}

/// Computes the status from `outcome`, and writes it when it changed.
async fn update_status(
    ctx: &Context,
    api: &Api<SecurityProvider>,
    sp: &SecurityProvider,
    outcome: &Outcome,
) -> Result<SecurityProviderStatus, Error> {
    let now = jiff::Timestamp::now();
    let new_status = compute_status(sp.status.as_ref(), sp.metadata.generation, outcome, now);
    let old = sp.status.as_ref();
    write_status(api, &sp.name_any(), old, &new_status, &ctx.metrics).await?;
    Ok(new_status)
}

/// When to reconcile again after `report`.
fn next_action(ctx: &Context, object: &ObjectRef<SecurityProvider>, report: &Report) -> Action {
    match &report.outcome.result {
        OutcomeResult::Failed { terminal: true, .. } => {
            ctx.reset_failures(object);
            Action::await_change()
        }
        OutcomeResult::Failed {
            terminal: false, ..
        } => {
            let backoff = ctx.backoff_after_failure(object);
            Action::requeue(
                report
                    .retry_after
                    .map_or(backoff, |after| after.max(backoff)),
            )
        }
        _ => {
            ctx.reset_failures(object);
            let settling = report
                .outcome
                .observed
                .as_ref()
                .is_some_and(ObservedProvider::is_settling);
            ctx.set_settling(object, settling);
            Action::requeue(if settling {
                ctx.settings.progress_interval
            } else {
                ctx.resync_delay()
            })
        }
    }
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

async fn cleanup(
    sp: Arc<SecurityProvider>,
    ctx: &Context,
    api: &Api<SecurityProvider>,
) -> Result<Action, Error> {
    let object = ObjectRef::from_obj(&*sp);
    let mut sp = sp;
    if recorded_remote_id(&sp).is_none() && !create_pending(&sp) {
        // The cache may not show a create that just happened: read the object again before
        // concluding that nothing remote is ours to delete.
        match api.get_opt(&sp.name_any()).await? {
            Some(fresh) => sp = Arc::new(fresh),
            None => {
                ctx.forget_object(&object);
                return Ok(Action::await_change());
            }
        }
    }
    let recorded = recorded_remote_id(&sp);
    if recorded.is_none() && !create_pending(&sp) {
        // Never created or adopted by this object: nothing remote is ours to delete.
        ctx.forget_object(&object);
        return Ok(Action::await_change());
    }
    let shown_id = recorded.clone().unwrap_or_else(|| sp.provider_id());
    if sp.observe_only() || sp.deletion_policy() == DeletionPolicy::Orphan {
        info!(remote_id = %shown_id, "leaving remote provider in place (deletionPolicy Orphan or managementPolicy Observe)");
        let note = format!("left remote provider {shown_id:?} in place");
        publish(ctx, &sp, EventType::Normal, "Orphaned", "Delete", note).await;
        ctx.forget_object(&object);
        return Ok(Action::await_change());
    }
    match within_deadline(&sp, ctx, delete_remote(&sp, ctx, recorded)).await {
        Ok((remote_id, existed)) => {
            info!(%remote_id, existed, "deleted remote provider");
            let note = if existed {
                format!("deleted remote provider {remote_id:?}")
            } else {
                format!("remote provider {remote_id:?} was already gone")
            };
            publish(ctx, &sp, EventType::Normal, "Deleted", "Delete", note).await;
            ctx.forget_object(&object);
            Ok(Action::await_change())
        }
        Err(error) => Err(report_cleanup_failure(&sp, ctx, api, error).await?),
    }
}

/// Deletes the remote provider this object owns. Returns its id and whether it existed.
async fn delete_remote(
    sp: &SecurityProvider,
    ctx: &Context,
    recorded: Option<String>,
) -> Result<(String, bool), Error> {
    if is_paused(sp) {
        return Err(Error::Paused(
            "deletion of the remote provider waits until the secprov.dev/paused annotation is removed".into(),
        ));
    }
    let connection = ctx.connection(sp).await?;
    let remote_id = match recorded {
        Some(id) => id,
        None => {
            // A create was interrupted before its id was recorded. Look the provider up the
            // way the backend finds it (for JITSudo the id is server-assigned).
            let desired = desired_config(sp)?;
            let key = ProviderKey {
                id: desired.lookup_key().to_owned(),
                known_remote_id: None,
            };
            // Only a provider carrying this object's attempt evidence is ours.
            match connection.read(&key).await? {
                Some(found) if ownership::owns(sp, &found) => found.remote_id,
                _ => return Ok((sp.provider_id(), false)),
            }
        }
    };
    let existed = connection.delete(&remote_id).await?;
    Ok((remote_id, existed))
}

/// Reports a failed deletion in status (through the same compute -> compare -> patch as a
/// reconcile) and as a Warning when that changed the status; returns the error to retry on.
async fn report_cleanup_failure(
    sp: &SecurityProvider,
    ctx: &Context,
    api: &Api<SecurityProvider>,
    error: Error,
) -> Result<Error, Error> {
    let message = format!(
        "cannot delete the remote provider: {error}; fix the cause, or set deletionPolicy: Orphan to keep it"
    );
    let outcome = Outcome {
        result: OutcomeResult::Failed {
            reason: error.reason(),
            message,
            terminal: false,
        },
        ..Report::failed(sp, &error).outcome
    };
    let new_status = update_status(ctx, api, sp, &outcome).await?;
    if sp.status.as_ref() != Some(&new_status) {
        let note = error.to_string();
        publish(ctx, sp, EventType::Warning, error.reason(), "Delete", note).await;
    }
    Ok(error)
}
